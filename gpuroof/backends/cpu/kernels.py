"""numba kernels of the CPU backend: the same sweep semantics as kernels/sweep.cu, sized to the ISA.

The chains are explicit vectors: a chunk of a thread's range is one `Vectors` value, `count` LLVM
vectors of the register width, loaded, FMA'd, summed and stored by the intrinsics below. Scalar
loops over lanes leave the vectors to LLVM's vectorizers, whose result depends on the target and
the dtype (fully unrolled and left scalar for float64 on AVX2, folded sums scalarized, chains
spilled to the stack). Explicit vectors leave only register allocation to the compiler, and the
shape (isa.kernel_shape) keeps every live vector within the register file.
"""
from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from gpuroof.backends.cpu.isa import KernelShape, LoopVariant, configure_codegen, kernel_shape, vector_isa

#: Before the first numba code generation of the process, which the njit(cache=True) decorators
#: below start: the code generator's features are fixed when it is created.
VECTOR_WIDTH_REASON = configure_codegen()
#: Chains and sums of the instruction set numba compiles for (see isa.kernel_shape): every
#: accumulator of the innermost loops fits the vector register file, so none is spilled to the stack.
SHAPE: KernelShape = kernel_shape(vector_isa(width_reason=VECTOR_WIDTH_REASON))
#: The most partial sums per thread of any dtype and variant (float32's): the ro output row size.
LANES = SHAPE.partial_lanes(4)
#: Vectors per chunk of each loop of the shape's own kernels (variants: isa.LoopVariant).
RW_CHAINS = SHAPE.rw_chains  # read-write FMA loop (and the copy loop, fmas = 0)
RO_CHAINS = SHAPE.ro_chains  # read-only FMA loop
RO_SUMS = SHAPE.ro_sums  # running sums the ro chains are folded into (RO_CHAINS == 2 * RO_SUMS)
READ_SUMS = SHAPE.read_sums  # running sums of the pure read loop (fmas = 0)


class Vectors(types.Type):
    """`count` vector registers of `width` elements of `dtype`, one LLVM value
    [count x <width x dtype>]: after inlining, LLVM splits it into `count` independent SSA vectors."""

    def __init__(self, dtype, count: int, width: int):
        self.dtype, self.count, self.width = dtype, count, width
        super().__init__(name=f"Vectors({dtype}, {count}x{width})")


@register_model(Vectors)
class _VectorsModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.ArrayType(ir.VectorType(elem, fe_type.width), fe_type.count))


def _width(dtype, vector_bytes: int) -> int:
    """Elements of `dtype` per vector of `vector_bytes`."""
    return vector_bytes * 8 // dtype.bitwidth


def width(x, vector_bytes):  # typed by the overload below: a compile-time constant per dtype
    raise NotImplementedError


@overload(width, inline="always", prefer_literal=True)
def _width_overload(x, vector_bytes):
    if not isinstance(vector_bytes, types.IntegerLiteral):
        return None
    n = _width(x.dtype, vector_bytes.literal_value)
    return lambda x, vector_bytes: n


def _vector_ptrs(context, builder, arrty, arr, start, v: Vectors):
    """Pointers to the `v.count` consecutive vectors of `arr` from element `start`."""
    data = cgutils.create_struct_proxy(arrty)(context, builder, value=arr).data
    vptr = ir.VectorType(context.get_value_type(v.dtype), v.width).as_pointer()
    start = builder.sext(start, cgutils.intp_t) if start.type.width < 64 else start
    return [builder.bitcast(builder.gep(data, [builder.add(start, cgutils.intp_t(i * v.width))]), vptr)
            for i in range(v.count)]


def _each(builder, v: Vectors, value, fn):
    """Vectors whose i-th vector is fn(i, <i-th vector of `value`>)."""
    out = ir.Constant(value.type, ir.Undefined)
    for i in range(v.count):
        out = builder.insert_value(out, fn(i, builder.extract_value(value, i)), i)
    return out


def _splat(builder, scalar, n: int):
    vec = builder.insert_element(ir.Constant(ir.VectorType(scalar.type, n), ir.Undefined), scalar,
                                 ir.IntType(32)(0))
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))


