"""`gpuroof check`: SAME on identical code, SLOWER (exit 1) on a de-optimized kernel, NOISY when the
spread covers the difference, bad input exit 2, and the baseline's cases run again for real.

The run directories here hold real timings: NumPy kernels timed in the thread's CPU time, placed by `gpuroof.bench.place_case` on the real roofline of the session's
quick CPU measurement (`cpu_run`).
"""
from __future__ import annotations

import copy
import json
import time

import numpy as np
import pandas as pd
import pytest

from gpuroof.bench import place_case
from gpuroof.check import decide
from gpuroof.cli import main
from gpuroof.results import write_run
from gpuroof.roofline import Roofline

N = 1 << 20  # float32 elements per array: 4 MiB, a kernel of about a millisecond
REPS = 25


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return rng.random(N, dtype=np.float32), rng.random(N, dtype=np.float32), np.empty(N, np.float32)


def interleaved(*fns, reps: int = REPS) -> list[np.ndarray]:
    """Per-repetition seconds of each function, taken in turn (ABAB...) so that both sides of a
    comparison see the same machine. Each call is timed in this thread's CPU time, so the time
    another process holds the core is not counted: with five repetitions (the NOISY case) one
    descheduled call could otherwise swap the medians. These tests judge check's statistics on real
    kernels, not a timer."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for t, fn in zip(times, fns):
            t0 = time.thread_time()
            fn()
            t.append(time.thread_time() - t0)
    return [np.asarray(t) for t in times]


def make_run(path, meta, cases: dict, roof_scale: float = 1.0, device: str | None = None,
             backend: str | None = None):
    """A run directory: `meta` (a real run's) plus workloads.csv/workload_samples.csv from timings.

    cases: {(name, case): (flops, bytes, times)}; roof_scale multiplies every ceiling (a card that
    runs at a lower clock); device/backend rename the device (a run from another card)."""
    meta = copy.deepcopy(meta)
    if roof_scale != 1.0:
        meta["ceilings"] = {k: {u: v * roof_scale for u, v in d.items()} for k, d in meta["ceilings"].items()}
    if device:
        meta["device"]["name"] = device
    if backend:
        meta["backend"] = backend
    roof = Roofline.from_dict(meta["ceilings"])
    rows, samples = [], []
    for (name, case), (flops, nbytes, times) in cases.items():
        med, q1, q3 = np.median(times), np.quantile(times, 0.25), np.quantile(times, 0.75)
        placed = place_case(roof, flops, nbytes, float(med), "float32", float((q3 - q1) / med))
        placed["notes"] = "; ".join(placed["notes"])
        rows.append({"name": name, "case": case, "dtype": "float32", "unit": "float32", "flops": flops,
                     "bytes": nbytes, "time_s": med, "time_q1_s": q1, "time_q3_s": q3,
                     "reps": len(times), **placed, "valid": True, "params": "{}"})
        samples += [{"name": name, "case": case, "dtype": "float32", "rep": i, "time_s": t}
                    for i, t in enumerate(times)]
    path.mkdir(parents=True)
    write_run(path, meta, {"workloads": pd.DataFrame(rows), "workload_samples": pd.DataFrame(samples)})
    return path


def run_check(capsys, *args) -> tuple[int, str, str]:
    rc = main(["check", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def add_case(times):
    return {("vector-add", f"n={N}"): (N, 12 * N, times)}


def test_identical_code_passes(tmp_path, cpu_run, arrays, capsys):
    x, y, out = arrays
    base, cur = interleaved(lambda: np.add(x, y, out=out), lambda: np.add(x, y, out=out))
    b = make_run(tmp_path / "base", cpu_run.meta, add_case(base))
    c = make_run(tmp_path / "cur", cpu_run.meta, add_case(cur))
    rc, out_text, _ = run_check(capsys, "--baseline", b, "--current", c, "--tolerance", "15", "--json")
    res = json.loads(out_text)
    assert rc == 0 and not res["regressed"], res
    assert res["cases"][0]["verdict"] in ("SAME", "NOISY", "FASTER")
    assert res["cases"][0]["basis"] == "efficiency"


def test_deoptimized_kernel_is_slower_and_fails_the_gate(tmp_path, cpu_run, arrays, capsys):
    """The same vector add, de-optimized on purpose: an extra copy of x before every add."""
    x, y, out = arrays
    base, cur = interleaved(lambda: np.add(x, y, out=out), lambda: np.add(x.copy(), y, out=out))
    b = make_run(tmp_path / "base", cpu_run.meta, add_case(base))
    c = make_run(tmp_path / "cur", cpu_run.meta, add_case(cur))
    rc, out_text, _ = run_check(capsys, "--baseline", b, "--current", c, "--tolerance", "10")
    assert rc == 1, out_text
    assert out_text.splitlines()[2].startswith("SLOWER")
    assert "REGRESSION (exit 1)" in out_text


def test_spread_covering_the_difference_is_noisy(tmp_path, cpu_run, arrays, capsys):
    """Five repetitions whose work differs by up to 5x (1..5 passes each); the current kernel does
    one pass more per repetition. The medians differ by about a third, the spread covers it."""
    x, y, out = arrays

    def cycling(extra_part: bool):
        state = {"i": 0}

        def fn():
            for _ in range(1 + state["i"] % 5):  # 1..5 passes: the per-repetition spread
                np.add(x, y, out=out)
            if extra_part:
                np.add(x, y, out=out)
            state["i"] += 1
        return fn

    base, cur = interleaved(cycling(False), cycling(True), reps=5)
    b = make_run(tmp_path / "base", cpu_run.meta, add_case(base))
    c = make_run(tmp_path / "cur", cpu_run.meta, add_case(cur))
    rc, out_text, _ = run_check(capsys, "--baseline", b, "--current", c, "--tolerance", "5", "--json")
    case = json.loads(out_text)["cases"][0]
    assert rc == 0
    assert case["verdict"] == "NOISY", case
    assert case["ratio"] > 1 and case["ci_low"] < 1 < case["ci_high"] and case["p_value"] > 0.05


def test_a_card_that_clocks_lower_is_not_a_code_regression(tmp_path, cpu_run, arrays, capsys):
    """Twice the time on a roofline half as high: SAME by efficiency, SLOWER by time."""
    x, y, out = arrays
    base, cur = interleaved(lambda: np.add(x, y, out=out), lambda: (np.add(x, y, out=out), np.add(x, y, out=out)))
    b = make_run(tmp_path / "base", cpu_run.meta, add_case(base))
    c = make_run(tmp_path / "cur", cpu_run.meta, add_case(cur), roof_scale=0.5)
    rc_eff, out_eff, _ = run_check(capsys, "--baseline", b, "--current", c, "--tolerance", "20", "--json")
    rc_time, out_time, _ = run_check(capsys, "--baseline", b, "--current", c, "--tolerance", "20", "--by",
                                     "time", "--json")
    eff, tim = json.loads(out_eff)["cases"][0], json.loads(out_time)["cases"][0]
    assert eff["roof_ratio"] == pytest.approx(0.5)
    assert rc_eff == 0 and eff["verdict"] in ("SAME", "NOISY"), eff
    assert rc_time == 1 and tim["verdict"] == "SLOWER", tim


def test_baseline_from_another_device_is_refused_unless_forced(tmp_path, cpu_run, arrays, capsys):
    x, y, out = arrays
    (base,) = interleaved(lambda: np.add(x, y, out=out), reps=5)
    b = make_run(tmp_path / "base", cpu_run.meta, add_case(base), device="NVIDIA H100 80GB HBM3", backend="cuda")
    c = make_run(tmp_path / "cur", cpu_run.meta, add_case(base))
    rc, out_text, err = run_check(capsys, "--baseline", b, "--current", c)
    assert rc == 2 and out_text == ""
    assert err.count("\n") == 1 and "NVIDIA H100 80GB HBM3" in err and "--force" in err
    rc, _, _ = run_check(capsys, "--baseline", b, "--current", c, "--force")
    assert rc == 0


def test_bad_input_is_one_line_and_exit_2(tmp_path, cpu_run, arrays, capsys):
    x, y, out = arrays
    (t,) = interleaved(lambda: np.add(x, y, out=out), reps=5)
    b = make_run(tmp_path / "base", cpu_run.meta, add_case(t))
    other = make_run(tmp_path / "other", cpu_run.meta, {("triad", "n=1"): (2, 12, t)})
    for args, needle in (((b, other), "no workload case in common"),
                         ((b, cpu_run.run_dir), "has no workloads.csv"),
                         ((b, tmp_path / "nope"), "not a gpuroof run")):
        rc, _, err = run_check(capsys, "--baseline", args[0], "--current", args[1])
        assert rc == 2 and err.count("\n") == 1 and needle in err, err
    rc, _, err = run_check(capsys, "--baseline", b, "--current", b, "--tolerance", "abc")
    assert rc == 2 and "--tolerance" in err


def test_a_case_that_no_longer_passes_its_check_fails_the_gate(tmp_path, cpu_run, arrays, capsys):
    x, y, out = arrays
    (t,) = interleaved(lambda: np.add(x, y, out=out), reps=5)
    b = make_run(tmp_path / "base", cpu_run.meta, add_case(t))
    c = make_run(tmp_path / "cur", cpu_run.meta, add_case(t))
    w = pd.read_csv(c / "workloads.csv")
    w["valid"] = False
    w["notes"] = "output differs from the float64 reference: rel_error 0.5 > tolerance 1e-05; excluded"
    w.to_csv(c / "workloads.csv", index=False)
    rc, out_text, _ = run_check(capsys, "--baseline", b, "--current", c)
    assert rc == 1 and "INVALID" in out_text and "rel_error 0.5" in out_text


def test_decision_rules_on_clear_samples():
    rng = np.random.default_rng(1)
    base = 1.0 + 0.01 * rng.standard_normal(30)
    assert decide(base, base * 1.5, 0.05).verdict == "SLOWER"
    assert decide(base, base / 1.5, 0.05).verdict == "FASTER"
    assert decide(base, base * 1.01, 0.05).verdict == "SAME"
    assert decide(base[:2], base[:2] * 2, 0.05).verdict == "NOISY"  # too few repetitions


def test_check_runs_the_baseline_cases_now(tmp_path, cpu_run, capsys):
    """No --current: the baseline's cases (a real bench run) are rebuilt and timed again on this CPU."""
    base = tmp_path / "bench"
    base.mkdir()  # bench --out names an existing directory
    rc = main(["bench", "--backend", "cpu", "--workload", "gemm", "--shape", "m=64,n=256,k=256",
               "--ceilings", str(cpu_run.run_dir), "--out", str(base)])
    capsys.readouterr()
    assert rc == 0
    now = tmp_path / "now"
    rc, out_text, err = run_check(capsys, "--backend", "cpu", "--baseline", base, "--ceilings", cpu_run.run_dir,
                                  "--out", now, "--tolerance", "50", "--json")
    if rc == 2:  # a machine other processes kept busy: named in one line, never judged
        line = err.strip().splitlines()[-1]
        assert "the machine was busy while its workloads were timed" in line and "of the CPUs' time" in line, err
        if line.startswith(f"gpuroof: error: --baseline {base}"):
            assert not now.exists(), "refused before anything is measured now"
            return
        assert line.startswith(f"gpuroof: error: --current {now}"), err
    else:
        res = json.loads(out_text)
        assert rc == 0, res
        assert res["current"] == str(now)
    assert f"current run: {now}" in err
    assert (now / "workload_samples.csv").exists()
    cases_then = pd.read_csv(base / "workloads.csv")[["name", "case", "dtype"]]
    cases_now = pd.read_csv(now / "workloads.csv")[["name", "case", "dtype"]]
    assert cases_then.equals(cases_now)
    if rc == 2:
        return
    assert {c["verdict"] for c in res["cases"]} <= {"SAME", "NOISY", "FASTER"}
