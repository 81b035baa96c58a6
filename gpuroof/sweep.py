"""The intensity sweep: FMAs per element swept per dtype and variant -> validated points -> ceilings."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from gpuroof.backends.base import INPUT_PERIOD, ITEMSIZE, SWEEP_B, VARIANTS, Backend, SweepBuffers, input_sum
from gpuroof.hostbound import host_bound, per_rep
from gpuroof.quality import BUSY_RETRIES, FIT_LIMIT, quiet_window
from gpuroof.roofline import Roofline
from gpuroof.telemetry import Sampler

#: Every point's FMA count is compiled into the CUDA module; the CPU kernels take any count.
FMA_GRID = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
QUICK_FMA_GRID = (0, 1, 4, 16, 64, 256, 2048)

CONVENTIONS = {
    "flops": "an FMA counts 2 FLOPs; the sweep does fmas_per_element FMAs on every element",
    "bytes": "compulsory traffic: each input element read once, each output element written once "
             "(rw writes every element; ro writes one partial sum per thread, counted)",
    "intensity": "flops / bytes (FLOP/byte)",
    "time": "seconds per launch; rates use the median over repetitions",
}

#: Relative tolerance of the closed-form check. rw results are exact (a = -1); ro sums are
#: accumulated in float32 for 16-bit and 32-bit types, so they carry float32 rounding.
TOLERANCE = {("rw", d): 0.0 for d in ITEMSIZE} | {("ro", "float64"): 1e-12, ("ro", "float32"): 1e-5,
                                                   ("ro", "float16"): 1e-5, ("ro", "bfloat16"): 1e-5}

NOISY_IQR = 0.10  # a point whose IQR exceeds 10% of its median is flagged noisy


@dataclass(frozen=True)
class SweepSettings:
    dtypes: tuple[str, ...]
    fmas: tuple[int, ...] = FMA_GRID
    variants: tuple[str, ...] = VARIANTS
    buffer_bytes: int = 0  # per array; 0 = the backend's default
    budget_s: float = 0.5  # timing budget per point
    warmup: int = 1
    min_reps: int = 5
    max_reps: int = 100
    max_launch_s: float = 0.05  # compute-bound points shrink their element count to about this
    busy_retries: int = BUSY_RETRIES  # a point timed while others were busy is timed again, this often at most

    @classmethod
    def preset(cls, dtypes: tuple[str, ...], quick: bool, buffer_bytes: int = 0) -> "SweepSettings":
        if quick:
            return cls(dtypes=dtypes, fmas=QUICK_FMA_GRID, buffer_bytes=buffer_bytes, budget_s=0.15,
                       min_reps=3, max_reps=20, max_launch_s=0.02, busy_retries=1)
        return cls(dtypes=dtypes, buffer_bytes=buffer_bytes)

    def to_dict(self) -> dict:
        return asdict(self)


def counts(dtype: str, variant: str, fmas: int, elements: int, partial_elements: int,
           partial_itemsize: int, passes: int = 1) -> tuple[int, int]:
    """(FLOPs, bytes) of one launch, exactly: `passes` streams over `elements`, partial sums once."""
    flops = 2 * fmas * elements * passes
    nbytes = elements * ITEMSIZE[dtype] * (2 if variant == "rw" else 1) * passes
    if variant == "ro":
        nbytes += partial_elements * partial_itemsize
    return flops, nbytes


def check(backend: Backend, buf: SweepBuffers, variant: str, fmas: int, elements: int,
          partial_elements: int, passes: int = 1, expected_sum: Callable[[], float] | None = None) -> float:
    """Relative error of the last launch's output against the closed form (exact for a = -1); inf
    when any output element (rw) or partial sum (ro) is not finite: one the kernel never wrote is
    still the NaN it was filled with (Backend.poison), and must fail the point, never vanish in a max.
    Every output element is read (Backend.rw_error), none sampled; the sum the partial sums must
    make is a closed form of the input (input_sum), or `expected_sum()` where the launch gives one
    (a read loop that folds the input by XOR: Launch.expected_sum)."""
    xp = backend.xp
    if variant == "rw":
        worst = backend.rw_error(buf, fmas, elements)
        # the input repeats every INPUT_PERIOD elements (sweep_input): its first period holds every
        # value of the buffer, so the largest |f(x)| is read there
        head = backend.as_float64(buf.x[:min(elements, INPUT_PERIOD)], buf.dtype)
        scale = float(xp.max(xp.abs(head if fmas % 2 == 0 else SWEEP_B - head)))
        err = worst / scale if scale > 0 else float("inf")
    else:
        partial = backend.as_float64(buf.partial[:partial_elements], buf.dtype)
        if not bool(xp.isfinite(partial).all()):
            return float("inf")
        got_sum = float(xp.sum(partial))
        want = expected_sum() if expected_sum is not None else input_sum(elements, fmas) * passes
        err = abs(got_sum - want) / abs(want) if want != 0 else float("inf")
    return err if np.isfinite(err) else float("inf")


def compute_point_elements(trial_elements: int, trial_s: float, target_s: float, step: int,
                           most: int) -> int:
    """Elements of a point whose launch of `trial_elements` took `trial_s`: all `most` when that
    lasts at most `target_s`, else about `target_s` worth; in whole grid steps of `step` elements.

    The time comes from the point itself (its FMA count), not from a memory-bound neighbour, whose
    time per FMA is many times too long and would shrink compute launches far below the target.
    Whole steps keep the guarded partial step out: it would run every FMA for only some threads.
    """
    if trial_elements <= 0 or step <= 0 or most <= 0:
        raise ValueError(f"trial_elements {trial_elements}, step {step}, most {most}: must be positive")
    per_element_s = trial_s / trial_elements
    want = most if not per_element_s > 0 or per_element_s * most <= target_s else int(target_s / per_element_s)
    return max(step, want // step * step) if most >= step else most


def time_point(backend: Backend, settings: SweepSettings, sampler: Sampler, buf: SweepBuffers, variant: str,
               fmas: int, elements: int, kernel: dict) -> list[dict]:
    """One point: launched in its shape (`kernel`: {} or {"kernel": ...}), timed in a watched window,
    its output checked against the closed form; one row per repetition."""
    dtype = buf.dtype
    launch = backend.sweep_launch(buf, fmas, variant, elements, **kernel)
    backend.poison(buf, variant, elements)  # stale results of another point can never pass the check
    t_start = sampler.now()
    win = quiet_window(lambda: backend.timed(launch.run, warmup=settings.warmup, min_reps=settings.min_reps,
                                             max_reps=settings.max_reps, budget_s=settings.budget_s),
                       f"the point {dtype} {variant} {fmas} FMAs", settings.busy_retries)
    times, host = win.result.times_s, per_rep(win.result)
    t_end = sampler.now()
    err = check(backend, buf, variant, fmas, elements, launch.partial_elements, expected_sum=launch.expected_sum)
    valid = err <= TOLERANCE[(variant, dtype)]
    flops, nb = counts(dtype, variant, fmas, elements, launch.partial_elements, launch.partial_itemsize)
    tel = sampler.window(t_start, t_end)
    return [{"dtype": dtype, "variant": variant, "fmas_per_element": fmas, "elements": elements,
             "working_set_bytes": elements * ITEMSIZE[dtype] * (2 if variant == "rw" else 1), "flops": flops,
             "bytes": nb, "intensity_flop_per_byte": flops / nb, "rep": rep, "time_s": float(t), "valid": valid,
             "rel_error": err, "t_start_s": t_start, "t_end_s": t_end,
             "kernel": kernel["kernel"].name if kernel else None, **tel, **host[rep], **win.columns()}
            for rep, t in enumerate(times)]


#: Points the fit finds this far under min(P, B·I) are timed once more at the end of the sweep.
RETIME_DEVIATION = 0.15
#: At most this many points are timed again (the worst first).
RETIME_MAX = 6


def retime_strays(backend: Backend, settings: SweepSettings, sampler: Sampler, samples: pd.DataFrame,
                  keys: list[tuple[str, str, int]], tuner=None) -> tuple[pd.DataFrame, list[dict]]:
    """Time the points `keys` ((dtype, variant, fmas)) once more, on the same elements and in the same
    shape, and keep whichever window ran faster (by median time).

    A point far under min(P, B·I) while its neighbours follow it was most often slowed by something
    the machine's counters do not show (a virtual machine's host running another guest on the
    same core): the second window says whether the point, or the moment, was slow. Both windows'
    medians are returned for the run's record.
    """
    record = []
    out = samples
    for dtype in dict.fromkeys(k[0] for k in keys):
        nbytes = settings.buffer_bytes or backend.default_buffer_bytes()
        buf = backend.alloc_sweep(dtype, nbytes)
        try:
            for d, variant, fmas in (k for k in keys if k[0] == dtype):
                on = (out["dtype"] == d) & (out["variant"] == variant) & (out["fmas_per_element"] == fmas)
                old = out[on]
                elements = int(old["elements"].iloc[0])
                ws = int(old["working_set_bytes"].iloc[0])
                k = tuner.known(dtype, variant, ws) if tuner is not None else None
                if k is not None and old["kernel"].iloc[0] != k.name:
                    k = None  # the point ran in another shape: keep its own (the default)
                new = pd.DataFrame(time_point(backend, settings, sampler, buf, variant, fmas, elements,
                                              {"kernel": k} if k is not None else {}))
                before, after = float(old["time_s"].median()), float(new["time_s"].median())
                kept = "second" if new["valid"].all() and after < before else "first"
                record.append({"dtype": d, "variant": variant, "fmas_per_element": int(fmas),
                               "first_median_s": before, "second_median_s": after, "kept": kept})
                if kept == "second":
                    out = pd.concat([out[~on], new], ignore_index=True)
        finally:
            del buf
    return out, record


@dataclass
class SweepResult:
    samples: pd.DataFrame  # one row per timed repetition
    buffers: dict[str, int] = field(default_factory=dict)  # elements per dtype


def run_sweep(backend: Backend, settings: SweepSettings, sampler: Sampler,
              progress: Callable[[dict], None] | None = None, tuner=None) -> SweepResult:
    """Time every (dtype, variant, fmas) point, validate it, and return the long-form samples.
    With a `tuner` (gpuroof.tune.Tuner), the streaming loop of each level runs in the shape that
    the tuner found fastest there."""
    rows: list[dict] = []
    buffers: dict[str, int] = {}
    nbytes = settings.buffer_bytes or backend.default_buffer_bytes()
    for dtype in settings.dtypes:
        sampler.phase(f"compile {dtype}")
        backend.compile(dtype)  # JIT time stays out of every timed window
        sampler.phase(f"allocate {dtype}")
        buf = backend.alloc_sweep(dtype, nbytes)
        buffers[dtype] = buf.elements
        for variant in settings.variants:
            sampler.phase(f"{dtype} {variant}")
            rows += sweep_variant(backend, settings, sampler, buf, variant, progress, tuner)
        del buf  # no launch of this dtype outlives the loop: its memory is free for the next one
    return SweepResult(samples=pd.DataFrame(rows), buffers=buffers)


def sweep_variant(backend: Backend, settings: SweepSettings, sampler: Sampler, buf: SweepBuffers, variant: str,
                  progress: Callable[[dict], None] | None = None, tuner=None) -> list[dict]:
    """The points of one dtype and variant, FMA count by FMA count; one row per repetition."""
    dtype = buf.dtype
    rows: list[dict] = []

    def shape(fmas: int, elements: int) -> dict:
        if tuner is None:
            return {}
        k = tuner.kernel(buf, variant, elements) if not fmas else \
            tuner.known(dtype, variant, elements * ITEMSIZE[dtype] * (2 if variant == "rw" else 1))
        return {"kernel": k} if k is not None else {}

    elements = buf.elements
    for fmas in settings.fmas:
        if not fmas:
            elements = buf.elements
        else:  # sized by its own time: one untimed launch on the last point's elements
            trial = backend.sweep_launch(buf, fmas, variant, elements, **shape(fmas, elements))
            trial_s = float(np.median(backend.time(trial.run, warmup=0, min_reps=1, max_reps=1,
                                                   budget_s=0.0)))
            # the trial's arguments are this dtype's buffers: released here, so that nothing but
            # `buf` holds them when run_sweep lets go of it and allocates the next dtype's
            del trial
            elements = compute_point_elements(elements, trial_s, settings.max_launch_s,
                                              backend.sweep_step(buf, fmas, variant), buf.elements)
        kernel = shape(fmas, elements)
        point = time_point(backend, settings, sampler, buf, variant, fmas, elements, kernel)
        rows += point
        if progress:
            p0 = point[0]
            med = float(np.median([r["time_s"] for r in point]))
            progress({"dtype": dtype, "variant": variant, "fmas": fmas,
                      "intensity": p0["intensity_flop_per_byte"], "gflops": p0["flops"] / med / 1e9,
                      "gbps": p0["bytes"] / med / 1e9, "clock_mhz": p0.get("sm_clock_mhz"),
                      "valid": p0["valid"], "disturbed": p0.get("disturbed")})
    return rows


#: Per-window columns a point keeps from its samples (quality.Window.columns), where they were recorded.
WINDOW_COLUMNS = ("other_processes_share", "steal_share", "disturbed", "attempts")


def shape_name(kernel) -> str:
    """A point's loop shape by name; 'default' where it ran in the backend's only one (None, NaN)."""
    return kernel if isinstance(kernel, str) else "default"


def summarize(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per point: median time and its spread, rates at the median, flags."""
    keys = ["dtype", "variant", "fmas_per_element"]
    samples = samples.assign(enqueue_s=pd.to_numeric(  # the host's enqueue per launch: none on the CPU
        samples["enqueue_s"] if "enqueue_s" in samples else np.nan, errors="coerce"))
    g = samples.groupby(keys, sort=False)
    window = {c: (c, "first") for c in WINDOW_COLUMNS if c in samples.columns}
    if "kernel" in samples.columns:  # the loop shape the point ran in (None: the backend's only one)
        window["kernel"] = ("kernel", "first")
    pts = g.agg(elements=("elements", "first"), working_set_bytes=("working_set_bytes", "first"),
                flops=("flops", "first"), bytes=("bytes", "first"),
                intensity_flop_per_byte=("intensity_flop_per_byte", "first"),
                reps=("time_s", "size"), time_s=("time_s", "median"),
                time_q1_s=("time_s", lambda s: s.quantile(0.25)),
                time_q3_s=("time_s", lambda s: s.quantile(0.75)),
                valid=("valid", "all"), rel_error=("rel_error", "max"),
                sm_clock_mhz=("sm_clock_mhz", "first"), mem_clock_mhz=("mem_clock_mhz", "first"),
                power_w=("power_w", "first"), temperature_c=("temperature_c", "first"),
                throttled=("throttled", "first"), enqueue_s=("enqueue_s", "median"), **window).reset_index()
    pts["host_bound"] = [host_bound(e if np.isfinite(e) else None, t)
                         for e, t in zip(pts["enqueue_s"], pts["time_s"])]
    pts["flops_per_s"] = pts["flops"] / pts["time_s"]
    pts["bandwidth_Bps"] = pts["bytes"] / pts["time_s"]
    pts["noisy"] = (pts["time_q3_s"] - pts["time_q1_s"]) / pts["time_s"] > NOISY_IQR
    return pts


