"""Figures of many runs: each device model's roofline (median, spread, theoretical), one panel per ceiling
with every run a point, and each ceiling over time per host; drawn from a `Comparison` alone."""
from __future__ import annotations

import math
from pathlib import Path
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gpuroof.errors import UsageError
from gpuroof.plots.common import INVALID_COLOUR, RC, Drawn, _freeze_layout, fit_legend, _log_axis, _new_figure
from gpuroof.plots.labels import LabelPlacer
from gpuroof.results import check_out_file
from gpuroof.roofline import Roofline, known
from gpuroof.plots.roofline import (GROUND, THEORETICAL_SHOWN, _compute_label, _slope_label, roof_segments,
                                    roofline_axes, unit_name)
from gpuroof.units import si

if TYPE_CHECKING:
    from gpuroof.compare import Comparison

#: One colour per device model (seaborn's colorblind palette, reordered so the first two differ most):
#: runs of one model share it, so a model reads as one roof with its spread, not as N lines.
MODEL_COLOURS = ("#0173b2", "#d55e00", "#029e73", "#cc78bc", "#ca9161", "#56b4e9", "#949494", "#de8f05")
#: Words that name the maker or the kind of chip, not the model: left out of a model's short tag.
VENDOR_WORDS = {"nvidia", "amd", "intel", "intel(r)", "geforce", "tesla", "core(tm)", "xeon(r)", "cpu",
                "processor", "apple", "arm"}
#: Runs of one host span at least this long (seconds) before their ceilings are drawn over time.
DAY_S = 86400.0
SPREAD_ALPHA = 0.16


@dataclass
class Model:
    """The runs of one device model on one backend, as `compare` groups them."""

    backend: str
    device: str
    tag: str  # a short name for labels: 'H100', 'EPYC'
    colour: str
    members: list[int]  # row numbers of Comparison.runs


