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

#: How far ahead (bytes) a DRAM-streaming loop may prefetch: about what one core needs in flight to
#: cover the memory's latency (~100 ns × ~20 GB/s = 2 KB), doubled for the prefetch's own delay.
PREFETCH_BYTES = 4096

#: LLVM CPU names whose tuning prefers 256-bit vectors although they have AVX-512 (LLVM then legalizes
#: 512-bit vector code into pairs of ymm): Intel's server and client AVX-512 cores.
PREFER_256_BIT = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
                  "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids",
                  "graniterapids", "graniterapids-d", "diamondrapids", "x86-64-v4")
#: The LLVM tuning feature behind that preference, which a feature string can turn off.
PREFER_256_FEATURE = "prefer-256-bit"


@dataclass(frozen=True)
class VectorIsa:
    name: str  # avx512, avx2, avx, sse2, neon, generic
    vector_bytes: int  # bytes per vector register the kernels fill
    registers: int  # architectural vector registers
    cpu: str = ""  # LLVM's CPU name of the target
    width_reason: str = ""  # why this vector width (AVX-512: zmm or ymm)

    @property
    def vector_bits(self) -> int:
        return 8 * self.vector_bytes


def _feature_text() -> str:
    import llvmlite.binding as ll
    from numba.core import config

    return config.CPU_FEATURES if config.CPU_FEATURES is not None else ll.get_host_cpu_features().flatten()


def _codegen_started() -> bool:
    """Whether numba's CPU code generator exists: its target machine (CPU name and features) is
    fixed when it is created, on the first compile or cached-function load of the process."""
    from numba.core.registry import cpu_target

    return "_toplevel_target_context" in vars(cpu_target)


def target_features() -> tuple[str, set[str], set[str]]:
    """(LLVM CPU name, enabled features, disabled features) of numba's code generator: the one in
    use once it exists, else the host unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES say otherwise (the
    kernel shape must follow the code actually generated)."""
    import llvmlite.binding as ll
    from numba.core import config

    name = config.CPU_NAME or ll.get_host_cpu_name()
    if _codegen_started():
        from numba.core.registry import cpu_target

        text = cpu_target.target_context.codegen()._tm_features
    else:
        text = _feature_text()
    flags = [f for f in text.split(",") if f[:1] in "+-"]
    return name, {f[1:] for f in flags if f[0] == "+"}, {f[1:] for f in flags if f[0] == "-"}


def configure_codegen() -> str:
    """Turn off LLVM's prefer-256-bit tuning for numba's code generator on AVX-512 cores that have
    it, before the code generator exists; returns why the vector width is what it is.

    A roofline reports the hardware's peak (likwid-bench's peakflops_sp_avx512_fma), and on a core
    with two 512-bit FMA pipes that is twice the ymm rate. Intel's tuning prefers ymm for code that
    mixes vector and scalar work (the zmm frequency licence costs more than it gains there); the
    sweep kernels are all vector FMAs and loads, and measured on an Emerald Rapids (2 cores) zmm
    kernels beat ymm ones (see experiments/bench_cpu_likwid.py). An explicit +/-prefer-256-bit in
    NUMBA_CPU_FEATURES is left as it is. The setting is numba's (process-wide): other numba code of
    the process may use zmm too.
    """
    from numba.core import config

    cpu, on, off = target_features()
    if "avx512f" not in on:
        return ""
    if PREFER_256_FEATURE in on:
        return f"256-bit: +{PREFER_256_FEATURE} in the code generator's features"
    if cpu not in PREFER_256_BIT or PREFER_256_FEATURE in off:
        return f"512-bit: {cpu} has AVX-512 and no 256-bit preference"
    if _codegen_started():
        return (f"256-bit: LLVM's tuning for {cpu} prefers ymm, and numba's code generator was set up "
                "before gpuroof's kernels were imported, so it could not be turned off")
    config.CPU_FEATURES = _feature_text() + f",-{PREFER_256_FEATURE}"
    return (f"512-bit: LLVM's tuning for {cpu} prefers ymm; turned off (-{PREFER_256_FEATURE}) so "
            "the kernels use zmm, the width of the hardware's peak")


def vector_isa(machine: str | None = None, cpu: str | None = None, features: set[str] | None = None,
               disabled: set[str] = frozenset(), width_reason: str = "") -> VectorIsa:
    """The widest vector ISA numba's target has, with the register width the kernels fill.

    x86-64: AVX-512 (32 registers; 64-byte vectors, 32-byte where LLVM's tuning prefers 256-bit
    vectors and configure_codegen could not turn that off), AVX2 or AVX (16 × 32 bytes), else SSE2
    (16 × 16 bytes). arm64: NEON (32 × 16 bytes); LLVM vectorizes with NEON even where SVE is
    present. Anything else: 16 × 16 bytes, a guess that keeps the chains in registers on every
    common ISA at the cost of some peak, named `generic` so that the run says so.
    """
    machine = (machine or platform.machine()).lower()
    if cpu is None or features is None:
        cpu, features, disabled = target_features()
    if machine in ("x86_64", "amd64"):
        if "avx512f" in features:
            ymm = PREFER_256_FEATURE in features or (cpu in PREFER_256_BIT and PREFER_256_FEATURE not in disabled)
            return VectorIsa("avx512", 32 if ymm else 64, 32, cpu, width_reason)
        if "avx2" in features:
            return VectorIsa("avx2", 32, 16, cpu)
        if "avx" in features:
            return VectorIsa("avx", 32, 16, cpu)
        return VectorIsa("sse2", 16, 16, cpu)
    if machine in ("aarch64", "arm64"):
        return VectorIsa("neon", 16, 32, cpu)
    return VectorIsa("generic", 16, 16, cpu)


