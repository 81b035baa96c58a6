"""`gpuroof compare`: real CPU runs side by side (ceilings, ridges, clocks, workload speedups) in 120
columns, with the synthetic H100 fixture as a second device model; the figures (rooflines of every
model, one panel per ceiling, over time) under the roofline figure's text checks; sick-node flags;
bad input (one line, exit 2)."""
from __future__ import annotations

import copy
import csv
import io
import json
import shutil

import pytest

from gpuroof.cli import main
from gpuroof.compare import compare, load_runs
from gpuroof.compare_text import TERMINAL_WIDTH
from gpuroof.plots import compare as cmpplots
from gpuroof.results import load_run

try:
    from gpu_fixture import write_h100_run
    from test_lab import CPU_RUNS, make_lab, needs_runs
    from test_plots import assert_texts_clear, make_synthetic_run, text_boxes
except ImportError:  # tests/ imported as a package
    from tests.gpu_fixture import write_h100_run
    from tests.test_lab import CPU_RUNS, make_lab, needs_runs
    from tests.test_plots import assert_texts_clear, make_synthetic_run, text_boxes


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    """A second real CPU measurement (quick, float32, DRAM only): about 12 s on 2 cores."""
    from gpuroof.measure import measure

    out = tmp_path_factory.mktemp("second") / "run"
    return measure("cpu", 0, ["float32"], quick=True, out=str(out), progress=False, levels="dram",
                   matrix=False).run_dir


@pytest.fixture(scope="module")
def benched(tmp_path_factory, cpu_run, second_run):
    """The same GEMM case benched (for real) against each run's ceilings: two runs with workloads."""
    root = tmp_path_factory.mktemp("benched")
    for name, src in (("a", cpu_run.run_dir), ("b", second_run)):
        (root / name).mkdir()  # bench --out names an existing directory
        rc = main(["bench", "--backend", "cpu", "--workload", "gemm", "--shape", "m=64,n=256,k=256",
                   "--ceilings", str(src), "--out", str(root / name)])
        assert rc == 0
    return root / "a", root / "b"


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_two_real_cpu_runs_side_by_side(cpu_run, second_run, capsys, tmp_path):
    plot = tmp_path / "rooflines.png"
    rc, out, err = run(capsys, cpu_run.run_dir, second_run, "--plot", plot)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("Runs (clock: the SM clock on a GPU") and max(map(len, lines)) <= 120
    rows = {ln.split()[0]: ln for ln in lines if ln.split() and ln.split()[0] in ("dram", "float32", "float64")}
    assert rows["dram"].split()[3] == "x1.00"  # '51.9 GB/s x1.00': the baseline against itself
    assert rows["float64"].split()[-1] == "-"  # the second run measured float32 only
    assert plot.stat().st_size > 20_000 and (tmp_path / "rooflines-ceilings.png").stat().st_size > 20_000
    assert f"figure: {plot}" in err and f"figure: {tmp_path / 'rooflines-ceilings.png'}" in err

    rc, out, _ = run(capsys, cpu_run.run_dir, second_run, "--wide")  # one row per run, as before
    lines = out.splitlines()
    assert lines[0].startswith("Ceilings (xB: relative to the baseline")
    header = lines[2].split()
    assert header[:3] == ["run", "device", "host"] and "dram" in header and "float32" in header
    assert "clock" in header and "SM" not in header  # a CPU's clock is its measured core clock
    assert "x1.000" in lines[4]  # the baseline against itself

    rc, out, _ = run(capsys, cpu_run.run_dir, second_run, "--format", "json")
    res = json.loads(out)
    a, b = res["runs"]
    assert res["baseline"] == a["run"]
    assert a["float32_vs_baseline"] == 1.0
    assert b["float32_vs_baseline"] == pytest.approx(b["float32_flops"] / a["float32_flops"])
    assert b["float32_ridge_flop_per_byte"] == pytest.approx(b["float32_flops"] / b["dram_Bps"])
    assert a["float64_flops"] > 0 and b.get("float64_flops") is None  # only the first measured float64
    assert a["sm_clock_mhz"] and a["float32_ratio"] is not None  # a CPU with known FMA units
    assert a["clock"] == "core" and a["clock_mhz"] == cpu_run.meta["core_clock"]["measured_mhz"]

    rc, out, _ = run(capsys, cpu_run.run_dir, second_run, "--format", "csv", "--baseline", second_run)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run_dir"] for r in rows] == [str(cpu_run.run_dir), str(second_run)]
    assert float(rows[1]["dram_vs_baseline"]) == 1.0

    rc, out, _ = run(capsys, cpu_run.run_dir, second_run, "--format", "markdown")
    assert out.startswith("## Ceilings") and "| run | device | host |" in out and "|---|" in out