def short_tag(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100', 'AMD EPYC 9654 96-Core Processor' -> 'EPYC 9654',
    'AMD EPYC (family 25 model 1, avx2, 2 cores)' -> 'EPYC': the words that tell a model apart."""
    words = [w for w in re.sub(r"\(.*?\)", " ", name).split() if w.lower() not in VENDOR_WORDS]
    if not words:
        return name.strip() or "?"
    for i, w in enumerate(words[:3]):
        if any(ch.isdigit() for ch in w):  # the model number; a bare one keeps its family word before it
            return " ".join(words[i - 1:i + 1]) if i and w[0].isdigit() else w
    return " ".join(words[:2])


def models(c: "Comparison") -> list[Model]:
    """Device models in the order their first run appears, each with a colour and a distinct tag."""
    found: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(c.runs.to_dict("records")):
        found.setdefault((str(r.get("backend")), str(r.get("device"))), []).append(i)
    short = {k: short_tag(k[1]) for k in found}
    tags = dict(short)
    for tag in set(short.values()):  # models that share a tag are numbered: 'EPYC [1]', 'EPYC [2]'
        same = [k for k in found if short[k] == tag]
        if len(same) > 1:
            tags.update({k: f"{tag} [{n}]" for n, k in enumerate(same, start=1)})
    return [Model(b, d, tags[(b, d)], MODEL_COLOURS[i % len(MODEL_COLOURS)], m)
            for i, ((b, d), m) in enumerate(found.items())]


def ceiling_title(kind: str, name: str) -> str:
    """'DRAM bandwidth', 'L2 bandwidth', 'shared memory bandwidth', 'float32 vector', 'float16 matrix'."""
    if kind == "bandwidth":
        return "shared memory bandwidth" if name == "shared" else f"{name.upper()} bandwidth"
    return unit_name(name)


def _unit(kind: str) -> str:
    return "B/s" if kind == "bandwidth" else "FLOP/s"


def _suffix(kind: str) -> str:
    return "Bps" if kind == "bandwidth" else "flops"


def _values(c: "Comparison", m: Model, col: str) -> list[tuple[int, float]]:
    """(row, value) of the model's runs that measured this ceiling."""
    out = []
    for i in m.members:
        v = c.runs.iloc[i].get(col)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            out.append((i, float(v)))
    return out


def _median(c: "Comparison", m: Model, col: str) -> tuple[float, float, float] | None:
    vals = [v for _, v in _values(c, m, col)]
    return (float(np.median(vals)), min(vals), max(vals)) if vals else None


# --------------------------------------------------------------------------- rooflines of every model


def rooflines_figure(c: "Comparison") -> Drawn:
    """Each device model's roofline in the roofline figure's style: DRAM slope and compute roofs at
    the median of the model's runs, solid, each labelled once with its value and its share of
    theoretical; the min-max over the runs as a band; a theoretical roof dashed only where the
    median reaches less than THEORETICAL_SHOWN of it; ridge points as circles. One colour per
    model (the roofline figure colours by unit; here the model is what is compared)."""
    import matplotlib as mpl
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ms = models(c)
    several = len(ms) > 1
    per: list[dict] = []
    for m in ms:
        meas: dict[str, dict[str, tuple[float, float, float]]] = {"bandwidth": {}, "compute": {}}
        theo: dict[str, dict[str, float]] = {"bandwidth": {}, "compute": {}}
        for kind, name, col in c.ceilings:
            got = _median(c, m, col)
            if got is None:
                continue
            meas[kind][name] = got
            t = [c.runs.iloc[i].get(f"{name}_theoretical_{_suffix(kind)}") for i in m.members]
            t = [float(x) for x in t if isinstance(x, (int, float)) and math.isfinite(x) and x > 0]
            if t:
                theo[kind][name] = float(np.median(t))
        median = known({k: {n: v[0] for n, v in meas[k].items()} for k in meas})
        level = median.reference_level()
        if level is None or not meas["compute"]:
            continue
        per.append({"model": m, "meas": meas, "theo": theo, "level": level,
                    "roof": Roofline(bandwidth={level: median.bandwidth[level]}, compute=median.compute)})

    ridges = [x for p in per for x in p["roof"].ridges().values()]
    shown = []
    for p in per:
        med = {k: {n: v[0] for n, v in p["meas"][k].items()} for k in p["meas"]}
        p["med"] = p["roof"].to_dict()
        p["shown_theo"] = {
            "compute": {u: t for u, t in p["theo"]["compute"].items()
                        if u in med["compute"] and med["compute"][u] / t < THEORETICAL_SHOWN},
            "bandwidth": {lv: t for lv, t in p["theo"]["bandwidth"].items()
                          if lv == p["level"] and med["bandwidth"][lv] / t < THEORETICAL_SHOWN}}
        shown += [t / p["med"]["bandwidth"][p["level"]] for t in p["shown_theo"]["compute"].values()]
    xs = ridges + shown or [1.0]
    x_lo = 10.0 ** math.floor(math.log10(min(xs) / 10))
    x_hi = 10.0 ** math.ceil(math.log10(max(xs) * 10))
    y_hi = max([v for p in per for v in p["med"]["compute"].values()]
               + [t for p in per for t in p["shown_theo"]["compute"].values()] + [1.0]) * 4
    y_lo = min([p["med"]["bandwidth"][p["level"]] * x_lo * 3 for p in per] + [y_hi])
    y_lo = 10.0 ** math.floor(math.log10(max(y_lo, y_hi * 1e-7)))

    with mpl.rc_context(RC):
        fig = _new_figure(8.8, 6.6)
        ax = roofline_axes(fig, x_lo, x_hi, y_lo, y_hi)
        n_runs = sum(len(p["model"].members) for p in per)
        ax.set_title(f"Rooflines of {len(per)} device model{'s' * several}, {n_runs} run{'s' * (n_runs > 1)}: "
                     "each model at the median of its runs")
        all_roofs: list[tuple[dict, Any]] = []
        for p in per:
            m = p["model"]
            roofs = roof_segments(p["med"], x_lo, x_hi, "measured")
            theo_roofs = roof_segments(p["shown_theo"], x_lo, x_hi, "theoretical", partner=p["med"])
            for r in roofs + theo_roofs:
                is_meas = r.source == "measured"
                (line,) = ax.plot(r.x, r.y, color=m.colour, lw=(2.1 if "matrix" in r.name else 1.7) if is_meas else 1.0,
                                  ls="-" if is_meas else (0, (4, 3)), alpha=1.0 if is_meas else 0.65,
                                  zorder=3 if is_meas else 2, solid_capstyle="butt")
                line.set_gid(f"roof:{r.source}:{m.tag}:{r.kind}:{r.name}")
                all_roofs.append((p, r))
            for r in roofs:  # the spread of the model's runs around the median roof
                lo, hi = p["meas"][r.kind][r.name][1:]
                if hi <= lo * (1 + 1e-9):
                    continue
                if r.kind == "compute":
                    band = ax.fill_between(list(r.x), [lo, lo], [hi, hi], color=m.colour, alpha=SPREAD_ALPHA, lw=0,
                                           zorder=1)
                else:
                    bx = np.geomspace(r.x[0], r.x[1], 50)
                    band = ax.fill_between(bx, lo * bx, np.minimum(hi * bx, r.y[1]), color=m.colour,
                                           alpha=SPREAD_ALPHA, lw=0, zorder=1)
                band.set_gid(f"spread:{m.tag}:{r.name}")
            for u, ridge in p["roof"].ridges().items():
                peak = p["roof"].compute[u]
                (dot,) = ax.plot([ridge], [peak], marker="o", ms=5, mfc="white", mec=m.colour, mew=1.3,
                                 zorder=5, ls="none")
                dot.set_gid(f"ridge:{m.tag}:{u}")

        handles = [Line2D([], [], color=p["model"].colour, lw=2, label=_model_label(p["model"], several)) for p in per]
        if any(len(p["model"].members) > 1 for p in per):
            handles.append(Patch(facecolor="#777777", alpha=SPREAD_ALPHA * 2, label="min-max over the runs"))
        if any(p["shown_theo"]["compute"] or p["shown_theo"]["bandwidth"] for p in per):
            handles.append(Line2D([], [], color="#555555", lw=1.0, ls=(0, (4, 3)), label="theoretical"))
        handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="#333333", mew=1.3,
                              label="ridge vs DRAM"))
        fit_legend(fig, handles, 3,
                   title="colour = device model; labels: median value · share of theoretical at the measured clock",
                   title_fontsize=8.5)
        _freeze_layout(fig)

        placer = LabelPlacer(ax)
        for _, r in all_roofs:
            placer.add_polyline(r.x, r.y)
        placer.add_points(np.array([[pk / p["med"]["bandwidth"][p["level"]], pk] for p in per
                                    for pk in p["med"]["compute"].values()]), 5.0)
        placed: list[Any] = []
        missing: list[str] = []
        # compute roofs first, highest first: near the right edge they have the least room
        compute = sorted(((p, r) for p, r in all_roofs if r.source == "measured" and r.kind == "compute"),
                         key=lambda pr: -pr[1].value)
        for p, r in compute:
            m = p["model"]
            text = f"{m.tag + ' ' if several else ''}{unit_name(r.name)} {si(r.value, 'FLOP/s', 3)}" \
                   + _share(r.value, p["theo"]["compute"].get(r.name))
            lab = _compute_label(placer, r, None, None, x_lo, x_hi, text=text, colour=m.colour,
                                 gid=f"label:roof:{m.tag}:{r.name}")
            if lab is None:  # roofs close together: further up or down, with a leader line
                lab = placer.place(text, [(x, r.value) for x in np.geomspace(x_hi, max(r.x[0], x_lo) * 1.5, 12)],
                                   offsets=[(-4, dy) for dy in (9, -9, 15, -15, 21, -21, 27, -27)],
                                   gid=f"label:roof:{m.tag}:{r.name}", fontsize=8, color=m.colour,
                                   fontweight="bold", accept=LabelPlacer.LABEL - 1, bbox=GROUND)
            (placed if lab is not None else missing).append(lab if lab is not None else text)
        for p in per:  # then the slopes: each has its whole length to choose from
            m = p["model"]
            lv = p["level"]
            r = next(r for q, r in all_roofs if q is p and r.source == "measured" and r.kind == "bandwidth")
            text = f"{m.tag + ' ' if several else ''}{lv.upper()} {si(r.value, 'B/s', 3)}" \
                   + _share(r.value, p["theo"]["bandwidth"].get(lv))
            lab = _slope_label(ax, placer, r, None, x_lo, y_lo, y_hi, text=text, colour=m.colour,
                               gid=f"label:roof:{m.tag}:{lv}")
            (placed if lab is not None else missing).append(lab if lab is not None else text)
    caption = (f"The roofline of each device model at the median of its runs ({', '.join(p['model'].device for p in per)}): "
               "DRAM slope and compute roofs solid, each labelled once with its value and its share of the "
               "theoretical peak at the measured clock; the band around a roof is the lowest to the highest run; "
               f"a theoretical roof is dashed where the median reaches less than {THEORETICAL_SHOWN:.0%} of it. "
               "Cache levels and each run on its own: the per-ceiling panels.")
    if missing:
        caption += f" No room on the plot for: {'; '.join(missing)}."
    return Drawn("compare-rooflines", fig, caption, placed)


