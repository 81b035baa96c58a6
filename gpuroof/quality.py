"""Run quality: was the machine quiet while it was measured, and do the ceilings hang together.

A busy machine, cache levels out of order or a vector ceiling far under the same machine's BLAS
are recorded in run.json's `quality` ({"ok", "reasons", "warnings", ...}); `show` and the report put
them first and a run that is not ok is never the default ceilings for `bench`, the API or the pytest
plugin while an ok run of the same device exists. Every timed window (a sweep point, a bench case,
a user kernel) is watched on its own (`quiet_window`): timed again while the machine is busy, and
marked when it stayed busy. A BLAS held below the CPU (`blas_warnings`) is named with what it costs.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from gpuroof.backends.base import LEVELS

#: Other processes may use at most this share of the CPUs' time during a run (0.1: a tenth of a core
#: on 1 core, a fifth of one of 2 cores), and the hypervisor may steal at most STEAL_LIMIT.
BUSY_LIMIT = 0.10
STEAL_LIMIT = 0.05
#: On a CPU the BLAS GEMM runs on the same FMA units as the sweep: a vector ceiling under this share of
#: it says the sweep's kernel, not the machine, set the ceiling.
VECTOR_VS_BLAS = 0.8
#: Largest |relative deviation| of a sweep point from its band between min(P, B·I) and no overlap of
#: loads and FMAs (B: the point's own streaming loop, sweep.fit_quality). A point under its band by
#: more is timed again (measure.retime); when the second window strays too, the deviation repeats
#: and is the hardware's (a soft ridge, a loop that streams slower with FMAs in it): it is reported,
#: as a figure, and never flips a quiet run. A point above its band (faster than its own roofs) or a
#: stray that was never timed again is a measurement that cannot be trusted.
FIT_LIMIT = 0.25
#: A ceiling this far above theoretical at the measured clock means a wrong clock or a wrong count.
ABOVE_THEORETICAL = 1.05


def _cpu_seconds(p: psutil.Process) -> float | None:
    try:
        t = p.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return t.user + t.system


def _others(own: set[int]) -> dict[int, tuple[str, float | None, float]]:
    """pid -> (name, start time, CPU seconds) of every process but ours. The start time, not the
    name, tells a reused pid: a kernel worker renames itself with each work item it runs."""
    out = {}
    for p in psutil.process_iter(["name", "create_time"]):
        if p.pid in own:
            continue
        s = _cpu_seconds(p)
        if s is not None:
            out[p.pid] = (p.info.get("name") or "?", p.info.get("create_time"), s)
    return out


def _own_pids() -> set[int]:
    me = psutil.Process()
    pids = {me.pid}
    try:
        pids.update(c.pid for c in me.children(recursive=True))
    except psutil.Error:
        pass
    return pids


@dataclass
class Activity:
    """What else the machine did between `start` and `stop`: other processes' CPU time, steal, load."""

    wall0: float = field(default_factory=time.monotonic)
    times0: object = field(default_factory=psutil.cpu_times)
    others0: dict = field(default_factory=lambda: _others(_own_pids()))
    load0: tuple = field(default_factory=os.getloadavg)

    def stop(self) -> dict:
        wall = time.monotonic() - self.wall0
        t1 = psutil.cpu_times()
        others1 = _others(_own_pids())
        used = {}
        for pid, (name, started, s) in others1.items():
            before = self.others0.get(pid)
            d = s - before[2] if before and before[1] == started else s  # new, or a pid reused by another program
            if d > 0.005:
                used[pid] = (name, d)
        total = sum(d for _, d in used.values())
        cpus = psutil.cpu_count() or 1
        all0, all1 = sum(self.times0), sum(t1)
        steal = (getattr(t1, "steal", 0.0) - getattr(self.times0, "steal", 0.0)) / max(all1 - all0, 1e-9)
        top = sorted(used.items(), key=lambda kv: -kv[1][1])[:3]
        return {"wall_s": wall, "logical_cpus": cpus, "other_processes_cpu_s": total,
                "other_processes_share": total / max(wall * cpus, 1e-9), "steal_share": max(steal, 0.0),
                "busiest_other_processes": [{"pid": pid, "name": n, "cpu_s": round(d, 3)} for pid, (n, d) in top],
                "load_average_start": list(self.load0), "load_average_end": list(os.getloadavg())}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def platform_state() -> dict:
    """BLAS libraries and their threads (threadpoolctl), frequency governor and turbo where readable."""
    try:
        from threadpoolctl import threadpool_info

        blas = [{k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "user_api")}
                for i in threadpool_info()]
    except Exception as e:  # noqa: BLE001 - a broken BLAS probe must not fail a measurement
        blas = [{"error": f"{type(e).__name__}: {e}"}]
    no_turbo = _read("/sys/devices/system/cpu/intel_pstate/no_turbo")
    boost = _read("/sys/devices/system/cpu/cpufreq/boost")
    turbo = (no_turbo == "0") if no_turbo is not None else (boost == "1") if boost is not None else None
    env = {k: os.environ[k] for k in BLAS_ENV if k in os.environ}
    return {"blas": blas, "blas_env": env,
            "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"), "turbo": turbo}


