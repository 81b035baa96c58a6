"""Where the time goes: workloads ranked by lost time (measured minus roofline-predicted), with the roofline's reason."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gpuroof.errors import UsageError
from gpuroof.plots.common import RC, Drawn, _new_figure, as_run, workload_points
from gpuroof.plots.roofline import bounding_roof, roof_colour, short_labels, unit_name
from gpuroof.results import Run
from gpuroof.roofline import known

MAX_BARS = 15  # past this many workloads the figure shows those that lose the most; the table has the rest

#: At this share of its roof a kernel is done where it is: only a higher roof (another unit, data
#: kept in a nearer cache) or less work makes it faster, and the advice says so.
NEAR_ROOF = 0.85


def advice(row: dict, meta: dict) -> str:
    """What the roofline says to do about one placed workload, in the device's own words."""
    cpu = meta.get("backend") == "cpu"
    bound = row.get("bound")
    eff = row.get("efficiency")
    share = f"{eff:.0%} of its roof" if isinstance(eff, (int, float)) and math.isfinite(eff) else "below its roof"
    near = isinstance(eff, (int, float)) and math.isfinite(eff) and eff >= NEAR_ROOF
    if bound == "memory":
        level = row.get("level") if isinstance(row.get("level"), str) and row.get("level") else "dram"
        if near:
            return (f"memory-bound ({level.upper()}) at {share}: at its roof; only fewer bytes (fusion, smaller "
                    "dtypes, reuse from cache) make it faster")
        return (f"memory-bound ({level.upper()}, {share}): raise its intensity (reuse data from cache or "
                "registers, larger tiles) or fuse it with its neighbours")
    if bound == "compute":
        unit = row.get("roof_unit") if isinstance(row.get("roof_unit"), str) else row.get("unit")
        unit = str(unit or "?")
        matrix = f"{unit.split('-')[0]}-matrix"
        fixes = []
        if near:
            faster = (f"move it to the matrix unit ({unit_name(matrix)})" if not unit.endswith("-matrix") and matrix
                      in known(meta.get("ceilings")).compute else "do less work (fewer FLOPs)")
            return f"compute-bound on the {unit_name(unit)} unit at {share}: at its roof; {faster}"
        if not unit.endswith("-matrix"):
            fixes.append("vectorize its inner loop" if cpu else "use wider (packed) loads and math")
            if matrix in known(meta.get("ceilings")).compute:
                fixes.append(f"move it to the matrix unit ({unit_name(matrix)})")
        fixes.append("use every core (threads, affinity)" if cpu else "fix occupancy (registers, shared memory, "
                                                                      "block size)")
        return f"compute-bound on the {unit_name(unit)} unit ({share}): " + ", or ".join(fixes)
    return "not placed: the run has no roof for its unit"


def lost_time(work: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Valid, placed workloads ranked by lost time = measured − predicted (seconds per call), with
    their label, bounding roof and the roofline's advice. A workload faster than predicted loses none."""
    case = work["case"] if "case" in work else pd.Series([""] * len(work), index=work.index)
    w = work.assign(label=short_labels(work["name"], case), ref=range(1, len(work) + 1))  # as in the table
    w = w[w["valid"]].copy()
    for c in ("time_s", "predicted_time_s", "efficiency"):
        w[c] = pd.to_numeric(w[c], errors="coerce") if c in w else np.nan
    w = w[np.isfinite(w["time_s"]) & np.isfinite(w["predicted_time_s"])]
    w["lost_s"] = (w["time_s"] - w["predicted_time_s"]).clip(lower=0.0)
    roof = known(meta["ceilings"])
    w["roof"] = [bounding_roof(r, roof) for r in w.itertuples()]
    w["advice"] = [advice(r, meta) for r in w.to_dict("records")]
    return w.sort_values("lost_s", ascending=False, kind="stable").reset_index(drop=True)


def _seconds(t: float) -> str:
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if abs(t) >= scale:
            return f"{t / scale:.3g} {unit}"
    return "0 s"


def losttime_figure(run: Run) -> Drawn:
    """One bar per workload: measured time split into the roofline's prediction (pale) and the time
    lost beyond it (coloured by the roof that bounds it), most lost first."""
    import matplotlib as mpl
    from matplotlib.patches import Patch

    run = as_run(run)
    work = workload_points(run)
    if work is None:
        raise UsageError(f"{run.path}: run has no workloads.csv (no bench was run): no lost time to rank")
    lt = lost_time(work, run.meta)
    if lt.empty:
        raise UsageError(f"{run.path / 'workloads.csv'}: no valid workload with a predicted time")
    top = lt.head(MAX_BARS)
    scale, unit = next(((s, u) for s, u in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))
                        if top["time_s"].max() >= s), (1e-9, "ns"))
    with mpl.rc_context(RC):
        fig = _new_figure(8.8, 1.3 + 0.36 * len(top))
        ax = fig.add_subplot()
        y = np.arange(len(top))
        pred = np.minimum(top["predicted_time_s"], top["time_s"]) / scale
        ax.barh(y, pred, color="#d9d9d9", edgecolor="none", height=0.7, gid="predicted")
        colours = [roof_colour(r) for r in top["roof"]]
        ax.barh(y, top["lost_s"] / scale, left=pred, color=colours, edgecolor="none", height=0.7, gid="lost")
        for i, r in enumerate(top.itertuples()):
            eff = f", {r.efficiency:.0%} of roof" if math.isfinite(r.efficiency) else ""
            ax.text(r.time_s / scale, i, f"  lost {_seconds(r.lost_s)}{eff}", va="center", ha="left", fontsize=7.5,
                    color="#333333", gid=f"label:lost:{r.label}")
        ax.set_yticks(y, [f"{r.ref}  {r.label}" for r in top.itertuples()])
        ax.invert_yaxis()
        ax.set_xlim(0, top["time_s"].max() / scale * 1.45)  # room for the text right of the longest bar
        ax.set_xlabel(f"time per call ({unit}): predicted by the roofline (grey) + lost beyond it (colour)")
        ax.grid(axis="y", visible=False)
        # a figure title, centred on the whole width: long workload labels push the axes to the right
        fig.suptitle(f"Where the time goes: {run.meta['device'].get('name', '?')}, workloads by lost time",
                     fontsize=RC["axes.titlesize"])
        roofs = list(dict.fromkeys(top["roof"]))
        handles = [Patch(color="#d9d9d9", label="predicted (roofline)")]
        levels = run.ceilings.bandwidth
        handles += [Patch(color=roof_colour(r), label="lost, bound by " + (
            "?" if r is None else r.upper() if r in levels else unit_name(r))) for r in roofs]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), frameon=False)
    rest = len(lt) - len(top)
    caption = ("Valid workloads ranked by lost time per call (measured minus the roofline's prediction "
               "max(FLOPs / compute, bytes / bandwidth)); numbers as in the workloads table."
               + (f" {rest} workload(s) that lose less are in the table only." if rest else ""))
    return Drawn("losttime", fig, caption)
