"""The roofline model and ceiling extraction, against hand-computed values."""
import math

import pandas as pd
import pytest

from gpuroof.roofline import Roofline, place
from gpuroof.sweep import extract_ceilings, fit_quality

ROOF = Roofline(bandwidth={"dram": 100e9}, compute={"float32": 1e12, "float64": 0.5e12})


def test_ridge_is_peak_over_bandwidth():
    assert ROOF.ridge("float32") == pytest.approx(10.0)
    assert ROOF.ridge("float64") == pytest.approx(5.0)


def test_attainable_is_min_of_slope_and_roof():
    assert ROOF.attainable(1.0, "float32") == pytest.approx(100e9)
    assert ROOF.attainable(10.0, "float32") == pytest.approx(1e12)
    assert ROOF.attainable(1000.0, "float32") == pytest.approx(1e12)


def test_predicted_time_is_the_larger_of_compute_and_traffic_time():
    assert ROOF.predicted_time(1e12, 1e9, "float32") == pytest.approx(1.0)  # compute-bound
    assert ROOF.predicted_time(1e9, 1e10, "float32") == pytest.approx(0.1)  # memory-bound


def test_place_memory_bound_kernel():
    p = place(ROOF, flops=1e9, nbytes=1e9, time_s=0.02, unit="float32")
    assert p.intensity == 1.0 and p.bound == "memory"
    assert p.attainable_flops == pytest.approx(100e9)
    assert p.efficiency == pytest.approx(0.5)
    assert p.predicted_time_s == pytest.approx(0.01)
    assert p.measured_over_predicted == pytest.approx(2.0)
    assert not p.above_roof and p.notes == []


def test_place_flags_a_point_above_the_dram_roof_as_cache_reuse():
    p = place(ROOF, flops=1e9, nbytes=1e9, time_s=0.005, unit="float32")
    assert p.above_roof and "cache" in p.notes[0]


def test_place_flags_a_point_above_the_compute_roof_as_counting_error():
    p = place(ROOF, flops=1e12, nbytes=1e6, time_s=0.5, unit="float32")
    assert p.above_roof and "count" in p.notes[0]


def test_place_within_noise_is_not_flagged():
    p = place(ROOF, flops=1e9, nbytes=1e9, time_s=0.0099, unit="float32")
    assert not p.above_roof


def test_missing_ceiling_names_what_exists():
    with pytest.raises(KeyError, match="float32"):
        ROOF.attainable(1.0, "bfloat16")


def _points(rows):
    df = pd.DataFrame(rows, columns=["dtype", "variant", "fmas_per_element", "working_set_bytes",
                                     "flops", "bytes", "time_s", "valid"])
    df["intensity_flop_per_byte"] = df["flops"] / df["bytes"]
    df["flops_per_s"] = df["flops"] / df["time_s"]
    df["bandwidth_Bps"] = df["bytes"] / df["time_s"]
    return df


def test_ceilings_come_from_valid_dram_sized_plateaus():
    big, small = 1 << 30, 1 << 20
    pts = _points([
        ("float32", "rw", 0, big, 0, 1e9, 0.010, True),          # 100 GB/s
        ("float32", "rw", 1, big, 0.25e9, 1e9, 0.0101, True),    # 99 GB/s: plateau
        ("float32", "rw", 64, small, 8e10, 1e6, 0.08, True),     # 1 TFLOP/s, cache-sized: no BW vote
        ("float32", "ro", 2048, small, 1e11, 1e6, 0.1, True),    # 1 TFLOP/s
        ("float32", "rw", 8, small, 0, 1e9, 0.001, True),        # 1 TB/s from cache: excluded
        ("float64", "rw", 0, big, 0, 1e9, 0.005, False),         # invalid 200 GB/s: excluded
        ("float64", "ro", 2048, small, 5e10, 1e6, 0.1, True),    # 0.5 TFLOP/s
    ])
    c = extract_ceilings(pts, dram_min_working_set=big)
    assert c.roofline.bandwidth["dram"] == pytest.approx(100e9)
    assert c.roofline.compute["float32"] == pytest.approx(1e12)
    assert c.roofline.compute["float64"] == pytest.approx(0.5e12)
    assert {p["fmas_per_element"] for p in c.plateaus["dram"]} == {0, 1}


def test_no_dram_sized_point_is_an_error():
    pts = _points([("float32", "rw", 0, 1 << 10, 0, 1e9, 0.01, True)])
    with pytest.raises(ValueError, match="DRAM"):
        extract_ceilings(pts, dram_min_working_set=1 << 30)


def test_fit_leaves_out_cache_resident_points_near_the_ridge():
    pts = _points([("float32", "rw", 0, 1 << 30, 0, 1e9, 0.01, True),        # DRAM-sized: kept
                   ("float32", "rw", 8, 1 << 20, 1e10, 1e9, 0.001, True),    # I=10 in cache: left out
                   ("float32", "ro", 2048, 1 << 20, 1e12, 1e7, 1.0, True)])  # I=1e5: kept
    fit = fit_quality(pts, ROOF, dram_min_working_set=1 << 30)
    assert fit["points"] == 2 and fit["excluded_cache_resident"] == 1
    assert fit["max_abs_deviation"] == pytest.approx(0.0)


