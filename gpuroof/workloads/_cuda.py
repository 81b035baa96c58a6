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


def blocking(enqueue: Callable[[], None], setup: Callable[[], None] | None = None) -> Blocking:
    """`enqueue` plus a wait on the current stream: blocking to call, events can wrap `enqueue` alone.
    `setup` (cuBLAS handle modes) runs once before each timed window, not once per GEMM."""
    cp = cupy()

    def wait() -> None:
        cp.cuda.get_current_stream().synchronize()

    return Blocking(enqueue, wait, setup)


def _cublas() -> Any:
    from gpuroof.backends.cuda.blas import cublas_module
    return cublas_module()


def cublas_modes() -> Callable[[], None]:
    """Sets what every GEMM here relies on, on the current device's cuBLAS handle: host pointers for
    alpha and beta, and the default math mode (float32 stays an SGEMM on the FP32 pipes whatever
    CUPY_TF32 says). Two library calls: the timer makes them once per window (`Blocking.setup`)."""
    cp = cupy()
    cublas = _cublas()
    handle = cp.cuda.device.get_cublas_handle()

    def setup() -> None:
        cublas.setPointerMode(handle, _CUBLAS_POINTER_MODE_HOST)
        cublas.setMathMode(handle, _CUBLAS_DEFAULT_MATH)
    return setup


def gemm_strides(a_shape: tuple, b_shape: tuple, c_shape: tuple) -> tuple[int, int, int, int, int, int]:
    """(m, n, k, batch, stride_a, stride_b) in elements of row-major C[i] = A[i] @ B[i].

    A, B and C are C-contiguous, 2-D or 3-D (a leading batch dimension); a 2-D A or B is shared by
    every batch entry (stride 0: the conv's weights); C's stride is m*n. Raises ValueError on shapes
    that do not multiply.
    """
    batch = c_shape[0] if len(c_shape) == 3 else 1
    m, n = c_shape[-2:]
    k = a_shape[-1]
    if a_shape[-2:] != (m, k) or b_shape[-2:] != (k, n):
        raise ValueError(f"GEMM shapes {a_shape} @ {b_shape} -> {c_shape} do not multiply")
    for name, shape in (("A", a_shape), ("B", b_shape)):
        if len(shape) == 3 and shape[0] != batch:
            raise ValueError(f"GEMM {name} has {shape[0]} batch entries, C has {batch}")
    stride_a = m * k if len(a_shape) == 3 else 0
    stride_b = k * n if len(b_shape) == 3 else 0
    return m, n, k, batch, stride_a, stride_b


def gemm(a: Any, b: Any, c: Any, dtype: str) -> Callable[[], None]:
    """An enqueue function computing c = a @ b (row-major, C-contiguous), ONE cuBLAS call.

    2-D operands: cublasGemmEx. A 3-D c (a batch): cublasGemmStridedBatchedEx, with stride 0 for a
    2-D a or b shared by the whole batch, so a batch of images is one call, not one per image.
    Every dtype has an explicit compute type (float32 accumulation for float32 and 16-bit data,
    float64 for float64); with the math mode `cublas_modes` sets, float32 is a plain SGEMM on the
    FP32 FMA pipes (the unit the workloads declare for it), and bfloat16 works on cupy versions
    without a bfloat16 dtype. 16-bit data runs on tensor cores (cuBLAS uses them for 16-bit inputs
    with float32 compute). The handle's modes are not set here: the runner's `setup` sets them
    once per window.
    """
    cp = cupy()
    cublas = _cublas()
    m, n, k, batch, stride_a, stride_b = gemm_strides(a.shape, b.shape, c.shape)
    t = _CUDA_R[dtype]
    scalar = np.float64 if dtype == "float64" else np.float32
    one, zero = np.ones(1, scalar), np.zeros(1, scalar)
    handle = cp.cuda.device.get_cublas_handle()
    compute, algo = _COMPUTE[dtype], _CUBLAS_GEMM_DEFAULT
    a_ptr, b_ptr, c_ptr = a.data.ptr, b.data.ptr, c.data.ptr
    op = _CUBLAS_OP_N

    # Row-major C = A B is column-major C^T = B^T A^T: swap the operands, no transposes.
    if len(c.shape) == 2:
        def enqueue() -> None:
            cublas.gemmEx(handle, op, op, n, m, k, one.ctypes.data, b_ptr, t, n, a_ptr, t, k,
                          zero.ctypes.data, c_ptr, t, n, compute, algo)
    else:
        def enqueue() -> None:
            cublas.gemmStridedBatchedEx(handle, op, op, n, m, k, one.ctypes.data, b_ptr, t, n, stride_b,
                                        a_ptr, t, k, stride_a, zero.ctypes.data, c_ptr, t, n, m * n,
                                        batch, compute, algo)
    enqueue.keep = (one, zero, a, b, c)  # type: ignore[attr-defined]  # outlive every call
    return enqueue


def grid_1d(elements: int, block: int = 256) -> tuple[tuple[int], tuple[int]]:
    return ((elements + block - 1) // block,), (block,)
