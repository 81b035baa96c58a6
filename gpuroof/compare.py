"""`gpuroof compare`: runs side by side (cards, nodes): ceilings, ridges, clocks, workloads, sick nodes.

One record per run: every measured ceiling with its theoretical value and ratio, ridge points, the
device's own clock and power, and the workloads' time and efficiency with speedups relative to a
baseline run. Runs of the same device model form a group: a run whose ceiling sits more than a
threshold below the group's median is flagged (the "sick node" of a cluster). In the terminal the
ceilings are rows and the runs columns, in blocks that fit TERMINAL_WIDTH; `--wide` prints one row
per run. Compare only reads run directories; it never measures.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from gpuroof.errors import UsageError
from gpuroof.merge import find_runs
from gpuroof.results import Run, check_out_file, dumps, load_run
from gpuroof.units import fmt_time, si, text_table

FORMATS = ("table", "markdown", "csv", "json")
#: The terminal table (and every line of it) fits this many columns: a terminal or a CI log.
TERMINAL_WIDTH = 120
KEY = ["name", "case", "dtype"]  # a workload case across runs

#: A run whose ceiling is this fraction below the median of its group (same device model) is flagged.
SICK_THRESHOLD = 0.10
#: Runs of one device model needed before any is flagged: with two nobody can say which is sick.
MIN_GROUP = 3


# --------------------------------------------------------------------------- reading runs


def complete(run: Run) -> bool:
    cei = run.meta.get("ceilings") or {}
    return run.meta.get("status") == "complete" and bool(cei.get("compute")) and bool(cei.get("bandwidth"))


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


def ceiling_keys(meta: dict) -> list[tuple[str, str, str]]:
    """(kind, name, column) of every ceiling of a run: bandwidth first, then compute."""
    cei = meta["ceilings"]
    return ([("bandwidth", k, f"{k}_Bps") for k in _finite(cei.get("bandwidth"))]
            + [("compute", k, f"{k}_flops") for k in _finite(cei.get("compute"))])


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
    for kind, name, col in ceiling_keys(meta):
        suffix = "Bps" if kind == "bandwidth" else "flops"
        value = float(meta["ceilings"][kind][name])
        t = _finite(theo.get(kind)).get(name)
        row[col] = value
        row[f"{name}_theoretical_{suffix}"] = t
        row[f"{name}_ratio"] = value / t if t else None
        if kind == "compute":
            dram = _finite(meta["ceilings"].get("bandwidth")).get("dram")
            row[f"{name}_ridge_flop_per_byte"] = value / dram if dram else None
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
            raise UsageError(f"{r.path}: run is {r.meta.get('status')} and has no measured ceilings")
    names = labels(runs)
    base_label = names[baseline]
    tables = [workloads(r) for r in runs]
    base_units = set(_finite(runs[baseline].meta["ceilings"]["compute"]))
    base_cases = set(tables[baseline].index) if tables[baseline] is not None else set()
    for r, name, t in zip(runs, names, tables):
        units = set(_finite(r.meta["ceilings"]["compute"]))
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
        for k in ceiling_keys(r.meta):
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


# --------------------------------------------------------------------------- printing


def _fmt(v: Any, unit: str | None = None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if unit:
        return si(float(v), unit, digits)
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _text_or_empty(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _times(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f" x{v:.3f}"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def ceiling_table(c: Comparison) -> list[list[str]]:
    """One row per run (`--wide`, markdown); a ceiling's cell is 'value xB (T%)': B relative to the
    baseline, T of the theoretical peak at the measured clock. The clock column holds each device's
    own clock (SM on a GPU, the measured core clock on a CPU); memory clock and power columns only
    where some run has them."""
    runs = c.runs
    extra = [(k, h) for k, h in (("mem_clock_mhz", "mem MHz"), ("power_w", "power W"))
             if k in runs and runs[k].notna().any()]
    ridges = [name for kind, name, _ in c.ceilings if kind == "compute"]
    header = ["run", "device", "host"] + [name for _, name, _ in c.ceilings]
    header += [f"ridge {u}" for u in ridges] + ["clock"] + [h for _, h in extra]
    header += ["cases", "speedup", "eff. median", "flags"]
    out = [header]
    for _, row in runs.iterrows():
        cells = [row["run"], _fmt(row["device"]), _fmt(row["host"])]
        for kind, name, col in c.ceilings:
            v = row.get(col)
            ratio = row.get(f"{name}_ratio")
            cell = _fmt(v, "B/s" if kind == "bandwidth" else "FLOP/s") + _times(row.get(f"{name}_vs_baseline"))
            if ratio is not None and isinstance(ratio, float) and math.isfinite(ratio):
                cell += f" ({ratio:.0%})"
            cells.append(cell)
        cells += [_fmt(row.get(f"{u}_ridge_flop_per_byte"), digits=3) for u in ridges]
        cells.append(fmt_clock(row.get("clock"), row.get("clock_mhz")))
        cells += [_fmt(row.get(k), digits=5) for k, _ in extra]
        cells += [str(row.get("workload_cases", 0)), _times(row.get("speedup_geomean")).strip() or "-",
                  _fmt(row.get("efficiency_median"), digits=3), _text_or_empty(row.get("flags"))]
        out.append(cells)
    return out


def workload_table(c: Comparison) -> list[list[str]] | None:
    if c.workloads.empty:
        return None
    order = list(c.runs["run"])
    header = ["workload", "case", "dtype"] + [f"{r}" for r in order]
    out = [header]
    for key, g in c.workloads.groupby(["name", "case", "dtype"], sort=True):
        by = g.set_index("run")
        cells = list(key)
        for r in order:
            if r not in by.index:
                cells.append("-")
                continue
            x = by.loc[r]
            eff = "" if not math.isfinite(x["efficiency"]) else f", eff {x['efficiency']:.3f}"
            cells.append(f"{fmt_time(x['time_s'])} (x{x['speedup']:.3f}{eff})")
        out.append(cells)
    return out


def run_ids(c: Comparison) -> list[str]:
    """'#1', '#2', ...: the short name of each run in the column headers of the narrow tables."""
    return [f"#{i}" for i in range(1, len(c.runs) + 1)]


def runs_table(c: Comparison) -> list[list[str]]:
    """One short row per run: who it is, its clock, its workloads and which ceilings are flagged."""
    power = "power_w" in c.runs and c.runs["power_w"].notna().any()
    header = ["#", "run", "device", "host", "clock"] + (["power"] if power else []) + ["workloads", "flagged"]
    out = [header]
    for rid, (_, row) in zip(run_ids(c), c.runs.iterrows()):
        cases = int(row.get("workload_cases") or 0)
        work = "-"
        if cases:
            eff = _num(row.get("efficiency_median"))
            work = f"{cases}{_x(row.get('speedup_geomean'))}" + (f" {eff:.0%}" if eff is not None else "")
        mine = [f for f in c.flags if f["run"] == row["run"]]
        flagged = ", ".join(f"{f['ceiling']} -{f['below']:.0%}" for f in mine) if len(mine) <= 2 else \
            f"{len(mine)} ceilings -{min(f['below'] for f in mine):.0%} to -{max(f['below'] for f in mine):.0%}"
        cells = [rid, row["run"], _fmt(row["device"]), _fmt(row["host"]),
                 fmt_clock(row.get("clock"), row.get("clock_mhz"))]
        if power:
            cells.append(_fmt(row.get("power_w"), "W", 3))
        out.append(cells + [work, flagged or "-"])
    return out


def _x(v: Any) -> str:
    """A ratio to the baseline in three figures: 'x1.00', 'x0.43', 'x53.3', 'x289'."""
    v = _num(v)
    return "" if v is None else f" x{v:.2f}" if v < 10 else f" x{v:.3g}"


def ceilings_by_run(c: Comparison) -> list[list[str]]:
    """Ceilings as rows, runs as columns: 'value xB (T%)'."""
    out = [["ceiling", *run_ids(c)]]
    records = c.runs.to_dict("records")
    for kind, name, col in c.ceilings:
        unit = "B/s" if kind == "bandwidth" else "FLOP/s"
        row = [name]
        for r in records:
            v = _num(r.get(col))
            ratio = _num(r.get(f"{name}_ratio"))
            row.append("-" if v is None else si(v, unit, 3) + _x(r.get(f"{name}_vs_baseline"))
                       + (f" ({ratio:.0%})" if ratio is not None else ""))
        out.append(row)
    return out


def ridges_by_run(c: Comparison) -> list[list[str]]:
    """Each compute unit's ridge point against DRAM (FLOP/byte), runs as columns."""
    records = c.runs.to_dict("records")
    out = [["ridge", *run_ids(c)]]
    for kind, name, _ in c.ceilings:
        if kind == "compute":
            out.append([name] + ["-" if (v := _num(r.get(f"{name}_ridge_flop_per_byte"))) is None else f"{v:.3g}"
                                 for r in records])
    return out


