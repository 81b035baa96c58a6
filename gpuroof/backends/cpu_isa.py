"""The vector instruction set numba compiles for, and the kernel shape that fits its register file.

A CPU kernel reaches the FMA peak only when enough independent chains are in flight to cover FMA
latency × FMA pipes (4-5 cycles × 2 pipes on current x86 cores: 8-10 vectors), and only while every
chain stays in a register: one spilled accumulator puts a store and a load beside each FMA and
halves the rate without a warning. So the number of chains is set by the register file of the
instruction set the code is generated for (AVX-512: 32 zmm; AVX2/AVX/SSE: 16; arm64 NEON: 32),
never by a fixed byte count.
"""
from __future__ import annotations

import math
import platform
from dataclasses import dataclass

#: Registers kept free of accumulators: the constants a and b, and a load or two in flight.
RESERVED_REGISTERS = 4
#: Chains beyond this add nothing (they cover 8 cycles of latency on 2 pipes) and lengthen the loop.
MAX_CHAINS = 16

#: LLVM CPU names whose tuning prefers 256-bit vectors although they have AVX-512 (the loop
#: vectorizer then emits ymm, twice the registers per chunk): Intel's server and client AVX-512 cores.
PREFER_256_BIT = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
                  "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids",
                  "graniterapids", "graniterapids-d", "diamondrapids", "x86-64-v4")


@dataclass(frozen=True)
class VectorIsa:
    name: str  # avx512, avx2, avx, sse2, neon, generic
    vector_bytes: int  # bytes per vector register the compiler fills
    registers: int  # architectural vector registers
    cpu: str = ""  # LLVM's CPU name of the target

    @property
    def vector_bits(self) -> int:
        return 8 * self.vector_bytes


def target_features() -> tuple[str, set[str]]:
    """(LLVM CPU name, enabled features) of numba's code generator: the host unless NUMBA_CPU_NAME /
    NUMBA_CPU_FEATURES say otherwise (the kernel shape must follow the code actually generated)."""
    import llvmlite.binding as ll
    from numba.core import config

    name = config.CPU_NAME or ll.get_host_cpu_name()
    text = config.CPU_FEATURES if config.CPU_FEATURES is not None else ll.get_host_cpu_features().flatten()
    return name, {f[1:] for f in text.split(",") if f.startswith("+")}


def vector_isa(machine: str | None = None, cpu: str | None = None,
               features: set[str] | None = None) -> VectorIsa:
    """The widest vector ISA numba's target has, with the register width the vectorizer fills.

    x86-64: AVX-512 (32 registers; 64-byte vectors, 32-byte on the PREFER_256_BIT cores), AVX2 or
    AVX (16 × 32 bytes), else SSE2 (16 × 16 bytes). arm64: NEON (32 × 16 bytes); LLVM vectorizes
    fixed-trip loops with NEON even where SVE is present. Anything else: 16 × 16 bytes, a guess
    that keeps the chains in registers on every common ISA at the cost of some peak, named
    `generic` so that the run says so.
    """
    machine = (machine or platform.machine()).lower()
    if cpu is None or features is None:
        cpu, features = target_features()
    if machine in ("x86_64", "amd64"):
        if "avx512f" in features:
            return VectorIsa("avx512", 32 if cpu in PREFER_256_BIT else 64, 32, cpu)
        if "avx2" in features:
            return VectorIsa("avx2", 32, 16, cpu)
        if "avx" in features:
            return VectorIsa("avx", 32, 16, cpu)
        return VectorIsa("sse2", 16, 16, cpu)
    if machine in ("aarch64", "arm64"):
        return VectorIsa("neon", 16, 32, cpu)
    return VectorIsa("generic", 16, 16, cpu)


@dataclass(frozen=True)
class KernelShape:
    """Vectors of independent chains and sums in each innermost loop of the sweep kernels."""

    isa: VectorIsa
    rw_chains: int  # read-write FMA loop: chains, plus a and b
    ro_chains: int  # read-only FMA loop: chains, plus ro_sums running sums, plus a and b
    ro_sums: int
    read_sums: int  # pure read loop (fmas = 0): running sums fed straight from memory

    @property
    def vector_bytes(self) -> int:
        return self.isa.vector_bytes

    def lanes(self, vectors: int, itemsize: int) -> int:
        return vectors * self.vector_bytes // itemsize

    def chunk_elements(self, itemsize: int) -> int:
        """Elements that every loop of the kernels divides into whole chunks."""
        return self.lanes(math.lcm(self.rw_chains, self.ro_chains, self.read_sums), itemsize)

    def partial_lanes(self, itemsize: int) -> int:
        """Running sums per thread of the read-only kernel, the most of its two loops."""
        return self.lanes(max(self.ro_sums, self.read_sums), itemsize)

    def registers_used(self) -> dict[str, int]:
        """Vector registers live in each innermost loop (chains, sums and the two constants)."""
        return {"rw_fma": self.rw_chains + 2, "ro_fma": self.ro_chains + self.ro_sums + 2,
                "ro_read": self.read_sums}

    def to_dict(self) -> dict:
        return {"isa": self.isa.name, "cpu": self.isa.cpu, "vector_bits": self.isa.vector_bits,
                "vector_registers": self.isa.registers, "rw_chains": self.rw_chains,
                "ro_chains": self.ro_chains, "ro_sums": self.ro_sums, "read_sums": self.read_sums}


def kernel_shape(isa: VectorIsa | None = None) -> KernelShape:
    """Chains sized to the register file: rw gets every free register (up to MAX_CHAINS); ro holds
    its chains and half as many sums at once, so its chains are two thirds of the free registers."""
    isa = isa or vector_isa()
    free = isa.registers - RESERVED_REGISTERS
    rw = min(MAX_CHAINS, free)
    ro = min(rw, 2 * free // 3) // 2 * 2
    return KernelShape(isa=isa, rw_chains=rw, ro_chains=ro, ro_sums=ro // 2, read_sums=rw)
