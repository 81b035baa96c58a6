"""The CPU's fill and check of the sweep buffers: parallel passes over a buffer, at memory speed.

The generic check (Backend.rw_error) makes float64 copies of every chunk on numpy, one thread,
several passes; over a DRAM buffer of 8x a server's last-level cache (GiBs) it took longer than
the timing it checks. Here each element is read once, on every core, in loops the compiler
vectorizes: an rw output is compared with its closed form element by element and the mismatches
counted (a NaN never equals anything, so an unwritten element is one); only when some differ is
the largest difference computed, in a second, scalar pass. (An ro launch's partial sums are checked
against base.input_sum, a closed form that reads nothing; an XOR-folded read's against
xor_read_total, which reads the input once.)
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuroof.backends.base import SWEEP_B
from gpuroof.backends.cpu import kernels  # noqa: F401  (configures the code generator first)


@njit(parallel=True, cache=True)
def _mismatches(x, out, n, odd, b, nthreads):
    """Elements of out[:n] that differ from f(x) (NaN included)."""
    count = np.zeros(nthreads, np.int64)
    for t in prange(nthreads):
        lo = t * n // nthreads
        hi = (t + 1) * n // nthreads
        c = 0
        if odd:
            for i in range(lo, hi):
                c += np.float64(out[i]) != b - np.float64(x[i])
        else:
            for i in range(lo, hi):
                c += np.float64(out[i]) != np.float64(x[i])
        count[t] = c
    return count.sum()


@njit(parallel=True, cache=True)
def _worst(x, out, n, odd, b, nthreads):
    """Largest |out - f(x)| over out[:n]; inf when any output is not finite."""
    worst = np.zeros(nthreads)
    for t in prange(nthreads):
        lo = t * n // nthreads
        hi = (t + 1) * n // nthreads
        w = 0.0
        for i in range(lo, hi):
            v = np.float64(x[i])
            g = np.float64(out[i])
            d = abs(g - (b - v if odd else v))
            if not np.isfinite(g):
                w = np.inf
            elif d > w:
                w = d
        worst[t] = w
    return worst.max()


@njit(parallel=True, cache=True)
def _fill_nan(out, n, nthreads):
    for t in prange(nthreads):
        lo = t * n // nthreads
        hi = (t + 1) * n // nthreads
        for i in range(lo, hi):
            out[i] = np.nan


@njit(parallel=True, cache=True)
def _fill_tiled(x, tile, nthreads):
    """x[i] = tile[i % tile.size], each thread its own whole tiles (its pages first touched there)."""
    n, size = x.size, tile.size
    blocks = -(-n // size)
    for t in prange(nthreads):
        for blk in range(t * blocks // nthreads, (t + 1) * blocks // nthreads):
            lo = blk * size
            hi = min(n, lo + size)
            x[lo:hi] = tile[:hi - lo]


def fill_tiled(x: np.ndarray, tile: np.ndarray, threads: int) -> None:
    _fill_tiled(x, tile, threads)


def rw_error(x: np.ndarray, out: np.ndarray, elements: int, fmas: int, threads: int) -> float:
    """Backend.rw_error over the first `elements`: the largest |out - f(x)|, inf when one is not finite."""
    odd = fmas % 2 == 1
    if _mismatches(x, out, elements, odd, SWEEP_B, threads) == 0:
        return 0.0
    return float(_worst(x, out, elements, odd, SWEEP_B, threads))


def fill_nan(out: np.ndarray, elements: int, threads: int) -> None:
    _fill_nan(out, elements, threads)


def pass_xor_sum(folded: np.ndarray, passes: int) -> np.ndarray:
    """Per 32-bit word D of `folded`: the sum over p < passes of (p XOR D), mod 2^32, counted bit
    by bit (bit b of p XOR D is set for the p whose bit b differs from D's)."""
    d = folded.astype(np.uint64)
    total = np.zeros_like(d)
    for b in range(32):
        period = 1 << (b + 1)
        ones = (passes // period) * (1 << b) + max(0, passes % period - (1 << b))  # p < passes with bit b set
        count = np.where((d >> np.uint64(b)) & np.uint64(1), np.uint64(passes - ones), np.uint64(ones))
        total = (total + (count << np.uint64(b))) % np.uint64(1 << 32)
    return total


def xor_read_total(x: np.ndarray, threads: int, sums: int, vector_bytes: int, passes: int) -> int:
    """What the partial sums of an XOR-folded read (kernels.make_ro with xor) must add up to, from
    the input itself: per thread and per 32-bit word position of its chunks, the XOR of its range
    (each chunk's two halves folded onto one) seeded with each pass's number, summed over the
    passes mod 2^32 as the kernel's wrapping totals are, each total w written as
    (w mod 2^16) + (w div 2^16) as the kernel writes it (kernels.vflushwords). A chunk skipped, or
    a pass missing or repeated, changes it (a pass count's power of two no longer cancels the low
    bits of the input's patterns, as a plain multiple of the passes would)."""
    words = x.view(np.uint32)
    per_vector = vector_bytes // 4
    chunk = sums * per_vector
    nchunks = words.size // chunk
    total = 0
    for t in range(threads):
        c0, c1 = t * nchunks // threads, (t + 1) * nchunks // threads
        if c1 == c0:
            continue
        block = words[c0 * chunk:c1 * chunk].reshape(c1 - c0, sums, per_vector)
        folded = np.bitwise_xor.reduce(block, axis=0)
        w = pass_xor_sum(folded[: sums // 2] ^ folded[sums // 2:], passes)
        total += int(((w & np.uint64(0xFFFF)) + (w >> np.uint64(16))).sum())
    return total