@intrinsic(prefer_literal=True)
def vload(typingctx, arr, start, count, vector_bytes):
    """`count` vectors of `vector_bytes` of `arr` from element `start` (no bounds check; elements
    need not be aligned)."""
    if not isinstance(count, types.IntegerLiteral) or not isinstance(vector_bytes, types.IntegerLiteral):
        return None
    v = Vectors(arr.dtype, count.literal_value, _width(arr.dtype, vector_bytes.literal_value))

    def codegen(context, builder, sig, args):
        ptrs = _vector_ptrs(context, builder, arr, args[0], args[1], v)
        align = arr.dtype.bitwidth // 8
        return _each(builder, v, context.get_constant_undef(v), lambda i, _: builder.load(ptrs[i], align=align))
    return v(arr, start, count, vector_bytes), codegen


@intrinsic(prefer_literal=True)
def vstore(typingctx, arr, start, v, nontemporal):
    """arr[start : start + v.count * v.width] = v (no bounds check). With `nontemporal` true the
    stores bypass the caches (movnt*: no read for ownership of the line, half the traffic of a copy
    that misses the caches); `start` must then sit on a vector boundary of a vector-aligned array."""
    if not isinstance(nontemporal, types.BooleanLiteral):
        return None
    nt = nontemporal.literal_value

    def codegen(context, builder, sig, args):
        ptrs = _vector_ptrs(context, builder, arr, args[0], args[1], v)
        align = v.width * arr.dtype.bitwidth // 8 if nt else arr.dtype.bitwidth // 8
        for i, p in enumerate(ptrs):
            st = builder.store(builder.extract_value(args[2], i), p, align=align)
            if nt:
                st.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()
    return types.none(arr, start, v, nontemporal), codegen


@intrinsic(prefer_literal=True)
def vzeros(typingctx, like, count, vector_bytes):
    """`count` vectors of `vector_bytes` of zeros of `like`'s dtype."""
    if not isinstance(count, types.IntegerLiteral) or not isinstance(vector_bytes, types.IntegerLiteral):
        return None
    v = Vectors(like.dtype, count.literal_value, _width(like.dtype, vector_bytes.literal_value))

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(v), None)
    return v(like, count, vector_bytes), codegen


@intrinsic
def vfma(typingctx, v, a, b):
    """v * a + b in every lane, by llvm.fmuladd: one FMA instruction per vector where the target has
    FMA (AVX2, AVX-512, NEON), a multiply and an add elsewhere (SSE2)."""
    def codegen(context, builder, sig, args):
        vty = ir.VectorType(context.get_value_type(v.dtype), v.width)
        name = f"llvm.fmuladd.v{v.width}{vty.element.intrinsic_name}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
        va, vb = _splat(builder, args[1], v.width), _splat(builder, args[2], v.width)
        return _each(builder, v, args[0], lambda i, x: builder.call(fn, [x, va, vb]))
    return v(v, v.dtype, v.dtype), codegen


@intrinsic
def vadd(typingctx, u, v):
    """u + v, vector by vector (same count)."""
    if u != v:
        return None

    def codegen(context, builder, sig, args):
        return _each(builder, v, args[0], lambda i, x: builder.fadd(x, builder.extract_value(args[1], i)))
    return v(u, v), codegen


