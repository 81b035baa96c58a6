"""Run quality, the ceiling statistic and a CPU's device key: units, and the run the readers pick."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from gpuroof import quality
from gpuroof.backends.cpu.device import cpu_device_name, isa_level
from gpuroof.bench import newest_run, quality_ok
from gpuroof.hierarchy import Level, level_ceilings
from gpuroof.results import load_run, slug, write_run
from gpuroof.sweep import CEILING_PERCENTILE, extract_ceilings, plateau_statistic, summarize

from test_trust_boundaries import points_table, run_meta


# --------------------------------------------------------------------------- the ceiling statistic


def test_plateau_statistic_is_the_90th_percentile_with_its_spread():
    rates = np.arange(1, 101, dtype=float)  # 1 .. 100
    s = plateau_statistic(rates)
    assert s["value"] == pytest.approx(np.percentile(rates, CEILING_PERCENTILE))
    assert s["median"] == pytest.approx(50.5) and s["repetitions"] == 100
    assert s["spread"] == pytest.approx((s["value"] - s["p10"]) / s["value"])
    with pytest.raises(ValueError):
        plateau_statistic([np.nan, 0.0, -1.0])


def _samples() -> pd.DataFrame:
    return points_table().assign(mem_clock_mhz=np.nan, power_w=np.nan, temperature_c=np.nan)


def test_contended_repetitions_do_not_drag_a_ceiling_down():
    """Five of nine repetitions of every point slowed 3x (another process on the cores): the best
    median, the old statistic, falls to a third; the 90th percentile stays on the hardware's rate."""
    samples = pd.concat([_samples().assign(rep=_samples()["rep"] + 3 * k) for k in range(3)], ignore_index=True)
    samples.loc[samples["rep"].isin([0, 1, 3, 4, 6]), "time_s"] *= 3.0
    pts = summarize(samples)
    clean = extract_ceilings(summarize(_samples()), 0, _samples()).roofline
    got = extract_ceilings(pts, 0, samples)
    assert extract_ceilings(pts, 0).roofline.compute["float32"] < 0.4 * clean.compute["float32"]
    assert got.roofline.compute["float32"] >= 0.97 * clean.compute["float32"]
    assert got.roofline.bandwidth["dram"] >= 0.97 * clean.bandwidth["dram"]
    assert set(got.statistics) == {"dram", "float32", "float64"}
    assert got.statistics["float32"]["p10"] < 0.4 * got.roofline.compute["float32"]  # the spread shows it


def test_level_ceilings_take_the_statistic_over_every_working_set_of_the_plateau():
    levels = [Level("l1", 64 << 10, ""), Level("l2", 2 << 20, ""), Level("dram", None, "")]
    rows = []
    for ws, bw in ((16 << 10, 400e9), (32 << 10, 400e9), (256 << 10, 200e9), (512 << 10, 200e9),
                   (64 << 20, 40e9)):
        for rep in range(10):
            t = ws * 100 / bw * (4.0 if rep < 3 else 1.0)  # three contended repetitions per size
            rows.append({"working_set_bytes": ws, "bytes": ws * 100, "time_s": t, "valid": True})
    samples = pd.DataFrame(rows)
    pts = samples.groupby("working_set_bytes").agg(bytes=("bytes", "first"), time_s=("time_s", "median"),
                                                   valid=("valid", "all")).reset_index()
    pts["bandwidth_Bps"] = pts["bytes"] / pts["time_s"]
    from gpuroof.hierarchy import plateau_level

    pts["level"] = [plateau_level(ws, levels) for ws in pts["working_set_bytes"]]
    stats: dict = {}
    bw, _ = level_ceilings(pts, levels, samples, stats)
    assert bw["l1"] == pytest.approx(400e9) and bw["l2"] == pytest.approx(200e9)
    assert bw["l1"] > bw["l2"] > bw["dram"]
    assert stats["l1"]["p10"] == pytest.approx(100e9)  # the contended ones are in the spread, not the ceiling


# --------------------------------------------------------------------------- quality


def _quiet_meta() -> dict:
    m = run_meta()
    m["activity"] = {"other_processes_share": 0.01, "steal_share": 0.0, "busiest_other_processes": []}
    return m


def test_a_quiet_consistent_run_is_ok():
    assert quality.assess(_quiet_meta()) == {"ok": True, "reasons": [], "warnings": []}


