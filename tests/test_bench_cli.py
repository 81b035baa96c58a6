"""`gpuroof bench` end to end on the CPU: every workload validated and placed; run directories; bad input."""
from __future__ import annotations

import argparse
import json
import shutil

import pandas as pd
import pytest

from gpuroof import bench, cli
from gpuroof.commands import bench as commands_bench
from gpuroof.results import load_run, slug

REQUIRED = {"name", "case", "dtype", "flops", "bytes", "time_s", "achieved_flops", "intensity",
            "attainable_flops", "efficiency", "predicted_time_s", "bound", "valid"}
CSV_COLUMNS = {"name", "case", "dtype", "unit", "flops", "bytes", "input_bytes", "weight_bytes",
               "output_bytes", "intensity", "time_s", "time_q1_s", "time_q3_s", "reps", "achieved_flops",
               "achieved_bandwidth_Bps", "attainable_flops", "efficiency", "predicted_time_s",
               "measured_over_predicted", "bound", "above_roof", "notes", "valid", "rel_error", "level"}
TINY_GEMM = ["--workload", "gemm", "--shape", "m=16,n=64,k=64"]


@pytest.fixture
def main(monkeypatch):
    """cli.main with `bench` on it (added here until cli.build_parser registers it itself)."""
    original = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "bench" not in sub.choices:
            common = cli._Parser(add_help=False)
            common.add_argument("--backend", default="auto")
            common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
            commands_bench.register(sub, common)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return cli.main


def _copy_run(cpu_run, dest):
    shutil.copytree(cpu_run.run_dir, dest)
    return dest


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cpu_bench_small_validates_and_places_every_workload_into_the_measure_run(cpu_run, main, capsys,
                                                                                   tmp_path):
    run_dir = _copy_run(cpu_run, tmp_path / "run")
    rc = main(["bench", "--backend", "cpu", "--size", "small", "--out", str(run_dir), "--json"])
    out = _last_json(capsys)
    assert rc == 0
    assert out["run_dir"] == str(run_dir)
    assert out["ceilings"] == cpu_run.meta["ceilings"]
    rows = out["workloads"]
    assert {r["name"] for r in rows} == {"conv2d", "gemm", "lstm", "mlp", "stream"}
    for r in rows:
        assert REQUIRED <= set(r), r
        assert r["valid"], r  # every case passed its float64 check
        assert r["time_s"] > 0 and r["efficiency"] > 0 and r["bound"] in ("memory", "compute")
        assert r["intensity"] == pytest.approx(r["flops"] / r["bytes"])
        assert r["predicted_time_s"] == pytest.approx(
            max(r["flops"] / out["ceilings"]["compute"][r["roof_unit"]],
                r["bytes"] / out["ceilings"]["bandwidth"]["dram"]))
        if r["above_roof"]:
            assert "above the" in r["notes"], r  # never silently above a roof
        if r["unit"].endswith("-matrix") and r["unit"] not in out["ceilings"]["compute"]:
            assert "no matrix ceiling measured" in r["notes"]
    conv = [r for r in rows if r["name"] == "conv2d" and r["params"]["c_in"] == 1 and r["params"]["h"] == 64]
    assert {r["params"]["ksize"] for r in conv} == {1, 3}
    # Written into the measure run: tables beside points.csv, run.json still loads and says so.
    run = load_run(run_dir)
    assert run.meta["workloads"]["cases"] == len(rows) == run.meta["workloads"]["valid"]
    assert run.meta["workloads"]["file"] == "workloads.csv"
    table = pd.read_csv(run_dir / "workloads.csv")
    assert CSV_COLUMNS <= set(table.columns) and len(table) == len(rows)
    samples = pd.read_csv(run_dir / "workload_samples.csv")
    assert (samples.groupby(["name", "case", "dtype"]).size() >= 3).all()
    assert {"points.csv", "telemetry.csv"} <= {p.name for p in run_dir.iterdir()}
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


def test_bench_with_ceilings_makes_a_new_complete_run(cpu_run, main, capsys, tmp_path):
    out_dir = tmp_path / "new"
    out_dir.mkdir()  # --out names an existing directory: one that does not exist is refused
    rc = main(["bench", "--backend", "cpu", "--ceilings", str(cpu_run.run_dir), "--out", str(out_dir),
               *TINY_GEMM, "--json"])
    assert rc == 0
    out = _last_json(capsys)
    run = load_run(out_dir)
    assert run.meta["status"] == "complete" and run.meta["kind"] == "gpuroof-run"
    assert run.meta["ceilings"] == cpu_run.meta["ceilings"]
    assert run.meta["ceilings_source"] == str(cpu_run.run_dir)
    assert run.meta["workloads"]["cases"] == 1 and out["workloads"][0]["params"]["m"] == 16


