"""`gpuroof compare`: runs side by side (cards, nodes): ceilings, ridges, clocks, workloads, sick nodes.

One record per run: every measured ceiling with its theoretical value and ratio, ridge points, the
device's own clock and power, and the workloads' time and efficiency with speedups relative to a
baseline run. Runs of the same device model form a group: a run whose ceiling sits more than a
threshold below the group's median is flagged (the "sick node" of a cluster). In the terminal the
ceilings are rows and the runs columns, in blocks that fit the terminal (compare_text); `--wide`
prints one row per run. Compare only reads run directories; it never measures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from gpuroof.defaults import SICK_THRESHOLD
from gpuroof.errors import UsageError
from gpuroof.merge import find_runs
from gpuroof.results import Run, load_run

KEY = ["name", "case", "dtype"]  # a workload case across runs

#: A run whose ceiling is SICK_THRESHOLD below the median of its group (same device model) is flagged.
#: Runs of one device model needed before any is flagged: with two nobody can say which is sick.
MIN_GROUP = 3


# --------------------------------------------------------------------------- reading runs


def complete(run: Run) -> bool:
    """Measured, with a compute and a bandwidth ceiling to compare."""
    return run.measured and bool(run.ceilings.compute) and bool(run.ceilings.bandwidth)


def load_runs(paths: Iterable[str | Path], warn: Any = None) -> list[Run]:
    """Run directories as named; a directory that is not a run stands for every run below it.

    A run named explicitly must be complete (UsageError otherwise); among the runs found below a
    directory, unreadable or unfinished ones are reported through `warn` and left out.
    """
    runs: list[Run] = []
    for p in paths:
        path = Path(p)
        if (path / "run.json").exists() or path.is_file():
            run = load_run(path)
            if not complete(run):
                raise UsageError(f"{p}: run is {run.meta.get('status')} and has no measured ceilings "
                                 f"({run.meta.get('status_reason', 'not finished')})")
            runs.append(run)
            continue
        if not path.is_dir():
            raise UsageError(f"{p}: no such run directory")
        found = find_runs([path])
        for s in found.skipped:
            if warn:
                warn(f"skipped {s.path}: {s.reason}")
        good = []
        for r in found.runs:
            if not complete(r):
                if warn:
                    warn(f"skipped {r.path}: status {r.meta.get('status')!r}, no measured ceilings")
                continue
            try:
                workloads(r)  # a bad workloads.csv leaves the run out, as a bad run.json does
            except UsageError as e:
                if warn:
                    warn(f"skipped {r.path}: {e}")
                continue
            good.append(r)
        if not good:
            raise UsageError(f"{p}: not a run directory and holds no complete run")
        runs.extend(good)
    seen: set[Path] = set()
    unique = []
    for r in runs:
        if r.path.resolve() not in seen:
            seen.add(r.path.resolve())
            unique.append(r)
    return unique


def _bool(s: pd.Series) -> pd.Series:
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(("true", "1", "yes"))


def workloads(run: Run) -> pd.DataFrame | None:
    """The run's valid workload cases (workloads.csv), or None when it ran none."""
    if not (run.path / "workloads.csv").exists():
        return None
    df = run.table("workloads")
    missing = [c for c in (*KEY, "time_s") if c not in df.columns]
    if missing:
        raise UsageError(f"{run.path}/workloads.csv: lacks column(s) {', '.join(missing)}")
    if "valid" in df.columns:
        df = df[_bool(df["valid"])]
    df = df.copy()
    df["dtype"] = df["dtype"].astype(str)
    df["case"] = df["case"].astype(str)
    return df.drop_duplicates(KEY, keep="last").set_index(KEY)


def labels(runs: list[Run]) -> list[str]:
    """The shortest trailing part of each run's path that tells the runs apart."""
    parts = [r.path.resolve().parts for r in runs]
    for n in range(1, max(len(p) for p in parts) + 1):
        out = ["/".join(p[-n:]) for p in parts]
        if len(set(out)) == len(out):
            return out
    return [str(r.path) for r in runs]


# --------------------------------------------------------------------------- the comparison


