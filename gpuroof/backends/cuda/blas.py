"""cuBLAS, once: the type table, the handle's modes, and one GEMM call for row-major operands.

Both users go through `gemm_call`: the matrix-unit ceilings (`gemm`: one square cublasGemmEx per unit
and size, checked on sampled rows) and the workloads (GEMM, the conv's im2col, the LSTM gates, the
MLP layers; a batch is one cublasGemmStridedBatchedEx).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gpuroof.backends.base import (Blocking, Gemm, bf16_bits_from_float64, fill_value, float64_from_bf16_bits,
                                   rel_error, sample_rows, unwritten)
from gpuroof.backends.cuda.kernels import round_tf32
from gpuroof.errors import UsageError

#: cudaDataType_t (library_types.h) of each element type handed to cuBLAS.
DATA_TYPE = {"float32": 0, "float64": 1, "float16": 2, "int8": 3, "int32": 10, "bfloat16": 14}
#: cublasComputeType_t (cublas_api.h).
COMPUTE_32F, COMPUTE_64F, COMPUTE_32I, COMPUTE_32F_FAST_TF32 = 68, 70, 72, 77
OP = {"N": 0, "T": 1}  # cublasOperation_t
GEMM_DEFAULT = -1  # cublasGemmAlgo_t: the library's heuristic
DEFAULT_MATH = 0  # cublasMath_t: the compute type alone picks the unit (CUPY_TF32 cannot turn SGEMM into TF32)
POINTER_MODE_HOST = 0  # alpha and beta are host pointers


@dataclass(frozen=True)
class GemmType:
    """What one kind of GEMM hands cuBLAS: element types, compute type, the scalars' numpy type."""

    inputs: str
    output: str
    compute: int
    scalar: str

    @property
    def storage_in(self) -> str:  # numpy storage of A and B (bfloat16 lives in uint16)
        return "uint16" if self.inputs == "bfloat16" else self.inputs

    @property
    def storage_out(self) -> str:
        return "uint16" if self.output == "bfloat16" else self.output


#: Every GEMM gpuroof runs, by name: a workload's dtype (float32 is a plain SGEMM on the FMA pipes,
#: 16-bit data runs on tensor cores with float32 accumulation) or a matrix unit (tf32, int8).
GEMM_TYPES = {
    "float16": GemmType("float16", "float16", COMPUTE_32F, "float32"),
    "bfloat16": GemmType("bfloat16", "bfloat16", COMPUTE_32F, "float32"),
    "float32": GemmType("float32", "float32", COMPUTE_32F, "float32"),
    "tf32": GemmType("float32", "float32", COMPUTE_32F_FAST_TF32, "float32"),
    "float64": GemmType("float64", "float64", COMPUTE_64F, "float64"),
    "int8": GemmType("int8", "int32", COMPUTE_32I, "int32"),
}

#: The matrix units and the cuBLAS operations (column-major: transa, transb) each is timed with.
#: int8 and tf32 run as TN, the layout cuBLAS's Hopper and Ampere tensor-op kernels for them are
#: built for (int8 IMMA requires it); the others as NN. The layout is recorded with every sample.
GEMM_LAYOUT = {"float16": "NN", "bfloat16": "NN", "tf32": "TN", "float64": "NN", "int8": "TN"}


def cublas_module() -> Any:
    """cupy's cuBLAS bindings (cupy_backends in cupy 13+, cupy.cuda before)."""
    try:
        from cupy_backends.cuda.libs import cublas
    except ImportError:
        from cupy.cuda import cublas
    return cublas


def handle_modes(cp: Any) -> Callable[[], None]:
    """Sets what every GEMM here relies on, on the current device's cuBLAS handle: host pointers
    for alpha and beta, and the default math mode. Two library calls: the timer makes them once
    per window (`Blocking.setup`), not once per GEMM."""
    cublas = cublas_module()
    handle = cp.cuda.device.get_cublas_handle()

    def setup() -> None:
        cublas.setPointerMode(handle, POINTER_MODE_HOST)
        cublas.setMathMode(handle, DEFAULT_MATH)
    return setup


def gemm_operands(layout: str) -> tuple[int, int, bool]:
    """(transa, transb, b_transposed) of row-major C = A B as column-major C^T = op(B') A^T.

    NN passes B as stored. TN passes B^T stored row-major (column-major B), read with op T, which
    is the same product: the reference A @ B holds for both.
    """
    if layout not in ("NN", "TN"):
        raise UsageError(f"GEMM layout {layout}: allowed NN, TN")
    return OP[layout[0]], OP[layout[1]], layout == "TN"


def gemm_strides(a_shape: tuple, b_shape: tuple, c_shape: tuple,
                 b_transposed: bool = False) -> tuple[int, int, int, int, int, int]:
    """(m, n, k, batch, stride_a, stride_b) in elements of row-major C[i] = A[i] @ B[i].

    A, B and C are C-contiguous, 2-D or 3-D (a leading batch dimension); a 2-D A or B is shared by
    every batch entry (stride 0: the conv's weights); C's stride is m*n. With `b_transposed` B is
    stored as B^T (n x k). Raises ValueError on shapes that do not multiply.
    """
    batch = c_shape[0] if len(c_shape) == 3 else 1
    m, n = c_shape[-2:]
    k = a_shape[-1]
    b_rows_cols = tuple(b_shape[-2:][::-1]) if b_transposed else tuple(b_shape[-2:])
    if tuple(a_shape[-2:]) != (m, k) or b_rows_cols != (k, n):
        raise ValueError(f"GEMM shapes {a_shape} @ {b_shape}{' (stored transposed)' if b_transposed else ''}"
                         f" -> {c_shape} do not multiply")
    for name, shape in (("A", a_shape), ("B", b_shape)):
        if len(shape) == 3 and shape[0] != batch:
            raise ValueError(f"GEMM {name} has {shape[0]} batch entries, C has {batch}")
    stride_a = m * k if len(a_shape) == 3 else 0
    stride_b = k * n if len(b_shape) == 3 else 0
    return m, n, k, batch, stride_a, stride_b