@pytest.mark.parametrize("edit,word", [
    (lambda m: m["activity"].update(other_processes_share=0.5,
                                    busiest_other_processes=[{"pid": 1, "name": "make", "cpu_s": 9.0}]), "busy"),
    (lambda m: m["activity"].update(steal_share=0.2), "steal"),
    (lambda m: m["ceilings"]["bandwidth"].update(l2=1e10), "out of order"),
    (lambda m: m["ceilings"]["compute"].update({"float32-matrix": 5e11}), "BLAS"),
    (lambda m: m["fit"].update(max_abs_deviation=0.6), "strays"),
    (lambda m: m["ratios"]["compute"].update(float32=1.3), "theoretical"),
])
def test_each_reason_marks_the_run(edit, word):
    m = _quiet_meta()
    edit(m)
    q = quality.assess(m)
    assert q["ok"] is False and any(word in r for r in q["reasons"]), q


def test_vector_under_blas_is_a_cpu_reason_only():
    m = _quiet_meta()
    m["ceilings"]["compute"]["float32-matrix"] = 5e11  # tensor cores are far above the FMA roof by design
    m["backend"] = "cuda"
    assert quality.assess(m)["ok"] is True


SPIN = "import time\nt = time.time()\nwhile time.time() - t < {s}: pass"


def test_activity_counts_a_process_that_is_not_ours():
    a = quality.Activity()
    # started through a shell that exits at once: the spinner is re-parented, not our child
    subprocess.run(["sh", "-c", f"{sys.executable} -c '{SPIN.format(s=3.0)}' >/dev/null 2>&1 &"], check=True)
    time.sleep(2.0)
    got = a.stop()
    assert got["other_processes_cpu_s"] >= 1.0, got
    assert got["busiest_other_processes"][0]["cpu_s"] >= 1.0
    assert got["other_processes_share"] >= 1.0 / (2.0 * got["logical_cpus"]) * 0.9
    assert 0.0 <= got["steal_share"] <= 1.0 and len(got["load_average_end"]) == 3
    assert quality.assess({**_quiet_meta(), "activity": got})["ok"] is False  # a core's half is busy


def test_activity_leaves_our_own_children_out():
    """gpuroof's own worker processes (or pytest's measure subprocess) are the measurement, not noise."""
    a = quality.Activity()
    spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(s=2.0)])
    try:
        time.sleep(1.5)
        got = a.stop()
    finally:
        spinner.wait()
    assert all(p["pid"] != spinner.pid for p in got["busiest_other_processes"])


def test_platform_state_names_the_blas():
    p = quality.platform_state()
    assert p["blas"] and any(b.get("internal_api") for b in p["blas"])  # numpy's BLAS, by threadpoolctl
    assert "governor" in p and "turbo" in p


# --------------------------------------------------------------------------- default runs


def _make(path, created: str, ok: bool | None, device: str = "Synthetic CPU"):
    m = run_meta(device=device)
    m["created_utc"] = created
    if ok is not None:
        m["quality"] = {"ok": ok, "reasons": [] if ok else ["busy: other processes used 50% of the CPUs' time"]}
    path.mkdir(parents=True)
    write_run(path, m, {"points": points_table()})
    return path


def test_a_run_that_is_not_ok_is_never_the_default_while_a_good_one_exists(tmp_path):
    base = tmp_path / slug("Synthetic CPU")
    _make(base / "old-good", "2026-01-01T00:00:00+00:00", True)
    _make(base / "new-busy", "2026-02-01T00:00:00+00:00", False)
    assert newest_run("cpu", "Synthetic CPU", tmp_path).path.name == "old-good"
    _make(base / "newer-unrated", "2026-03-01T00:00:00+00:00", None)  # from before quality was recorded
    assert newest_run("cpu", "Synthetic CPU", tmp_path).path.name == "newer-unrated"


def test_a_busy_run_is_the_default_only_when_it_is_all_there_is(tmp_path):
    base = tmp_path / slug("Synthetic CPU")
    _make(base / "busy", "2026-02-01T00:00:00+00:00", False)
    run = newest_run("cpu", "Synthetic CPU", tmp_path)
    assert run.path.name == "busy" and not quality_ok(run)


# --------------------------------------------------------------------------- device key


def test_isa_level_is_the_widest_vector_set():
    assert isa_level(["sse2", "avx", "avx2", "fma", "avx512f"]) == "avx512"
    assert isa_level(["sse2", "avx", "avx2", "fma"]) == "avx2"
    assert isa_level(["sse2", "avx", "avx2"]) == "avx"  # AVX2 without FMA: the FMA sweep is not AVX2's
    assert isa_level(["fp", "asimd"]) == "neon"
    assert isa_level([]) == "scalar"


def test_cpus_a_vm_names_alike_get_different_device_keys():
    zen3 = {"model": "AMD EPYC Processor", "family": 25, "model_number": 1, "cores_used": 2,
            "flags": ["sse2", "avx", "avx2", "fma"]}
    zen5 = {**zen3, "family": 26, "model_number": 2, "flags": zen3["flags"] + ["avx512f"]}
    eight = {**zen3, "cores_used": 8}
    names = {cpu_device_name(f) for f in (zen3, zen5, eight)}
    assert len(names) == 3 and len({slug(n) for n in names}) == 3
    assert cpu_device_name(zen3) == "AMD EPYC Processor (family 25 model 1, avx2, 2 cores)"