def _model_label(m: Model, tagged: bool) -> str:
    """'H100: NVIDIA H100 80GB HBM3 (3 runs)': the tag the labels use, the full name, the runs."""
    n = len(m.members)
    name = m.device if not tagged or m.tag == m.device else f"{m.tag}: {m.device}"
    return f"{name} ({n} run{'s' * (n > 1)})"


def _share(value: float, theoretical: float | None) -> str:
    return f" · {value / theoretical:.0%}" if theoretical else ""


# --------------------------------------------------------------------------- one panel per ceiling


def _grid(n: int, ncols: int = 4) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def _panels(fig: Any, n: int, ncols: int) -> list[Any]:
    """`n` panels in rows of `ncols`, the unused cells of the last row removed."""
    nrows, cols = _grid(n, ncols)
    axes = list(fig.subplots(nrows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.remove()
    return axes[:n]


def ceilings_figure(c: "Comparison") -> Drawn:
    """One panel per ceiling: each run a point at its share of its model's median, a column per
    device model with the median (a bar), the lowest to highest run (a band) and the flag threshold
    (dotted, where the model has enough runs to flag one); flagged runs ringed in red. The model's
    median value is written under its column."""
    import matplotlib as mpl
    from matplotlib import ticker
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    min_group = c.min_group

    ms = models(c)
    flagged = {(f["run"], f["ceiling"]) for f in c.flags}
    names = list(c.runs["run"])
    keys = [k for k in c.ceilings if any(_values(c, m, k[2]) for m in ms)]
    nrows, ncols = _grid(len(keys))
    n_flagged = 0
    with mpl.rc_context(RC):
        fig = _new_figure(2.25 * ncols + 0.7, 2.25 * nrows + 1.3)
        for j, (ax, (kind, name, col)) in enumerate(zip(_panels(fig, len(keys), ncols), keys)):
            present = [m for m in ms if _values(c, m, col)]
            rel_all: list[float] = []
            ticks = []
            thresholds = False
            for xi, m in enumerate(present):
                vals = _values(c, m, col)
                med = float(np.median([v for _, v in vals]))
                rel = np.array([v / med * 100 for _, v in vals])
                rel_all += list(rel)
                off = np.linspace(-0.2, 0.2, len(vals)) if len(vals) > 1 else np.zeros(1)
                if rel.max() > rel.min():
                    ax.fill_between([xi - 0.3, xi + 0.3], [rel.min()] * 2, [rel.max()] * 2, color=m.colour,
                                    alpha=SPREAD_ALPHA, lw=0, zorder=1)
                ax.hlines(100, xi - 0.32, xi + 0.32, color=m.colour, lw=2.0, zorder=2)
                if len(vals) >= min_group:
                    thresholds = True
                    ax.hlines(100 * (1 - c.threshold), xi - 0.32, xi + 0.32, color=INVALID_COLOUR, lw=1.0,
                              ls=(0, (1, 1.5)), zorder=2)
                pts = ax.scatter(xi + off, rel, s=26, color=m.colour, edgecolors="white", linewidths=0.6, zorder=4)
                pts.set_gid(f"runs:{name}:{m.tag}")
                bad = [k for k, (i, _) in enumerate(vals) if (names[i], name) in flagged]
                if bad:
                    n_flagged += len(bad)
                    ring = ax.scatter(xi + off[bad], rel[bad], s=110, facecolor="none", edgecolor=INVALID_COLOUR,
                                      lw=1.3, zorder=5)
                    ring.set_gid(f"flagged:{name}:{m.tag}")
                ticks.append(f"{m.tag} ×{len(vals)}\n{si(med, _unit(kind), 3)}")
            ax.set_xticks(range(len(present)), ticks)
            ax.tick_params(axis="x", length=0, labelsize=7.5)
            ax.set_xlim(-0.6, len(present) - 0.4)
            lo = min(rel_all + ([100 * (1 - c.threshold)] if thresholds else []) + [100])
            hi = max(rel_all + [100])
            pad = max(4.0, (hi - lo) * 0.12)
            ax.set_ylim(lo - pad, hi + pad)
            ax.yaxis.set_major_locator(ticker.MaxNLocator(4))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.0f}%"))
            ax.grid(axis="x", visible=False)
            ax.set_title(ceiling_title(kind, name), fontsize=9)
            if j % ncols == 0:
                ax.set_ylabel("% of the model's median")
        handles = [Line2D([], [], ls="none", marker="o", mfc="#555555", mec="white", ms=6, label="a run"),
                   Line2D([], [], color="#555555", lw=2, label="median of the model's runs"),
                   Patch(facecolor="#777777", alpha=SPREAD_ALPHA * 2, label="lowest to highest run"),
                   Line2D([], [], color=INVALID_COLOUR, lw=1, ls=(0, (1, 1.5)),
                          label=f"flagged below ({c.threshold:.0%} under the median, {min_group}+ runs)"),
                   Line2D([], [], ls="none", marker="o", mfc="none", mec=INVALID_COLOUR, mew=1.3, ms=9,
                          label="flagged run")]
        handles += [Line2D([], [], ls="none", marker="s", mfc=m.colour, mec="none", ms=7, label=_model_label(m, True))
                    for m in ms]
        fit_legend(fig, handles, 3)
        fig.suptitle("Every run against its device model's median, one panel per ceiling "
                     "(under each column: the model, its runs, the median value)", fontsize=10)
        _freeze_layout(fig)
    caption = (f"{len(names)} run(s) of {len(ms)} device model(s), one panel per ceiling: each run is a point at its "
               "share of the median of its model's runs, so a slow card sits low whatever its scale; the bar is "
               "the median, the band the lowest to highest run, the dotted red line the flag threshold "
               f"({c.threshold:.0%} below the median, drawn where a model has {min_group} or more runs). "
               f"{n_flagged} flagged point(s) are ringed in red.")
    return Drawn("compare-ceilings", fig, caption)


# --------------------------------------------------------------------------- each ceiling over time


def run_times(c: "Comparison") -> pd.Series:
    """When each run was made (UTC), NaT where run.json does not say."""
    return pd.to_datetime(c.runs["created_utc"], utc=True, errors="coerce", format="ISO8601")


def _series_keys(c: "Comparison") -> pd.Series:
    return c.runs["host"].astype(str) + "\0" + c.runs["backend"].astype(str) + "\0" + c.runs["device"].astype(str)


def spanning(c: "Comparison") -> set[str]:
    """The (host, device model) series whose runs lie a day or more apart."""
    t = run_times(c)
    spans = t.groupby(_series_keys(c)).agg(lambda s: (s.max() - s.min()).total_seconds() if s.notna().any() else 0.0)
    return set(spans.index[spans.fillna(0) >= DAY_S])


def spans_days(c: "Comparison") -> bool:
    """Whether the runs of some host (and device model) lie a day or more apart."""
    return bool(spanning(c))


def _si_axis(ax: Any, unit: str) -> None:
    """Linear y ticks with scaled units and just enough digits that no two ticks read the same."""
    from matplotlib import ticker

    ax.yaxis.set_major_locator(ticker.MaxNLocator(4))
    ticks = [v for v in ax.get_yticks() if ax.get_ylim()[0] <= v <= ax.get_ylim()[1]]
    step = min((b - a for a, b in zip(ticks, ticks[1:])), default=0)
    top = max((abs(v) for v in ticks), default=0)
    digits = 3 if not step or not top else max(3, math.ceil(math.log10(top / step)) + 1)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: si(y, unit, digits)))


