"""Workload declarations: FLOP and byte formulas against hand counts, parameters, placement rules."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest

import gpuroof
from gpuroof.bench import place_case
from gpuroof.errors import UsageError
from gpuroof.roofline import Roofline
from gpuroof.workloads import WORKLOADS, Case, get, parse_shape, plan
from gpuroof.workloads.base import tolerance
from gpuroof.workloads.conv2d import CONV2D, Conv2dParams
from gpuroof.workloads.gemm import GEMM, GemmParams
from gpuroof.workloads.lstm import LSTM, LstmParams
from gpuroof.workloads.mlp import MLP, MlpParams
from gpuroof.workloads.stream import STREAM, StreamParams


# --- conv2d ---------------------------------------------------------------------------------

def test_single_channel_64x64_image_3x3_and_1x1_by_hand():
    c3 = Conv2dParams(n=1, c_in=1, c_out=1, h=64, w=64, ksize=3, stride=1, pad=1)
    c1 = Conv2dParams(n=1, c_in=1, c_out=1, h=64, w=64, ksize=1, stride=1, pad=0)
    assert (c3.oh, c3.ow) == (c1.oh, c1.ow) == (64, 64)
    # 4096 outputs x 9 taps x 1 FMA (2 FLOPs); 4096 outputs x 1 tap x 2.
    assert CONV2D.flops(c3) == 4096 * 9 * 2 == 73728
    assert CONV2D.flops(c1) == 4096 * 1 * 2 == 8192
    t3, t1 = CONV2D.traffic(c3), CONV2D.traffic(c1)
    assert (t3.input_bytes, t3.weight_bytes, t3.output_bytes) == (16384, 36, 16384)
    assert (t1.input_bytes, t1.weight_bytes, t1.output_bytes) == (16384, 4, 16384)
    assert CONV2D.intensity(c3) == pytest.approx(73728 / 32804)
    assert CONV2D.intensity(c1) == pytest.approx(8192 / 32772)
    # The classic argument: 9x fewer FLOPs and (almost exactly) 9x lower intensity.
    assert CONV2D.flops(c3) / CONV2D.flops(c1) == 9
    assert CONV2D.intensity(c3) / CONV2D.intensity(c1) == pytest.approx(9 * 32772 / 32804)


def _brute_force_conv_counts(p: Conv2dParams) -> int:
    """FMAs of the textbook loop nest, every tap counted (zero padding included)."""
    fmas = 0
    for _n, _k, oh, ow, _c, r, s in itertools.product(range(p.n), range(p.c_out), range(p.oh),
                                                      range(p.ow), range(p.c_in), range(p.ksize),
                                                      range(p.ksize)):
        fmas += 1
    return fmas


@pytest.mark.parametrize("p", [
    Conv2dParams(n=2, c_in=3, c_out=4, h=5, w=7, ksize=3, stride=2, pad=1),
    Conv2dParams(n=1, c_in=2, c_out=5, h=9, w=6, ksize=5, stride=1, pad=2),
    Conv2dParams(n=3, c_in=4, c_out=2, h=8, w=8, ksize=1, stride=2, pad=0),
], ids=["3x3-s2-p1", "5x5-s1-p2", "1x1-s2"])
def test_conv_counts_match_the_loop_nest_and_output_size(p):
    assert CONV2D.flops(p) == 2 * _brute_force_conv_counts(p)
    assert p.oh == len(range(-p.pad, p.h + p.pad - p.ksize + 1, p.stride))
    t = CONV2D.traffic(p)
    assert t.input_bytes == 4 * p.n * p.c_in * p.h * p.w
    assert t.weight_bytes == 4 * p.c_out * p.c_in * p.ksize ** 2
    assert t.output_bytes == 4 * p.n * p.c_out * p.oh * p.ow


def test_conv_hand_count_strided():
    p = Conv2dParams(n=2, c_in=3, c_out=4, h=5, w=7, ksize=3, stride=2, pad=1)
    assert (p.oh, p.ow) == (3, 4)  # (5 + 2 - 3) // 2 + 1, (7 + 2 - 3) // 2 + 1
    assert CONV2D.flops(p) == 2 * 2 * 4 * 3 * 4 * 3 * 9 == 5184


def test_conv_with_empty_output_is_refused():
    with pytest.raises(UsageError, match="empty output"):
        Conv2dParams(n=1, c_in=1, c_out=1, h=2, w=2, ksize=5, stride=1, pad=0)
    with pytest.raises(UsageError, match="pad"):
        Conv2dParams(n=1, c_in=1, c_out=1, h=8, w=8, ksize=3, stride=1, pad=-1)
    with pytest.raises(UsageError, match="stride"):
        Conv2dParams(n=1, c_in=1, c_out=1, h=8, w=8, ksize=3, stride=0, pad=1)


def test_conv_units_direct_is_vector_library_is_matrix():
    base = dict(n=1, c_in=8, c_out=8, h=8, w=8, ksize=3, pad=1)
    assert CONV2D.unit(Conv2dParams(**base, impl="direct")) == "float32"
    assert CONV2D.unit(Conv2dParams(**base, impl="im2col")) == "float32-matrix"  # BLAS
    assert CONV2D.unit(Conv2dParams(**base, dtype="float16", impl="direct")) == "float32"  # fp32 FMAs
    # cuBLAS/cuDNN float32 (no TF32) is SGEMM on the FP32 pipes; 16-bit runs on tensor cores
    assert CONV2D.unit(Conv2dParams(**base, impl="im2col-cublas")) == "float32"
    assert CONV2D.unit(Conv2dParams(**base, dtype="float16", impl="cudnn")) == "float16-matrix"


# --- gemm, lstm, mlp, stream ------------------------------------------------------------------

def test_gemm_hand_count():
    p = GemmParams(m=3, n=5, k=7)
    assert GEMM.flops(p) == 2 * 3 * 5 * 7 == 210
    t = GEMM.traffic(p)
    assert (t.input_bytes, t.weight_bytes, t.output_bytes) == (4 * 21, 4 * 35, 4 * 15)
    assert GEMM.intensity(p) == pytest.approx(210 / (4 * 71))
    half = GEMM.traffic(GemmParams(m=3, n=5, k=7, dtype="bfloat16", impl="cublas"))
    assert half.total == 2 * 71
    assert GEMM.unit(GemmParams(1, 2, 3, "bfloat16", "cublas")) == "bfloat16-matrix"
    assert GEMM.unit(GemmParams(1, 2, 3, "float32", "cublas")) == "float32"
    assert GEMM.unit(GemmParams(1, 2, 3, "float32", "blas")) == "float32-matrix"
    assert GEMM.unit(GemmParams(1, 2, 3, "float16", "tiled")) == "float32"


def test_gemv_like_gemm_is_on_the_memory_slope_and_square_on_the_compute_roof():
    gemv = GemmParams(1, 4096, 4096)
    square = GemmParams(4096, 4096, 4096)
    assert GEMM.intensity(gemv) == pytest.approx(0.5, rel=1e-3)  # 2 FLOPs per 4-byte weight
    assert GEMM.intensity(square) == pytest.approx(4096 / 6)  # 2n^3 / (3 n^2 * 4)


def test_lstm_hand_count():
    p = LstmParams(batch=2, input_size=3, hidden=4, steps=5)
    per_step_flops = 2 * 2 * (3 + 4) * 16 + 13 * 2 * 4  # gates GEMM + pointwise
    assert LSTM.flops(p) == 5 * per_step_flops == 5 * 552
    t = LSTM.traffic(p)
    assert t.input_bytes == 5 * 4 * (2 * 3 + 2 * 2 * 4)  # x_t, h, c
    assert t.weight_bytes == 5 * 4 * (7 * 16 + 16)  # W and bias, every step
    assert t.output_bytes == 5 * 4 * (2 * 2 * 4)  # h, c


def test_lstm_intensity_grows_with_batch():
    intensities = [LSTM.intensity(LstmParams(b, 1024, 1024, 8)) for b in (1, 4, 16, 64, 256)]
    assert intensities == sorted(intensities)
    assert intensities[0] == pytest.approx(0.5, rel=0.01)  # batch 1: 2 FLOPs per 4-byte weight
    assert intensities[-1] > 50 * intensities[0]


def test_mlp_hand_count():
    p = MlpParams(batch=2, width=3, layers=4)
    assert MLP.flops(p) == 4 * (2 * 2 * 3 * 3 + 2 * 3) == 168
    t = MLP.traffic(p)
    assert (t.input_bytes, t.weight_bytes, t.output_bytes) == (4 * 6, 4 * 4 * 12, 4 * 6)


def test_stream_triad_hand_count():
    p = StreamParams(elements=1000)
    assert STREAM.flops(p) == 2000
    t = STREAM.traffic(p)
    assert (t.input_bytes, t.weight_bytes, t.output_bytes) == (8000, 0, 4000)
    assert STREAM.intensity(p) == pytest.approx(1 / 6)
    assert STREAM.unit(p) == "float32"


def test_intensity_is_derived_for_every_default_case():
    for backend in ("cpu", "cuda"):
        for size in ("small", "default", "large"):
            for w in WORKLOADS.values():
                for p in w.cases(size, backend, 32 << 20):
                    case = Case(w, p)
                    assert case.intensity == case.flops / case.bytes
                    assert case.flops > 0 and case.bytes == case.traffic.total > 0
                    assert not hasattr(p, "intensity")  # never declared
                    assert case.impl in w.impls(backend)


def test_default_conv_cases_pair_3x3_and_1x1_on_the_same_shapes():
    cases = CONV2D.cases("default", "cpu", 32 << 20)
    pairs = {}
    for p in cases:
        pairs.setdefault((p.impl, p.n, p.c_in, p.c_out, p.oh, p.ow, p.stride), set()).add(p.ksize)
    chans = sorted({k[2] for k, v in pairs.items() if v == {1, 3}})
    assert chans[0] == 1 and chans[-1] >= 256  # from a single channel to many


# --- tolerance, parameters, shapes ------------------------------------------------------------

def test_tolerance_scales_with_dtype_and_reduction():
    assert tolerance("float64", 1024) < tolerance("float32", 1024) < tolerance("float16", 1024) \
        < tolerance("bfloat16", 1024)
    assert tolerance("float32", 4096) > tolerance("float32", 16)
    assert tolerance("float32", 4096) < 1e-4  # still catches a wrong result
    assert tolerance("float16", 8192) < 2e-2


def test_parse_shape_and_make():
    assert parse_shape("m=1,n=4096,k=4096") == {"m": 1, "n": 4096, "k": 4096}
    assert parse_shape("dtype=float16") == {"dtype": "float16"}
    with pytest.raises(UsageError, match="key=value"):
        parse_shape("m1")
    with pytest.raises(UsageError, match="not a gemm parameter"):
        GEMM.make(m=1, n=2, k=3, q=4)
    with pytest.raises(UsageError, match="positive"):
        GEMM.make(m=0, n=2, k=3)


def test_plan_refuses_unknown_workload_size_and_shape_with_two_workloads():
    with pytest.raises(UsageError, match="unknown workload.*allowed: conv2d, gemm, lstm, mlp, stream"):
        get("fft")
    with pytest.raises(UsageError, match="--size"):
        plan(["gemm"], "huge", "cpu")
    with pytest.raises(UsageError, match="exactly one --workload"):
        plan(["gemm", "mlp"], "small", "cpu", shape={"batch": 2})
    cases = plan(["gemm"], "small", "cpu", shape={"m": 2, "n": 8, "k": 16})
    assert [(c.params.m, c.params.n, c.params.k, c.impl) for c in cases] == [(2, 8, 16, "blas")]
    with pytest.raises(UsageError, match="impl=tiled"):
        plan(["gemm"], "small", "cpu", shape={"m": 2, "impl": "tiled"})


# --- placement ----------------------------------------------------------------------------------

ROOF = Roofline(bandwidth={"dram": 100e9}, compute={"float32": 1e12, "float64": 0.5e12})


def test_matrix_unit_without_matrix_ceiling_falls_back_to_vector_with_note():
    pl = place_case(ROOF, flops=1e9, nbytes=1e6, time_s=2e-3, unit="float32-matrix")
    assert pl["roof_unit"] == "float32" and not pl["above_roof"]
    assert pl["notes"] == ["no matrix ceiling measured; placed against the vector FMA roof"]
    assert pl["efficiency"] == pytest.approx(0.5)
    roof = Roofline(bandwidth=ROOF.bandwidth, compute={**ROOF.compute, "float32-matrix": 4e12})
    pl = place_case(roof, flops=1e9, nbytes=1e6, time_s=2e-3, unit="float32-matrix")
    assert pl["roof_unit"] == "float32-matrix" and pl["notes"] == []
    assert pl["efficiency"] == pytest.approx(0.125)


def test_placement_fields_predicted_time_and_bound():
    pl = place_case(ROOF, flops=1e6, nbytes=1e8, time_s=2e-3, unit="float32")  # I = 0.01
    assert pl["bound"] == "memory"
    assert pl["predicted_time_s"] == pytest.approx(1e-3)  # bytes / bandwidth
    assert pl["measured_over_predicted"] == pytest.approx(2.0)
    assert pl["attainable_flops"] == pytest.approx(100e9 * 0.01)
    assert pl["efficiency"] == pytest.approx(0.5)


def test_point_above_dram_roof_is_flagged_as_cache_reuse_and_placed_on_l2():
    pl = place_case(ROOF, flops=1e6, nbytes=1e8, time_s=0.5e-3, unit="float32")
    assert pl["above_roof"] and "cache" in pl["notes"][0]
    assert "no cache-level bandwidth ceiling" in pl["notes"][1]
    roof = Roofline(bandwidth={"dram": 100e9, "l2": 400e9, "shared": 1e13}, compute=ROOF.compute)
    pl = place_case(roof, flops=1e6, nbytes=1e8, time_s=0.5e-3, unit="float32")
    assert pl["above_roof"] and pl["cache_level"] == "l2"
    assert pl["cache_efficiency"] == pytest.approx(0.5)  # 200 GB/s of a 400 GB/s roof
    assert "against the l2 roof: efficiency 0.50" in pl["notes"]


def test_above_dram_point_is_placed_on_the_nearest_cache_it_stays_under():
    roof = Roofline(bandwidth={"dram": 100e9, "l3": 300e9, "l2": 600e9, "l1": 2e12},
                    compute={"float32": 1e13})
    pl = place_case(roof, flops=1e6, nbytes=1e8, time_s=0.25e-3, unit="float32")  # 400 GB/s
    assert pl["cache_level"] == "l2" and pl["cache_efficiency"] == pytest.approx(400 / 600)
    pl = place_case(roof, flops=1e6, nbytes=1e8, time_s=0.02e-3, unit="float32")  # 5 TB/s
    assert pl["cache_level"] == "l1" and "above every cache roof too" in pl["notes"][-1]


def test_point_above_dram_roof_with_a_streaming_working_set_is_not_called_cache_reuse():
    pl = place_case(ROOF, flops=1e6, nbytes=1e8, time_s=0.5e-3, unit="float32",
                    working_set_bytes=256 << 20, cache_bytes=32 << 20)
    assert pl["above_roof"] and "not cache reuse" in pl["notes"][0] and pl["cache_level"] is None
    pl = place_case(ROOF, flops=1e6, nbytes=1e8, time_s=0.5e-3, unit="float32",
                    working_set_bytes=16 << 20, cache_bytes=32 << 20)
    assert "data reused from a cache" in pl["notes"][0]


def test_point_above_compute_roof_is_flagged_as_counting_error():
    pl = place_case(ROOF, flops=1e10, nbytes=1e6, time_s=5e-3, unit="float32")  # 2 TFLOP/s > 1
    assert pl["above_roof"] and "counting error" in pl["notes"][0]
    pl = place_case(ROOF, flops=1e10, nbytes=1e6, time_s=5e-3, unit="float32-matrix")
    assert pl["above_roof"] and "matrix unit" in pl["notes"][1]


def test_a_closed_form_workload_above_its_compute_roof_names_the_roof_not_the_count():
    pl = place_case(ROOF, flops=1e10, nbytes=1e6, time_s=5e-3, unit="float32", closed_form="gemm blas m=2048")
    assert pl["above_roof"] and "counting error" not in pl["notes"][0]
    assert "under-measured: gemm blas m=2048 reached 2000 GFLOP/s" in pl["notes"][0]


def test_a_closed_form_workload_above_a_bandwidth_roof_names_the_roof_not_the_count():
    """Past the caches (a streaming working set) and above every cache roof, a built-in workload's
    count is the closed form: the note names the roof that fell short and what the kernel reached;
    the user's count (no closed_form) still reads as a counting error."""
    pl = place_case(ROOF, flops=1e6, nbytes=1e8, time_s=0.5e-3, unit="float32", working_set_bytes=256 << 20,
                    cache_bytes=32 << 20, closed_form="stream triad numba-nt")
    assert pl["above_roof"] and "the roof was under-measured: stream triad numba-nt reached 200 GB/s" in pl["notes"][0]
    roof = Roofline(bandwidth={"dram": 100e9, "l3": 300e9, "l2": 600e9, "l1": 2e12}, compute={"float32": 1e13})
    pl = place_case(roof, flops=1e6, nbytes=1e8, time_s=0.02e-3, unit="float32", closed_form="gemm blas m=1")
    assert "the l1 roof was under-measured: gemm blas m=1 reached 5000 GB/s" in pl["notes"][-1]
    pl = place_case(roof, flops=1e6, nbytes=1e8, time_s=0.02e-3, unit="float32")
    assert pl["notes"][-1].endswith("a counting error")