def gemm_call(cp: Any, a: Any, b: Any, c: Any, kind: str, layout: str = "NN") -> Callable[[], None]:
    """An enqueue function computing row-major c = a @ b (C-contiguous device arrays) as ONE cuBLAS
    call of `kind` (a GEMM_TYPES name), on the current device's handle.

    Row-major C = A B is column-major C^T = B^T A^T: the operands are swapped, so NN needs no
    transpose; with layout TN, `b` holds B^T (row-major) and is read with op T. 2-D operands:
    cublasGemmEx. A 3-D c (a batch): cublasGemmStridedBatchedEx, with stride 0 for a 2-D a or b
    shared by the whole batch (a batch of images is one call). The handle's modes are not set
    here: `handle_modes` is the window's setup.
    """
    types = GEMM_TYPES[kind]
    transa, transb, b_transposed = gemm_operands(layout)
    m, n, k, batch, stride_a, stride_b = gemm_strides(a.shape, b.shape, c.shape, b_transposed)
    cublas = cublas_module()
    handle = cp.cuda.device.get_cublas_handle()
    t_in, t_out = DATA_TYPE[types.inputs], DATA_TYPE[types.output]
    one, zero = np.ones(1, types.scalar), np.zeros(1, types.scalar)
    lda = k if b_transposed else n  # cuBLAS's A is our B
    a_ptr, b_ptr, c_ptr = a.data.ptr, b.data.ptr, c.data.ptr
    compute = types.compute

    if len(c.shape) == 2:
        def enqueue() -> None:
            cublas.gemmEx(handle, transa, transb, n, m, k, one.ctypes.data, b_ptr, t_in, lda, a_ptr, t_in, k,
                          zero.ctypes.data, c_ptr, t_out, n, compute, GEMM_DEFAULT)
    else:
        def enqueue() -> None:
            cublas.gemmStridedBatchedEx(handle, transa, transb, n, m, k, one.ctypes.data, b_ptr, t_in, lda,
                                        stride_b, a_ptr, t_in, k, stride_a, zero.ctypes.data, c_ptr, t_out, n,
                                        m * n, batch, compute, GEMM_DEFAULT)
    enqueue.keep = (one, zero, a, b, c)  # type: ignore[attr-defined]  # outlive every call
    return enqueue


def gemm(cp: Any, on_stream: Callable[[], Any], wait: Callable[[], None], free_bytes: int, unit: str,
         n: int) -> Gemm:
    """n x n x n GEMM of matrix unit `unit`; its `run` exposes `enqueue` for event timing.

    `on_stream()` makes the backend's device and stream current (timing.OwnStream.active): the
    operands are made there and every GEMM is enqueued there (CuPy sets the cuBLAS handle to the
    current stream before each call), and `wait` waits on that same stream."""
    if unit not in GEMM_LAYOUT:
        raise UsageError(f"matrix unit {unit}: the CUDA backend has {', '.join(GEMM_LAYOUT)}")
    types = GEMM_TYPES[unit]
    layout = GEMM_LAYOUT[unit]
    itemsize_in, itemsize_out = np.dtype(types.storage_in).itemsize, np.dtype(types.storage_out).itemsize
    need = 3 * n * n * itemsize_in + n * n * itemsize_out  # A, B, B^T while it is made, C
    if need > 0.8 * free_bytes:
        raise MemoryError(f"GEMM {n}: needs {need / 2**30:.2f} GiB")
    rng = np.random.default_rng(n)
    with on_stream():
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
                a, b = a.astype(types.storage_in), b.astype(types.storage_in)
                a64, b64 = cp.asnumpy(a).astype(np.float64), cp.asnumpy(b).astype(np.float64)
                if unit == "tf32":  # the reference sees what the tensor cores see
                    a64, b64 = round_tf32(a64), round_tf32(b64)
        if gemm_operands(layout)[2]:
            b = cp.ascontiguousarray(b.T)
        c = cp.full((n, n), fill_value(types.storage_out), dtype=types.storage_out)  # unwritten elements fail
        call = gemm_call(cp, a, b, c, unit, layout)
        modes = handle_modes(cp)
        wait()
    rows = sample_rows(n)

    def enqueue() -> None:
        with on_stream():
            call()

    def check() -> float:
        if unwritten(cp, c):
            return float("inf")
        got = c[rows]
        got = float64_from_bf16_bits(cp, got) if unit == "bfloat16" else got.astype(cp.float64)
        return rel_error(cp.asnumpy(got), a64[rows] @ b64)

    return Gemm(unit=unit, n=n, run=Blocking(enqueue, wait, modes), check=check, itemsize_in=itemsize_in,
                itemsize_out=itemsize_out, layout=layout, output=c)
