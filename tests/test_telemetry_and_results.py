"""Telemetry windows, atomic writes and run loading."""
import json
import os
import time

import pandas as pd
import pytest

from gpuroof.errors import UsageError
from gpuroof.results import (SCHEMA_VERSION, atomic_path, atomic_write_text, load_run, make_run_dir,
                             slug)
from gpuroof.telemetry import Sampler


def test_sampler_runs_at_least_ten_hertz_and_summarizes_windows():
    clocks = iter(range(1000, 100000, 10))

    def source():
        return {"sm_clock_mhz": float(next(clocks)), "mem_clock_mhz": None, "power_w": 100.0,
                "temperature_c": None, "clock_event_reasons": 0x1}

    with Sampler(source, interval_s=0.02) as s:
        s.phase("work")
        t0 = s.now()
        time.sleep(0.3)
        t1 = s.now()
    rows = s.frame()
    assert len(rows) >= 0.3 * 10
    w = s.window(t0, t1)
    assert w["telemetry_samples"] >= 3
    assert w["power_w"] == 100.0 and w["mem_clock_mhz"] is None
    assert w["throttled"] is False  # idle bit alone is no throttle
    assert s.phases[-1]["phase"] == "work" and s.phases[-1]["t_end_s"] >= t1


def test_sampler_window_without_samples_takes_the_nearest():
    with Sampler(lambda: {"clock_event_reasons": 0x4}, interval_s=10) as s:
        pass
    w = s.window(s.now() + 5, s.now() + 6)
    assert w["telemetry_samples"] == 1 and w["throttled"] is True


def test_sampler_survives_a_failing_source():
    def broken():
        raise OSError("gone")

    with Sampler(broken, interval_s=0.01) as s:
        time.sleep(0.05)
    assert "gone" in s.frame()["error"].iloc[0]


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "run.json"
    target.write_text("old")

    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of a new run.js")
            raise RuntimeError("killed while writing")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["run.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["run.json"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # readable by others, unlike mkstemp's


def test_make_run_dir_refuses_unwritable_and_occupied_dirs(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a writable directory"):
        make_run_dir(tmp_path / "file" / "sub", "cpu")
    d = make_run_dir(tmp_path / "r", "cpu")
    (d / "run.json").write_text("{}")
    with pytest.raises(UsageError, match="already holds a run"):
        make_run_dir(d, "cpu")


def test_slug():
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


@pytest.mark.parametrize("content,message", [
    (None, "no run.json"),
    ("{not json", "corrupt run.json"),
    (json.dumps({"kind": "something-else"}), "not a gpuroof run.json"),
    (json.dumps({"kind": "gpuroof-run", "schema_version": SCHEMA_VERSION}), "field status: missing"),
    (json.dumps({"kind": "gpuroof-run", "schema_version": 99, "status": "complete", "backend": "cpu",
                 "device": {}, "ceilings": {}}), "schema_version 99"),
])
def test_load_run_refuses_corrupt_or_foreign_files(tmp_path, content, message):
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    with pytest.raises(UsageError, match=message):
        load_run(tmp_path)


def test_load_run_refuses_a_corrupt_table(cpu_run, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(cpu_run.run_dir, d)
    run = load_run(d)
    assert isinstance(run.table("points"), pd.DataFrame)
    (d / "points.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="points.csv"):
        run.table("points")
