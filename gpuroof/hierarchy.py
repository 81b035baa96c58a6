"""Working-set sweep: read bandwidth against working-set size, plateaus named by cache level.

The same validated sweep kernel (read-only, no FMAs) streams a working set of growing size many
times within one launch, so a set that fits a cache is served from it and small sets are timed over
enough bytes. Plateaus are found from the device's own cache sizes: a point belongs to a level when
its working set sits well inside that level and well outside the one below; the level's ceiling is
the median bandwidth over its plateau; a transition is where the bandwidth crosses the geometric
mean of two neighbouring plateaus.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from gpuroof.backends.base import ITEMSIZE, LEVELS, Level  # noqa: F401 - Level: the levels' type, used by callers
from gpuroof.errors import UsageError
from gpuroof.hostbound import per_rep
from gpuroof.quality import BUSY_RETRIES, quiet_window
from gpuroof.sweep import WINDOW_COLUMNS, check, counts, plateau_statistic, shape_name, undisturbed

#: A point is on a level's plateau when its working set is ≤ INSIDE × the level's capacity and
#: ≥ OUTSIDE × the capacity of the level below (away from both transitions).
INSIDE = 0.5
OUTSIDE = 2.0

DTYPE = "float32"  # the working-set sweep streams float32; bandwidth does not depend on the type


def parse_levels(text: str | None, have: tuple[str, ...]) -> tuple[str, ...]:
    """`--levels l1,l2,dram` checked against LEVELS and against what this device has."""
    if text is None:
        return have
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in LEVELS]
    if unknown or not names:
        raise UsageError(f"--levels {text}: unknown level {', '.join(unknown) or '(empty)'} "
                         f"(allowed: {', '.join(LEVELS)})")
    missing = [n for n in names if n not in have]
    if missing:
        raise UsageError(f"--levels {text}: this device has no {', '.join(missing)} level "
                         f"(it has {', '.join(have)})")
    return tuple(n for n in LEVELS if n in names)


def working_set_sizes(lo: int, hi: int, per_octave: int) -> list[int]:
    """Geometric sizes from `lo` to at least `hi` bytes, `per_octave` points per doubling."""
    steps = math.ceil(math.log2(hi / lo) * per_octave)
    return sorted({int(lo * 2 ** (i / per_octave)) for i in range(steps + 1)})


def hierarchy_sweep(backend: Any, levels: list[Level], *, quick: bool, budget_s: float, min_reps: int,
                    max_reps: int, sampler: Any = None, retries: int = BUSY_RETRIES,
                    progress: Callable[[dict], None] | None = None, tuner: Any = None) -> pd.DataFrame:
    """One row per timed repetition of each working-set size (16 KiB to ≥ 4× the last cache); with
    a `tuner` (gpuroof.tune.Tuner) each level is read in the shape it found fastest there. A size
    timed while other processes were busy is timed again up to `retries` times."""
    caches = [lv.capacity_bytes for lv in levels if lv.name != "dram" and lv.capacity_bytes]
    hi = 4 * max(caches) if caches else 256 << 20
    sizes = working_set_sizes(16 << 10, hi, 2 if quick else 3)
    target = backend.hierarchy_bytes_per_launch()
    buf = backend.alloc_sweep(DTYPE, max(sizes))
    if sampler is not None:
        sampler.phase("hierarchy")
    rows: list[dict] = []
    try:
        for size in sizes:
            elements = max(buf.granule, size // ITEMSIZE[DTYPE] // buf.granule * buf.granule)
            ws = elements * ITEMSIZE[DTYPE]
            passes = max(1, math.ceil(target / ws))
            kernel = tuner.kernel(buf, "ro", elements, passes) if tuner is not None else None
            launch = backend.working_set_launch(buf, elements, passes, **({"kernel": kernel} if kernel else {}))
            passes = launch.passes  # reads of every element in one launch, as the backend made it
            buf.partial[...] = np.nan
            t0 = sampler.now() if sampler is not None else 0.0
            win = quiet_window(lambda: backend.timed(launch.run, warmup=1, min_reps=min_reps,
                                                     max_reps=max_reps, budget_s=budget_s),
                               f"the working set of {ws} bytes", retries)
            times, host = win.result.times_s, per_rep(win.result)
            t1 = sampler.now() if sampler is not None else 0.0
            err = check(backend, buf, "ro", 0, elements, launch.partial_elements, passes, launch.expected_sum)
            _, nbytes = counts(DTYPE, "ro", 0, elements, launch.partial_elements,
                               launch.partial_itemsize, passes)
            tel = sampler.window(t0, t1) if sampler is not None else {}
            for rep, t in enumerate(times):
                rows.append({"working_set_bytes": ws, "passes": passes, "bytes": nbytes, "rep": rep,
                             "kernel": kernel.name if kernel else None,
                             "time_s": float(t), "valid": err <= 1e-5, "rel_error": err,
                             "t_start_s": t0, "t_end_s": t1, **tel, **host[rep], **win.columns()})
            if progress:
                progress({"working_set_bytes": ws, "gbps": nbytes / float(np.median(times)) / 1e9,
                          "valid": err <= 1e-5, "disturbed": win.disturbed})
    finally:
        del buf
    return pd.DataFrame(rows)


def summarize_hierarchy(samples: pd.DataFrame, levels: list[Level]) -> pd.DataFrame:
    """One row per working-set size: median bandwidth, its spread, and the level it is named by."""
    g = samples.groupby("working_set_bytes")
    window = {c: (c, "first") for c in WINDOW_COLUMNS if c in samples.columns}
    if "kernel" in samples.columns:
        window["kernel"] = ("kernel", "first")
    pts = g.agg(bytes=("bytes", "first"), passes=("passes", "first"), time_s=("time_s", "median"),
                time_q1_s=("time_s", lambda s: s.quantile(0.25)),
                time_q3_s=("time_s", lambda s: s.quantile(0.75)), valid=("valid", "all"),
                reps=("time_s", "size"), **window).reset_index()
    pts["bandwidth_Bps"] = pts["bytes"] / pts["time_s"]
    pts["level"] = [plateau_level(ws, levels) for ws in pts["working_set_bytes"]]
    return pts


def plateau_level(ws: int, levels: list[Level]) -> str | None:
    """The level whose plateau this working set lies on, None in a transition."""
    below = 0
    for lv in levels:
        if lv.name == "shared":
            continue
        if lv.name == "dram":
            return "dram" if ws >= OUTSIDE * below else None
        if lv.capacity_bytes is None:
            continue
        if OUTSIDE * below <= ws <= INSIDE * lv.capacity_bytes:
            return lv.name
        below = lv.capacity_bytes
    return None


def level_ceilings(points: pd.DataFrame, levels: list[Level], samples: pd.DataFrame | None = None,
                   statistics: dict | None = None, disturbed: list[str] | None = None,
                   sources: dict | None = None) -> tuple[dict[str, float], list[dict]]:
    """Each level's bandwidth over its plateau, and the transitions between neighbouring levels.

    With the per-repetition `samples`, a level's ceiling is sweep.CEILING_PERCENTILE of the valid
    repetitions of every working set on its plateau (its statistic goes into `statistics`), so a few
    contended repetitions cannot drag it down; without them, the median of the sizes' medians.
    Only sizes timed in an undisturbed window count; a level whose plateau has none takes the
    disturbed ones and is named in `disturbed`. `sources` gets, per level, the loop shapes and the
    working sets its ceiling came from.
    """
    ok = points[points["valid"]]
    ceilings: dict[str, float] = {}
    for lv in levels:
        on, forced = undisturbed(ok[ok["level"] == lv.name])
        if not len(on):
            continue
        if forced and disturbed is not None:
            disturbed.append(lv.name)
        if sources is not None:
            kernels = on["kernel"] if "kernel" in on else [None]
            sources[lv.name] = {"kernel": "working-set read", "shapes": sorted({shape_name(k) for k in kernels}),
                                "working_sets_bytes": [int(w) for w in on["working_set_bytes"]]}
        if samples is None:
            ceilings[lv.name] = float(on["bandwidth_Bps"].median())
            continue
        reps = samples[samples["valid"] & samples["working_set_bytes"].isin(on["working_set_bytes"])]
        stat = plateau_statistic(reps["bytes"] / reps["time_s"])
        ceilings[lv.name] = stat["value"]
        if statistics is not None:
            statistics[lv.name] = stat
    transitions = []
    names = [lv.name for lv in levels if lv.name in ceilings]
    for upper, lower in zip(names, names[1:]):
        mid = math.sqrt(ceilings[upper] * ceilings[lower])
        below = ok[ok["bandwidth_Bps"] < mid].sort_values("working_set_bytes")
        last_upper = ok.loc[ok["level"] == upper, "working_set_bytes"].max()
        cross = below[below["working_set_bytes"] > last_upper]
        transitions.append({"from": upper, "to": lower, "bandwidth_Bps": mid,
                            "working_set_bytes": int(cross["working_set_bytes"].iloc[0]) if len(cross) else None})
    return ceilings, transitions
