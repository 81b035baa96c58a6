"""The prediction figure: a profile's ops on the source roofline as measured and on a target's as
`gpuroof predict` predicts them, an arrow from each measured point to its predicted one."""
from __future__ import annotations

import math

import pandas as pd

from gpuroof.plots.common import RC, Drawn, _freeze_layout, _new_figure, fit_legend, unit_colour
from gpuroof.plots.roofline import footnote, roof_segments, roofline_axes
from gpuroof.roofline import Roofline
from gpuroof.units import si

#: The ops that take the most predicted or measured time are drawn; the rest are in the CSV.
MAX_OPS = 16
#: Of those, the ones labelled with their name (the largest predicted times).
MAX_LABELS = 6

SOURCE_STYLE = {"color": "#9a9a9a", "linestyle": (0, (4, 2)), "linewidth": 1.3}
TARGET_STYLE = {"color": "#1a1a1a", "linestyle": "-", "linewidth": 1.6}


def _drawn_ops(rows: pd.DataFrame) -> pd.DataFrame:
    """Predicted ops with FLOPs and bytes (a point needs both), the MAX_OPS largest by the larger of
    their measured and predicted time, largest first."""
    ok = ~rows["carried_over"].astype(bool) & (rows["flops"] > 0) & (rows["bytes"] > 0) \
        & (rows["measured_time_s"] > 0) & (rows["predicted_time_s"] > 0)
    r = rows[ok].copy()
    r["weight"] = r[["measured_time_s", "predicted_time_s"]].max(axis=1)
    return r.sort_values("weight", ascending=False).head(MAX_OPS)


def _roof_lines(ax, roof: Roofline, x_lo: float, x_hi: float, style: dict, units: set[str]) -> None:
    """The roofline's DRAM slope and the compute roofs of the units the drawn ops use."""
    ceilings = {"bandwidth": {k: v for k, v in roof.bandwidth.items() if k == "dram"},
                "compute": {k: v for k, v in roof.compute.items() if k in units}}
    for seg in roof_segments(ceilings, x_lo, x_hi):
        ax.plot(seg.x, seg.y, **style, zorder=2)
        if seg.kind == "compute":
            ax.annotate(f"{seg.name} {si(seg.value, 'FLOP/s', 3)}", (x_hi, seg.value), xytext=(-2, 2),
                        textcoords="offset points", ha="right", va="bottom", fontsize=6.5, color=style["color"])


def prediction_figure(source: Roofline, target: Roofline, rows: pd.DataFrame, *, model: str,
                      source_name: str, target_name: str) -> Drawn | None:
    """`rows`: predict.predict_ops's table for one target. Each drawn op is a hollow marker at its
    measured rate on the source (FLOPs / measured time, at its intensity) and a filled one at its
    predicted rate on the target, joined by an arrow; both rooflines' DRAM slope and the compute
    roofs of the ops' units are drawn, the source's dashed. None when no op has a point to draw
    (every op carried over as measured, or without FLOPs or bytes)."""
    import matplotlib as mpl
    from matplotlib.lines import Line2D

    ops = _drawn_ops(rows)
    if ops.empty:
        return None
    x = ops["flops"] / ops["bytes"]
    y_src = ops["flops"] / ops["measured_time_s"]
    y_tgt = ops["flops"] / ops["predicted_time_s"]
    units = set(ops["unit"].dropna()) | set(ops["target_unit"].dropna())
    tops = [r.compute[u] for r in (source, target) for u in units if u in r.compute]
    x_lo = 10 ** math.floor(math.log10(min(x.min(), 0.05)))
    x_hi = 10 ** math.ceil(math.log10(max(x.max() * 2, max(tops) / min(source.bandwidth["dram"],
                                                                      target.bandwidth["dram"]) * 4)))
    y_lo = 10 ** math.floor(math.log10(min(y_src.min(), y_tgt.min()) / 2))
    y_hi = 10 ** math.ceil(math.log10(max(tops + [y_src.max(), y_tgt.max()]) * 1.5))

    with mpl.rc_context(RC):
        fig = _new_figure(7.2, 5.0)
        ax = roofline_axes(fig, x_lo, x_hi, y_lo, y_hi)
        _roof_lines(ax, source, x_lo, x_hi, SOURCE_STYLE, units)
        _roof_lines(ax, target, x_lo, x_hi, TARGET_STYLE, units)
        for (i, op), xi, ys, yt in zip(ops.iterrows(), x, y_src, y_tgt):
            colour = unit_colour(op["target_unit"] or op["unit"])
            ax.annotate("", xy=(xi, yt), xytext=(xi, ys), zorder=3,
                        arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 0.9, "shrinkA": 3, "shrinkB": 3})
            ax.plot([xi], [ys], marker="o", mfc="white", mec=colour, ms=5, zorder=4)
            ax.plot([xi], [yt], marker="o", color=colour, ms=5, zorder=5)
        for _, op in ops.sort_values("predicted_time_s", ascending=False).head(MAX_LABELS).iterrows():
            ax.annotate(str(op["name"])[:28], (op["flops"] / op["bytes"], op["flops"] / op["predicted_time_s"]),
                        xytext=(4, 3), textcoords="offset points", fontsize=7, zorder=6)
        ax.set_title(f"{model}: measured on the source, predicted on the target")
        handles = [Line2D([], [], **SOURCE_STYLE, label=f"source roofline: {source_name}"),
                   Line2D([], [], **TARGET_STYLE, label=f"target roofline: {target_name}"),
                   Line2D([], [], marker="o", mfc="white", mec="#444444", ls="", label="op as measured (source)"),
                   Line2D([], [], marker="o", color="#444444", ls="", label="op as predicted (target)")]
        shown = float(ops["predicted_time_s"].sum())
        total = float(rows.loc[~rows["carried_over"].astype(bool), "predicted_time_s"].sum())
        note = footnote([f"the {len(ops)} ops with the most time ({si(shown, 's', 3)} of the "
                         f"{si(total, 's', 3)} predicted); the rest, and what is carried over as measured, "
                         "are in the CSV"], fig.get_figwidth())
        band = (note.count("\n") + 1) * 7.5 * 1.35 / 72 + 0.12  # inches: the note's own band at the foot
        fig.set_figheight(fig.get_figheight() + band)
        fig.get_layout_engine().set(rect=(0, band / fig.get_figheight(), 1, 1 - band / fig.get_figheight()))
        fig.text(0.01, 0.06 / fig.get_figheight(), note, fontsize=7.5, color="#444444", ha="left", va="bottom")
        legend = fit_legend(fig, handles, ncols=2)
        _freeze_layout(fig)
        lo = band / fig.get_figheight()  # the legend above the note's band, not on it
        legend.set_bbox_to_anchor((0, lo, 1, 1 - lo), transform=fig.transFigure)
    return Drawn("predict", fig, note)
