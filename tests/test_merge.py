"""`gpuroof merge`: runs of many machines as one long-form table; corrupt, older-schema and unfinished
runs are listed and skipped, never abort the merge."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from gpuroof.cli import main
from gpuroof.merge import merge, read_run


@pytest.fixture(scope="module")
def shared(tmp_path_factory, cpu_run):
    """A shared results directory as a cluster leaves it: two complete runs (one with workloads, from
    a real bench on the first run's ceilings), a corrupt run.json, a run of an older schema, a run
    still being written (partial) and a stray file."""
    root = tmp_path_factory.mktemp("shared")
    node1 = root / "job7" / "node1-task0"
    shutil.copytree(cpu_run.run_dir, node1)
    (root / "job7" / "node2-task1").mkdir()  # bench --out names an existing directory
    rc = main(["bench", "--backend", "cpu", "--workload", "gemm", "--shape", "m=64,n=256,k=256",
               "--ceilings", str(node1), "--out", str(root / "job7" / "node2-task1")])
    assert rc == 0
    corrupt = root / "job7" / "node3-task2"
    corrupt.mkdir()
    (corrupt / "run.json").write_text('{"schema_version": 1, "kind": "gpuroof-run", "status": "comp')
    old = root / "old" / "2023"
    shutil.copytree(cpu_run.run_dir, old)
    meta = json.loads((old / "run.json").read_text())
    meta["schema_version"] = 0
    (old / "run.json").write_text(json.dumps(meta))
    partial = root / "job7" / "node4-task3"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({**meta, "schema_version": 1, "status": "partial",
                                                  "ceilings": None}))
    (root / "notes.txt").write_text("not a run")
    return root


def test_merge_reads_every_readable_run_and_lists_the_rest(shared, tmp_path, capsys):
    out = tmp_path / "all.csv"
    assert main(["merge", str(shared), "--out", str(out)]) == 0
    stdout, err = capsys.readouterr()
    assert "merged 2 run(s)" in stdout
    assert "node3-task2: corrupt run.json" in err
    assert "2023: schema_version 0 (older; this gpuroof reads 1)" in err
    assert "node4-task3: status 'partial'" in err

    t = pd.read_csv(out)
    assert set(t["run_dir"].map(lambda p: p.rsplit("/", 1)[-1])) == {"node1-task0", "node2-task1"}
    ceilings = t[t["record"] == "ceiling"]
    per_run = ceilings.groupby("run_dir").size()
    assert (per_run == per_run.iloc[0]).all() and per_run.iloc[0] >= 3  # dram + float32 + float64 at least
    dram = ceilings[ceilings["level"] == "dram"]
    assert (dram["ceiling_Bps"] > 0).all() and dram["ceiling_flops"].isna().all()
    f32 = ceilings[(ceilings["kind"] == "compute") & (ceilings["unit"] == "float32")]
    assert (f32["ceiling_flops"] > 0).all() and (f32["ridge_flop_per_byte"] > 0).all()
    work = t[t["record"] == "workload"]
    assert len(work) >= 1 and set(work["workload"]) == {"gemm"}
    assert (work["time_s"] > 0).all() and work["efficiency"].notna().all()
    for col in ("hostname", "device", "backend", "created_utc", "gpuroof_version", "numpy_version"):
        assert t[col].notna().all(), col
    for col in ("device_uuid", "driver_version", "slurm_job_id", "job_completion_index"):
        assert col in t.columns  # empty on a CPU run outside a scheduler


def test_parquet_is_written_when_pyarrow_is_there_else_refused_in_one_line(shared, tmp_path, capsys):
    out = tmp_path / "all.parquet"
    rc = main(["merge", str(shared), "--out", str(out)])
    _, err = capsys.readouterr()
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert rc == 2 and err.count("\n") == 1 and "needs pyarrow" in err
        assert not out.exists()
        return
    assert rc == 0
    t = pd.read_parquet(out)
    assert set(t["record"]) == {"ceiling", "workload"}


@pytest.mark.parametrize("args, needle", [
    (["EMPTY", "--out", "x.csv"], "no gpuroof run found below"),
    (["SHARED", "--out", "x.xlsx"], "unknown format '.xlsx'"),
    (["MISSING", "--out", "x.csv"], "no such directory"),
    (["SHARED", "--out", "nodir/x.csv"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, shared, tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    paths = {"EMPTY": str(tmp_path / "empty"), "SHARED": str(shared), "MISSING": str(tmp_path / "missing")}
    assert main(["merge", *[paths.get(a, a) for a in args]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and needle in err, err


def test_only_unreadable_runs_is_bad_input(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.json").write_text("{")
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "m.csv")]) == 2
    assert "no readable run found" in capsys.readouterr().err


def test_a_newer_schema_is_named_as_such(tmp_path, cpu_run):
    meta = dict(cpu_run.meta, schema_version=99)
    (tmp_path / "run.json").write_text(json.dumps(meta))
    skipped = read_run(tmp_path / "run.json")
    assert "schema_version 99 (newer" in skipped.reason
    with pytest.raises(Exception, match="no readable run"):
        merge([tmp_path])
