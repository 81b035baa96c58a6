"""Figures of a run (roofline, sweep, telemetry, cache hierarchy): seaborn axes-level plots on log axes."""
from __future__ import annotations

import argparse
import io
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window, never need a display

import numpy as np
import pandas as pd

from gpuroof.errors import UsageError
from gpuroof.nvml import THROTTLE_BITS, reason_names
from gpuroof.results import Run, atomic_write_bytes, load_run
from gpuroof.units import si

if TYPE_CHECKING:  # the drawing libraries are imported when a figure is drawn: `gpuroof --help` stays fast
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
FIGURES = ("roofline", "sweep", "telemetry", "hierarchy")
WHAT = (*FIGURES, "all")
PNG_DPI = 150

#: Colour of each dtype (seaborn's colorblind palette), shared by roofs and points in every figure.
DTYPE_COLOURS = {"float64": "#0173b2", "float32": "#de8f05", "float16": "#029e73", "bfloat16": "#cc78bc",
                 "tfloat32": "#56b4e9", "int8": "#ca9161", "float8": "#d55e00"}
_SPARE_COLOURS = ("#d55e00", "#949494", "#ece133", "#fbafe4", "#ca9161", "#56b4e9")
#: Bandwidth slopes are grey: darker for the level farther from the cores.
LEVEL_COLOURS = {"dram": "#1a1a1a", "l3": "#4d4d4d", "l2": "#6e6e6e", "l1": "#8f8f8f", "shared": "#8f8f8f"}
#: Hierarchy levels need telling apart at a glance: distinct colours there.
HIERARCHY_COLOURS = {"l1": "#029e73", "shared": "#029e73", "l2": "#0173b2", "l3": "#cc78bc", "llc": "#cc78bc",
                     "dram": "#d55e00"}
MAX_TEXT_LABELS = 12  # more kernels than this are numbered on the plot, with a key under it
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "p", "h", "*", "<", ">")
INVALID_COLOUR = "#c00000"
THROTTLE_COLOUR = "#e66100"

RC = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.6,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in PDFs: text stays text for journals
    "svg.fonttype": "path", "svg.hashsalt": "gpuroof",  # SVG renders the same everywhere, byte-stable
}


def dtype_colour(unit: str) -> str:
    """Colour of a dtype or of a compute unit named '<dtype>-matrix'."""
    dtype = unit.split("-")[0]
    if dtype not in DTYPE_COLOURS:
        DTYPE_COLOURS[dtype] = _SPARE_COLOURS[len(DTYPE_COLOURS) % len(_SPARE_COLOURS)]
    return DTYPE_COLOURS[dtype]


def level_colour(level: str) -> str:
    return LEVEL_COLOURS.get(level.lower(), "#5a5a5a")


@dataclass
class Drawn:
    """One figure and the caption that explains what it shows and what it left out."""

    name: str
    fig: "Figure"
    caption: str
    labels: list = field(default_factory=list)  # placed annotations (roofline), for checks


# --------------------------------------------------------------------------- files


def render(drawn: Drawn, fmt: str) -> bytes:
    """The figure as PNG, SVG or PDF bytes, cropped to what is drawn; no timestamps inside."""
    import matplotlib as mpl

    check_formats([fmt])
    meta = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    buf = io.BytesIO()
    with mpl.rc_context(RC):
        drawn.fig.savefig(buf, format=fmt, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.08,
                          metadata=meta, facecolor="white")
    return buf.getvalue()


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    out = tuple(formats)
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise UsageError(f"--format {','.join(bad) or '(none)'}: not supported (allowed: {', '.join(FORMATS)})")
    return out


# --------------------------------------------------------------------------- reading a run


def as_run(run: Run | str | Path) -> Run:
    """A loaded run whose sweep finished: ceilings present; UsageError with one line otherwise."""
    r = run if isinstance(run, Run) else load_run(run)
    if r.meta.get("status") != "complete" or not r.meta.get("ceilings"):
        raise UsageError(f"{r.path}: run is {r.meta.get('status', '?')} (no measured ceilings); "
                         "nothing to plot, measure again")
    cei = r.meta["ceilings"]
    if not _finite(cei.get("compute", {})) or not _finite(cei.get("bandwidth", {})):
        raise UsageError(f"{r.path}: run.json has no measured compute or bandwidth ceiling")
    return r


