"""What every figure shares: style, colours, reading a run, log axes, writing a figure to bytes."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window, never need a display

import pandas as pd

from gpuroof.errors import UsageError
from gpuroof.results import Run, load_run
from gpuroof.roofline import finite_rates as _finite  # noqa: F401  (the plots' name for it)
from gpuroof.units import FIGURE_FORMATS as FORMATS, si

if TYPE_CHECKING:  # the drawing libraries are imported when a figure is drawn: `gpuroof --help` stays fast
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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


#: Compute units by family, as Nsight Compute and Intel Advisor tell them apart: vector FMA units in
#: blues, matrix units (tensor cores, AMX, BLAS GEMM) in oranges; darker for the wider dtype.
VECTOR_COLOURS = {"float64": "#08306b", "float32": "#2171b5", "tfloat32": "#4292c6", "float16": "#4a8fc4",
                  "bfloat16": "#5e9fd0", "int8": "#3d6e9e", "float8": "#6aa6d6"}
MATRIX_COLOURS = {"float64": "#7f2704", "float32": "#a63603", "tfloat32": "#c44103", "float16": "#d94801",
                  "bfloat16": "#e6550d", "int8": "#b84a1a", "float8": "#f16913"}


def unit_colour(unit: str) -> str:
    """Colour of a compute unit: 'float32' (vector, a blue) or 'float32-matrix' (matrix, an orange)."""
    dtype = unit.split("-")[0]
    family = MATRIX_COLOURS if unit.endswith("-matrix") else VECTOR_COLOURS
    return family.get(dtype, "#c44103" if family is MATRIX_COLOURS else "#2b6ca8")


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
    if not r.measured:
        raise UsageError(f"{r.path}: run is {r.status} (no measured ceilings); "
                         "nothing to plot, measure again")
    if not r.ceilings.compute or not r.ceilings.bandwidth:
        raise UsageError(f"{r.path}: run.json has no measured compute or bandwidth ceiling")
    return r


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



# --------------------------------------------------------------------------- axes helpers


def _new_figure(w: float, h: float, **kw: Any) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained", **kw)
    FigureCanvasAgg(fig)  # no pyplot: nothing global, nothing to close, safe from any thread
    return fig


def fit_legend(fig: "Figure", handles: list[Any], ncols: int, **kw: Any) -> Any:
    """A legend under the plot that fits the figure's width: fewer columns while it is wider than the
    figure, then, in one column, labels wrapped at the width that fits (a device name of 60 characters
    never runs past the edge). Returns the legend; the layout is drawn once per try."""
    import textwrap

    ncols = max(1, min(ncols, len(handles)))
    labels = [h.get_label() for h in handles]
    width = max(len(t) for t in labels)
    while True:
        legend = fig.legend(handles=handles, labels=labels, loc="outside lower center", ncols=ncols,
                            frameon=False, **kw)
        fig.canvas.draw()
        box = legend.get_window_extent()
        if box.width <= fig.bbox.width * 0.98 or (ncols == 1 and width <= 20):
            return legend
        legend.remove()
        if ncols > 1:
            ncols -= 1
        else:  # one column still too wide: wrap at the share of characters that fits
            width = max(20, int(width * fig.bbox.width * 0.95 / box.width) - 1)
            labels = [textwrap.fill(t, width) for t in labels]


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
