"""numba kernels of the CPU backend: the same sweep semantics as kernels/sweep.cu, sized to the ISA."""
from __future__ import annotations

import platform

import numba
from numba import njit, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic, overload

from gpuroof.backends.cpu_isa import KernelShape, kernel_shape

#: Chains and sums of the instruction set numba compiles for (see cpu_isa.kernel_shape): every
#: accumulator of the innermost loops fits the vector register file, so none is spilled to the stack.
SHAPE: KernelShape = kernel_shape()
#: The most partial sums per thread of any dtype and variant (float32's): the ro output row size.
LANES = SHAPE.partial_lanes(4)


def _lanes_function(vectors: int):
    """A function lanes(x) whose value is `vectors` vector registers of x's dtype, a compile-time
    constant: loops over range(lanes(x)) have a constant trip count, unroll fully and vectorize."""
    def lanes(x):  # typed by the overload below
        raise NotImplementedError

    @overload(lanes, inline="always")
    def _lanes(x):
        n = vectors * SHAPE.vector_bytes * 8 // x.dtype.bitwidth
        return lambda x: n
    return lanes


rw_lanes = _lanes_function(SHAPE.rw_chains)  # chains of the read-write FMA loop
ro_lanes = _lanes_function(SHAPE.ro_chains)  # chains of the read-only FMA loop
ro_sum_lanes = _lanes_function(SHAPE.ro_sums)  # running sums they are folded into
read_lanes = _lanes_function(SHAPE.read_sums)  # running sums of the pure read loop (fmas = 0)


@intrinsic
def _stack_ptr(typingctx, size, dtype):
    """A pointer to `size` elements of `dtype` on the stack (an LLVM alloca in the entry block)."""
    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype.dtype), size=args[0])
    return types.CPointer(dtype.dtype)(types.int64, dtype), codegen


@njit(inline="always")
def stack_array(x, n):
    """n (a compile-time constant) elements of x's dtype on the stack. Unlike an np.empty (heap)
    array, LLVM knows a stack array aliases neither input nor output, so its elements are promoted
    to registers and the chains are not stored and reloaded per vector."""
    return numba.carray(_stack_ptr(n, x.dtype), (n,))


#: Fast-math without reassociation: `contract` fuses v*a + b into one FMA, and the lanes are
#: independent, so nothing needs reordering. Allowing it lets LLVM's loop vectorizer treat every
#: running sum as a reduction over chunks and vectorize the chunk loop with gathers (seen on AVX2)
#: instead of packing the unrolled lanes into whole vectors.
FASTMATH = {"contract", "nnan", "ninf", "nsz", "arcp", "afn"}


@njit(inline="always")
def store_sums(partial, t, tot, n):
    """Row t of `partial` = the n running sums, then zeros. Only constant indices touch `tot`: one
    variable index would keep the whole array in memory instead of in registers."""
    for j in range(n):
        partial[t, j] = tot[j]
    for j in range(n, partial.shape[1]):
        partial[t, j] = 0


@njit(parallel=True, fastmath=FASTMATH, boundscheck=False, cache=True)
def sweep_rw(x, out, fmas, a, b, nthreads, passes):
    """out[i] = f(x[i]), f applying `fmas` FMAs v = v*a + b; each thread owns a contiguous range,
    which it streams `passes` times (cache-sized working sets are timed over many passes)."""
    lanes = rw_lanes(x)
    nchunks = x.size // lanes
    for t in prange(nthreads):
        c0 = t * nchunks // nthreads
        c1 = (t + 1) * nchunks // nthreads
        if fmas == 0:  # pure traffic: no staging through the chains
            for _p in range(passes):
                for c in range(c0, c1):
                    # Unsigned indices: numba skips its negative-index wraparound, which blocks vectorizing.
                    base = uint64(c) * uint64(lanes)
                    for j in range(lanes):
                        out[base + uint64(j)] = x[base + uint64(j)]
        else:
            acc = stack_array(x, lanes)
            for _p in range(passes):
                for c in range(c0, c1):
                    base = uint64(c) * uint64(lanes)
                    for j in range(lanes):
                        acc[j] = x[base + uint64(j)]
                    for _ in range(fmas):
                        for j in range(lanes):
                            acc[j] = acc[j] * a + b
                    for j in range(lanes):
                        out[base + uint64(j)] = acc[j]


