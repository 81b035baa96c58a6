"""Figures: content checks on a synthetic GPU-like run (every feature) and a real CPU run (end to end)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpuroof import plots
from gpuroof.errors import UsageError
from gpuroof.results import KIND, SCHEMA_VERSION, dumps

# ----------------------------------------------------------------------------- a synthetic run

SYN_BW = {"dram": 3.0e12, "l2": 9.0e12}
SYN_COMPUTE = {"float64": 3.0e13, "float32": 5.5e13, "float16": 1.1e14, "float16-matrix": 6.0e14}
SYN_THEO = {"bandwidth": {"dram": 3.35e12, "l2": None},
            "compute": {"float64": 3.4e13, "float32": 6.7e13, "float16": 1.34e14, "float16-matrix": 9.9e14}}
ITEM = {"float64": 8, "float32": 4, "float16": 2}
FMAS = (0, 1, 4, 16, 64, 256, 1024)
REPS = 4


def synthetic_points(rng: np.random.Generator) -> pd.DataFrame:
    """Samples that follow min(P, B·I) with 3% noise; one point invalid, float16 rw at 64 FMAs throttled."""
    rows = []
    for dtype, size in ITEM.items():
        for variant in ("ro", "rw"):
            for f in FMAS:
                elements = (1 << 30) // size
                nb = elements * size * (2 if variant == "rw" else 1)
                flops = 2 * f * elements
                t_model = max(flops / SYN_COMPUTE[dtype], nb / SYN_BW["dram"])
                valid = not (dtype == "float32" and variant == "ro" and f == 16)
                throttled = dtype == "float16" and variant == "rw" and f == 64
                for rep in range(REPS):
                    rows.append({"dtype": dtype, "variant": variant, "fmas_per_element": f, "elements": elements,
                                 "working_set_bytes": nb, "flops": flops, "bytes": nb,
                                 "intensity_flop_per_byte": flops / nb, "rep": rep,
                                 "time_s": t_model * (1 + 0.03 * rng.random()), "valid": valid,
                                 "rel_error": 0.0 if valid else 0.5, "sm_clock_mhz": 1755.0 if throttled else 1980.0,
                                 "mem_clock_mhz": 2619.0, "power_w": 650.0, "temperature_c": 60.0,
                                 "clock_event_reasons": 4 if throttled else 0, "throttled": throttled})
    return pd.DataFrame(rows)


def synthetic_telemetry(rng: np.random.Generator) -> tuple[pd.DataFrame, list[dict]]:
    t = np.arange(0, 30, 0.05)
    throttled = (t > 20) & (t < 22)
    phases, names = [], ["setup", "float64 ro", "float64 rw", "float32 ro", "float32 rw", "float16 ro", "float16 rw"]
    for i, n in enumerate(names):
        phases.append({"phase": n, "t_start_s": i * 30 / len(names), "t_end_s": (i + 1) * 30 / len(names)})
    df = pd.DataFrame({
        "t_s": t, "phase": [names[min(int(x / (30 / len(names))), len(names) - 1)] for x in t],
        "sm_clock_mhz": np.where(throttled, 1755.0, 1980.0), "mem_clock_mhz": 2619.0,
        "power_w": 300 + 400 * (t > 1) + 10 * rng.random(len(t)), "temperature_c": 40 + 25 * (1 - np.exp(-t / 8)),
        "clock_event_reasons": np.where(throttled, 0x4, 0x1 * (t < 1)).astype(int)})
    return df, phases


def synthetic_workloads() -> pd.DataFrame:
    """MLP/LSTM/CNN-like cases; one LSTM case above its DRAM roof (cache reuse), the other invalid."""
    cases = [  # name, case, dtype, unit, flops, bytes, time_s, valid
        ("mlp", "b=16", "float16", "float16-matrix", 2 * 16 * 4096 * 4096, 2 * 4096 * 4096 + 4 * 16 * 4096, 1.3e-5, True),
        ("mlp", "b=512", "float16", "float16-matrix", 2 * 512 * 4096 * 4096, 2 * 4096 * 4096 + 4 * 512 * 4096, 6.5e-5, True),
        ("lstm", "h=1024", "float32", "float32", 2 * 8 * 4 * 1024 * 2048, 4 * 4 * 1024 * 2048, 8.0e-6, True),
        ("lstm", "h=4096", "float32", "float32", 2 * 8 * 4 * 4096 * 8192, 4 * 4 * 4096 * 8192, 2.7e-4, False),
        ("conv2d", "resnet-3x3", "float16", "float16-matrix", 2 * 64 * 56 * 56 * 64 * 64 * 9, 2 * 64 * 56 * 56 * 64 * 2, 6e-4, True),
        ("gemm", "4096^3", "float64", "float64", 2 * 4096 ** 3, 3 * 8 * 4096 ** 2, 4.9e-3, True),
    ]
    rows = []
    for name, case, dtype, unit, flops, nb, t, valid in cases:
        ai = flops / nb
        att = min(SYN_COMPUTE[unit], SYN_BW["dram"] * ai)
        pred = max(flops / SYN_COMPUTE[unit], nb / SYN_BW["dram"])
        above = pred > t * 1.05
        rows.append({"name": name, "case": case, "dtype": dtype, "unit": unit, "flops": flops, "bytes": nb,
                     "intensity": ai, "time_s": t, "achieved_flops": flops / t, "attainable_flops": att,
                     "efficiency": flops / t / att, "predicted_time_s": pred, "measured_over_predicted": t / pred,
                     "bound": "memory" if ai < SYN_COMPUTE[unit] / SYN_BW["dram"] else "compute",
                     "above_roof": above, "notes": "above the dram bandwidth roof: data reused from a cache" if above
                     else "", "valid": valid, "level": "dram"})
    return pd.DataFrame(rows)


def synthetic_hierarchy(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for e in range(14, 33):
        ws = 2 ** e
        level, bw = ("l1", 2.0e13) if ws <= 256 << 10 else ("l2", 9.0e12) if ws <= 40 << 20 else ("dram", 3.0e12)
        for rep in range(3):
            rows.append({"working_set_bytes": ws, "bandwidth_Bps": bw * (0.9 + 0.1 * rng.random()), "level": level})
    return pd.DataFrame(rows)


def synthetic_matrix() -> pd.DataFrame:
    """GEMM sweep samples (matrix.csv): float16 on the matrix unit at 60-90% of its ceiling."""
    rows = []
    for n, eff in ((1024, 0.6), (4096, 0.9)):
        flops, nb = 2 * n ** 3, 3 * 2 * n * n
        for rep in range(3):
            rows.append({"unit": "float16-matrix", "dtype": "float16", "n": n, "rep": rep,
                         "time_s": flops / (SYN_COMPUTE["float16-matrix"] * eff), "flops": flops, "bytes": nb,
                         "valid": True, "rel_error": 1e-4})
    return pd.DataFrame(rows)


def make_synthetic_run(path: Path, workloads: bool = True, hierarchy: bool = True, telemetry: bool = True,
                       all_invalid: bool = False) -> Path:
    """A complete GPU-like run directory with every optional table, built in milliseconds."""
    rng = np.random.default_rng(7)
    path.mkdir(parents=True, exist_ok=True)
    pts = synthetic_points(rng)
    if all_invalid:
        pts["valid"] = False
    pts.to_csv(path / "points.csv", index=False)
    tel, phases = synthetic_telemetry(rng)
    if telemetry:
        tel.to_csv(path / "telemetry.csv", index=False)
    if workloads:
        synthetic_workloads().to_csv(path / "workloads.csv", index=False)
    if hierarchy:
        synthetic_hierarchy(rng).to_csv(path / "hierarchy.csv", index=False)
    synthetic_matrix().to_csv(path / "matrix.csv", index=False)
    meta = {
        "schema_version": SCHEMA_VERSION, "kind": KIND, "status": "complete", "backend": "cuda",
        "created_utc": "2026-01-01T00:00:00+00:00",
        "command": ["gpuroof", "run", "--out", str(path)],
        "device": {"name": "Synthetic H100 <SXM>", "index": 0, "l2_bytes": 50 << 20, "l1_bytes": 256 << 10,
                   "multiprocessors": 132, "memory_total_bytes": 80 << 30, "driver": "580.00"},
        "host": {"hostname": "node-1", "os": "Linux", "machine": "x86_64", "user": "ci", "env": {}},
        "versions": {"python": "3.11", "gpuroof": "0.1.0", "numpy": "2", "cupy-cuda12x": "13.6"},
        "settings": {"quick": False},
        "conventions": {"flops": "an FMA counts 2 FLOPs", "bytes": "compulsory traffic",
                        "intensity": "flops / bytes", "time": "seconds per launch"},
        "ceilings": {"bandwidth": dict(SYN_BW), "compute": dict(SYN_COMPUTE)},
        "theoretical": SYN_THEO,
        "ridge_points": {u: p / SYN_BW["dram"] for u, p in SYN_COMPUTE.items()},
        "ratios": {"compute": {u: p / SYN_THEO["compute"][u] for u, p in SYN_COMPUTE.items()},
                   "bandwidth": {"dram": SYN_BW["dram"] / 3.35e12, "l2": None}},
        "median_clocks": {"sm_clock_mhz": 1980.0, "mem_clock_mhz": 2619.0, "power_w": 650.0,
                          "temperature_c": 60.0},
        "phases": phases,
        "fit": {"points": 42, "median_abs_deviation": 0.015, "max_abs_deviation": 0.03, "worst_point": None},
        "validation": {"points": 42, "invalid": 1, "invalid_points": [
            {"dtype": "float32", "variant": "ro", "fmas_per_element": 16, "rel_error": 0.5}]},
        "throttled_points": 1, "noisy_points": 0,
    }
    (path / "run.json").write_text(dumps(meta, indent=2))
    return path


@pytest.fixture(scope="module")
def syn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_run(tmp_path_factory.mktemp("syn") / "run")


@pytest.fixture(scope="module")
def syn_drawn(syn_run: Path) -> dict[str, plots.Drawn]:
    drawn, skipped = plots.draw_figures(syn_run, "all")
    assert not skipped
    return drawn


def _lines(ax) -> dict[str, object]:
    return {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}


# ----------------------------------------------------------------------------- roofline


def test_roofline_axes_are_log_with_scaled_unit_ticks(syn_drawn):
    ax = syn_drawn["roofline"].fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "FLOP/byte" in ax.get_xlabel() and "FLOP/s" in ax.get_ylabel()
    ylabels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert "1 TFLOP/s" in ylabels and "100 TFLOP/s" in ylabels


def test_roofline_roofs_start_at_their_exact_ridge(syn_drawn):
    ax = syn_drawn["roofline"].fig.axes[0]
    lines = _lines(ax)
    widest = max(SYN_BW.values())
    for unit, peak in SYN_COMPUTE.items():
        line = lines[f"roof:measured:compute:{unit}"]
        x, y = line.get_xdata(), line.get_ydata()
        assert len(x) == 2 and y[0] == y[1] == peak  # two end points, not sampled
        assert x[0] == pytest.approx(peak / widest, rel=1e-12)
        ridge = lines[f"ridge:{unit}"]
        assert ridge.get_xdata()[0] == pytest.approx(peak / SYN_BW["dram"], rel=1e-12)
        assert ridge.get_ydata()[0] == peak
        # the DRAM slope passes exactly through the ridge: B * (P / B) == P
        dram = lines["roof:measured:bandwidth:dram"]
        (x0, x1), (y0, y1) = dram.get_xdata(), dram.get_ydata()
        assert y0 / x0 == pytest.approx(SYN_BW["dram"]) and y1 / x1 == pytest.approx(SYN_BW["dram"])
    assert lines["roof:measured:compute:float32"].get_linestyle() == "-"
    assert "roof:theoretical:bandwidth:l2" not in lines  # null theoretical values are not drawn


def test_roofline_with_dram_only_starts_compute_roof_at_peak_over_bandwidth():
    roofs = plots.roof_segments({"bandwidth": {"dram": 10e9}, "compute": {"float32": 500e9, "float64": 250e9}},
                                0.01, 1e4)
    comp = {r.name: r for r in roofs if r.kind == "compute"}
    assert comp["float32"].x[0] == 50.0 and comp["float64"].x[0] == 25.0
    (bw,) = [r for r in roofs if r.kind == "bandwidth"]
    assert bw.x == (0.01, 50.0) and bw.y == (0.01 * 10e9, 500e9)


def _kernel_offsets(ax) -> np.ndarray:
    return np.vstack([c.get_offsets() for c in ax.collections if (c.get_gid() or "").startswith("kernels:")])


def test_roofline_draws_every_workload_point(syn_drawn, syn_run):
    ax = syn_drawn["roofline"].fig.axes[0]
    w = pd.read_csv(syn_run / "workloads.csv")
    got = sorted(map(tuple, np.round(np.log10(_kernel_offsets(ax)), 9)))
    want = sorted(zip(np.round(np.log10(w["intensity"]), 9), np.round(np.log10(w["achieved_flops"]), 9)))
    assert got == want


def test_roofline_colours_points_by_the_roof_that_bounds_them(syn_drawn, syn_run):
    from matplotlib.colors import to_hex

    ax = syn_drawn["roofline"].fig.axes[0]
    w = pd.read_csv(syn_run / "workloads.csv")
    for name, sel in w.groupby("name", sort=False):
        (coll,) = [c for c in ax.collections if c.get_gid() == f"kernels:{name}"]
        got = [to_hex(c) for c in coll.get_facecolors()]
        want = [plots.level_colour("dram") if b == "memory" else plots.unit_colour(u)
                for b, u in zip(sel["bound"], sel["unit"])]
        assert got == want, name
    # vector and matrix units are told apart by colour; memory levels by shade, DRAM darkest
    assert plots.unit_colour("float16") != plots.unit_colour("float16-matrix")
    assert plots.unit_colour("float32") != plots.unit_colour("float32-matrix")
    lum = {lv: sum(int(plots.level_colour(lv)[i:i + 2], 16) for i in (1, 3, 5)) for lv in ("dram", "l3", "l2", "l1")}
    assert lum["dram"] < lum["l3"] < lum["l2"] < lum["l1"]


def test_roofline_labels_each_roof_once_on_the_plot_not_in_a_legend(syn_drawn):
    d = syn_drawn["roofline"]
    roof_labels = [a.get_text() for a in d.labels if a.get_gid().startswith("label:roof:")]
    assert sorted(a.get_gid() for a in d.labels if a.get_gid().startswith("label:roof:")) == sorted(
        f"label:roof:{n}" for n in [*SYN_BW, *SYN_COMPUTE])
    assert "float32 vector 55 TFLOP/s · 82% of theoretical" in roof_labels
    assert "float16 matrix 600 TFLOP/s · 61% of theoretical" in roof_labels
    assert "DRAM 3 TB/s · 90% of theoretical" in roof_labels
    legend = " ".join(t.get_text() for t in d.fig.legends[0].get_texts())
    assert "TFLOP/s" not in legend and "TB/s" not in legend  # no roof is named twice
    assert "bound by DRAM" in legend and "bound by float16 matrix" in legend


def test_roofline_draws_theoretical_roofs_only_where_they_add_information(syn_drawn):
    lines = _lines(syn_drawn["roofline"].fig.axes[0])
    theo = {g.split(":")[-1] for g in lines if g.startswith("roof:theoretical:")}
    shown = {u for u, p in SYN_COMPUTE.items() if p / SYN_THEO["compute"][u] < plots.roofline.THEORETICAL_SHOWN}
    assert theo == shown == {"float16-matrix"}  # 61% of theoretical; the others reach 82-90%
    assert lines["roof:theoretical:compute:float16-matrix"].get_linestyle() == "--"


def text_boxes(fig) -> list:
    """Every visible text of a figure, as the renderer lays it out (titles, ticks, labels, legends)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    hidden = set()  # tick labels of ticks outside the view limits exist but are not drawn
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - abs(hi - lo) * 1e-9 <= tick.get_loc() <= hi + abs(hi - lo) * 1e-9:
                    hidden |= {id(tick.label1), id(tick.label2)}
    out = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_figure() is not None and id(t) not in hidden:
            out.append((t, Text.get_window_extent(t, r)))
    return out


