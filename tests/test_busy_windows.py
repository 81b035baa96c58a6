"""A busy machine is named and never judged: every timed window (sweep point, bench case, user
kernel) is watched, timed again while busy and marked when it stayed busy; ceilings come from
undisturbed points; bench, the API and the plugin carry their window's quality; `check` refuses a
busy run (exit 2) unless --allow-busy. The busy window is faked at the quality layer
(`Activity.stop`, `_others`), never by timing: the kernels and their timing are real.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpuroof import quality
from gpuroof.cli import main
from gpuroof.hierarchy import Level, level_ceilings, plateau_level
from gpuroof.matrix import matrix_ceilings
from gpuroof.results import load_run, write_run
from gpuroof.roofline import Roofline
from gpuroof.sweep import extract_ceilings, summarize

from test_pytest_plugin import _plugin_args
from test_trust_boundaries import make_run, points_table, run_meta

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]


def activity(share: float = 0.0, steal: float = 0.0) -> dict:
    """What Activity.stop() returns for a window in which other processes took `share` of the CPUs."""
    return {"wall_s": 1.0, "logical_cpus": 2, "other_processes_cpu_s": 2 * share,
            "other_processes_share": share, "steal_share": steal,
            "busiest_other_processes": [{"pid": 4242, "name": "make", "cpu_s": round(2 * share, 3)}] if share else [],
            "load_average_start": [2.0, 2.0, 2.0], "load_average_end": [2.0, 2.0, 2.0]}


def machine(monkeypatch, *shares: float) -> list[float]:
    """Activity.stop() reports the given shares in turn (the last one from then on); returns the list
    of windows it was asked about, so a test can count them."""
    seen: list[float] = []

    def stop(self) -> dict:
        share = shares[min(len(seen), len(shares) - 1)]
        seen.append(share)
        return activity(share)

    monkeypatch.setattr(quality.Activity, "stop", stop)
    return seen


# --------------------------------------------------------------------------- windows


def test_a_busy_window_is_timed_again_and_the_quiet_one_kept(monkeypatch):
    machine(monkeypatch, 0.5, 0.0)
    calls = iter(["contended", "quiet"])
    w = quality.quiet_window(lambda: next(calls), "the point float32 rw 64 FMAs", retries=2)
    assert w.result == "quiet" and not w.disturbed and w.attempts == 2
    assert w.columns() == {"other_processes_share": 0.0, "steal_share": 0.0, "disturbed": False, "attempts": 2}


def test_a_window_busy_every_time_is_marked_and_the_least_busy_kept(monkeypatch):
    machine(monkeypatch, 0.6, 0.3, 0.5)
    calls = iter([1, 2, 3])
    w = quality.quiet_window(lambda: next(calls), "the point float32 rw 64 FMAs", retries=2)
    assert w.result == 2 and w.attempts == 3 and w.disturbed
    assert "30%" in w.reasons[0] and "the point float32 rw 64 FMAs" in w.reasons[0] and "make" in w.reasons[0]
    assert w.quality()["ok"] is False and w.quality()["attempts"] == 3


def test_steal_alone_disturbs_a_window(monkeypatch):
    monkeypatch.setattr(quality.Activity, "stop", lambda self: activity(0.0, steal=0.2))
    w = quality.quiet_window(lambda: None, "the case", retries=0)
    assert w.disturbed and "steal" in w.reasons[0]


def test_activity_tells_a_reused_pid_by_its_start_time_not_its_name(monkeypatch):
    """A kernel worker renames itself with each work item: only its CPU time in the window counts.
    A pid reused by a new program (another start time) counts that program's whole time."""
    snapshots = iter([
        {10: ("kworker/u8:1-kvfree_rcu_reclaim", 100.0, 5.0), 12: ("old", 50.0, 9.0)},
        {10: ("kworker/u8:1-flush-254:0", 100.0, 5.1), 12: ("new", 300.0, 0.2), 13: ("started", 310.0, 0.3)},
    ])
    monkeypatch.setattr(quality, "_others", lambda own: next(snapshots))
    got = quality.Activity().stop()
    assert got["other_processes_cpu_s"] == pytest.approx(0.1 + 0.2 + 0.3)
    assert {p["name"]: p["cpu_s"] for p in got["busiest_other_processes"]} == {"started": 0.3, "new": 0.2,
                                                                               "kworker/u8:1-flush-254:0": 0.1}