def _order_reasons(bandwidth: dict) -> list[str]:

    names = [n for n in LEVELS if n in bandwidth and n != "shared"]
    return [f"cache levels out of order: {hi} {bandwidth[hi] / 1e9:.1f} GB/s is not above {lo} "
            f"{bandwidth[lo] / 1e9:.1f} GB/s" for hi, lo in zip(names, names[1:]) if not bandwidth[hi] > bandwidth[lo]]


def busy_reasons(activity: dict | None, what: str = "the run") -> list[str]:
    """Why a window was not quiet (other processes' share of the CPUs, steal), from `Activity.stop()`."""
    act = activity or {}
    reasons = []
    share, steal = act.get("other_processes_share"), act.get("steal_share")
    if share is not None and share > BUSY_LIMIT:
        names = ", ".join(f"{p['name']} {p['cpu_s']:.1f} s" for p in act.get("busiest_other_processes", []))
        reasons.append(f"busy: other processes used {share:.0%} of the CPUs' time during {what} ({names})")
    if steal is not None and steal > STEAL_LIMIT:
        reasons.append(f"busy: the hypervisor took {steal:.0%} of the CPUs' time (steal)")
    return reasons


def window_quality(activity: dict | None, what: str = "the window") -> dict:
    """The `quality` of a timed window that has no ceilings of its own (bench, profile, the API):
    {"ok", "reasons", "activity"}; only whether the machine was quiet can be judged."""
    reasons = busy_reasons(activity, what)
    return {"ok": not reasons, "reasons": reasons, "activity": activity}


#: A point, case or kernel whose window was busy is timed again at most this many times, and the
#: least disturbed window is kept: contention comes and goes, so a moment later is often quiet.
BUSY_RETRIES = 2


@dataclass
class Window:
    """One timed window (`result`: what the timed call returned) and what else the machine did."""

    result: Any
    activity: dict
    reasons: list[str]  # busy_reasons of the window: empty when it was quiet
    attempts: int = 1  # windows timed to get this one (1 + re-measurements)

    @property
    def disturbed(self) -> bool:
        return bool(self.reasons)

    def columns(self) -> dict:
        """The window's fields for a row of a long-form table (one row per repetition or case)."""
        return {"other_processes_share": self.activity.get("other_processes_share"),
                "steal_share": self.activity.get("steal_share"), "disturbed": self.disturbed,
                "attempts": self.attempts}

    def quality(self) -> dict:
        """window_quality's {"ok", "reasons", "activity"} of this window, with its attempts."""
        return {"ok": not self.reasons, "reasons": list(self.reasons), "activity": self.activity,
                "attempts": self.attempts}


def _load(activity: dict) -> float:
    return (activity.get("other_processes_share") or 0.0) + (activity.get("steal_share") or 0.0)


