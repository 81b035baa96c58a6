"""CUDA backend on a real device: exact sweep results, event timing, telemetry, DRAM bandwidth."""
from __future__ import annotations

import numpy as np
import pytest

from gpuroof.backends.base import ITEMSIZE, SWEEP_A, SWEEP_B, sweep_input
from gpuroof.errors import UsageError

pytestmark = pytest.mark.gpu

cupy = pytest.importorskip("cupy", reason="cupy is not installed (pip install gpuroof[cuda13])")

from gpuroof.backends import cuda  # noqa: E402  (after the skip: nothing below runs without cupy)

if not cuda.CudaBackend.available():
    pytest.skip("cupy sees no CUDA device (no GPU or no driver)", allow_module_level=True)

DTYPES = ("float64", "float32", "float16", "bfloat16")
#: Even, odd, and one count that runs the non-unrolled outer loop (2048 = 64 blocks of 32).
FMAS = (0, 1, 2, 2048)
#: Not a multiple of any grid-stride step, so the guarded last step runs too.
BUFFER_BYTES = 20 * (1 << 20) + 4096


@pytest.fixture(scope="module")
def backend(cuda_backend):
    return cuda_backend


@pytest.fixture(scope="module")
def buffers(backend):
    return {d: backend.alloc_sweep(d, BUFFER_BYTES) for d in DTYPES}


def closed_form(x: np.ndarray, fmas: int) -> np.ndarray:
    """After K FMAs v = v*(-1) + b: x when K is even, b - x when K is odd (exact in every dtype)."""
    assert SWEEP_A == -1.0
    return x.copy() if fmas % 2 == 0 else SWEEP_B - x


def _reset_out(buf):
    buf.out.fill(0x7FC0 if buf.dtype == "bfloat16" else np.nan)


