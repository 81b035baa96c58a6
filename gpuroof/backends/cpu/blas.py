"""Matrix units on a CPU: square float32/float64 GEMMs through numpy's BLAS, checked on sampled rows."""
from __future__ import annotations

import numpy as np

from gpuroof.backends.base import Gemm, rel_error, sample_rows, unwritten
from gpuroof.errors import UsageError


def cpu_gemm(unit: str, n: int) -> Gemm:
    """n×n float32/float64 GEMM through numpy's BLAS (all threads), checked on sampled rows."""
    if unit not in ("float32", "float64"):
        raise UsageError(f"matrix unit {unit}: the cpu backend has float32 and float64 (numpy BLAS)")
    rng = np.random.default_rng(n)
    a = rng.uniform(-1, 1, (n, n)).astype(unit)
    b = rng.uniform(-1, 1, (n, n)).astype(unit)
    c = np.full((n, n), np.nan, dtype=unit)  # an element the BLAS never writes fails the check
    rows = sample_rows(n)

    def run() -> None:
        np.matmul(a, b, out=c)

    def check() -> float:
        if unwritten(np, c):
            return float("inf")
        return rel_error(c[rows].astype(np.float64), a[rows].astype(np.float64) @ b.astype(np.float64))

    size = np.dtype(unit).itemsize
    return Gemm(unit=unit, n=n, run=run, check=check, itemsize_in=size, itemsize_out=size, output=c)