def test_a_real_quick_run_records_quality_statistic_and_activity(cpu_run):
    m = cpu_run.meta
    assert isinstance(m["quality"]["ok"], bool) and isinstance(m["quality"]["reasons"], list)
    assert m["quality"] == quality.assess(m)  # what was written is what the rules say
    stats = m["ceiling_statistic"]
    assert stats["statistic"].startswith(f"p{CEILING_PERCENTILE}")
    for name in ("dram", "float32", "float64"):
        s = stats["by_ceiling"][name]
        assert s["p10"] <= s["median"] <= s["value"] and 0 <= s["spread"] < 1
    assert m["ceilings"]["compute"]["float32"] == pytest.approx(stats["by_ceiling"]["float32"]["value"])
    assert m["activity"]["wall_s"] > 0 and m["platform"]["blas"]
    assert "(family" in m["device"]["name"] and m["device"]["isa_level"] in m["device"]["name"]
    assert load_run(cpu_run.path).meta["quality"] == m["quality"]


def _stray(deviation: float, windows: int) -> dict:
    return {"dtype": "float64", "variant": "rw", "fmas_per_element": 1, "intensity_flop_per_byte": 0.125,
            "deviation": deviation, "timed_windows": windows}


@pytest.mark.parametrize("stray,ok,word", [
    (_stray(-0.30, 2), True, "both of its windows"),   # repeats: the hardware's, a warning
    (_stray(-0.30, 1), False, "not timed again"),      # never confirmed: cannot be trusted
    (_stray(+0.30, 2), False, "under-measured"),        # faster than its own roofs
])
def test_a_stray_that_repeats_is_reported_not_a_fault(stray, ok, word):
    m = _quiet_meta()
    m["fit"] = {**m["fit"], "max_abs_deviation": 0.30, "strays": [stray]}
    q = quality.assess(m)
    assert q["ok"] is ok, q
    assert any(word in t for t in (q["warnings"] if ok else q["reasons"])), q


@pytest.mark.parametrize("spread,names_the_spread", [(0.54, True), (0.12, False)])
def test_a_point_above_its_roof_in_a_round_whose_dram_moved_says_so(spread, names_the_spread):
    """A point 30% above its own loop's roof: not ok either way; when the DRAM repetitions themselves
    spread further than that, the reason names the moving memory bandwidth, not a mystery roof."""
    m = _quiet_meta()
    m["fit"] = {**m["fit"], "max_abs_deviation": 0.30, "strays": [_stray(+0.30, 2)]}
    m["ceiling_statistic"] = {"by_ceiling": {"dram": {"spread": spread}}}
    q = quality.assess(m)
    assert q["ok"] is False
    text = " ".join(q["reasons"])
    assert "under-measured" in text
    assert ("54% spread of the DRAM repetitions" in text) is names_the_spread, text


def test_invalid_points_and_throttling_mark_the_run():
    m = _quiet_meta()
    m["validation"] = {**m["validation"], "invalid": 2}
    m["throttled_points"] = 3
    q = quality.assess(m)
    assert q["ok"] is False
    assert any("invalid points" in r for r in q["reasons"]) and any("throttled" in r for r in q["reasons"])


def test_ridge_softness_is_the_largest_shortfall_near_the_ridge():
    from gpuroof.roofline import Roofline
    from gpuroof.sweep import ridge_softness

    roof = Roofline(bandwidth={"dram": 10e9}, compute={"float32": 100e9})  # ridge 10 FLOP/B
    devs = [{"dtype": "float32", "variant": "ro", "fmas_per_element": f, "intensity_flop_per_byte": i,
             "overlapped_deviation": d}
            for f, i, d in ((4, 10.0, -0.4), (8, 20.0, -0.1), (64, 100.0, -0.6))]  # the last is far past the ridge
    soft = ridge_softness(devs, roof)["float32"]
    assert soft["shortfall"] == pytest.approx(0.4) and soft["fmas_per_element"] == 4


def test_a_unit_the_library_refused_is_no_invalid_gemm_sample():
    import pandas as pd

    from gpuroof.matrix import failed_unit
    from gpuroof.measure import invalid_matrix_samples

    rows = [{"unit": "float32-matrix", "valid": True, "time_s": 1.0},
            {"unit": "float32-matrix", "valid": False, "time_s": 1.0},  # a sample that failed its check
            failed_unit("int8", 1024, "CUBLASError: not supported")]
    assert invalid_matrix_samples(pd.DataFrame(rows)) == 1
