"""`gpuroof measure`: characterize one device and write its run directory."""
from __future__ import annotations

import getpass
from contextlib import contextmanager
import os
import platform
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from gpuroof import __version__
from gpuroof.backends import get_backend
from gpuroof.backends.base import MIN_TIME_SHARE, NOISE_TARGET, Backend, relative_noise
from gpuroof.errors import MeasurementError, UsageError
from gpuroof.results import KIND, SCHEMA_VERSION, make_run_dir, write_run
from gpuroof.hierarchy import LEVELS, hierarchy_sweep, level_ceilings, parse_levels, summarize_hierarchy
from gpuroof.matrix import failed_units, failure_rows, matrix_ceilings, matrix_plateaus, matrix_sweep
from gpuroof.roofline import Roofline, known
from gpuroof.quality import ABOVE_THEORETICAL, FIT_LIMIT, Activity, assess, platform_state
from gpuroof.sweep import (CEILING_STATISTIC, CONVENTIONS, RETIME_DEVIATION, RETIME_MAX, SweepSettings,
                           extract_ceilings, fit_deviations, retime_strays, run_sweep, shape_name, summarize)
from gpuroof.telemetry import Sampler
from gpuroof.tune import ChoiceCache, Tuner, fingerprint

#: A DRAM point's working set must be this many times the last-level cache.
DRAM_FACTOR = 8


def versions() -> dict:
    out = {"python": platform.python_version(), "gpuroof": __version__}
    for dist in ("numpy", "pandas", "numba", "llvmlite", "seaborn", "nvidia-ml-py", "cupy-cuda12x",
                 "cupy-cuda13x", "cupy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    from gpuroof.environment import environment

    return {**out, **environment()}  # git commit of the working directory, NVIDIA driver and CUDA toolkit


def host_info() -> dict:
    env = {k: os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX",
                                      "CUDA_VISIBLE_DEVICES") if k in os.environ}
    try:
        user = getpass.getuser()
    except Exception:
        user = None
    return {"hostname": socket.gethostname(), "os": platform.platform(), "machine": platform.machine(),
            "user": user, "env": env}


def check_threads_backend(backend_name: str, threads: int | None) -> None:
    """UsageError unless `threads` is None or the backend is the CPU's and `threads` in 1..logical
    CPUs: the host's threads do not change a GPU, so --threads on the cuda backend is refused (before
    the cuda backend is looked for, so the message names --threads)."""
    if threads is None:
        return
    from gpuroof.backends import resolve_name
    from gpuroof.backends.cpu.device import check_threads

    concrete = backend_name if backend_name == "cuda" else resolve_name(backend_name)
    if concrete != "cpu":
        raise UsageError(f"--threads {threads}: the {concrete} backend has no thread count "
                         "(allowed: --backend cpu, or leave --threads out)")
    check_threads(threads)


def open_backend(backend_name: str, device: int = 0, threads: int | None = None) -> Backend:
    """The backend to measure on; `threads` makes a CPU device of that many threads."""
    if threads is None:
        return get_backend(backend_name, device)
    check_threads_backend(backend_name, threads)
    from gpuroof.backends.cpu import CpuBackend

    return CpuBackend(device, threads=threads)


def check_dtypes(backend: Backend, dtypes: list[str] | None) -> tuple[str, ...]:
    have = backend.dtypes()
    if not dtypes:
        return have
    bad = [d for d in dtypes if d not in have]
    if bad:
        raise UsageError(f"--dtype {','.join(bad)}: not supported by the {backend.name} backend "
                         f"(allowed: {', '.join(have)})")
    return tuple(dtypes)