@pytest.mark.parametrize("name", ["roofline", "losttime", "sweep", "telemetry", "hierarchy"])
def test_figure_texts_inside_the_figure_and_labels_apart(name, syn_drawn):
    """No text clipped by the figure's edge; no two texts of the plot area (roof and point labels) overlap."""
    assert_texts_clear(syn_drawn[name].fig)


COMMITTED = sorted(f.parent for f in (Path(__file__).resolve().parent.parent / "results").glob("*/*/workloads.csv")
                   if (f.parent / "run.json").exists())


@pytest.mark.skipif(not COMMITTED, reason="no committed run with workloads under results/")
def test_committed_run_figures_have_clear_text():
    """The README's figures, redrawn from the committed run: a dense real case (dozens of workloads)."""
    drawn, _ = plots.draw_figures(COMMITTED[-1], "all")
    assert {"roofline", "losttime"} <= set(drawn)
    for d in drawn.values():
        assert_texts_clear(d.fig)


def assert_texts_clear(fig) -> None:
    """Every text inside the figure; on every axes, no two texts of the plot area (labels) overlap."""
    boxes = text_boxes(fig)
    assert boxes
    for t, b in boxes:
        assert fig.bbox.x0 - 1 <= b.x0 and b.x1 <= fig.bbox.x1 + 1 and fig.bbox.y0 - 1 <= b.y0 and \
            b.y1 <= fig.bbox.y1 + 1, f"{t.get_text()!r} is clipped"
    for ax in fig.axes:
        inner = [(t, b) for t, b in boxes if t.axes is ax and t not in ax.get_xticklabels() + ax.get_yticklabels()
                 and t is not ax.title and t is not ax.xaxis.label and t is not ax.yaxis.label]
        for i, (ta, a) in enumerate(inner):
            for tb, b in inner[i + 1:]:
                assert not a.overlaps(b), f"{ta.get_text()!r} overlaps {tb.get_text()!r}"