@intrinsic
def vfold(typingctx, v):
    """Half as many vectors: the i-th is v[i] + v[i + count / 2] (count even)."""
    if v.count % 2:
        return None
    half = Vectors(v.dtype, v.count // 2, v.width)

    def codegen(context, builder, sig, args):
        x = args[0]
        return _each(builder, half, context.get_constant_undef(half), lambda i, _: builder.fadd(
            builder.extract_value(x, i), builder.extract_value(x, i + half.count)))
    return half(v), codegen


@intrinsic
def vflush(typingctx, acc, v):
    """acc[: v.count * v.width] += v, in acc's dtype (float64): straight-line code, no loop."""
    def codegen(context, builder, sig, args):
        acc_v = Vectors(acc.dtype, v.count, v.width)
        ptrs = _vector_ptrs(context, builder, acc, args[0], context.get_constant(types.intp, 0), acc_v)
        wide = ir.VectorType(context.get_value_type(acc.dtype), v.width)
        for i, ptr in enumerate(ptrs):
            x = builder.extract_value(args[1], i)
            x = builder.fpext(x, wide) if x.type != wide else x
            builder.store(builder.fadd(builder.load(ptr, align=8), x), ptr, align=8)
        return context.get_dummy_value()
    if acc.dtype != types.float64:
        return None
    return types.none(acc, v), codegen


def _words(v: Vectors) -> ir.VectorType:
    """One vector of `v` as 32-bit words (float32: one per lane, float64: two)."""
    return ir.VectorType(ir.IntType(32), v.width * v.dtype.bitwidth // 32)


@intrinsic
def vxorfold(typingctx, acc, v):
    """acc ^ v[: n/2] ^ v[n/2 :], bit by bit on the 32-bit words (acc: the n/2 vectors). Two loaded
    vectors per instruction where a three-input logic op exists (AVX-512's vpternlog), one
    elsewhere, on integer ports: a read loop that combines this way is bound by its loads, not
    by the floating-point adders a sum of the same bytes runs on."""
    if acc.count * 2 != v.count or acc.dtype != v.dtype or acc.width != v.width:
        return None

    def codegen(context, builder, sig, args):
        words, h = _words(v), acc.count
        fty = ir.VectorType(context.get_value_type(v.dtype), v.width)

        def one(i, a):
            lo, hi = (builder.bitcast(builder.extract_value(args[1], j), words) for j in (i, i + h))
            return builder.bitcast(builder.xor(builder.bitcast(a, words), builder.xor(lo, hi)), fty)
        return _each(builder, acc, args[0], one)
    return acc(acc, v), codegen


@intrinsic(prefer_literal=True)
def vwords(typingctx, like, count, vector_bytes, word):
    """`count` vectors of `vector_bytes` of `like`'s dtype whose every 32-bit word holds `word`
    (its low 32 bits)."""
    if not isinstance(count, types.IntegerLiteral) or not isinstance(vector_bytes, types.IntegerLiteral):
        return None
    v = Vectors(like.dtype, count.literal_value, _width(like.dtype, vector_bytes.literal_value))

    def codegen(context, builder, sig, args):
        words = _words(v)
        w = builder.bitcast(_splat(builder, builder.trunc(args[3], ir.IntType(32)), words.count),
                            ir.VectorType(context.get_value_type(v.dtype), v.width))
        return _each(builder, v, context.get_constant_undef(v), lambda i, _: w)
    return v(like, count, vector_bytes, word), codegen


@intrinsic
def vaddwords(typingctx, u, v):
    """u + v on the 32-bit words of each vector, wrapping (mod 2^32)."""
    if u != v:
        return None

    def codegen(context, builder, sig, args):
        words = _words(v)
        fty = ir.VectorType(context.get_value_type(v.dtype), v.width)
        return _each(builder, v, args[0], lambda i, x: builder.bitcast(builder.add(
            builder.bitcast(x, words), builder.bitcast(builder.extract_value(args[1], i), words)), fty))
    return v(u, v), codegen


@intrinsic
def vflushwords(typingctx, acc, v):
    """acc[: words of v] += each 32-bit word w of v as (w mod 2^16) + (w div 2^16): under 2^17, so
    exact in every dtype a partial-sum row may have (float32 holds integers up to 2^24)."""
    def codegen(context, builder, sig, args):
        words = _words(v)
        acc_v = Vectors(acc.dtype, v.count, words.count)
        ptrs = _vector_ptrs(context, builder, acc, args[0], context.get_constant(types.intp, 0), acc_v)
        wide = ir.VectorType(context.get_value_type(acc.dtype), words.count)
        low, shift = (ir.Constant(words, [c] * words.count) for c in (0xFFFF, 16))
        for i, ptr in enumerate(ptrs):
            w = builder.bitcast(builder.extract_value(args[1], i), words)
            x = builder.uitofp(builder.add(builder.and_(w, low), builder.lshr(w, shift)), wide)
            builder.store(builder.fadd(builder.load(ptr, align=8), x), ptr, align=8)
        return context.get_dummy_value()
    if acc.dtype != types.float64:
        return None
    return types.none(acc, v), codegen


@intrinsic(prefer_literal=True)
def vprefetch(typingctx, arr, start, distance, nbytes):
    """Prefetch (llvm.prefetch: read, into every cache level) each 64-byte line of the `nbytes`
    from element `start` + `distance` bytes on; nothing when `distance` is 0. A prefetch never
    faults, so lines past the end of `arr` cost nothing. Streamed from DRAM, a loop with FMAs keeps
    too few loads in flight for the bytes the memory's latency hides (the out-of-order window
    holds a few chunks); prefetches issued well ahead keep the stream full."""
    if not isinstance(distance, types.IntegerLiteral) or not isinstance(nbytes, types.IntegerLiteral):
        return None
    dist, n = distance.literal_value, nbytes.literal_value

    def codegen(context, builder, sig, args):
        if dist:
            data = cgutils.create_struct_proxy(arr)(context, builder, value=args[0]).data
            i8p = ir.IntType(8).as_pointer()
            base = builder.bitcast(builder.gep(data, [args[1]]), i8p)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
                ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)]), "llvm.prefetch.p0i8")
            for off in range(0, n, 64):
                p = builder.gep(base, [ir.IntType(64)(dist + off)])
                builder.call(fn, [p, ir.IntType(32)(0), ir.IntType(32)(3), ir.IntType(32)(1)])
        return context.get_dummy_value()
    return types.none(arr, start, distance, nbytes), codegen


