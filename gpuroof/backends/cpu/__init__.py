"""The CPU backend: numba kernels with the sweep semantics of kernels/sweep.cu, perf_counter timing."""
from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gpuroof.backends.base import ITEMSIZE, Backend, Launch, SweepBuffers, sweep_input, unwritten
from gpuroof.errors import UsageError

if TYPE_CHECKING:
    from gpuroof.matrix import Gemm

SYS_CPU = Path("/sys/devices/system/cpu")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def parse_size(text: str) -> int:
    """'32K' / '2048K' / '32 MiB' (as sysfs and lscpu write them) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def cpu_caches(root: Path = SYS_CPU) -> list[dict]:
    """Data and unified caches of cpu0 from sysfs: level, size in bytes, CPUs sharing each instance."""
    caches = []
    for d in sorted((root / "cpu0" / "cache").glob("index*")):
        kind = _read(d / "type")
        size = _read(d / "size")
        if kind not in ("Data", "Unified") or not size:
            continue
        shared = _read(d / "shared_cpu_list") or "0"
        caches.append({
            "level": int(_read(d / "level") or 0),
            "type": kind,
            "size_bytes": parse_size(size),
            "shared_cpu_list": shared,
            "shared_by_cpus": len(_expand_cpu_list(shared)),
        })
    return caches


def _expand_cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def parse_cpuinfo(text: str) -> dict:
    """Model, vendor, family, flags, per-CPU MHz and physical core count from /proc/cpuinfo text."""
    procs = [dict(re.findall(r"^([^\t:]+?)\s*:\s*(.*)$", block, re.MULTILINE))
             for block in text.strip().split("\n\n") if block.strip()]
    if not procs:
        return {}
    first = procs[0]
    cores = {(p.get("physical id", "0"), p.get("core id", str(i))) for i, p in enumerate(procs)}
    mhz = [float(p["cpu MHz"]) for p in procs if "cpu MHz" in p]
    return {
        "model": first.get("model name"),
        "vendor": first.get("vendor_id"),
        "family": int(first["cpu family"]) if "cpu family" in first else None,
        "model_number": int(first["model"]) if first.get("model", "").isdigit() else None,
        "flags": first.get("flags", "").split(),
        "logical_cpus": len(procs),
        "physical_cores": len(cores),
        "mhz": mhz,
    }


#: Intel family-6 models with AVX-512 and two 512-bit FMA units on every SKU: Ice Lake-SP (106, 108),
#: Sapphire Rapids (143), Emerald Rapids (207), Granite Rapids (173, 174).
INTEL_TWO_FMA512 = {106, 108, 143, 173, 174, 207}
#: Client parts with AVX-512 (Ice Lake 125/126, Tiger Lake 140/141, Rocket Lake 167): ports 0 and 1
#: fuse into one 512-bit FMA unit (the same FLOPs per cycle as two 256-bit ones).
INTEL_ONE_FMA512 = {125, 126, 140, 141, 167}


def vector_unit(vendor: str | None, family: int | None, flags: list[str], model: int | None = None,
                model_name: str = "") -> tuple[int, int] | None:
    """(vector width in bits that one FMA pipe processes per cycle, FMA pipes per core), or None.

    Only what the instruction-set flags, the family/model numbers and the model name settle is
    answered. Skylake-SP and Cascade Lake (model 85) differ by SKU: Platinum and Gold 6xxx have two
    512-bit FMA units, Silver, Bronze and Gold 5xxx one; a name that says neither stays unknown (a
    virtual machine often shows only "Intel Xeon Processor").
    """
    f = set(flags)
    if "fma" not in f:
        return None
    if vendor == "AuthenticAMD":
        if family == 0x1A and "avx512f" in f:  # Zen 5: native 512-bit datapath, two FMA pipes
            return 512, 2
        if family in (0x17, 0x19) and "avx2" in f:  # Zen 2/3/4: 256-bit pipes (Zen 4 double-pumps 512)
            return 256, 2
        return None
    if vendor != "GenuineIntel" or "avx2" not in f:
        return None
    if "avx512f" not in f:
        return 256, 2  # Haswell and later client/server parts without AVX-512: two 256-bit FMA ports
    if family == 6 and model in INTEL_TWO_FMA512:
        return 512, 2
    if family == 6 and model in INTEL_ONE_FMA512:
        return 512, 1
    if family == 6 and model == 85:
        if re.search(r"Platinum|Gold 6\d{3}", model_name):
            return 512, 2
        if re.search(r"Silver|Bronze|Gold 5\d{3}", model_name):
            return 512, 1
    return None


def isa_level(flags: list[str]) -> str:
    """The widest vector instruction set the flags offer: avx512, avx2 (with FMA), avx, sse2, neon."""
    f = set(flags)
    for level, need in (("avx512", {"avx512f"}), ("avx2", {"avx2", "fma"}), ("avx", {"avx"}),
                        ("neon", {"asimd"}), ("neon", {"neon"}), ("sse2", {"sse2"})):
        if need <= f:
            return level
    return "scalar"


def cpu_device_name(facts: dict) -> str:
    """The device key of a CPU: model name, vendor family/model, ISA level and cores in use.

    A virtual machine often names only "AMD EPYC Processor" or "Intel Xeon Processor", so the name
    alone would file a Zen 3 and a Zen 5 (or 2 and 8 cores) under one device and mix their runs in
    `bench`, `compare` and the plugin's cache.
    """
    model = facts.get("model") or platform.processor() or "cpu"
    fam = facts.get("family")
    num = facts.get("model_number")
    ident = f"family {fam} model {num}, " if fam is not None and num is not None else ""
    return f"{model} ({ident}{isa_level(facts.get('flags', []))}, {facts.get('cores_used') or '?'} cores)"


def cpu_theoretical(facts: dict, clock_mhz: float | None) -> dict:
    """cores × SIMD lanes × FMA pipes × 2 × clock, per dtype; None where not knowable."""
    unit = vector_unit(facts.get("vendor"), facts.get("family"), facts.get("flags", []),
                       facts.get("model_number"), facts.get("model") or "")
    compute: dict[str, float | None] = {}
    for dtype in ("float64", "float32"):
        if unit is None or not clock_mhz:
            compute[dtype] = None
            continue
        width, pipes = unit
        lanes = width // (8 * ITEMSIZE[dtype])
        compute[dtype] = facts["cores_used"] * lanes * pipes * 2 * clock_mhz * 1e6
    # BLAS runs on the same vector FMA pipes: the matrix unit's peak is the vector one.
    compute |= {f"{d}-matrix": v for d, v in compute.items()}
    return {"compute": compute, "bandwidth": {"dram": None}}  # DIMM speed and channels: not visible


def aligned_empty(n: int, dtype, align: int = 4096) -> np.ndarray:
    """An uninitialized array whose data starts on a page boundary.

    numpy's large allocations start 16 bytes past a page: every 64-byte vector load then straddles
    two cache lines, which halves L1 bandwidth and makes the cache-level plateaus depend on the
    allocator rather than the hardware.
    """
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n * itemsize + align, dtype=np.uint8)
    offset = -raw.ctypes.data % align
    return raw[offset:offset + n * itemsize].view(dtype)


def _meminfo_available() -> int:
    text = _read(Path("/proc/meminfo")) or ""
    m = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else 0


class CpuTelemetry:
    """Per-core MHz (median, min, max over CPUs) and load from /proc; no power or temperature here."""

    def __init__(self) -> None:
        self._last = self._stat()

    @staticmethod
    def _stat() -> tuple[int, int] | None:
        line = (_read(Path("/proc/stat")) or "").split("\n", 1)[0].split()
        if not line or line[0] != "cpu":
            return None
        vals = [int(v) for v in line[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    def __call__(self) -> dict:
        mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", _read(Path("/proc/cpuinfo")) or "", re.MULTILINE)
        now = self._stat()
        load = None
        if now and self._last and now[0] > self._last[0]:
            total, idle = now[0] - self._last[0], now[1] - self._last[1]
            load = 100.0 * (1 - idle / total)
        self._last = now
        f = np.array([float(v) for v in mhz]) if mhz else None
        return {
            "sm_clock_mhz": float(np.median(f)) if f is not None else None,
            "core_clock_min_mhz": float(f.min()) if f is not None else None,
            "core_clock_max_mhz": float(f.max()) if f is not None else None,
            "mem_clock_mhz": None,
            "power_w": None,
            "temperature_c": None,
            "clock_event_reasons": None,
            "load_pct": load,
        }


class CpuBackend(Backend):
    name = "cpu"
    xp = np

    def __init__(self, device_index: int = 0):
        if device_index != 0:
            raise UsageError(f"--device {device_index}: the cpu backend has one device (allowed: 0 or all)")
        import numba  # imported here so that `gpuroof info` on a GPU node does not pay for it

        from gpuroof.backends import _cpu_kernels

        self._k = _cpu_kernels
        self.threads = numba.get_num_threads()
        self.facts = parse_cpuinfo(_read(Path("/proc/cpuinfo")) or "")
        self.facts["cores_used"] = min(self.threads, self.facts.get("physical_cores") or self.threads)
        self.caches = cpu_caches()
        self._numba_version = numba.__version__

    def device_info(self) -> dict:
        max_mhz = self.max_clocks()[0]
        unit = vector_unit(self.facts.get("vendor"), self.facts.get("family"), self.facts.get("flags", []),
                           self.facts.get("model_number"), self.facts.get("model") or "")
        return {
            "name": cpu_device_name(self.facts),
            "model_name": self.facts.get("model") or platform.processor() or "cpu",
            "isa_level": isa_level(self.facts.get("flags", [])),
            "index": 0,
            "vendor": self.facts.get("vendor"),
            "family": self.facts.get("family"),
            "model_number": self.facts.get("model_number"),
            "logical_cpus": self.facts.get("logical_cpus"),
            "physical_cores": self.facts.get("physical_cores"),
            "cores_used": self.facts["cores_used"],
            "threads": self.threads,
            "vector_unit": None if unit is None else {"width_bits": unit[0], "fma_pipes": unit[1]},
            # what the sweep kernels were compiled for: vector width (and why), chains per loop
            "kernel_shape": self._k.SHAPE.to_dict(),
            "isa": [f for f in ("avx512f", "avx2", "fma", "avx", "sse2", "neon", "asimd")
                    if f in self.facts.get("flags", [])],
            "caches": self.caches,
            "llc_bytes": self.cache_bytes(),
            "max_clock_mhz": max_mhz,
            "nominal_clock_mhz": max(self.facts["mhz"]) if self.facts.get("mhz") else None,
            "memory_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "numba": self._numba_version,
        }

    def dtypes(self) -> tuple[str, ...]:
        return ("float64", "float32")

    def cache_bytes(self) -> int:
        return max((c["size_bytes"] for c in self.caches), default=32 << 20)

    def free_memory_bytes(self) -> int:
        return _meminfo_available()

    def default_buffer_bytes(self) -> int:
        """8× the last-level cache (so DRAM, not cache, is measured), at least 64 MiB. The input is
        filled and checked in chunks, so memory beyond input and output is small at any size."""
        return max(8 * self.cache_bytes(), 64 << 20)

    def core_clock_mhz(self, seconds: float = 0.3) -> float | None:
        """The core clock under load: one thread per core in use runs a chain of dependent integer
        adds (one per cycle) for about `seconds`; MHz = adds / the thread's own CPU time, the
        slowest core's. None where no chain is written for this machine.

        CPU time, not wall time: a thread that shares its core with another (the parallel runtime's
        workers spinning after a parallel region, the telemetry sampler, another program) is
        descheduled for part of the wall time but adds at the core's clock while it runs; divided
        by wall time it would report a fraction of the clock. The share of wall time each chain ran
        is kept in `last_clock` (under 0.9: the cores were shared while the clock was measured).
        """
        import threading

        if self._k.CHAIN_ASM is None:
            return None
        self._k.add_chain(1)  # compiled (or loaded from cache) outside the timed window
        t0 = time.thread_time()
        self._k.add_chain(2000)
        probe = max(time.thread_time() - t0, 1e-6)
        blocks = max(1000, int(2000 * seconds / probe))
        runs: list[tuple[float, float]] = []

        def run() -> None:
            w, c = time.perf_counter(), time.thread_time()
            n = self._k.add_chain(blocks)
            cpu, wall = time.thread_time() - c, time.perf_counter() - w
            if n == blocks * self._k.CLOCK_ADDS and cpu > 0:  # the chain did every add
                runs.append((n / cpu / 1e6, cpu / wall))
        threads = [threading.Thread(target=run) for _ in range(self.facts["cores_used"])]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if len(runs) != len(threads):
            return None
        self.last_clock = {"mhz_per_thread": [r for r, _ in runs], "cpu_share_of_wall": [s for _, s in runs]}
        return min(r for r, _ in runs)

    def granule(self, dtype: str) -> int:
        """Elements a launch must be a multiple of: whole chunks of every kernel loop, per thread."""
        return self._k.SHAPE.chunk_elements(ITEMSIZE[dtype]) * self.threads

    def alloc_sweep(self, dtype: str, nbytes: int) -> SweepBuffers:
        if dtype not in self.dtypes():
            raise UsageError(f"dtype {dtype}: the cpu backend supports {', '.join(self.dtypes())}")
        granule = self.granule(dtype)
        if nbytes <= 0:
            raise UsageError(f"--buffer-size {nbytes} bytes: must be positive")
        # rounded up to whole granules: a buffer asked for at 8x the last-level cache stays at least
        # that, so its points count as DRAM points (rounded down they fell just short)
        n = -(-nbytes // ITEMSIZE[dtype] // granule) * granule
        need = 2 * n * ITEMSIZE[dtype]
        if need > 0.8 * self.free_memory_bytes():
            raise UsageError(f"--buffer-size {nbytes} bytes: needs {need / 2**30:.1f} GiB (input and output), "
                             f"the machine has {self.free_memory_bytes() / 2**30:.1f} GiB available")
        x = aligned_empty(n, dtype)
        # sweep_input repeats every 61 elements: fill from one tile, never an int64 index array of n.
        tile = sweep_input(np.arange(61 << 16, dtype=np.int64)).astype(dtype)
        for lo in range(0, n, tile.size):
            x[lo:lo + tile.size] = tile[:n - lo]
        out = aligned_empty(n, dtype)
        partial = np.empty(self.threads * self._k.LANES, dtype=dtype)
        return SweepBuffers(dtype=dtype, x=x, out=out, partial=partial, elements=n, granule=granule)

    def kernel_variants(self, variant: str, working_set_bytes: int) -> list:
        """Shapes of the streaming loop (fmas = 0) of `variant` worth trying at this working set,
        the register file's own first (cpu_isa.KernelShape.variants); gpuroof.tune keeps the best."""
        dram = working_set_bytes >= 2 * self.cache_bytes()
        return self._k.SHAPE.variants(variant, dram)

    def sweep_launch(self, buf: SweepBuffers, fmas: int, variant: str, elements: int,
                     passes: int = 1, kernel=None) -> Launch:
        """`kernel`: a cpu_isa.LoopVariant of `variant`'s streaming loop (None: the shape's own). With
        FMAs the loop keeps the register file's width and chains and takes only the variant's
        prefetch and kind of store (where the streaming loop won with them at that size)."""
        if elements % buf.granule or not 0 < elements <= buf.elements:
            raise ValueError(f"elements={elements} must be a positive multiple of {buf.granule} ≤ {buf.elements}")
        if passes < 1:
            raise ValueError(f"passes={passes} must be ≥ 1")
        if kernel is not None and kernel.loop != variant:
            raise ValueError(f"kernel {kernel.name}: not a {variant} loop")
        t = np.dtype(buf.dtype).type
        a, b = t(-1.0), t(3.0)
        x = buf.x[:elements]
        threads = self.threads
        if variant == "rw":
            out = buf.out[:elements]
            if fmas and kernel is not None:
                kernel = replace(self._k.SHAPE.default_variant("rw"), nontemporal=kernel.nontemporal,
                                 prefetch=kernel.prefetch)
            if kernel is not None and kernel.nontemporal and out.ctypes.data % kernel.vector_bytes:
                raise ValueError(f"{kernel.name}: the output must start on a {kernel.vector_bytes}-byte boundary")
            fn = self._k.rw_kernel(kernel)

            def run() -> None:
                fn(x, out, fmas, a, b, threads, passes)
            partial_elements = 0
        elif variant == "ro":
            partial = buf.partial.reshape(threads, self._k.LANES)
            if fmas and kernel is not None:
                kernel = replace(self._k.SHAPE.default_variant("ro"), prefetch=kernel.prefetch)
            fn = self._k.ro_kernel(kernel)

            def run() -> None:
                fn(x, partial, fmas, a, b, threads, passes)
            partial_elements = buf.partial.size
        else:
            raise ValueError(f"variant {variant!r}: allowed ro, rw")
        return Launch(run=run, elements=elements, partial_elements=partial_elements,
                      partial_itemsize=ITEMSIZE[buf.dtype], passes=passes)

    def working_set_launch(self, buf: SweepBuffers, elements: int, passes: int, kernel=None) -> Launch:
        return self.sweep_launch(buf, 0, "ro", elements, passes, kernel=kernel)

    def compile(self, dtype: str) -> None:
        """JIT-compile (or load from numba's cache) both kernels for `dtype`, outside any timing."""
        buf = self.alloc_sweep(dtype, self.granule(dtype) * ITEMSIZE[dtype])
        for variant in ("rw", "ro"):
            for kernel in self._k.SHAPE.variants(variant, dram=True):  # every shape a run may try
                for fmas in (0, 1):  # two code paths in each kernel
                    self.sweep_launch(buf, fmas, variant, buf.elements, kernel=kernel).run()

    def time(self, fn: Callable[[], None], *, warmup: int, min_reps: int, max_reps: int,
             budget_s: float) -> np.ndarray:
        for _ in range(warmup):
            fn()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return np.asarray(times)

    def as_float64(self, arr, dtype: str):
        return np.asarray(arr, dtype=np.float64)

    def telemetry_source(self) -> Callable[[], dict]:
        return CpuTelemetry()

    def max_clocks(self) -> tuple[float | None, float | None]:
        khz = _read(SYS_CPU / "cpu0" / "cpufreq" / "cpuinfo_max_freq")
        return (int(khz) / 1000.0 if khz and khz.isdigit() else None), None

    def theoretical(self, sm_clock_mhz: float | None, mem_clock_mhz: float | None) -> dict:
        return cpu_theoretical(self.facts, sm_clock_mhz)

    # -- cache levels ---------------------------------------------------------------------------

    def cache_levels(self) -> list:
        """l1, l2, l3 (as sysfs has them) and dram. A per-core cache counts once per core in use:
        every thread streams its own share of the working set."""
        from gpuroof.backends.base import Level

        levels = []
        for c in sorted(self.caches, key=lambda c: c["level"]):
            instances = -(-self.threads // max(1, c["shared_by_cpus"]))
            kind = "per core" if c["shared_by_cpus"] == 1 else f"shared by {c['shared_by_cpus']} CPUs"
            levels.append(Level(f"l{c['level']}", c["size_bytes"] * instances,
                                f"{c['size_bytes']} B {kind}, {instances} in use"))
        return levels + [Level("dram", None, "main memory")]

    def hierarchy_bytes_per_launch(self) -> int:
        """Bytes one working-set launch streams: enough that numba's parallel launch (~50 µs) is
        noise even at L1 bandwidth."""
        return 512 << 20

    # -- matrix units --------------------------------------------------------------------------

    def matrix_units(self) -> tuple[str, ...]:
        return ("float32", "float64")

    def matrix_sizes(self, quick: bool) -> tuple[int, ...]:
        return (1024, 2048, 3072) if quick else (512, 1024, 2048, 3072, 4096)

    def gemm(self, unit: str, n: int):
        return cpu_gemm(unit, n)


def cpu_gemm(unit: str, n: int) -> "Gemm":
    """n×n float32/float64 GEMM through numpy's BLAS (all threads), checked on sampled rows."""
    from gpuroof.matrix import Gemm, rel_error, sample_rows

    if unit not in ("float32", "float64"):
        raise UsageError(f"matrix unit {unit}: the cpu backend has float32 and float64 (numpy BLAS)")
    rng = np.random.default_rng(n)
    a = rng.uniform(-1, 1, (n, n)).astype(unit)
    b = rng.uniform(-1, 1, (n, n)).astype(unit)
    c = np.full((n, n), np.nan, dtype=unit)  # an element the BLAS never writes fails the check
    rows = sample_rows(n)

    def run() -> None:
        np.matmul(a, b, out=c)

    def check() -> float:
        if unwritten(np, c):
            return float("inf")
        return rel_error(c[rows].astype(np.float64), a[rows].astype(np.float64) @ b.astype(np.float64))

    size = np.dtype(unit).itemsize
    return Gemm(unit=unit, n=n, run=run, check=check, itemsize_in=size, itemsize_out=size, output=c)
