"""The memory-hierarchy figure: bandwidth against working-set size, cache capacities marked."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from gpuroof.errors import UsageError
from gpuroof.plots.common import (HIERARCHY_COLOURS, INVALID_COLOUR, RC, _SPARE_COLOURS, Drawn, _bool,
                                  _ibytes, _log_axis, _new_figure, as_run, optional_table)
from gpuroof.results import Run
from gpuroof.units import si

if TYPE_CHECKING:
    pass


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
    bw = run.ceilings.bandwidth
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
