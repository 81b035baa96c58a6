"""Every workload's CPU runners against the float64 references (and the references against independent math)."""
from __future__ import annotations

import dataclasses
import platform

import numpy as np
import pytest
from scipy import signal

from gpuroof.backends import get_backend
from gpuroof.bench import BenchSettings, run_case
from gpuroof.roofline import Roofline
from gpuroof.workloads import Case
from gpuroof.workloads.base import UNIT_ROUNDOFF, Prepared, quantize, rel_error, to_float64, to_storage
from gpuroof.workloads.conv2d import CONV2D, Conv2dParams
from gpuroof.workloads.gemm import GEMM, GemmParams
from gpuroof.workloads.lstm import LSTM, LstmParams
from gpuroof.workloads.mlp import MLP, MlpParams
from gpuroof.workloads.stream import STREAM, StreamParams


@pytest.fixture(scope="module")
def cpu():
    b = get_backend("cpu")
    yield b
    b.close()


def _run_and_check(backend, workload, p) -> float:
    x = workload.inputs(p, np.random.default_rng(1))
    sel, ref = workload.reference(p, x)
    prep = workload.runners["cpu"][p.impl](backend, p, x)
    prep.run()
    prep.run()  # a second launch must give the same answer (no state carried over)
    return rel_error(to_float64(np.asarray(prep.output())[sel], p.dtype), ref)


CONV_CASES = [
    Conv2dParams(1, 1, 1, 64, 64, 3, 1, 1),  # a single-channel 64x64 image, 3x3
    Conv2dParams(1, 1, 1, 64, 64, 1, 1, 0),  # ... and 1x1
    Conv2dParams(2, 3, 11, 9, 13, 3, 2, 1),  # strided, c_out not a multiple of the channel block
    Conv2dParams(1, 4, 5, 8, 6, 5, 1, 2),  # 5x5, pad 2, non-square
    Conv2dParams(2, 6, 3, 7, 7, 1, 2, 0),  # 1x1 stride 2: im2col is not the identity
    Conv2dParams(1, 2, 2, 5, 5, 3, 3, 4),  # padding larger than the kernel
]


@pytest.mark.parametrize("impl", ["direct", "im2col"])
@pytest.mark.parametrize("p", CONV_CASES, ids=lambda p: p.label.split(" ", 1)[1].replace(" ", "_"))
def test_cpu_conv2d_matches_float64_reference(cpu, p, impl):
    p = dataclasses.replace(p, impl=impl)
    assert _run_and_check(cpu, CONV2D, p) <= CONV2D.tolerance(p)


def test_conv_reference_agrees_with_scipy_correlate():
    p = Conv2dParams(2, 3, 4, 9, 11, 3, 1, 1, "float64")
    x = CONV2D.inputs(p, np.random.default_rng(0))
    _, ref = CONV2D.reference(p, x)
    for n in range(p.n):
        for k in range(p.c_out):
            want = sum(signal.correlate2d(x["x"][n, c], x["w"][k, c], mode="same")
                       for c in range(p.c_in))
            np.testing.assert_allclose(ref[n, k], want, rtol=1e-12, atol=1e-12)
    # stride 2 keeps every second output of the stride-1 result
    p2 = dataclasses.replace(p, stride=2)
    _, ref2 = CONV2D.reference(p2, x)
    np.testing.assert_allclose(ref2, ref[:, :, ::2, ::2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 64, 48), (7, 33, 65), (64, 64, 64)])
def test_cpu_gemm_matches_float64_reference(cpu, shape):
    p = GemmParams(*shape)
    assert _run_and_check(cpu, GEMM, p) <= GEMM.tolerance(p)


@pytest.mark.parametrize("batch", [1, 3, 20])
def test_cpu_lstm_matches_float64_reference(cpu, batch):
    p = LstmParams(batch, 24, 16, 6)
    assert _run_and_check(cpu, LSTM, p) <= LSTM.tolerance(p)


def test_lstm_reference_follows_the_equations_by_hand():
    p = LstmParams(1, 1, 1, 1, "float64")
    x = {"x": np.array([[[0.5]]]), "h0": np.array([[0.25]]), "c0": np.array([[-0.5]]),
         "w": np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]]), "bias": np.array([0.1, 0.2, 0.3, 0.4])}
    _, out = LSTM.reference(p, x)
    z = 0.5 * np.array([1.0, 2.0, 3.0, 4.0]) + 0.25 * 0.5 + np.array([0.1, 0.2, 0.3, 0.4])
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = sig(z[1]) * -0.5 + sig(z[0]) * np.tanh(z[2])
    assert out[0, 0, 0] == pytest.approx(sig(z[3]) * np.tanh(c))
    assert out[1, 0, 0] == pytest.approx(c)