def over_time_figure(c: "Comparison") -> Drawn | None:
    """Each ceiling over time, one line per host and device model, flagged runs ringed; None when no
    host's runs span a day (a time axis of minutes says nothing about drift)."""
    import matplotlib as mpl
    import matplotlib.dates as mdates
    from matplotlib.lines import Line2D

    long = spanning(c)
    if not long:
        return None
    t = run_times(c)
    ms = {(m.backend, m.device): m for m in models(c)}
    runs = c.runs.assign(t=t, key=c.runs["host"].astype(str) + " · "
                         + [ms[(str(b), str(d))].tag for b, d in zip(c.runs["backend"], c.runs["device"])])
    runs = runs[runs["t"].notna() & _series_keys(c).isin(long)]  # a host measured once has no history
    keys = list(dict.fromkeys(runs["key"]))
    colours = {k: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, k in enumerate(keys)}
    markers = ("o", "s", "D", "^", "v", "P")
    flagged = {(f["run"], f["ceiling"]) for f in c.flags}
    ceilings = [k for k in c.ceilings if runs[k[2]].notna().any()]
    nrows, ncols = _grid(len(ceilings), 3)
    t_lo, t_hi = runs["t"].min(), runs["t"].max()
    pad = (t_hi - t_lo) * 0.06
    with mpl.rc_context(RC):
        fig = _new_figure(3.0 * ncols + 0.6, 2.3 * nrows + 1.2)
        for ax, (kind, name, col) in zip(_panels(fig, len(ceilings), ncols), ceilings):
            vals = pd.to_numeric(runs[col], errors="coerce")
            ok = vals.notna() & (vals > 0)
            for i, k in enumerate(keys):
                sel = runs[ok & (runs["key"] == k)].sort_values("t")
                if sel.empty:
                    continue
                line = ax.plot(sel["t"], sel[col].astype(float), color=colours[k], marker=markers[i % len(markers)],
                               ms=4, lw=1.2, zorder=3)[0]
                line.set_gid(f"series:{name}:{k}")
                bad = sel[[(r, name) in flagged for r in sel["run"]]]
                if len(bad):
                    ax.scatter(bad["t"], bad[col].astype(float), s=90, facecolor="none", edgecolor=INVALID_COLOUR,
                               lw=1.3, zorder=5)
            v = vals[ok].astype(float)
            lo, hi = float(v.min()), float(v.max())
            if hi / lo > 8:
                _log_axis(ax, "y", _unit(kind), 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi)))
            else:
                span = max(hi - lo, hi * 0.05)
                ax.set_ylim(max(0.0, lo - span * 0.25), hi + span * 0.25)
                _si_axis(ax, _unit(kind))
            ax.set_xlim(t_lo - pad, t_hi + pad)
            loc = mdates.AutoDateLocator(minticks=2, maxticks=4)
            ax.xaxis.set_major_locator(loc)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, show_offset=False))
            ax.tick_params(axis="x", labelsize=7)
            ax.set_title(ceiling_title(kind, name), fontsize=9)
        handles = [Line2D([], [], color=colours[k], marker=markers[i % len(markers)], ms=4, lw=1.2, label=k)
                   for i, k in enumerate(keys)]
        handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec=INVALID_COLOUR, mew=1.3, ms=8,
                              label="flagged run"))
        fit_legend(fig, handles, 3, title="host · device model", title_fontsize=8.5)
        fig.suptitle(f"Each ceiling over time, per host ({t_lo:%Y-%m-%d} to {t_hi:%Y-%m-%d}, UTC)", fontsize=10)
        _freeze_layout(fig)
    caption = (f"Each ceiling of {len(runs)} run(s) against the time it was measured, one line per host and device "
               "model whose runs span a day or more: a card that drifts (a failing fan, a memory channel, a driver "
               "update) shows as a step. Flagged runs ringed in red.")
    return Drawn("compare-over-time", fig, caption)