@njit(parallel=True, fastmath=FASTMATH, boundscheck=False, cache=True)
def sweep_ro(x, partial, fmas, a, b, nthreads, passes):
    """Read-only: row t of `partial` holds thread t's running sums of f(x[i]) over its range and all
    passes (the rest of the row zero). The pure read loop (fmas = 0) sums straight from memory into
    as many sums as it has chains; with FMAs, each chunk's chains are folded into half as many sums,
    so chains and sums fit the register file together."""
    for t in prange(nthreads):
        if fmas == 0:
            lanes = read_lanes(x)
            nchunks = x.size // lanes
            c0 = t * nchunks // nthreads
            c1 = (t + 1) * nchunks // nthreads
            tot = stack_array(x, lanes)
            for j in range(lanes):
                tot[j] = 0
            for _p in range(passes):
                for c in range(c0, c1):
                    base = uint64(c) * uint64(lanes)
                    for j in range(lanes):
                        tot[j] += x[base + uint64(j)]
            store_sums(partial, t, tot, lanes)
        else:
            lanes = ro_lanes(x)
            sums = ro_sum_lanes(x)
            nchunks = x.size // lanes
            c0 = t * nchunks // nthreads
            c1 = (t + 1) * nchunks // nthreads
            acc = stack_array(x, lanes)
            tot = stack_array(x, sums)
            for j in range(sums):
                tot[j] = 0
            for _p in range(passes):
                for c in range(c0, c1):
                    base = uint64(c) * uint64(lanes)
                    for j in range(lanes):
                        acc[j] = x[base + uint64(j)]
                    for _ in range(fmas):
                        for j in range(lanes):
                            acc[j] = acc[j] * a + b
                    for j in range(sums):  # lanes == 2 * sums (cpu_isa.kernel_shape)
                        tot[j] += acc[j] + acc[j + sums]
            store_sums(partial, t, tot, sums)


# -- the core clock, measured -----------------------------------------------------------------

#: Dependent integer adds per asm block: one register, each add reading the previous result, so the
#: block takes exactly one cycle per add on every x86-64 and arm64 core (integer add latency 1;
#: register + register adds are not folded at rename as some cores do with small immediates).
CLOCK_ADDS = 1000
_CHAIN_ASM = {
    "x86_64": "\n".join(["addq $2, $0"] * CLOCK_ADDS),
    "aarch64": "\n".join(["add $0, $0, $2"] * CLOCK_ADDS),
}
_MACHINE = platform.machine().lower()
#: None where no chain is written for this machine: the clock is then not measured, only reported.
CHAIN_ASM = _CHAIN_ASM.get({"amd64": "x86_64", "arm64": "aarch64"}.get(_MACHINE, _MACHINE))


if CHAIN_ASM is not None:
    import llvmlite.binding

    llvmlite.binding.initialize_native_asmparser()  # numba's JIT does not load it; inline asm needs it


@intrinsic
def _add_chain(typingctx, v, step):
    """v + CLOCK_ADDS × step, computed by CLOCK_ADDS dependent adds in inline assembly."""
    from llvmlite import ir

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64), ir.IntType(64)])
        return builder.call(ir.InlineAsm(fnty, CHAIN_ASM, "=r,0,r", side_effect=True), args)
    return types.uint64(types.uint64, types.uint64), codegen


@njit(nogil=True, cache=True)
def add_chain(blocks):
    """blocks × CLOCK_ADDS dependent adds from 0: returns the count (checked by the caller). nogil,
    so that one Python thread per core runs it at once: the clock under load on every core."""
    v = uint64(0)
    for _ in range(blocks):
        v = _add_chain(v, uint64(1))
    return v
