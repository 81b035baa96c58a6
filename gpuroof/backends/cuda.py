"""CUDA backend: the only module that imports cupy; compiles kernels/sweep.cu, launches, times with events.

cupy is imported lazily (`_cupy()`), so the pure parts of this module (the peak table, the granule,
the kernel names, the bfloat16 bit conversions) import and test on machines without CUDA.
"""
from __future__ import annotations

import functools
import time as _time
import uuid as _uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

import gpuroof
from gpuroof.backends.base import (ITEMSIZE, SWEEP_A, SWEEP_B, VARIANTS, Backend, Launch,
                                   SweepBuffers, sweep_input)
from gpuroof.errors import MeasurementError, UsageError
from gpuroof.nvml import Nvml

#: FMAs per element the sweep kernel is compiled for (one template instance each, per dtype and
#: variant). The sweep chooses its intensities from these; the nvcc compile test instantiates them.
SWEEP_FMAS = (0,) + tuple(2 ** k for k in range(12))  # 0, 1, 2, 4, ..., 2048

#: Threads per block. 256 lets 8 blocks fill an SM of 2048 threads when registers allow.
BLOCK = 256

#: Bytes per load and store of the sweep kernel (uint4 / float4 / double2).
VECTOR_BYTES = 16

#: C++ type of each dtype in kernels/sweep.cu.
CUDA_TYPE = {"float64": "double", "float32": "float", "float16": "__half", "bfloat16": "__nv_bfloat16"}

#: 16-byte vectors a thread keeps in flight per step; mirrors `Ops<T>::kVecsPerThread` in sweep.cu.
#: Each gives 8 independent FMA chains per thread (double 4x2 lanes, float 2x4, 16-bit 2x4 pairs).
VECS_PER_THREAD = {"float64": 4, "float32": 2, "float16": 2, "bfloat16": 2}

#: How the sweep stores each dtype on the device (bfloat16 as its 16-bit pattern: numpy has no bf16).
STORAGE_DTYPE = {"float64": "float64", "float32": "float32", "float16": "float16", "bfloat16": "uint16"}

#: Per-thread read-only sums: float for float/half/bf16, double for double (as in sweep.cu).
PARTIAL_DTYPE = {"float64": "float64", "float32": "float32", "float16": "float32", "bfloat16": "float32"}

#: NVRTC options. The FMAs are explicit (fma/fmaf/__hfma2), so no fast-math flag is needed.
COMPILE_OPTIONS = ("-std=c++17",)

#: Non-tensor FMA lanes per SM per clock, by compute capability (CUDA C Programming Guide,
#: "Arithmetic Instructions" throughput table; 16-bit entries count elements, a half2 FMA is two).
#: None: the unit does not exist there. An architecture missing here gets no compute peak (never guessed).
FMA_LANES_PER_SM: dict[tuple[int, int], dict[str, int | None]] = {
    (7, 0): {"float64": 32, "float32": 64, "float16": 128, "bfloat16": None},  # V100
    (8, 0): {"float64": 32, "float32": 64, "float16": 256, "bfloat16": 128},  # A100
    (8, 6): {"float64": 2, "float32": 128, "float16": 128, "bfloat16": 128},  # GA10x
    (8, 9): {"float64": 2, "float32": 128, "float16": 128, "bfloat16": 128},  # AD10x
    (9, 0): {"float64": 64, "float32": 128, "float16": 256, "bfloat16": 256},  # H100 / H200
}

#: Dense matrix-unit FLOP per clock per SM (an FMA counts 2), from NVIDIA's architecture whitepapers:
#: A100 312 TFLOP/s fp16 dense = 108 SMs x 2048 x 1.41 GHz; H100 SXM 989 TFLOP/s = 132 x 4096 x 1.83 GHz.
#: int8 is in integer OP per clock. A unit or architecture missing here has no theoretical peak.
MATRIX_FLOP_PER_SM_CLOCK: dict[tuple[int, int], dict[str, int]] = {
    (8, 0): {"float16": 2048, "bfloat16": 2048, "tf32": 1024, "float64": 128, "int8": 4096},
    (9, 0): {"float16": 4096, "bfloat16": 4096, "tf32": 2048, "float64": 256, "int8": 8192},
}