def _finite(d: dict | None) -> dict[str, float]:
    """The entries of a {name: value} map that are finite positive numbers."""
    out = {}
    for k, v in (d or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            out[str(k)] = f
    return out


def _bool(s: pd.Series) -> pd.Series:
    """A CSV column of True/False (maybe empty) as a nullable boolean."""
    if s.dtype == bool:
        return s.astype("boolean")
    m = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    return s.map(lambda v: m.get(str(v).strip().lower(), pd.NA) if pd.notna(v) else pd.NA).astype("boolean")


POINT_COLUMNS = ("dtype", "variant", "fmas_per_element", "flops", "bytes", "intensity_flop_per_byte",
                 "time_s", "valid")


def samples(run: Run) -> pd.DataFrame:
    """points.csv with its rates per sample; UsageError when it is unusable or has no valid point."""
    df = run.table("points")
    missing = [c for c in POINT_COLUMNS if c not in df.columns]
    if missing:
        raise UsageError(f"{run.path / 'points.csv'}: lacks column(s) {', '.join(missing)}")
    df = df.copy()
    df["valid"] = _bool(df["valid"]).fillna(False).astype(bool)
    df["throttled"] = _bool(df["throttled"]) if "throttled" in df else pd.array([pd.NA] * len(df), "boolean")
    if not df["valid"].any():
        raise UsageError(f"{run.path}: no valid points (all {len(df)} samples failed the output check)")
    df["flops_per_s"] = df["flops"] / df["time_s"]
    df["bandwidth_Bps"] = df["bytes"] / df["time_s"]
    return df


def medians(s: pd.DataFrame) -> pd.DataFrame:
    """One row per (dtype, variant, fmas): rates at the median time, as sweep.summarize computes them."""
    keys = ["dtype", "variant", "fmas_per_element"]
    agg = {"flops": ("flops", "first"), "bytes": ("bytes", "first"),
           "intensity_flop_per_byte": ("intensity_flop_per_byte", "first"), "time_s": ("time_s", "median"),
           "valid": ("valid", "all"), "throttled": ("throttled", lambda t: bool(t.fillna(False).any())),
           "reps": ("time_s", "size")}
    if "working_set_bytes" in s:
        agg["working_set_bytes"] = ("working_set_bytes", "first")
    pts = s.groupby(keys, sort=False).agg(**agg).reset_index()
    pts["flops_per_s"] = pts["flops"] / pts["time_s"]
    pts["bandwidth_Bps"] = pts["bytes"] / pts["time_s"]
    return pts


def optional_table(run: Run, name: str) -> pd.DataFrame | None:
    """A table that a run may lack (workloads, hierarchy, telemetry): None when absent or empty."""
    if not (run.path / f"{name}.csv").exists():
        return None
    df = run.table(name)
    return None if df.empty else df


WORKLOAD_COLUMNS = ("name", "dtype", "unit", "intensity", "achieved_flops")


def workload_points(run: Run) -> pd.DataFrame | None:
    df = optional_table(run, "workloads")
    if df is None:
        return None
    missing = [c for c in WORKLOAD_COLUMNS if c not in df.columns]
    if missing:
        raise UsageError(f"{run.path / 'workloads.csv'}: lacks column(s) {', '.join(missing)}")
    df = df.copy()
    df["valid"] = _bool(df["valid"]).fillna(True).astype(bool) if "valid" in df else True
    df["above_roof"] = _bool(df["above_roof"]).fillna(False).astype(bool) if "above_roof" in df else False
    return df


# --------------------------------------------------------------------------- roofline geometry


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


def reference_level(ceilings: dict) -> str | None:
    """The level ridge points are taken against: DRAM, or the slowest level a run has."""
    bw = _finite(ceilings.get("bandwidth"))
    return "dram" if "dram" in bw else (min(bw, key=bw.get) if bw else None)


def ridges(ceilings: dict, level: str | None = None) -> dict[str, float]:
    """Ridge intensity (FLOP/byte) of each compute unit against `level` (default: reference_level)."""
    bw = _finite(ceilings.get("bandwidth")).get(level or reference_level(ceilings) or "")
    if not bw:
        return {}
    return {u: p / bw for u, p in _finite(ceilings.get("compute")).items()}


# --------------------------------------------------------------------------- axes helpers


def _new_figure(w: float, h: float, **kw: Any) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained", **kw)
    FigureCanvasAgg(fig)  # no pyplot: nothing global, nothing to close, safe from any thread
    return fig


def _freeze_layout(fig: "Figure") -> None:
    """Run the constrained layout once and keep it, so labels placed afterwards stay where measured."""
    fig.canvas.draw()
    fig.set_layout_engine("none")


def _decades(lo: float, hi: float) -> list[float]:
    return [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def _log_axis(ax: "Axes", which: str, unit: str | None, lo: float, hi: float) -> None:
    """A log axis with one labelled tick per decade: '100 GFLOP/s', '1 TFLOP/s' (or plain numbers)."""
    from matplotlib import ticker

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)
    axis.set_major_locator(ticker.FixedLocator([d for d in _decades(lo, hi) if lo <= d <= hi]))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(2, 10)), numticks=100))
    fmt = ticker.FuncFormatter((lambda v, _: f"{v:g}") if unit is None else (lambda v, _: si(v, unit, 3)))
    axis.set_major_formatter(fmt)
    if math.log10(hi / lo) <= 2.2:  # under ~two decades a lone decade label is not enough to read a value
        axis.set_minor_formatter(ticker.FuncFormatter(
            lambda v, p: fmt(v, p) if round(v / 10 ** math.floor(math.log10(v) + 1e-9)) in (2, 5) else ""))
    else:
        axis.set_minor_formatter(ticker.NullFormatter())


def _ibytes(v: float) -> str:
    """4096 -> '4 KiB'."""
    for i, p in enumerate(("B", "KiB", "MiB", "GiB", "TiB")):
        if abs(v) < 1024 ** (i + 1) or p == "TiB":
            return f"{v / 1024 ** i:.3g} {p}"
    return f"{v:g} B"


def _marker_map(names: Iterable[str]) -> dict[str, str]:
    return {n: MARKERS[i % len(MARKERS)] for i, n in enumerate(names)}


# --------------------------------------------------------------------------- label placement


def label_box(ann: Any, renderer: Any) -> Any:
    """The box of an annotation's text alone (Annotation.get_window_extent adds its leader line)."""
    from matplotlib.text import Text

    ann.update_positions(renderer)  # where xy and the offset put the text now
    return Text.get_window_extent(ann, renderer)


class LabelPlacer:
    """Greedy placement of text labels in display space so that none overlaps another label, a marker,
    or a roof, and all stay inside the axes. Each label tries candidate offsets around its anchors,
    nearest first; if every candidate collides it takes the least-colliding one with a leader line.
    Roof lines are sampled here only to detect collisions; they are drawn from their end points."""

    #: Collision costs: leaving the axes, then covering another label, a marker, a line.
    OUTSIDE, LABEL, MARKER, LINE = 10_000.0, 1_000.0, 30.0, 10.0

    def __init__(self, ax: "Axes", pad_px: float = 2.0):
        self.ax = ax
        self.fig = ax.figure
        self.renderer = self.fig.canvas.get_renderer()
        self.pad = pad_px
        self.boxes: list[Any] = []
        self.groups: list[tuple[np.ndarray, float, float, bool]] = []  # display xy, radius, cost, per point
        self.placed: list[Any] = []

    def add_points(self, xy_data: np.ndarray, radius_px: float) -> None:
        """Markers: each one covered costs MARKER."""
        if len(xy_data):
            disp = self.ax.transData.transform(np.asarray(xy_data, dtype=float))
            self.groups.append((disp, radius_px, self.MARKER, True))

    def add_polyline(self, x: Iterable[float], y: Iterable[float], radius_px: float = 1.5) -> None:
        """A straight segment on log axes, sampled in log space every pixel or so; crossing it costs LINE."""
        (x0, x1), (y0, y1) = tuple(x), tuple(y)
        t = np.linspace(0.0, 1.0, 400)
        lx = np.exp(np.log(x0) + t * (np.log(x1) - np.log(x0)))
        ly = np.exp(np.log(y0) + t * (np.log(y1) - np.log(y0)))
        disp = self.ax.transData.transform(np.column_stack([lx, ly]))
        self.groups.append((disp, radius_px, self.LINE, False))

    def _hits(self, bb: Any, lines: bool = True) -> float:
        ax_bb = self.ax.get_window_extent(self.renderer)
        score = 0.0
        if bb.x0 < ax_bb.x0 or bb.x1 > ax_bb.x1 or bb.y0 < ax_bb.y0 or bb.y1 > ax_bb.y1:
            score += self.OUTSIDE
        for other in self.boxes:
            if bb.x0 < other.x1 + self.pad and bb.x1 > other.x0 - self.pad and \
                    bb.y0 < other.y1 + self.pad and bb.y1 > other.y0 - self.pad:
                score += self.LABEL
        for p, r, cost, each in self.groups:
            if not lines and not each:
                continue
            inside = (p[:, 0] > bb.x0 - r) & (p[:, 0] < bb.x1 + r) & (p[:, 1] > bb.y0 - r) & (p[:, 1] < bb.y1 + r)
            score += cost * (float(inside.sum()) if each else float(inside.any()))
        return score

    def place(self, text: str, anchors: list[tuple[float, float]],
              offsets: Iterable[tuple[float, float]] | None = None, gid: str | None = None,
              rotation: float = 0.0, lines: bool = True, accept: float | None = None,
              align: tuple[str, str] | None = None, **kw: Any) -> Any:
        """Place `text` near one of `anchors` (data coordinates); offsets are in points.

        `lines=False` ignores roof lines (a label set along its own slope touches it by design).
        A label whose best place still costs more than `accept` is not drawn (None); by default
        that is a label that could only stand outside the axes."""
        if offsets is None:
            offsets = [(dx * r, dy * r) for r in (5, 10, 18, 28, 40)
                       for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1.4, 0), (-1.4, 0), (0, 1.4), (0, -1.4))]
        offsets = list(offsets)
        probe = self.ax.annotate(text, xy=anchors[0], xytext=(0, 0), textcoords="offset points",
                                 rotation=rotation, rotation_mode="anchor", annotation_clip=False, **kw)
        best = None
        for anchor in anchors:
            for dx, dy in offsets:
                probe.xy = anchor
                probe.set_position((dx, dy))
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                if align:
                    ha, va = align
                probe.set_ha(ha)
                probe.set_va(va)
                score = self._hits(label_box(probe, self.renderer), lines)
                if best is None or score < best[0]:
                    best = (score, anchor, (dx, dy), ha, va)
                if score == 0:
                    break
            if best and best[0] == 0:
                break
        probe.remove()
        assert best is not None  # anchors and offsets are never empty
        if best[0] > (self.OUTSIDE - 1 if accept is None else accept):
            return None
        _, anchor, (dx, dy), ha, va = best
        far = math.hypot(dx, dy) > 12  # a label pushed away keeps a leader line to its point
        ann = self.ax.annotate(text, xy=anchor, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               rotation=rotation, rotation_mode="anchor", zorder=6, annotation_clip=False,
                               arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#666666", "shrinkA": 1,
                                           "shrinkB": 3} if far else None, **kw)
        if gid:
            ann.set_gid(gid)
        self.boxes.append(label_box(ann, self.renderer))
        self.placed.append(ann)
        return ann