def test_roofline_labels_inside_the_axes_and_apart(syn_drawn):
    d = syn_drawn["roofline"]
    fig = d.fig
    r = fig.canvas.get_renderer()
    fig.canvas.draw()
    ax_bb = fig.axes[0].get_window_extent(r)
    boxes = [plots.label_box(a, r) for a in d.labels]
    kinds = {a.get_gid().split(":")[1] for a in d.labels}
    assert {"roof", "kernel"} <= kinds
    assert sum(a.get_gid().startswith("label:kernel:") for a in d.labels) == 6
    for b in boxes:
        assert ax_bb.x0 <= b.x0 and b.x1 <= ax_bb.x1 and ax_bb.y0 <= b.y0 and b.y1 <= ax_bb.y1
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "two labels overlap"


def test_roofline_with_many_workloads_labels_those_that_lose_most_time(tmp_path):
    run = make_synthetic_run(tmp_path / "run", hierarchy=False, telemetry=False)
    w = synthetic_workloads()
    many = pd.concat([w.assign(case=w["case"] + f" r{i}", time_s=w["time_s"] * (1.5 ** i),
                               achieved_flops=w["achieved_flops"] / (1.5 ** i)) for i in range(3)],
                     ignore_index=True)  # 18 cases
    many.to_csv(run / "workloads.csv", index=False)
    d = plots.roofline_figure(run)
    fig = d.fig
    r = fig.canvas.get_renderer()
    fig.canvas.draw()
    texts = {a.get_text() for a in d.labels if a.get_gid().startswith("label:kernel:")}
    assert 0 < len(texts) <= plots.MAX_TEXT_LABELS
    lost = (many["time_s"] - many["predicted_time_s"]).where(many["valid"])
    worst = int(lost.idxmax())
    assert any(t.startswith(f"{worst + 1} ") for t in texts)  # the point that loses the most time keeps its label
    assert all(len(t) <= plots.roofline.LABEL_CHARS for t in texts)  # short: the number leads to the table
    boxes = [plots.label_box(a, r) for a in d.labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    assert "the workloads table lists every one" in d.caption


def test_losttime_ranks_workloads_by_measured_minus_predicted(syn_drawn, syn_run):
    d = syn_drawn["losttime"]
    ax = d.fig.axes[0]
    w = pd.read_csv(syn_run / "workloads.csv")
    ok = w[w["valid"]]
    lost = (ok["time_s"] - ok["predicted_time_s"]).clip(lower=0)
    order = [plots.short_labels(w["name"], w["case"])[i] for i in lost.sort_values(ascending=False, kind="stable").index]
    ticks = [t.get_text().split("  ", 1)[1] for t in ax.get_yticklabels()]
    assert ticks == order
    lost_bars = [p for p in ax.patches if p.get_gid() == "lost"] or ax.containers[1].patches
    assert [p.get_width() for p in lost_bars] == pytest.approx(sorted(lost / 1e-3, reverse=True))  # ms


def test_lost_time_advice_names_the_roofline_reason():
    meta = {"backend": "cuda", "ceilings": {"compute": {"float32": 1.0, "float32-matrix": 2.0}}}
    assert "raise its intensity" in plots.advice({"bound": "memory", "level": "dram", "efficiency": 0.4}, meta)
    vec = plots.advice({"bound": "compute", "roof_unit": "float32", "efficiency": 0.3}, meta)
    assert "matrix unit" in vec and "occupancy" in vec
    cpu = plots.advice({"bound": "compute", "roof_unit": "float32", "efficiency": 0.3}, {**meta, "backend": "cpu"})
    assert "vectorize" in cpu and "occupancy" not in cpu


def test_sweep_roofline_leaves_zero_intensity_out_and_says_so(tmp_path):
    run = make_synthetic_run(tmp_path / "r", workloads=False)
    d = plots.roofline_figure(run)
    ax = d.fig.axes[0]
    pts = pd.read_csv(run / "points.csv").drop_duplicates(["dtype", "variant", "fmas_per_element"])
    gemm = pd.read_csv(run / "matrix.csv").drop_duplicates(["unit", "n"])
    assert len(_kernel_offsets(ax)) == int((pts["intensity_flop_per_byte"] > 0).sum()) + len(gemm)
    assert "intensity 0" in d.caption
    legend = [t.get_text() for t in d.fig.legends[0].get_texts()]
    assert "GEMM sweep (matrix unit)" in legend and "sweep, read-write" in legend


# ----------------------------------------------------------------------------- sweep, telemetry, hierarchy


def test_sweep_shows_every_sample_with_fit_and_marks(syn_drawn, syn_run):
    fig = syn_drawn["sweep"].fig
    pts = pd.read_csv(syn_run / "points.csv")
    axes = fig.axes[:6]  # 2 rows x 3 dtypes
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in axes)
    n_bw = 0
    for ax in axes:
        offs = [c for c in ax.collections if c.get_offsets().shape[0] and c.get_gid() is None]
        n = max(len(c.get_offsets()) for c in offs)  # the first collection is seaborn's samples
        if "bandwidth" in ax.get_ylabel() or ax in fig.axes[3:6]:
            n_bw += offs[0].get_offsets().shape[0]
        fits = [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("fit:")]
        assert len(fits) == 1 and len(fits[0].get_xdata()) == 3  # two segments from the exact ridge
        assert n > 0
    assert n_bw == len(pts)  # every sample, intensity 0 included, is in a bandwidth panel
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "invalid (4)" in legend and "throttled (4)" in legend