def check_buffer(backend: Backend, buffer_bytes: int | None) -> int:
    n = buffer_bytes or backend.default_buffer_bytes()
    llc = backend.cache_bytes()
    if buffer_bytes and buffer_bytes < DRAM_FACTOR * llc:  # refused now, not after the sweep found no DRAM point
        raise UsageError(f"--buffer-size {buffer_bytes} bytes: below {DRAM_FACTOR}x the last-level cache "
                         f"({llc} bytes), so no point would measure DRAM (allowed: at least "
                         f"{DRAM_FACTOR * llc} bytes, or leave it out)")
    free = backend.free_memory_bytes()
    if 2 * n > 0.8 * free:  # input and output arrays, with room to spare
        raise UsageError(f"--buffer-size {n} bytes: input and output need {2 * n / 2**30:.2f} GiB, "
                         f"only {free / 2**30:.2f} GiB of device memory is free")
    if n < 16 << 10:
        raise UsageError(f"--buffer-size {n} bytes: at least 16 KiB")
    return n


@dataclass
class MeasureResult:
    run_dir: Path
    meta: dict
    points: pd.DataFrame

    @property
    def ceilings(self) -> Roofline:
        """The ceilings just measured, as the model reads them (the same reading as Run.ceilings)."""
        return known(self.meta["ceilings"])


def plateau_clocks(points: pd.DataFrame, plateaus: dict, matrix: pd.DataFrame | None = None) -> dict:
    """SM clock (MHz) recorded during each compute ceiling's own plateau: the median over the points
    the ceiling came from (a matrix unit: its best size). A clock taken over all points mixes the
    memory-bound ones, which often run at another clock than the FMA-bound ones."""
    out: dict[str, float] = {}
    for unit, recs in plateaus.items():
        keys = {(r["dtype"], r["variant"], r["fmas_per_element"]) for r in recs if "variant" in r}
        on = [k in keys for k in zip(points["dtype"], points["variant"], points["fmas_per_element"])]
        hit = points[pd.Series(on, index=points.index, dtype=bool)]
        if unit != "dram" and hit["sm_clock_mhz"].notna().any():
            out[unit] = float(hit["sm_clock_mhz"].median())
    if matrix is not None and len(matrix) and "sm_clock_mhz" in matrix:
        ok = matrix[matrix["valid"]]
        for unit, df in ok.groupby("unit", sort=False):
            rate = df.groupby("n")["flops"].first() / df.groupby("n")["time_s"].median()
            best = df[df["n"] == rate.idxmax()]["sm_clock_mhz"]
            if best.notna().any():
                out[unit] = float(best.median())
    return out


def peaks_and_ratios(backend: Backend, roof: dict, clocks: dict, unit_clocks: dict | None = None) -> dict:
    """Theoretical peaks at the max clock and at the measured clock: for a compute ceiling in
    `unit_clocks`, the SM clock of its own plateau; otherwise the median clock over the points."""
    max_sm, max_mem = backend.max_clocks()
    at_max = backend.theoretical(max_sm, max_mem) if (max_sm or max_mem) else None
    at_meas = backend.theoretical(clocks.get("sm_clock_mhz"), clocks.get("mem_clock_mhz"))
    for unit, mhz in (unit_clocks or {}).items():
        at_meas["compute"][unit] = backend.theoretical(mhz, None)["compute"].get(unit)
    ratios: dict = {"compute": {}, "bandwidth": {}}
    for kind in ("compute", "bandwidth"):
        for unit, measured in roof[kind].items():
            for theo_set in (at_meas, at_max):  # every measured ceiling has a key, null when unknown
                if theo_set is not None:
                    theo_set[kind].setdefault(unit, None)
            theo = at_meas[kind][unit]
            ratios[kind][unit] = measured / theo if theo else None
    return {"at_measured_clock": at_meas, "at_max_clock": at_max,
            "max_clocks_mhz": {"sm": max_sm, "mem": max_mem}, "ratios": ratios}


