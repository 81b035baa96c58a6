"""CUDA helpers of the workloads: kernels from kernels/*.cu, device arrays, GEMMs; cupy and cuBLAS via the backend.

Nothing here runs at import time, so gpuroof.workloads imports on machines without cupy; only a
CUDA runner calls into this module.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gpuroof.backends.cuda.blas import gemm_call, handle_modes
from gpuroof.backends.cuda.kernels import COMPILE_OPTIONS, CUDA_TYPE as KERNEL_TYPES
from gpuroof.errors import MeasurementError
from gpuroof.workloads.base import Blocking, to_storage

#: C++ element type of each dtype in kernels/*.cu (bfloat16 data lives in uint16 arrays on the host).
CUDA_TYPE = KERNEL_TYPES  # the same C++ types as the sweep

_functions: dict[tuple[int, str, str], Any] = {}  # (device, file, name expression) -> kernel

#: Kernels one cuBLAS GEMM call may enqueue: its own and, where the library splits K, a reduction.
#: A count for the launch-queue cap of a timed window (an upper bound, not a measurement).
GEMM_KERNELS = 2
#: The same for one cuDNN convolution call (an implicit-GEMM algorithm enqueues one kernel, others
#: a transform before and after it).
CUDNN_KERNELS = 3


def cupy() -> Any:
    """cupy, imported by the CUDA backend package (the only place that imports it)."""
    from gpuroof.backends.cuda.device import import_cupy
    return import_cupy()


def function(file: str, name_expression: str) -> Any:
    """The kernel `name_expression` (e.g. 'gemm_tiled<float, ...>') of kernels/`file`, compiled once
    per process by NVRTC (and cached on disk by cupy)."""
    cp = cupy()
    key = (cp.cuda.Device().id, file, name_expression)
    fn = _functions.get(key)
    if fn is None:
        from gpuroof.backends.cuda.kernels import kernel_source

        try:
            mod = cp.RawModule(code=kernel_source(file), options=COMPILE_OPTIONS,
                               name_expressions=[name_expression])
            fn = mod.get_function(name_expression)
        except Exception as exc:  # CompileException and driver errors
            raise MeasurementError(f"compiling {name_expression} from kernels/{file} failed: {exc}") from exc
        _functions[key] = fn
    return fn


def device_array(values: np.ndarray, dtype: str) -> Any:
    """float64 host values -> a C-contiguous device array in the dtype's storage form."""
    return cupy().asarray(to_storage(values, dtype))


def empty(shape: tuple, dtype: str, fill_nan: bool = True) -> Any:
    """A device array; filled with NaN so an element a kernel fails to write can never pass the check."""
    cp = cupy()
    if dtype == "bfloat16":
        return cp.full(shape, 0x7FC0, dtype=cp.uint16) if fill_nan else cp.empty(shape, cp.uint16)
    return cp.full(shape, np.nan, dtype=dtype) if fill_nan else cp.empty(shape, dtype)


def host(arr: Any) -> np.ndarray:
    """A device array copied to the host, still in storage form (the bench converts to float64)."""
    return cupy().asnumpy(arr)


def blocking(enqueue: Callable[[], None], setup: Callable[[], None] | None = None,
             kernels: int = 1) -> Blocking:
    """`enqueue` plus a wait on the current stream: blocking to call, events can wrap `enqueue` alone.
    `setup` (cuBLAS handle modes) runs once before each timed window, not once per GEMM. `kernels`:
    how many kernels one call of `enqueue` puts on the stream (hostbound.kernels_per_call), so a
    timed window caps its kernels, not its calls."""
    cp = cupy()

    def wait() -> None:
        cp.cuda.get_current_stream().synchronize()

    run = Blocking(enqueue, wait, setup)
    run.kernels_per_call = int(kernels)  # type: ignore[attr-defined]
    return run


def cublas_modes() -> Callable[[], None]:
    """The cuBLAS handle's modes every GEMM here relies on (backends.cuda.blas.handle_modes), set by
    the timer once per window (`Blocking.setup`)."""
    return handle_modes(cupy())


def gemm(a: Any, b: Any, c: Any, dtype: str) -> Callable[[], None]:
    """An enqueue function computing c = a @ b (row-major, C-contiguous) as ONE cuBLAS call
    (backends.cuda.blas.gemm_call: cublasGemmEx, or one strided-batched call for a 3-D c, with
    stride 0 for a 2-D operand shared by the batch). float32 is a plain SGEMM on the FP32 FMA pipes
    (the unit the workloads declare for it); 16-bit data runs on tensor cores with float32
    accumulation."""
    return gemm_call(cupy(), a, b, c, dtype)


def grid_1d(elements: int, block: int = 256) -> tuple[tuple[int], tuple[int]]:
    return ((elements + block - 1) // block,), (block,)