__all__ = ["Model", "models", "short_tag", "ceiling_title", "rooflines_figure", "ceilings_figure", "over_time_figure",
           "spans_days", "spanning", "run_times", "MODEL_COLOURS"]


# --------------------------------------------------------------------------- the figures, written

#: Files `compare --plot` writes.
PLOT_FORMATS = (".png", ".svg", ".pdf")


def plot_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in PLOT_FORMATS:
        raise UsageError(f"--plot {path}: unknown figure format {suffix or '(no suffix)'!r} "
                         f"(allowed: {', '.join(PLOT_FORMATS)})")
    check_out_file(path, "--plot")
    return suffix[1:]


def plot_paths(path: str | Path) -> tuple[Path, Path]:
    """FILE (the rooflines) and FILE-ceilings beside it, with the same suffix (one panel per ceiling)."""
    p = Path(path)
    return p, p.with_name(f"{p.stem}-ceilings{p.suffix}")


def write_plot(c: "Comparison", path: str | Path) -> list[Path]:
    """The comparison's two figures (gpuroof.plots.compare), each written atomically: the rooflines
    of every device model to `path`, one panel per ceiling beside it (see `plot_paths`)."""
    from gpuroof.plots.common import render
    from gpuroof.results import atomic_write_bytes

    fmt = plot_format(path)
    out = []
    for target, build in zip(plot_paths(path), (rooflines_figure, ceilings_figure)):
        check_out_file(target, "--plot")
        atomic_write_bytes(target, render(build(c), fmt))
        out.append(target)
    return out