# --------------------------------------------------------------------------- roofline figure


def _kernels_from_sweep(pts: pd.DataFrame) -> pd.DataFrame:
    names = {"ro": "sweep, read-only", "rw": "sweep, read-write"}
    k = pts[pts["intensity_flop_per_byte"] > 0]
    return pd.DataFrame({
        "x": k["intensity_flop_per_byte"].to_numpy(float), "y": k["flops_per_s"].to_numpy(float),
        "dtype": k["dtype"].astype(str).to_numpy(), "kernel": k["variant"].map(lambda v: names.get(v, v)).to_numpy(),
        "label": [None] * len(k), "valid": k["valid"].to_numpy(bool),
        "above": np.zeros(len(k), bool)})


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


def _kernels_from_workloads(w: pd.DataFrame) -> pd.DataFrame:
    w = w.copy()
    case = w["case"] if "case" in w else pd.Series([""] * len(w), index=w.index)
    label = short_labels(w["name"], case)
    return pd.DataFrame({
        "x": pd.to_numeric(w["intensity"], errors="coerce").to_numpy(float),
        "y": pd.to_numeric(w["achieved_flops"], errors="coerce").to_numpy(float),
        "dtype": w["dtype"].astype(str).to_numpy(), "kernel": w["name"].astype(str).to_numpy(),
        "label": label, "valid": w["valid"].to_numpy(bool), "above": w["above_roof"].to_numpy(bool),
        "ref": [str(i) for i in range(1, len(w) + 1)]})  # the row number in workloads.csv and the report


