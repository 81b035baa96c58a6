"""Run quality: was the machine quiet while it was measured, and do the ceilings hang together.

A busy machine, cache levels out of order or a vector ceiling far under the same machine's BLAS
are recorded in run.json's `quality` ({"ok", "reasons", ...}); `show` and the report put them first
and a run that is not ok is never the default ceilings for `bench`, the API or the pytest plugin
while an ok run of the same device exists.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from gpuroof.hierarchy import LEVELS

#: Other processes may use at most this share of the CPUs' time during a run (0.1: a tenth of a core
#: on 1 core, a fifth of one of 2 cores), and the hypervisor may steal at most STEAL_LIMIT.
BUSY_LIMIT = 0.10
STEAL_LIMIT = 0.05
#: On a CPU the BLAS GEMM runs on the same FMA units as the sweep: a vector ceiling under this share of
#: it says the sweep's kernel, not the machine, set the ceiling.
VECTOR_VS_BLAS = 0.8
#: Largest max |relative deviation| of the sweep's points from min(P, B·I) on a quiet machine.
FIT_LIMIT = 0.15
#: A ceiling this far above theoretical at the measured clock means a wrong clock or a wrong count.
ABOVE_THEORETICAL = 1.05


def _cpu_seconds(p: psutil.Process) -> float | None:
    try:
        t = p.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return t.user + t.system


def _others(own: set[int]) -> dict[int, tuple[str, float]]:
    out = {}
    for p in psutil.process_iter(["name"]):
        if p.pid in own:
            continue
        s = _cpu_seconds(p)
        if s is not None:
            out[p.pid] = (p.info.get("name") or "?", s)
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
        for pid, (name, s) in others1.items():
            before = self.others0.get(pid)
            d = s - before[1] if before and before[0] == name else s  # new, or a pid reused by another program
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
    return {"blas": blas, "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "turbo": turbo}


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


def assess(meta: dict) -> dict:
    """run.json's `quality`: ok and the reasons it is not, with the activity and platform it saw."""
    reasons = busy_reasons(meta.get("activity"))
    ceilings = meta.get("ceilings") or {}
    reasons += _order_reasons(ceilings.get("bandwidth") or {})
    compute = ceilings.get("compute") or {}
    if meta.get("backend") == "cpu":
        for dtype, v in compute.items():
            blas = compute.get(f"{dtype}-matrix")
            if blas and v < VECTOR_VS_BLAS * blas:
                reasons.append(f"{dtype} vector ceiling {v / 1e9:.1f} GFLOP/s is under {VECTOR_VS_BLAS:.0%} of "
                               f"the BLAS GEMM's {blas / 1e9:.1f} GFLOP/s on the same cores")
    worst = (meta.get("fit") or {}).get("max_abs_deviation")
    if worst is not None and worst > FIT_LIMIT:
        reasons.append(f"the sweep strays from min(P, B·I): max |deviation| {worst:.2f} > {FIT_LIMIT}")
    for kind in ("compute", "bandwidth"):
        for name, r in ((meta.get("ratios") or {}).get(kind) or {}).items():
            if r is not None and r > ABOVE_THEORETICAL:
                reasons.append(f"{name} ceiling at {r:.0%} of theoretical: the clock or the count is wrong")
    return {"ok": not reasons, "reasons": reasons}
