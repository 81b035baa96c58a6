"""numba kernels of the CPU workloads: direct convolution, LSTM pointwise step, bias+ReLU, triad.

Same semantics as kernels/conv2d.cu, kernels/lstm.cu and the epilogue in kernels/gemm.cu. All are
compiled with fastmath (FMA contraction, vectorized reductions) and cached on disk; the bench calls
each once before timing, so JIT time never enters a timed window.

The two epilogues that run between BLAS calls (LSTM pointwise, bias+ReLU) are serial on purpose:
numba's OpenMP workers and OpenBLAS's threads both spin-wait after a parallel region, and
alternating the two pools on the same cores made each GEMM of a chain up to twice as slow. The
epilogues touch B x H elements against the GEMM's B x H x (I+H) FMAs, so one thread suffices.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.extending import intrinsic

#: Output channels one work item of the direct convolution computes: every input value it loads
#: feeds KB independent FMAs, which keeps the loop FMA-bound rather than load-bound.
KB = 8


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def conv2d_direct(x, w, y, stride, pad):
    """y[n, k, oh, ow] = sum over c, r, s of w[k, c, r, s] * x[n, c, oh*stride + r - pad, ow*stride + s - pad].

    NCHW, zero padding. One work item = one output row of KB output channels of one image, kept in
    a small accumulator (L1-resident) while the c, r, s loops run. The innermost loop runs over the
    output row with the valid range computed up front (no bounds test per element) and unsigned
    indices (numba then skips its negative-index wraparound, which would block vectorizing).
    """
    n_img, c_in, h, wd = x.shape
    c_out, _, ks, _ = w.shape
    oh, ow = y.shape[2], y.shape[3]
    kblocks = (c_out + KB - 1) // KB
    st = uint64(stride)
    for item in prange(n_img * kblocks * oh):
        row = item % oh
        rest = item // oh
        k0 = (rest % kblocks) * KB
        n = rest // kblocks
        kn = min(KB, c_out - k0)
        acc = np.zeros((KB, ow), dtype=y.dtype)
        for c in range(c_in):
            for r in range(ks):
                ih = row * stride + r - pad
                if ih < 0 or ih >= h:
                    continue
                xrow = x[n, c, ih]
                for s in range(ks):
                    # valid output columns: 0 <= o*stride + s - pad < wd
                    lo = max(0, (pad - s + stride - 1) // stride)
                    hi = min(ow, (wd - 1 + pad - s) // stride + 1)
                    if hi <= lo:
                        continue
                    first = uint64(lo)
                    base = uint64(lo * stride + s - pad)
                    count = uint64(hi - lo)
                    for j in range(kn):
                        wj = w[k0 + j, c, r, s]
                        a = acc[j]
                        for o in range(count):
                            a[first + o] += wj * xrow[base + o * st]
        for j in range(kn):
            for o in range(ow):
                y[n, k0 + j, row, o] = acc[j, o]


@njit(fastmath=True, boundscheck=False, cache=True)
def lstm_pointwise(gates, bias, c_in, c_out, h_out):
    """One LSTM step after the gates GEMM; gates columns are [i | f | g | o], each H wide.

    i, f, o = sigmoid(gate + bias); g = tanh(gate + bias); c' = f*c + i*g; h' = o*tanh(c').
    c_out may be c_in (in place: each element is read before it is written); h_out may be strided.
    """
    b_n = gates.shape[0]
    hid = gates.shape[1] // 4
    for idx in range(b_n * hid):
        b = idx // hid
        j = idx - b * hid
        gi = gates[b, j] + bias[j]
        gf = gates[b, hid + j] + bias[hid + j]
        gg = gates[b, 2 * hid + j] + bias[2 * hid + j]
        go = gates[b, 3 * hid + j] + bias[3 * hid + j]
        i = 1.0 / (1.0 + np.exp(-gi))
        f = 1.0 / (1.0 + np.exp(-gf))
        g = np.tanh(gg)
        o = 1.0 / (1.0 + np.exp(-go))
        c = f * c_in[b, j] + i * g
        c_out[b, j] = c
        h_out[b, j] = o * np.tanh(c)


@njit(fastmath=True, boundscheck=False, cache=True)
def bias_act(y, bias, relu):
    """y[i, j] = act(y[i, j] + bias[j]) in place; act is max(., 0) when `relu`, else identity."""
    rows, cols = y.shape
    for i in range(rows):
        for j in range(cols):
            v = y[i, j] + bias[j]
            if relu and v < 0:
                v = 0.0
            y[i, j] = v


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def triad(a, b, c, q):
    """a[i] = b[i] + q * c[i] (STREAM triad): 1 FMA, 2 reads and 1 write per element.

    Plain stores: the CPU first reads each line of `a` it writes (write-allocate), so DRAM moves 4
    arrays' worth for the 3 counted; `triad_nt` avoids that."""
    for i in prange(a.size):
        a[i] = b[i] + q * c[i]


#: Bytes per streaming store: one cache line, one AVX-512 register.
NT_BYTES = 64


@intrinsic
def _triad_line(typingctx, a, b, c, q, i):
    """a[i:i+V] = b[i:i+V] + q*c[i:i+V] as one 64-byte vector, stored non-temporally.

    The store carries LLVM's !nontemporal metadata and 64-byte alignment, so x86 emits a streaming
    store (vmovntps/vmovntpd) that writes the line without reading it first. `a + i` must be
    64-byte aligned; b and c may be unaligned."""
    width = NT_BYTES // (a.dtype.bitwidth // 8)

    def codegen(context, builder, signature, args):
        av, bv, cv, qv, iv = args
        vty = ir.VectorType(context.get_data_type(a.dtype), width)
        elem_align = a.dtype.bitwidth // 8

        def pointer(arrty, value):
            arr = context.make_array(arrty)(context, builder, value)
            return builder.bitcast(builder.gep(arr.data, [iv]), vty.as_pointer())

        vb = builder.load(pointer(b, bv), align=elem_align)
        vc = builder.load(pointer(c, cv), align=elem_align)
        splat = ir.Constant(vty, ir.Undefined)
        for k in range(width):
            splat = builder.insert_element(splat, qv, ir.Constant(ir.IntType(32), k))
        result = builder.fadd(vb, builder.fmul(splat, vc, flags=("fast",)), flags=("fast",))
        store = builder.store(result, pointer(a, av), align=NT_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()
    return types.void(a, b, c, q, i), codegen


@intrinsic
def _store_fence(typingctx):
    """A full fence: streaming stores are weakly ordered, so each thread fences before it ends."""
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def triad_nt(a, b, c, q, nthreads):
    """The triad with streaming (non-temporal) stores, as tuned STREAM builds do: no write-allocate
    reads of `a`. `a` must be 64-byte aligned; each thread streams whole lines of its range, and
    the elements after the last whole line are done with plain stores."""
    width = NT_BYTES // a.itemsize
    lines = a.size // width
    for t in prange(nthreads):
        l0 = t * lines // nthreads
        l1 = (t + 1) * lines // nthreads
        for line in range(l0, l1):
            _triad_line(a, b, c, q, uint64(line) * uint64(width))
        _store_fence()
    for i in range(lines * width, a.size):
        a[i] = b[i] + q * c[i]