def test_workloads_get_speedups_and_efficiency_against_their_own_roof(benched, capsys):
    a, b = benched
    rc, out, _ = run(capsys, a, b, "--format", "json")
    assert rc == 0
    res = json.loads(out)
    w = res["workloads"]
    assert {x["run"] for x in w} == {r["run"] for r in res["runs"]}
    base = [x for x in w if x["run"] == res["baseline"]]
    assert all(x["speedup"] == 1.0 for x in base)
    assert all(0 < x["efficiency"] for x in w)
    assert all(r["workload_cases"] == len(base) and r["speedup_geomean"] > 0 for r in res["runs"])
    rc, out, _ = run(capsys, a, b)
    assert "Workloads (time per call, x: speedup over the baseline #1" in out and "gemm" in out


def test_a_node_below_the_median_of_its_model_is_flagged(cpu_run, tmp_path, capsys):
    """Four copies of one real run, one with its DRAM ceiling cut to 60% (a node with a degraded
    memory channel): only that one is flagged."""
    for i in range(4):
        shutil.copytree(cpu_run.run_dir, tmp_path / f"node{i}")
    sick = tmp_path / "node2" / "run.json"
    meta = json.loads(sick.read_text())
    meta["ceilings"]["bandwidth"]["dram"] *= 0.6
    sick.write_text(json.dumps(meta))
    rc, out, _ = run(capsys, tmp_path, "--format", "json")  # a directory stands for the runs below it
    flags = json.loads(out)["flags"]
    assert rc == 0 and [(f["run"], f["ceiling"]) for f in flags] == [("node2", "dram")]
    assert flags[0]["below"] == pytest.approx(0.4) and flags[0]["group_runs"] == 4
    rc, out, _ = run(capsys, tmp_path, "--threshold", "50", "--format", "json")
    assert json.loads(out)["flags"] == []
    rc, out, _ = run(capsys, tmp_path)
    assert "dram 40% below the median of the 4 " in out
    assert "Spread over runs of the same device model" in out and "40.0%" in out  # (1 - 0.6) / 1


def test_a_majority_of_slow_runs_flags_nobody_and_two_runs_are_not_enough(cpu_run, tmp_path, capsys):
    """Three copies of one real run, two with the DRAM ceiling cut to 60% (as when two array tasks
    shared one node's memory): the median is the slow value, so nobody is flagged; two runs never are."""
    for i in range(3):
        shutil.copytree(cpu_run.run_dir, tmp_path / f"node{i}")
        if i:
            meta = json.loads((tmp_path / f"node{i}" / "run.json").read_text())
            meta["ceilings"]["bandwidth"]["dram"] *= 0.6
            (tmp_path / f"node{i}" / "run.json").write_text(json.dumps(meta))
    rc, out, _ = run(capsys, tmp_path, "--format", "json")
    assert rc == 0 and json.loads(out)["flags"] == []
    rc, out, _ = run(capsys, tmp_path / "node0", tmp_path / "node1", "--format", "json")
    assert rc == 0 and json.loads(out)["flags"] == []


def test_runs_with_nothing_in_common_are_refused(cpu_run, tmp_path, capsys):
    """A run that measured only float64 and one that measured only float32, no workloads."""
    for name, keep in (("f64", "float64"), ("f32", "float32")):
        shutil.copytree(cpu_run.run_dir, tmp_path / name)
        meta = json.loads((tmp_path / name / "run.json").read_text())
        meta["ceilings"]["compute"] = {keep: meta["ceilings"]["compute"][keep]}
        (tmp_path / name / "run.json").write_text(json.dumps(meta))
    rc, out, err = run(capsys, tmp_path / "f64", tmp_path / "f32")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "no overlap with the baseline" in err


