"""The telemetry figure: clocks, power and temperature over the run, phases shaded, throttling marked."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gpuroof.errors import UsageError
from gpuroof.plots.common import (RC, THROTTLE_COLOUR, Drawn, _new_figure, as_run, optional_table)
from gpuroof.nvml import THROTTLE_BITS, reason_names
from gpuroof.results import Run

if TYPE_CHECKING:
    pass


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
