"""The sweep figure: every timed sample per dtype against intensity, with the fitted roofline over them."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from gpuroof.plots.common import (INVALID_COLOUR, RC, THROTTLE_COLOUR, Drawn, _decades, dtype_colour,
                                  _log_axis, _marker_map, _new_figure, as_run, medians, samples)
from gpuroof.results import Run
from gpuroof.units import si

if TYPE_CHECKING:
    pass


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
    comp, bw = run.ceilings.compute, run.ceilings.bandwidth
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