def draw_roofline(meta: dict, kernels: pd.DataFrame, kernel_kind: str = "workloads",
                  title: str | None = None, notes: Iterable[str] = ()) -> Drawn:
    """The roofline: measured roofs solid, theoretical dashed and lighter, ridges marked and labelled,
    kernels coloured by dtype with a marker per kernel, labels placed clear of each other.

    `kernels` has columns x (FLOP/byte), y (FLOP/s), dtype, kernel, label (text or None), valid, above.
    """
    import matplotlib as mpl
    import seaborn as sns
    from matplotlib.lines import Line2D

    measured = meta["ceilings"]
    theo = meta.get("theoretical") or {}
    notes = list(notes)
    finite = np.isfinite(kernels["x"]) & np.isfinite(kernels["y"]) & (kernels["x"] > 0) & (kernels["y"] > 0)
    dropped = int((~finite).sum())
    if dropped:
        notes.append(f"{dropped} {kernel_kind} point(s) with zero or unknown intensity or rate are not on "
                     "the log axes")
    k = kernels[finite].reset_index(drop=True)

    ref = reference_level(measured)  # as_run made sure there is a compute and a bandwidth ceiling
    rid = ridges(measured, ref)
    xs = [*k["x"], *rid.values(), *ridges(theo, ref).values()]
    x_lo = 10.0 ** math.floor(math.log10(min(xs) / 10))  # room for the slopes left of every point
    x_hi = 10.0 ** math.ceil(math.log10(max(xs) * 3))
    peaks = [*_finite(measured["compute"]).values(), *_finite(theo.get("compute")).values()]
    y_hi = max([*peaks, *k["y"]]) * 4
    dram = _finite(measured["bandwidth"])[ref]
    y_lo = min([*(k["y"] / 3), dram * x_lo * 3])
    y_lo = 10.0 ** math.floor(math.log10(max(y_lo, y_hi * 1e-6)))

    with mpl.rc_context(RC):
        fig = _new_figure(9.5, 5.8)
        ax = fig.add_subplot()
        _log_axis(ax, "x", None, x_lo, x_hi)
        _log_axis(ax, "y", "FLOP/s", y_lo, y_hi)
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("performance (FLOP/s)")
        ax.set_title(title or f"Roofline: {meta['device'].get('name', '?')} ({meta.get('backend', '?')})")

        roofs = roof_segments(measured, x_lo, x_hi, "measured") + \
            roof_segments(theo, x_lo, x_hi, "theoretical", partner=measured)
        handles: list[Any] = []
        labels: list[str] = []
        section = None
        for r in sorted(roofs, key=lambda r: (r.source != "measured", r.kind, -r.value)):
            if r.source != section:  # a title entry per section, as seaborn does for hue and style
                section = r.source
                handles.append(Line2D([], [], ls="none"))
                labels.append(f"{r.source} roofs ({'solid' if r.source == 'measured' else 'dashed'})")
            colour = level_colour(r.name) if r.kind == "bandwidth" else dtype_colour(r.name)
            is_meas = r.source == "measured"
            lw = (2.0 if "matrix" in r.name else 1.6) if is_meas else 1.1
            (line,) = ax.plot(r.x, r.y, color=colour, lw=lw, ls="-" if is_meas else "--",
                              alpha=1.0 if is_meas else 0.5, zorder=3 if is_meas else 2, solid_capstyle="butt")
            line.set_gid(r.gid)
            what = "B/s" if r.kind == "bandwidth" else "FLOP/s"
            name = r.name.upper() if r.kind == "bandwidth" else r.name
            handles.append(line)
            ridge_txt = f", ridge {r.value / dram:.3g}" if r.kind == "compute" and is_meas else ""
            labels.append(f"{name}: {si(r.value, what)}{ridge_txt}")

        # ridge points: where each measured compute roof meets the DRAM slope
        for unit, x in rid.items():
            p = _finite(measured["compute"])[unit]
            ax.plot([x, x], [y_lo, p], ls=":", lw=0.8, color=dtype_colour(unit), alpha=0.7, zorder=2)
            (m,) = ax.plot([x], [p], marker="o", ms=6, mfc="white", mec=dtype_colour(unit), mew=1.5, zorder=5,
                           ls="none")
            m.set_gid(f"ridge:{unit}")

        markers = _marker_map(dict.fromkeys(k["kernel"]))
        dtypes = list(dict.fromkeys(k["dtype"]))
        if len(k):
            sns.scatterplot(data=k, x="x", y="y", hue="dtype", style="kernel", hue_order=dtypes,
                            style_order=list(markers), palette={d: dtype_colour(d) for d in dtypes},
                            markers=markers, s=55 if kernel_kind == "workloads" else 30, edgecolor="white",
                            linewidth=0.6, alpha=0.95, zorder=4, ax=ax, legend="full")
            ax.collections[-1].set_gid("kernels")
            bad = k[~k["valid"]]
            if len(bad):
                ax.scatter(bad["x"], bad["y"], marker="x", s=60, color=INVALID_COLOUR, lw=1.4, zorder=5,
                           label="invalid (output check failed)")
            up = k[k["above"]]
            if len(up):
                ax.scatter(up["x"], up["y"], marker="o", s=150, facecolor="none", edgecolor=INVALID_COLOUR,
                           lw=1.0, zorder=5, label="above its roof")
        sh, sl = ax.get_legend_handles_labels()  # seaborn's entries and the overlays (roofs have no label)
        # seaborn names its legend sections by column; say what they are
        rename = {"dtype": "dtype (colour)", "kernel": f"{kernel_kind} (marker)"}
        sl = [rename.get(s, s) for s in sl]
        handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="#333333", mew=1.5))
        labels.append(f"ridge point vs {ref.upper()} (FLOP/B)")
        ax.legend(handles + sh, labels + sl, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                  frameon=False, handlelength=2.2)
        # many kernels: number them on the plot and spell the numbers out in a key under the axes
        has_label = k["label"].notna() & (k["label"].astype(str) != "")
        numbered = int(has_label.sum()) > MAX_TEXT_LABELS
        if numbered:
            refs = k["ref"].astype(str) if "ref" in k else pd.Series(range(1, len(k) + 1), index=k.index).astype(str)
            key = [f"{r}  {lab}" for r, lab, on in zip(refs, k["label"], has_label) if on]
            k = k.assign(text=refs.where(has_label, None))
            _footer(ax, key, notes)
        else:
            k = k.assign(text=k["label"].where(has_label, None))
            _footer(ax, [], notes)
        _freeze_layout(fig)

        placer = LabelPlacer(ax)
        placer.add_points(k[["x", "y"]].to_numpy(float), 5.0)
        placer.add_points(k.loc[k["above"] | ~k["valid"], ["x", "y"]].to_numpy(float), 9.0)  # rings, crosses
        for r in roofs:
            placer.add_polyline(r.x, r.y)
        placer.add_points(np.array([[x, _finite(measured["compute"])[u]] for u, x in rid.items()]), 5.0)
        placed = []
        for r in roofs:  # compute roofs: their name and value near the right end, over or under the line
            if r.source != "measured" or r.kind != "compute":
                continue
            xs_ = np.geomspace(x_hi, max(r.x[0], x_lo) * 1.5, 12)
            placed.append(placer.place(f"{r.name}: {si(r.value, 'FLOP/s')}", [(x, r.value) for x in xs_],
                                       offsets=[(-4, 3), (-4, -3)], gid=f"label:roof:{r.name}",
                                       fontsize=8, color=dtype_colour(r.name), fontweight="bold"))
        for group in _slope_groups([r for r in roofs if r.source == "measured" and r.kind == "bandwidth"]):
            placed.append(_slope_label(ax, placer, group, x_lo, y_lo, y_hi))
        for row in k.itertuples():
            if row.text:
                near = [(dx * r, dy * r) for r in (3, 6, 10, 16) for dx, dy in
                        ((1, 1), (1, -1), (-1, 1), (-1, -1), (1.4, 0), (-1.4, 0), (0, 1.4), (0, -1.4))]
                placed.append(placer.place(str(row.text), [(row.x, row.y)], gid=f"label:kernel:{row.label}",
                                           offsets=near if numbered else None, fontsize=7.5, color="#222222"))
        for unit, x in rid.items():  # beside its marker if there is room; the legend always has it
            p = _finite(measured["compute"])[unit]
            near = [(dx * r, dy * r) for r in (5, 9) for dx, dy in ((1, -1), (1, 1), (-1, 1), (-1, -1))]
            placed.append(placer.place(f"ridge {x:.3g} FLOP/B", [(x, p)], offsets=near, gid=f"label:ridge:{unit}",
                                       fontsize=7.5, color=dtype_colour(unit), accept=2 * LabelPlacer.LINE))
        placed = [a for a in placed if a is not None]  # labels with no room are left to the legend
    caption = (f"Roofline of {meta['device'].get('name', '?')}: measured ceilings solid, theoretical dashed "
               f"(at the measured clock); ridge points where each compute roof meets the {ref.upper()} slope. "
               f"{len(k)} {kernel_kind} point(s), coloured by dtype"
               + ("; numbered as in the key under the plot (and the workloads table)." if numbered else "."))
    if notes:
        caption += " " + " ".join(notes)
    return Drawn("roofline", fig, caption, placed)