def quiet_window(timed: Callable[[], Any], what: str, retries: int = BUSY_RETRIES) -> Window:
    """Call `timed` while watching the machine; while other processes (or the hypervisor) took more
    than the busy limits of the CPUs' time, call it again, up to `retries` more times.

    The least disturbed window is kept, so a point's time comes from a quiet window whenever one
    could be had, and says so (`disturbed`) when none could. Backend-agnostic: the window is the
    host's, around whatever the backend's timer does.
    """
    if retries < 0:
        raise ValueError(f"retries={retries}: must be >= 0")
    best: Window | None = None
    attempts = 0
    for attempts in range(1, retries + 2):
        act = Activity()
        result = timed()
        activity = act.stop()
        w = Window(result, activity, busy_reasons(activity, what), attempts)
        if best is None or _load(activity) < _load(best.activity):
            best = w
        if not w.reasons:
            break
    assert best is not None
    best.attempts = attempts
    return best


# --------------------------------------------------------------------------- BLAS below the CPU

#: Environment variables that override which kernels a BLAS runs, whatever the CPU has.
BLAS_ENV = ("OPENBLAS_CORETYPE", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE")

#: OpenBLAS kernel sets (its core name, threadpoolctl's `architecture`) by the widest x86 vector
#: instruction set their GEMM kernels use.
OPENBLAS_ISA = {
    **dict.fromkeys(("skylakex", "cooperlake", "sapphirerapids"), "avx512"),
    **dict.fromkeys(("haswell", "zen", "excavator"), "avx2"),
    **dict.fromkeys(("sandybridge", "bulldozer", "piledriver", "steamroller"), "avx"),
    **dict.fromkeys(("nehalem", "core2", "penryn", "dunnington", "atom", "barcelona", "opteron",
                     "opteron_sse3", "prescott", "northwood", "athlon", "nano", "bobcat", "katmai",
                     "coppermine", "banias"), "sse2"),
}
#: The same for MKL_ENABLE_INSTRUCTIONS values (SSE4_2, AVX, AVX2, AVX512, AVX512_E1, ...), by prefix.
MKL_ISA = (("avx512", "avx512"), ("avx10", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse", "sse2"))
ISA_RANK = {"sse2": 1, "avx": 2, "avx2": 3, "avx512": 4}
#: Vector bits of an instruction set and whether it has FMA: FLOPs per cycle per pipe scale with
#: bits x (2 with FMA, else 1, a multiply and an add issued apart).
ISA_BITS = {"sse2": 128, "avx": 256, "avx2": 256, "avx512": 512}
ISA_FMA = {"sse2": False, "avx": False, "avx2": True, "avx512": True}


def _blas_cost(blas_isa: str, ours: str, hw_bits: int | None) -> str:
    """What running `blas_isa` kernels costs on FMA pipes of `hw_bits` that `ours` reaches."""
    width = min(ISA_BITS[ours], hw_bits or ISA_BITS[ours])
    share = (min(ISA_BITS[blas_isa], width) * (2 if ISA_FMA[blas_isa] else 1)) / (width * (2 if ISA_FMA[ours] else 1))
    if share >= 1:
        return f"the FMA pipes are {width}-bit, so its peak is the same; its kernels are not this CPU's"
    return (f"its GEMM can reach at most about {share:.0%} of the FMA units' peak "
            f"({ISA_BITS[blas_isa]}-bit{'' if ISA_FMA[blas_isa] else ', no FMA'} against {width}-bit FMA)")


def _measured_blas(compute: dict) -> str:
    parts = [f"{d}-matrix {compute[f'{d}-matrix'] / 1e9:.1f} GFLOP/s is {compute[f'{d}-matrix'] / v:.2f}x "
             f"the {d} vector ceiling" for d, v in compute.items()
             if not d.endswith("-matrix") and v and compute.get(f"{d}-matrix")]
    return f"; measured: {', '.join(parts)}" if parts else ""


def blas_warnings(meta: dict) -> list[str]:
    """On a CPU run: the BLAS held below the instruction set the vector kernels use (threadpoolctl's
    OpenBLAS `architecture`) or told which kernels to run (BLAS_ENV), named with what it costs; and
    a BLAS GEMM ceiling far under the vector FMA ceiling on the same cores, which nothing names."""
    if meta.get("backend") != "cpu":
        return []
    plat = meta.get("platform") or {}
    dev = meta.get("device") or {}
    ours = (dev.get("kernel_shape") or {}).get("isa") or dev.get("isa_level")
    hw_bits = (dev.get("vector_unit") or {}).get("width_bits")
    compute = (meta.get("ceilings") or {}).get("compute") or {}
    measured = _measured_blas(compute)
    out = []
    for lib in plat.get("blas") or []:
        arch = lib.get("architecture")
        isa = OPENBLAS_ISA.get(str(arch).lower()) if lib.get("internal_api") == "openblas" else None
        if isa and ours in ISA_RANK and ISA_RANK[isa] < ISA_RANK[ours]:
            out.append(f"BLAS held below the CPU: {lib.get('internal_api')} {lib.get('version') or ''} runs its "
                       f"{arch} kernels ({isa}) while the vector kernels use {ours}: "
                       f"{_blas_cost(isa, ours, hw_bits)}{measured}")
    for var, value in (plat.get("blas_env") or {}).items():
        low = str(value).strip().lower()
        if var == "OPENBLAS_CORETYPE":
            isa, what = OPENBLAS_ISA.get(low), f"OpenBLAS runs its {value} kernels whatever the CPU"
        elif var == "MKL_ENABLE_INSTRUCTIONS":
            isa = next((i for prefix, i in MKL_ISA if low.startswith(prefix)), None)
            what = f"MKL is limited to {value} instructions"
        else:
            isa, what = None, f"MKL takes the code path of CPU type {value} whatever the CPU"
        cost = (_blas_cost(isa, ours, hw_bits) if isa and ours in ISA_RANK and ISA_RANK[isa] < ISA_RANK[ours]
                else "the GEMM ceiling is that code path's, not necessarily the CPU's")
        out.append(f"BLAS override: {var}={value} is set: {what} ({isa or 'instruction set unknown'}); "
                   f"{cost}{measured}")
    if not out:
        for d, v in compute.items():
            m = compute.get(f"{d}-matrix")
            if not d.endswith("-matrix") and v and m and m < VECTOR_VS_BLAS * v:
                out.append(f"the {d}-matrix (BLAS GEMM) ceiling {m / 1e9:.1f} GFLOP/s is {m / v:.2f}x the {d} "
                           "vector FMA ceiling on the same cores: the BLAS does not reach the FMA units' "
                           "peak (its kernels, threads or build; threadpoolctl names the library)")
    return out


def assess(meta: dict) -> dict:
    """run.json's `quality`: ok and the reasons it is not, with the activity and platform it saw;
    `warnings` name what does not make the ceilings wrong but limits what they say (a BLAS held
    below the CPU: its GEMM ceiling is that BLAS's on this machine, not the FMA units')."""
    reasons = busy_reasons(meta.get("activity"))
    dist = meta.get("disturbed") or {}
    names = dist.get("ceilings_from_disturbed_points") or []
    if names:
        reasons.append(f"ceilings from disturbed points only ({', '.join(names)}): other processes were busy "
                       f"during every point they could come from, after {dist.get('retries', 0)} "
                       "re-measurement(s) each")
    ceilings = meta.get("ceilings") or {}
    reasons += _order_reasons(ceilings.get("bandwidth") or {})
    compute = ceilings.get("compute") or {}
    if meta.get("backend") == "cpu":
        for dtype, v in compute.items():
            blas = compute.get(f"{dtype}-matrix")
            if blas and v < VECTOR_VS_BLAS * blas:
                reasons.append(f"{dtype} vector ceiling {v / 1e9:.1f} GFLOP/s is under {VECTOR_VS_BLAS:.0%} of "
                               f"the BLAS GEMM's {blas / 1e9:.1f} GFLOP/s on the same cores")
    dram_stat = ((meta.get("ceiling_statistic") or {}).get("by_ceiling") or {}).get("dram") or {}
    fit_reasons, fit_warnings = fit_verdict(meta.get("fit") or {}, dram_stat.get("spread"))
    reasons += fit_reasons
    reasons += invalid_reasons(meta.get("validation") or {}, meta.get("hierarchy") or {})
    throttled = meta.get("throttled_points")
    if throttled:
        reasons.append(f"throttled: {throttled} sweep point(s) ran while the device held its clocks down "
                       "(power, thermal or another clock-event reason that slows the load)")
    for kind in ("compute", "bandwidth"):
        for name, r in ((meta.get("ratios") or {}).get(kind) or {}).items():
            if r is not None and r > ABOVE_THEORETICAL:
                reasons.append(f"{name} ceiling at {r:.0%} of theoretical: the clock or the count is wrong")
    return {"ok": not reasons, "reasons": reasons, "warnings": fit_warnings + blas_warnings(meta)}


def _point(d: dict) -> str:
    return f"{d['dtype']} {d['variant']} {d['fmas_per_element']} FMAs ({d['intensity_flop_per_byte']:.3g} FLOP/B)"


def fit_verdict(fit: dict, dram_spread: float | None = None) -> tuple[list[str], list[str]]:
    """(reasons, warnings) from the sweep's fit. The strays (`fit["strays"]`, beyond FIT_LIMIT) that
    fall under their band and were timed in a second window (`timed_windows` >= 2) repeat: the
    hardware's, a warning with the figure. One above its band, or never timed again, is a reason;
    one above its band by no more than the DRAM repetitions' own spread (`dram_spread`, (p90-p10)/p90)
    says so: the memory bandwidth moved during the run, so the roof under it is not the device's.
    A fit without the stray list (a run written before it) is judged by its largest deviation."""
    if "strays" not in fit:
        worst = fit.get("max_abs_deviation")
        if worst is not None and worst > FIT_LIMIT:
            return [f"the sweep strays from min(P, B·I): max |deviation| {worst:.2f} > {FIT_LIMIT}"], []
        return [], []
    reasons, warnings = [], []
    for d in fit["strays"]:
        if d["deviation"] > 0 and dram_spread is not None and d["deviation"] <= dram_spread:
            reasons.append(f"the sweep point {_point(d)} runs {d['deviation']:.0%} above min(P, B·I) of its own "
                           f"loop, inside the {dram_spread:.0%} spread of the DRAM repetitions: the memory "
                           "bandwidth moved during the run (another tenant of the host, a busy memory "
                           "system), so the DRAM roof is under-measured")
        elif d["deviation"] > 0:
            reasons.append(f"the sweep point {_point(d)} runs {d['deviation']:.0%} above min(P, B·I) of its own "
                           "loop: a roof is under-measured")
        elif (d.get("timed_windows") or 1) < 2:
            reasons.append(f"the sweep point {_point(d)} strays {-d['deviation']:.0%} under min(P, B·I) and was "
                           "not timed again")
        else:
            warnings.append(f"the sweep point {_point(d)} runs {-d['deviation']:.0%} under its band in both of "
                            "its windows: the hardware's (loads and FMAs of that loop overlap less than the "
                            "two-line model assumes), not a fault of the measurement")
    for dtype, soft in (fit.get("ridge_softness") or {}).items():
        if soft["shortfall"] > FIT_LIMIT:
            warnings.append(f"{dtype} ridge is soft: {soft['shortfall']:.0%} under min(P, B·I) at "
                            f"{soft['intensity_flop_per_byte']:.3g} FLOP/B (ridge {soft['ridge_flop_per_byte']:.3g})")
    return reasons, warnings


def invalid_reasons(validation: dict, hierarchy: dict) -> list[str]:
    """Points, working-set sizes or GEMM sizes that failed their check: the kernel or the library
    computed something else than what was timed, so the run's times are not the work counted. A
    matrix unit the library refused (`matrix_failed_units`) has no ceiling and is named there."""
    out = []
    if validation.get("invalid"):
        out.append(f"invalid points: {validation['invalid']} of {validation.get('points', '?')} sweep points "
                   "failed their closed-form check")
    if hierarchy.get("invalid_sizes"):
        out.append(f"invalid points: {hierarchy['invalid_sizes']} working-set size(s) failed their check")
    if validation.get("invalid_matrix_sizes"):
        out.append(f"invalid points: {validation['invalid_matrix_sizes']} GEMM size(s) failed their check")
    return out