def test_telemetry_panels_phases_and_throttling(syn_drawn):
    d = syn_drawn["telemetry"]
    labels = [ax.get_ylabel() for ax in d.fig.axes if ax.get_ylabel()]
    assert labels == ["SM clock (MHz)", "memory clock (MHz)", "power (W)", "temperature (°C)"]
    assert "sw_power_cap" in d.caption and "1 interval" in d.caption


def test_telemetry_says_what_a_cpu_does_not_record(tmp_path):
    run = make_synthetic_run(tmp_path / "r")
    tel = pd.read_csv(run / "telemetry.csv")
    tel[["mem_clock_mhz", "power_w", "temperature_c", "clock_event_reasons"]] = np.nan
    tel.to_csv(run / "telemetry.csv", index=False)
    d = plots.telemetry_figure(run)
    assert [ax.get_ylabel() for ax in d.fig.axes if ax.get_ylabel()] == ["SM clock (MHz)"]
    assert "memory clock, power, temperature" in d.caption and "cannot be observed" in d.caption


def test_hierarchy_marks_cache_sizes(syn_drawn):
    ax = syn_drawn["hierarchy"].fig.axes[0]
    texts = [t.get_text().strip() for t in ax.texts]
    assert "L1 256 KiB" in texts and "L2 50 MiB" in texts
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_all_skips_missing_optional_figures(tmp_path):
    run = make_synthetic_run(tmp_path / "r", hierarchy=False)
    drawn, skipped = plots.draw_figures(run, "all")
    assert set(drawn) == {"roofline", "losttime", "sweep", "telemetry"} and "hierarchy.csv" in skipped["hierarchy"]
    with pytest.raises(UsageError, match="hierarchy.csv"):
        plots.draw_figures(run, "hierarchy")