def workloads_by_run(c: Comparison) -> list[list[str]] | None:
    """Workload cases as rows, runs as columns: 'time xS E%' (S: speedup, E: efficiency)."""
    if c.workloads.empty:
        return None
    have = set(c.workloads["run"])  # a run without workloads gets no column of dashes
    pairs = [(r, rid) for r, rid in zip(c.runs["run"], run_ids(c)) if r in have]
    order = [r for r, _ in pairs]
    out = [["case", *(rid for _, rid in pairs)]]
    for key, g in c.workloads.groupby(["name", "case", "dtype"], sort=True):
        by = g.set_index("run")
        cells = [" ".join(key)]
        for r in order:
            if r not in by.index:
                cells.append("-")
                continue
            x = by.loc[r]
            eff = f" {x['efficiency']:.0%}" if math.isfinite(x["efficiency"]) else ""
            cells.append(f"{fmt_time(x['time_s'])}{_x(x['speedup'])}{eff}")
        out.append(cells)
    return out


def column_blocks(rows: list[list[str]], width: int, keep: int = 1) -> list[list[list[str]]]:
    """`rows` cut into tables of the first `keep` columns and as many of the others as fit `width`
    (at least one each), as a wide data frame is printed in blocks."""
    from gpuroof.units import fitted_table

    rest = list(range(keep, len(rows[0])))
    blocks, cur = [], []
    for j in rest:
        trial = cur + [j]
        table = [[r[i] for i in range(keep)] + [r[i] for i in trial] for r in rows]
        if cur and max(map(len, fitted_table(table, width))) > width:
            blocks.append(cur)
            trial = [j]
        cur = trial
    if cur or not blocks:
        blocks.append(cur)
    return [[[r[i] for i in range(keep)] + [r[i] for i in b] for r in rows] for b in blocks]