# --------------------------------------------------------------------------- ceilings


def _samples_with_a_second_compute_point() -> pd.DataFrame:
    """points_table plus 256 FMAs per element: two compute-bound points per dtype."""
    base = points_table()
    top = base[base["fmas_per_element"] == 64].copy()
    top["fmas_per_element"] = 256
    top["flops"] *= 4
    top["intensity_flop_per_byte"] *= 4
    top["time_s"] *= 4
    return pd.concat([base, top], ignore_index=True).assign(mem_clock_mhz=np.nan, power_w=np.nan,
                                                            temperature_c=np.nan, disturbed=False)


def test_a_disturbed_point_never_joins_a_plateau():
    samples = _samples_with_a_second_compute_point()
    hit = (samples["dtype"] == "float32") & (samples["fmas_per_element"] == 256)
    samples.loc[hit, "disturbed"] = True
    samples.loc[hit, "time_s"] *= 1.02  # slowed, but within 3% of the best: on the plateau if it counted
    cei = extract_ceilings(summarize(samples), 0, samples)
    assert [p["fmas_per_element"] for p in cei.plateaus["float32"]] == [64]
    assert cei.statistics["float32"]["repetitions"] == 3
    assert sorted(p["fmas_per_element"] for p in cei.plateaus["float64"]) == [64, 256]
    assert cei.disturbed == []


def test_a_ceiling_with_only_disturbed_points_says_so():
    samples = _samples_with_a_second_compute_point()
    samples.loc[samples["dtype"] == "float32", "disturbed"] = True
    cei = extract_ceilings(summarize(samples), 0, samples)
    assert cei.disturbed == ["float32"] and cei.roofline.compute["float32"] > 0
    q = quality.assess({**run_meta(), "disturbed": {"retries": 2, "ceilings_from_disturbed_points": cei.disturbed}})
    assert q["ok"] is False and any("disturbed points only (float32)" in r for r in q["reasons"]), q


def test_level_and_matrix_ceilings_leave_disturbed_sizes_out():
    levels = [Level("l1", 64 << 10), Level("l2", 2 << 20), Level("dram", None)]
    rows = []
    for ws, bw, busy in ((16 << 10, 400e9, False), (32 << 10, 100e9, True), (256 << 10, 200e9, True),
                         (512 << 10, 200e9, True), (64 << 20, 40e9, False)):
        rows += [{"working_set_bytes": ws, "bytes": ws * 100, "time_s": ws * 100 / bw, "valid": True,
                  "disturbed": busy} for _ in range(5)]
    samples = pd.DataFrame(rows)
    pts = samples.groupby("working_set_bytes").agg(bytes=("bytes", "first"), time_s=("time_s", "median"),
                                                   valid=("valid", "all"), disturbed=("disturbed", "first"))
    pts = pts.reset_index()
    pts["bandwidth_Bps"] = pts["bytes"] / pts["time_s"]
    pts["level"] = [plateau_level(ws, levels) for ws in pts["working_set_bytes"]]
    named: list[str] = []
    bw, _ = level_ceilings(pts, levels, samples, disturbed=named)
    assert bw["l1"] == pytest.approx(400e9)  # the disturbed 32 KiB size (100 GB/s) is not in it
    assert named == ["l2"] and bw["l2"] == pytest.approx(200e9)

    mat = pd.DataFrame([{"unit": "float32-matrix", "n": n, "time_s": 2 * n ** 3 / rate, "flops": 2 * n ** 3,
                         "valid": True, "disturbed": busy}
                        for n, rate, busy in ((256, 1e11, False), (512, 2e11, True)) for _ in range(3)])
    named = []
    assert matrix_ceilings(mat, named) == {"float32-matrix": pytest.approx(1e11)} and named == []
    mat["disturbed"] = True
    assert matrix_ceilings(mat, named) == {"float32-matrix": pytest.approx(2e11)} and named == ["float32-matrix"]


# --------------------------------------------------------------------------- bench


@pytest.fixture
def ceilings_run(tmp_path) -> Path:
    return make_run(tmp_path / "ceilings", workloads=False)


