"""Matrix-unit ceilings: square GEMMs through the vendor library, swept in size until the rate plateaus.

On the GPU the library is cuBLAS (tensor cores for float16, bfloat16, tf32 and int8; DMMA for float64
where the card has it); on the CPU numpy's BLAS. Each unit becomes a compute ceiling named
`<dtype>-matrix`. Every size's result is checked against a float64 product of the same (rounded)
inputs on a sample of rows before its time counts.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from gpuroof.backends.base import Gemm, rel_error, sample_rows  # noqa: F401  (the GEMM a backend prepares)
from gpuroof.errors import UsageError
from gpuroof.hostbound import per_rep
from gpuroof.quality import BUSY_RETRIES, quiet_window
from gpuroof.sweep import plateau_statistic, undisturbed

#: Relative tolerance (max |C - ref| / max |ref|) per unit: accumulation and output rounding only,
#: since the reference uses the very inputs the library saw (already rounded to the unit's type).
TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "tf32": 1e-2, "float16": 5e-3, "bfloat16": 2e-2,
             "int8": 0.0}

#: The rate has plateaued when the largest size gains less than this over the best smaller one.
PLATEAU_GAIN = 0.02


def matrix_sweep(backend: Any, units: tuple[str, ...], sizes: tuple[int, ...], *, budget_s: float,
                 min_reps: int, max_reps: int, sampler: Any = None, retries: int = BUSY_RETRIES,
                 progress: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Time GEMMs of growing size per unit; one row per timed repetition (long form).

    Every size is timed (BLAS libraries pick different kernels by size, so an early flat stretch
    says little about the large sizes); `matrix_plateaus` then tells whether the rate levelled off.
    A unit the library refuses (a CUBLASError: say int8 TN on a card or cuBLAS without it) or that
    fails on the device gets one row for the size that failed, with the reason (`failed_unit`),
    and its larger sizes are not tried; the other units run on. That row is a failure, not a
    measurement: a unit that failed at its first size has no ceiling, one that failed after valid
    smaller sizes has the ceiling of those (`unit_failures`, `failure_warnings` say which). A size
    timed while other processes were busy is timed again up to `retries` times.
    """
    rows: list[dict] = []
    for unit in units:
        if sampler is not None:
            sampler.phase(f"matrix {unit}")
        for n in sizes:
            try:
                g = backend.gemm(unit, n)
                t0 = sampler.now() if sampler is not None else 0.0
                win = quiet_window(lambda: backend.timed(g.run, warmup=1, min_reps=min_reps, max_reps=max_reps,
                                                         budget_s=budget_s), f"the {unit} GEMM n={n}", retries)
                timing = win.result
                t1 = sampler.now() if sampler is not None else 0.0
                err = g.check()
            except MemoryError as exc:
                if not any(r["dtype"] == unit for r in rows):
                    rows.append(failed_unit(unit, n, f"out of memory at the smallest size: {exc}"))
                break  # the next sizes do not fit either; the plateau has what fit
            except UsageError:
                raise
            except Exception as exc:  # CUBLASError (a layout or type refused), a driver error
                rows.append(failed_unit(unit, n, f"{type(exc).__name__}: {first_line(exc)}"))
                break  # this unit has no ceiling; the other units still run
            valid = err <= TOLERANCE[unit]
            tel = sampler.window(t0, t1) if sampler is not None else {}
            times, host = timing.times_s, per_rep(timing)
            rate = g.flops / float(np.median(times))
            for rep, t in enumerate(times):
                rows.append({"unit": f"{unit}-matrix", "dtype": unit, "n": n, "layout": g.layout,
                             "rep": rep, "time_s": float(t),
                             "flops": g.flops, "bytes": g.bytes, "valid": valid, "rel_error": err,
                             "t_start_s": t0, "t_end_s": t1, **tel, **host[rep], **win.columns()})
            if progress:
                progress({"unit": unit, "n": n, "gflops": rate / 1e9, "valid": valid,
                          "disturbed": win.disturbed})
            del g
    return pd.DataFrame(rows)


def failed_unit(unit: str, n: int, reason: str) -> dict:
    """The row that records the size at which a unit's GEMM was refused by the library or failed on
    the device: `failed` True, the reason in `error`, no time (so one unit's failure never ends the
    run). `valid` is False because no timed, checked GEMM stands behind it; it is no invalid
    sample either (no output was checked and found wrong): readers tell the two apart by `failed`."""
    return {"unit": f"{unit}-matrix", "dtype": unit, "n": n, "rep": None, "time_s": None,
            "valid": False, "failed": True, "error": reason}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def failure_rows(samples: pd.DataFrame) -> pd.Series:
    """Which rows record a failure (`failed_unit`): a non-empty `error` (runs before the `failed`
    column have only that), or `failed` True."""
    mask = pd.Series(False, index=samples.index)
    if "error" in samples:
        mask |= samples["error"].notna() & (samples["error"].astype(str).str.strip() != "")
    if "failed" in samples:
        mask |= samples["failed"].astype(str).str.strip().str.lower().isin(("true", "1", "1.0"))
    return mask