#: A ceiling is this percentile of the per-repetition rates over its plateau: contention only ever
#: slows a repetition down, so a high percentile is what the hardware does, while a lone lucky
#: repetition (timer granularity) cannot set it as a maximum would.
CEILING_PERCENTILE = 90
CEILING_STATISTIC = f"p{CEILING_PERCENTILE} of the repetitions over the plateau"


def plateau_statistic(rates: Iterable[float]) -> dict:
    """The ceiling from a plateau's per-repetition rates, with the spread it came with."""
    r = np.asarray(list(rates), dtype=float)
    r = r[np.isfinite(r) & (r > 0)]
    if not len(r):
        raise ValueError("no valid repetition on the plateau")
    p10, p50, top = (float(v) for v in np.percentile(r, [10, 50, CEILING_PERCENTILE]))
    return {"value": top, "p10": p10, "median": p50, "repetitions": int(len(r)),
            "spread": (top - p10) / top}


def undisturbed(points: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """(the points timed in a quiet window, False), or (all of `points`, True) when every one of
    them was disturbed by other processes; points without the `disturbed` column count as quiet."""
    if "disturbed" not in points.columns or points.empty:
        return points, False
    quiet = points[~points["disturbed"].fillna(False).astype(bool)]
    return (quiet, False) if len(quiet) else (points, True)


@dataclass
class Ceilings:
    roofline: Roofline
    plateaus: dict[str, list[dict]]  # the points each ceiling came from
    fit: dict
    statistics: dict[str, dict] = field(default_factory=dict)  # per ceiling: plateau_statistic()
    disturbed: list[str] = field(default_factory=list)  # ceilings that had no undisturbed point to come from


def extract_ceilings(points: pd.DataFrame, dram_min_working_set: int,
                     samples: pd.DataFrame | None = None) -> Ceilings:
    """DRAM bandwidth and per-dtype compute ceilings from the valid points.

    A plateau is the points within 3% of the best median rate: for DRAM among points whose working
    set is at least `dram_min_working_set` (several times the last-level cache), for compute per
    dtype. The ceiling is CEILING_PERCENTILE of the valid repetitions (`samples`) of the plateau's
    points (without samples: the best median), so a few contended repetitions cannot drag it down.
    Only points timed in an undisturbed window count (`undisturbed`); a ceiling with none to come
    from takes the disturbed ones and is named in `Ceilings.disturbed`.
    """
    ok = points[points["valid"]]
    dram = ok[ok["working_set_bytes"] >= dram_min_working_set]
    if dram.empty:
        raise ValueError("no valid point with a DRAM-sized working set: no bandwidth ceiling")
    plateaus: dict[str, list[dict]] = {}
    stats: dict[str, dict] = {}
    disturbed: list[str] = []
    keys = ["dtype", "variant", "fmas_per_element"]
    reps = samples[samples["valid"]] if samples is not None else None

    def plateau(df: pd.DataFrame, col: str, name: str) -> float:
        df, forced = undisturbed(df)
        if forced:
            disturbed.append(name)
        best = df[col].max()
        top = df[df[col] >= 0.97 * best]
        plateaus[name] = top[keys + [c for c in ("kernel",) if c in top.columns] + [col]].to_dict("records")
        if reps is None:
            return float(best)
        on = reps.merge(top[keys], on=keys)
        work = on["flops"] if col == "flops_per_s" else on["bytes"]
        stats[name] = plateau_statistic(work / on["time_s"])
        return stats[name]["value"]

    bw = plateau(dram, "bandwidth_Bps", "dram")
    compute = {}
    for dtype, df in ok[ok["flops"] > 0].groupby("dtype", sort=False):
        compute[dtype] = plateau(df, "flops_per_s", dtype)
    roof = Roofline(bandwidth={"dram": bw}, compute=compute)
    return Ceilings(roofline=roof, plateaus=plateaus,
                    fit=fit_quality(undisturbed(ok)[0], roof, dram_min_working_set), statistics=stats,
                    disturbed=disturbed)


#: A cache-resident point is kept in the fit only when its intensity is this many times the ridge:
#: there its bytes cost nothing next to its FLOPs, wherever they come from.
FIT_COMPUTE_MARGIN = 4.0


def streaming_bandwidth(points: pd.DataFrame, roof: Roofline, dram_min_working_set: int) -> dict:
    """(dtype, variant) -> the DRAM bandwidth that loop reached (the best median of its DRAM-sized
    memory-bound points: intensity under a quarter of the ridge), at most the roof's: the B of
    that loop's points in the fit."""
    dram = roof.bandwidth["dram"]
    out = {}
    big = points[points["working_set_bytes"] >= dram_min_working_set]
    for (dtype, variant), df in big.groupby(["dtype", "variant"], sort=False):
        if dtype not in roof.compute:
            continue
        mem = df[df["intensity_flop_per_byte"] < roof.ridge(dtype) / 4]
        if len(mem):
            out[(dtype, variant)] = min(dram, float(mem["bandwidth_Bps"].max()))
    return out


def fit_deviations(points: pd.DataFrame, roof: Roofline, dram_min_working_set: int = 0
                   ) -> tuple[list[dict], int, dict]:
    """Each fitted point's deviation from min(P, B_loop·I) (see fit_quality), the number of
    cache-resident points left out, and the streaming bandwidth of each loop."""
    devs = []
    excluded = 0
    loops = streaming_bandwidth(points, roof, dram_min_working_set)
    for r in points.itertuples():
        if r.dtype not in roof.compute:
            continue
        if (r.working_set_bytes < dram_min_working_set
                and r.intensity_flop_per_byte < FIT_COMPUTE_MARGIN * roof.ridge(r.dtype)):
            excluded += 1
            continue
        own = loops.get((r.dtype, r.variant), roof.bandwidth["dram"])
        t_c, t_m = r.flops / roof.compute[r.dtype], r.bytes / own
        # inside the band [max(t_c, t_m), t_c + t_m] (loads and FMAs overlapped fully .. not at all) a
        # point follows its two ceilings; outside, the deviation is from the nearer edge
        t = r.time_s
        dev = max(t_c, t_m) / t - 1 if t < max(t_c, t_m) else (t_c + t_m) / t - 1 if t > t_c + t_m else 0.0
        devs.append({"dtype": r.dtype, "variant": r.variant, "fmas_per_element": int(r.fmas_per_element),
                     "intensity_flop_per_byte": float(r.intensity_flop_per_byte),
                     "deviation": float(dev), "overlapped_deviation": float(max(t_c, t_m) / t - 1),
                     "single_roof_deviation": float(roof.predicted_time(r.flops, r.bytes, r.dtype) / r.time_s - 1)})
    return devs, excluded, loops


#: The ridge's neighbourhood: intensities within this factor of a dtype's ridge, where a loop's loads
#: and FMAs must overlap for the point to reach min(P, B·I).
RIDGE_BAND = 4.0


def ridge_softness(devs: list[dict], roof: Roofline) -> dict:
    """How soft each dtype's ridge is on this device: the largest shortfall 1 - rate / min(P, B·I) of
    its points within RIDGE_BAND of the ridge (B: the point's own loop). 0 means loads and FMAs
    overlap fully there; 0.5 at the ridge itself means they do not overlap at all. A figure of the
    core (its out-of-order window against the loop's latency), not an error of the measurement."""
    out: dict = {}
    for d in devs:
        ridge = roof.ridge(d["dtype"]) if d["dtype"] in roof.compute else None
        if not ridge or not ridge / RIDGE_BAND <= d["intensity_flop_per_byte"] <= ridge * RIDGE_BAND:
            continue
        short = -d["overlapped_deviation"]
        cur = out.get(d["dtype"])
        if cur is None or short > cur["shortfall"]:
            out[d["dtype"]] = {"shortfall": max(0.0, short), "variant": d["variant"],
                               "fmas_per_element": d["fmas_per_element"],
                               "intensity_flop_per_byte": d["intensity_flop_per_byte"],
                               "ridge_flop_per_byte": ridge}
    return out


def fit_quality(points: pd.DataFrame, roof: Roofline, dram_min_working_set: int = 0) -> dict:
    """How well the points follow min(P, B·I): measured time against the predicted time per point.

    A point's time must lie between max(t_c, t_m), the roofline (FMAs and loads fully overlapped),
    and t_c + t_m (not overlapped at all), with t_c = FLOPs / P and t_m = bytes / B: away from the
    ridge the two are the same, at the ridge they differ by 2x, and how much of it a core's
    out-of-order window overlaps is the core's, not an error of the sweep. The deviation is from
    the nearer edge of that band (0 inside it).

    B is each point's own loop's DRAM bandwidth (its dtype and variant, memory-bound), at most the
    roof's: the roof is the best any loop reached (a copy with non-temporal stores moves
    more than a read-only stream on many machines), and a read-only point can only be asked to
    keep its own loop's bandwidth while it adds FMAs. The deviation from the single roof is kept
    beside it (`max_abs_deviation_single_roof`).

    Compute-bound points run on fewer elements to keep launches short, so some work in a cache;
    near the ridge their bytes do not come from DRAM and the DRAM roofline does not describe them.
    Those (working set below `dram_min_working_set` and intensity under FIT_COMPUTE_MARGIN × ridge)
    are left out of the fit and counted.
    """
    devs, excluded, loops = fit_deviations(points, roof, dram_min_working_set)
    softness = ridge_softness(devs, roof)
    rel = [abs(d["deviation"]) for d in devs]
    single = [abs(d["single_roof_deviation"]) for d in devs]
    w = max(devs, key=lambda d: abs(d["deviation"]), default=None)
    worst = None if w is None else {k: w[k] for k in ("dtype", "variant", "fmas_per_element",
                                                      "intensity_flop_per_byte", "deviation")}
    return {"points": len(rel), "median_abs_deviation": float(np.median(rel)) if rel else None,
            "max_abs_deviation": float(max(rel)) if rel else None, "worst_point": worst,
            "max_abs_deviation_single_roof": float(max(single)) if single else None,
            "streaming_bandwidth_Bps": {f"{d} {v}": b for (d, v), b in loops.items()},
            "excluded_cache_resident": excluded,
            "ridge_softness": softness,
            "strays": [{k: d[k] for k in ("dtype", "variant", "fmas_per_element", "intensity_flop_per_byte",
                                          "deviation")} for d in devs if abs(d["deviation"]) > FIT_LIMIT],
            "deviation": "per point, the achieved rate against the band between min(P, B*I) (FMAs and loads "
                         "overlapped) and 1 / (1/P + 1/(B*I)) (not overlapped): rate / nearer edge - 1, 0 inside; "
                         "B: the DRAM bandwidth of the point's own loop (its dtype and variant, the best of its "
                         "memory-bound points), at most the roof's"}
