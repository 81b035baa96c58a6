"""The roofline figure: each roof labelled once on its own line, points coloured by the roof that bounds them."""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from gpuroof.plots.common import (INVALID_COLOUR, MARKERS, RC, Drawn, _bool, _finite, _freeze_layout, _log_axis,
                                  _new_figure, as_run, level_colour, medians, optional_table, samples, unit_colour,
                                  workload_points)
from gpuroof.plots.labels import LabelPlacer, label_box
from gpuroof.results import Run
from gpuroof.roofline import Roofline, known
from gpuroof.units import si

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: More labelled points than this and only those that lose the most time keep a label (the rest are
#: in the workloads table): past a handful, direct labels crowd out the roofs they are read against.
MAX_TEXT_LABELS = 8

#: A theoretical roof is drawn only when the measured one reaches less than this share of it: a
#: dashed line on top of the solid one adds nothing that the label's percentage does not say.
THEORETICAL_SHOWN = 0.8

UNBOUND_COLOUR = "#9a9a9a"  # a point that could not be placed (no roof for its unit)
HOST_BOUND_COLOUR = "#b8860b"  # the dashed square around a host-bound workload point

#: Roof labels stand on a white ground: a line running under one does not strike the text through.
GROUND = {"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85}


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Roof:
    """One straight roof segment, given by its exact end points (a ridge is always one of them)."""

    kind: str  # "compute" or "bandwidth"
    name: str  # compute unit or memory level
    value: float  # FLOP/s or B/s
    source: str  # "measured" or "theoretical"
    x: tuple[float, float]  # FLOP/byte
    y: tuple[float, float]  # FLOP/s

    @property
    def gid(self) -> str:
        return f"roof:{self.source}:{self.kind}:{self.name}"


def roof_segments(ceilings: dict, x_lo: float, x_hi: float, source: str = "measured",
                  partner: dict | None = None) -> list[Roof]:
    """Compute roofs (horizontal) and bandwidth slopes, each cut at its ridge with the other family.

    A compute roof starts where it meets the steepest bandwidth slope; with DRAM alone that is its
    DRAM ridge, peak / bandwidth, exactly. A bandwidth slope runs up to the highest compute roof.
    Where one family is unknown (a theoretical bandwidth nobody publishes, as on a CPU), `partner`
    (the measured ceilings) supplies it, so the known roofs still have an end.
    """
    comp = _finite(ceilings.get("compute"))
    bw = _finite(ceilings.get("bandwidth"))
    geo_comp = comp or _finite((partner or {}).get("compute"))
    geo_bw = bw or _finite((partner or {}).get("bandwidth"))
    if not geo_comp or not geo_bw:
        return []
    top, widest = max(geo_comp.values()), max(geo_bw.values())
    roofs = []
    for level, b in bw.items():
        roofs.append(Roof("bandwidth", level, b, source, (x_lo, top / b), (b * x_lo, top)))
    for unit, p in comp.items():
        roofs.append(Roof("compute", unit, p, source, (p / widest, max(x_hi, p / widest)), (p, p)))
    return roofs


def unit_name(unit: str) -> str:
    """'float32' -> 'float32 vector', 'float16-matrix' -> 'float16 matrix': the unit, as a reader names it."""
    return unit.replace("-matrix", " matrix") if unit.endswith("-matrix") else f"{unit} vector"


def bounding_roof(row: Any, roof: Roofline) -> str | None:
    """The roof a point is read against: 'dram' (or another level) when memory-bound, its compute
    unit when compute-bound, None when it could not be placed."""
    bound = getattr(row, "bound", None)
    if bound not in ("memory", "compute") and "bound" not in getattr(row, "_fields", ("bound",)):
        # points drawn without a placement (an experiment's own table): place them by the model here
        unit = next((u for u in (getattr(row, "roof_unit", None), getattr(row, "unit", None), getattr(row, "dtype", None))
                     if isinstance(u, str) and u in roof.compute), None)
        level = roof.reference_level()
        x = getattr(row, "x", None)
        if unit is None or level is None or x is None or not math.isfinite(x):
            return None
        return level if roof.bound(x, unit, level) == "memory" else unit
    if bound == "memory":
        level = getattr(row, "level", None)
        return level if isinstance(level, str) and level else roof.reference_level()
    if bound == "compute":
        unit = getattr(row, "roof_unit", None)
        return unit if isinstance(unit, str) and unit else getattr(row, "unit", None)
    return None


def roof_colour(roof: str | None) -> str:
    if not isinstance(roof, str):  # None, or the NaN pandas makes of it
        return UNBOUND_COLOUR
    return unit_colour(roof) if roof not in ("dram", "l1", "l2", "l3", "llc", "shared") else level_colour(roof)


# --------------------------------------------------------------------------- points


def _kernels_from_sweep(pts: pd.DataFrame, roof: Roofline) -> pd.DataFrame:
    names = {"ro": "sweep, read-only", "rw": "sweep, read-write"}
    k = pts[pts["intensity_flop_per_byte"] > 0]
    x = k["intensity_flop_per_byte"].to_numpy(float)
    level = roof.reference_level()
    bound = ["memory" if d not in roof.compute or level is None else roof.bound(xi, d, level)
             for d, xi in zip(k["dtype"].astype(str), x)]
    return pd.DataFrame({
        "x": x, "y": k["flops_per_s"].to_numpy(float), "dtype": k["dtype"].astype(str).to_numpy(),
        "kernel": k["variant"].map(lambda v: names.get(v, v)).to_numpy(), "label": [None] * len(k),
        "valid": k["valid"].to_numpy(bool), "above": np.zeros(len(k), bool), "bound": bound,
        "roof_unit": k["dtype"].astype(str).to_numpy(), "level": level})


def short_labels(names: Iterable[str], cases: Iterable[str]) -> list[str]:
    """'mlp' + only what differs between the cases of that workload: 'mlp B=256' rather than
    'mlp blas B=256 d=2048 L=4' when every mlp case has the same impl, width and depth."""
    names, cases = [str(n) for n in names], ["" if pd.isna(c) else str(c) for c in cases]
    tokens: dict[str, list[list[str]]] = {}
    for n, c in zip(names, cases):
        tokens.setdefault(n, []).append(c.split())
    common = {n: set.intersection(*(set(t) for t in ts)) if len(ts) > 1 else set(sum(ts, []))
              for n, ts in tokens.items()}
    out = []
    for n, c in zip(names, cases):
        keep = [t for t in c.split() if t not in common[n]]
        out.append(" ".join([n, *keep]))
    return out


#: A direct label longer than this keeps the workload's name and its number only: the number finds
#: the full case in the workloads table, and a long label hides the roofs it is read against.
LABEL_CHARS = 18


def point_label(ref: int, label: str) -> str:
    """'12 mlp B=256': the row number in the workloads table, the name and what differs, when short."""
    name, _, rest = label.partition(" ")
    first = rest.split(" ")[0] if rest else ""
    text = f"{ref} {name} {first}".strip()
    return text if len(text) <= LABEL_CHARS else f"{ref} {name}"


def _col(w: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    return w[name] if name in w else pd.Series([default] * len(w), index=w.index)


def _kernels_from_workloads(w: pd.DataFrame) -> pd.DataFrame:
    w = w.copy()
    label = [point_label(i, lab) for i, lab in enumerate(short_labels(w["name"], _col(w, "case", "")), start=1)]
    time_s = pd.to_numeric(_col(w, "time_s", math.nan), errors="coerce")
    pred = pd.to_numeric(_col(w, "predicted_time_s", math.nan), errors="coerce")
    return pd.DataFrame({
        "x": pd.to_numeric(w["intensity"], errors="coerce").to_numpy(float),
        "y": pd.to_numeric(w["achieved_flops"], errors="coerce").to_numpy(float),
        "dtype": w["dtype"].astype(str).to_numpy(), "kernel": w["name"].astype(str).to_numpy(),
        "label": label, "valid": w["valid"].to_numpy(bool), "above": w["above_roof"].to_numpy(bool),
        # the host enqueued as slowly as the device ran (gpuroof.hostbound); empty on the CPU
        "host_bound": _bool(_col(w, "host_bound")).fillna(False).to_numpy(bool),
        "bound": _col(w, "bound").to_numpy(object), "roof_unit": _col(w, "roof_unit", None).to_numpy(object),
        "unit": _col(w, "unit").to_numpy(object), "level": _col(w, "level").to_numpy(object),
        "lost_s": (time_s - pred).to_numpy(float),
        "efficiency": pd.to_numeric(_col(w, "efficiency", math.nan), errors="coerce").to_numpy(float),
        "ref": [str(i) for i in range(1, len(w) + 1)]})  # the row number in workloads.csv and the report


def _kernels_from_matrix(m: pd.DataFrame | None) -> pd.DataFrame | None:
    """The GEMM sweep (matrix.csv), one point per unit and size at its median time."""
    if m is None or not {"unit", "dtype", "n", "time_s", "flops", "bytes"} <= set(m.columns):
        return None
    m = m[pd.to_numeric(m["time_s"], errors="coerce").notna()].copy()  # a unit the library refused: no time
    m["valid"] = _bool(m["valid"]).fillna(False).astype(bool) if "valid" in m else True
    g = m.groupby(["unit", "n"], sort=False).agg(dtype=("dtype", "first"), flops=("flops", "first"),
                                                 bytes=("bytes", "first"), time_s=("time_s", "median"),
                                                 valid=("valid", "all")).reset_index()
    return pd.DataFrame({
        "x": (g["flops"] / g["bytes"]).to_numpy(float), "y": (g["flops"] / g["time_s"]).to_numpy(float),
        "dtype": g["dtype"].astype(str).to_numpy(), "kernel": ["GEMM sweep (matrix unit)"] * len(g),
        "label": [None] * len(g), "valid": g["valid"].to_numpy(bool), "above": np.zeros(len(g), bool),
        "bound": "compute", "roof_unit": g["unit"].astype(str).to_numpy()})


def labelled(k: pd.DataFrame, limit: int = MAX_TEXT_LABELS) -> pd.Series:
    """Which points keep a direct label: all when there are few; past `limit`, those that lose the
    most time (measured minus predicted), then the least efficient, up to `limit`."""
    has = k["label"].notna() & (k["label"].astype(str) != "")
    if int(has.sum()) <= limit:
        return has
    lost = k["lost_s"] if "lost_s" in k else pd.Series(math.nan, index=k.index)
    eff = k["efficiency"] if "efficiency" in k else pd.Series(math.nan, index=k.index)
    order = list(lost[has].fillna(-math.inf).sort_values(ascending=False).index[: limit - limit // 3])
    order += [i for i in eff[has].fillna(math.inf).sort_values().index if i not in order][: limit - len(order)]
    return pd.Series(k.index.isin(order), index=k.index)


# --------------------------------------------------------------------------- drawing


def draw_roofline(meta: dict, kernels: pd.DataFrame, kernel_kind: str = "workloads",
                  title: str | None = None, notes: Iterable[str] = ()) -> Drawn:
    """The roofline as Nsight Compute and Intel Advisor draw it: measured roofs solid, each labelled
    once along its own line with its value and its share of theoretical; compute units coloured by
    family (vector blues, matrix oranges), memory levels in greys ordered by distance from the cores;
    points shaped by workload and coloured by the roof that bounds them; a theoretical roof dashed
    only where the measured one falls well short of it.

    `kernels` has columns x (FLOP/byte), y (FLOP/s), dtype, kernel, label (text or None), valid, above,
    and optionally bound / roof_unit / level (which roof bounds the point), lost_s, efficiency and size
    (a marker area per point, points²) and marker (a matplotlib marker per kind).
    """
    import matplotlib as mpl
    from matplotlib.lines import Line2D

    measured = meta["ceilings"]
    theo = meta.get("theoretical") or {}
    notes = list(notes)
    finite = np.isfinite(kernels["x"]) & np.isfinite(kernels["y"]) & (kernels["x"] > 0) & (kernels["y"] > 0)
    dropped = int((~finite).sum())
    if dropped:
        notes.append(f"{dropped} {kernel_kind} point(s) with zero or unknown intensity or rate are not on "
                     "the log axes.")
    k = kernels[finite].reset_index(drop=True)

    roof = known(measured)
    ref = roof.reference_level()  # as_run made sure there is a compute and a bandwidth ceiling
    rid = roof.ridges(ref)
    meas_comp, meas_bw = _finite(measured["compute"]), _finite(measured["bandwidth"])
    theo_comp, theo_bw = _finite(theo.get("compute")), _finite(theo.get("bandwidth"))
    shown_theo = {"compute": {u: v for u, v in theo_comp.items()
                              if u not in meas_comp or meas_comp[u] / v < THEORETICAL_SHOWN},
                  "bandwidth": {lv: v for lv, v in theo_bw.items()
                                if lv not in meas_bw or meas_bw[lv] / v < THEORETICAL_SHOWN}}
    xs = [*k["x"], *rid.values(), *known(shown_theo).ridges(ref).values()]
    x_lo = 10.0 ** math.floor(math.log10(min(xs) / 10))  # room for the slopes left of every point
    x_hi = 10.0 ** math.ceil(math.log10(max(xs) * 3))
    y_hi = max([*meas_comp.values(), *shown_theo["compute"].values(), *k["y"]]) * 4
    dram = meas_bw[ref]
    y_lo = min([*(k["y"] / 3), dram * x_lo * 3])
    y_lo = 10.0 ** math.floor(math.log10(max(y_lo, y_hi * 1e-6)))

    k = k.assign(roof=[bounding_roof(r, roof) for r in k.itertuples()])
    k["colour"] = [roof_colour(r) for r in k["roof"]]
    show = labelled(k)
    k["text"] = k["label"].where(show, None)
    n_hidden = int((k["label"].notna() & ~show).sum())

    with mpl.rc_context(RC):
        fig = _new_figure(8.8, 6.4)
        ax = roofline_axes(fig, x_lo, x_hi, y_lo, y_hi)
        ax.set_title(title or f"Roofline: {meta['device'].get('name', '?')} ({meta.get('backend', '?')})")

        roofs = roof_segments(measured, x_lo, x_hi, "measured") + \
            roof_segments(shown_theo, x_lo, x_hi, "theoretical", partner=measured)
        for r in roofs:
            colour = level_colour(r.name) if r.kind == "bandwidth" else unit_colour(r.name)
            is_meas = r.source == "measured"
            (line,) = ax.plot(r.x, r.y, color=colour, lw=(2.0 if "matrix" in r.name else 1.7) if is_meas else 1.0,
                              ls="-" if is_meas else (0, (4, 3)), alpha=1.0 if is_meas else 0.6,
                              zorder=3 if is_meas else 2, solid_capstyle="butt")
            line.set_gid(r.gid)

        for unit, x in rid.items():  # ridge points: where each measured compute roof meets the DRAM slope
            (m,) = ax.plot([x], [meas_comp[unit]], marker="o", ms=5, mfc="white", mec=unit_colour(unit), mew=1.3,
                           zorder=5, ls="none")
            m.set_gid(f"ridge:{unit}")

        kinds = list(dict.fromkeys(k["kernel"]))
        given = dict(zip(k["kernel"], k["marker"])) if "marker" in k else {}  # a marker per kind, when given
        markers = {n: given[n] if isinstance(given.get(n), str) else MARKERS[i % len(MARKERS)]
                   for i, n in enumerate(kinds)}
        size = 52 if kernel_kind == "workloads" else 30
        for name in kinds:
            sel = k[k["kernel"] == name]
            sizes = sel["size"].to_numpy(float) if "size" in sel else size  # an area per point, when given
            coll = ax.scatter(sel["x"], sel["y"], c=list(sel["colour"]), marker=markers[name], s=sizes,
                              edgecolors="white", linewidths=0.6, zorder=4)
            coll.set_gid(f"kernels:{name}")
        bad = k[~k["valid"]]
        if len(bad):
            ax.scatter(bad["x"], bad["y"], marker="x", s=60, color=INVALID_COLOUR, lw=1.4, zorder=5)
        up = k[k["above"]]
        if len(up):
            ax.scatter(up["x"], up["y"], marker="o", s=150, facecolor="none", edgecolor=INVALID_COLOUR, lw=1.0,
                       zorder=5)
        host = k[k["host_bound"]] if "host_bound" in k else k.iloc[:0]
        if len(host):
            coll = ax.scatter(host["x"], host["y"], marker="s", s=190, facecolor="none", edgecolor=HOST_BOUND_COLOUR,
                              lw=1.2, ls="--", zorder=5)
            coll.set_gid("host-bound")

        # the legend under the plot: what the markers are, what the colours are; roofs are labelled on the plot
        handles = [Line2D([], [], ls="none", marker=markers[n], mfc="#555555", mec="white", ms=7, label=n)
                   for n in kinds]
        for roof in dict.fromkeys(r if isinstance(r, str) else None for r in k["roof"]):
            what = "not placed" if roof is None else \
                f"bound by {roof.upper() if roof in meas_bw else unit_name(roof)}"
            handles.append(Line2D([], [], ls="none", marker="s", mfc=roof_colour(roof), mec="none", ms=7, label=what))
        if len(bad):
            handles.append(Line2D([], [], ls="none", marker="x", color=INVALID_COLOUR, label="invalid (check failed)"))
        if len(up):
            handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec=INVALID_COLOUR, ms=9,
                                  label="above its roof"))
        if len(host):
            handles.append(Line2D([], [], ls="none", marker="s", mfc="none", mec=HOST_BOUND_COLOUR, ms=10,
                                  label="host-bound (enqueue >= 90% of device time)"))
        if shown_theo["compute"] or shown_theo["bandwidth"]:
            handles.append(Line2D([], [], color="#555555", lw=1.0, ls=(0, (4, 3)), label="theoretical"))
        handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="#333333", mew=1.3,
                              label=f"ridge vs {ref.upper()}"))
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), frameon=False,
                   title=f"{kernel_kind}: marker = {'workload' if kernel_kind == 'workloads' else 'kind'}, "
                         "colour = the roof that bounds it", title_fontsize=8.5)
        if notes:  # a band of its own under everything the layout places (the legend among it)
            text = footnote(notes, fig.get_figwidth())
            band = (text.count("\n") + 1) * 7.5 * 1.35 / 72 + 0.12  # inches
            fig.set_figheight(fig.get_figheight() + band)
            fig.get_layout_engine().set(rect=(0, band / fig.get_figheight(), 1, 1 - band / fig.get_figheight()))
            fig.text(0.01, 0.06 / fig.get_figheight(), text, fontsize=7.5, color="#444444", ha="left",
                     va="bottom", gid="footnote")
        _freeze_layout(fig)
        if notes:  # the layout kept room for the legend above the band, but anchors it to the figure
            lo = band / fig.get_figheight()
            legend.set_bbox_to_anchor((0, lo, 1, 1 - lo), transform=fig.transFigure)

        placer = LabelPlacer(ax)
        placer.add_points(k[["x", "y"]].to_numpy(float), 5.0)
        placer.add_points(k.loc[k["above"] | ~k["valid"] | k.get("host_bound", False), ["x", "y"]].to_numpy(float),
                          9.0)  # rings, crosses, squares
        for r in roofs:
            placer.add_polyline(r.x, r.y)
        placer.add_points(np.array([[x, meas_comp[u]] for u, x in rid.items()]), 5.0)
        placed: list[Any] = []
        for r in sorted((r for r in roofs if r.source == "measured" and r.kind == "compute"), key=lambda r: -r.value):
            placed.append(_compute_label(placer, r, theo_comp.get(r.name), rid.get(r.name), x_lo, x_hi))
        for r in sorted((r for r in roofs if r.source == "measured" and r.kind == "bandwidth"), key=lambda r: -r.value):
            placed.append(_slope_label(ax, placer, r, theo_bw.get(r.name), x_lo, y_lo, y_hi))
        placed = [a for a in placed if a is not None]
        points = _point_labels(ax, placer, k[k["text"].notna()])
        n_hidden += int(k["text"].notna().sum()) - len(points)
        placed += points
    caption = (f"Roofline of {meta['device'].get('name', '?')}: measured ceilings solid, each labelled with its "
               f"value and its share of theoretical; a theoretical roof is dashed only where the measured one "
               f"reaches less than {THEORETICAL_SHOWN:.0%} of it. Ridge points (circles) where each compute roof "
               f"meets the {ref.upper()} slope. {len(k)} {kernel_kind} point(s), marker by "
               f"{'workload' if kernel_kind == 'workloads' else 'kind'}, coloured by the roof that bounds them.")
    if len(host):
        caption += (f" A dashed square marks {len(host)} host-bound point(s): the host took at least 90% of the "
                    "device time to enqueue the launches, so the device waited on it and the roofline cannot "
                    "explain that time.")
    if n_hidden:
        caption += (f" {n_hidden} point(s) are not labelled (only those that lose the most time are); "
                    "the workloads table lists every one.")
    if notes:
        caption += " " + " ".join(notes)
    return Drawn("roofline", fig, caption, placed)