def _footer(ax: "Axes", key: list[str], notes: list[str]) -> None:
    """Under the x axis: the key of numbered kernels in columns (monospace, so that a column's width
    is known before drawing), then the notes. Axes texts, so the constrained layout makes room."""
    size = 7.0
    line = 1.36 * size  # points per line
    top = -34.0  # below the tick labels and the axis label
    rows = 0
    if key:
        width = max(len(t) for t in key) * 0.602 * size + 14  # DejaVu Sans Mono advance: 0.602 em
        room = ax.figure.get_figwidth() * 72 * 0.85
        ncol = max(1, min(4, int(room // width), len(key)))
        rows = -(-len(key) // ncol)
        for c in range(ncol):
            chunk = key[c * rows:(c + 1) * rows]
            if chunk:
                ax.annotate("\n".join(chunk), xy=(0, 0), xycoords="axes fraction", xytext=(c * width, top),
                            textcoords="offset points", ha="left", va="top", fontsize=size, family="monospace",
                            color="#222222", annotation_clip=False, gid=f"key:{c}")
    if notes:
        ax.annotate("\n".join(notes), xy=(0, 0), xycoords="axes fraction", xytext=(0, top - rows * line - 4),
                    textcoords="offset points", ha="left", va="top", fontsize=size, color="#444444",
                    annotation_clip=False, gid="notes")


def _slope_groups(slopes: list[Roof]) -> list[list[Roof]]:
    """Bandwidth slopes closer than 2× to the next one share one label: three labels packed between
    three nearly parallel lines cannot be read. Sorted from the highest bandwidth down."""
    groups: list[list[Roof]] = []
    for r in sorted(slopes, key=lambda r: -r.value):
        if groups and groups[-1][-1].value / r.value < 2.0:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def _slope_label(ax: "Axes", placer: LabelPlacer, group: list[Roof], x_lo: float, y_lo: float,
                 y_hi: float) -> Any:
    """One label along a slope (or a group of slopes): on the far side of the topmost line of the
    group, turned to its angle on screen."""
    r = group[0]
    xa = max(r.x[0], x_lo, y_lo / r.value)
    xb = min(r.x[1], y_hi / r.value)
    if xb <= xa:
        return None
    (p0, p1) = ax.transData.transform([(xa, r.value * xa), (xb, r.value * xb)])
    angle = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
    anchors = [(x, r.value * x) for x in np.geomspace(xa * 1.2, xb / 2.5, 16)] if xb / 2.5 > xa * 1.2 \
        else [(math.sqrt(xa * xb), r.value * math.sqrt(xa * xb))]
    if len(group) == 1:
        text = f"{r.name.upper()}: {si(r.value, 'B/s')}"
    else:
        text = f"{group[0].name.upper()}–{group[-1].name.upper()}: {si(group[-1].value, 'B/s', 3)}–" \
               f"{si(group[0].value, 'B/s', 3)}"
    # the text runs up the slope from its anchor, just above the line (above the top line of a group,
    # so that it never sits between packed lines); a single slope may also take the side below
    gid = f"label:roof:{'+'.join(g.name for g in group)}"
    style = {"rotation": angle, "lines": False, "accept": LabelPlacer.LABEL - 1, "fontsize": 8,
             "color": level_colour(r.name), "fontweight": "bold", "gid": gid}
    label = placer.place(text, anchors, offsets=[(-2, 3), (-3, 7)], align=("left", "bottom"), **style)
    if label is None and len(group) == 1:
        label = placer.place(text, anchors, offsets=[(2, -3), (3, -7)], align=("left", "top"), **style)
    return label


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
    kernels = _kernels_from_sweep(pts)
    gemm = _kernels_from_matrix(optional_table(run, "matrix"))
    if gemm is not None:
        kernels = pd.concat([kernels, gemm], ignore_index=True)
    return draw_roofline(run.meta, kernels, "sweep points (median)", notes=notes)


def _kernels_from_matrix(m: pd.DataFrame | None) -> pd.DataFrame | None:
    """The GEMM sweep (matrix.csv), one point per unit and size at its median time."""
    if m is None or not {"unit", "dtype", "n", "time_s", "flops", "bytes"} <= set(m.columns):
        return None
    m = m.copy()
    m["valid"] = _bool(m["valid"]).fillna(False).astype(bool) if "valid" in m else True
    g = m.groupby(["unit", "n"], sort=False).agg(dtype=("dtype", "first"), flops=("flops", "first"),
                                                 bytes=("bytes", "first"), time_s=("time_s", "median"),
                                                 valid=("valid", "all")).reset_index()
    return pd.DataFrame({
        "x": (g["flops"] / g["bytes"]).to_numpy(float), "y": (g["flops"] / g["time_s"]).to_numpy(float),
        "dtype": g["dtype"].astype(str).to_numpy(), "kernel": ["GEMM sweep (matrix unit)"] * len(g),
        "label": [None] * len(g), "valid": g["valid"].to_numpy(bool), "above": np.zeros(len(g), bool)})


# --------------------------------------------------------------------------- sweep figure


def sweep_figure(run: Run) -> Drawn:
    """Every timed sample per dtype: FLOP/s (top) and B/s (bottom) against intensity, with the fitted
    roofline min(P, B·I) (and its bandwidth form min(B, P/I)) over them; invalid and throttled marked."""
    import matplotlib as mpl
    import seaborn as sns
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    run = as_run(run)
    s = samples(run)
    meta = run.meta
    comp = _finite(meta["ceilings"]["compute"])
    bw = _finite(meta["ceilings"]["bandwidth"])
    B = bw.get("dram") or max(bw.values())
    dtypes = list(dict.fromkeys(s["dtype"].astype(str)))
    pos = s.loc[s["intensity_flop_per_byte"] > 0, "intensity_flop_per_byte"]
    x_min = float(pos.min()) if len(pos) else 0.1
    x_hi = 10.0 ** math.ceil(math.log10(max([*pos, *(p / B for p in comp.values())]) * 2))
    x_lo = 10.0 ** (math.floor(math.log10(x_min)) - 1)
    x_zero = x_lo * 2.0  # where intensity-0 samples sit, left of a marked break
    x_break = x_lo * 5.0
    s = s.copy()
    s["x"] = np.where(s["intensity_flop_per_byte"] > 0, s["intensity_flop_per_byte"], x_zero)
    variants = list(dict.fromkeys(s["variant"].astype(str)))
    markers = _marker_map(variants)
    pos_f = s.loc[s["flops_per_s"] > 0, "flops_per_s"]
    f_hi = max([*pos_f, *comp.values()]) * 2.5
    f_lo = 10.0 ** math.floor(math.log10(max(min([*pos_f, B * x_min]) / 2, f_hi * 1e-7)))
    b_hi = max([*s["bandwidth_Bps"], B]) * 2.5
    b_lo = 10.0 ** math.floor(math.log10(max(min([*s["bandwidth_Bps"], *(p / x_hi for p in comp.values())]) / 2,
                                             b_hi * 1e-7)))
    n_inv = int((~s["valid"]).sum())
    thr = s["throttled"]
    n_thr = int(thr.fillna(False).astype(bool).sum())
    thr_known = bool(thr.notna().any())

    with mpl.rc_context(RC):
        fig = _new_figure(max(4.2 * len(dtypes) + 2.2, 7.0), 6.6)
        axes = fig.subplots(2, len(dtypes), squeeze=False, sharey="row")
        for j, dtype in enumerate(dtypes):
            d = s[s["dtype"].astype(str) == dtype]
            P = comp.get(dtype)
            colour = dtype_colour(dtype)
            for i, (ycol, unit, lo, hi) in enumerate((("flops_per_s", "FLOP/s", f_lo, f_hi),
                                                      ("bandwidth_Bps", "B/s", b_lo, b_hi))):
                ax = axes[i][j]
                _log_axis(ax, "x", None, x_lo, x_hi)
                _log_axis(ax, "y", unit, lo, hi)
                dd = d[d[ycol] > 0]
                if i == 1:  # intensity-0 samples: bandwidth only, at the marked left edge
                    ax.axvspan(x_lo, x_break, color="#000000", alpha=0.05, lw=0, zorder=0)
                    ax.axvline(x_break, color="#777777", lw=0.6, ls=(0, (2, 2)), zorder=1)
                    ticks = [x_zero] + [t for t in _decades(x_lo, x_hi) if x_break < t <= x_hi]
                    ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
                    ax.xaxis.set_major_formatter(ticker.FuncFormatter(
                        lambda v, _: "0" if math.isclose(v, x_zero) else f"{v:g}"))
                if len(dd):
                    sns.scatterplot(data=dd, x="x", y=ycol, style="variant", style_order=variants, markers=markers,
                                    color=colour, s=16, alpha=0.55, linewidth=0, zorder=3, ax=ax, legend=False)
                    med = medians(d)
                    med["x"] = np.where(med["intensity_flop_per_byte"] > 0, med["intensity_flop_per_byte"], x_zero)
                    for v in variants:
                        mv = med[(med["variant"].astype(str) == v) & (med[ycol] > 0)].sort_values("x")
                        ax.plot(mv["x"], mv[ycol], color=colour, lw=0.8, alpha=0.7, zorder=2,
                                ls="-" if v == variants[0] else "--")
                if P:  # the fitted roofline, from its exact ridge point
                    r = P / B
                    if i == 0:
                        (line,) = ax.plot([x_lo, r, x_hi], [B * x_lo, P, P], color="#222222", lw=1.3, zorder=4)
                    else:
                        (line,) = ax.plot([x_lo, r, x_hi], [B, B, P / x_hi], color="#222222", lw=1.3, zorder=4)
                    line.set_gid(f"fit:{dtype}:{'flops' if i == 0 else 'bandwidth'}")
                bad = dd[~dd["valid"]]
                if len(bad):
                    ax.scatter(bad["x"], bad[ycol], marker="x", s=40, color=INVALID_COLOUR, lw=1.2, zorder=5)
                th = dd[dd["throttled"].fillna(False).astype(bool)]
                if len(th):
                    ax.scatter(th["x"], th[ycol], marker="o", s=70, facecolor="none", edgecolor=THROTTLE_COLOUR,
                               lw=1.0, zorder=5)
                ax.set_xlabel("arithmetic intensity (FLOP/byte)" if i == 1 else "")
                ax.set_ylabel(("achieved FLOP/s" if i == 0 else "achieved bandwidth (B/s)") if j == 0 else "")
            ridge = f", ridge {P / B:.3g} FLOP/B" if P else ""
            axes[0][j].set_title(f"{dtype}\npeak {si(P, 'FLOP/s')}{ridge}", color=colour)
        handles = [Line2D([], [], marker=markers[v], ls="-" if v == variants[0] else "--", color="#555555",
                          lw=0.8, alpha=0.8, label=f"{v}: samples, median line") for v in variants]
        handles.append(Line2D([], [], color="#222222", lw=1.3, label="fitted min(P, B·I)"))
        handles.append(Line2D([], [], ls="none", marker="x", color=INVALID_COLOUR, label=f"invalid ({n_inv})"))
        handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec=THROTTLE_COLOUR,
                              label=f"throttled ({n_thr if thr_known else 'not observable'})"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        fig.suptitle(f"Intensity sweep: {meta['device'].get('name', '?')}, every sample "
                     f"({len(s)} samples, {len(medians(s))} points); DRAM {si(B, 'B/s')}", fontsize=10)
    caption = (f"Every timed sample of the sweep ({len(s)}), per dtype: achieved FLOP/s (top) and bandwidth "
               f"(bottom) against intensity, with the fitted roofline. Samples with 0 FMAs have intensity 0 "
               f"and sit at the shaded left edge of the bandwidth panels (marked 0). Invalid samples: {n_inv}; "
               + (f"throttled samples: {n_thr}." if thr_known else
                  "throttling is not observable on this backend (no clock-event reasons)."))
    return Drawn("sweep", fig, caption)


# --------------------------------------------------------------------------- telemetry figure

TELEMETRY_PANELS = (  # column, axis label
    ("sm_clock_mhz", "clock (MHz)"),
    ("mem_clock_mhz", "memory clock (MHz)"),
    ("power_w", "power (W)"),
    ("temperature_c", "temperature (°C)"),
    ("load_pct", "load (%)"),
)


def _spans(t: np.ndarray, flag: np.ndarray) -> list[tuple[float, float]]:
    """Contiguous runs of True in `flag`, as time spans reaching half-way to the neighbouring samples."""
    out = []
    i, n = 0, len(flag)
    while i < n:
        if not flag[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flag[j + 1]:
            j += 1
        a = t[i] - (t[i] - t[i - 1]) / 2 if i > 0 else t[i]
        b = t[j] + (t[j + 1] - t[j]) / 2 if j + 1 < n else t[j]
        out.append((float(a), float(b if b > a else a + 1e-3)))
        i = j + 1
    return out


def telemetry_figure(run: Run) -> Drawn:
    """Clocks, power, temperature (what exists) over time, sweep phases shaded, throttling marked."""
    import matplotlib as mpl
    import seaborn as sns
    from matplotlib.patches import Patch

    run = as_run(run)
    tel = optional_table(run, "telemetry")
    if tel is None or "t_s" not in tel:
        raise UsageError(f"{run.path}: run has no telemetry (telemetry.csv absent or empty)")
    tel = tel.sort_values("t_s").reset_index(drop=True)
    cpu = run.meta.get("backend") == "cpu"
    have = [(c, lab) for c, lab in TELEMETRY_PANELS
            if c in tel and pd.to_numeric(tel[c], errors="coerce").notna().any()]
    missing = [c for c, _ in TELEMETRY_PANELS[:4] if c not in [h[0] for h in have]]
    if not have:
        raise UsageError(f"{run.path / 'telemetry.csv'}: no clock, power, temperature or load was recorded")
    reasons = pd.to_numeric(tel.get("clock_event_reasons", pd.Series(dtype=float)), errors="coerce")
    reasons_known = bool(reasons.notna().any())
    t = tel["t_s"].to_numpy(float)
    throttle_bits = sum(THROTTLE_BITS)
    flag = np.array([bool(int(m) & throttle_bits) if pd.notna(m) else False for m in reasons]) \
        if reasons_known else np.zeros(len(tel), bool)
    spans = _spans(t, flag)
    seen_mask = int(np.bitwise_or.reduce([int(m) for m in reasons[flag]])) if flag.any() else 0
    names = [n for n in reason_names(seen_mask) if n in THROTTLE_BITS.values()]
    phases = [p for p in run.meta.get("phases") or [] if p.get("t_start_s") is not None]
    t_end = max([t[-1], *[p["t_end_s"] or p["t_start_s"] for p in phases]]) if len(t) else 1.0

    with mpl.rc_context(RC):
        fig = _new_figure(9.5, 1.65 * len(have) + 1.3)
        axes = fig.subplots(len(have), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (col, label) in zip(axes, have):
            d = pd.DataFrame({"t_s": t, col: pd.to_numeric(tel[col], errors="coerce")}).dropna()
            for n, p in enumerate(phases):
                ax.axvspan(p["t_start_s"], p["t_end_s"] if p["t_end_s"] is not None else t_end,
                           color="#4c72b0" if n % 2 == 0 else "#dd8452", alpha=0.08, lw=0, zorder=0)
            if col == "sm_clock_mhz" and {"core_clock_min_mhz", "core_clock_max_mhz"} <= set(tel.columns):
                lo = pd.to_numeric(tel["core_clock_min_mhz"], errors="coerce")
                hi = pd.to_numeric(tel["core_clock_max_mhz"], errors="coerce")
                ok = lo.notna() & hi.notna()
                if ok.any():
                    ok = ok.to_numpy()
                    ax.fill_between(t[ok], lo[ok], hi[ok], color="#0173b2", alpha=0.15, lw=0, label="min–max over cores")
            sns.lineplot(data=d, x="t_s", y=col, estimator=None, sort=True, color="#0173b2", lw=1.0, ax=ax,
                         marker="o" if len(d) < 60 else None, ms=3)
            for a, b in spans:
                ax.axvspan(a, b, color=THROTTLE_COLOUR, alpha=0.35, lw=0, zorder=1)
            ax.set_ylabel(("core " if cpu and col == "sm_clock_mhz" else "SM " if col == "sm_clock_mhz" else "")
                          + label)
            vals = d[col]
            if len(vals) and vals.max() == vals.min():  # a flat line still gets a readable range
                v = float(vals.iloc[0])
                ax.set_ylim(v - max(abs(v) * 0.05, 1), v + max(abs(v) * 0.05, 1))
            ax.set_xlim(0, t_end)
        axes[-1].set_xlabel("time since the start of the run (s)")
        top = axes[0].secondary_xaxis("top")
        wide = [p for p in phases if ((p["t_end_s"] or t_end) - p["t_start_s"]) > 0.03 * t_end]
        top.set_xticks([(p["t_start_s"] + (p["t_end_s"] or t_end)) / 2 for p in wide],
                       labels=[p["phase"] for p in wide], fontsize=7, rotation=30, ha="left")
        top.tick_params(length=0)
        top.spines["top"].set_visible(False)
        legend = [Patch(color="#4c72b0", alpha=0.25, label="sweep phases (alternating)")]
        if spans:
            legend.append(Patch(color=THROTTLE_COLOUR, alpha=0.5, label="throttled: " + ", ".join(names)))
        axes[0].legend(handles=legend + axes[0].get_legend_handles_labels()[0], loc="upper left",
                       bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)
        notes = []
        if missing:
            notes.append("not recorded on this backend: " + ", ".join(
                {"sm_clock_mhz": "clock", "mem_clock_mhz": "memory clock", "power_w": "power",
                 "temperature_c": "temperature"}[m] for m in missing))
        if not reasons_known:
            notes.append("no clock-event reasons: throttling cannot be observed")
        elif not spans:
            notes.append("no throttle reason was set during the run")
        fig.suptitle(f"Telemetry: {run.meta['device'].get('name', '?')} ({run.meta.get('backend', '?')})",
                     fontsize=10)
        if notes:
            fig.supxlabel("; ".join(notes).capitalize() + ".", fontsize=7.5, color="#444444", ha="left", x=0.01)
    caption = (f"Telemetry over the run ({len(tel)} samples): " + ", ".join(lab for _, lab in have)
               + "; sweep phases shaded; throttled intervals in orange"
               + (f" ({len(spans)} interval(s): {', '.join(names)})" if spans else "") + ". "
               + ("; ".join(notes).capitalize() + "." if notes else ""))
    return Drawn("telemetry", fig, caption)


# --------------------------------------------------------------------------- hierarchy figure


def cache_sizes(meta: dict) -> dict[str, int]:
    """{'l1': bytes, 'l2': bytes, ...}: the capacity a working set can occupy at each level.

    run.json's `cache_levels` (what the working-set sweep used: per-core caches times the cores in
    use) when present, else the device's own cache list or L2 size."""
    out: dict[str, int] = {}
    for lv in meta.get("cache_levels") or []:
        if isinstance(lv, dict) and lv.get("capacity_bytes") and lv.get("name") != "dram":
            out[str(lv["name"])] = int(lv["capacity_bytes"])
    if out:
        return out
    device = meta.get("device") or {}
    for c in device.get("caches") or []:
        if isinstance(c, dict) and c.get("size_bytes") and c.get("type", "Data") in ("Data", "Unified"):
            out[f"l{c.get('level', '?')}"] = int(c["size_bytes"])
    for key, name in (("shared_memory_bytes", "shared"), ("l1_bytes", "l1"), ("l2_bytes", "l2"),
                      ("l2_cache_bytes", "l2"), ("llc_bytes", "llc")):
        v = device.get(key)
        if v and name not in out and not (name == "llc" and v in out.values()):
            out[name] = int(v)
    return out


def hierarchy_samples(run: Run) -> pd.DataFrame:
    """hierarchy.csv with bandwidth_Bps (bytes / time_s when not stored) and a level for every sample:
    the stored one, else the plateau its working set lies on (gpuroof.hierarchy), else 'transition'."""
    h = optional_table(run, "hierarchy")
    if h is None:
        raise UsageError(f"{run.path}: run has no hierarchy.csv (the working-set sweep was not run)")
    if "bandwidth_Bps" not in h and {"bytes", "time_s"} <= set(h.columns):
        h["bandwidth_Bps"] = h["bytes"] / h["time_s"]
    missing = [c for c in ("working_set_bytes", "bandwidth_Bps") if c not in h]
    if missing:
        raise UsageError(f"{run.path / 'hierarchy.csv'}: lacks column(s) {', '.join(missing)}")
    h = h[(h["working_set_bytes"] > 0) & (h["bandwidth_Bps"] > 0)].copy()
    if h.empty:
        raise UsageError(f"{run.path / 'hierarchy.csv'}: no positive working set and bandwidth")
    h["valid"] = _bool(h["valid"]).fillna(True).astype(bool) if "valid" in h else True
    if "level" not in h:
        levels = run.meta.get("cache_levels") or []
        if levels:
            from gpuroof.hierarchy import Level, plateau_level

            lv = [Level(d["name"], d.get("capacity_bytes"), d.get("note", "")) for d in levels]
            h["level"] = [plateau_level(int(ws), lv) or "transition" for ws in h["working_set_bytes"]]
        else:
            h["level"] = "measured"
    h["level"] = h["level"].fillna("transition").astype(str)
    return h


def hierarchy_figure(run: Run) -> Drawn:
    """Bandwidth against working-set size, every sample and the median per size, caches marked."""
    import matplotlib as mpl
    import seaborn as sns
    from matplotlib import ticker

    run = as_run(run)
    h = hierarchy_samples(run)
    med = h[h["valid"]].groupby("working_set_bytes", sort=True)["bandwidth_Bps"].median().reset_index()
    caches = cache_sizes(run.meta)
    bw = _finite(run.meta["ceilings"]["bandwidth"])
    x_lo = 2.0 ** math.floor(math.log2(min([*h["working_set_bytes"], *caches.values()]) / 2))
    x_hi = 2.0 ** math.ceil(math.log2(max([*h["working_set_bytes"], *caches.values()]) * 2))
    y_hi = max([*h["bandwidth_Bps"], *bw.values()]) * 2
    y_lo = 10.0 ** math.floor(math.log10(min([*h["bandwidth_Bps"], *bw.values()]) / 2))
    order = ["shared", "l1", "l2", "l3", "llc", "dram", "measured", "transition"]
    levels = sorted(dict.fromkeys(h["level"]), key=lambda v: order.index(v) if v in order else len(order))
    pal = {lv: HIERARCHY_COLOURS.get(lv.lower(), "#9a9a9a" if lv == "transition" else
                                     _SPARE_COLOURS[i % len(_SPARE_COLOURS)]) for i, lv in enumerate(levels)}
    n_bad = int((~h["valid"]).sum())

    with mpl.rc_context(RC):
        fig = _new_figure(8.5, 5.0)
        ax = fig.add_subplot()
        ax.set_xscale("log", base=2)
        ax.set_xlim(x_lo, x_hi)
        step = max(1, math.ceil(math.log2(x_hi / x_lo) / 12))
        ax.xaxis.set_major_locator(ticker.FixedLocator(
            [2.0 ** e for e in range(int(math.log2(x_lo)), int(math.log2(x_hi)) + 1, step)]))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _ibytes(v)))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        _log_axis(ax, "y", "B/s", y_lo, y_hi)
        sns.scatterplot(data=h.assign(level=h["level"] + " samples"), x="working_set_bytes", y="bandwidth_Bps",
                        hue="level", hue_order=[f"{lv} samples" for lv in levels],
                        palette={f"{k} samples": v for k, v in pal.items()}, s=18, alpha=0.6, linewidth=0, ax=ax,
                        zorder=3)
        ax.collections[-1].set_gid("samples")
        ax.plot(med["working_set_bytes"], med["bandwidth_Bps"], color="#333333", lw=1.2, zorder=4,
                label="median per size (valid)")
        if n_bad:
            bad = h[~h["valid"]]
            ax.scatter(bad["working_set_bytes"], bad["bandwidth_Bps"], marker="x", s=40, color=INVALID_COLOUR,
                       zorder=5, label=f"invalid ({n_bad})")
        for name, size in caches.items():
            ax.axvline(size, color="#888888", lw=0.8, ls="--", zorder=1)
            ax.text(size, 0.98, f" {name.upper()} {_ibytes(size)}", transform=ax.get_xaxis_transform(),
                    rotation=90, ha="right", va="top", fontsize=7.5, color="#555555", gid=f"cache:{name}")
        for level, b in bw.items():
            ax.axhline(b, color=pal.get(level, HIERARCHY_COLOURS.get(level.lower(), "#555555")), lw=1.0,
                       alpha=0.7, ls="-.", zorder=2, label=f"{level.upper()} ceiling {si(b, 'B/s')}")
        ax.set_xlabel("working set (bytes)")
        ax.set_ylabel("read bandwidth (B/s)")
        ax.set_title(f"Memory hierarchy: {run.meta['device'].get('name', '?')}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0)
    caption = (f"Bandwidth against working-set size ({len(h)} samples, median per size as a line); the "
               "capacity each level offers the working set dashed" + (f" ({', '.join(caches)})" if caches else
                                                                       " (none reported)")
               + "; measured ceilings as dash-dot lines. Samples are coloured by the plateau their size lies on"
               + (", 'transition' between plateaus" if "transition" in levels else "") + "."
               + (f" {n_bad} invalid sample(s) marked ×." if n_bad else ""))
    return Drawn("hierarchy", fig, caption)


# --------------------------------------------------------------------------- all figures

BUILDERS = {"roofline": roofline_figure, "sweep": sweep_figure, "telemetry": telemetry_figure,
            "hierarchy": hierarchy_figure}


def draw_figures(run: Run | str | Path, what: str = "all") -> tuple[dict[str, Drawn], dict[str, str]]:
    """The figures asked for, and for `what="all"` the reason each optional one was skipped."""
    if what not in WHAT:
        raise UsageError(f"--what {what}: not a figure (allowed: {', '.join(WHAT)})")
    run = as_run(run)
    has_points = (run.path / "points.csv").exists()
    if has_points:
        samples(run)  # a run with no valid point is refused before anything is drawn
    elif workload_points(run) is None:
        raise UsageError(f"{run.path}: run has neither points.csv nor workloads.csv: nothing to plot")
    drawn: dict[str, Drawn] = {}
    skipped: dict[str, str] = {}
    optional = ("telemetry", "hierarchy") if has_points else ("sweep", "telemetry", "hierarchy")
    for name in (FIGURES if what == "all" else (what,)):
        if what == "all" and name in optional:  # a bench-only run has workloads and no sweep
            try:
                drawn[name] = BUILDERS[name](run)
            except UsageError as e:
                skipped[name] = str(e)
        else:
            drawn[name] = BUILDERS[name](run)
    return drawn, skipped


def make_figures(run: Run | str | Path, formats: Iterable[str] = ("png",), out_dir: str | Path | None = None,
                 what: str = "all") -> dict[str, list[Path]]:
    """Draw and write the figures: {name: [path per format]}; files go to `out_dir` (default
    <run>/figures/), named <figure>.<format>, each written atomically."""
    formats = check_formats([formats] if isinstance(formats, str) else formats)
    run = as_run(run)
    out = Path(out_dir) if out_dir else run.path / "figures"
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise UsageError(f"--out {out}: not a writable directory ({e.strerror or e})") from None
    return _write(run, formats, out, what)[0]


def _write(run: Run, formats: tuple[str, ...], out: Path, what: str) -> tuple[dict[str, list[Path]], dict[str, str]]:
    drawn, skipped = draw_figures(run, what)
    written: dict[str, list[Path]] = {}
    for name, d in drawn.items():
        written[name] = []
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            atomic_write_bytes(path, render(d, fmt))
            written[name].append(path)
    return written, skipped


# --------------------------------------------------------------------------- command line


def _formats(text: str) -> tuple[str, ...]:
    items = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{text!r}: not supported (allowed: {', '.join(FORMATS)}, "
                                         "or several joined by commas)")
    return items


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof plot` on the CLI's subparsers."""
    p = sub.add_parser("plot", parents=[common], help="draw the run's figures (roofline, sweep, telemetry, ...)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `gpuroof measure` or `run`")
    p.add_argument("--what", choices=WHAT, default="all", help="which figure (default all that the run has)")
    p.add_argument("--format", type=_formats, default=("png",), dest="formats",
                   help="png (default), svg or pdf; several joined by commas, e.g. png,pdf")
    p.add_argument("--out", default=None, help="directory for the figures (default RUN_DIR/figures)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    import sys

    run = as_run(args.run_dir)
    out = Path(args.out) if args.out else run.path / "figures"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: not a writable directory ({e.strerror or e})") from None
    written, skipped = _write(run, args.formats, out, args.what)
    for name, why in skipped.items():
        print(f"gpuroof: skipped the {name} figure: {why}", file=sys.stderr)
    for paths in written.values():
        for p in paths:
            print(p)
    return 0