@intrinsic
def one_chunk_at_a_time(typingctx):
    """An empty asm statement marked convergent: LLVM does not runtime-unroll a loop that holds one.
    Unrolled, a chunk loop interleaves two chunks' chains and needs twice the registers (seen with
    znver3's scheduling model, whose large loop buffer asks for unrolling): chains go to the stack."""
    def codegen(context, builder, sig, args):
        asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), "", "", side_effect=True)
        builder.call(asm, [], attrs=("convergent",))
        return context.get_dummy_value()
    return types.none(), codegen


#: Chunks whose sums a running sum takes before it is added into a float64 total. A float32 lane
#: then holds at most 2 × 65536 values of |v| ≤ 30.5 (under 2^22), where every sum of half-integers
#: is exact: the ro result stays exact whatever the buffer size and the number of passes (a lane
#: of a 1.5 GB buffer held ten times more, and its sums no longer matched the closed form).
FLUSH_CHUNKS = 1 << 16


@njit(inline="always")
def store_totals(partial, t, total):
    """Row t of `partial` = the float64 totals, rounded once to the row's dtype."""
    for j in range(partial.shape[1]):
        partial[t, j] = total[j]


def make_rw(vector_bytes: int, chains: int, nontemporal: bool, prefetch: int = 0):
    """The read-write kernel of one shape: `chains` vectors of `vector_bytes` per chunk, stores
    through the caches or non-temporal, input lines prefetched `prefetch` bytes ahead (0: none).
    Constants of the closure are compile-time constants."""
    nt = bool(nontemporal)
    chunk_bytes = chains * vector_bytes

    @njit(parallel=True, boundscheck=False, cache=True)
    def sweep_rw(x, out, fmas, a, b, nthreads, passes):
        """out[i] = f(x[i]), f applying `fmas` FMAs v = v*a + b; each thread owns a contiguous
        range, which it streams `passes` times (cache-sized working sets are timed over many
        passes). With fmas = 0 a chunk goes from x to out through registers: pure traffic."""
        lanes = chains * width(x, vector_bytes)
        nchunks = x.size // lanes
        for t in prange(nthreads):
            c0 = t * nchunks // nthreads
            c1 = (t + 1) * nchunks // nthreads
            for _p in range(passes):
                for c in range(c0, c1):
                    one_chunk_at_a_time()
                    base = uint64(c) * uint64(lanes)
                    vprefetch(x, base, prefetch, chunk_bytes)
                    acc = vload(x, base, chains, vector_bytes)
                    for _ in range(fmas):
                        acc = vfma(acc, a, b)
                    vstore(out, base, acc, nt)
    return sweep_rw


