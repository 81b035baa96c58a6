"""The placed tables: one row per op instance, op type, module and the whole model; the text tables."""
from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pandas as pd

from gpuroof.hostbound import host_bound, note as host_bound_note
from gpuroof.bench import NOISE_FLOOR, place_case
from gpuroof.profiling.recording import OpRecord
from gpuroof.roofline import Roofline
from gpuroof.units import fmt_time, si, text_table

#: Bound of an op that moves no data and does no FLOPs (a view): its time is dispatch overhead.
OVERHEAD = "overhead"

KINDS = ("op", "op_type", "module", "model")
#: quality_ok / quality_reasons: whether the machine was quiet while the repetitions were profiled
COLUMNS = ["kind", "name", "op", "module", "phase", "index", "count", "dtype", "unit", "roof_unit", "level",
           "input_shapes", "flops", "bytes", "intensity", "time_s", "time_share", "achieved_flops",
           "achieved_bandwidth_Bps", "attainable_flops", "efficiency", "predicted_time_s",
           "measured_over_predicted", "lost_time_s", "bound", "above_roof", "cache_level",
           "cache_attainable_flops", "cache_efficiency", "notes", "quality_ok", "quality_reasons", "host_bound"]
TOP = 10  # rows of the "where the time goes" table


#: What place_case suspects of a point above a compute roof, and what it is for an op FlopCounterMode
#: counted by a closed form: GEMM and convolution counts are exact, so the ceiling is what is low.
COUNTING_ERROR = "a counting error (FLOPs counted too high, or the wrong unit)"
EXACT = ("its FLOPs are exact (FlopCounterMode's closed form): the measured ceiling may be low "
         "(a --quick run, a busy machine, or a library faster than the run's GEMM)")
DENSE = ("attention is counted dense (every query against every key): a causal kernel that skips "
         "the masked half does fewer FLOPs than counted, or the measured ceiling is low")


def _counted_right(note: str, op: str) -> str:
    if COUNTING_ERROR not in note:
        return note
    return note.replace(COUNTING_ERROR, DENSE if "attention" in op else EXACT)


def _table(records: list[OpRecord], times: np.ndarray, roof: Roofline) -> pd.DataFrame:
    """One row per op instance, placed with bench's place_case (views: overhead, nothing to place)."""
    rows = []
    for i, r in enumerate(records):
        col = times[:, i]
        ok = col[np.isfinite(col)]
        t = float(np.median(ok)) if len(ok) else math.nan
        spread = float((np.quantile(ok, 0.75) - np.quantile(ok, 0.25)) / t) if len(ok) > 1 and t > 0 else 0.0
        row: dict[str, Any] = {"kind": "op", "name": f"{r.op} #{i}", "op": r.op, "module": r.module,
                               "phase": r.phase, "index": i, "count": 1, "dtype": r.dtype, "unit": r.unit,
                               "input_shapes": r.input_shapes, "flops": r.flops, "bytes": r.bytes,
                               "time_s": t}
        notes: list[str] = []
        if not len(ok) and r.view:
            row.update(time_s=0.0, intensity=math.nan, predicted_time_s=0.0, bound=OVERHEAD, efficiency=math.nan,
                       above_roof=False, attainable_flops=math.nan, measured_over_predicted=math.nan)
            notes.append("a view the profiler records no event for: no time, no data moved")
        elif not len(ok):
            notes.append("not found in the profiler's events; not timed, not placed")
        elif r.view or (r.flops == 0 and r.bytes == 0):
            row.update(intensity=math.nan, predicted_time_s=0.0, bound=OVERHEAD, efficiency=0.0,
                       above_roof=False, achieved_flops=0.0, achieved_bandwidth_Bps=0.0,
                       attainable_flops=math.nan, measured_over_predicted=math.inf)
            notes.append("a view (no data moved, no FLOPs): its time is dispatch overhead")
        elif t <= 0:
            notes.append("the profiler gave it no time (no kernel); not placed")
        else:
            placed = place_case(roof, float(r.flops), float(r.bytes), t, r.unit, spread)
            notes += [_counted_right(n, r.op) for n in placed.pop("notes")]
            row.update(placed)
            if r.flops == 0 and math.isfinite(row["predicted_time_s"]):
                # achieved / attainable is 0/0 at zero FLOPs; predicted / measured is the same ratio
                row["efficiency"] = row["predicted_time_s"] / t
                if row.get("cache_level"):
                    row["cache_efficiency"] = r.bytes / roof.bandwidth[row["cache_level"]] / t
                    notes = [n.replace("efficiency nan", f"efficiency {row['cache_efficiency']:.2f}") for n in notes]
        row["notes"] = "; ".join(notes)
        rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    total = df["time_s"].sum()
    df["time_share"] = df["time_s"] / total if total > 0 else math.nan
    df["lost_time_s"] = df["time_s"] - df["predicted_time_s"]
    return df


