"""compare's tables: ceilings as rows and runs as columns in blocks that fit the terminal, the wide
one-row-per-run layout, markdown, CSV and JSON of a Comparison."""
from __future__ import annotations

import math
from typing import Any

from gpuroof.defaults import COMPARE_FORMATS, TERMINAL_WIDTH
from gpuroof.compare import Comparison, fmt_clock
from gpuroof.errors import UsageError
from gpuroof.results import dumps
from gpuroof.units import fmt_time, si, text_table

FORMATS = COMPARE_FORMATS
#: The terminal table (and every line of it) fits this many columns: a terminal or a CI log.


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