def _bench(tmp_path, ceilings_run, capsys, name: str = "out") -> tuple[int, dict, str, Path]:
    out = tmp_path / name
    out.mkdir()
    rc = main(["bench", "--backend", "cpu", "--workload", "gemm", "--shape", "m=16,n=64,k=64", "--force",
               "--ceilings", str(ceilings_run), "--out", str(out), "--json"])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out.strip().splitlines()[-1]), cap.err, out


def test_bench_on_a_busy_machine_says_so_in_json_csv_run_and_report(tmp_path, ceilings_run, capsys, monkeypatch):
    seen = machine(monkeypatch, 0.45)
    rc, out, err, run_dir = _bench(tmp_path, ceilings_run, capsys)
    assert rc == 0
    assert out["quality"]["ok"] is False and "during the bench" in out["quality"]["reasons"][0]
    assert out["quality"]["activity"]["other_processes_share"] == 0.45
    case = out["workloads"][0]
    assert case["disturbed"] is True and case["attempts"] == 2 and case["other_processes_share"] == 0.45
    assert case["notes"].startswith("busy: other processes used 45%")
    assert "will not judge this run" in err
    assert len(seen) == 3  # the case's two windows and the bench's own
    table = pd.read_csv(run_dir / "workloads.csv")
    assert table["disturbed"].tolist() == [True] and table["other_processes_share"].tolist() == [0.45]
    run = load_run(run_dir)
    assert run.meta["workloads"]["quality"]["ok"] is False and run.meta["workloads"]["disturbed"] == 1
    from gpuroof.report import collect_warnings, trust

    answer, reasons = trust(run.meta, collect_warnings(run, None, table, None))
    assert answer == "no" and any(r.startswith("workloads: busy") for r in reasons)


def test_bench_on_a_quiet_machine_is_ok_and_times_each_case_once(tmp_path, ceilings_run, capsys, monkeypatch):
    machine(monkeypatch, 0.0)
    rc, out, err, run_dir = _bench(tmp_path, ceilings_run, capsys)
    assert rc == 0 and out["quality"]["ok"] is True and out["quality"]["reasons"] == []
    assert out["workloads"][0]["disturbed"] is False and out["workloads"][0]["attempts"] == 1
    assert "will not judge" not in err
    assert load_run(run_dir).meta["workloads"]["quality"]["ok"] is True


# --------------------------------------------------------------------------- the API


def test_measure_kernel_records_a_busy_window(monkeypatch):
    from gpuroof import api

    roof = Roofline.from_dict(run_meta()["ceilings"])
    x = np.ones(1 << 16, np.float32)
    out = np.empty_like(x)
    kw = dict(flops=x.size, bytes=12 * x.size, unit="float32", backend="cpu", ceilings=roof, budget_s=0.01,
              min_reps=3, name="add")
    machine(monkeypatch, 0.5)
    res = api.measure_kernel(lambda: np.add(x, x, out=out), busy_retries=1, **kw)
    assert res.busy and res.quality["attempts"] == 2 and "the timing of add" in res.quality["reasons"][0]
    d = res.to_dict()
    assert d["disturbed"] is True and d["other_processes_share"] == 0.5 and d["quality"]["ok"] is False
    assert "BUSY: busy: other processes used 50%" in res.summary()
    machine(monkeypatch, 0.0)
    res = api.measure_kernel(lambda: np.add(x, x, out=out), **kw)
    assert not res.busy and res.quality["attempts"] == 1 and "BUSY" not in res.summary()


# --------------------------------------------------------------------------- check


def _runs(tmp_path: Path, base_share: float, cur_share: float, scale: float = 1.0) -> tuple[Path, Path]:
    def meta(share: float) -> dict:
        m = run_meta()
        m["workloads"] = {"cases": 3, "valid": 3, "quality": quality.window_quality(activity(share), "the bench")}
        return m
    return make_run(tmp_path / "base", meta(base_share)), make_run(tmp_path / "cur", meta(cur_share), scale=scale)


