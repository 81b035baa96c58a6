"""--device all: one pinned child process per GPU; argv/env built by a pure function, one real child."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from gpuroof.errors import UsageError
from gpuroof.fanout import ChildResult, default_root, exit_code, plan, run_children, visible_devices

ROOT = Path(__file__).resolve().parents[1]


def test_each_gpu_gets_device_0_its_own_mask_and_its_own_out(tmp_path):
    kids = plan(["measure", "--device", "all", "--quick", "--dtype", "float32", "--out", str(tmp_path)], 3,
                env={}, python="/usr/bin/python3")
    assert [k.env_update for k in kids] == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(3)]
    assert [k.out for k in kids] == [tmp_path / f"gpu{i}" for i in range(3)]
    assert kids[2].argv == ["/usr/bin/python3", "-m", "gpuroof", "measure", "--quick", "--dtype", "float32",
                            "--device", "0", "--out", str(tmp_path / "gpu2")]
    assert all(k.argv.count("--device") == 1 and k.argv.count("--out") == 1 for k in kids)


def test_equals_spelling_global_options_and_bench_are_kept():
    kids = plan(["--debug", "bench", "--device=all", "--out=runs/node7", "--size", "small"], 2, env={},
                python="py")
    assert kids[1].argv == ["py", "-m", "gpuroof", "--debug", "bench", "--size", "small", "--device", "0",
                            "--out", str(Path("runs/node7/gpu1"))]


def test_a_parent_mask_is_respected_slurm_gres_or_uuids():
    assert visible_devices("2,3", 2) == ["2", "3"]
    assert visible_devices("GPU-aaaa, GPU-bbbb", 2) == ["GPU-aaaa", "GPU-bbbb"]
    kids = plan(["run", "--device", "all"], 2, env={"CUDA_VISIBLE_DEVICES": "5,7"}, python="py", root="r")
    assert [k.env_update["CUDA_VISIBLE_DEVICES"] for k in kids] == ["5", "7"]
    with pytest.raises(UsageError, match="shows 1 device"):
        visible_devices("4", 2)


def test_default_root_is_per_host_and_time():
    assert default_root("20250101T000000Z", "node-07.cluster") == Path("results/node-07-cluster-20250101T000000Z-all")


@pytest.mark.parametrize("argv, match", [
    (["measure", "--device", "1"], "fan-out is for --device all"),
    (["show", "--device", "all"], "only for measure, bench, run"),
    (["measure", "--device"], "expected a value"),
])
def test_bad_fanout_requests_are_usage_errors(argv, match):
    with pytest.raises(UsageError, match=match):
        plan(argv, 2, env={})


def test_exit_code_is_the_first_failure():
    ok = ChildResult(0, Path("/nonexistent"), 0)
    assert exit_code([ChildResult(0, Path("/nonexistent"), 3)]) == 3
    assert exit_code([ok]) == 1  # exit 0 but no run.json: not a run


def test_one_real_child_on_the_cpu_backend_records_its_mask(tmp_path, monkeypatch):
    """A real `python -m gpuroof measure` child (cpu, quick, float32, the DRAM sweep alone: what is
    checked is the child's mask and run, not its ceilings) pinned by the fan-out."""
    monkeypatch.chdir(ROOT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    kids = plan(["measure", "--backend", "cpu", "--quick", "--dtype", "float32", "--levels", "dram", "--no-matrix",
                 "--device", "all", "--out", str(tmp_path / "node")], 1, env={}, python=sys.executable)
    results = run_children(kids, env=env)
    assert exit_code(results) == 0, results
    meta = json.loads((tmp_path / "node" / "gpu0" / "run.json").read_text())
    assert meta["status"] == "complete"
    assert meta["host"]["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert meta["command"][-4:] == ["--device", "0", "--out", str(tmp_path / "node" / "gpu0")]
