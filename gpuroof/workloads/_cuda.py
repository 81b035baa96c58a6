"""CUDA helpers of the workloads: kernels from kernels/*.cu, device arrays, cuBLAS GEMM; cupy via the backend.

Nothing here runs at import time, so gpuroof.workloads imports on machines without cupy; only a
CUDA runner calls into this module.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gpuroof.backends.cuda.kernels import COMPILE_OPTIONS, CUDA_TYPE as KERNEL_TYPES
from gpuroof.errors import MeasurementError
from gpuroof.workloads.base import Blocking, to_storage

#: C++ element type of each dtype in kernels/*.cu (bfloat16 data lives in uint16 arrays on the host).
CUDA_TYPE = KERNEL_TYPES  # the same C++ types as the sweep

#: cudaDataType values for cublasGemmEx (library_types.h).
_CUDA_R = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 14}
#: cublasComputeType_t: float32 accumulation for float32 and 16-bit data, float64 for float64.
_COMPUTE = {"float32": 68, "float16": 68, "bfloat16": 68, "float64": 70}
_CUBLAS_GEMM_DEFAULT = -1
_CUBLAS_OP_N = 0
_CUBLAS_DEFAULT_MATH = 0
_CUBLAS_POINTER_MODE_HOST = 0


_functions: dict[tuple[int, str, str], Any] = {}  # (device, file, name expression) -> kernel


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


def blocking(enqueue: Callable[[], None]) -> Blocking:
    """`enqueue` plus a wait on the current stream: blocking to call, events can wrap `enqueue` alone."""
    cp = cupy()

    def wait() -> None:
        cp.cuda.get_current_stream().synchronize()

    return Blocking(enqueue, wait)


def _cublas() -> Any:
    from gpuroof.backends.cuda.blas import cublas_module
    return cublas_module()


def gemm(a: Any, b: Any, c: Any, dtype: str) -> Callable[[], None]:
    """An enqueue function computing c = a @ b (row-major, C-contiguous 2-D) with cublasGemmEx.

    Every dtype goes through cublasGemmEx with an explicit compute type (float32 accumulation for
    float32 and 16-bit data, float64 for float64) and the handle's default math mode, so float32
    is a plain SGEMM on the FP32 FMA pipes whatever CUPY_TF32 says (the unit the workloads declare
    for it), and bfloat16 works on cupy versions without a bfloat16 dtype. 16-bit data runs on
    tensor cores (cuBLAS uses them for 16-bit inputs with float32 compute).
    """
    cp = cupy()
    cublas = _cublas()
    m, k = a.shape
    n = b.shape[1]
    t = _CUDA_R[dtype]
    scalar = np.float64 if dtype == "float64" else np.float32
    one, zero = np.ones(1, scalar), np.zeros(1, scalar)
    handle = cp.cuda.device.get_cublas_handle()
    compute, algo = _COMPUTE[dtype], _CUBLAS_GEMM_DEFAULT
    a_ptr, b_ptr, c_ptr = a.data.ptr, b.data.ptr, c.data.ptr

    def enqueue() -> None:
        # Row-major C = A B is column-major C^T = B^T A^T: swap the operands, no transposes.
        cublas.setPointerMode(handle, _CUBLAS_POINTER_MODE_HOST)
        cublas.setMathMode(handle, _CUBLAS_DEFAULT_MATH)
        cublas.gemmEx(handle, _CUBLAS_OP_N, _CUBLAS_OP_N, n, m, k, one.ctypes.data,
                      b_ptr, t, n, a_ptr, t, k, zero.ctypes.data, c_ptr, t, n, compute, algo)
    enqueue.keep = (one, zero, a, b, c)  # type: ignore[attr-defined]  # outlive every call
    return enqueue


def grid_1d(elements: int, block: int = 256) -> tuple[tuple[int], tuple[int]]:
    return ((elements + block - 1) // block,), (block,)