def _text(rows: list[list[str]]) -> str:
    return "\n".join(text_table(rows))


def _markdown(rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(r) + " |" for r in esc]
    lines.insert(1, "|" + "|".join("---" for _ in rows[0]) + "|")
    return "\n".join(lines)


def _spread_rows(c: Comparison) -> list[list[str]]:
    rows = [["device", "ceiling", "runs", "min", "median", "max", "spread"]]
    for r in c.spread.to_dict("records"):
        unit = "B/s" if r["kind"] == "bandwidth" else "FLOP/s"
        rows.append([str(r["device"]), r["ceiling"], str(r["runs"]), si(r["min"], unit), si(r["median"], unit),
                     si(r["max"], unit), f"{r['spread']:.1%}" if r["spread"] is not None else "-"])
    return rows


def narrow_text(c: Comparison, width: int = TERMINAL_WIDTH) -> str:
    """The terminal layout: runs as a short list, then ceilings and workloads with the runs as
    columns (in blocks), spread and flags; no line longer than `width`."""
    import textwrap

    from gpuroof.units import fitted_table

    def para(text: str) -> list[str]:
        return textwrap.wrap(text, width)

    def tables(rows: list[list[str]]) -> list[str]:
        out: list[str] = []
        for i, block in enumerate(column_blocks(rows, width)):
            out += ([""] if i else []) + fitted_table(block, width)
        return out

    base = run_ids(c)[list(c.runs["run"]).index(c.baseline)]
    parts = para(f"Runs (clock: the SM clock on a GPU, the core clock measured under load on a CPU; "
                 f"workloads: cases in common with the baseline {base}, x: geometric-mean speedup over it, "
                 "%: median efficiency; flagged: ceilings below the median of the device model's runs)")
    parts += [""] + fitted_table(runs_table(c), width)
    parts += [""] + para(f"Ceilings (value, xB: relative to the baseline {base}, (T%): of the theoretical peak "
                         "at the measured clock)")
    parts += [""] + tables(ceilings_by_run(c))
    parts += [""] + para("Ridge points (FLOP/byte where each compute roof meets the DRAM slope)")
    parts += [""] + tables(ridges_by_run(c))
    w = workloads_by_run(c)
    if w:
        parts += [""] + para(f"Workloads (time per call, x: speedup over the baseline {base}, %: efficiency "
                             "against the run's own roofline)")
        parts += [""] + tables(w)
    if not c.spread.empty:
        parts += [""] + para("Spread over runs of the same device model ((max - min) / median)")
        parts += [""] + fitted_table(_spread_rows(c), width)
    if c.flags:
        parts += [""] + para(f"Flagged (a ceiling more than {c.threshold:.0%} below the median of all runs of "
                             "the same device model)")
        parts += [""]
        for rid, f in ((run_ids(c)[list(c.runs["run"]).index(f["run"])], f) for f in c.flags):
            parts += textwrap.wrap(f"- {rid} {f['run']}: {f['message']}", width, subsequent_indent="  ")
    return "\n".join(parts)


