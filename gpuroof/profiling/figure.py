"""The profile's figure: op types on the measured roofline, area by share of time, the whole model a square."""
from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gpuroof.profiling.tables import _ms

if TYPE_CHECKING:
    from gpuroof.profile import ProfileResult


def figure(res: ProfileResult) -> Any:
    """The TPU paper's figure for one model: each op type a point at its total intensity and rate,
    its area proportional to its share of the time, the whole model a square, on the measured roofs."""
    from gpuroof.plots import draw_roofline

    types = res.rows("op_type")
    on_axes = types[(types["flops"] > 0) & (types["time_s"] > 0)]
    off = types[~types.index.isin(on_axes.index)].sort_values("time_s", ascending=False)
    t = res.totals
    pts = [{"x": r["intensity"], "y": r["achieved_flops"], "dtype": r["dtype"].split(",")[0],
            "kernel": "op type (area: share of time)", "label": f"{r['name'].replace('aten::', '')} "
            f"{r['time_share']:.0%}", "valid": True, "above": bool(r["above_roof"]),
            "size": 30 + 900 * r["time_share"]} for r in on_axes.to_dict("records")]
    model = res.rows("model").iloc[0]
    pts.append({"x": model["intensity"], "y": model["achieved_flops"], "dtype": str(model["dtype"]).split(",")[0],
                "kernel": "whole model", "label": "model", "valid": True, "above": False, "size": 140})
    notes = []
    if len(off):
        big = off[off["time_share"] >= 0.005]
        listed = ", ".join(f"{n.replace('aten::', '')} {s:.0%}" for n, s in zip(big["name"], big["time_share"]))
        rest = f"{', ' if listed else ''}{len(off) - len(big)} more under 0.5%" if len(off) > len(big) else ""
        notes.append(textwrap.fill(f"Zero-FLOP op types are not on the log axes ({off['time_share'].sum():.0%} "
                                   f"of the time): {listed}{rest}.", 140))
    notes.append(f"{t['phase']}, op time {_ms(t['time_s'])}, roofline-predicted {_ms(t['predicted_time_s'])} "
                 f"(headroom {t['headroom']:.2f}x).")
    kernels = pd.DataFrame(pts)
    drawn = draw_roofline(res.meta, kernels.drop(columns=["size"]), "ops",
                          title=f"{res.name} on {res.device['name']}: op types on the measured roofline",
                          notes=notes)
    for coll in drawn.fig.axes[0].collections:
        if coll.get_gid() == "kernels":
            finite = kernels[np.isfinite(kernels["x"]) & np.isfinite(kernels["y"]) & (kernels["x"] > 0)
                             & (kernels["y"] > 0)]
            coll.set_sizes(finite["size"].to_numpy(float))
            coll.set_alpha(0.7)
    drawn.name = "profile"
    drawn.caption = (f"{res.name}: each op type at its total FLOPs / bytes and FLOPs / time, area proportional "
                     f"to its share of the op time; the square is the whole model. " + drawn.caption)
    return drawn