def make_ro(vector_bytes: int, fma_chains: int, read_sums: int, prefetch: int = 0, xor: bool = False):
    """The read-only kernel of one shape: its FMA loop folds `fma_chains` chains into half as many
    sums; its pure read loop adds straight from memory into `read_sums` sums, or with `xor` folds
    each chunk of `read_sums` vectors into half as many by XOR of their bits, starting from the
    pass's number, and adds each pass's XOR, as 32-bit words, into running totals (so the totals
    count the passes: buffers.xor_read_total);
    both prefetch their input `prefetch` bytes ahead (0: not at all)."""
    fma_sums = fma_chains // 2
    xor_sums = read_sums // 2
    xor = bool(xor)
    read_bytes, fma_bytes = read_sums * vector_bytes, fma_chains * vector_bytes

    @njit(parallel=True, boundscheck=False, cache=True)
    def sweep_ro(x, partial, fmas, a, b, nthreads, passes):
        """Read-only: row t of `partial` holds thread t's sums of f(x[i]) over its range and all
        passes (the rest of the row zero). Every FLUSH_CHUNKS chunks at most (whole passes when a
        pass is shorter) the sums are added into float64 totals, outside the chunk loops."""
        for t in prange(nthreads):
            total = np.zeros(partial.shape[1], np.float64)
            if fmas == 0:
                lanes = read_sums * width(x, vector_bytes)
            else:
                lanes = fma_chains * width(x, vector_bytes)
            nchunks = x.size // lanes
            c0 = t * nchunks // nthreads
            c1 = (t + 1) * nchunks // nthreads
            split = c1 - c0 > FLUSH_CHUNKS  # a pass is flushed in parts, else every `per` passes
            per = max(1, FLUSH_CHUNKS // max(1, c1 - c0))
            if fmas == 0 and xor:
                words = vzeros(x, xor_sums, vector_bytes)
                for _p in range(passes):
                    pass_xor = vwords(x, xor_sums, vector_bytes, _p)  # seeded with the pass's number
                    for c in range(c0, c1):
                        one_chunk_at_a_time()  # unrolled, two chunks' XORs need twice the registers
                        vprefetch(x, uint64(c) * uint64(lanes), prefetch, read_bytes)
                        pass_xor = vxorfold(pass_xor, vload(x, uint64(c) * uint64(lanes), read_sums, vector_bytes))
                    words = vaddwords(words, pass_xor)
                vflushwords(total, words)
                store_totals(partial, t, total)
                continue
            for p0 in range(0, passes, per):
                if fmas == 0:
                    read_tot = vzeros(x, read_sums, vector_bytes)
                    for _p in range(p0, min(passes, p0 + per)):
                        for b0 in range(c0, c1, FLUSH_CHUNKS):
                            for c in range(b0, min(c1, b0 + FLUSH_CHUNKS)):
                                vprefetch(x, uint64(c) * uint64(lanes), prefetch, read_bytes)
                                read_tot = vadd(read_tot, vload(x, uint64(c) * uint64(lanes), read_sums,
                                                                vector_bytes))
                            if split:
                                vflush(total, read_tot)
                                read_tot = vzeros(x, read_sums, vector_bytes)
                    vflush(total, read_tot)
                else:
                    tot = vzeros(x, fma_sums, vector_bytes)
                    for _p in range(p0, min(passes, p0 + per)):
                        for b0 in range(c0, c1, FLUSH_CHUNKS):
                            for c in range(b0, min(c1, b0 + FLUSH_CHUNKS)):
                                one_chunk_at_a_time()
                                vprefetch(x, uint64(c) * uint64(lanes), prefetch, fma_bytes)
                                acc = vload(x, uint64(c) * uint64(lanes), fma_chains, vector_bytes)
                                for _ in range(fmas):
                                    acc = vfma(acc, a, b)
                                tot = vadd(tot, vfold(acc))
                            if split:
                                vflush(total, tot)
                                tot = vzeros(x, fma_sums, vector_bytes)
                    vflush(total, tot)
            store_totals(partial, t, total)
    return sweep_ro


_RW: dict = {}
_RO: dict = {}


def rw_kernel(variant: LoopVariant | None = None):
    """The read-write kernel of `variant` (its copy loop's width, chains and stores), the shape's
    own by default; compiled once per process (and cached on disk by numba)."""
    v = variant or SHAPE.default_variant("rw")
    key = (v.vector_bytes, v.chains, v.nontemporal, v.prefetch)
    if key not in _RW:
        _RW[key] = make_rw(*key)
    return _RW[key]


def ro_kernel(variant: LoopVariant | None = None):
    """The read-only kernel of `variant` (its read loop's width and sums and both loops' prefetch;
    the FMA loop keeps the shape's chains at that width), the shape's own by default."""
    v = variant or SHAPE.default_variant("ro")
    key = (v.vector_bytes, SHAPE.ro_chains, v.chains, v.prefetch, v.xor)
    if key not in _RO:
        _RO[key] = make_ro(*key)
    return _RO[key]


#: The shape's own kernels (the machine-code tests compile these).
sweep_rw = rw_kernel()
sweep_ro = ro_kernel()


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