def render(c: Comparison, fmt: str, wide: bool = False) -> str:
    """The comparison as text: `table` (runs as columns, fitting TERMINAL_WIDTH; one row per run
    with `wide`), `markdown` (one row per run), `csv` (one row per run) or `json`."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: unknown (allowed: {', '.join(FORMATS)})")
    if fmt == "json":
        return dumps({"baseline": c.baseline, "sick_threshold": c.threshold,
                      "runs": c.runs.to_dict("records"), "workloads": c.workloads.to_dict("records"),
                      "spread": c.spread.to_dict("records"), "flags": c.flags})
    if fmt == "csv":
        return c.wide().to_csv(index=False)
    if fmt == "table" and not wide:
        return narrow_text(c)
    table = _text if fmt == "table" else _markdown
    head = "## " if fmt == "markdown" else ""
    parts = [f"{head}Ceilings (xB: relative to the baseline {c.baseline}; (T%): of the theoretical peak at "
             "the measured clock; ridge in FLOP/byte against DRAM; clock: SM on a GPU, measured core clock "
             "on a CPU)", "", table(ceiling_table(c))]
    w = workload_table(c)
    if w:
        parts += ["", f"{head}Workloads (time, x: speedup over the baseline, eff: efficiency against "
                      "the run's own roofline)", "", table(w)]
    if not c.spread.empty:
        parts += ["", f"{head}Spread over runs of the same device model ((max - min) / median)", "",
                  table(_spread_rows(c))]
    if c.flags:
        parts += ["", f"{head}Flagged (a ceiling more than {c.threshold:.0%} below the median of all runs "
                      "of the same device model)", ""]
        parts += [f"- {f['run']}: {f['message']}" for f in c.flags]
    return "\n".join(parts)


# --------------------------------------------------------------------------- the overlaid figure


# --------------------------------------------------------------------------- command line