def roofline_axes(fig: Any, x_lo: float, x_hi: float, y_lo: float, y_hi: float) -> "Axes":
    """The roofline's axes: log-log, FLOP/byte across, FLOP/s up, one labelled tick per decade."""
    ax = fig.add_subplot()
    _log_axis(ax, "x", None, x_lo, x_hi)
    _log_axis(ax, "y", "FLOP/s", y_lo, y_hi)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("performance (FLOP/s)")
    return ax


def footnote(notes: Iterable[str], width_in: float, fontsize: float = 7.5) -> str:
    """The notes under a figure as lines that fit its width (about half an em per character)."""
    chars = max(40, int(width_in * 72 / (0.52 * fontsize)))
    return "\n".join(textwrap.fill(n, chars) for n in notes)


def _share(value: float, theoretical: float | None) -> str:
    return f" · {value / theoretical:.0%} of theoretical" if theoretical else ""


def _compute_label(placer: LabelPlacer, r: Roof, theo: float | None, ridge: float | None, x_lo: float,
                   x_hi: float, text: str | None = None, colour: str | None = None, gid: str | None = None) -> Any:
    """The roof's unit, value and share of theoretical (or `text`), above (else under) its right end."""
    text = text or f"{unit_name(r.name)} {si(r.value, 'FLOP/s', 3)}{_share(r.value, theo)}"
    xs = np.geomspace(x_hi, max(r.x[0], x_lo) * 1.5, 12)
    return placer.place(text, [(x, r.value) for x in xs], offsets=[(-4, 3), (-4, -3)],
                        gid=gid or f"label:roof:{r.name}", fontsize=8, color=colour or unit_colour(r.name),
                        fontweight="bold", accept=LabelPlacer.LABEL - 1, bbox=GROUND)