def _finite(d: dict | None) -> dict[str, float]:
    return {k: float(v) for k, v in (d or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def ceiling_keys(run: Run) -> list[tuple[str, str, str]]:
    """(kind, name, column) of every ceiling of a run: bandwidth first, then compute."""
    roof = run.ceilings
    return ([("bandwidth", k, f"{k}_Bps") for k in roof.bandwidth]
            + [("compute", k, f"{k}_flops") for k in roof.compute])


#: Memory levels from the cores outwards; unknown levels sort before DRAM, by name.
LEVEL_ORDER = ("l1", "shared", "l2", "l3")


def _ceiling_order(key: tuple[str, str, str]) -> tuple:
    kind, name, _ = key
    if kind == "bandwidth":
        rank = len(LEVEL_ORDER) + 1 if name == "dram" else (
            LEVEL_ORDER.index(name) if name in LEVEL_ORDER else len(LEVEL_ORDER))
        return (0, rank, name)
    return (1, name.endswith("-matrix"), name)


def run_row(run: Run, label: str) -> dict:
    meta = run.meta
    dev, host = meta.get("device") or {}, meta.get("host") or {}
    env = host.get("env") or {}
    row: dict[str, Any] = {
        "run": label, "run_dir": str(run.path), "device": dev.get("name"), "host": host.get("hostname"),
        "backend": meta.get("backend"), "uuid": dev.get("uuid"), "driver": dev.get("driver_version"),
        "created_utc": meta.get("created_utc"), "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "job_completion_index": env.get("JOB_COMPLETION_INDEX"),
    }
    theo = meta.get("theoretical") or {}
    roof = run.ceilings
    for kind, name, col in ceiling_keys(run):
        suffix = "Bps" if kind == "bandwidth" else "flops"
        value = getattr(roof, kind)[name]
        t = _finite(theo.get(kind)).get(name)
        row[col] = value
        row[f"{name}_theoretical_{suffix}"] = t
        row[f"{name}_ratio"] = value / t if t else None
        if kind == "compute":
            row[f"{name}_ridge_flop_per_byte"] = roof.ridge(name) if "dram" in roof.bandwidth else None
    clocks = meta.get("median_clocks") or {}
    for k in ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c"):
        row[k] = clocks.get(k)
    row["clock"], row["clock_mhz"], row["clock_source"] = run_clock(meta)
    return row


def run_clock(meta: dict) -> tuple[str, float | None, str]:
    """(word, MHz, how it was read): the clock in the device's own words.

    A GPU's is its SM clock, the median over the timed points (NVML). A CPU's is the core clock
    measured under load by a chain of dependent adds; the OS's figure (run.json's median_clocks
    on a CPU) is a VM's nominal clock and is never shown as the clock. A CPU run without that
    measurement (made before gpuroof took it) has no clock: None.
    """
    if meta.get("backend") == "cpu":
        cc = meta.get("core_clock") if isinstance(meta.get("core_clock"), dict) else {}
        mhz = _finite({"c": cc.get("measured_mhz")}).get("c")
        return "core", mhz, "measured under load (dependent-add chain)" if mhz else "not measured"
    mhz = _finite({"c": (meta.get("median_clocks") or {}).get("sm_clock_mhz")}).get("c")
    return "SM", mhz, "median during the timed points" if mhz else "not reported"


def fmt_clock(word: Any, mhz: Any) -> str:
    """'core 2684 MHz', 'SM 1980 MHz'; 'core -' where the clock is unknown."""
    ok = isinstance(mhz, (int, float)) and math.isfinite(mhz)
    return f"{word} {mhz:.0f} MHz" if ok else f"{word} -"


@dataclass
class Comparison:
    runs: pd.DataFrame  # one row per run
    workloads: pd.DataFrame  # one row per run and workload case shared with the baseline
    flags: list[dict]  # runs whose ceilings sit below their group's median
    baseline: str
    threshold: float
    ceilings: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, column), union
    spread: pd.DataFrame = field(default_factory=pd.DataFrame)  # per device model and ceiling
    min_group: int = MIN_GROUP  # runs a device model needs before one of them can be flagged

    def wide(self) -> pd.DataFrame:
        """`runs` with one time/efficiency/speedup column per workload case (for CSV)."""
        out = self.runs.set_index("run")
        if not self.workloads.empty:
            w = self.workloads.assign(case_key=self.workloads["name"] + " " + self.workloads["case"]
                                      + " " + self.workloads["dtype"])
            for col in ("time_s", "efficiency", "speedup"):
                piv = w.pivot(index="run", columns="case_key", values=col)
                piv.columns = [f"{c} {col}" for c in piv.columns]
                out = out.join(piv)
        return out.reset_index()


def compare(runs: list[Run], baseline: int = 0, threshold: float = SICK_THRESHOLD,
            overlap: bool = True) -> Comparison:
    """Compare complete runs; `baseline` indexes `runs`. UsageError when a run has nothing in common
    with the baseline (no compute ceiling and no workload case shared), unless `overlap` is False:
    a lab of many device models is read side by side even where two share nothing."""
    if len(runs) < (2 if overlap else 1):
        raise UsageError(f"compare needs at least two runs (got {len(runs)})")
    if not 0 <= threshold < 1:
        raise UsageError(f"--threshold {threshold * 100:g}: a percentage in [0, 100)")
    for r in runs:
        if not complete(r):
            raise UsageError(f"{r.path}: run is {r.status} and has no measured ceilings")
    names = labels(runs)
    base_label = names[baseline]
    tables = [workloads(r) for r in runs]
    base_units = set(runs[baseline].ceilings.compute)
    base_cases = set(tables[baseline].index) if tables[baseline] is not None else set()
    for r, name, t in zip(runs, names, tables):
        units = set(r.ceilings.compute)
        cases = set(t.index) if t is not None else set()
        if overlap and not units & base_units and not cases & base_cases:
            raise UsageError(f"{name}: no overlap with the baseline {base_label}: it measured "
                             f"{', '.join(sorted(units)) or 'no compute unit'} and "
                             f"{len(cases)} workload case(s), the baseline "
                             f"{', '.join(sorted(base_units)) or 'no compute unit'} and "
                             f"{len(base_cases)}; nothing to compare")

    rows = [run_row(r, n) for r, n in zip(runs, names)]
    keys: list[tuple[str, str, str]] = []
    for r in runs:
        for k in ceiling_keys(r):
            if k not in keys:
                keys.append(k)
    keys.sort(key=_ceiling_order)
    base_row = rows[baseline]
    for row in rows:
        for _, _, col in keys:
            b, v = base_row.get(col), row.get(col)
            row[f"{col.rsplit('_', 1)[0]}_vs_baseline"] = v / b if (v is not None and b) else None

    wrows = []
    base_t = tables[baseline]
    for row, t in zip(rows, tables):
        common = sorted(set(t.index) & base_cases) if t is not None else []
        speed, eff = [], []
        for key in common:
            cur, ref = t.loc[key], base_t.loc[key]
            sp = float(ref["time_s"]) / float(cur["time_s"])
            e = float(cur["efficiency"]) if "efficiency" in t.columns else math.nan
            e_ref = float(ref["efficiency"]) if "efficiency" in base_t.columns else math.nan
            wrows.append({"run": row["run"], "name": key[0], "case": key[1], "dtype": key[2],
                          "unit": cur.get("unit"), "time_s": float(cur["time_s"]), "efficiency": e,
                          "speedup": sp, "efficiency_vs_baseline": e / e_ref if e_ref else math.nan,
                          "bound": cur.get("bound")})
            speed.append(sp)
            if math.isfinite(e):
                eff.append(e)
        row["workload_cases"] = len(common)
        row["speedup_geomean"] = float(np.exp(np.mean(np.log(speed)))) if speed else None
        row["efficiency_median"] = float(np.median(eff)) if eff else None

    flags = sick_nodes(runs, rows, keys, threshold)
    for row in rows:
        row["flags"] = "; ".join(f["message"] for f in flags if f["run"] == row["run"]) or None
    return Comparison(runs=pd.DataFrame(rows), workloads=pd.DataFrame(wrows), flags=flags,
                      baseline=base_label, threshold=threshold, ceilings=keys,
                      spread=spread(runs, rows, keys))


def spread(runs: list[Run], rows: list[dict], keys: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Per device model with two or more runs and per ceiling: min, median, max over the runs and
    the spread (max - min) / median: how far identical cards (or nodes) are apart."""
    out = []
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault((r.meta.get("backend"), rows[i]["device"]), []).append(i)
    for (backend, device), members in groups.items():
        for kind, name, col in keys:
            v = np.array([rows[i][col] for i in members if rows[i].get(col) is not None], dtype=float)
            if len(v) < 2:
                continue
            med = float(np.median(v))
            out.append({"device": device, "backend": backend, "kind": kind, "ceiling": name, "runs": len(v),
                        "min": float(v.min()), "median": med, "max": float(v.max()),
                        "spread": float((v.max() - v.min()) / med) if med else None})
    return pd.DataFrame(out)


def sick_nodes(runs: list[Run], rows: list[dict], keys: list[tuple[str, str, str]],
               threshold: float) -> list[dict]:
    """Ceilings more than `threshold` below the median of the same ceiling over the run's group.

    A group is every run of the same device model on the same backend, the run itself included:
    the fleet's median is what "normal" means, so one slow node among many is flagged, while a
    minority of fast nodes is not. It takes at least MIN_GROUP runs that measured the ceiling:
    with two, nobody can tell which one is sick.
    """
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault((r.meta.get("backend"), rows[i]["device"]), []).append(i)
    flags = []
    for (_, device), members in groups.items():
        for kind, name, col in keys:
            values = {i: rows[i][col] for i in members if rows[i].get(col) is not None}
            if len(values) < MIN_GROUP:
                continue
            med = float(np.median(list(values.values())))
            for i, v in values.items():
                if v < (1 - threshold) * med:
                    below = 1 - v / med
                    flags.append({"run": rows[i]["run"], "device": device, "ceiling": name, "kind": kind,
                                  "value": v, "group_median": med, "group_runs": len(values),
                                  "below": below,
                                  "message": f"{name} {below:.0%} below the median of the {len(values)} "
                                             f"{device} runs"})
    return flags