#: Unified L1 / shared memory per SM (bytes) by architecture; the L1 level's capacity is this times
#: the multiprocessors (each SM caches its own share of a grid-stride working set).
L1_PER_SM: dict[tuple[int, int], int] = {(7, 0): 128 << 10, (8, 0): 192 << 10, (8, 6): 128 << 10,
                                         (8, 9): 128 << 10, (9, 0): 256 << 10}

#: cudaDataType values (library_types.h) and cuBLAS GEMM settings per matrix unit:
#: (input type, output type, compute type name in cupy's cublas module, numpy storage, alpha dtype).
CUDA_R = {"16F": 2, "16BF": 14, "32F": 0, "64F": 1, "8I": 3, "32I": 10}
GEMM_UNITS = {
    "float16": ("16F", "16F", "CUBLAS_COMPUTE_32F", "float16", "float16", "float32"),
    "bfloat16": ("16BF", "16BF", "CUBLAS_COMPUTE_32F", "uint16", "uint16", "float32"),
    "tf32": ("32F", "32F", "CUBLAS_COMPUTE_32F_FAST_TF32", "float32", "float32", "float32"),
    "float64": ("64F", "64F", "CUBLAS_COMPUTE_64F", "float64", "float64", "float64"),
    "int8": ("8I", "32I", "CUBLAS_COMPUTE_32I", "int8", "int32", "int32"),
}

_MIB = 1 << 20
_GIB = 1 << 30
#: Elements filled per step when writing the input on the device (bounds the temporaries to ~100 MiB).
_FILL_CHUNK = 1 << 22


# ---------------------------------------------------------------------------------------------
# Pure helpers (no cupy)
# ---------------------------------------------------------------------------------------------

def kernel_path(name: str) -> Path:
    """Path of a CUDA source: the wheel's copy (gpuroof/_kernels/) first, then a checkout's kernels/."""
    pkg = Path(gpuroof.__file__).resolve().parent
    candidates = (pkg / "_kernels" / name, pkg.parent / "kernels" / name)
    for path in candidates:
        if path.is_file():
            return path
    raise MeasurementError(
        f"kernel source {name!r} not found; looked in {', '.join(str(p) for p in candidates)} "
        "(a broken install: reinstall gpuroof, or run from a source checkout)")


def kernel_source(name: str) -> str:
    """Text of a CUDA source found by `kernel_path`."""
    path = kernel_path(name)
    try:
        return path.read_text()
    except OSError as exc:
        raise MeasurementError(f"kernel source {path}: cannot read it ({exc})") from exc


def granule(dtype: str) -> int:
    """Elements a sweep length must be a multiple of: one step of one thread (V 16-byte vectors)."""
    return VECS_PER_THREAD[dtype] * VECTOR_BYTES // ITEMSIZE[dtype]


def name_expression(dtype: str, fmas: int, write: bool) -> str:
    """The NVRTC name expression of one sweep instance, e.g. 'sweep<float, 64, true>'."""
    return f"sweep<{CUDA_TYPE[dtype]}, {int(fmas)}, {'true' if write else 'false'}>"


def name_expressions(dtype: str) -> list[str]:
    """Every instance of one dtype: all of SWEEP_FMAS, read-only and read-write."""
    return [name_expression(dtype, k, w) for k in SWEEP_FMAS for w in (False, True)]


def _parse_cc(cc: Any) -> tuple[int, int] | None:
    """(major, minor) from '9.0', (9, 0) or 90; None when it cannot be read."""
    try:
        if isinstance(cc, str):
            if "." in cc:
                major, minor = cc.split(".", 1)
                return int(major), int(minor)
            cc = int(cc)
        if isinstance(cc, (int, np.integer)):
            return int(cc) // 10, int(cc) % 10
        major, minor = cc
        return int(major), int(minor)
    except (TypeError, ValueError):
        return None


