"""numba kernels of the CPU backend: the same sweep semantics as kernels/sweep.cu."""
from __future__ import annotations

import numba
from numba import njit, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic, overload

#: Bytes of independent lanes per chunk: 256 float32 or 128 float64 lanes, 16 AVX-512 registers
#: either way, enough independent chains to cover FMA latency (4 cycles) times two FMA pipes and
#: registers left for the constants. The innermost loops run over the lanes with a trip count that
#: is a compile-time constant per dtype, so LLVM turns them into vector FMAs.
CHUNK_BYTES = 1024
#: The most lanes of any dtype (float32): granules and the partial-sum buffer are sized by it.
LANES = CHUNK_BYTES // 4


def lanes_of(x):  # typed by the overload below: a compile-time constant per dtype
    raise NotImplementedError


@overload(lanes_of, inline="always")
def _lanes_of(x):
    n = CHUNK_BYTES * 8 // x.dtype.bitwidth
    return lambda x: n


@intrinsic
def _stack_ptr(typingctx, size, dtype):
    """A pointer to `size` elements of `dtype` on the stack (an LLVM alloca in the entry block)."""
    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype.dtype), size=args[0])
    return types.CPointer(dtype.dtype)(types.int64, dtype), codegen


@njit(inline="always")
def stack_lanes(x):
    """lanes_of(x) elements of x's dtype on the stack. Unlike an np.empty (heap) array, LLVM knows a stack array
    aliases neither input nor output, so the chains stay in registers between FMAs instead of
    being stored and reloaded per vector: that store capped the memory-bound points."""
    n = lanes_of(x)
    return numba.carray(_stack_ptr(n, x.dtype), (n,))


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def sweep_rw(x, out, fmas, a, b, nthreads, passes):
    """out[i] = f(x[i]), f applying `fmas` FMAs v = v*a + b; each thread owns a contiguous range,
    which it streams `passes` times (cache-sized working sets are timed over many passes)."""
    lanes = lanes_of(x)
    nchunks = x.size // lanes
    for t in prange(nthreads):
        acc = stack_lanes(x)
        c0 = t * nchunks // nthreads
        c1 = (t + 1) * nchunks // nthreads
        for _p in range(passes):
            for c in range(c0, c1):
                # Unsigned indices: numba skips its negative-index wraparound, which blocks vectorizing.
                base = uint64(c) * uint64(lanes)
                if fmas == 0:  # pure traffic: no staging through the chains
                    for j in range(lanes):
                        out[base + uint64(j)] = x[base + uint64(j)]
                    continue
                for j in range(lanes):
                    acc[j] = x[base + uint64(j)]
                for _ in range(fmas):
                    for j in range(lanes):
                        acc[j] = acc[j] * a + b
                for j in range(lanes):
                    out[base + uint64(j)] = acc[j]


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def sweep_ro(x, partial, fmas, a, b, nthreads, passes):
    """Read-only: partial[t, j] = sum of f(x[i]) over lane j of thread t's range and all passes."""
    lanes = lanes_of(x)
    nchunks = x.size // lanes
    for t in prange(nthreads):
        acc = stack_lanes(x)
        tot = stack_lanes(x)
        for j in range(lanes):
            tot[j] = 0
        c0 = t * nchunks // nthreads
        c1 = (t + 1) * nchunks // nthreads
        for _p in range(passes):
            for c in range(c0, c1):
                base = uint64(c) * uint64(lanes)
                if fmas == 0:  # pure traffic: sum straight from memory
                    for j in range(lanes):
                        tot[j] += x[base + uint64(j)]
                    continue
                for j in range(lanes):
                    acc[j] = x[base + uint64(j)]
                for _ in range(fmas):
                    for j in range(lanes):
                        acc[j] = acc[j] * a + b
                for j in range(lanes):
                    tot[j] += acc[j]
        for j in range(LANES):
            partial[t, j] = tot[j] if j < lanes else 0