@pytest.mark.parametrize("role", ["baseline", "current"])
def test_check_refuses_a_busy_run_with_one_line_naming_it(tmp_path, capsys, role):
    base, cur = _runs(tmp_path, 0.4 if role == "baseline" else 0.0, 0.4 if role == "current" else 0.0, scale=3.0)
    rc = main(["check", "--baseline", str(base), "--current", str(cur)])
    err = capsys.readouterr().err
    busy = base if role == "baseline" else cur
    assert rc == 2 and err.count("\n") == 1, err
    assert f"--{role} {busy}" in err and "other processes took 40% of the CPUs' time" in err
    assert "--allow-busy" in err
    rc = main(["check", "--baseline", str(base), "--current", str(cur), "--allow-busy"])
    out = capsys.readouterr().out
    assert rc == 1 and "SLOWER" in out  # judged when asked to: 3x slower is a regression


def test_check_calls_a_case_timed_in_a_busy_window_noisy_not_slower(tmp_path, capsys):
    base, cur = _runs(tmp_path, 0.0, 0.0, scale=3.0)
    w = pd.read_csv(cur / "workloads.csv")
    w["disturbed"] = True
    w["other_processes_share"] = 0.6
    w.to_csv(cur / "workloads.csv", index=False)
    rc = main(["check", "--baseline", str(base), "--current", str(cur), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and {c["verdict"] for c in res["cases"]} == {"NOISY"}, res
    assert "others took 60% of the CPUs' time" in res["cases"][0]["reason"]
    rc = main(["check", "--baseline", str(base), "--current", str(cur), "--json", "--allow-busy"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 1 and {c["verdict"] for c in res["cases"]} == {"SLOWER"} and res["allow_busy"] is True


def test_check_of_quiet_runs_is_unchanged(tmp_path, capsys):
    base, cur = _runs(tmp_path, 0.02, 0.03)
    assert main(["check", "--baseline", str(base), "--current", str(cur)]) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------- the pytest plugin


BUSY_CONFTEST = '''
from gpuroof import quality

def _busy(self):
    return {"wall_s": 1.0, "logical_cpus": 2, "other_processes_cpu_s": 1.2, "other_processes_share": 0.6,
            "steal_share": 0.0, "busiest_other_processes": [{"pid": 4242, "name": "make", "cpu_s": 1.2}],
            "load_average_start": [2.0] * 3, "load_average_end": [2.0] * 3}

quality.Activity.stop = _busy  # the quality layer says: other processes took 60% of the CPUs
'''

KERNEL_TEST = '''
import numpy as np

def test_add_is_near_its_roof(placement):
    x = np.ones(1 << 16, np.float32); out = np.empty_like(x)
    p = placement(lambda: np.add(x, x, out=out), flops=x.size, bytes=12 * x.size, unit="float32",
                  budget_s=0.01, min_reps=3)
    assert p.efficiency > 0, p
'''


def test_plugin_skips_a_kernel_timed_only_on_a_busy_machine(pytester, tmp_path, monkeypatch):
    from gpuroof.backends.cpu import CpuBackend
    from gpuroof.pytest_plugin import Settings, cache_file, cache_key
    from gpuroof.results import atomic_write_text, dumps

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cache = tmp_path / "cache"
    cache.mkdir()
    settings = Settings(backend="cpu", device=0, dtypes=(), quick=False, max_age_days=7, cache_dir=cache,
                        remeasure=False)
    key = cache_key(settings, "cpu", CpuBackend().device_info())
    atomic_write_text(cache_file(cache, key), dumps({"key": key, "measured_at": time.time(),
                                                     "measured_utc": "now", "meta": run_meta()}))
    pytester.makeini("[pytest]\ngpuroof_backend = cpu\n")
    pytester.makeconftest(BUSY_CONFTEST)
    pytester.makepyfile(test_kernel=KERNEL_TEST)
    args = [*_plugin_args(), f"--gpuroof-cache-dir={cache}", "-p", "no:cacheprovider", "-rs"]
    res = pytester.runpytest_subprocess(*args)
    res.assert_outcomes(skipped=1)
    res.stdout.fnmatch_lines(["*gpuroof: not judged: busy: other processes used 60% of the CPUs' time during "
                              "the timing of <lambda>*in each of 3 window(s) (--gpuroof-allow-busy*"])
    res = pytester.runpytest_subprocess(*args, "--gpuroof-allow-busy")
    res.assert_outcomes(passed=1)
