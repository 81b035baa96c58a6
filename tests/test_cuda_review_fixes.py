"""The fourth review of the CUDA path, item by item: what the CPU can prove here, and `gpu`-marked tests
for what only a device can (they skip cleanly without cupy or a GPU).

1. a dtype's sweep buffers are let go before the next dtype's are allocated (the trial launch too);
2. one non-blocking stream per backend: kernels, cuBLAS, events and waits all on it;
3. power from NVML's instantaneous field (tests/test_nvml_degradation.py, at the NVML boundary), and
   the report saying which reading it shows;
4. blocks per SM and where the number came from, per kernel;
5. a matrix unit that fails after valid sizes: its ceiling from those, the failed size a failure;
6. a timed window caps the kernels it enqueues, not the calls;
7. V100's peaks against NVIDIA's figures.
"""
from __future__ import annotations

import re
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gpuroof
from gpuroof.backends.base import Blocking
from gpuroof.backends.cpu import CpuBackend
from gpuroof.backends.cuda import device as dev
from gpuroof.backends.cuda import timing
from gpuroof.backends.cuda.launch import FALLBACK, OCCUPANCY_API, blocks_per_sm
from gpuroof.errors import UsageError
from gpuroof.hostbound import kernels_per_call, window_figures
from gpuroof.sweep import SweepSettings, run_sweep
from gpuroof.telemetry import Sampler