@pytest.mark.parametrize("fmas", FMAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rw_sweep_writes_exact_closed_form_to_every_element(backend, buffers, dtype, fmas):
    buf = buffers[dtype]
    _reset_out(buf)
    n = buf.elements - 7 * buf.granule  # leave a tail the kernel must not touch
    launch = backend.sweep_launch(buf, fmas, "rw", n)
    assert launch.partial_elements == 0 and launch.elements == n
    launch.run()
    got = cupy.asnumpy(backend.as_float64(buf.out, dtype))
    want = closed_form(sweep_input(np.arange(n)), fmas)
    bad = np.flatnonzero(got[:n] != want)
    assert bad.size == 0, f"{bad.size} wrong, first at {bad[0]}: {got[bad[0]]} != {want[bad[0]]}"
    assert np.isnan(got[n:]).all(), "the kernel wrote past the elements it was given"


@pytest.mark.parametrize("fmas", FMAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ro_sweep_partial_sums_match_closed_form_sum(backend, buffers, dtype, fmas):
    buf = buffers[dtype]
    buf.partial.fill(np.nan)
    n = buf.elements
    launch = backend.sweep_launch(buf, fmas, "ro", n)
    assert 0 < launch.partial_elements <= buf.partial.size
    assert launch.partial_itemsize == (8 if dtype == "float64" else 4)
    launch.run()
    partial = cupy.asnumpy(buf.partial[:launch.partial_elements]).astype(np.float64)
    assert np.isfinite(partial).all(), "some launched thread did not write its partial sum"
    want = closed_form(sweep_input(np.arange(n)), fmas).sum()
    assert partial.sum() == pytest.approx(want, rel=1e-6)


def test_sweep_rejects_uncompiled_fmas_and_unaligned_lengths(backend, buffers):
    buf = buffers["float32"]
    with pytest.raises(UsageError, match="fmas 7"):
        backend.sweep_launch(buf, 7, "rw", buf.elements)
    with pytest.raises(UsageError, match="multiple of"):
        backend.sweep_launch(buf, 0, "rw", buf.granule + 1)
    with pytest.raises(UsageError, match="variant"):
        backend.sweep_launch(buf, 0, "wo", buf.elements)


def test_device_index_out_of_range_names_the_allowed_range():
    count = cupy.cuda.runtime.getDeviceCount()
    with pytest.raises(UsageError, match=rf"--device {count}: this machine has {count} CUDA device"):
        cuda.CudaBackend(count)


def test_buffer_larger_than_free_memory_is_a_usage_error(backend):
    with pytest.raises(UsageError, match="--buffer-size .* needs .* GiB free"):
        backend.alloc_sweep("float32", 2 * backend.device_info()["memory_total_bytes"])


def test_event_timing_returns_positive_seconds_within_rep_limits(backend, buffers):
    buf = buffers["float32"]
    launch = backend.sweep_launch(buf, 64, "ro", buf.elements)
    times = backend.time(launch.run, warmup=2, min_reps=3, max_reps=20, budget_s=0.05)
    assert 3 <= times.size <= 20
    assert (times > 0).all() and (times < 1.0).all()
    # A plain blocking callable is timed too (events around the whole call).
    assert (backend.time(lambda: launch.run(), warmup=0, min_reps=2, max_reps=2, budget_s=0) > 0).all()


def test_telemetry_sample_has_every_key(backend):
    sample = backend.telemetry_source()()
    assert set(sample) == {"sm_clock_mhz", "mem_clock_mhz", "power_w", "power_source", "temperature_c",
                           "clock_event_reasons"}


def test_device_info_and_peaks_describe_the_device(backend):
    info = backend.device_info()
    for key in ("name", "index", "compute_capability", "multiprocessors", "l2_cache_bytes",
                "max_threads_per_multiprocessor", "memory_total_bytes", "memory_bus_width_bits",
                "cupy_version", "cuda_runtime_version"):
        assert info[key] is not None, key
    assert "." in info["compute_capability"]
    assert backend.cache_bytes() == info["l2_cache_bytes"] > 0
    default = backend.default_buffer_bytes()
    assert default > 0 and default % (1 << 20) == 0
    peaks = backend.theoretical(*backend.max_clocks())
    assert set(peaks["compute"]) == set(DTYPES)


def test_rw_copy_reaches_30_percent_of_theoretical_dram_bandwidth(backend):
    dram = backend.theoretical(*backend.max_clocks())["bandwidth"]["dram"]
    if dram is None:
        pytest.skip("theoretical DRAM bandwidth unknown (no memory clock or bus width)")
    nbytes = backend.default_buffer_bytes()
    if nbytes < 8 * backend.cache_bytes():
        pytest.skip("not enough free memory for a working set of 8x L2")
    buf = backend.alloc_sweep("float32", nbytes)
    try:
        launch = backend.sweep_launch(buf, 0, "rw", buf.elements)
        times = backend.time(launch.run, warmup=3, min_reps=10, max_reps=200, budget_s=0.5)
        moved = 2 * buf.elements * ITEMSIZE["float32"]  # each input read once, each output written once
        bandwidth = moved / np.median(times)
        assert bandwidth > 0.3 * dram, f"{bandwidth / 1e9:.0f} GB/s of {dram / 1e9:.0f} GB/s theoretical"
    finally:
        del buf


# ---------------------------------------------------------------------------------------------
# The review's defects, on the device
# ---------------------------------------------------------------------------------------------

def test_compute_capability_is_read_from_the_device(backend):
    major, minor = divmod(int(cupy.cuda.Device(0).compute_capability), 10)
    assert backend.device_info()["compute_capability"] == f"{major}.{minor}"
    assert backend.theoretical(*backend.max_clocks())["compute"]["float32"] is not None


def test_nvml_handle_is_matched_by_pci_bus_id(backend):
    info = backend.device_info()
    if info["nvml_error"]:
        pytest.skip(f"NVML unavailable here: {info['nvml_error']}")
    assert info["nvml_match"] == "pci_bus_id"
    assert info["pci_bus_id"].lower() == cupy.cuda.runtime.deviceGetPCIBusId(0).lower()


def test_timing_overhead_is_below_1_percent_of_a_dram_point(backend):
    """Per-launch time from backend.time against one event pair around 100 back-to-back launches."""
    buf = backend.alloc_sweep("float32", backend.default_buffer_bytes())
    try:
        launch = backend.sweep_launch(buf, 0, "rw", buf.elements)
        timed = float(np.median(backend.time(launch.run, warmup=2, min_reps=5, max_reps=20, budget_s=0.5)))
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        launch.run.enqueue()
        start.record()
        for _ in range(100):
            launch.run.enqueue()
        end.record()
        end.synchronize()
        long_window = cupy.cuda.get_elapsed_time(start, end) * 1e-3 / 100
        assert abs(timed / long_window - 1) < 0.01, (timed, long_window)
    finally:
        del buf


def test_no_sample_includes_a_synchronize(backend, buffers):
    """A one-granule launch takes a few microseconds of device time; a launch plus a host
    synchronize through Python takes several times that."""
    buf = buffers["float32"]
    launch = backend.sweep_launch(buf, 0, "ro", buf.granule)
    times = backend.time(launch.run, warmup=2, min_reps=20, max_reps=50, budget_s=0.1)
    assert np.median(times) < 10e-6, f"{np.median(times) * 1e6:.1f} us per tiny launch"
    g = backend.gemm("float16", 1024)
    gemm_times = backend.time(g.run, warmup=2, min_reps=10, max_reps=20, budget_s=0.2)
    assert hasattr(g.run, "enqueue") and g.layout == "NN"
    assert g.check() <= 5e-3 and np.median(gemm_times) < 1e-3


def test_l2_plateau_lies_between_l1_and_dram(backend):
    from gpuroof.hierarchy import hierarchy_sweep, level_ceilings, summarize_hierarchy

    levels = [lv for lv in backend.cache_levels() if lv.name != "shared"]
    samples = hierarchy_sweep(backend, levels, quick=True, budget_s=0.05, min_reps=3, max_reps=10)
    points = summarize_hierarchy(samples, levels)
    assert points["valid"].all()
    ceilings, _ = level_ceilings(points, levels)
    assert set(ceilings) == {"l1", "l2", "dram"}
    assert ceilings["l1"] > ceilings["l2"] > ceilings["dram"], ceilings


def test_fp32_compute_point_in_whole_grid_steps_reaches_85_percent_of_peak(backend, buffers):
    from gpuroof.sweep import compute_point_elements

    buf = buffers["float32"]
    step = backend.sweep_step(buf, 2048, "rw")
    trial = backend.sweep_launch(buf, 2048, "rw", buf.elements)
    trial_s = float(np.median(backend.time(trial.run, warmup=1, min_reps=1, max_reps=1, budget_s=0)))
    elements = compute_point_elements(buf.elements, trial_s, 0.05, step, buf.elements)
    assert elements % step == 0 or elements == buf.elements
    launch = backend.sweep_launch(buf, 2048, "rw", elements)
    t = float(np.median(backend.time(launch.run, warmup=1, min_reps=3, max_reps=5, budget_s=0)))
    peak = backend.theoretical(*backend.max_clocks())["compute"]["float32"]
    assert 2 * 2048 * elements / t > 0.85 * peak, f"{2 * 2048 * elements / t / peak:.0%} of the peak"