def test_bench_uses_the_newest_run_for_this_device(cpu_run, main, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    device_dir = tmp_path / "results" / slug(cpu_run.meta["device"]["name"])
    older = _copy_run(cpu_run, device_dir / "20000101T000000Z")
    newer = _copy_run(cpu_run, device_dir / "20000102T000000Z")
    meta = json.loads((older / "run.json").read_text())
    meta["created_utc"] = "2000-01-01T00:00:00+00:00"
    (older / "run.json").write_text(json.dumps(meta))
    meta["created_utc"] = "2000-01-02T00:00:00+00:00"
    (newer / "run.json").write_text(json.dumps(meta))
    assert main(["bench", "--backend", "cpu", *TINY_GEMM, "--json"]) == 0
    out = _last_json(capsys)
    new_run = load_run(out["run_dir"])
    assert new_run.path.resolve().parent == device_dir and new_run.path.resolve() not in (older, newer)
    assert new_run.meta["ceilings_source"] == str(newer.relative_to(tmp_path))


def _bad(main, args, capsys, match):
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and match in err, err
    return err


def test_unknown_workload_is_refused(main, capsys):
    _bad(main, ["bench", "--backend", "cpu", "--workload", "gemm,fft"], capsys,
         "--workload fft: unknown workload (allowed: conv2d, gemm, lstm, mlp, stream)")


def test_shapes_that_do_not_fit_memory_are_refused(main, capsys, tmp_path):
    _bad(main, ["bench", "--backend", "cpu", "--workload", "gemm", "--shape", "m=200000,n=200000,k=64",
                "--out", str(tmp_path / "x")], capsys, "only")
    assert not (tmp_path / "x").exists()


def test_empty_convolution_output_is_refused(main, capsys):
    _bad(main, ["bench", "--backend", "cpu", "--workload", "conv2d", "--shape", "h=2,w=2,ksize=5,pad=0"],
         capsys, "empty output")
    _bad(main, ["bench", "--backend", "cpu", "--workload", "conv2d", "--shape", "stride=0"], capsys,
         "stride=0")


def test_bad_shape_key_and_size_are_refused(main, capsys):
    _bad(main, ["bench", "--backend", "cpu", "--workload", "gemm", "--shape", "rows=3"], capsys,
         "not a gemm parameter")
    _bad(main, ["bench", "--backend", "cpu", "--size", "huge"], capsys, "invalid choice")


def test_ceilings_from_another_device_are_refused_unless_forced(cpu_run, main, capsys, tmp_path):
    other = _copy_run(cpu_run, tmp_path / "other")
    meta = json.loads((other / "run.json").read_text())
    meta["device"]["name"] = "Some Other CPU"
    (other / "run.json").write_text(json.dumps(meta))
    _bad(main, ["bench", "--backend", "cpu", "--ceilings", str(other), *TINY_GEMM,
                "--out", str(tmp_path / "o1")], capsys, "use --force")
    (tmp_path / "o2").mkdir()
    assert main(["bench", "--backend", "cpu", "--ceilings", str(other), "--force", *TINY_GEMM,
                 "--out", str(tmp_path / "o2")]) == 0


def test_out_holding_an_incomplete_run_is_refused(cpu_run, main, capsys, tmp_path):
    partial = _copy_run(cpu_run, tmp_path / "partial")
    meta = json.loads((partial / "run.json").read_text())
    meta["status"] = "partial"
    (partial / "run.json").write_text(json.dumps(meta))
    _bad(main, ["bench", "--backend", "cpu", "--out", str(partial), *TINY_GEMM], capsys, "not complete")


def test_run_bench_api_returns_table_with_samples(cpu_run):
    from gpuroof.backends import get_backend
    from gpuroof.roofline import Roofline

    b = get_backend("cpu")
    try:
        roof = Roofline.from_dict(cpu_run.meta["ceilings"])
        table = bench.run_bench(b, roof, ["gemm"], "small", progress=False, shape={"m": 4, "n": 32, "k": 32})
    finally:
        b.close()
    assert list(table.columns) == bench.COLUMNS and table["valid"].all()
    assert len(table.attrs["samples"]) == int(table["reps"].sum())


def test_python_api_places_a_user_kernel_on_the_measured_run(cpu_run):
    import numpy as np

    from gpuroof import api
    from gpuroof.errors import MeasurementError, UsageError

    n = 1 << 20
    x, y = np.ones(n, np.float32), np.ones(n, np.float32)
    out = np.empty_like(x)
    res = api.measure_kernel(lambda: np.add(x, y, out=out), flops=n, bytes=12 * n, unit="float32",
                             name="numpy add", backend="cpu", ceilings=cpu_run.run_dir,
                             check=lambda: bool(out[0] == 2.0), budget_s=0.05)
    d = res.to_dict()
    assert d["intensity"] == pytest.approx(1 / 12) and d["bound"] == "memory"
    assert d["roof_unit"] == "float32" and d["reps"] >= 10 and d["efficiency"] > 0
    assert d["predicted_time_s"] == pytest.approx(12 * n / cpu_run.meta["ceilings"]["bandwidth"]["dram"])
    assert "numpy add" in res.summary() and d["ceilings_source"] == str(cpu_run.run_dir)
    with pytest.raises(MeasurementError, match="check"):
        api.measure_kernel(lambda: None, flops=1, bytes=1, backend="cpu", ceilings=cpu_run.run_dir,
                           check=lambda: False)
    with pytest.raises(UsageError, match="flops"):
        api.measure_kernel(lambda: None, flops=0, bytes=1, backend="cpu", ceilings=cpu_run.run_dir)