def _slope_label(ax: "Axes", placer: LabelPlacer, r: Roof, theo: float | None, x_lo: float, y_lo: float,
                 y_hi: float, text: str | None = None, colour: str | None = None, gid: str | None = None) -> Any:
    """One label along its own slope (level, value, share of theoretical; or `text`), turned to its
    angle on screen, on a white ground so that a neighbouring slope running under it does not strike
    the text through."""
    xa = max(r.x[0], x_lo, y_lo / r.value)
    xb = min(r.x[1], y_hi / r.value)
    if xb <= xa:
        return None
    (p0, p1) = ax.transData.transform([(xa, r.value * xa), (xb, r.value * xb)])
    angle = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
    anchors = [(x, r.value * x) for x in np.geomspace(xa * 1.2, xb / 2.5, 16)] if xb / 2.5 > xa * 1.2 \
        else [(math.sqrt(xa * xb), r.value * math.sqrt(xa * xb))]
    text = text or f"{r.name.upper()} {si(r.value, 'B/s', 3)}{_share(r.value, theo)}"
    style = {"rotation": angle, "lines": False, "accept": LabelPlacer.LABEL - 1, "fontsize": 8,
             "color": colour or level_colour(r.name), "fontweight": "bold", "gid": gid or f"label:roof:{r.name}",
             "bbox": GROUND}
    label = placer.place(text, anchors, offsets=[(-2, 3), (-3, 6)], align=("left", "bottom"), **style)
    if label is None:
        label = placer.place(text, anchors, offsets=[(2, -3), (3, -6)], align=("left", "top"), **style)
    return label


