"""`gpuroof bench`: time real kernels, check them against float64, place them on the measured roofline."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from gpuroof.backends.base import Backend, unwritten
from gpuroof.errors import UsageError
from gpuroof.hostbound import Timing, flagged, note as host_bound_note, window_figures
from gpuroof.quality import Activity, quiet_window, window_quality
from gpuroof.results import (KIND, SCHEMA_VERSION, Run, check_out_dir, fresh_run_dir, load_run, results_root, slug,
                             write_run)
from gpuroof.roofline import Roofline, place
from gpuroof.units import fmt_time, si, text_table
from gpuroof.workloads import CONVENTIONS, Case, plan
from gpuroof.workloads.base import rel_error, to_float64

#: A point is "above its roof" only when it beats the prediction by more than this, or by more
#: than its own spread (IQR / median), whichever is larger: a difference inside the noise is noise.
NOISE_FLOOR = 0.05

#: A working set this many times the last-level cache cannot be served from it: memory-bound cases
#: smaller than this rotate through input copies until they reach it.
COLD_FACTOR = 2.0

#: Bandwidth ceilings that are not caches a kernel's global loads go through (GPU shared memory).
NOT_CACHES = ("dram", "shared")

#: Keys a new run directory copies from the run its ceilings come from, so that it reads as a
#: complete run everywhere (summaries, reports, comparisons).
COPIED_KEYS = ("theoretical", "theoretical_at_max_clock", "max_clocks_mhz", "ratios", "ridge_points",
               "median_clocks", "plateaus", "fit", "validation", "conventions", "quality")

COLUMNS = ["name", "case", "impl", "dtype", "unit", "roof_unit", "level", "flops", "bytes",
           "input_bytes", "weight_bytes", "output_bytes", "intensity", "time_s", "time_q1_s",
           "time_q3_s", "reps", "copies", "achieved_flops", "achieved_bandwidth_Bps",
           "attainable_flops", "efficiency", "predicted_time_s", "measured_over_predicted", "bound",
           "above_roof", "cache_level", "cache_attainable_flops", "cache_efficiency", "notes", "valid",
           "rel_error", "tolerance", "other_processes_share", "steal_share", "disturbed", "attempts",
           "params", "enqueue_s", "enqueue_fraction", "host_bound", "replay", "stream_time_s"]

SAMPLE_COLUMNS = ["name", "case", "impl", "dtype", "rep", "copy", "time_s"]


@dataclass(frozen=True)
class BenchSettings:
    """How each case is timed. Repetitions are set by a time budget (triton's do_bench habit)."""

    warmup: int
    min_reps: int
    max_reps: int
    budget_s: float
    cold_factor: float = 3.0  # memory-bound cases rotate input copies until ≥ this × the cache
    max_copies: int = 16
    seed: int = 0
    busy_retries: int = 1  # a case timed while other processes were busy is timed again, this often at most

    @classmethod
    def preset(cls, size: str, backend_name: str) -> "BenchSettings":
        if backend_name == "cpu":
            return {"small": cls(1, 3, 20, 0.08), "default": cls(2, 5, 50, 0.25),
                    "large": cls(2, 5, 100, 0.5)}[size]
        return {"small": cls(3, 10, 200, 0.1), "default": cls(5, 20, 500, 0.3),
                "large": cls(5, 20, 1000, 0.5)}[size]


# ---------------------------------------------------------------------------------------------
# placement
# ---------------------------------------------------------------------------------------------

def cache_levels(roof: Roofline) -> list[str]:
    """The run's cache-level bandwidth ceilings, nearest to DRAM (slowest) first: L2 on a GPU,
    L3 then L2 then L1 on a CPU."""
    return [lvl for _, lvl in sorted((bw, lvl) for lvl, bw in roof.bandwidth.items()
                                     if lvl not in NOT_CACHES)]


def place_case(roof: Roofline, flops: float, nbytes: float, time_s: float, unit: str,
               spread: float = 0.0, working_set_bytes: float | None = None,
               cache_bytes: float | None = None, closed_form: str | None = None) -> dict:
    """Placement fields of one measured kernel against `roof`, with notes that say why.

    A `<dtype>-matrix` unit without a matrix ceiling falls back to the vector FMA ceiling of its
    dtype (and says so). A point above its roof by more than the noise is flagged with the likely
    cause: above the DRAM slope, cache reuse (and the point is also placed against a cache-level
    roof when the run has one), unless the working set is at least twice the last-level cache,
    where reuse cannot explain it and the note says so; above a roof (compute, DRAM past the
    caches, or every cache level), for a count that is a built-in workload's closed form
    (`closed_form`: its name), the roof was under-measured, else a counting error (the user's count:
    measure_kernel, profile ops without a formula), or, after the fallback, a matrix unit faster
    than the vector roof it was placed against.
    """
    nan = math.nan
    out: dict[str, Any] = {"roof_unit": None, "level": "dram", "intensity": flops / nbytes if nbytes else nan,
                           "achieved_flops": flops / time_s, "achieved_bandwidth_Bps": nbytes / time_s,
                           "attainable_flops": nan, "efficiency": nan, "predicted_time_s": nan,
                           "measured_over_predicted": nan, "bound": None, "above_roof": False,
                           "cache_level": None, "cache_attainable_flops": nan, "cache_efficiency": nan}
    notes: list[str] = []
    roof_unit, fallback = unit, False
    if unit not in roof.compute:
        vector = unit[:-len("-matrix")] if unit.endswith("-matrix") else None
        if vector and vector in roof.compute:
            roof_unit, fallback = vector, True
            notes.append("no matrix ceiling measured; placed against the vector FMA roof")
        else:
            notes.append(f"no {unit} compute ceiling in the run (it has {', '.join(sorted(roof.compute))}); "
                         "not placed")
            return {**out, "notes": notes}
    if "dram" not in roof.bandwidth:
        notes.append("no dram bandwidth ceiling in the run; not placed")
        return {**out, "notes": notes}
    noise = max(NOISE_FLOOR, spread)
    p = place(roof, flops, nbytes, time_s, roof_unit, "dram", noise=noise)
    out.update(roof_unit=roof_unit, intensity=p.intensity, attainable_flops=p.attainable_flops,
               efficiency=p.efficiency, predicted_time_s=p.predicted_time_s,
               measured_over_predicted=p.measured_over_predicted, bound=p.bound,
               above_roof=bool(p.above_roof))
    excess = p.predicted_time_s / time_s - 1
    if not p.above_roof and excess > NOISE_FLOOR:
        notes.append(f"{excess:.0%} above its roof but within its timing spread (IQR/median "
                     f"{spread:.0%}); not flagged")
    if p.above_roof:
        streams = (working_set_bytes is not None and cache_bytes
                   and working_set_bytes >= COLD_FACTOR * cache_bytes)
        reached = f"{closed_form} reached {nbytes / time_s / 1e9:.4g} GB/s"
        if p.bound == "memory" and streams:
            notes.append(f"above the dram roof by {excess:.0%} (noise {noise:.0%}) with a working set of "
                         f"{working_set_bytes / 2**20:.0f} MiB, >= {COLD_FACTOR:g}x the last-level cache: "
                         "not cache reuse; " + (f"the roof was under-measured: {reached}" if closed_form else
                                                "the dram ceiling is below what this kernel streams, or its "
                                                "bytes are counted too high"))
        elif p.bound == "memory":
            notes.append(f"above the dram roof by {excess:.0%} (noise {noise:.0%}): data reused from a "
                         "cache (the working set fits in cache, or is reused within the launch)")
            levels = cache_levels(roof)
            for level in levels:  # the nearest cache whose roof the point stays under
                c = place(roof, flops, nbytes, time_s, roof_unit, level, noise=noise)
                out.update(cache_level=level, cache_attainable_flops=c.attainable_flops,
                           cache_efficiency=c.efficiency)
                if not c.above_roof:
                    notes.append(f"against the {level} roof: efficiency {c.efficiency:.2f}")
                    break
            else:
                if levels and closed_form:
                    notes.append(f"above every cache roof too ({', '.join(levels)}): the {levels[-1]} roof "
                                 f"was under-measured: {reached}")
                elif levels:
                    notes.append(f"above every cache roof too ({', '.join(levels)}): a counting error")
                else:
                    notes.append("no cache-level bandwidth ceiling in the run to place it against")
        elif fallback:
            notes.append(f"above the {roof_unit} vector FMA roof by {excess:.0%}: the library runs on "
                         "the matrix unit, whose ceiling this run lacks")
        elif closed_form:  # the count is the workload's closed form: the roof is what fell short
            notes.append(f"above the {roof_unit} compute roof by {excess:.0%} (noise {noise:.0%}): the roof "
                         f"was under-measured: {closed_form} reached {flops / time_s / 1e9:.4g} GFLOP/s")
        else:
            notes.append(f"above the {roof_unit} compute roof by {excess:.0%} (noise {noise:.0%}): "
                         "a counting error (FLOPs counted too high, or the wrong unit)")
    return {**out, "notes": notes}


# ---------------------------------------------------------------------------------------------
# running cases
# ---------------------------------------------------------------------------------------------

class Rotation:
    """Calls `runs[0]`, `runs[1]`, ... in turn: copies of the inputs, so a memory-bound case reads
    data that the previous repetition did not leave in the cache (no flush inside a timed window)."""

    def __init__(self, runs: list[Callable[[], None]]):
        self.runs = runs
        self.calls = 0
        if all(hasattr(r, "enqueue") for r in runs):
            self.enqueue = self._enqueue
            setups = list(dict.fromkeys(r.setup for r in runs if hasattr(r, "setup")))
            self.setup = lambda: [s() for s in setups]  # once per window (cuBLAS modes)

    def __call__(self) -> None:
        run = self.runs[self.calls % len(self.runs)]
        self.calls += 1
        run()

    def _enqueue(self) -> None:
        run = self.runs[self.calls % len(self.runs)]
        self.calls += 1
        run.enqueue()


def check_fits(backend: Backend, cases: list[Case]) -> None:
    """UsageError, one line, for the first case whose arrays do not fit the device (or the host)."""
    from gpuroof.backends.cpu.device import meminfo_available

    free_dev = backend.free_memory_bytes()
    free_host = free_dev if backend.name == "cpu" else meminfo_available()
    for case in cases:
        if case.dtype not in backend.dtypes():
            raise UsageError(f"{case.name} {case.label}: dtype {case.dtype} is not supported by the "
                             f"{backend.name} backend (allowed: {', '.join(backend.dtypes())})")
        dev = case.device_bytes
        # float64 inputs and reference on the host; on a CPU they share memory with the arrays.
        host = 8 * (case.traffic.input_bytes + case.traffic.weight_bytes) // _itemsize(case.dtype) * 2
        need_dev = dev + (host if backend.name == "cpu" else 0)
        if need_dev > 0.8 * free_dev:
            raise UsageError(f"{case.name} {case.label}: needs {need_dev / 2**30:.2f} GiB of "
                             f"{'memory' if backend.name == 'cpu' else 'device memory'}, only "
                             f"{free_dev / 2**30:.2f} GiB is free; choose a smaller --size or --shape")
        if backend.name != "cpu" and host > 0.8 * free_host:
            raise UsageError(f"{case.name} {case.label}: its float64 inputs need {host / 2**30:.2f} GiB of "
                             f"host memory, only {free_host / 2**30:.2f} GiB is available")


def _itemsize(dtype: str) -> int:
    from gpuroof.backends.base import ITEMSIZE
    return ITEMSIZE[dtype]


def _copies(backend: Backend, roof: Roofline, case: Case, settings: BenchSettings) -> int:
    """Input copies to rotate through: only for cases the roofline puts on the memory slope."""
    unit = case.unit if case.unit in roof.compute else case.unit.replace("-matrix", "")
    if unit not in roof.compute or "dram" not in roof.bandwidth:
        return 1
    if case.intensity >= roof.ridge(unit):
        return 1
    cache = backend.cache_bytes()
    need = settings.cold_factor * cache
    if case.device_bytes >= need:
        return 1
    n = math.ceil(need / max(1, case.device_bytes))
    room = int(0.4 * backend.free_memory_bytes() // max(1, case.device_bytes))
    return max(1, min(settings.max_copies, n, room))


def _check(case: Case, preps: list, sel: tuple, ref: np.ndarray) -> float:
    """Worst relative error over the copies: the reference covers sampled elements; every element
    of the output must be finite (an element a kernel never wrote is still the NaN fill)."""
    errs = []
    for prep in preps:
        out = np.asarray(prep.output())
        errs.append(math.inf if unwritten(np, out) else rel_error(to_float64(out[sel], case.dtype), ref))
    return max(errs)


def run_case(backend: Backend, roof: Roofline, case: Case, settings: BenchSettings) -> tuple[dict, list[dict]]:
    """Check, time and place one case: (one workloads.csv row, its per-repetition samples)."""
    w, p = case.workload, case.params
    t = case.traffic
    row: dict[str, Any] = {
        "name": case.name, "case": case.label, "impl": case.impl, "dtype": case.dtype, "unit": case.unit,
        "flops": case.flops, "bytes": case.bytes, "input_bytes": t.input_bytes,
        "weight_bytes": t.weight_bytes, "output_bytes": t.output_bytes, "intensity": case.intensity,
        "tolerance": case.tolerance, "params": json.dumps(case.params_dict(), sort_keys=True),
        "valid": False, "rel_error": math.nan, "time_s": math.nan, "time_q1_s": math.nan,
        "time_q3_s": math.nan, "reps": 0, "copies": 0, "other_processes_share": math.nan,
        "steal_share": math.nan, "disturbed": False, "attempts": 0,
    }
    samples: list[dict] = []
    runner = w.runners.get(backend.name, {}).get(case.impl)
    if runner is None:
        row["notes"] = f"no {case.impl} runner on the {backend.name} backend"
        return row, samples
    copies = _copies(backend, roof, case, settings)
    rng = np.random.default_rng(settings.seed)
    preps: list = []
    try:
        inputs = w.inputs(p, rng)
        sel, ref = w.reference(p, inputs)
        preps = [runner(backend, p, inputs) for _ in range(copies)]
        del inputs
        for prep in preps:
            prep.run()  # compiles (numba JIT, NVRTC) outside any timed window
        err = _check(case, preps, sel, ref)
        row.update(rel_error=err, copies=copies)
        if not err <= case.tolerance:
            row["notes"] = (f"output differs from the float64 reference: rel_error {err:.3g} > "
                            f"tolerance {case.tolerance:.3g}; excluded")
            return row, samples
        rot = Rotation([prep.run for prep in preps])
        win = quiet_window(lambda: backend.timed(rot, warmup=settings.warmup, min_reps=settings.min_reps,
                                                 max_reps=settings.max_reps, budget_s=settings.budget_s),
                           f"{case.name} {case.label}", settings.busy_retries)
        stream = win.result
        row.update(win.columns())
        graph, replay_note = graph_replay(backend, rot, stream, all(p.graph for p in preps), settings)
        times = (graph or stream).times_s
        err = max(err, _check(case, preps, sel, ref))  # the timed launches' own outputs
        row["rel_error"] = err
        if not err <= case.tolerance:
            row["notes"] = (f"output after timing differs from the float64 reference: rel_error "
                            f"{err:.3g} > tolerance {case.tolerance:.3g}; excluded")
            return row, samples
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as e:  # one failing case is reported and excluded, the bench goes on
        row["notes"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return row, samples
    finally:
        del preps
    med = float(np.median(times))
    q1, q3 = float(np.quantile(times, 0.25)), float(np.quantile(times, 0.75))
    spread = (q3 - q1) / med if med > 0 else 0.0
    # Rotating copies keep one launch's data out of the next one's cache; data a launch itself
    # reads twice (LSTM weights, step after step) can still come from cache if the launch fits.
    working_set = case.device_bytes * (1 if w.reuse_within_launch else copies)
    placed = place_case(roof, case.flops, case.bytes, med, case.unit, spread,
                        working_set_bytes=working_set, cache_bytes=backend.cache_bytes(),
                        closed_form=f"{case.name} {case.label}")
    notes = placed.pop("notes")
    host = window_figures(stream)  # the launches as Python enqueues them: is the host the limit?
    if host["host_bound"]:
        notes.append(host_bound_note(host["enqueue_s"], float(np.median(stream.times_s))))
    notes += [replay_note] if replay_note else []
    if win.disturbed:  # said first: the placement below is of a contended time
        notes.insert(0, f"{win.reasons[0]}, in each of {win.attempts} attempt(s): not the hardware's time")
    row.update(placed, time_s=med, time_q1_s=q1, time_q3_s=q3, reps=len(times), valid=True,
               notes="; ".join(notes), **host, replay=(graph or stream).replay,
               stream_time_s=float(np.median(stream.times_s)) if stream.replay else math.nan)
    for i, ts in enumerate(times):
        samples.append({"name": case.name, "case": case.label, "impl": case.impl, "dtype": case.dtype,
                        "rep": i, "copy": (settings.warmup + i) % copies, "time_s": float(ts)})
    return row, samples


#: Launches shorter than this, or host-bound, are timed again as a CUDA graph replay where the
#: runner allows (triton's do_bench_cudagraph): the host's launch path (5-20 us from Python) then no
#: longer sits between the kernels, and the time is the device's.
GRAPH_BELOW_S = 100e-6


def graph_replay(backend: Backend, rot: Rotation, stream: Timing, capturable: bool,
                 settings: BenchSettings) -> tuple[Timing | None, str]:
    """(the CUDA-graph timing, or None where the stream timing stands; a note saying which and why)."""
    if stream.replay != "stream":
        return None, ""  # the CPU: no graphs, no enqueue
    eager_s = float(np.median(stream.times_s))
    if not (eager_s < GRAPH_BELOW_S or window_figures(stream)["host_bound"]):
        return None, ""
    if not capturable:
        return None, ("not replayed through a CUDA graph: its runner calls a library through CuPy "
                      "(cuBLAS, cuDNN), which refuses stream capture; the time is as launched from Python")
    from gpuroof.backends.cuda.timing import GraphUnsupported

    try:
        graph = backend.timed_graph(rot, launches=stream.launches_per_window, warmup=1,
                                    min_reps=settings.min_reps, max_reps=settings.max_reps,
                                    budget_s=settings.budget_s)
    except GraphUnsupported as e:
        return None, f"CUDA graph capture failed ({e}); the time is as launched from Python"
    if graph is None:
        return None, ""
    return graph, (f"timed as a CUDA graph replay of {graph.launches_per_window} launches "
                   f"({fmt_time(eager_s)} per launch as launched from Python)")


def bench_cases(backend: Backend, roof: Roofline, cases: list[Case], settings: BenchSettings,
                progress: bool = True) -> pd.DataFrame:
    """Run `cases` in order; the table's `attrs['samples']` holds one row per timed repetition and
    `attrs['quality']` whether the machine was quiet while they ran (quality.window_quality)."""
    check_fits(backend, cases)
    activity = Activity()
    rows, samples = [], []
    with tqdm(total=len(cases), desc="bench", unit="case", disable=not progress or None,
              file=sys.stderr) as bar:
        for case in cases:
            bar.set_postfix_str(f"{case.name} {case.label} {case.dtype}")
            row, s = run_case(backend, roof, case, settings)
            rows.append(row)
            samples += s
            bar.update()
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table["notes"] = table["notes"].fillna("")
    table.attrs["samples"] = pd.DataFrame(samples, columns=SAMPLE_COLUMNS)
    table.attrs["quality"] = window_quality(activity.stop(), "the bench")
    return table


def run_bench(backend: Backend, roofline: Roofline, workloads: list[str] | None = None,
              size: str = "default", progress: bool = True, *, shape: dict | None = None,
              settings: BenchSettings | None = None) -> pd.DataFrame:
    """Check, time and place the workloads' cases on `roofline`: one row per case (workloads.csv).

    The per-repetition samples are in `table.attrs['samples']`; `write_into_run` stores both.
    """
    cases = plan(workloads, size, backend.name, backend.cache_bytes(), shape)
    return bench_cases(backend, roofline, cases, settings or BenchSettings.preset(size, backend.name),
                       progress)


# ---------------------------------------------------------------------------------------------
# run directories
# ---------------------------------------------------------------------------------------------

def workloads_summary(table: pd.DataFrame, **extra: Any) -> dict:
    """run.json's `workloads`: counts, files, conventions and the bench window's `quality`."""
    disturbed = table["disturbed"].fillna(False).astype(bool) if "disturbed" in table else pd.Series(dtype=bool)
    return {"cases": int(len(table)), "valid": int(table["valid"].sum()), "file": "workloads.csv",
            "samples_file": "workload_samples.csv",
            "above_roof": int(table["above_roof"].fillna(False).astype(bool).sum()),
            "disturbed": int(disturbed.sum()), "conventions": CONVENTIONS,
            **({"quality": table.attrs["quality"]} if "quality" in table.attrs else {}), **extra}


def write_into_run(run_dir: str | Path, table: pd.DataFrame, **extra: Any) -> dict:
    """Add workloads.csv and workload_samples.csv to a run directory and record them in run.json."""
    run = load_run(run_dir)
    meta = dict(run.meta)
    meta["workloads"] = workloads_summary(table, **extra)
    samples = table.attrs.get("samples", pd.DataFrame(columns=SAMPLE_COLUMNS))
    write_run(run.path, meta, {"workloads": table, "workload_samples": samples})
    return meta


def _is_complete(run: Run) -> bool:
    return run.measured


def same_device(run: Run, backend_name: str, device_name: str) -> bool:
    return run.meta.get("backend") == backend_name and run.meta["device"].get("name") == device_name


def quality_ok(run: Run) -> bool:
    """False only for a run whose `quality` says it is not ok (busy machine, levels out of order...);
    a run from before quality was recorded counts as ok."""
    q = run.meta.get("quality")
    return not (isinstance(q, dict) and q.get("ok") is False)


def newest_run(backend_name: str, device_name: str, root: str | Path | None = None) -> Run | None:
    """The newest complete run with ceilings under <results>/<slug(device)>/ for this backend and device,
    among those whose quality is ok when there is one (a run measured on a busy machine is the
    default only while no good run exists)."""
    best: tuple[tuple[bool, str], Run] | None = None
    for f in sorted(Path(root or results_root(), slug(device_name)).glob("*/run.json")):
        try:
            run = load_run(f)
        except UsageError:
            continue
        if not _is_complete(run) or not same_device(run, backend_name, device_name):
            continue
        key = (quality_ok(run), str(run.meta.get("created_utc") or ""))
        if best is None or key >= best[0]:
            best = (key, run)
    return best[1] if best else None


@dataclass
class Target:
    """Where the ceilings come from and where the workloads go."""

    roof: Roofline
    source: Run
    run_dir: Path
    existing: bool  # write into an existing complete run (else a new run directory)


def resolve_target(backend: Backend, ceilings: str | None, out: str | None, force: bool,
                   progress: bool = True, device_index: int = 0) -> Target:
    info = backend.device_info()
    name = info.get("name") or backend.name

    def refuse(run: Run, what: str) -> None:
        if not force and not same_device(run, backend.name, name):
            raise UsageError(f"{what} {run.path}: measured on {run.meta['device'].get('name')!r} "
                             f"({run.meta.get('backend')}), this bench runs on {name!r} ({backend.name}); "
                             "use --force to place against it anyway")

    out_run = None
    if out and (Path(out) / "run.json").exists():
        out_run = load_run(out)
        if not _is_complete(out_run):
            raise UsageError(f"--out {out}: holds a run that is not complete or has no ceilings; "
                             "give an empty directory or a complete measure run")
        refuse(out_run, "--out")
    if ceilings:
        source = load_run(ceilings)
        if not _is_complete(source):
            raise UsageError(f"--ceilings {ceilings}: the run is not complete or has no ceilings")
        refuse(source, "--ceilings")
    elif out_run is not None:
        source = out_run
    if out and out_run is None:
        check_out_dir(out)  # a new run there: made when the bench starts
    if not ceilings and out_run is None:
        found = newest_run(backend.name, name)
        if found is None:
            from gpuroof.measure import measure

            print(f"gpuroof: no complete run for {name!r} under {results_root() / slug(name)}/: "
                  "measuring the ceilings first (measure --quick)", file=sys.stderr)
            res = measure(backend.name, device_index, quick=True, progress=progress)
            found = load_run(res.run_dir)
            if out is None:
                return Target(found.ceilings, found, found.path, True)
        source = found
    roof = source.ceilings
    if out_run is not None:
        return Target(roof, source, out_run.path, True)
    return Target(roof, source, Path(out) if out else fresh_run_dir(name), False)


def new_run_meta(backend: Backend, source: Run, argv: list[str]) -> dict:
    from gpuroof.measure import host_info, versions

    meta = {"schema_version": SCHEMA_VERSION, "kind": KIND, "status": "partial",
            "created_utc": datetime.now(timezone.utc).isoformat(), "command": argv,
            "backend": backend.name, "device": backend.device_info(), "host": host_info(),
            "versions": versions(), "ceilings": source.meta["ceilings"],
            "ceilings_source": str(source.path)}
    for key in COPIED_KEYS:
        if key in source.meta:
            meta[key] = source.meta[key]
    return meta


def save(target: Target, backend: Backend, table: pd.DataFrame, argv: list[str], **extra: Any) -> Path:
    if target.existing:
        write_into_run(target.run_dir, table, ceilings_source=str(target.source.path), **extra)
        return target.run_dir
    meta = new_run_meta(backend, target.source, argv)
    meta["status"] = "complete"
    meta["workloads"] = workloads_summary(table, ceilings_source=str(target.source.path), **extra)
    samples = table.attrs.get("samples", pd.DataFrame(columns=SAMPLE_COLUMNS))
    write_run(target.run_dir, meta, {"workloads": table, "workload_samples": samples})
    return target.run_dir


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def results_table(table: pd.DataFrame) -> str:
    """The bench table: one line per case, notes as numbered footnotes below it."""
    head = ("workload", "case", "dtype", "time", "achieved", "bandwidth", "FLOP/B", "attainable",
            "eff", "meas/pred", "bound", "")
    rows, notes = [head], []
    for r in table.to_dict("records"):
        flag = ""
        if not r["valid"]:
            flag = "EXCLUDED"
        elif isinstance(r.get("disturbed"), (bool, np.bool_)) and r["disturbed"]:
            flag = "BUSY"
        elif r["above_roof"]:
            flag = "ABOVE ROOF"
        if r["valid"] and flagged(r.get("host_bound")):
            flag = (flag + " HOST-BOUND").strip()
        if r["notes"]:
            notes.append(r["notes"])
            flag = (flag + f" [{len(notes)}]").strip()
        rows.append((r["name"], r["case"], r["dtype"], fmt_time(r["time_s"]),
                     si(r["achieved_flops"], "FLOP/s") if r["valid"] else "-",
                     si(r["achieved_bandwidth_Bps"], "B/s") if r["valid"] else "-",
                     _num(r["intensity"], ".3g"), si(r["attainable_flops"], "FLOP/s"),
                     _num(r["efficiency"], ".2f"), _num(r["measured_over_predicted"], ".2f"),
                     r["bound"] or "-", flag))
    lines = text_table(rows)
    lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


def json_records(table: pd.DataFrame) -> list[dict]:
    records = table.to_dict("records")
    for r in records:
        r["params"] = json.loads(r["params"]) if isinstance(r["params"], str) else r["params"]
    return records


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