def failed_units(samples: pd.DataFrame) -> dict[str, str]:
    """unit -> reason, for every unit recorded by `failed_unit`."""
    if samples.empty:
        return {}
    bad = samples[failure_rows(samples)]
    return {str(r.unit): str(r.error) for r in bad.itertuples()}


def unit_failures(samples: pd.DataFrame) -> dict[str, dict]:
    """unit -> {"n": the size that failed, "error": why, "valid_sizes": the sizes timed and checked
    before it}: what a failed unit's ceiling (matrix_ceilings, from the valid sizes) does and does
    not stand on."""
    if samples.empty:
        return {}
    fail = failure_rows(samples)
    ok = samples[~fail & samples["valid"].astype(bool)]
    out = {}
    for r in samples[fail].itertuples():
        sizes = sorted({int(n) for n in ok.loc[ok["unit"] == r.unit, "n"]})
        out[str(r.unit)] = {"n": int(r.n), "error": str(r.error), "valid_sizes": sizes}
    return out


def failure_warnings(failed: dict[str, str], ceilings: dict | None,
                     samples: pd.DataFrame | None = None) -> list[tuple[str, str]]:
    """(severity, sentence) per failed unit (run.json `matrix_failed_units`: unit -> reason), for
    the report: a unit without a ceiling is 'bad' (it has none); a unit that failed at a larger size
    after valid smaller ones keeps the ceiling of those and is a 'warn' that names the failed size
    (from matrix.csv, `samples`, where there is one) as a failure, not as an invalid measurement."""
    where = unit_failures(samples) if samples is not None and len(samples) else {}
    out = []
    for unit, reason in (failed or {}).items():
        info = where.get(unit, {})
        at = f" at n={info['n']}" if info.get("n") is not None else ""
        ceiling = (ceilings or {}).get(unit)
        if ceiling is None:
            out.append(("bad", f"the matrix unit {unit} failed{at} and has no ceiling: {reason}."))
            continue
        sizes = info.get("valid_sizes")
        from_sizes = f"n={', '.join(map(str, sizes))}" if sizes else "the sizes before it"
        out.append(("warn", f"the matrix unit {unit} failed{at} ({reason}); larger sizes were not tried. "
                            f"Its ceiling comes from the sizes that ran and passed their check ({from_sizes}), "
                            "not from the failed one, which is no invalid measurement: it may sit under "
                            "the plateau the larger sizes would have reached."))
    return out


def matrix_plateaus(samples: pd.DataFrame) -> dict[str, bool]:
    """Per unit: did the largest valid size gain less than PLATEAU_GAIN over the best smaller one?"""
    out = {}
    ok = samples[samples["valid"]]
    for unit, df in ok.groupby("unit", sort=False):
        rate = (df.groupby("n")["flops"].first() / df.groupby("n")["time_s"].median()).sort_index()
        out[unit] = bool(len(rate) >= 2 and rate.iloc[-1] < rate.iloc[:-1].max() * (1 + PLATEAU_GAIN))
    return out


def matrix_ceilings(samples: pd.DataFrame, disturbed: list[str] | None = None,
                    sources: dict | None = None) -> dict[str, float]:
    """Per unit, the ceiling as every other ceiling is taken (sweep.plateau_statistic): the
    CEILING_PERCENTILE of the valid repetitions' rates over its plateau, the sizes whose median rate
    is within 3% of the best one, from the sizes timed in an undisturbed window; a unit with none
    takes the disturbed ones and is named in `disturbed`. (The best median alone sat under a GEMM
    of the same shape timed later, at its own median, by the run-to-run noise.) `sources` gets, per
    unit, the sizes its ceiling came from."""
    if samples.empty:
        return {}
    out = {}
    for unit, df in samples[samples["valid"]].groupby("unit", sort=False):
        df, forced = undisturbed(df)
        if forced and disturbed is not None:
            disturbed.append(unit)
        rate = df.groupby("n")["flops"].first() / df.groupby("n")["time_s"].median()
        sizes = rate[rate >= 0.97 * rate.max()].index
        top = df[df["n"].isin(sizes)]
        out[unit] = plateau_statistic(top["flops"] / top["time_s"])["value"]
        if sources is not None:
            sources[unit] = {"kernel": "library GEMM", "sizes": [int(n) for n in sizes]}
    return out