def theoretical_peaks(cc: Any, multiprocessors: int | None, sm_clock_mhz: float | None,
                      bus_width_bits: int | None, mem_clock_mhz: float | None) -> dict:
    """Peaks at the given clocks: {'compute': {dtype: FLOP/s | None}, 'bandwidth': {'dram': B/s | None}}.

    Compute = multiprocessors x FMA lanes per SM x 2 FLOP per FMA x SM clock (non-tensor units: the
    sweep's FMAs run there). DRAM = memory clock x 2 (double data rate, as NVML reports HBM and GDDR
    clocks) x bus width in bytes. Anything unknown gives None rather than a guess.
    """
    lanes = FMA_LANES_PER_SM.get(_parse_cc(cc) or (-1, -1), {})
    compute: dict[str, float | None] = {}
    for dtype in CUDA_TYPE:
        n = lanes.get(dtype)
        if n is None or not multiprocessors or not sm_clock_mhz:
            compute[dtype] = None
        else:
            compute[dtype] = float(multiprocessors) * n * 2.0 * float(sm_clock_mhz) * 1e6
    dram = None
    if bus_width_bits and mem_clock_mhz:
        dram = float(mem_clock_mhz) * 1e6 * 2.0 * float(bus_width_bits) / 8.0
    return {"compute": compute, "bandwidth": {"dram": dram}}


def bf16_bits_from_float64(xp: Any, values: Any) -> Any:
    """bfloat16 bit patterns (uint16) of float64 values, rounded to nearest even via float32."""
    bits = values.astype(xp.float32).view(xp.uint32)
    rounded = (bits + xp.uint32(0x7FFF) + ((bits >> xp.uint32(16)) & xp.uint32(1))) >> xp.uint32(16)
    return rounded.astype(xp.uint16)


def float64_from_bf16_bits(xp: Any, bits: Any) -> Any:
    """float64 values of bfloat16 bit patterns (exact: bf16 is the top half of a float32)."""
    return (bits.astype(xp.uint32) << xp.uint32(16)).view(xp.float32).astype(xp.float64)