ROOT = Path(gpuroof.__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# 1. the previous dtype's buffers are free when the next dtype's are allocated
# ---------------------------------------------------------------------------------------------

def _owner(a: np.ndarray) -> np.ndarray:
    """The array that owns the memory of `a` (a view's base, down to the allocation)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class WatchedBuffers(CpuBackend):
    """The CPU backend (real kernels, real timing) that notes, at every sweep allocation, whether
    the memory of the buffers allocated before is still referenced by anything."""

    def __init__(self):
        super().__init__(0)
        self.allocated: list[tuple[str, int, weakref.ref]] = []  # (dtype, bytes asked, owner)
        self.alive_at_alloc: list[tuple[str, int, list]] = []  # (dtype, bytes, what was still alive)

    def alloc_sweep(self, dtype, nbytes):
        alive = [(d, n) for d, n, r in self.allocated if r() is not None]
        self.alive_at_alloc.append((dtype, nbytes, alive))
        buf = super().alloc_sweep(dtype, nbytes)  # compile() allocates a granule of its own too
        self.allocated += [(dtype, nbytes, weakref.ref(_owner(a))) for a in (buf.x, buf.out, buf.partial)]
        return buf


def test_nothing_holds_a_dtypes_buffers_when_the_next_dtype_is_allocated():
    """A buffer above a quarter of free memory fits once, not twice: the float32 allocation of a
    CUDA run only succeeds when nothing (the trial launch of a compute point, a prepared launch)
    still refers to the float64 arrays."""
    backend = WatchedBuffers()
    settings = SweepSettings(dtypes=("float64", "float32"), fmas=(0, 1, 4), variants=("ro", "rw"),
                             buffer_bytes=1 << 20, budget_s=0.0, warmup=0, min_reps=1, max_reps=1,
                             max_launch_s=1e-4, busy_retries=0)
    try:
        with Sampler(lambda: {}, interval_s=1.0) as sampler:
            result = run_sweep(backend, settings, sampler)
    finally:
        backend.close()
    assert set(result.buffers) == {"float64", "float32"}
    assert result.samples["valid"].all()
    sweeps = [(d, alive) for d, n, alive in backend.alive_at_alloc if n == settings.buffer_bytes]
    assert [d for d, _ in sweeps] == ["float64", "float32"]
    assert sweeps[1][1] == [], f"still referenced when float32 was allocated: {sweeps[1][1]}"
    assert len(backend.allocated) >= 6  # the float64 buffers were watched


# ---------------------------------------------------------------------------------------------
# 2. one non-blocking stream per backend
# ---------------------------------------------------------------------------------------------

def test_no_cuda_module_waits_on_or_launches_to_the_legacy_null_stream():
    """The legacy null stream does not wait for a non-blocking stream: a wait there returns before
    the work is done. No module of the CUDA backend or of the CUDA workloads may name it."""
    files = list((ROOT / "backends" / "cuda").glob("*.py")) + list((ROOT / "workloads").glob("*.py"))
    named = [f.name for f in files if re.search(r"Stream\.null|Stream\(null=True", f.read_text())]
    assert files and not named, named


class _Stream:
    def __init__(self, cp, name, ptr):
        self.cp, self.name, self.ptr = cp, name, ptr

    def __enter__(self):
        self.cp.current.append(self)
        return self

    def __exit__(self, *exc):
        self.cp.current.pop()
        return False

    def wait_event(self, event):
        self.cp.log.append(("wait", self.name, event.name))

    def synchronize(self):
        self.cp.log.append(("sync", self.name))


class _Device:
    def __init__(self, cp):
        self.cp = cp

    def __enter__(self):
        self.cp.log.append(("device",))
        return self

    def __exit__(self, *exc):
        return False


class StreamCalls:
    """cupy.cuda's streams and events as far as OwnStream uses them, with every call recorded (the
    order of device-side waits is bookkeeping, not a measurement; the `gpu` tests below run it)."""

    def __init__(self):
        import types

        self.log: list = []
        self.current = [_Stream(self, "caller", 0)]
        cp = self
        names = iter(f"e{i}" for i in range(100))

        class Event:
            def __init__(self, disable_timing=False):
                self.name = next(names)

            def record(self, stream=None):
                cp.log.append(("record", self.name, stream.name))

        self.cuda = types.SimpleNamespace(Event=Event, get_current_stream=lambda: self.current[-1],
                                          Stream=lambda non_blocking=False: _Stream(self, "own", 0x3000))


def test_the_backend_stream_waits_for_the_callers_work_and_the_caller_for_the_backends():
    cp = StreamCalls()
    own = timing.OwnStream(cp, _Device(cp))
    start = len(cp.log)
    with own.active() as s:
        assert s is own.stream and cp.cuda.get_current_stream() is own.stream
        inside = list(cp.log[start:])
        with own.active():  # a launch inside a timed window: already current, nothing joined
            pass
        assert cp.log[start:] == inside + [("device",)]
    after = cp.log[start + len(inside) + 1:]
    enter, leave = inside[1][1], after[0][1]
    # entering: the backend's stream waits for what the caller enqueued before (inputs, poison) ...
    assert inside == [("device",), ("record", enter, "caller"), ("wait", "own", enter)]
    # ... leaving: the caller's stream waits for the backend's work (a check reads its outputs)
    assert after == [("record", leave, "own"), ("wait", "caller", leave)]
    assert cp.cuda.get_current_stream().name == "caller"


def test_the_caller_is_joined_back_when_the_work_raises():
    cp = StreamCalls()
    own = timing.OwnStream(cp, _Device(cp))
    with pytest.raises(RuntimeError):
        with own.active():
            raise RuntimeError("a launch failed")
    assert cp.log[-1][:2] == ("wait", "caller") and cp.cuda.get_current_stream().name == "caller"


def test_the_callers_stream_is_bracketed_beside_the_backends_unless_it_is_one_of_them():
    own, torch_s, caller = (_Stream(None, n, p) for n, p in (("own", 0x3000), ("torch", 0x5000), ("caller", 0)))
    assert [s.name for s in timing.with_caller([own, torch_s], caller)] == ["own", "caller", "torch"]
    assert [s.name for s in timing.with_caller([own], caller)] == ["own", "caller"]
    same = _Stream(None, "torch on the caller's", 0)
    assert [s.name for s in timing.with_caller([own, same], caller)] == ["own", "torch on the caller's"]
    assert timing.with_caller([own], own) == [own]


def test_a_graph_given_the_backends_stream_is_captured_replayed_and_timed_there():
    from test_cuda_timing import Clock, FakeCupy, FakeStream, blocking

    clock = Clock()
    cp = FakeCupy(clock, 1e-6)
    own = FakeStream(cp.log, "own", 0x4000)
    res = timing.time_graph(cp, blocking(cp, 5e-6, []), launches=8, warmup=1, min_reps=2, max_reps=2,
                            budget_s=0.0, clock=clock, stream=own)
    streams = {e[1] for e in cp.log if e[0] in ("begin_capture", "end_capture", "upload", "graph_launch")}
    streams |= {e[2] for e in cp.log if e[0] == "record"}
    assert streams == {"own"} and res.replay == "graph" and len(res.times_s) == 2


# ---------------------------------------------------------------------------------------------
# 3. where the power came from, shown where power is described (the NVML side:
#    tests/test_nvml_degradation.py)
# ---------------------------------------------------------------------------------------------

def test_the_report_says_where_the_median_power_came_from(tmp_path):
    import json

    from gpuroof.nvml import POWER_INSTANT, POWER_SOURCES
    from gpuroof.report import render_html
    from gpuroof.results import load_run
    from test_plots import make_synthetic_run

    run_dir = make_synthetic_run(tmp_path / "run", hierarchy=False)  # synthetic, no measurement
    meta = json.loads((run_dir / "run.json").read_text())
    assert "(power: " not in render_html(load_run(run_dir))  # a run from before: nothing claimed
    meta["device"].update(power_source=POWER_INSTANT, power_source_note=POWER_SOURCES[POWER_INSTANT])
    (run_dir / "run.json").write_text(json.dumps(meta))
    html = render_html(load_run(run_dir))
    assert f"650 W, {meta['median_clocks']['temperature_c']:g} °C (power: {POWER_SOURCES[POWER_INSTANT]})" in html


# ---------------------------------------------------------------------------------------------
# 4. blocks per SM, and where the number came from
# ---------------------------------------------------------------------------------------------

class DriverError(Exception):
    pass


def test_blocks_per_sm_come_from_the_occupancy_api_or_say_why_they_do_not():
    assert blocks_per_sm(lambda: 6, fallback=8) == {"blocks_per_sm": 6, "source": OCCUPANCY_API}

    def refuses():
        raise DriverError("CUDA_ERROR_NOT_SUPPORTED: operation not supported\nmore")
    got = blocks_per_sm(refuses, fallback=8)
    assert got == {"blocks_per_sm": 8, "source": FALLBACK,
                   "error": "DriverError: CUDA_ERROR_NOT_SUPPORTED: operation not supported"}
    zero = blocks_per_sm(lambda: 0, fallback=1)
    assert zero["blocks_per_sm"] == 1 and zero["source"] == FALLBACK and "answered 0" in zero["error"]


def test_the_run_schema_takes_the_occupancy_and_power_source_of_the_device(tmp_path):
    from gpuroof.results import KIND, SCHEMA_VERSION, check_meta

    meta = {"schema_version": SCHEMA_VERSION, "kind": KIND, "status": "partial", "backend": "cuda",
            "ceilings": None,
            "device": {"name": "NVIDIA H100 80GB HBM3", "power_source": "NVML_FI_DEV_POWER_INSTANT",
                       "occupancy": {"sweep<float, 0, false>": blocks_per_sm(lambda: 6, 8),
                                     "shared_read": blocks_per_sm(lambda: 0, 1)}}}
    assert check_meta(meta, tmp_path / "run.json") is meta
    meta["device"]["occupancy"] = ["not", "a", "map"]
    with pytest.raises(UsageError, match="device.occupancy"):
        check_meta(meta, tmp_path / "run.json")


# ---------------------------------------------------------------------------------------------
# 5. a matrix unit that fails at a large size after valid smaller ones
# ---------------------------------------------------------------------------------------------

class FailsFrom(CpuBackend):
    """The CPU backend's real GEMMs, with the library failing at `n` and above (as cuBLAS may at the
    largest size only: a workspace, a kernel, a device error)."""

    def __init__(self, unit, n):
        super().__init__(0)
        self.unit, self.n = unit, n

    def gemm(self, unit, n):
        if unit == self.unit and n >= self.n:
            raise DriverError("CUBLAS_STATUS_EXECUTION_FAILED")
        return super().gemm(unit, n)


def test_a_unit_failing_after_valid_sizes_keeps_their_ceiling_and_names_the_failed_size(tmp_path):
    from gpuroof.matrix import failed_units, failure_warnings, matrix_ceilings, matrix_sweep, unit_failures
    from gpuroof.measure import invalid_matrix_samples
    from gpuroof.results import check_table, write_run

    samples = matrix_sweep(FailsFrom("float64", 128), ("float64",), (32, 64, 128, 256), budget_s=0.0,
                           min_reps=2, max_reps=2)
    assert sorted(set(samples["n"])) == [32, 64, 128]  # 256 not tried after the failure
    reason = "DriverError: CUBLAS_STATUS_EXECUTION_FAILED"
    assert failed_units(samples) == {"float64-matrix": reason}
    assert unit_failures(samples) == {"float64-matrix": {"n": 128, "error": reason, "valid_sizes": [32, 64]}}
    ceilings = matrix_ceilings(samples)
    assert ceilings["float64-matrix"] > 0  # from n = 32, 64
    assert invalid_matrix_samples(samples) == 0  # the failed size is no invalid measurement
    write_run(tmp_path, {"schema_version": 1}, {"matrix": samples})
    back = check_table(pd.read_csv(tmp_path / "matrix.csv"), "matrix", tmp_path / "matrix.csv")
    assert unit_failures(back) == unit_failures(samples)
    [(severity, text)] = failure_warnings(failed_units(back), ceilings, back)
    assert severity == "warn" and "has no ceiling" not in text
    assert "failed at n=128" in text and "n=32, 64" in text and reason in text
    from gpuroof.measure import disturbed_summary
    counts = disturbed_summary({"matrix": samples}, 2, [])["by_sweep"]["matrix"]
    assert counts["points"] == 2  # n = 32 and 64 were timed; the failed n = 128 is not a point


def test_a_unit_failing_at_its_first_size_has_no_ceiling_and_says_so():
    from gpuroof.matrix import failed_units, failure_warnings, matrix_ceilings, matrix_sweep

    samples = matrix_sweep(FailsFrom("float64", 0), ("float64", "float32"), (32, 64), budget_s=0.0,
                           min_reps=2, max_reps=2)
    ceilings = matrix_ceilings(samples)
    assert "float64-matrix" not in ceilings and ceilings["float32-matrix"] > 0
    assert failure_warnings(failed_units(samples), ceilings, samples) == [
        ("bad", "the matrix unit float64-matrix failed at n=32 and has no ceiling: "
                "DriverError: CUBLAS_STATUS_EXECUTION_FAILED.")]
    # run.json alone (no matrix.csv): still truthful, without the size
    [(severity, text)] = failure_warnings(failed_units(samples), ceilings)
    assert severity == "bad" and "has no ceiling" in text


def test_the_report_says_the_ceiling_comes_from_the_valid_sizes(tmp_path):
    from gpuroof.matrix import failed_units, matrix_ceilings, matrix_sweep
    from gpuroof.report import collect_warnings
    from gpuroof.results import Run, write_run

    samples = matrix_sweep(FailsFrom("float64", 64), ("float64",), (32, 64), budget_s=0.0, min_reps=2,
                           max_reps=2)
    meta = {"schema_version": 1, "matrix_failed_units": failed_units(samples),
            "ceilings": {"compute": matrix_ceilings(samples), "bandwidth": {}}}
    write_run(tmp_path, meta, {"matrix": samples})
    texts = [t for _, t in collect_warnings(Run(tmp_path, meta), None, None, None)]
    [text] = [t for t in texts if "float64-matrix" in t]
    assert "failed at n=64" in text and "n=32" in text and "has no ceiling" not in text


# ---------------------------------------------------------------------------------------------
# 6. a window caps the kernels it enqueues, not the calls
# ---------------------------------------------------------------------------------------------

def test_a_window_of_multi_kernel_calls_never_enqueues_more_kernels_than_the_cap():
    most = timing.MAX_LAUNCHES
    assert timing.launches_per_window(1e-9) == most  # one kernel a call: the cap is in calls
    for kernels in (2, 3, 12, 96, 999):
        n = timing.launches_per_window(1e-9, kernels=kernels)
        assert n * kernels <= most < (n + 1) * kernels
    assert timing.launches_per_window(1e-9, kernels=5000) == 1  # one call, however many it enqueues
    assert timing.launches_per_window(1.0, kernels=96) == 1
    with pytest.raises(UsageError, match="kernels 0"):
        timing.launches_per_window(1e-3, kernels=0)


def test_the_timer_sizes_its_window_by_the_kernels_each_call_enqueues(monkeypatch):
    from test_cuda_timing import Clock, FakeCupy, blocking

    monkeypatch.delitem(__import__("sys").modules, "torch", raising=False)
    clock = Clock()
    cp = FakeCupy(clock, 1e-7)  # calls far shorter than the window: the cap decides
    fn = blocking(cp, 1e-8, [])
    fn.kernels_per_call = 50
    res = timing.time_events(cp, fn, warmup=0, min_reps=2, max_reps=2, budget_s=0.0, clock=clock)
    assert res.kernels_per_call == 50 and res.launches_per_window == timing.MAX_LAUNCHES // 50
    plain = timing.time_events(cp, blocking(cp, 1e-8, []), warmup=0, min_reps=2, max_reps=2, budget_s=0.0,
                               clock=clock)
    assert plain.kernels_per_call == 1 and plain.launches_per_window == timing.MAX_LAUNCHES


def test_a_rotation_of_prepared_copies_counts_the_kernels_of_its_calls():
    from gpuroof.bench import Rotation

    runs = [Blocking(lambda: None, lambda: None) for _ in range(3)]
    assert kernels_per_call(Rotation(runs)) == 1 and kernels_per_call(lambda: None) == 1
    for r, k in zip(runs, (12, 36, 12)):
        r.kernels_per_call = k
    assert kernels_per_call(Rotation(runs)) == 36
    runs[0].kernels_per_call = 0
    with pytest.raises(ValueError, match="kernels_per_call 0"):
        kernels_per_call(Rotation(runs))


def test_each_cuda_workload_counts_the_kernels_one_call_enqueues():
    from gpuroof.workloads import conv2d, gemm, lstm, mlp
    from gpuroof.workloads._cuda import GEMM_KERNELS

    assert lstm.cuda_kernels(lstm.LstmParams(1, 2048, 2048, 32, "float32", "cublas")) == 32 * (GEMM_KERNELS + 1)
    assert mlp.cuda_kernels(mlp.MlpParams(1, 4096, 4, "float16", "cublas")) == 4 * (GEMM_KERNELS + 1)
    im2col = conv2d.Conv2dParams(8, 3, 16, 32, 32, 3, 1, 1, "float32", "im2col-cublas")
    pointwise = conv2d.Conv2dParams(8, 16, 16, 32, 32, 1, 1, 0, "float32", "im2col-cublas")
    direct = conv2d.Conv2dParams(8, 3, 16, 32, 32, 3, 1, 1, "float32", "direct")
    assert pointwise.is_pointwise_gemm and not im2col.is_pointwise_gemm
    assert conv2d.cuda_kernels(im2col) == 1 + GEMM_KERNELS and conv2d.cuda_kernels(pointwise) == GEMM_KERNELS
    assert conv2d.cuda_kernels(direct) == 1
    assert gemm.cuda_kernels(gemm.GemmParams(64, 64, 64, "float32", "cublas")) == GEMM_KERNELS
    assert gemm.cuda_kernels(gemm.GemmParams(64, 64, 64, "float32", "tiled")) == 1
    # every CUDA case of the default bench stays under the queue's depth in one window
    for w in (lstm.LSTM, mlp.MLP):
        for p in w.cases("default", "cuda", 50 << 20):
            k = w.name == "lstm" and lstm.cuda_kernels(p) or mlp.cuda_kernels(p)
            assert timing.launches_per_window(1e-9, kernels=k) * k <= timing.MAX_LAUNCHES


# ---------------------------------------------------------------------------------------------
# 7. V100's peaks
# ---------------------------------------------------------------------------------------------

def test_v100_peaks_are_nvidias_figures_at_boost():
    """80 SMs at 1530 MHz: FP64 7.8, FP32 15.7, FP16 (half2, no tensor cores) 31.4, FP16 tensor
    cores 125 TFLOP/s (NVIDIA's V100 SXM2 figures); A100 and H100 as their whitepapers give them."""
    vec = dev.theoretical_peaks("7.0", 80, 1530, 4096, 877)["compute"]
    mat = dev.matrix_theoretical("7.0", 80, 1530)
    assert vec["float64"] == pytest.approx(7.8e12, rel=0.01)
    assert vec["float32"] == pytest.approx(15.7e12, rel=0.01)
    assert vec["float16"] == pytest.approx(31.4e12, rel=0.01)
    assert mat["float16-matrix"] == pytest.approx(125e12, rel=0.01)
    assert mat["tf32-matrix"] is None and mat["float64-matrix"] is None  # no such tensor cores on Volta
    assert dev.matrix_theoretical("8.0", 108, 1410)["float16-matrix"] == pytest.approx(312e12, rel=0.01)
    assert dev.matrix_theoretical("9.0", 132, 1830)["float16-matrix"] == pytest.approx(989e12, rel=0.01)
    assert dev.theoretical_peaks("8.0", 108, 1410, 5120, 1215)["compute"]["float16"] == pytest.approx(78e12, rel=0.01)


# ---------------------------------------------------------------------------------------------
# on a device
# ---------------------------------------------------------------------------------------------

gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def cupy_mod():
    return pytest.importorskip("cupy", reason="cupy is not installed (pip install gpuroof[cuda13])")


@gpu
def test_gpu_a_buffer_over_a_quarter_of_free_memory_serves_every_dtype_in_turn(cuda_backend):
    """Two arrays of 0.3x free memory fit once: the second dtype's only when the first dtype's
    buffers (and its compute points' trial launches) are gone."""
    nbytes = int(0.3 * cuda_backend.free_memory_bytes()) >> 20 << 20
    settings = SweepSettings(dtypes=("float64", "float32"), fmas=(0, 1), variants=("ro",), buffer_bytes=nbytes,
                             budget_s=0.0, warmup=0, min_reps=1, max_reps=1, busy_retries=0)
    with Sampler(cuda_backend.telemetry_source(), 0.05) as sampler:
        result = run_sweep(cuda_backend, settings, sampler)
    assert set(result.buffers) == {"float64", "float32"} and result.samples["valid"].all()


@gpu
def test_gpu_the_backend_works_on_its_own_stream_whatever_the_caller_made_current(cuda_backend, cupy_mod):
    side = cupy_mod.cuda.Stream(non_blocking=True)
    seen: list[int] = []
    with side:
        cuda_backend.timed(lambda: seen.append(int(cupy_mod.cuda.get_current_stream().ptr)), warmup=0,
                           min_reps=2, max_reps=2, budget_s=0.0)
        assert int(cupy_mod.cuda.get_current_stream().ptr) == int(side.ptr)  # the caller's, restored
    with cuda_backend.on_stream() as stream:
        own = int(stream.ptr)
    assert set(seen) == {own} and own not in (0, int(side.ptr))


SPIN = r"""
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
"""


@gpu
def test_gpu_work_sent_to_the_callers_stream_stays_inside_the_window(cuda_backend, cupy_mod):
    """A function that launches on the stream its caller made current (a library that kept it):
    that stream waits for the start event and is joined before the end one."""
    spin = cupy_mod.RawModule(code=SPIN).get_function("spin")
    sm_mhz = cuda_backend.max_clocks()[0] or 2000.0
    cycles = np.int64(int(2e-3 * sm_mhz * 1e6))  # 2 ms at the maximum clock, longer at a lower one
    side = cupy_mod.cuda.Stream(non_blocking=True)

    def on_side():
        with side:
            spin((1,), (1,), (cycles,))
    with side:
        t = cuda_backend.timed(on_side, warmup=1, min_reps=3, max_reps=3, budget_s=0.0)
    assert float(np.median(t.times_s)) >= 1e-3, t.times_s


@gpu
def test_gpu_a_launch_waits_for_its_own_work_and_after_the_callers(cuda_backend, cupy_mod):
    """The poison is enqueued on the caller's non-blocking stream, the launch on the backend's, the
    check on the caller's again: the output is exact only if the backend waited for the poison
    before launching and `run()` returned only when the kernel was done."""
    from gpuroof.sweep import check

    buf = cuda_backend.alloc_sweep("float32", 64 << 20)
    side = cupy_mod.cuda.Stream(non_blocking=True)
    with side:
        cuda_backend.poison(buf, "rw", buf.elements)
        cuda_backend.sweep_launch(buf, 2048, "rw", buf.elements).run()
        err = check(cuda_backend, buf, "rw", 2048, buf.elements, 0)
    assert err == 0.0


@gpu
def test_gpu_events_on_the_backends_stream_bracket_a_dram_read(cuda_backend, cupy_mod):
    """Events that missed the work would time nothing: a DRAM read faster than the card's
    theoretical bandwidth."""
    theo = cuda_backend.theoretical(*cuda_backend.max_clocks())["bandwidth"]["dram"]
    if not theo:
        pytest.skip("no theoretical DRAM bandwidth for this device")
    buf = cuda_backend.alloc_sweep("float32", cuda_backend.default_buffer_bytes())
    launch = cuda_backend.sweep_launch(buf, 0, "ro", buf.elements)
    with cupy_mod.cuda.Stream(non_blocking=True):
        t = cuda_backend.timed(launch.run, warmup=1, min_reps=5, max_reps=5, budget_s=0.0)
    rate = buf.elements * 4 / float(np.median(t.times_s))
    print(f"\nDRAM read under a caller's stream: {rate / 1e12:.3f} TB/s (theoretical {theo / 1e12:.3f})")
    assert 0 < rate <= 1.05 * theo


@gpu
def test_gpu_a_gemm_under_a_callers_stream_is_complete_when_run_returns(cuda_backend, cupy_mod):
    from gpuroof.matrix import TOLERANCE

    g = cuda_backend.gemm("float16", 4096)
    with cupy_mod.cuda.Stream(non_blocking=True):
        g.run()
        err = g.check()
        t = cuda_backend.timed(g.run, warmup=1, min_reps=3, max_reps=3, budget_s=0.0)
    assert err <= TOLERANCE["float16"]
    peak = cuda_backend.matrix_theoretical(cuda_backend.max_clocks()[0]).get("float16-matrix")
    rate = g.flops / float(np.median(t.times_s))
    print(f"\nfloat16 GEMM 4096 under a caller's stream: {rate / 1e12:.1f} TFLOP/s (peak {peak})")
    assert rate > 0 and (peak is None or rate <= 1.05 * peak)


@gpu
def test_gpu_every_kernel_records_its_blocks_per_sm_and_their_source(cuda_backend):
    from gpuroof.backends.cuda.kernels import BLOCK, sweep_module_expressions

    info = cuda_backend.device_info()  # taken before compiling, as measure() takes run.json's device
    assert not set(sweep_module_expressions("float16")) & set(info["occupancy"])  # no test compiled it yet
    cuda_backend.compile("float16")
    cuda_backend.shared_bandwidth(budget_s=0.0, min_reps=1, max_reps=1)
    occ = info["occupancy"]
    print("\n" + "\n".join(f"{k}: {v}" for k, v in occ.items()))
    assert set(sweep_module_expressions("float16")) | {"shared_read"} <= set(occ)
    per_sm = info["max_threads_per_multiprocessor"]
    for name, o in occ.items():
        assert o["source"] == OCCUPANCY_API, (name, o)
        assert 1 <= o["blocks_per_sm"] and o["blocks_per_sm"] * BLOCK <= per_sm, (name, o)


@gpu
def test_gpu_power_is_the_instantaneous_reading_on_hopper(cuda_backend):
    from gpuroof.nvml import POWER_INSTANT, POWER_SOURCES

    sample = cuda_backend.telemetry_source()()
    info = cuda_backend.device_info()
    print(f"\npower {sample['power_w']} W from {sample['power_source']}")
    if sample["power_w"] is None:
        pytest.skip("NVML gives no power on this device")
    assert sample["power_source"] in POWER_SOURCES and info["power_source"] == sample["power_source"]
    if info["compute_capability"] == "9.0":
        assert sample["power_source"] == POWER_INSTANT


@gpu
def test_gpu_a_multi_kernel_workload_window_stays_under_the_queue_depth(cuda_backend):
    """A batch-1 MLP enqueues 12 kernels a call: its window holds at most MAX_LAUNCHES kernels, so a
    full launch queue cannot make it read as host-bound."""
    from gpuroof.workloads import mlp

    p = mlp.MlpParams(1, 2048, 4, "float16", "cublas")
    x = mlp.MLP.inputs(p, np.random.default_rng(0))
    prep = mlp.MLP.runners["cuda"]["cublas"](cuda_backend, p, x)
    t = cuda_backend.timed(prep.run, warmup=1, min_reps=5, max_reps=5, budget_s=0.0)
    print(f"\nMLP batch 1: {t.launches_per_window} calls x {t.kernels_per_call} kernels, {window_figures(t)}")
    assert t.kernels_per_call == mlp.cuda_kernels(p)
    assert t.launches_per_window * t.kernels_per_call <= timing.MAX_LAUNCHES
