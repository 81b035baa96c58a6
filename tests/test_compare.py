"""`gpuroof compare`: two real CPU runs side by side (ceilings, ridges, clocks, workload speedups),
the overlaid roofline figure, sick-node flags, and bad input (one line, exit 2)."""
from __future__ import annotations

import copy
import csv
import io
import json
import shutil

import pytest

from gpuroof.cli import main
from gpuroof.compare import compare, load_runs
from gpuroof.results import load_run


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
    rc, out, _ = run(capsys, cpu_run.run_dir, second_run, "--plot", plot)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("Ceilings (xB: relative to the baseline")
    header = lines[2].split()
    assert header[:3] == ["run", "device", "host"] and "dram" in header and "float32" in header
    assert "x1.000" in lines[4]  # the baseline against itself
    assert plot.stat().st_size > 20_000

    rc, out, _ = run(capsys, cpu_run.run_dir, second_run, "--format", "json")
    res = json.loads(out)
    a, b = res["runs"]
    assert res["baseline"] == a["run"]
    assert a["float32_vs_baseline"] == 1.0
    assert b["float32_vs_baseline"] == pytest.approx(b["float32_flops"] / a["float32_flops"])
    assert b["float32_ridge_flop_per_byte"] == pytest.approx(b["float32_flops"] / b["dram_Bps"])
    assert a["float64_flops"] > 0 and b.get("float64_flops") is None  # only the first measured float64
    assert a["sm_clock_mhz"] and a["float32_ratio"] is not None  # a CPU with known FMA units

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
    assert "Workloads (time, x: speedup over the baseline" in out and "gemm" in out


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
