"""The CPU pipeline end to end through the CLI, and every bad input as one line with exit code 2."""
import json
import os
import stat

import pandas as pd
import pytest

from gpuroof.cli import main


def test_cpu_quick_measure_finds_dram_plateau_and_compute_roofs(cpu_run):
    meta = cpu_run.meta
    assert meta["status"] == "complete" and meta["backend"] == "cpu"
    bw = meta["ceilings"]["bandwidth"]["dram"]
    f32, f64 = meta["ceilings"]["compute"]["float32"], meta["ceilings"]["compute"]["float64"]
    assert 1e9 < bw < 1e12
    assert f64 > 1e9 and f32 > 1.3 * f64  # twice the lanes per vector: float32 must beat float64
    assert meta["validation"]["invalid"] == 0
    plateau = meta["plateaus"]["dram"]
    assert plateau and all(p["fmas_per_element"] <= 4 for p in plateau)  # the memory-bound end
    assert meta["ridge_points"]["float32"] == pytest.approx(f32 / bw)
    assert meta["fit"]["max_abs_deviation"] is not None


def test_cpu_run_directory_is_long_form_with_units(cpu_run):
    d = cpu_run.run_dir
    assert {p.name for p in d.iterdir()} >= {"run.json", "points.csv", "telemetry.csv"}
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temp files left
    pts = pd.read_csv(d / "points.csv")
    assert {"time_s", "flops", "bytes", "intensity_flop_per_byte", "valid", "sm_clock_mhz",
            "throttled"} <= set(pts.columns)
    assert pts.groupby(["dtype", "variant", "fmas_per_element"]).size().min() >= 3  # repetitions
    assert (pts["flops"] == 2 * pts["fmas_per_element"] * pts["elements"]).all()
    tel = pd.read_csv(d / "telemetry.csv")
    assert len(tel) >= 10 and tel["sm_clock_mhz"].notna().any()
    meta = json.loads((d / "run.json").read_text())
    assert meta["schema_version"] == 1 and "numba" in meta["versions"]
    assert meta["device"]["threads"] >= 1 and meta["conventions"]["flops"].startswith("an FMA counts 2")


def test_show_and_json_contract(cpu_run, capsys):
    assert main(["show", str(cpu_run.run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["backend"] == "cpu" and out["device"]["name"]
    assert set(out["ceilings"]) == {"bandwidth", "compute"}
    assert set(out["theoretical"]) == {"bandwidth", "compute"}
    assert set(out["ceilings"]["compute"]) == {"float64", "float32", "float64-matrix", "float32-matrix"}
    assert set(out["ceilings"]["bandwidth"]) == {"l1", "l2", "l3", "dram"}
    assert set(out["theoretical"]["compute"]) >= set(out["ceilings"]["compute"])


def test_measure_json_last_line(tmp_path, capsys):
    rc = main(["measure", "--backend", "cpu", "--quick", "--dtype", "float32",
               "--levels", "dram", "--no-matrix", "--out", str(tmp_path / "r"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["run_dir"] == str(tmp_path / "r")
    assert list(out["ceilings"]["compute"]) == ["float32"]
    assert list(out["ceilings"]["bandwidth"]) == ["dram"] and out["ceilings"]["bandwidth"]["dram"] > 0
    assert not (tmp_path / "r" / "hierarchy.csv").exists() and not (tmp_path / "r" / "matrix.csv").exists()


def _bad(args, capsys, match):
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and match in err, err
    return err


def test_unknown_backend(capsys):
    _bad(["measure", "--backend", "tpu"], capsys, "allowed: auto, cuda, cpu")


def test_unknown_dtype(capsys, tmp_path):
    _bad(["measure", "--backend", "cpu", "--dtype", "float8", "--out", str(tmp_path / "x")], capsys,
         "allowed: float64, float32")
    assert not (tmp_path / "x").exists()


def test_device_out_of_range(capsys):
    _bad(["measure", "--backend", "cpu", "--device", "7"], capsys, "--device 7")


def test_buffer_larger_than_memory(capsys, tmp_path):
    _bad(["measure", "--backend", "cpu", "--buffer-size", "1000TiB", "--out", str(tmp_path / "x")],
         capsys, "--buffer-size")
    assert not (tmp_path / "x").exists()


def test_malformed_buffer_size(capsys):
    _bad(["measure", "--backend", "cpu", "--buffer-size", "lots"], capsys, "not a size")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_out_as_user(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    _bad(["measure", "--backend", "cpu", "--out", str(ro / "run")], capsys, "not a writable directory")


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    _bad(["measure", "--backend", "cpu", "--quick", "--out", str(blocker / "run")], capsys,
         "not a writable directory")


def test_cuda_backend_without_a_gpu(capsys):
    from gpuroof.backends import cuda_available

    if cuda_available():
        pytest.skip("a CUDA device is present")
    _bad(["measure", "--backend", "cuda"], capsys, "--backend cuda")


def test_corrupt_run_json_on_load(capsys, tmp_path):
    (tmp_path / "run.json").write_text('{"kind": "gpuroof-run", "sche')
    _bad(["show", str(tmp_path)], capsys, "corrupt run.json")


def test_partial_run_is_reported_not_shown(capsys, tmp_path):
    from gpuroof.results import KIND, SCHEMA_VERSION, write_run

    write_run(tmp_path, {"kind": KIND, "schema_version": SCHEMA_VERSION, "status": "partial",
                         "status_reason": "interrupted", "backend": "cpu", "device": {"name": "x"},
                         "ceilings": None}, {})
    _bad(["show", str(tmp_path)], capsys, "interrupted")


def test_unknown_subcommand_and_option(capsys):
    _bad(["frobnicate"], capsys, "invalid choice")
    _bad(["measure", "--nope"], capsys, "unrecognized arguments")


def test_info_lists_the_cpu_with_its_peaks(capsys):
    assert main(["info", "--backend", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["backend"] == "cpu" and len(out["devices"]) == 1
    dev = out["devices"][0]
    assert dev["dtypes"] == ["float64", "float32"]
    assert dev["device"]["caches"] and dev["device"]["threads"] >= 1
    assert main(["info", "--backend", "cpu"]) == 0
    assert "device 0:" in capsys.readouterr().out