# ----------------------------------------------------------------------------- files and the command line


def run_cli(argv: list[str]) -> int:
    """gpuroof.cli.main with `plot` and `report` registered as cli.py registers them (until it does)."""
    import argparse

    from gpuroof import cli
    from gpuroof.commands import plot as plot_command, report as report_command

    build = cli.build_parser

    def with_figures() -> argparse.ArgumentParser:
        p = build()
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        common = cli._Parser(add_help=False)
        common.add_argument("--backend", default="auto")
        common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
        for module, name in ((plot_command, "plot"), (report_command, "report")):
            if name not in sub.choices:
                module.register(sub, common)
        return p

    mp = pytest.MonkeyPatch()
    mp.setattr(cli, "build_parser", with_figures)
    try:
        return cli.main(argv)
    finally:
        mp.undo()


def test_plot_command_writes_png_svg_pdf(syn_run, tmp_path, capsys):
    out = tmp_path / "figs"
    assert run_cli(["plot", str(syn_run), "--what", "roofline", "--format", "png,svg,pdf", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"roofline.{f}") for f in ("png", "svg", "pdf")]
    assert (out / "roofline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "roofline.pdf").read_bytes()[:5] == b"%PDF-"
    svg = ET.parse(out / "roofline.svg").getroot()
    ids = {e.get("id") for e in svg.iter() if e.get("id")}
    assert "roof:measured:compute:float32" in ids  # the gid survives into the SVG, for editing
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("argv, message", [
    (["plot", "{missing}"], "no run.json"),
    (["plot", "{notrun}"], "not a gpuroof run"),
    (["plot", "{run}", "--format", "gif"], "not supported"),
    (["plot", "{run}", "--what", "everything"], "invalid choice"),
    (["plot", "{invalid}"], "no valid points"),
    (["plot", "{partial}"], "partial"),
])
def test_plot_bad_input_is_one_line_and_exit_2(argv, message, syn_run, tmp_path, capsys):
    notrun = tmp_path / "notrun"
    notrun.mkdir()
    (notrun / "run.json").write_text(json.dumps({"kind": "something-else"}))
    invalid = make_synthetic_run(tmp_path / "invalid", all_invalid=True)
    partial = make_synthetic_run(tmp_path / "partial")
    meta = json.loads((partial / "run.json").read_text())
    meta.update(status="partial", ceilings=None)
    (partial / "run.json").write_text(json.dumps(meta))
    paths = {"missing": tmp_path / "nope", "notrun": notrun, "run": syn_run, "invalid": invalid,
             "partial": partial}
    argv = [a.format(**paths) for a in argv]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_make_figures_refuses_unsupported_format(syn_run, tmp_path):
    with pytest.raises(UsageError, match="allowed: png, svg, pdf"):
        plots.make_figures(syn_run, formats=("jpeg",), out_dir=tmp_path)


def test_make_figures_on_a_real_cpu_run(cpu_run, tmp_path):
    """End to end on what `gpuroof measure --backend cpu --quick` wrote (the session's one real
    measurement, tests/conftest.py): figures exist and are sane."""
    cpu_run = cpu_run.path
    written = plots.make_figures(cpu_run, formats=("png",), out_dir=tmp_path)
    expected = {"roofline", "sweep", "telemetry"} | ({"hierarchy"} if (cpu_run / "hierarchy.csv").exists() else set())
    assert set(written) == expected
    for paths in written.values():
        assert paths[0].stat().st_size > 10_000
    d = plots.roofline_figure(cpu_run)
    meta = json.loads((cpu_run / "run.json").read_text())
    lines = _lines(d.fig.axes[0])
    for unit, peak in meta["ceilings"]["compute"].items():
        assert lines[f"ridge:{unit}"].get_xdata()[0] == pytest.approx(meta["ridge_points"][unit], rel=1e-12)


def test_datacenter_experiment_builds_six_production_cases(monkeypatch):
    """experiments/datacenter_roofline.py: MLP, LSTM and CNN cases, two each, valid on this backend."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "experiments" / "datacenter_roofline.py"
    spec = importlib.util.spec_from_file_location("datacenter_roofline", path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(__import__("sys").modules, spec.name, mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    cases = mod.build_cases("cpu", scale=0.25)
    assert [s.tag for s, _ in cases] == ["MLP0", "MLP1", "LSTM0", "LSTM1", "CNN0", "CNN1"]
    intensity = {s.tag: c.intensity for s, c in cases}
    assert intensity["MLP1"] < intensity["MLP0"] and intensity["LSTM1"] < intensity["LSTM0"]
    assert all(c.dtype == "float32" for _, c in cases)


def test_lost_time_advice_near_the_roof_asks_for_a_higher_roof():
    meta = {"backend": "cuda", "ceilings": {"compute": {"float32": 1.0, "float32-matrix": 2.0}}}
    assert "matrix unit" in plots.advice({"bound": "compute", "roof_unit": "float32", "efficiency": 0.93}, meta)
    assert "occupancy" not in plots.advice({"bound": "compute", "roof_unit": "float32", "efficiency": 0.93}, meta)
    assert "fewer bytes" in plots.advice({"bound": "memory", "level": "dram", "efficiency": 0.95}, meta)
