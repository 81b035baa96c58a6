"""GEMM C = A B (row-major): BLAS on the CPU; cuBLAS and a tiled shared-memory kernel on CUDA.

Shapes run from skinny (m = 1: a GEMV, bound by reading B) to large square (compute-bound). A is
counted as the input, B as the weights, C as the output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpuroof.backends.base import ITEMSIZE
from gpuroof.workloads.base import (Prepared, Traffic, Workload, accumulate_unit, check_dtype,
                                    check_impl, check_positive, library_unit, random_inputs,
                                    sample_rows, to_storage, tolerance)

IMPLS = ("blas", "cublas", "tiled")

#: kernels/gemm.cu tile: BM x BN outputs per block of (BM/TM) x (BN/TN) threads, BK deep.
TILE = {"BM": 64, "BN": 64, "BK": 16, "TM": 4, "TN": 4}

#: Output rows the float64 reference computes for a tall case (evenly spaced, first and last).
REF_ROWS = 256


@dataclass(frozen=True)
class GemmParams:
    m: int
    n: int
    k: int
    dtype: str = "float32"
    impl: str = "blas"

    def __post_init__(self) -> None:
        check_positive("gemm", m=self.m, n=self.n, k=self.k)
        check_dtype("gemm", self.dtype)
        check_impl("gemm", self.impl, IMPLS)

    @property
    def label(self) -> str:
        return f"{self.impl} m={self.m} n={self.n} k={self.k}"


def flops(p: GemmParams) -> int:
    return 2 * p.m * p.n * p.k


def traffic(p: GemmParams) -> Traffic:
    s = ITEMSIZE[p.dtype]
    return Traffic(input_bytes=p.m * p.k * s, weight_bytes=p.k * p.n * s, output_bytes=p.m * p.n * s)


def unit(p: GemmParams) -> str:
    """Library GEMMs: the library's unit; the tiled kernel does scalar FMAs (float32 for 16-bit)."""
    if p.impl == "tiled":
        return accumulate_unit(p.dtype)
    return library_unit(p.dtype, gpu=p.impl == "cublas")


def tol(p: GemmParams) -> float:
    return tolerance(p.dtype, p.k)


def inputs(p: GemmParams, rng: np.random.Generator) -> dict:
    return {"a": random_inputs(rng, p.dtype, (p.m, p.k)), "b": random_inputs(rng, p.dtype, (p.k, p.n))}


def reference(p: GemmParams, x: dict) -> tuple:
    rows = sample_rows(p.m, REF_ROWS)
    return (rows, slice(None)), x["a"][rows] @ x["b"]


def device_bytes(p: GemmParams) -> int:
    return traffic(p).total


# ---------------------------------------------------------------------------------------------
# runners
# ---------------------------------------------------------------------------------------------

def _cpu_blas(backend, p: GemmParams, x: dict) -> Prepared:
    a, b = to_storage(x["a"], p.dtype), to_storage(x["b"], p.dtype)
    c = np.full((p.m, p.n), np.nan, dtype=a.dtype)

    def run() -> None:
        np.matmul(a, b, out=c)
    return Prepared(run=run, output=lambda: c, keep=[a, b, c])


def cuda_kernels(p: GemmParams) -> int:
    """Kernels one call of the CUDA runner of `p.impl` enqueues: one cuBLAS GEMM's, or the tiled kernel."""
    from gpuroof.workloads._cuda import GEMM_KERNELS
    return GEMM_KERNELS if p.impl == "cublas" else 1


def _cuda_cublas(backend, p: GemmParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cuda

    a, b = _cuda.device_array(x["a"], p.dtype), _cuda.device_array(x["b"], p.dtype)
    c = _cuda.empty((p.m, p.n), p.dtype)
    enqueue = _cuda.gemm(a, b, c, p.dtype)
    return Prepared(run=_cuda.blocking(enqueue, _cuda.cublas_modes(), cuda_kernels(p)),
                    output=lambda: _cuda.host(c), keep=[a, b, c, enqueue])


def tiled_name(dtype: str) -> str:
    t = TILE
    return f"gemm_tiled<{_cuda_type(dtype)}, {t['BM']}, {t['BN']}, {t['BK']}, {t['TM']}, {t['TN']}>"


def _cuda_type(dtype: str) -> str:
    from gpuroof.workloads._cuda import CUDA_TYPE
    return CUDA_TYPE[dtype]


def _cuda_tiled(backend, p: GemmParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cuda

    a, b = _cuda.device_array(x["a"], p.dtype), _cuda.device_array(x["b"], p.dtype)
    c = _cuda.empty((p.m, p.n), p.dtype)
    kernel = _cuda.function("gemm.cu", tiled_name(p.dtype))
    t = TILE
    grid = ((p.n + t["BN"] - 1) // t["BN"], (p.m + t["BM"] - 1) // t["BM"])
    block = ((t["BM"] // t["TM"]) * (t["BN"] // t["TN"]),)
    args = (a, b, c, np.int32(p.m), np.int32(p.n), np.int32(p.k))

    def enqueue() -> None:
        kernel(grid, block, args)
    return Prepared(run=_cuda.blocking(enqueue), output=lambda: _cuda.host(c),
                    keep=[a, b, c], graph=True)


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------

def cases(size: str, backend: str, cache_bytes: int = 0) -> list[GemmParams]:
    if backend == "cpu":
        shapes = {
            "small": [(1, 2048, 2048), (16, 2048, 2048), (128, 1024, 1024), (1024, 1024, 1024)],
            "default": [(1, 4096, 4096), (16, 4096, 4096), (128, 2048, 2048), (512, 2048, 2048),
                        (2048, 2048, 2048)],
            "large": [(1, 8192, 8192), (16, 8192, 8192), (256, 4096, 4096), (2048, 2048, 2048),
                      (4096, 4096, 4096)],
        }[size]
        return [GemmParams(m, n, k, "float32", "blas") for m, n, k in shapes]
    shapes = {
        "small": [(1, 4096, 4096), (64, 4096, 4096), (1024, 1024, 1024), (4096, 4096, 4096)],
        "default": [(1, 8192, 8192), (16, 8192, 8192), (256, 8192, 8192), (2048, 2048, 2048),
                    (8192, 8192, 8192)],
        "large": [(1, 16384, 16384), (64, 16384, 16384), (4096, 4096, 4096), (8192, 8192, 8192),
                  (16384, 16384, 16384)],
    }[size]
    out = []
    for m, n, k in shapes:
        out += [GemmParams(m, n, k, d, "cublas") for d in ("float32", "float16", "bfloat16")]
        out += [GemmParams(m, n, k, d, "tiled") for d in ("float32", "float16")]
    return out


GEMM = Workload(
    name="gemm", doc=__doc__.splitlines()[0], params=GemmParams, flops=flops, traffic=traffic,
    unit=unit, tolerance=tol, inputs=inputs, reference=reference,
    runners={"cpu": {"blas": _cpu_blas}, "cuda": {"cublas": _cuda_cublas, "tiled": _cuda_tiled}},
    cases=cases, device_bytes=device_bytes,
)