def _dominant(placed: pd.DataFrame, column: str) -> Any:
    """The value of `column` that holds the most roofline time among the placed ops (None if none)."""
    by = placed.dropna(subset=[column]).groupby(column)["predicted_time_s"].sum()
    return by.idxmax() if len(by) else None


def _combine(g: pd.DataFrame) -> dict:
    """Placement fields of a group of op instances: they run one after another, so the roofline time
    of the group is the sum of its ops' roofline times. Efficiency and headroom compare that with
    the time of the placed ops only (an op with no ceiling for its unit has no roofline time); a
    group whose time is mostly in ops not placed is not placed itself, and says so."""
    placed = g[g["predicted_time_s"].notna()]
    flops, nbytes, t = float(g["flops"].sum()), float(g["bytes"].sum()), float(g["time_s"].sum())
    t_placed = float(placed["time_s"].sum())
    pred = float(placed["predicted_time_s"].sum())
    by_bound = placed.groupby("bound")["predicted_time_s"].sum()
    units = g.groupby("unit")["time_s"].sum()
    unplaced = g[g["predicted_time_s"].isna()]
    t_unplaced = float(unplaced["time_s"].sum())
    mostly_unplaced = len(unplaced) > 0 and (t_unplaced > t_placed or not len(placed))
    bound = None if mostly_unplaced else by_bound.idxmax() if len(by_bound) and by_bound.max() > 0 else \
        (OVERHEAD if len(placed) else None)
    # a group is above its roof when it ran faster than its ops' roofline times add up to, beyond
    # the noise: one instance above its roof does not put the whole op type there
    above = bool(pred > 0 and t_placed < pred * (1 - NOISE_FLOOR))
    notes = []
    if len(unplaced):
        why = " / ".join(dict.fromkeys(n for n in unplaced["notes"].fillna("") if n))
        share = f" ({t_unplaced / t:.0%} of the time)" if t > 0 else ""
        notes.append(f"{len(unplaced)} op(s) not placed{share}" + (f": {why}" if why else ""))
    n_above = int(placed["above_roof"].fillna(False).astype(bool).sum())
    if n_above and not above:
        notes.append(f"{n_above} of {len(placed)} instance(s) above their roof; the group is not")
    return {"count": int(len(g)), "dtype": ",".join(dict.fromkeys(g["dtype"].astype(str))),
            "unit": units.idxmax() if len(units) else None, "roof_unit": _dominant(placed, "roof_unit"),
            "level": "dram" if bound == "memory" else None, "flops": flops, "bytes": nbytes,
            "intensity": flops / nbytes if nbytes else math.nan, "time_s": t,
            "achieved_flops": flops / t if t > 0 else math.nan,
            "achieved_bandwidth_Bps": nbytes / t if t > 0 else math.nan,
            "attainable_flops": float(placed["flops"].sum()) / pred if pred > 0 else math.nan,
            "efficiency": pred / t_placed if t_placed > 0 and not mostly_unplaced else math.nan,
            "predicted_time_s": pred,
            "measured_over_predicted": t_placed / pred if pred > 0 else math.inf, "lost_time_s": t_placed - pred,
            "bound": bound, "above_roof": above, "notes": "; ".join(notes)}