def measure(backend_name: str = "auto", device: int = 0, dtypes: list[str] | None = None,
            quick: bool = False, buffer_bytes: int | None = None, out: str | None = None,
            argv: list[str] | None = None, progress: bool = True, levels: str | None = None,
            matrix: bool = True, retune: bool = False, threads: int | None = None) -> MeasureResult:
    """Intensity sweep (DRAM and vector FMA ceilings), then the working-set sweep (cache levels) and
    the GEMM sweep (matrix units); everything validated, timed and written to one run directory.
    `threads` (CPU backend only): the threads the kernels and the BLAS run on, a device of its own."""
    backend = open_backend(backend_name, device, threads)
    try:
        chosen = check_dtypes(backend, dtypes)
        nbytes = check_buffer(backend, buffer_bytes)
        cache_levels = backend.cache_levels()
        wanted = parse_levels(levels, tuple(lv.name for lv in cache_levels))
        info = backend.device_info()
        run_dir = make_run_dir(out, info["name"])
        settings = SweepSettings.preset(chosen, quick, nbytes)
        meta = {
            "schema_version": SCHEMA_VERSION, "kind": KIND, "status": "partial",
            "created_utc": datetime.now(timezone.utc).isoformat(), "command": argv or sys.argv,
            "backend": backend.name, "device": info, "host": host_info(), "versions": versions(),
            "settings": {**settings.to_dict(), "quick": quick, "levels": list(wanted), "matrix": matrix,
                         "dram_min_working_set_bytes": DRAM_FACTOR * backend.cache_bytes()},
            "conventions": CONVENTIONS, "ceilings": None,
            "cache_levels": [vars(lv) for lv in cache_levels],
        }
        write_run(run_dir, meta, {})  # a run killed from here on is marked partial
        if progress:  # said at once, on a terminal or not (the bars below draw only on a terminal)
            print(f"gpuroof: measuring {info['name']} ({'quick' if quick else 'full'}: {', '.join(chosen)}; "
                  f"levels {', '.join(wanted)}{'; matrix units' if matrix else ''}) into {run_dir}",
                  file=sys.stderr, flush=True)
        interval = 0.1 if backend.name == "cpu" else 0.05  # ≥ 10 Hz; lighter on a 2-core CPU
        tables: dict[str, pd.DataFrame] = {}
        activity = Activity()  # what else the machine does while it is measured
        clock_before = backend.core_clock_mhz()  # under load on every core in use; None where telemetry has it
        # the loop shapes chosen by an earlier run of this device and these versions, unless retune
        choices = ChoiceCache.open(fingerprint(backend.name, info, meta["versions"]), retune=retune)
        tuner = Tuner(backend, cache_levels, cache=choices,
                      **(dict(budget_s=0.04, min_reps=3, max_reps=10) if quick
                         else dict(budget_s=0.1, min_reps=5, max_reps=20)))
        with Sampler(backend.telemetry_source(), interval) as sampler:
            try:
                with _bar(len(chosen) * len(settings.variants) * len(settings.fmas), "sweep",
                          progress) as tick:
                    result = run_sweep(backend, settings, sampler, lambda p: tick(
                        f"{p['dtype']} {p['variant']} I={p['intensity']:.3g} {p['gflops']:.4g} GFLOP/s "
                        f"{p['gbps']:.4g} GB/s" + (f" {p['clock_mhz']:.0f} MHz" if p["clock_mhz"] else "")
                        + (" busy" if p["disturbed"] else "")), tuner=tuner)
                tables["points"], meta["retimed_points"] = retime(backend, settings, sampler, result.samples,
                                                                  DRAM_FACTOR * backend.cache_bytes(), tuner)
                sweep_levels = [lv for lv in cache_levels if lv.name in wanted and lv.name != "shared"]
                if any(lv.name != "dram" for lv in sweep_levels):
                    reps = dict(budget_s=0.05, min_reps=3, max_reps=10) if quick else \
                        dict(budget_s=0.15, min_reps=5, max_reps=30)
                    with _bar(None, "working set", progress) as tick:
                        tables["hierarchy"] = hierarchy_sweep(
                            backend, sweep_levels, quick=quick, sampler=sampler, retries=settings.busy_retries,
                            progress=lambda p: tick(f"{p['working_set_bytes'] / 1024:.0f} KiB "
                                                    f"{p['gbps']:.4g} GB/s"), tuner=tuner, **reps)
                if "shared" in wanted:
                    sampler.phase("shared memory")
                    shared = backend.shared_bandwidth(budget_s=0.2, min_reps=5, max_reps=50)
                    meta["shared_memory"] = {k: v for k, v in shared.items() if k != "times_s"}
                    tables["shared"] = pd.DataFrame({"rep": range(len(shared["times_s"])),
                                                     "time_s": shared["times_s"], "bytes": shared["bytes"],
                                                     "valid": shared["rel_error"] <= 1e-5,
                                                     "rel_error": shared["rel_error"]})
                if matrix:
                    units = backend.matrix_units()
                    with _bar(None, "matrix", progress) as tick:
                        tables["matrix"] = matrix_sweep(
                            backend, units, backend.matrix_sizes(quick), sampler=sampler,
                            retries=settings.busy_retries,
                            budget_s=0.1 if quick else 0.3, min_reps=3, max_reps=20 if quick else 50,
                            progress=lambda p: tick(f"{p['unit']} n={p['n']} {p['gflops']:.4g} GFLOP/s"))
            except KeyboardInterrupt:
                meta["status_reason"] = "interrupted"
                write_run(run_dir, meta, {**tables, "telemetry": sampler.frame()})
                raise
            sampler.phase("done")
        clock_after = backend.core_clock_mhz()
        meta["phases"] = sampler.phases
        meta["buffers_elements"] = result.buffers
        points = summarize(tables["points"])
        cei = extract_ceilings(points, DRAM_FACTOR * backend.cache_bytes(), tables["points"])
        roof = cei.roofline.to_dict()
        stats = dict(cei.statistics)
        sources = sweep_sources(cei.plateaus)
        disturbed = list(cei.disturbed)  # ceilings that had no undisturbed point to come from
        if "hierarchy" in tables:
            hpts = summarize_hierarchy(tables["hierarchy"], sweep_levels)
            level_stats: dict = {}
            level_disturbed: list[str] = []
            level_sources: dict = {}
            level_bw, transitions = level_ceilings(hpts, sweep_levels, tables["hierarchy"], level_stats,
                                                   level_disturbed, level_sources)
            level_sources.pop("dram", None)
            sources.update(level_sources)
            disturbed += [n for n in level_disturbed if n != "dram"]
            level_stats.pop("dram", None)  # the intensity sweep's DRAM ceiling stays the roof's
            stats.update(level_stats)
            meta["hierarchy"] = {"transitions": transitions, "sweep_dram_Bps": level_bw.pop("dram", None),
                                 "invalid_sizes": int((~hpts["valid"]).sum())}
            roof["bandwidth"].update(level_bw)
        if "shared" in tables and tables["shared"]["valid"].all():
            roof["bandwidth"]["shared"] = float(tables["shared"]["bytes"].iloc[0]
                                                / tables["shared"]["time_s"].median())
            sources["shared"] = {"kernel": "shared-memory read", "repetitions": int(len(tables["shared"]))}
        if "matrix" in tables:
            roof["compute"].update(matrix_ceilings(tables["matrix"], disturbed, sources))
            meta["matrix_plateau_reached"] = matrix_plateaus(tables["matrix"])
            meta["matrix_failed_units"] = failed_units(tables["matrix"])
        roof["bandwidth"] = dict(sorted(roof["bandwidth"].items(), key=lambda kv: LEVELS.index(kv[0])))
        ceilings = Roofline.from_dict(roof)
        valid = points[points["valid"]]
        clocks = {k: (float(valid[k].median()) if valid[k].notna().any() else None)
                  for k in ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c")}
        core_clock = measured_clock(clock_before, clock_after, clocks["sm_clock_mhz"])
        core_clock = settle_clock(backend, core_clock, roof["compute"])
        if core_clock and core_clock["measured_mhz"] is None:  # a clock the plateau disproves: none
            theo = peaks_and_ratios(backend, roof, {**clocks, "sm_clock_mhz": None})
        elif core_clock:  # the cores' own clock, not the OS's figure (a VM shows the nominal one)
            theo = peaks_and_ratios(backend, roof, {**clocks, "sm_clock_mhz": core_clock["measured_mhz"]})
            core_clock["theoretical_at_os_clock"] = backend.theoretical(clocks["sm_clock_mhz"], None) \
                if clocks["sm_clock_mhz"] else None
        else:
            theo = peaks_and_ratios(backend, roof, clocks,
                                    plateau_clocks(points, cei.plateaus, tables.get("matrix")))
        invalid = points[~points["valid"]]
        meta.update({
            "status": "complete",
            "ceilings": roof,
            "ridge_points": {u: ceilings.ridge(u) for u in ceilings.compute},
            "theoretical": theo["at_measured_clock"],
            "theoretical_at_max_clock": theo["at_max_clock"],
            "max_clocks_mhz": theo["max_clocks_mhz"],
            "ratios": theo["ratios"],
            "median_clocks": clocks,
            "plateaus": cei.plateaus,
            "ceiling_sources": sources,  # per roof: the kernel, shapes and sizes it came from
            "fit": cei.fit,
            "validation": {"points": int(len(points)), "invalid": int(len(invalid)),
                           "invalid_points": invalid[["dtype", "variant", "fmas_per_element",
                                                      "rel_error"]].to_dict("records"),
                           "invalid_matrix_sizes": invalid_matrix_samples(tables["matrix"])
                           if "matrix" in tables else 0},
            "throttled_points": int(points["throttled"].fillna(False).astype(bool).sum()),
            # None where the host runs the work (the CPU): the flag does not apply there
            "host_bound_points": int(points["host_bound"].fillna(False).astype(bool).sum())
            if points["host_bound"].notna().any() else None,
            "noisy_points": int(points["noisy"].sum()),
            "stop_rule": stop_rule_summary(tables),
            "ceiling_statistic": {"statistic": CEILING_STATISTIC, "by_ceiling": stats},
            "core_clock": core_clock,
            "disturbed": disturbed_summary(tables, settings.busy_retries, disturbed),
            "activity": activity.stop(),
            "platform": platform_state(),
        })
        if tuner.trials:  # which loop shape each level ran in, and every candidate's rate
            meta["device"]["kernel_shape"] = {**(meta["device"].get("kernel_shape") or {}), "tuned": tuner.trials}
            meta["tuning"] = {"retune": retune, "cache_file": str(choices.path),
                              "cached": [f"{t['loop']} {t['level']}" for t in tuner.trials if t.get("cached")],
                              "measured": [f"{t['loop']} {t['level']}" for t in tuner.trials if not t.get("cached")]}
        mark_repeated_strays(meta["fit"], meta["retimed_points"])
        meta["quality"] = assess(meta)
        write_run(run_dir, meta, {**tables, "telemetry": sampler.frame()})
        return MeasureResult(run_dir=run_dir, meta=meta, points=points)
    except MemoryError as e:
        raise MeasurementError(f"out of memory during the sweep: {e}") from None
    finally:
        backend.close()


def stop_rule_summary(tables: dict[str, pd.DataFrame]) -> dict:
    """How the points of each table stopped (backends.base.repeat): those whose times' relative
    noise came under NOISE_TARGET could stop early; the others ran to their budget or max_reps."""
    out: dict = {"rule": f"min reps and {MIN_TIME_SHARE:.0%} of the budget, then stop once the relative "
                         f"standard deviation of the times is <= {NOISE_TARGET:.1%}; else at the budget "
                         "or max reps", "noise_target": NOISE_TARGET}
    keys = {"points": ["dtype", "variant", "fmas_per_element"], "hierarchy": ["working_set_bytes"],
            "matrix": ["unit", "n"]}
    for name, key in keys.items():
        df = tables.get(name)
        if df is None or df.empty or not set(key) <= set(df.columns):
            continue
        noise = df[df["time_s"].notna()].groupby(key)["time_s"].agg(relative_noise)
        out[name] = {"points": int(len(noise)), "under_noise_target": int((noise <= NOISE_TARGET).sum()),
                     "median_relative_noise": float(noise[np.isfinite(noise)].median()) if np.isfinite(noise).any() else None}
    return out


def sweep_sources(plateaus: dict[str, list[dict]]) -> dict[str, dict]:
    """Per ceiling of the intensity sweep (DRAM, each dtype): the kernel, the loop shapes and the
    plateau's points it came from."""
    return {name: {"kernel": "sweep", "shapes": sorted({shape_name(r.get("kernel")) for r in recs}),
                   "points": [f"{r['dtype']} {r['variant']} {r['fmas_per_element']} FMAs" for r in recs]}
            for name, recs in plateaus.items()}


@contextmanager
def _bar(total: int | None, desc: str, progress: bool) -> Iterator[Callable[[str], None]]:
    """A tqdm bar on stderr; yields tick(postfix) to call once per point."""
    with tqdm(total=total, desc=desc, unit="pt", disable=not progress or None, file=sys.stderr) as bar:
        def tick(postfix: str) -> None:
            bar.set_postfix_str(postfix)
            bar.update()
        yield tick


def disturbed_summary(tables: dict[str, pd.DataFrame], retries: int, ceilings: list[str]) -> dict:
    """Per sweep, the points timed only in windows where other processes were busy (after up to
    `retries` re-measurements each), and the ceilings that had no undisturbed point to come from."""
    counts = {}
    for name in ("points", "hierarchy", "matrix"):
        df = tables.get(name)
        if name == "matrix" and df is not None and len(df):
            df = df[~failure_rows(df)]  # a unit's failed size is a failure, not a point timed
        if df is not None and "disturbed" in df.columns and len(df):
            keys = {"points": ["dtype", "variant", "fmas_per_element"], "hierarchy": ["working_set_bytes"],
                    "matrix": ["unit", "n"]}[name]
            per_point = df.groupby(keys, sort=False)["disturbed"].first().fillna(False).astype(bool)
            counts[name] = {"points": int(len(per_point)), "disturbed": int(per_point.sum()),
                            "re_measured": int((df.groupby(keys, sort=False)["attempts"].first() > 1).sum())}
    return {"retries": retries, "by_sweep": counts, "ceilings_from_disturbed_points": ceilings,
            "rule": "a point is disturbed when other processes took more than quality.BUSY_LIMIT of the CPUs' "
                    "time (or steal exceeded quality.STEAL_LIMIT) in its timed window; it is timed again up to "
                    "`retries` times and its least disturbed window kept; ceilings come from undisturbed points"}


def measured_clock(before: float | None, after: float | None, os_mhz: float | None) -> dict | None:
    """The core clock measured under load before and after the sweeps (None when the backend has no
    such measurement: a GPU's clocks come from NVML during every point), with the OS's figure beside."""
    got = [c for c in (before, after) if c]
    if not got:
        return None
    return {"measured_mhz": float(np.median(got)), "before_mhz": before, "after_mhz": after,
            "os_reported_mhz": os_mhz,
            "method": "a chain of dependent integer adds (one per cycle) on every core in use, over each "
                      "thread's own CPU time (a core shared with other threads still reads its clock)"}


def vector_peaks_per_mhz(backend: Backend) -> dict[str, float]:
    """FLOP/s per MHz of each vector unit's theoretical peak (cores × lanes × pipes × 2 × 1e6),
    where the backend knows it."""
    per = backend.theoretical(1.0, None)["compute"]
    return {u: v for u, v in per.items() if v and not u.endswith("-matrix")}


def settle_clock(backend: Backend, core_clock: dict | None, compute: dict[str, float]) -> dict | None:
    """The measured core clock, checked against the FMA plateaus it must explain.

    A vector ceiling can never beat cores × lanes × pipes × 2 × the clock, so a plateau above
    ABOVE_THEORETICAL of that says the clock reading is low (a chain that shared its core), never
    that the hardware beat itself. Then the clock is measured again; a reading the plateau still
    disproves is dropped (`measured_mhz` None, the theoretical peaks at the measured clock left
    unknown) and the readings and the bound are kept with the reason.
    """
    if not core_clock or not core_clock.get("measured_mhz"):
        return core_clock
    per = vector_peaks_per_mhz(backend)
    bound = max((compute[u] / p for u, p in per.items() if compute.get(u)), default=None)  # MHz
    if bound is None:
        return core_clock
    core_clock = {**core_clock, "lowest_mhz_the_plateaus_allow": bound / ABOVE_THEORETICAL}
    if core_clock["measured_mhz"] * ABOVE_THEORETICAL >= bound:
        return core_clock
    rejected = [core_clock["measured_mhz"]]
    again = backend.core_clock_mhz()
    if again and again * ABOVE_THEORETICAL >= bound:
        return {**core_clock, "measured_mhz": again, "rejected_mhz": rejected,
                "reason": f"measured again: {rejected[0]:.0f} MHz is under what the FMA plateau needs "
                          f"({bound / ABOVE_THEORETICAL:.0f} MHz)"}
    rejected += [again] if again else []
    return {**core_clock, "measured_mhz": None, "rejected_mhz": rejected,
            "reason": f"clock not measured: the readings ({', '.join(f'{r:.0f}' for r in rejected)} MHz) are "
                      f"under what the FMA plateau needs ({bound / ABOVE_THEORETICAL:.0f} MHz)"}


def retime(backend: Backend, settings: SweepSettings, sampler: Sampler, samples: pd.DataFrame,
           dram_min: int, tuner: Tuner) -> tuple[pd.DataFrame, list[dict]]:
    """The sweep's points that fall more than RETIME_DEVIATION under min(P, B·I) of the sweep's own
    ceilings, timed once more (every one beyond quality.FIT_LIMIT, and the worst RETIME_MAX of the
    others; sweep.retime_strays keeps the faster window). Returns the samples and what was timed
    again, for run.json; a stray of the final fit that is among them strayed in both windows."""
    try:
        points = summarize(samples)
        cei = extract_ceilings(points, dram_min, samples)
    except ValueError:  # no DRAM point or no valid one: nothing to fit against
        return samples, []
    devs, _, _ = fit_deviations(points[points["valid"]], cei.roofline, dram_min)
    strays = sorted((d for d in devs if d["deviation"] < -RETIME_DEVIATION), key=lambda d: d["deviation"])
    # every point the verdict would call a stray, and the worst RETIME_MAX of the milder ones
    keys = [(d["dtype"], d["variant"], d["fmas_per_element"]) for i, d in enumerate(strays)
            if i < RETIME_MAX or d["deviation"] < -FIT_LIMIT]
    if not keys:
        return samples, []
    sampler.phase("sweep: strays timed again")
    return retime_strays(backend, settings, sampler, samples, keys, tuner)


def mark_repeated_strays(fit: dict, retimed: list[dict]) -> None:
    """Each stray of the final fit gets `timed_windows`: 2 when it was timed again (retime) and
    strayed in the faster of its two windows too, so the deviation repeats; else 1."""
    again = {(r["dtype"], r["variant"], int(r["fmas_per_element"])) for r in retimed}
    for d in fit.get("strays") or []:
        d["timed_windows"] = 2 if (d["dtype"], d["variant"], int(d["fmas_per_element"])) in again else 1


def invalid_matrix_samples(matrix: pd.DataFrame) -> int:
    """GEMM samples that failed their check; the row of a unit the library refused (matrix.failed_unit,
    with its `error`) is no sample: that unit has no ceiling and is named in matrix_failed_units."""
    bad = ~matrix["valid"].astype(bool)
    if "error" in matrix:
        bad &= matrix["error"].isna() | (matrix["error"].astype(str) == "")
    return int(bad.sum())
