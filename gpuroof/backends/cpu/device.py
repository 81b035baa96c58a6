"""What the CPU is, read from /proc and sysfs: model, ISA, vector unit, caches, theoretical peaks, memory."""
from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

import numpy as np

from gpuroof.backends.base import ITEMSIZE
from gpuroof.errors import UsageError

SYS_CPU = Path("/sys/devices/system/cpu")


def read(path: Path) -> str | None:
    """A /proc or sysfs file's text, or None where it cannot be read."""
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
        kind = read(d / "type")
        size = read(d / "size")
        if kind not in ("Data", "Unified") or not size:
            continue
        shared = read(d / "shared_cpu_list") or "0"
        caches.append({
            "level": int(read(d / "level") or 0),
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
#: Flags only Intel's server cores from Sapphire Rapids on have (AMX tiles, AVX-512 FP16 with AMX): every
#: one of them has two 512-bit FMA units. A hypervisor may show another model number (a KVM guest of an
#: Emerald Rapids host was seen as model 167, Rocket Lake, which has neither flag): the flags settle it.
INTEL_SERVER_AMX = {"amx_tile", "amx_bf16", "amx_int8"}


def vector_unit(vendor: str | None, family: int | None, flags: list[str], model: int | None = None,
                model_name: str = "") -> tuple[int, int] | None:
    """(vector width in bits that one FMA pipe processes per cycle, FMA pipes per core), or None.

    Only what the instruction-set flags, the family/model numbers and the model name settle is
    answered. Skylake-SP and Cascade Lake (model 85) differ by SKU: Platinum and Gold 6xxx have two
    512-bit FMA units, Silver, Bronze and Gold 5xxx one; a name that says neither stays unknown (a
    virtual machine often shows only "Intel Xeon Processor"). AMX flags (INTEL_SERVER_AMX) outrank
    the model number, which a hypervisor may rewrite.
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
    if family == 6 and (model in INTEL_TWO_FMA512 or f & INTEL_SERVER_AMX):
        return 512, 2
    if family == 6 and model in INTEL_ONE_FMA512:
        return 512, 1
    if family == 6 and model == 85:
        if re.search(r"Platinum|Gold 6\d{3}", model_name):
            return 512, 2
        if re.search(r"Silver|Bronze|Gold 5\d{3}", model_name):
            return 512, 1
    return None


#: The instruction sets a device's name tells apart (isa_level's and isa.vector_isa's names alike).
ISA_LADDER = ("avx512", "avx2", "avx", "sse2", "neon")


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
    `bench`, `compare` and the plugin's cache. A thread count chosen with --threads
    (`facts["threads_chosen"]`) that differs from the cores in use (SMT siblings) is named too: 2
    threads on one core and 1 thread on it are different devices. Code generated for a narrower
    instruction set than the CPU's (`facts["code_isa"]`: AVX2 forced on an AVX-512 core through
    NUMBA_CPU_FEATURES) is named too: its roofline is another device's.
    """
    model = facts.get("model") or platform.processor() or "cpu"
    fam = facts.get("family")
    num = facts.get("model_number")
    ident = f"family {fam} model {num}, " if fam is not None and num is not None else ""
    cores = facts.get("cores_used")
    threads = facts.get("threads_chosen")
    smt = f", {threads} threads" if threads and cores and threads != cores else ""
    isa = isa_level(facts.get("flags", []))
    code = facts.get("code_isa")
    forced = f", {code} code" if code in ISA_LADDER and isa in ISA_LADDER and code != isa else ""
    return f"{model} ({ident}{isa}{forced}, {cores or '?'} cores{smt})"


def logical_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as numba counts its default threads)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(threads: object, label: str = "--threads ") -> int:
    """A thread count for the CPU backend: an integer in 1..logical CPUs, else UsageError naming the range."""
    n = logical_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= n:
        raise UsageError(f"{label}{threads!r}: this machine has {n} logical CPU(s) for the cpu backend "
                         f"(allowed: {'1' if n == 1 else f'1..{n}'})")
    return threads


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


class PagePool:
    """Page-aligned arrays whose memory is kept for the next buffer once no array uses it.

    The first touch of a page costs far more than a read of it (under a hypervisor, 2.5 s per GiB
    against 0.14 s), and a run allocates DRAM-sized buffers again and again: per dtype, for the
    points timed again, for the working-set sweep. Reused, their pages are touched once per process.
    Memory is handed out again only when no numpy array refers to it any more (its reference count),
    so two live buffers never share it. Arrays under MIN_BYTES are plain allocations.
    """

    MIN_BYTES = 64 << 20
    ALIGN = 4096
    GRAIN = 2 << 20  # sizes rounded up to whole huge pages, so that one dtype's buffer fits the other's

    def __init__(self):
        self._raws: list[np.ndarray] = []

    def empty(self, n: int, dtype) -> np.ndarray:
        nbytes = n * np.dtype(dtype).itemsize
        if nbytes < self.MIN_BYTES:
            return aligned_empty(n, dtype, self.ALIGN)
        for i in range(len(self._raws)):
            # referenced by the list and by getrefcount's argument alone: no array uses it
            if sys.getrefcount(self._raws[i]) == 2 and self._raws[i].size >= nbytes + self.ALIGN:
                return self._view(self._raws[i], n, dtype)
        self._raws = [r for r in self._raws if sys.getrefcount(r) > 3]  # drop free ones too small
        raw = np.empty(-(-(nbytes + self.ALIGN) // self.GRAIN) * self.GRAIN, dtype=np.uint8)
        self._raws.append(raw)
        return self._view(raw, n, dtype)

    def _view(self, raw: np.ndarray, n: int, dtype) -> np.ndarray:
        offset = -raw.ctypes.data % self.ALIGN
        return raw[offset:offset + n * np.dtype(dtype).itemsize].view(dtype)

    def clear(self) -> None:
        self._raws = []


def meminfo_available() -> int:
    text = read(Path("/proc/meminfo")) or ""
    m = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else 0


class CpuTelemetry:
    """Per-core MHz (median, min, max over CPUs) and load from /proc; no power or temperature here."""

    def __init__(self) -> None:
        self._last = self._stat()

    @staticmethod
    def _stat() -> tuple[int, int] | None:
        line = (read(Path("/proc/stat")) or "").split("\n", 1)[0].split()
        if not line or line[0] != "cpu":
            return None
        vals = [int(v) for v in line[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    def __call__(self) -> dict:
        mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", read(Path("/proc/cpuinfo")) or "", re.MULTILINE)
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