def test_fit_reports_the_worst_point():
    pts = _points([("float32", "rw", 0, 1, 0, 1e9, 0.01, True),       # on the roof
                   ("float32", "rw", 4, 1, 1e11, 1e9, 0.22, True)])  # I=100: 0.1 s of FMAs + 0.01 s of loads at most
    fit = fit_quality(pts, ROOF)
    assert fit["max_abs_deviation"] == pytest.approx(0.5)
    assert fit["worst_point"]["fmas_per_element"] == 4
    assert not math.isnan(fit["median_abs_deviation"])


def test_fit_holds_each_point_to_its_own_streaming_loop():
    """The roof is a non-temporal copy's 100 GB/s; a read-only stream reaches 70 GB/s on its own.
    Its FMA points at 70 GB/s follow their loop (deviation 0) although they are 30% under the
    single roof (kept beside), and one at 35 GB/s strays by half whichever B is used."""
    big = 1 << 30
    pts = _points([("float32", "rw", 0, big, 0, 1e9, 0.010, True),        # 100 GB/s: the roof
                   ("float32", "ro", 0, big, 0, 0.7e9, 0.010, True),      # 70 GB/s: the ro loop
                   ("float32", "ro", 1, big, 0.35e9, 0.7e9, 0.010, True),  # 70 GB/s with FMAs
                   ("float32", "ro", 2, big, 0.7e9, 0.7e9, 0.020, True)])  # 35 GB/s
    fit = fit_quality(pts, ROOF, dram_min_working_set=big)
    assert fit["streaming_bandwidth_Bps"] == {"float32 rw": pytest.approx(100e9), "float32 ro": pytest.approx(70e9)}
    assert fit["max_abs_deviation"] == pytest.approx(1 - (0.0007 + 0.01) / 0.02)  # past loads + FMAs in turn
    assert fit["worst_point"]["fmas_per_element"] == 2
    assert fit["max_abs_deviation_single_roof"] == pytest.approx(1 - 35 / 100)


@pytest.mark.parametrize("time_s, deviation", [(0.01, 0.0), (0.015, 0.0), (0.02, 0.0), (0.04, -0.5), (0.005, 1.0)])
def test_fit_at_the_ridge_allows_any_overlap_of_loads_and_fmas(time_s, deviation):
    """At the ridge (I = 10 on ROOF) the FMAs and the loads take 0.01 s each: fully overlapped 0.01 s
    (the roofline), not at all 0.02 s; inside that band a point follows its ceilings, outside it
    deviates from the nearer edge (twice the sum: -0.5; twice the roof: +1, above the roof)."""
    pts = _points([("float32", "rw", 0, 1, 0, 1e9, 0.01, True),
                   ("float32", "rw", 5, 1, 1e10, 1e9, time_s, True)])
    fit = fit_quality(pts, ROOF)
    assert fit["max_abs_deviation"] == pytest.approx(abs(deviation))


def test_a_point_slowed_for_its_whole_window_is_timed_again_and_the_faster_window_kept():
    """A sweep point whose every repetition was slowed (as by another guest on the host, which no
    counter of this machine shows) is timed again; the second, real window replaces it, and the
    record names both medians. A point that was not slowed keeps its first window."""
    from gpuroof.backends.cpu import CpuBackend
    from gpuroof.sweep import SweepSettings, retime_strays, run_sweep
    from gpuroof.telemetry import Sampler

    backend = CpuBackend()
    settings = SweepSettings(dtypes=("float32",), fmas=(0, 4), variants=("rw",),
                             buffer_bytes=64 * backend.granule("float32") * 4, budget_s=0.02,
                             min_reps=3, max_reps=5, busy_retries=0)
    with Sampler(backend.telemetry_source(), 0.1) as sampler:
        samples = run_sweep(backend, settings, sampler).samples
        slowed = samples.copy()
        on = slowed["fmas_per_element"] == 4
        slowed.loc[on, "time_s"] *= 1000  # the recorded window, a thousand times too slow
        out, record = retime_strays(backend, settings, sampler, slowed, [("float32", "rw", 4), ("float32", "rw", 0)])
    got = {(r["fmas_per_element"], r["kept"]) for r in record}
    assert (4, "second") in got
    again = out[out["fmas_per_element"] == 4]
    assert again["valid"].all() and again["time_s"].median() < slowed.loc[on, "time_s"].median() / 10
    assert len(out[out["fmas_per_element"] == 0]) >= 3


def test_ridges_are_taken_against_dram_or_else_the_slowest_level():
    from gpuroof.roofline import Roofline
    r = Roofline(bandwidth={"l1": 400e9, "dram": 40e9}, compute={"float32": 200e9, "float64": 100e9})
    assert r.reference_level() == "dram" and r.ridges() == {"float32": 5.0, "float64": 2.5}
    assert r.ridges("l1") == {"float32": 0.5, "float64": 0.25} and r.ridges("l3") == {}
    caches = Roofline(bandwidth={"l1": 400e9, "l2": 100e9}, compute={"float32": 200e9})
    assert caches.reference_level() == "l2" and caches.ridges() == {"float32": 2.0}
    assert Roofline(bandwidth={}, compute={"float32": 1.0}).reference_level() is None


def test_known_keeps_the_finite_positive_entries_of_a_ceilings_map():
    from gpuroof.roofline import known
    r = known({"bandwidth": {"dram": 40e9, "l1": None, "l2": float("nan"), "l3": 0.0},
               "compute": {"float32": 2e11, "float16": True, "float64": -1.0}})
    assert r.bandwidth == {"dram": 40e9} and r.compute == {"float32": 2e11}
    assert known(None).bandwidth == {} and known({}).compute == {}