def test_point_within_noise_is_not_flagged():
    pl = place_case(ROOF, flops=1e6, nbytes=1e8, time_s=0.97e-3, unit="float32")
    assert not pl["above_roof"]
    pl = place_case(ROOF, flops=1e6, nbytes=1e8, time_s=0.9e-3, unit="float32", spread=0.2)
    assert not pl["above_roof"]  # 11% above, but the repetitions spread by 20%...
    assert pl["notes"] == ["11% above its roof but within its timing spread (IQR/median 20%); not flagged"]


def test_unit_without_any_ceiling_is_not_placed():
    pl = place_case(ROOF, flops=1e6, nbytes=1e6, time_s=1e-3, unit="bfloat16-matrix")
    assert pl["roof_unit"] is None and math.isnan(pl["efficiency"])
    assert "no bfloat16-matrix compute ceiling" in pl["notes"][0]


def test_workloads_bench_and_api_import_without_cupy():
    root = str(Path(gpuroof.__file__).resolve().parent.parent)
    code = ("import sys; sys.path.insert(0, %r); import gpuroof.workloads, gpuroof.bench, gpuroof.api; "
            "from gpuroof.workloads import gemm, conv2d, lstm, mlp; "
            "gemm.tiled_name('float16'); conv2d.direct_name('float32', 3); lstm.pointwise_name('float32'); "
            "mlp.bias_act_name('float32', True); "
            "assert 'cupy' not in sys.modules, 'cupy imported'" % root)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