def _point_labels(ax: "Axes", placer: LabelPlacer, k: pd.DataFrame) -> list[Any]:
    """Short labels beside their points, pushed apart by adjustText (clear of the markers and of the
    roof labels already placed); a label that still covers another one or leaves the axes is dropped:
    the table has it."""
    from adjustText import adjust_text

    if k.empty:
        return []
    texts = [ax.text(r.x, r.y, str(r.text), fontsize=7.5, color="#222222", zorder=6, gid=f"label:kernel:{r.text}",
                     ha="left", va="bottom", bbox=GROUND) for r in k.itertuples()]
    anchors = [(r.x, r.y) for r in k.itertuples()]
    everything = np.vstack([p for p, _, _, each in placer.groups if each])  # markers, in display space
    xy = ax.transData.inverted().transform(everything)
    adjust_text(texts, x=xy[:, 0], y=xy[:, 1], objects=placer.placed, ax=ax, ensure_inside_axes=True,
                expand=(1.15, 1.4), force_text=(0.3, 0.5), iter_lim=400)
    renderer = ax.figure.canvas.get_renderer()
    ax_bb = ax.get_window_extent(renderer)
    kept: list[Any] = []
    dropped: list[tuple[Any, tuple[float, float]]] = []
    boxes = list(placer.boxes)
    for t, anchor in zip(texts, anchors):
        bb = t.get_window_extent(renderer)
        inside = ax_bb.x0 <= bb.x0 and bb.x1 <= ax_bb.x1 and ax_bb.y0 <= bb.y0 and bb.y1 <= ax_bb.y1
        if not inside or any(bb.overlaps(o) for o in boxes):
            t.remove()
            dropped.append((t, anchor))
            continue
        boxes.append(bb)
        kept.append(t)
        px, py = ax.transData.transform(anchor)
        cx, cy = min(max(px, bb.x0), bb.x1), min(max(py, bb.y0), bb.y1)  # nearest point of the box
        if math.hypot(cx - px, cy - py) > 9:  # a label pushed away keeps a leader line to its point
            ax.annotate("", xy=anchor, xytext=ax.transData.inverted().transform((cx, cy)),
                        arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#777777", "shrinkA": 0, "shrinkB": 4},
                        zorder=5, annotation_clip=False)
    placer.boxes = boxes  # what adjustText could not free, the greedy placer tries around its point
    for t, anchor in dropped:
        again = placer.place(t.get_text(), [anchor], gid=t.get_gid(), accept=LabelPlacer.LABEL - 1, fontsize=7.5,
                             color="#222222", bbox=GROUND)
        if again is not None:
            kept.append(again)
    return kept


def roofline_figure(run: Run) -> Drawn:
    """Workloads on the roofline when the run has them (a bench), else the sweep's own points."""
    run = as_run(run)
    w = workload_points(run)
    if w is not None:
        return draw_roofline(run.meta, _kernels_from_workloads(w), "workloads")
    pts = medians(samples(run))
    zero = int((pts["intensity_flop_per_byte"] <= 0).sum())
    notes = [f"{zero} sweep point(s) with 0 FMAs (intensity 0) are left out of the log axes; "
             "the sweep figure shows their bandwidth."] if zero else []
    kernels = _kernels_from_sweep(pts, run.ceilings)
    gemm = _kernels_from_matrix(optional_table(run, "matrix"))
    if gemm is not None:
        kernels = pd.concat([kernels, gemm], ignore_index=True)
    return draw_roofline(run.meta, kernels, "sweep points (median)", notes=notes)


__all__ = ["Roof", "roof_segments", "roofline_axes", "draw_roofline", "roofline_figure", "short_labels",
           "label_box", "unit_name", "bounding_roof", "roof_colour", "labelled", "MAX_TEXT_LABELS"]
