"""CUDA backend: the only package that imports cupy (lazily, so its pure parts import and test anywhere).

device.py holds the device facts and peaks, kernels.py what is compiled, launch.py the sweep
launches, timing.py the CUDA-event timer, blas.py the cuBLAS GEMMs; this module ties them to the
Backend interface for one device.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from gpuroof.backends.base import Backend, Launch, Level, SweepBuffers
from gpuroof.backends.base import Gemm
from gpuroof.backends.cuda import blas, device as dev
from gpuroof.backends.cuda.device import import_cupy, parse_cc, theoretical_peaks  # noqa: F401  (re-exported)
from gpuroof.backends.cuda.kernels import (BLOCK, CUDA_TYPE, SWEEP_FMAS, VECS_PER_THREAD,  # noqa: F401
                                           bf16_bits_from_float64, float64_from_bf16_bits, granule,
                                           kernel_path, kernel_source, name_expression, name_expressions)
from gpuroof.backends.cuda.launch import SweepLaunches
from gpuroof.backends.cuda.timing import OwnStream, current_streams, time_events, time_graph, with_caller
from gpuroof.hostbound import Timing
from gpuroof.errors import UsageError
from gpuroof.nvml import Nvml


def _device_count(cp: Any) -> int:
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device: CUDARuntimeError
        return 0


class CudaBackend(Backend):
    """One CUDA device through cupy: sweep kernels from kernels/sweep.cu, timed with CUDA events.

    All its device work goes to one non-blocking stream of its own (timing.OwnStream), made current
    by `on_stream()` around every call that launches, waits or records: kernels, cuBLAS, events and
    waits all follow the current stream, so none of them can wait on another one than the work."""

    name = "cuda"

    @staticmethod
    def available() -> bool:
        """True when cupy imports and sees at least one CUDA device; never raises."""
        try:
            return bool(import_cupy().cuda.is_available())
        except Exception:
            return False

    @staticmethod
    def device_count() -> int:
        """CUDA devices cupy sees (0 without cupy, driver or device); never raises."""
        try:
            return _device_count(import_cupy())
        except Exception:
            return 0

    def __init__(self, device_index: int = 0):
        cp = import_cupy()
        count = _device_count(cp)
        if count == 0:
            raise UsageError(f"--device {device_index}: no CUDA device is visible on this machine")
        if isinstance(device_index, bool) or not isinstance(device_index, (int, np.integer)) \
                or not 0 <= device_index < count:
            plural = "device" if count == 1 else "devices"
            raise UsageError(f"--device {device_index}: this machine has {count} CUDA {plural} "
                             f"(allowed: 0..{count - 1} or all)")
        self.xp = cp
        self.index = int(device_index)
        self._cp = cp
        self._device = cp.cuda.Device(self.index)
        self._device.use()
        self._nvml = Nvml()
        self._info = dev.read_device_info(cp, self.index, self._nvml)
        self._info["sweep_block_threads"] = BLOCK
        self._nvml_handle = self._info.pop("_nvml_handle")
        self._own = OwnStream(cp, self._device)
        self._stream = self._own.stream
        self._launches = SweepLaunches(cp, self._info, self.free_memory_bytes, self._own)
        # the kernels' blocks per SM and where each number came from, filled in as they are compiled
        self._info["occupancy"] = self._launches.occupancy

    def on_stream(self) -> Any:
        """A context manager: this backend's device and stream current (timing.OwnStream.active)."""
        return self._own.active()

    # -- device facts --------------------------------------------------------------------------

    def device_info(self) -> dict:
        """The device's facts. `occupancy` is the backend's own record, filled in as each kernel is
        compiled (blocks per SM, from the occupancy API or a fallback with its error): a run that
        keeps this dict writes every kernel it launched into run.json."""
        return dict(self._info)

    def dtypes(self) -> tuple[str, ...]:
        return ("float64", "float32", "float16", "bfloat16")

    def cache_bytes(self) -> int:
        return int(self._info["l2_cache_bytes"] or 0)

    def free_memory_bytes(self) -> int:
        """Free device memory, after handing cupy's cached blocks back so they count as free."""
        with self.on_stream():
            self._cp.get_default_memory_pool().free_all_blocks()
            return int(self._cp.cuda.runtime.memGetInfo()[0])

    def default_buffer_bytes(self) -> int:
        """Bytes of x (out is as large): 32x L2 so DRAM is measured, at most 1/4 of free memory."""
        return dev.default_buffer_bytes(self.cache_bytes(), self.free_memory_bytes())

    # -- sweep ---------------------------------------------------------------------------------

    def _check_dtype(self, dtype: str) -> None:
        if dtype not in self.dtypes():
            raise UsageError(f"--dtype {dtype}: the CUDA backend supports {', '.join(self.dtypes())}")

    def alloc_sweep(self, dtype: str, nbytes: int) -> SweepBuffers:
        self._check_dtype(dtype)
        return self._launches.alloc(dtype, nbytes)

    def compile(self, dtype: str) -> None:
        """Compile every sweep instance of `dtype` now, so NVRTC time stays out of timed windows."""
        self._check_dtype(dtype)
        self._launches.compile(dtype)

    def sweep_launch(self, buf: SweepBuffers, fmas: int, variant: str, elements: int,
                     passes: int = 1, kernel: Any = None) -> Launch:
        """One instance per (dtype, variant, FMAs): `kernel` is always None here (no kernel_variants)."""
        return self._launches.sweep(buf, fmas, variant, elements, passes)

    def sweep_step(self, buf: SweepBuffers, fmas: int, variant: str) -> int:
        """Elements of one whole grid-stride step of that instance's grid."""
        return self._launches.step(buf, fmas, variant)

    # -- cache levels and shared memory ------------------------------------------------------------

    def cache_levels(self) -> list[Level]:
        return dev.cache_levels(self._info)

    def hierarchy_bytes_per_launch(self) -> int:
        """4 GiB per launch: about a millisecond even at L2 bandwidth, far above launch overhead."""
        return 4 << 30

    def working_set_launch(self, buf: SweepBuffers, elements: int, passes: int, kernel: Any = None) -> Launch:
        return self._launches.working_set(buf, elements, passes, dev.l1_per_sm(self._info))

    def shared_bandwidth(self, *, budget_s: float, min_reps: int, max_reps: int) -> dict:
        """Shared-memory read bandwidth (kernels/shared_bw.cu), validated against its closed form."""
        cp = self._cp
        run, values, partial, blocks, tile, passes = self._launches.shared_read()
        times = self.time(run, warmup=1, min_reps=min_reps, max_reps=max_reps, budget_s=budget_s)
        with self.on_stream():
            want = float(values.astype(cp.float64).sum()) * blocks * passes
            got = float(partial.astype(cp.float64).sum())
        return {"times_s": times, "bytes": blocks * tile * 16 * passes, "rel_error": abs(got - want) / want,
                "blocks": blocks, "passes": passes}

    # -- matrix units (cuBLAS) ---------------------------------------------------------------------

    def matrix_units(self) -> tuple[str, ...]:
        return dev.matrix_units(self._info["compute_capability"])

    def matrix_sizes(self, quick: bool) -> tuple[int, ...]:
        return (4096, 8192) if quick else (2048, 4096, 8192, 12288, 16384)

    def gemm(self, unit: str, n: int) -> Gemm:
        return blas.gemm(self._cp, self.on_stream, self._own.synchronize, self.free_memory_bytes(), unit, n)

    def matrix_theoretical(self, sm_clock_mhz: float | None) -> dict[str, float | None]:
        return dev.matrix_theoretical(self._info["compute_capability"], self._info["multiprocessors"],
                                      sm_clock_mhz)

    # -- timing --------------------------------------------------------------------------------

    def time(self, fn: Callable[[], None], *, warmup: int, min_reps: int, max_reps: int,
             budget_s: float) -> np.ndarray:
        """Seconds per launch from CUDA events around milliseconds of back-to-back launches
        (timing.time_events)."""
        return self.timed(fn, warmup=warmup, min_reps=min_reps, max_reps=max_reps, budget_s=budget_s).times_s

    def timed(self, fn: Callable[[], None], *, warmup: int, min_reps: int, max_reps: int,
              budget_s: float) -> Timing:
        """Device seconds per launch and the host's enqueue seconds beside them, with the backend's
        stream current: the work and the events go there. The stream the caller had made current,
        and torch's current stream where torch uses another, wait for the start event and are
        joined before the end one (timing.current_streams, timing.with_caller), so work sent to
        them stays inside the window."""
        if isinstance(fn, Launch):
            fn = fn.run
        with self._device:
            caller = self._cp.cuda.get_current_stream()
        with self.on_stream():
            streams = with_caller(current_streams(self._cp), caller)
            return time_events(self._cp, fn, warmup=warmup, min_reps=min_reps, max_reps=max_reps,
                               budget_s=budget_s, streams=streams)

    def timed_graph(self, fn: Callable[[], None], *, launches: int, warmup: int, min_reps: int,
                    max_reps: int, budget_s: float) -> Timing:
        """`launches` enqueues of `fn` captured into one CUDA graph on the backend's stream and
        replayed there (timing.time_graph); raises timing.GraphUnsupported when they cannot be
        captured."""
        if isinstance(fn, Launch):
            fn = fn.run
        with self.on_stream() as stream:
            stream.synchronize()  # the capture starts on an idle stream
            return time_graph(self._cp, fn, launches=launches, warmup=warmup, min_reps=min_reps,
                              max_reps=max_reps, budget_s=budget_s, stream=stream)

    def as_float64(self, arr: Any, dtype: str) -> Any:
        """float64 copy of `arr`. bfloat16 data is stored as uint16 bits; arrays already in a float
        type (the per-thread float32 sums of a bfloat16 sweep) are only widened."""
        self._check_dtype(dtype)
        if dtype == "bfloat16" and arr.dtype == self._cp.uint16:
            return float64_from_bf16_bits(self._cp, arr)
        return arr.astype(self._cp.float64)

    # -- clocks, telemetry, peaks --------------------------------------------------------------

    def telemetry_source(self) -> Callable[[], dict]:
        """NVML samples of this device (every value None when NVML or the handle is missing)."""
        return functools.partial(self._nvml.sample, self._nvml_handle)

    def max_clocks(self) -> tuple[float | None, float | None]:
        """NVML's maximum SM and memory clocks (MHz); CUDA's peak-clock attributes where NVML is absent."""
        sm = self._info.get("max_sm_clock_mhz")
        mem = self._info.get("max_mem_clock_mhz")
        if sm is None and self._info.get("clock_rate_khz"):
            sm = self._info["clock_rate_khz"] / 1000.0
        if mem is None and self._info.get("memory_clock_rate_khz"):
            mem = self._info["memory_clock_rate_khz"] / 1000.0
        return (None if sm is None else float(sm), None if mem is None else float(mem))

    def theoretical(self, sm_clock_mhz: float | None, mem_clock_mhz: float | None) -> dict:
        peaks = theoretical_peaks(self._info["compute_capability"], self._info["multiprocessors"],
                                  sm_clock_mhz, self._info["memory_bus_width_bits"], mem_clock_mhz)
        peaks["compute"].update(self.matrix_theoretical(sm_clock_mhz))
        return peaks

    def close(self) -> None:
        self._launches.close()
        with self._device:
            self._cp.get_default_memory_pool().free_all_blocks()