def _aggregate(ops: pd.DataFrame, key: str, kind: str) -> pd.DataFrame:
    total = ops["time_s"].sum()
    rows = []
    for value, g in ops.groupby(key, sort=False):
        row = {"kind": kind, "name": value, key: value, "phase": ",".join(dict.fromkeys(g["phase"])),
               **_combine(g)}
        row["time_share"] = row["time_s"] / total if total > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows).sort_values("time_s", ascending=False)


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def _totals(ops: pd.DataFrame, profiled_s: list[float], wall_s: list[float], matched_s: list[float],
            counted: int, backward: bool, torch_version: str, gpu: bool = False) -> dict:
    """Whole-model figures. profiled_time_s: the time the profiler gives the step's top-level events
    (device time on CUDA); wall_time_s: the step's span on the host clock, whose difference from
    the op time is Python and framework work between ops. op_time_coverage: per repetition, the
    time of the matched ops over the profiled time (the median over repetitions), so that a
    preemption in one repetition counts on both sides. On CUDA the step's host span is its enqueue
    time: host_bound says whether it reached 90% of the profiled device time (gpuroof.hostbound);
    on a CPU the host does the work and host_bound is None."""
    ratios = [m / p for m, p in zip(matched_s, profiled_s) if p > 0]
    c = _combine(ops)
    enqueue = _median(wall_s) if gpu else None
    placed = ops[ops["predicted_time_s"].notna()]
    unplaced = ops[ops["predicted_time_s"].isna() & (ops["time_s"] > 0)]
    not_placed = {"ops": int(len(unplaced)), "time_s": float(unplaced["time_s"].sum()),
                  "why": sorted(set(unplaced["notes"].fillna("")) - {""})}
    return {"phase": "forward+backward" if backward else "forward", "ops": c["count"],
            "ops_placed": int(ops["bound"].notna().sum()), "ops_timed": int(ops["time_s"].notna().sum()),
            "flops": c["flops"], "flop_counter_total": int(counted), "bytes": c["bytes"],
            "intensity": c["intensity"], "time_s": c["time_s"], "profiled_time_s": _median(profiled_s), "wall_time_s": _median(wall_s),
            "op_time_coverage": _median(ratios), "rep_op_time_s": matched_s, "rep_profiled_time_s": profiled_s,
            "op_time_per_rep_s": _median(matched_s), "placed_time_s": float(placed["time_s"].sum()),
            "not_placed": not_placed,
            "predicted_time_s": c["predicted_time_s"], "headroom": c["measured_over_predicted"],
            "efficiency": c["efficiency"], "achieved_flops": c["achieved_flops"],
            "achieved_bandwidth_Bps": c["achieved_bandwidth_Bps"], "attainable_flops": c["attainable_flops"],
            "bound": c["bound"], "reps": len(profiled_s), "torch": torch_version,
            "enqueue_s": enqueue, "host_bound": host_bound(enqueue, _median(profiled_s))}


def _model_row(ops: pd.DataFrame, totals: dict) -> pd.DataFrame:
    row = {"kind": "model", "name": "(whole model)", "phase": totals["phase"], **_combine(ops), "time_share": 1.0,
           "host_bound": totals.get("host_bound")}
    if totals.get("host_bound"):
        row["notes"] = "; ".join(filter(None, [row.get("notes"), host_bound_note(
            totals["enqueue_s"], totals["profiled_time_s"])]))
    return pd.DataFrame([row])


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

def _why(r: dict) -> str:
    if r["bound"] == OVERHEAD:
        return "views only: dispatch overhead, no data moved"
    if r["bound"] == "memory":
        return (f"memory-bound at {r['intensity']:.3g} FLOP/B: {si(r['achieved_bandwidth_Bps'], 'B/s')}, "
                f"{r['efficiency']:.0%} of its roofline time")
    if r["bound"] == "compute":
        return f"compute-bound ({r['unit']}): {si(r['achieved_flops'], 'FLOP/s')}, {r['efficiency']:.0%} of its roof"
    notes = r.get("notes")
    return notes if isinstance(notes, str) and notes else "not placed"


def where_table(types: pd.DataFrame, top: int = TOP) -> str:
    """Op types by the time they lose against the roofline (measured - predicted), and why."""
    rows = [("op type", "n", "time", "share", "predicted", "lost", "eff", "why")]
    for r in types.sort_values("lost_time_s", ascending=False).head(top).to_dict("records"):
        rows.append((r["name"], r["count"], fmt_time(r["time_s"]), f"{r['time_share']:.1%}",
                     fmt_time(r["predicted_time_s"]), fmt_time(r["lost_time_s"]),
                     f"{r['efficiency']:.2f}" if math.isfinite(r["efficiency"]) else "-", _why(r)))
    return "\n".join(["where the time goes (op types losing the most time against the roofline):",
                      *text_table(rows)])


def module_table(mods: pd.DataFrame, top: int = TOP) -> str:
    rows = [("module", "ops", "FLOP", "bytes", "time", "share", "eff", "bound")]
    for r in mods.head(top).to_dict("records"):
        rows.append((r["name"], r["count"], si(r["flops"], ""), si(r["bytes"], "B"), fmt_time(r["time_s"]),
                     f"{r['time_share']:.1%}", f"{r['efficiency']:.2f}" if math.isfinite(r["efficiency"]) else "-",
                     r["bound"] if isinstance(r["bound"], str) else "not placed"))
    return "\n".join(text_table(rows))

