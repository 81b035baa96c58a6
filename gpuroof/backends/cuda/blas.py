"""Matrix units through cuBLAS: one square cublasGemmEx per unit and size, enqueued, checked on sampled rows."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gpuroof.backends.cuda.kernels import bf16_bits_from_float64, float64_from_bf16_bits, round_tf32
from gpuroof.errors import UsageError

#: cudaDataType values (library_types.h) and cuBLAS GEMM settings per matrix unit:
#: (input type, output type, compute type name in cupy's cublas module, numpy input storage,
#: numpy output storage, alpha dtype).
CUDA_R = {"16F": 2, "16BF": 14, "32F": 0, "64F": 1, "8I": 3, "32I": 10}
GEMM_UNITS = {
    "float16": ("16F", "16F", "CUBLAS_COMPUTE_32F", "float16", "float16", "float32"),
    "bfloat16": ("16BF", "16BF", "CUBLAS_COMPUTE_32F", "uint16", "uint16", "float32"),
    "tf32": ("32F", "32F", "CUBLAS_COMPUTE_32F_FAST_TF32", "float32", "float32", "float32"),
    "float64": ("64F", "64F", "CUBLAS_COMPUTE_64F", "float64", "float64", "float64"),
    "int8": ("8I", "32I", "CUBLAS_COMPUTE_32I", "int8", "int32", "int32"),
}

#: cuBLAS operations (column-major: transa, transb) per unit. int8 and tf32 run as TN, the layout
#: cuBLAS's Hopper and Ampere tensor-op kernels for them are built for (int8 IMMA requires it);
#: the others as NN. The layout is recorded with every sample.
GEMM_LAYOUT = {"float16": "NN", "bfloat16": "NN", "tf32": "TN", "float64": "NN", "int8": "TN"}
_OP = {"N": 0, "T": 1}


def cublas_module() -> Any:
    """cupy's cuBLAS bindings (cupy_backends in cupy 13+, cupy.cuda before)."""
    try:
        from cupy_backends.cuda.libs import cublas
    except ImportError:
        from cupy.cuda import cublas
    return cublas


def gemm_operands(layout: str) -> tuple[int, int, bool]:
    """(transa, transb, b_transposed) of row-major C = A B as column-major C^T = op(B') A^T.

    NN passes B as stored. TN passes B^T stored row-major (column-major B), read with op T, which
    is the same product: the reference A @ B holds for both.
    """
    if layout not in ("NN", "TN"):
        raise UsageError(f"GEMM layout {layout}: allowed NN, TN")
    return _OP[layout[0]], _OP[layout[1]], layout == "TN"


def gemm(cp: Any, device: Any, wait: Callable[[], None], free_bytes: int, unit: str, n: int):
    """n x n x n GEMM of `unit` through cublasGemmEx; its `run` exposes `enqueue` for event timing."""
    from gpuroof.backends.base import Blocking, fill_value, unwritten
    from gpuroof.matrix import Gemm, rel_error, sample_rows

    if unit not in GEMM_UNITS:
        raise UsageError(f"matrix unit {unit}: the CUDA backend has {', '.join(GEMM_UNITS)}")
    a_t, c_t, compute, in_store, out_store, alpha_t = GEMM_UNITS[unit]
    layout = GEMM_LAYOUT[unit]
    transa, transb, b_transposed = gemm_operands(layout)
    itemsize_in, itemsize_out = np.dtype(in_store).itemsize, np.dtype(out_store).itemsize
    need = 3 * n * n * itemsize_in + n * n * itemsize_out  # A, B, B^T while it is made, C
    if need > 0.8 * free_bytes:
        raise MemoryError(f"GEMM {n}: needs {need / 2**30:.2f} GiB")
    rng = np.random.default_rng(n)
    with device:
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
                    a64, b64 = round_tf32(a64), round_tf32(b64)
        if b_transposed:
            b = cp.ascontiguousarray(b.T)
        c = cp.full((n, n), fill_value(out_store), dtype=out_store)  # unwritten elements fail the check
        wait()
    alpha = np.ones(1, dtype=alpha_t)
    beta = np.zeros(1, dtype=alpha_t)
    handle = cp.cuda.device.get_cublas_handle()
    cublas = cublas_module()
    compute_type = getattr(cublas, compute)
    rows = sample_rows(n)

    def enqueue() -> None:
        with device:
            cublas.gemmEx(handle, transa, transb, n, n, n, alpha.ctypes.data, b.data.ptr, CUDA_R[a_t], n,
                          a.data.ptr, CUDA_R[a_t], n, beta.ctypes.data, c.data.ptr, CUDA_R[c_t], n,
                          compute_type, -1)  # CUBLAS_GEMM_DEFAULT

    def setup() -> None:  # once per timed window: alpha and beta are host pointers
        cublas.setPointerMode(handle, 0)  # CUBLAS_POINTER_MODE_HOST
        cublas.setMathMode(handle, 0)  # CUBLAS_DEFAULT_MATH: the compute type alone picks the unit

    def check() -> float:
        if unwritten(cp, c):
            return float("inf")
        got = c[rows]
        got = float64_from_bf16_bits(cp, got) if unit == "bfloat16" else got.astype(cp.float64)
        return rel_error(cp.asnumpy(got), a64[rows] @ b64)

    return Gemm(unit=unit, n=n, run=Blocking(enqueue, wait, setup), check=check, itemsize_in=itemsize_in,
                itemsize_out=itemsize_out, layout=layout, output=c)