def _round_tf32(a: np.ndarray) -> np.ndarray:
    """float64 values rounded to tf32 (10 explicit mantissa bits) as the tensor cores read float32."""
    bits = a.astype(np.float32).view(np.uint32)
    bits = (bits + np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return bits.view(np.float32).astype(np.float64)


def _version(v: int | None) -> str | None:
    """CUDA's integer versions (13000) as '13.0'."""
    if not v:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def _gib(nbytes: float) -> str:
    return f"{nbytes / _GIB:.2f} GiB"


# ---------------------------------------------------------------------------------------------
# cupy
# ---------------------------------------------------------------------------------------------

def _cupy() -> Any:
    """Import cupy on first use; a clear MeasurementError when it is missing or broken."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a RuntimeError from a broken CUDA install
        raise MeasurementError(
            f"the CUDA backend needs cupy, which is not importable ({exc}); "
            "install gpuroof[cuda13] or gpuroof[cuda12] to match the driver") from exc
    return cupy


def _device_count(cp: Any) -> int:
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device: CUDARuntimeError
        return 0


class _BlockingCall:
    """A launch: calling it enqueues the work and waits for it (the Backend contract).

    `enqueue` alone does not wait, so `CudaBackend.time` can put CUDA events around exactly the GPU
    work; host-side synchronisation then stays out of the measured interval.
    """

    def __init__(self, enqueue: Callable[[], None], wait: Callable[[], None]):
        self.enqueue = enqueue
        self._wait = wait

    def __call__(self) -> None:
        self.enqueue()
        self._wait()


class CudaBackend(Backend):
    """One CUDA device through cupy: sweep kernels from kernels/sweep.cu, timed with CUDA events."""

    name = "cuda"

    @staticmethod
    def available() -> bool:
        """True when cupy imports and sees at least one CUDA device; never raises."""
        try:
            cp = _cupy()
            return bool(cp.cuda.is_available())
        except Exception:
            return False

    @staticmethod
    def device_count() -> int:
        """CUDA devices cupy sees (0 without cupy, driver or device); never raises."""
        try:
            return _device_count(_cupy())
        except Exception:
            return 0

    def __init__(self, device_index: int = 0):
        cp = _cupy()
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
        self._stream = cp.cuda.Stream.null
        self._modules: dict[str, Any] = {}
        self._kernels: dict[str, tuple[Any, int]] = {}  # name expression -> (kernel, grid)
        self._nvml = Nvml()
        self._info = self._read_device_info()
        self._nvml_handle = self._info.pop("_nvml_handle")

    # -- device facts --------------------------------------------------------------------------

    def _attr(self, name: str) -> int | None:
        """A cudaDeviceGetAttribute value; None when the attribute or the call is unsupported."""
        rt = self._cp.cuda.runtime
        enum = getattr(rt, name, None)
        if enum is None:
            return None
        try:
            return int(rt.deviceGetAttribute(enum, self.index))
        except Exception:
            return None

    def _read_device_info(self) -> dict:
        cp, rt = self._cp, self._cp.cuda.runtime
        try:
            props = rt.getDeviceProperties(self.index)
        except Exception:
            props = {}
        name = props.get("name")
        cuda_uuid = None
        raw = props.get("uuid")
        if isinstance(raw, (bytes, bytearray)) and len(raw) == 16:
            cuda_uuid = "GPU-" + str(_uuid.UUID(bytes=bytes(raw)))  # NVML's spelling
        try:
            pci_bus_id = rt.deviceGetPCIBusId(self.index)
        except Exception:
            pci_bus_id = None
        major = self._attr("cudaDevAttrComputeCapabilityMajor")
        minor = self._attr("cudaDevAttrComputeCapabilityMinor")
        try:
            with self._device:
                total = int(rt.memGetInfo()[1])
        except Exception:
            total = None
        info: dict[str, Any] = {
            "backend": self.name,
            "name": name.decode() if isinstance(name, bytes) else name,
            "index": self.index,
            "compute_capability": f"{major}.{minor}" if major is not None else None,
            "multiprocessors": self._attr("cudaDevAttrMultiProcessorCount"),
            "max_threads_per_multiprocessor": self._attr("cudaDevAttrMaxThreadsPerMultiProcessor"),
            "l2_cache_bytes": self._attr("cudaDevAttrL2CacheSize"),
            "shared_memory_per_multiprocessor": self._attr("cudaDevAttrMaxSharedMemoryPerMultiprocessor"),
            "memory_total_bytes": total if total is not None else props.get("totalGlobalMem"),
            "clock_rate_khz": self._attr("cudaDevAttrClockRate"),  # peak SM clock; may be absent
            "memory_clock_rate_khz": self._attr("cudaDevAttrMemoryClockRate"),
            "memory_bus_width_bits": self._attr("cudaDevAttrGlobalMemoryBusWidth"),
            "pci_bus_id": pci_bus_id,
            "uuid": cuda_uuid,
            "sweep_block_threads": BLOCK,
        }
        # NVML: match this CUDA device to its NVML handle; CUDA_VISIBLE_DEVICES can renumber devices,
        # so the index is only the last resort.
        handle, match = None, None
        if self._nvml.available:
            if cuda_uuid:
                handle, match = self._nvml.handle_by_uuid(cuda_uuid), "uuid"
            if handle is None and pci_bus_id:
                handle, match = self._nvml._call("nvmlDeviceGetHandleByPciBusId_v2", pci_bus_id), "pci_bus_id"
            if handle is None:
                handle, match = self._nvml.handle(self.index), "index"
            if handle is None:
                match = None
        info["nvml_match"] = match
        info["nvml_error"] = self._nvml.error
        for key, value in self._nvml.static_info(handle).items():
            if info.get(key) is None:
                info[key] = value
        try:
            driver_api = int(rt.driverGetVersion())
        except Exception:
            driver_api = None
        try:
            runtime_v = int(cp.cuda.get_local_runtime_version())
        except Exception:
            runtime_v = None
        try:
            nvrtc_v = ".".join(str(p) for p in cp.cuda.nvrtc.getVersion())
        except Exception:
            nvrtc_v = None
        info.update({
            "driver_version": self._nvml.driver_version(),
            "cuda_driver_version": _version(driver_api),
            "cuda_runtime_version": _version(runtime_v),
            "nvrtc_version": nvrtc_v,
            "cupy_version": cp.__version__,
            "_nvml_handle": handle,
        })
        return info

    def device_info(self) -> dict:
        return dict(self._info)

    def dtypes(self) -> tuple[str, ...]:
        return ("float64", "float32", "float16", "bfloat16")

    def cache_bytes(self) -> int:
        return int(self._info["l2_cache_bytes"] or 0)

    def free_memory_bytes(self) -> int:
        """Free device memory, after handing cupy's cached blocks back so they count as free."""
        with self._device:
            self._cp.get_default_memory_pool().free_all_blocks()
            return int(self._cp.cuda.runtime.memGetInfo()[0])

    def default_buffer_bytes(self) -> int:
        """Bytes of x (out is as large): at least 8x L2 so DRAM is measured, at most 1/4 of free memory."""
        want = -(-max(8 * self.cache_bytes(), 256 * _MIB) // _MIB) * _MIB
        cap = self.free_memory_bytes() // 4 // _MIB * _MIB
        return int(min(want, cap))

    # -- sweep ---------------------------------------------------------------------------------

    def _check_dtype(self, dtype: str) -> None:
        if dtype not in self.dtypes():
            raise UsageError(f"--dtype {dtype}: the CUDA backend supports {', '.join(self.dtypes())}")

    def _max_threads(self) -> int:
        """Most threads a grid sized by occupancy can have: every SM full."""
        sms = self._info["multiprocessors"] or 1
        per_sm = self._info["max_threads_per_multiprocessor"] or 2048
        return sms * (-(-per_sm // BLOCK) * BLOCK)

    def alloc_sweep(self, dtype: str, nbytes: int) -> SweepBuffers:
        self._check_dtype(dtype)
        cp = self._cp
        itemsize = ITEMSIZE[dtype]
        g = granule(dtype)
        elements = int(nbytes) // itemsize // g * g
        if elements <= 0:
            raise UsageError(f"--buffer-size {nbytes} B: smaller than one {dtype} granule "
                             f"({g * itemsize} B)")
        threads = self._max_threads()
        partial_itemsize = np.dtype(PARTIAL_DTYPE[dtype]).itemsize
        # x and out, the per-thread sums, and the temporaries of the chunked fill below.
        need = 2 * elements * itemsize + threads * partial_itemsize + 4 * 8 * _FILL_CHUNK
        free = self.free_memory_bytes()
        if need > free:
            raise UsageError(f"--buffer-size {_gib(nbytes)}: needs {_gib(need)}, "
                             f"the device has {_gib(free)} free")
        storage = cp.dtype(STORAGE_DTYPE[dtype])
        try:
            with self._device:
                x = cp.empty(elements, dtype=storage)
                for start in range(0, elements, _FILL_CHUNK):
                    stop = min(start + _FILL_CHUNK, elements)
                    values = sweep_input(cp.arange(start, stop, dtype=cp.int64))
                    x[start:stop] = (bf16_bits_from_float64(cp, values) if dtype == "bfloat16"
                                     else values.astype(storage))
                # NaN everywhere: an element the kernel fails to write cannot pass the check.
                out = cp.full(elements, 0x7FC0 if dtype == "bfloat16" else np.nan, dtype=storage)
                partial = cp.zeros(threads, dtype=PARTIAL_DTYPE[dtype])
                self._stream.synchronize()
        except cp.cuda.memory.OutOfMemoryError as exc:
            raise MeasurementError(f"--buffer-size {_gib(nbytes)}: allocation failed ({exc})") from exc
        return SweepBuffers(dtype=dtype, x=x, out=out, partial=partial, elements=elements, granule=g,
                            extra={"storage_dtype": STORAGE_DTYPE[dtype],
                                   "partial_dtype": PARTIAL_DTYPE[dtype]})

    def _module(self, dtype: str, source: str) -> Any:
        """One RawModule per dtype (26 instances), compiled on first use and cached by cupy on disk."""
        mod = self._modules.get(dtype)
        if mod is None:
            mod = self._cp.RawModule(code=source, options=COMPILE_OPTIONS,
                                     name_expressions=name_expressions(dtype))
            self._modules[dtype] = mod
        return mod

    def _kernel(self, dtype: str, fmas: int, write: bool) -> tuple[Any, int]:
        """(kernel, grid): grid = resident blocks per SM (occupancy API) x multiprocessors."""
        key = name_expression(dtype, fmas, write)
        hit = self._kernels.get(key)
        if hit is not None:
            return hit
        path = kernel_path("sweep.cu")
        source = kernel_source("sweep.cu")
        try:
            with self._device:
                kernel = self._module(dtype, source).get_function(key)
                try:
                    blocks = int(self._cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
                        kernel.kernel.ptr, BLOCK, 0))
                except Exception:
                    blocks = 0
        except Exception as exc:  # cupy.cuda.compiler.CompileException, driver errors
            raise MeasurementError(
                f"compiling {key} from {path} failed: {exc} "
                "(NVRTC needs the CUDA headers: a CUDA toolkit, or pip's nvidia-cuda-runtime)") from exc
        if blocks <= 0:  # occupancy API unavailable: assume the thread limit binds
            blocks = max(1, (self._info["max_threads_per_multiprocessor"] or 2048) // BLOCK)
        grid = blocks * (self._info["multiprocessors"] or 1)
        self._kernels[key] = (kernel, grid)
        return kernel, grid

    def compile(self, dtype: str) -> None:
        """Compile every sweep instance of `dtype` now, so NVRTC time stays out of timed windows."""
        self._check_dtype(dtype)
        for fmas in SWEEP_FMAS:
            for write in (False, True):
                self._kernel(dtype, fmas, write)

    def sweep_launch(self, buf: SweepBuffers, fmas: int, variant: str, elements: int,
                     passes: int = 1) -> Launch:
        if variant not in VARIANTS:
            raise UsageError(f"variant {variant!r}: allowed {', '.join(VARIANTS)}")
        if fmas not in SWEEP_FMAS:
            raise UsageError(f"fmas {fmas}: the CUDA sweep is compiled for "
                             f"{', '.join(map(str, SWEEP_FMAS))}")
        if not 0 < elements <= buf.elements or elements % buf.granule:
            raise UsageError(f"elements {elements}: must be a positive multiple of {buf.granule} "
                             f"and at most {buf.elements}")
        write = variant == "rw"
        kernel, grid = self._kernel(buf.dtype, fmas, write)
        threads = grid * BLOCK
        if threads > buf.partial.size:
            raise MeasurementError(f"grid of {threads} threads exceeds the partial buffer "
                                   f"({buf.partial.size}); occupancy reported more than fits an SM")
        if not 1 <= passes < 2**32:
            raise UsageError(f"passes {passes}: must be between 1 and 2**32 - 1")
        args = (buf.x, buf.out, buf.partial, np.uint64(elements), np.float64(SWEEP_A),
                np.float64(SWEEP_B), np.uint32(passes))
        cp, device, stream = self._cp, self._device, self._stream
        errors = (cp.cuda.driver.CUDADriverError, cp.cuda.runtime.CUDARuntimeError)
        label = name_expression(buf.dtype, fmas, write)

        def enqueue() -> None:
            try:
                with device:
                    kernel((grid,), (BLOCK,), args)
            except errors as exc:
                raise MeasurementError(f"{label} launch failed: {exc}") from exc

        def wait() -> None:
            try:
                with device:
                    stream.synchronize()
            except errors as exc:
                raise MeasurementError(f"{label} failed on the device: {exc}") from exc

        return Launch(run=_BlockingCall(enqueue, wait), elements=int(elements),
                      partial_elements=threads if not write else 0,
                      partial_itemsize=int(buf.partial.itemsize), passes=int(passes))

    # -- cache levels and shared memory ------------------------------------------------------------

    def cache_levels(self) -> list:
        """shared (its own kernel), l1 (per-SM share of the working set), l2, dram."""
        from gpuroof.hierarchy import Level

        sms = self._info["multiprocessors"] or 0
        l1 = L1_PER_SM.get(_parse_cc(self._info["compute_capability"]) or (-1, -1))
        levels = [Level("shared", None, f"{self._info['shared_memory_per_multiprocessor']} B per SM")]
        if l1 and sms:
            levels.append(Level("l1", l1 * sms, f"{l1} B unified L1/shared per SM x {sms} SMs"))
        levels.append(Level("l2", self.cache_bytes(), "device-wide"))
        return levels + [Level("dram", None, "device memory")]

    def hierarchy_bytes_per_launch(self) -> int:
        """4 GiB per launch: about a millisecond even at L2 bandwidth, far above launch overhead."""
        return 4 << 30

    def shared_bandwidth(self, *, budget_s: float, min_reps: int, max_reps: int) -> dict:
        """Shared-memory read bandwidth (kernels/shared_bw.cu), validated against its closed form."""
        cp = self._cp
        tile = 2048  # float4s, as GPUROOF_SHARED_TILE in the kernel
        with self._device:
            mod = cp.RawModule(code=kernel_source("shared_bw.cu"), options=COMPILE_OPTIONS)
            kernel = mod.get_function("shared_read")
            try:
                per_sm = int(cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
                    kernel.kernel.ptr, BLOCK, 0))
            except Exception:
                per_sm = 1
            blocks = max(1, per_sm) * (self._info["multiprocessors"] or 1)
            values = sweep_input(cp.arange(tile * 4, dtype=cp.int64)).astype(cp.float32)
            partial = cp.full(blocks * BLOCK, np.nan, dtype=cp.float32)
            passes = 2000
            args = (values, partial, np.uint32(passes))

            def run() -> None:
                kernel((blocks,), (BLOCK,), args)
                self._stream.synchronize()

            times = self.time(run, warmup=1, min_reps=min_reps, max_reps=max_reps, budget_s=budget_s)
            want = float(values.astype(cp.float64).sum()) * blocks * passes
            got = float(partial.astype(cp.float64).sum())
        nbytes = blocks * tile * 16 * passes
        return {"times_s": times, "bytes": nbytes, "rel_error": abs(got - want) / want,
                "blocks": blocks, "passes": passes}

    # -- matrix units (cuBLAS) ---------------------------------------------------------------------

    def matrix_units(self) -> tuple[str, ...]:
        cc = _parse_cc(self._info["compute_capability"]) or (0, 0)
        units = ["float16", "tf32", "float64"]
        if cc >= (8, 0):
            units.insert(1, "bfloat16")  # bf16 tensor cores from Ampere on
        if cc >= (7, 5):
            units.append("int8")
        return tuple(units)

    def matrix_sizes(self, quick: bool) -> tuple[int, ...]:
        return (4096, 8192) if quick else (2048, 4096, 8192, 12288, 16384)

    def gemm(self, unit: str, n: int):
        """n x n x n GEMM through cublasGemmEx (row-major C = A @ B as column-major B^T A^T)."""
        from cupy.cuda import cublas

        from gpuroof.matrix import Gemm, rel_error, sample_rows

        if unit not in GEMM_UNITS:
            raise UsageError(f"matrix unit {unit}: the CUDA backend has {', '.join(GEMM_UNITS)}")
        a_t, c_t, compute, in_store, out_store, alpha_t = GEMM_UNITS[unit]
        cp = self._cp
        itemsize_in, itemsize_out = np.dtype(in_store).itemsize, np.dtype(out_store).itemsize
        need = 2 * n * n * itemsize_in + n * n * itemsize_out
        if need > 0.8 * self.free_memory_bytes():
            raise MemoryError(f"GEMM {n}: needs {_gib(need)}")
        rng = np.random.default_rng(n)
        with self._device:
            if unit == "int8":
                a64 = rng.integers(-8, 8, (n, n)).astype(np.float64)
                b64 = rng.integers(-8, 8, (n, n)).astype(np.float64)
                a, b = cp.asarray(a64.astype(np.int8)), cp.asarray(b64.astype(np.int8))
            else:
                a = cp.asarray(rng.uniform(-1, 1, (n, n)))
                b = cp.asarray(rng.uniform(-1, 1, (n, n)))
                if unit == "bfloat16":
                    a, b = bf16_bits_from_float64(cp, a), bf16_bits_from_float64(cp, b)
                    a64 = cp.asnumpy(float64_from_bf16_bits(cp, a))
                    b64 = cp.asnumpy(float64_from_bf16_bits(cp, b))
                else:
                    a, b = a.astype(in_store), b.astype(in_store)
                    a64, b64 = cp.asnumpy(a).astype(np.float64), cp.asnumpy(b).astype(np.float64)
                    if unit == "tf32":  # the reference sees what the tensor cores see
                        a64, b64 = _round_tf32(a64), _round_tf32(b64)
            c = cp.empty((n, n), dtype=out_store)
            self._stream.synchronize()
        alpha = np.ones(1, dtype=alpha_t)
        beta = np.zeros(1, dtype=alpha_t)
        handle = cp.cuda.device.get_cublas_handle()
        compute_type = getattr(cublas, compute)
        rows = sample_rows(n)

        def run() -> None:
            with self._device:
                cublas.gemmEx(handle, 0, 0, n, n, n, alpha.ctypes.data, b.data.ptr, CUDA_R[a_t], n,
                              a.data.ptr, CUDA_R[a_t], n, beta.ctypes.data, c.data.ptr, CUDA_R[c_t], n,
                              compute_type, -1)  # CUBLAS_GEMM_DEFAULT
                self._stream.synchronize()

        def check() -> float:
            got = c[rows]
            got = float64_from_bf16_bits(cp, got) if unit == "bfloat16" else got.astype(cp.float64)
            return rel_error(cp.asnumpy(got), a64[rows] @ b64)

        return Gemm(unit=unit, n=n, run=run, check=check, itemsize_in=itemsize_in,
                    itemsize_out=itemsize_out)

    def matrix_theoretical(self, sm_clock_mhz: float | None) -> dict[str, float | None]:
        table = MATRIX_FLOP_PER_SM_CLOCK.get(_parse_cc(self._info["compute_capability"]) or (-1, -1), {})
        sms = self._info["multiprocessors"]
        return {f"{u}-matrix": (table[u] * sms * sm_clock_mhz * 1e6 if u in table and sms and sm_clock_mhz
                                else None) for u in self.matrix_units()}

    # -- timing --------------------------------------------------------------------------------

    def time(self, fn: Callable[[], None], *, warmup: int, min_reps: int, max_reps: int,
             budget_s: float) -> np.ndarray:
        """Seconds per repetition, from CUDA events on the stream around each repetition.

        A sweep launch's `run` exposes `enqueue`; the events then bracket the kernel alone (the host
        waits after the end event). Any other callable is bracketed whole, which also counts the
        host's launch overhead between the events. Repeats until `budget_s` of wall time or
        `max_reps`, never fewer than `min_reps`.
        """
        if isinstance(fn, Launch):
            fn = fn.run
        if warmup < 0:
            raise UsageError(f"warmup {warmup}: must be >= 0")
        if min_reps < 1 or max_reps < min_reps:
            raise UsageError(f"min_reps {min_reps}, max_reps {max_reps}: need 1 <= min_reps <= max_reps")
        if budget_s < 0:
            raise UsageError(f"budget_s {budget_s}: must be >= 0")
        body = getattr(fn, "enqueue", fn)
        cp, stream = self._cp, self._stream
        times: list[float] = []
        with self._device:
            for _ in range(warmup):
                fn()
            start, end = cp.cuda.Event(), cp.cuda.Event()
            deadline = _time.perf_counter() + budget_s
            while len(times) < max_reps and (len(times) < min_reps or _time.perf_counter() < deadline):
                start.record(stream)
                body()
                end.record(stream)
                end.synchronize()
                times.append(cp.cuda.get_elapsed_time(start, end) * 1e-3)  # ms -> s
        return np.asarray(times, dtype=np.float64)

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
        self._kernels.clear()
        self._modules.clear()
        with self._device:
            self._cp.get_default_memory_pool().free_all_blocks()