@pytest.mark.parametrize("batch", [1, 5, 33])
def test_cpu_mlp_matches_float64_reference(cpu, batch):
    p = MlpParams(batch, 40, 3)
    assert _run_and_check(cpu, MLP, p) <= MLP.tolerance(p)


@pytest.mark.parametrize("impl", ["numba-nt", "numba"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_stream_matches_float64_reference(cpu, impl, dtype):
    p = StreamParams(100_003, dtype, impl)  # not a whole number of 64-byte lines: the tail counts
    assert _run_and_check(cpu, STREAM, p) <= 2 * UNIT_ROUNDOFF[dtype]  # one rounding of b + 0.5 c


def test_streaming_store_triad_uses_non_temporal_stores():
    from numba import njit

    from gpuroof.workloads import _cpu_kernels as k

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the instruction check is for x86 (movnt*)")
    fresh = njit(parallel=True, fastmath=True, boundscheck=False)(k.triad_nt.py_func)  # no disk cache
    from gpuroof.backends.cpu.device import aligned_empty

    a, b, c = aligned_empty(64, np.float32, k.NT_BYTES), np.ones(64, np.float32), np.ones(64, np.float32)
    fresh(a, b, c, np.float32(0.5), 1)
    assert a.ctypes.data % 64 == 0 and (a == 1.5).all()
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert "vmovnt" in asm or "movnt" in asm  # x86: a streaming store (AVX-512: vmovntps zmm)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_tolerance_covers_16bit_storage_rounding(dtype):
    """What a correct 16-bit kernel differs by (rounded state, rounded output) stays under tolerance."""
    rng = np.random.default_rng(3)
    g = GemmParams(64, 256, 4096, dtype, "cublas")
    x = GEMM.inputs(g, rng)
    sel, ref = GEMM.reference(g, x)
    assert rel_error(quantize(ref, dtype), ref) <= GEMM.tolerance(g)
    lp = LstmParams(8, 512, 512, 32, dtype, "cublas")
    x = LSTM.inputs(lp, rng)
    _, exact = LSTM.reference(lp, x)
    _, rounded = LSTM.reference(lp, x, round_to=dtype)
    assert rel_error(rounded, exact) <= LSTM.tolerance(lp)


def test_a_wrong_kernel_is_reported_and_excluded(cpu):
    def transposed_b(backend, p, x):  # a classic bug: B read transposed
        a, b = to_storage(x["a"], p.dtype), to_storage(x["b"], p.dtype)
        c = np.empty((p.m, p.n), a.dtype)
        return Prepared(run=lambda: np.matmul(a, b.T, out=c), output=lambda: c)

    broken = dataclasses.replace(GEMM, runners={"cpu": {"blas": transposed_b}})
    roof = Roofline(bandwidth={"dram": 10e9}, compute={"float32": 100e9})
    row, samples = run_case(cpu, roof, Case(broken, GemmParams(32, 32, 32)), BenchSettings(0, 1, 2, 0.0))
    assert not row["valid"] and "excluded" in row["notes"] and row["rel_error"] > 1e-2
    assert samples == [] and np.isnan(row["time_s"])


def test_a_crashing_kernel_is_reported_and_excluded(cpu):
    def crashes(backend, p, x):
        return Prepared(run=lambda: 1 / 0, output=lambda: None)

    broken = dataclasses.replace(GEMM, runners={"cpu": {"blas": crashes}})
    roof = Roofline(bandwidth={"dram": 10e9}, compute={"float32": 100e9})
    row, _ = run_case(cpu, roof, Case(broken, GemmParams(4, 4, 4)), BenchSettings(0, 1, 2, 0.0))
    assert not row["valid"] and row["notes"].startswith("failed: ZeroDivisionError")


def test_memory_bound_case_rotates_input_copies_and_records_samples(cpu):
    roof = Roofline(bandwidth={"dram": 10e9}, compute={"float32": 100e9})
    p = GemmParams(1, 256, 256)  # 256 KiB of weights, far below 3x the last-level cache
    row, samples = run_case(cpu, roof, Case(GEMM, p), BenchSettings(1, 4, 4, 0.0, max_copies=3))
    assert row["valid"] and row["copies"] == 3 and row["reps"] == 4
    assert [s["copy"] for s in samples] == [1, 2, 0, 1]
    assert row["time_q1_s"] <= row["time_s"] <= row["time_q3_s"]
