"""STREAM triad a = b + q c: the memory-slope anchor (1 FMA per 3 elements moved).

The three arrays together are at least 8x the last-level cache (and 256 MiB), so each launch
streams from DRAM and the point measures the DRAM roof, as the sweep's bandwidth points do.

On the CPU two implementations run: `numba-nt` writes `a` with streaming (non-temporal) stores, as
tuned STREAM builds do, and is the anchor; `numba` uses plain stores, so the CPU reads every line of
`a` before writing it (write-allocate) and DRAM moves 4 arrays for the 3 the compulsory convention
counts: the gap between the two rows is that traffic. On a GPU a full-line write needs no read.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpuroof.backends.base import ITEMSIZE
from gpuroof.errors import UsageError
from gpuroof.workloads.base import (Prepared, Traffic, Workload, check_dtype, check_impl,
                                    check_positive, to_float64, to_storage, tolerance)

IMPLS = ("numba-nt", "numba", "cupy")

#: The triad's scalar, passed at run time (exact in every dtype).
Q = 0.5

#: Elements the float64 check compares (the whole array when it is smaller).
REF_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class StreamParams:
    elements: int
    dtype: str = "float32"
    impl: str = "numba"

    def __post_init__(self) -> None:
        check_positive("stream", elements=self.elements)
        if self.impl == "numba-nt" and self.dtype == "float16":
            raise UsageError("stream: impl=numba-nt has float32 and float64 (AVX-512 streaming stores)")
        check_dtype("stream", self.dtype, ("float64", "float32", "float16"))
        check_impl("stream", self.impl, IMPLS)

    @property
    def label(self) -> str:
        mib = 3 * self.elements * ITEMSIZE[self.dtype] / 2 ** 20
        return f"{self.impl} triad n={self.elements} ({mib:.0f} MiB)"


def flops(p: StreamParams) -> int:
    return 2 * p.elements


def traffic(p: StreamParams) -> Traffic:
    s = ITEMSIZE[p.dtype]
    return Traffic(input_bytes=2 * p.elements * s, weight_bytes=0, output_bytes=p.elements * s)


def unit(p: StreamParams) -> str:
    return p.dtype


def tol(p: StreamParams) -> float:
    return tolerance(p.dtype, 1)


def inputs(p: StreamParams, rng: np.random.Generator) -> dict:
    """b and c in the dtype's storage form, drawn as float32 and scaled in place, then rounded to
    the dtype (exact for float32 and float64): the arrays are 8x the last-level cache, so each float64
    copy or temporary would be gigabytes of pages touched for nothing. The runners copy them as they
    are; the reference reads its samples as float64."""
    out = {}
    for name in ("b", "c"):
        v = rng.random(p.elements, dtype=np.float32)
        v *= 2  # exact, as is the - 1 (multiples of 2^-23 in [-1, 1))
        v -= 1
        out[name] = to_storage(v, p.dtype)
    return out


def _sample(n: int) -> np.ndarray | slice:
    if n <= REF_ELEMENTS:
        return slice(None)
    return np.linspace(0, n - 1, REF_ELEMENTS).round().astype(np.int64)


def reference(p: StreamParams, x: dict) -> tuple:
    idx = _sample(p.elements)
    return (idx,), to_float64(x["b"][idx], p.dtype) + Q * to_float64(x["c"][idx], p.dtype)


def device_bytes(p: StreamParams) -> int:
    return traffic(p).total


def _cpu_arrays(backend, p: StreamParams, x: dict) -> tuple:
    """a, b, c from the backend's page pool (page-aligned, so on the non-temporal stores' vector
    boundary): the sweep's pages, touched once per process, not gigabytes faulted in per case."""
    a, b, c = (backend.empty(p.elements, p.dtype) for _ in range(3))
    b[:], c[:] = to_storage(x["b"], p.dtype), to_storage(x["c"], p.dtype)
    a[:] = np.nan
    return a, b, c, b.dtype.type(Q)


def _cpu_numba(backend, p: StreamParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cpu_kernels as k

    a, b, c, q = _cpu_arrays(backend, p, x)

    def run() -> None:
        k.triad(a, b, c, q)
    return Prepared(run=run, output=lambda: a, keep=[a, b, c])


def _cpu_numba_nt(backend, p: StreamParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cpu_kernels as k

    a, b, c, q = _cpu_arrays(backend, p, x)
    threads = getattr(backend, "threads", 1)

    def run() -> None:
        k.triad_nt(a, b, c, q, threads)
    return Prepared(run=run, output=lambda: a, keep=[a, b, c])


def _cuda_cupy(backend, p: StreamParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cuda

    cp = _cuda.cupy()
    b, c = _cuda.device_array(x["b"], p.dtype), _cuda.device_array(x["c"], p.dtype)
    a = _cuda.empty((p.elements,), p.dtype)
    triad = cp.ElementwiseKernel("T b, T c, T q", "T a", "a = b + q * c", "gpuroof_triad")
    q = np.dtype(p.dtype).type(Q)

    def enqueue() -> None:
        triad(b, c, q, a)
    return Prepared(run=_cuda.blocking(enqueue), output=lambda: _cuda.host(a),
                    keep=[a, b, c], graph=True)


def elements_for(cache_bytes: int, dtype: str, min_bytes: int) -> int:
    """Elements per array so that the three arrays hold ≥ 8x the cache and ≥ `min_bytes`."""
    total = max(8 * cache_bytes, min_bytes)
    n = -(-total // (3 * ITEMSIZE[dtype]))
    return int(-(-n // 4096) * 4096)


def cases(size: str, backend: str, cache_bytes: int = 0) -> list[StreamParams]:
    if backend == "cpu":
        n = elements_for(cache_bytes, "float32", 256 << 20)
        return [StreamParams(n, "float32", "numba-nt"), StreamParams(n, "float32", "numba")]
    min_bytes = {"small": 512 << 20, "default": 1 << 30, "large": 4 << 30}[size]
    return [StreamParams(elements_for(cache_bytes, d, min_bytes), d, "cupy") for d in ("float32", "float16")]


STREAM = Workload(
    name="stream", doc=__doc__.splitlines()[0], params=StreamParams, flops=flops, traffic=traffic,
    unit=unit, tolerance=tol, inputs=inputs, reference=reference,
    runners={"cpu": {"numba-nt": _cpu_numba_nt, "numba": _cpu_numba}, "cuda": {"cupy": _cuda_cupy}},
    cases=cases,
    device_bytes=device_bytes,
)