@pytest.mark.parametrize("args, needle", [
    (["RUN"], "compare needs at least two runs"),
    (["RUN", "RUN2", "--format", "xml"], "invalid choice: 'xml'"),
    (["RUN", "RUN2", "--plot", "figure.gif"], "unknown figure format '.gif'"),
    (["RUN", "MISSING"], "no such run directory"),
    (["RUN", "PARTIAL"], "run is partial"),
    (["RUN", "EMPTY"], "holds no complete run"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, cpu_run, second_run, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    meta = copy.deepcopy(load_run(cpu_run.run_dir).meta)
    meta.update(status="partial", ceilings=None)
    (partial / "run.json").write_text(json.dumps(meta))
    (tmp_path / "empty").mkdir()
    paths = {"RUN": cpu_run.run_dir, "RUN2": second_run, "MISSING": tmp_path / "missing",
             "PARTIAL": partial, "EMPTY": tmp_path / "empty"}
    rc, out, err = run(capsys, *[paths.get(a, a) for a in args])
    assert rc == 2 and out == "" and err.count("\n") == 1 and needle in err, err


def test_compare_api_accepts_loaded_runs(cpu_run, second_run):
    runs = load_runs([cpu_run.run_dir, second_run])
    c = compare(runs, baseline=1)
    assert c.baseline == c.runs["run"][1]
    assert c.runs.loc[1, "dram_vs_baseline"] == 1.0


# ----------------------------------------------------------------------------- a lab: 120 columns, figures


@pytest.fixture(scope="module")
def real_lab(tmp_path_factory):
    """The committed real CPU runs, a degraded copy of one (simulated slow node) and the H100 fixture."""
    return make_lab(tmp_path_factory.mktemp("cmp-lab") / "lab")


@needs_runs
def test_three_cpu_runs_and_a_gpu_fixture_fit_120_columns(real_lab, capsys):
    rc, out, _ = run(capsys, real_lab)
    assert rc == 0
    lines = out.splitlines()
    assert max(map(len, lines)) <= TERMINAL_WIDTH, max(lines, key=len)
    runs = load_runs([real_lab])
    ids = [f"#{i}" for i in range(1, len(runs) + 1)]
    assert len(runs) == len(CPU_RUNS) + 2
    heads = [ln.split() for ln in lines if ln.startswith("ceiling ")]
    assert sorted({h for head in heads for h in head[1:]}) == sorted(ids)  # every run is a column somewhere
    for name in ("dram", "l1", "float32", "float16-matrix", "tf32-matrix", "shared"):  # both models' ceilings
        assert any(ln.startswith(name + " ") for ln in lines), name
    text = out
    assert "SM 1755 MHz" in text  # the GPU's own word for its clock
    for r in CPU_RUNS:
        meta = load_run(r).meta
        assert f"core {meta['core_clock']['measured_mhz']:.0f} MHz" in text
    assert "degraded-copy" in text and "Flagged (a ceiling more than 10% below" in text
    assert any(ln.startswith("- #") and "degraded-copy: dram" in ln for ln in lines)


def synthetic_comparison(tmp_path, days: bool = False):
    """Two models, all synthetic: three H100 fixture cards (one slow, on a lower clock) and the
    synthetic GPU run of test_plots; with `days`, the cards of one host measured a week apart."""
    for i, (sm, scale) in enumerate(((1755.0, {}), (1740.0, {}), (1410.0, {"dram": 0.7, "float32": 0.75}))):
        when = f"2026-11-{10 + 3 * i:02d}T09:00:00+00:00" if days else f"2026-12-01T1{i}:00:00+00:00"
        write_h100_run(tmp_path / f"card{i}", host="fixture-node" if days else f"fixture-node-{i}",
                       created_utc=when, sm_mhz=sm, scale=scale)
    syn = make_synthetic_run(tmp_path / "syn")
    meta = json.loads((syn / "run.json").read_text())
    meta["device"]["name"] = "Synthetic GPU <test>"  # a second model, apart from the H100 fixture
    (syn / "run.json").write_text(json.dumps(meta))
    return compare(load_runs([tmp_path]), 0, overlap=False)


@pytest.fixture(scope="module")
def comparisons(tmp_path_factory):
    out = {"synthetic": synthetic_comparison(tmp_path_factory.mktemp("syn-cmp"), days=True)}
    if CPU_RUNS:
        out["real"] = compare(load_runs([make_lab(tmp_path_factory.mktemp("real-cmp") / "lab", days=True)]), 0,
                              overlap=False)
    return out


FIGURES = {"rooflines": cmpplots.rooflines_figure, "ceilings": cmpplots.ceilings_figure,
           "over-time": cmpplots.over_time_figure}


@pytest.mark.parametrize("data", ["synthetic", "real"])
@pytest.mark.parametrize("name", list(FIGURES))
def test_compare_figures_pass_the_roofline_figure_text_checks(name, data, comparisons):
    """No text clipped, no two labels of a plot overlapping (the roofline figure's checks), and every
    number written with its unit ('1 TFLOP/s'), never as a power of ten."""
    if data not in comparisons:
        pytest.skip("results/ holds no device with three complete CPU runs")
    d = FIGURES[name](comparisons[data])
    assert d is not None
    assert_texts_clear(d.fig)
    texts = [t.get_text() for t, _ in text_boxes(d.fig)]
    assert not [t for t in texts if "$" in t or "e+" in t or "10^" in t]
    assert any("FLOP/s" in t for t in texts) and any("B/s" in t.replace("FLOP/s", "") for t in texts)


def test_compare_rooflines_label_each_roof_once_with_value_and_share(comparisons):
    c = comparisons["synthetic"]
    d = cmpplots.rooflines_figure(c)
    ax = d.fig.axes[0]
    gids = [a.get_gid() for a in d.labels]
    roofs = [ln.get_gid() for ln in ax.get_lines() if (ln.get_gid() or "").startswith("roof:measured:")]
    expected = sorted(f"label:roof:{g.split(':')[2]}:{g.split(':')[4]}" for g in roofs)
    assert sorted(gids) == expected and len(set(gids)) == len(gids)  # each roof labelled, once
    assert "No room on the plot" not in d.caption
    text = {a.get_gid(): a.get_text() for a in d.labels}
    assert text["label:roof:H100:dram"].startswith("H100 DRAM ") and "TB/s · " in text["label:roof:H100:dram"]
    assert "float16 matrix 660 TFLOP/s · 70%" in text["label:roof:H100:float16-matrix"]
    lines = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}
    assert lines["roof:theoretical:H100:compute:float16-matrix"].get_linestyle() == "--"  # 70% < 80%: dashed
    assert "roof:theoretical:H100:compute:float32" not in lines  # the card reaches 88-98%: nothing to add
    assert lines["roof:measured:H100:compute:float32"].get_linestyle() == "-"
    spread = [p.get_gid() for p in ax.collections if (p.get_gid() or "").startswith("spread:H100")]
    assert "spread:H100:float32" in spread and "spread:H100:dram" in spread  # three cards apart
    legend = " ".join(t.get_text() for t in d.fig.legends[0].get_texts())
    assert legend.count("NVIDIA H100 80GB HBM3") == 1 and "(3 runs)" in legend  # a model named once


def test_compare_ceilings_ring_the_slow_card_below_the_threshold(comparisons):
    c = comparisons["synthetic"]
    d = cmpplots.ceilings_figure(c)
    titles = [ax.get_title() for ax in d.fig.axes]
    assert titles[:3] == ["L1 bandwidth", "shared memory bandwidth", "L2 bandwidth"] and "float16 matrix" in titles
    rings = {coll.get_gid(): coll for ax in d.fig.axes for coll in ax.collections
             if (coll.get_gid() or "").startswith("flagged:")}
    assert set(rings) == {"flagged:dram:H100", "flagged:float32:H100"}
    y = rings["flagged:dram:H100"].get_offsets()[:, 1]
    assert list(y) == [pytest.approx(70.0)]  # 0.7 of the median, in percent
    ax = next(ax for ax in d.fig.axes if ax.get_title() == "DRAM bandwidth")
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "H100 ×3\n2.95 TB/s" in ticks


def test_compare_over_time_needs_a_host_whose_runs_span_days(tmp_path, comparisons):
    assert cmpplots.over_time_figure(synthetic_comparison(tmp_path)) is None  # one day, three hosts
    d = cmpplots.over_time_figure(comparisons["synthetic"])
    series = {ln.get_gid() for ax in d.fig.axes for ln in ax.get_lines() if ln.get_gid()}
    assert "series:dram:fixture-node · H100" in series
    assert not any("Synthetic" in g for g in series)  # a host measured once has no history


def test_short_model_tags():
    assert [cmpplots.short_tag(n) for n in ("NVIDIA H100 80GB HBM3", "AMD EPYC 9654 96-Core Processor",
                                            "AMD EPYC (family 25 model 1, avx2, 2 cores)",
                                            "NVIDIA GeForce RTX 4090")] == ["H100", "EPYC 9654", "EPYC", "RTX 4090"]
