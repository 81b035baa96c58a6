"""On a CUDA device: the new im2col kernel, stream bracketing, the host-bound flag, CUDA-graph replay,
cuBLAS refusing capture and a matrix unit the library refuses. Skips cleanly without a device.

These are the claims docs/cuda_unproven_on_gpu.md lists as unproven until they have run on one.
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

cupy = pytest.importorskip("cupy", reason="cupy is not installed (pip install gpuroof[cuda13])")

from gpuroof.backends import cuda  # noqa: E402  (after the skip)

if not cuda.CudaBackend.available():
    pytest.skip("cupy sees no CUDA device (no GPU or no driver)", allow_module_level=True)

from gpuroof.backends.base import Blocking  # noqa: E402
from gpuroof.backends.cuda.timing import GraphUnsupported  # noqa: E402
from gpuroof.bench import BenchSettings, run_case  # noqa: E402
from gpuroof.hostbound import window_figures  # noqa: E402
from gpuroof.roofline import Roofline  # noqa: E402
from gpuroof.workloads import Case  # noqa: E402
from gpuroof.workloads import _cuda  # noqa: E402
from gpuroof.workloads.base import to_float64  # noqa: E402
from gpuroof.workloads.conv2d import CONV2D, Conv2dParams, im2col_grid, im2col_name, unfold  # noqa: E402

#: Spins for a given number of SM clock cycles: device work of a known length, no memory traffic.
SPIN = r"""
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
extern "C" __global__ void empty() { }
"""


@pytest.fixture(scope="module")
def kernels(cuda_backend):
    """(spin, empty, kHz): cycles counted at the maximum SM clock, so a spin lasts at least as long as
    asked whatever clock the card runs at."""
    mod = cupy.RawModule(code=SPIN)
    sm_mhz, _ = cuda_backend.max_clocks()
    return mod.get_function("spin"), mod.get_function("empty"), (sm_mhz or 2000.0) * 1e3


def _blocking(launch):
    return Blocking(launch, lambda: cupy.cuda.get_current_stream().synchronize())


@pytest.mark.parametrize("p", [
    Conv2dParams(3, 5, 4, 9, 13, 3, 2, 1, "float32", "im2col-cublas"),
    Conv2dParams(2, 4, 4, 17, 15, 5, 1, 2, "float16", "im2col-cublas"),
    Conv2dParams(70_000, 1, 1, 4, 4, 3, 1, 1, "bfloat16", "im2col-cublas"),  # images past gridDim.y
])
def test_im2col_kernel_writes_every_column_of_every_image(cuda_backend, p):
    x = CONV2D.inputs(p, np.random.default_rng(3))["x"]
    xd = _cuda.device_array(x, p.dtype)
    ckk = p.c_in * p.ksize ** 2
    cols = _cuda.empty((p.n, ckk, p.oh * p.ow), p.dtype)
    grid, block = im2col_grid(p)
    i = np.int32
    _cuda.function("conv2d.cu", im2col_name(p.dtype))(
        grid, block, (xd, cols, i(p.n), i(p.c_in), i(p.h), i(p.w), i(p.ksize), i(p.oh), i(p.ow), i(p.stride),
                      i(p.pad)))
    got = to_float64(_cuda.host(cols), p.dtype)
    for img in sorted({0, p.n // 2, p.n - 1}):
        want = unfold(x[img], p.ksize, p.stride, p.pad, p.oh, p.ow)
        assert np.array_equal(got[img], want), f"image {img}"


def test_work_on_a_non_blocking_stream_is_inside_the_window(cuda_backend, kernels):
    spin, _, clock_khz = kernels
    cycles = int(2e-3 * clock_khz * 1e3)  # 2 ms at the maximum clock (longer at a lower one)
    side = cupy.cuda.Stream(non_blocking=True)
    with side:
        timing = cuda_backend.timed(lambda: spin((1,), (1,), (np.int64(cycles),)), warmup=1, min_reps=3,
                                    max_reps=3, budget_s=0.0)
    # On the legacy null stream the events would not wait for the side stream's spin (~0 ms).
    assert float(np.median(timing.times_s)) >= 1e-3, timing.times_s


def test_empty_launches_from_python_are_host_bound_and_a_long_kernel_is_not(cuda_backend, kernels):
    spin, empty, clock_khz = kernels
    tiny = cuda_backend.timed(_blocking(lambda: empty((1,), (32,), ())), warmup=2, min_reps=5, max_reps=5,
                              budget_s=0.0)
    cycles = np.int64(int(1e-3 * clock_khz * 1e3))
    long = cuda_backend.timed(_blocking(lambda: spin((1,), (1,), (cycles,))), warmup=1, min_reps=3, max_reps=3,
                              budget_s=0.0)
    print(f"\nempty: {window_figures(tiny)}; spin 1 ms: {window_figures(long)}")
    assert window_figures(tiny)["host_bound"] is True
    assert window_figures(long)["host_bound"] is False


def test_graph_replay_of_empty_launches_takes_less_device_time_than_launching_them(cuda_backend, kernels):
    _, empty, _ = kernels
    fn = _blocking(lambda: empty((1,), (32,), ()))
    stream = cuda_backend.timed(fn, warmup=2, min_reps=5, max_reps=5, budget_s=0.0)
    graph = cuda_backend.timed_graph(fn, launches=stream.launches_per_window, warmup=1, min_reps=5,
                                     max_reps=5, budget_s=0.0)
    print(f"\nempty kernel per launch: stream {np.median(stream.times_s) * 1e6:.2f} us, "
          f"graph {np.median(graph.times_s) * 1e6:.2f} us")
    assert graph.replay == "graph" and np.median(graph.times_s) < np.median(stream.times_s)


def test_cupy_refuses_a_cublas_call_during_capture(cuda_backend):
    a = cupy.ones((64, 64), cupy.float32)
    c = cupy.empty((64, 64), cupy.float32)
    fn = _cuda.blocking(_cuda.gemm(a, a, c, "float32"), _cuda.cublas_modes())
    with pytest.raises(GraphUnsupported, match="NotImplementedError"):
        cuda_backend.timed_graph(fn, launches=4, warmup=0, min_reps=1, max_reps=1, budget_s=0.0)
    fn()  # the handle and the stream still work after the failed capture
    assert float(c[0, 0]) == 64.0


def test_default_single_channel_im2col_case_is_no_longer_host_bound(cuda_backend):
    """c = 1 of the default CUDA cases: 10,700 images were 10,700 cublasGemmEx calls from Python."""
    roof = Roofline(bandwidth={"dram": 1e12}, compute={"float32": 1e13})
    p = Conv2dParams(10_700, 1, 1, 56, 56, 3, 1, 1, "float32", "im2col-cublas")
    row, _ = run_case(cuda_backend, roof, Case(CONV2D, p), BenchSettings(2, 5, 20, 0.2))
    print(f"\n{p.label}: {row['time_s'] * 1e3:.3f} ms, enqueue {row['enqueue_s'] * 1e6:.1f} us, "
          f"host_bound {row['host_bound']}")
    assert row["valid"], row["notes"]
    assert row["replay"] == "stream" and row["host_bound"] is False


def test_a_short_direct_conv_is_replayed_through_a_graph_and_still_validates(cuda_backend):
    roof = Roofline(bandwidth={"dram": 1e12}, compute={"float32": 1e13})
    p = Conv2dParams(1, 8, 8, 16, 16, 3, 1, 1, "float32", "direct")
    row, _ = run_case(cuda_backend, roof, Case(CONV2D, p), BenchSettings(2, 5, 20, 0.1))
    assert row["valid"], row["notes"]
    assert row["replay"] == "graph" and "CUDA graph replay" in row["notes"]


def test_every_matrix_unit_is_timed_or_recorded_with_a_reason(cuda_backend):
    from gpuroof.matrix import failed_units, matrix_sweep

    units = cuda_backend.matrix_units()
    samples = matrix_sweep(cuda_backend, units, (256,), budget_s=0.0, min_reps=2, max_reps=2)
    failed = failed_units(samples)
    print(f"\nmatrix units at n=256: failed {failed or 'none'}")
    assert set(samples["dtype"]) == set(units)
    assert all(reason for reason in failed.values())
