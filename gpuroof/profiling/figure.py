"""The profile's figure: op types on the measured roofline, area by share of time, the whole model a square."""
from __future__ import annotations

import textwrap
from typing import Any, Protocol, Sequence

import pandas as pd

from gpuroof.units import fmt_time


class ProfileResult(Protocol):
    """What the figure reads of a profile (gpuroof.profile.ProfileResult is one)."""

    name: str
    totals: dict
    device: dict
    meta: dict

    def rows(self, kind: str) -> pd.DataFrame: ...

    @property
    def quality(self) -> dict: ...


#: Marker area (points²) of an op type holding all of its model's time; the area scales with the share.
FULL_AREA = 900.0
MIN_AREA = 12.0  # an op type with a sliver of the time stays visible
MODEL_AREA = 140.0
#: Markers of the op types and of the whole model of each profile drawn together (prefill, decode, ...).
MARKER_PAIRS = (("o", "s"), ("^", "D"), ("v", "P"), ("<", "X"))
PLACEMENT = ["bound", "roof_unit", "unit", "level"]


def area(share: float) -> float:
    """Marker area of an op type: proportional to its share of the model's op time."""
    return max(MIN_AREA, FULL_AREA * float(share))


def points(res: "ProfileResult", prefix: str = "", markers: tuple[str, str] = MARKER_PAIRS[0]) -> pd.DataFrame:
    """One point per op type with FLOPs (at its total intensity and rate, coloured by the roof its
    placement chose, ringed only when the op type as a whole beat its roof) and the whole model."""
    types = res.rows("op_type")
    on_axes = types[(types["flops"] > 0) & (types["time_s"] > 0)]
    pts = [{"x": r["intensity"], "y": r["achieved_flops"], "dtype": str(r["dtype"]).split(",")[0],
            "kernel": f"{prefix}op type (area: share of time)", "marker": markers[0],
            "label": f"{prefix}{r['name'].replace('aten::', '')} {r['time_share']:.0%}", "valid": True,
            "above": bool(r["above_roof"]), "size": area(r["time_share"]),
            **{c: r[c] for c in PLACEMENT}} for r in on_axes.to_dict("records")]
    model = res.rows("model").iloc[0]
    pts.append({"x": model["intensity"], "y": model["achieved_flops"], "dtype": str(model["dtype"]).split(",")[0],
                "kernel": f"{prefix}whole model", "marker": markers[1], "label": f"{prefix}model", "valid": True,
                "above": bool(model["above_roof"]), "size": MODEL_AREA, **{c: model[c] for c in PLACEMENT}})
    out = pd.DataFrame(pts)
    for c in PLACEMENT:  # None stays None (pandas 3 would make a string column of NaN)
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


def _off_axes(res: "ProfileResult", prefix: str = "") -> str | None:
    types = res.rows("op_type")
    off = types[~((types["flops"] > 0) & (types["time_s"] > 0))].sort_values("time_s", ascending=False)
    if not len(off):
        return None
    big = off[off["time_share"] >= 0.005]
    listed = ", ".join(f"{n.replace('aten::', '')} {s:.0%}" for n, s in zip(big["name"], big["time_share"]))
    rest = f"{', ' if listed else ''}{len(off) - len(big)} more under 0.5%" if len(off) > len(big) else ""
    return textwrap.fill(f"{prefix}zero-FLOP op types are not on the log axes ({off['time_share'].sum():.0%} "
                         f"of the time): {listed}{rest}.", 150)


def _headroom(res: "ProfileResult", prefix: str = "") -> str:
    t = res.totals
    return (f"{prefix}{t['phase']}, op time {fmt_time(t['time_s'])}, roofline-predicted {fmt_time(t['predicted_time_s'])} "
            f"(headroom {t['headroom']:.2f}x).")


def _busy(results: Sequence["ProfileResult"]) -> list[str]:
    return [f"Not quiet ({r.name}): " + "; ".join(r.quality["reasons"]) + "."
            for r in results if r.quality.get("ok") is False]


def figure(res: "ProfileResult") -> Any:
    """The TPU paper's figure for one model: each op type a point at its total intensity and rate,
    its area proportional to its share of the time, the whole model a square, on the measured roofs."""
    from gpuroof.plots import draw_roofline

    notes = _busy([res]) + [n for n in (_off_axes(res), _headroom(res)) if n]
    drawn = draw_roofline(res.meta, points(res), "ops",
                          title=f"{res.name} on {res.device['name']}: op types on the measured roofline",
                          notes=notes)
    drawn.name = "profile"
    drawn.caption = (f"{res.name}: each op type at its total FLOPs / bytes and FLOPs / time, area proportional "
                     f"to its share of the op time; the square is the whole model. " + drawn.caption)
    return drawn


def figure_together(results: Sequence["ProfileResult"], title: str) -> Any:
    """Several profiles of one device on one roofline (a decoder's prefill and decode step): each
    one's op types and whole model with markers of their own, areas by share of that profile's time."""
    from gpuroof.plots import draw_roofline

    if not results or len(results) > len(MARKER_PAIRS):
        raise ValueError(f"results: 1 to {len(MARKER_PAIRS)} profiles, got {len(results)}")
    pts = pd.concat([points(r, f"{r.name}: ", MARKER_PAIRS[i]) for i, r in enumerate(results)], ignore_index=True)
    notes = _busy(results) + [_headroom(r, f"{r.name}: ") for r in results]
    drawn = draw_roofline(results[0].meta, pts, "ops", title=title, notes=notes)
    drawn.name = "profiles"
    drawn.caption = (f"{', '.join(r.name for r in results)}: each op type at its total FLOPs / bytes and FLOPs / "
                     "time, area proportional to its share of its profile's op time; each whole model has its "
                     "own marker. " + drawn.caption)
    return drawn
