"""numba kernels of the CPU backend: the same sweep semantics as kernels/sweep.cu."""
from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

#: Independent lanes per chunk. The innermost loops run over these with a constant trip count, so
#: LLVM turns them into vector FMAs; 256 lanes are 16 AVX-512 registers of float32 (32 of float64),
#: enough independent chains to cover FMA latency (4 cycles) times two FMA pipes.
LANES = 256


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def sweep_rw(x, out, fmas, a, b, nthreads, passes):
    """out[i] = f(x[i]), f applying `fmas` FMAs v = v*a + b; each thread owns a contiguous range,
    which it streams `passes` times (cache-sized working sets are timed over many passes)."""
    nchunks = x.size // LANES
    for t in prange(nthreads):
        acc = np.empty(LANES, x.dtype)
        c0 = t * nchunks // nthreads
        c1 = (t + 1) * nchunks // nthreads
        for _p in range(passes):
            for c in range(c0, c1):
                # Unsigned indices: numba skips its negative-index wraparound, which blocks vectorizing.
                base = uint64(c) * uint64(LANES)
                if fmas == 0:  # pure traffic: no staging through the chains
                    for j in range(LANES):
                        out[base + uint64(j)] = x[base + uint64(j)]
                    continue
                for j in range(LANES):
                    acc[j] = x[base + uint64(j)]
                for _ in range(fmas):
                    for j in range(LANES):
                        acc[j] = acc[j] * a + b
                for j in range(LANES):
                    out[base + uint64(j)] = acc[j]


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def sweep_ro(x, partial, fmas, a, b, nthreads, passes):
    """Read-only: partial[t, j] = sum of f(x[i]) over lane j of thread t's range and all passes."""
    nchunks = x.size // LANES
    for t in prange(nthreads):
        # One allocation for the chains (row 0) and the sums (row 1): LLVM then sees that they do
        # not alias and keeps both loops vectorized.
        st = np.zeros((2, LANES), x.dtype)
        c0 = t * nchunks // nthreads
        c1 = (t + 1) * nchunks // nthreads
        for _p in range(passes):
            for c in range(c0, c1):
                base = uint64(c) * uint64(LANES)
                if fmas == 0:  # pure traffic: sum straight from memory
                    for j in range(LANES):
                        st[1, j] += x[base + uint64(j)]
                    continue
                for j in range(LANES):
                    st[0, j] = x[base + uint64(j)]
                for _ in range(fmas):
                    for j in range(LANES):
                        st[0, j] = st[0, j] * a + b
                for j in range(LANES):
                    st[1, j] += st[0, j]
        for j in range(LANES):
            partial[t, j] = st[1, j]