@dataclass(frozen=True)
class LoopVariant:
    """One shape of a streaming loop that a run may try: the copy loop of the read-write kernel
    (`chains` vectors per chunk, stores through the caches or non-temporal) or the read loop of the
    read-only kernel (`chains` running sums). Which one reaches the most bandwidth at a level
    depends on the core (Zen 5 reads its L2 twice as fast with ymm loads as with zmm), so the run
    measures the candidates and keeps the best (gpuroof.tune)."""

    loop: str  # "rw" (copy loop) or "ro" (read loop)
    vector_bytes: int
    chains: int
    nontemporal: bool = False
    prefetch: int = 0  # bytes ahead that each chunk prefetches its input (0: none)
    xor: bool = False  # read loop: chunks folded by XOR of their bits, not summed (kernels.make_ro)

    @property
    def name(self) -> str:
        what = "chains" if self.loop == "rw" else "xor-folded" if self.xor else "sums"
        return (f"{self.loop} {8 * self.vector_bytes}-bit x{self.chains} {what}"
                + (" nt-stores" if self.nontemporal else "")
                + (f" prefetch {self.prefetch // 1024} KiB" if self.prefetch else ""))


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

    def default_variant(self, loop: str) -> LoopVariant:
        """The loop as the register file sizes it: full width, every chain."""
        if loop not in ("rw", "ro"):
            raise ValueError(f"loop {loop!r}: allowed rw, ro")
        return LoopVariant(loop, self.vector_bytes, self.rw_chains if loop == "rw" else self.read_sums)

    def variants(self, loop: str, dram: bool) -> list[LoopVariant]:
        """Candidates for the streaming loop `loop` at one level, the default first: half the vector
        width where the register is 512 bits wide (Zen 5's L2); in a cache, for the read loop, half
        the running sums (a shorter loop body) and the loop that folds its loads by XOR (two loads
        per integer instruction, where the floating-point adders, not the loads, bound a sum); at
        DRAM size, input prefetched PREFETCH_BYTES ahead (loads in flight beyond the out-of-order
        window) and, for the copy loop, non-temporal stores (no read for ownership). Every candidate's chains divide the default's: the granule holds."""
        d = self.default_variant(loop)
        widths = [d.vector_bytes] + ([d.vector_bytes // 2] if d.vector_bytes >= 64 else [])
        out = []
        for vb in widths:
            if not dram:
                out += [LoopVariant(loop, vb, d.chains)] + \
                    ([LoopVariant("ro", vb, max(2, d.chains // 2))] +
                     [LoopVariant("ro", vb, c, xor=True) for c in (d.chains, max(2, d.chains // 2) // 2 * 2)]
                     if loop == "ro" else [])
            elif loop == "ro":
                out += [LoopVariant("ro", vb, d.chains, prefetch=p) for p in (0, PREFETCH_BYTES)]
            else:
                out += [LoopVariant("rw", vb, d.chains, nt, p) for nt in (False, True) for p in (0, PREFETCH_BYTES)]
        return list(dict.fromkeys(out))

    def every_variant(self, loop: str) -> list[LoopVariant]:
        """Every shape of `loop` a run may try, at any level (the default first)."""
        return list(dict.fromkeys(self.variants(loop, dram=False) + self.variants(loop, dram=True)))

    def to_dict(self) -> dict:
        return {"isa": self.isa.name, "cpu": self.isa.cpu, "vector_bits": self.isa.vector_bits,
                "vector_registers": self.isa.registers,
                "vector_width_reason": self.isa.width_reason, "rw_chains": self.rw_chains,
                "ro_chains": self.ro_chains, "ro_sums": self.ro_sums, "read_sums": self.read_sums}


def kernel_shape(isa: VectorIsa | None = None) -> KernelShape:
    """Chains sized to the register file: rw gets every free register (up to MAX_CHAINS); ro holds
    its chains and half as many sums at once, so its chains are two thirds of the free registers."""
    isa = isa or vector_isa()
    free = isa.registers - RESERVED_REGISTERS
    rw = min(MAX_CHAINS, free)
    ro = min(rw, 2 * free // 3) // 2 * 2
    return KernelShape(isa=isa, rw_chains=rw, ro_chains=ro, ro_sums=ro // 2, read_sums=rw)
