"""2-D convolution, NCHW, k x k kernel, stride, zero padding, any channel counts.

Implementations: `direct` (numba on the CPU, kernels/conv2d.cu on CUDA: every output a sum over
c, r, s), the library path `im2col` (CPU: unfold the input, then BLAS) or `im2col-cublas` (CUDA:
the unfolding kernel of kernels/conv2d.cu, then cuBLAS) — a 1x1 stride-1 unpadded convolution needs
no unfolding, it is a GEMM on the input itself — and `cudnn` (CUDA, where the installed cupy still
ships its cuDNN wrapper; CuPy v14 removed it).

The default cases put 3x3 and 1x1 kernels on the same tensor shapes, from one channel to many: 1x1
has 9x fewer FLOPs and, while the input and output dominate the bytes, about 9x lower intensity,
so on the memory slope it does not run 9x faster.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpuroof.backends.base import ITEMSIZE
from gpuroof.errors import UsageError
from gpuroof.workloads.base import (Prepared, Traffic, Workload, accumulate_unit, check_dtype,
                                    check_impl, check_positive, library_unit, random_inputs,
                                    to_storage, tolerance)

IMPLS = ("direct", "im2col", "im2col-cublas", "cudnn")

#: kernels/conv2d.cu: threads per block (one output pixel each) and output channels per thread.
BLOCK = 256
KB = 8

#: Images the float64 reference computes when a case has more (the first and the last).
REF_IMAGES = 2


@dataclass(frozen=True)
class Conv2dParams:
    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    ksize: int
    stride: int = 1
    pad: int = 0
    dtype: str = "float32"
    impl: str = "direct"

    def __post_init__(self) -> None:
        check_positive("conv2d", n=self.n, c_in=self.c_in, c_out=self.c_out, h=self.h, w=self.w,
                       ksize=self.ksize, stride=self.stride)
        if isinstance(self.pad, bool) or not isinstance(self.pad, (int, np.integer)) or self.pad < 0:
            raise UsageError(f"conv2d: pad={self.pad!r} must be a non-negative integer")
        check_dtype("conv2d", self.dtype)
        check_impl("conv2d", self.impl, IMPLS)
        if self.oh < 1 or self.ow < 1:
            raise UsageError(
                f"conv2d: a {self.ksize}x{self.ksize} kernel with stride {self.stride} and padding "
                f"{self.pad} on a {self.h}x{self.w} image gives an empty output "
                f"({max(self.oh, 0)}x{max(self.ow, 0)}); need h + 2*pad >= ksize and w + 2*pad >= ksize")

    @property
    def oh(self) -> int:
        return (self.h + 2 * self.pad - self.ksize) // self.stride + 1

    @property
    def ow(self) -> int:
        return (self.w + 2 * self.pad - self.ksize) // self.stride + 1

    @property
    def is_pointwise_gemm(self) -> bool:
        """1x1, stride 1, no padding: the input already is the im2col matrix."""
        return self.ksize == 1 and self.stride == 1 and self.pad == 0

    @property
    def label(self) -> str:
        return (f"{self.impl} {self.ksize}x{self.ksize} n={self.n} c={self.c_in}->{self.c_out} "
                f"{self.h}x{self.w} s{self.stride} p{self.pad}")


def flops(p: Conv2dParams) -> int:
    """One FMA per (output element, input channel, kernel tap): 2 N K OH OW C k^2."""
    return 2 * p.n * p.c_out * p.oh * p.ow * p.c_in * p.ksize * p.ksize


def traffic(p: Conv2dParams) -> Traffic:
    s = ITEMSIZE[p.dtype]
    return Traffic(input_bytes=p.n * p.c_in * p.h * p.w * s,
                   weight_bytes=p.c_out * p.c_in * p.ksize * p.ksize * s,
                   output_bytes=p.n * p.c_out * p.oh * p.ow * s)


def unit(p: Conv2dParams) -> str:
    """Direct: scalar FMAs (float32 pipes for 16-bit data); library paths: the library's unit."""
    if p.impl == "direct":
        return accumulate_unit(p.dtype)
    return library_unit(p.dtype, gpu=p.impl != "im2col")


def tol(p: Conv2dParams) -> float:
    return tolerance(p.dtype, p.c_in * p.ksize * p.ksize)


def inputs(p: Conv2dParams, rng: np.random.Generator) -> dict:
    return {"x": random_inputs(rng, p.dtype, (p.n, p.c_in, p.h, p.w)),
            "w": random_inputs(rng, p.dtype, (p.c_out, p.c_in, p.ksize, p.ksize))}


def unfold(x_img: np.ndarray, ksize: int, stride: int, pad: int, oh: int, ow: int) -> np.ndarray:
    """im2col of one (C, H, W) image: (C*k*k, OH*OW), row (c, r, s) holding x[c, oh*st+r-p, ow*st+s-p]."""
    c = x_img.shape[0]
    if pad:
        x_img = np.pad(x_img, ((0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((c, ksize, ksize, oh, ow), x_img.dtype)
    for r in range(ksize):
        for s in range(ksize):
            cols[:, r, s] = x_img[:, r:r + stride * (oh - 1) + 1:stride, s:s + stride * (ow - 1) + 1:stride]
    return cols.reshape(c * ksize * ksize, oh * ow)


def reference(p: Conv2dParams, x: dict) -> tuple:
    images = np.unique([0, p.n - 1]) if p.n > REF_IMAGES else np.arange(p.n)
    wmat = x["w"].reshape(p.c_out, -1)
    ref = np.stack([(wmat @ unfold(x["x"][i], p.ksize, p.stride, p.pad, p.oh, p.ow))
                    .reshape(p.c_out, p.oh, p.ow) for i in images])
    return (images,), ref


def device_bytes(p: Conv2dParams) -> int:
    s = ITEMSIZE[p.dtype]
    extra = 0
    if p.impl.startswith("im2col") and not p.is_pointwise_gemm:
        extra = p.n * p.c_in * p.ksize ** 2 * p.oh * p.ow * s  # the unfolded input
        extra += p.n * p.c_in * (p.h + 2 * p.pad) * (p.w + 2 * p.pad) * s  # padded copy (CPU)
    return traffic(p).total + extra


# ---------------------------------------------------------------------------------------------
# CPU runners
# ---------------------------------------------------------------------------------------------

def _cpu_direct(backend, p: Conv2dParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cpu_kernels as k

    xs, ws = to_storage(x["x"], p.dtype), to_storage(x["w"], p.dtype)
    y = np.full((p.n, p.c_out, p.oh, p.ow), np.nan, dtype=xs.dtype)
    stride, pad = p.stride, p.pad

    def run() -> None:
        k.conv2d_direct(xs, ws, y, stride, pad)
    return Prepared(run=run, output=lambda: y, keep=[xs, ws, y])


def _cpu_im2col(backend, p: Conv2dParams, x: dict) -> Prepared:
    xs, ws = to_storage(x["x"], p.dtype), to_storage(x["w"], p.dtype)
    y = np.full((p.n, p.c_out, p.oh, p.ow), np.nan, dtype=xs.dtype)
    y3 = y.reshape(p.n, p.c_out, p.oh * p.ow)
    wmat = ws.reshape(p.c_out, -1)
    if p.is_pointwise_gemm:
        x3 = xs.reshape(p.n, p.c_in, p.h * p.w)

        def run() -> None:
            np.matmul(wmat, x3, out=y3)
        return Prepared(run=run, output=lambda: y, keep=[xs, ws, y])
    hp, wp = p.h + 2 * p.pad, p.w + 2 * p.pad
    xpad = np.zeros((p.n, p.c_in, hp, wp), dtype=xs.dtype)  # border stays zero
    cols = np.empty((p.n, p.c_in, p.ksize, p.ksize, p.oh, p.ow), dtype=xs.dtype)
    ks, st, pad, oh, ow = p.ksize, p.stride, p.pad, p.oh, p.ow
    cols3 = cols.reshape(p.n, p.c_in * ks * ks, oh * ow)

    def run() -> None:
        if pad:
            xpad[:, :, pad:pad + p.h, pad:pad + p.w] = xs
            src = xpad
        else:
            src = xs
        for r in range(ks):
            for s in range(ks):
                cols[:, :, r, s] = src[:, :, r:r + st * (oh - 1) + 1:st, s:s + st * (ow - 1) + 1:st]
        np.matmul(wmat, cols3, out=y3)
    return Prepared(run=run, output=lambda: y, keep=[xs, ws, y, xpad, cols])


# ---------------------------------------------------------------------------------------------
# CUDA runners
# ---------------------------------------------------------------------------------------------

def direct_name(dtype: str, ksize: int) -> str:
    from gpuroof.workloads._cuda import CUDA_TYPE
    return f"conv2d_direct<{CUDA_TYPE[dtype]}, {int(ksize)}, {KB}>"


def im2col_name(dtype: str) -> str:
    from gpuroof.workloads._cuda import CUDA_TYPE
    return f"im2col<{CUDA_TYPE[dtype]}>"


def _dims(p: Conv2dParams) -> tuple:
    i = np.int32
    return (i(p.n), i(p.c_in), i(p.h), i(p.w), i(p.c_out), i(p.oh), i(p.ow), i(p.stride), i(p.pad))


def _cuda_direct(backend, p: Conv2dParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cuda

    xd, wd = _cuda.device_array(x["x"], p.dtype), _cuda.device_array(x["w"], p.dtype)
    y = _cuda.empty((p.n, p.c_out, p.oh, p.ow), p.dtype)
    kernel = _cuda.function("conv2d.cu", direct_name(p.dtype, p.ksize))
    grid = (p.n * ((p.oh * p.ow + BLOCK - 1) // BLOCK), (p.c_out + KB - 1) // KB)
    args = (xd, wd, y) + _dims(p)

    def enqueue() -> None:
        kernel(grid, (BLOCK,), args)
    return Prepared(run=_cuda.blocking(enqueue), output=lambda: _cuda.host(y),
                    keep=[xd, wd, y], graph=True)


def im2col_grid(p: Conv2dParams) -> tuple[tuple[int, int], tuple[int]]:
    """kernels/conv2d.cu im2col: x over tiles of BLOCK output pixels, y over images (at most 65535;
    the kernel strides over the rest)."""
    if p.oh * p.ow >= 2 ** 31:
        raise UsageError(f"conv2d: {p.oh}x{p.ow} output pixels per image; im2col indexes them in 32 bits")
    return ((p.oh * p.ow + BLOCK - 1) // BLOCK, min(p.n, 65535)), (BLOCK,)


def cuda_kernels(p: Conv2dParams) -> int:
    """Kernels one call of the CUDA runner of `p.impl` enqueues: direct 1; im2col the unfolding
    kernel (none for a pointwise GEMM) and one strided-batched GEMM; cuDNN its convolution's."""
    from gpuroof.workloads._cuda import CUDNN_KERNELS, GEMM_KERNELS
    if p.impl == "im2col-cublas":
        return (0 if p.is_pointwise_gemm else 1) + GEMM_KERNELS
    return CUDNN_KERNELS if p.impl == "cudnn" else 1


def _cuda_im2col(backend, p: Conv2dParams, x: dict) -> Prepared:
    """The unfolding kernel (skipped for a pointwise GEMM), then ONE strided-batched cuBLAS GEMM over
    all images with the weights shared (stride 0): two launches per call, whatever the batch."""
    from gpuroof.workloads import _cuda

    xd, wd = _cuda.device_array(x["x"], p.dtype), _cuda.device_array(x["w"], p.dtype)
    y = _cuda.empty((p.n, p.c_out, p.oh, p.ow), p.dtype)
    wmat = wd.reshape(p.c_out, -1)
    keep = [xd, wd, y]
    if p.is_pointwise_gemm:
        cols = xd.reshape(p.n, p.c_in, p.h * p.w)
        unfold_launch = None
    else:
        ckk = p.c_in * p.ksize * p.ksize
        cols = _cuda.empty((p.n, ckk, p.oh * p.ow), p.dtype, fill_nan=False)
        kernel = _cuda.function("conv2d.cu", im2col_name(p.dtype))
        grid, block = im2col_grid(p)
        i = np.int32
        args = (xd, cols, i(p.n), i(p.c_in), i(p.h), i(p.w), i(p.ksize), i(p.oh), i(p.ow), i(p.stride),
                i(p.pad))
        unfold_launch = (kernel, grid, block, args)
        keep.append(cols)
    y3 = y.reshape(p.n, p.c_out, p.oh * p.ow)
    gemm = _cuda.gemm(wmat, cols, y3, p.dtype)

    def enqueue() -> None:
        if unfold_launch is not None:
            kernel, grid, block, args = unfold_launch
            kernel(grid, block, args)
        gemm()
    return Prepared(run=_cuda.blocking(enqueue, _cuda.cublas_modes(), cuda_kernels(p)),
                    output=lambda: _cuda.host(y), keep=keep + [gemm])


def cudnn_available() -> bool:
    """True when cupy still ships its cuDNN wrapper (removed in CuPy v14) and libcudnn loads."""
    try:
        import cupy.cudnn  # noqa: F401
        from cupy.cuda import cudnn  # noqa: F401  # raises when the shared library is missing
    except Exception:
        return False
    return True


def _cuda_cudnn(backend, p: Conv2dParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cuda
    import cupy.cudnn as cudnn

    xd, wd = _cuda.device_array(x["x"], p.dtype), _cuda.device_array(x["w"], p.dtype)
    y = _cuda.empty((p.n, p.c_out, p.oh, p.ow), p.dtype)
    pad, stride = (p.pad, p.pad), (p.stride, p.stride)

    def enqueue() -> None:
        # tensor_core='never' keeps float32 on FP32 math (TF32 would fail the float32 tolerance).
        cudnn.convolution_forward(xd, wd, None, y, pad, stride, (1, 1), 1, auto_tune=True,
                                  tensor_core="never")
    return Prepared(run=_cuda.blocking(enqueue, kernels=cuda_kernels(p)), output=lambda: _cuda.host(y),
                    keep=[xd, wd, y])


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------

#: Per backend and size: image height = width, channel counts, smallest batch, and the smallest input
#: tensor. The batch grows for few channels until the input is at least that large, so a
#: single-channel layer moves enough data to be timed against DRAM (with the rotating copies)
#: rather than against call overhead.
SHAPES = {
    ("cpu", "small"): (64, (1, 8, 64), 1, 1 << 20),
    ("cpu", "default"): (56, (1, 16, 64, 256), 1, 4 << 20),
    ("cpu", "large"): (56, (1, 16, 64, 256, 512), 1, 16 << 20),
    ("cuda", "small"): (56, (1, 16, 64, 256), 8, 32 << 20),
    ("cuda", "default"): (56, (1, 16, 64, 256, 512), 32, 128 << 20),
    ("cuda", "large"): (56, (1, 16, 64, 256, 512), 64, 512 << 20),
}


def batch_for(channels: int, hw: int, min_batch: int, min_input_bytes: int, dtype: str = "float32") -> int:
    """Images per launch: at least `min_batch`, and enough that the input holds `min_input_bytes`."""
    per_image = channels * hw * hw * ITEMSIZE[dtype]
    return max(min_batch, -(-min_input_bytes // per_image))


def pairs(n: int, hw: int, channels: int, impl: str, dtype: str = "float32") -> tuple[Conv2dParams, Conv2dParams]:
    """3x3 (padding 1) and 1x1 (no padding) on the same input and output shapes."""
    return (Conv2dParams(n, channels, channels, hw, hw, 3, 1, 1, dtype, impl),
            Conv2dParams(n, channels, channels, hw, hw, 1, 1, 0, dtype, impl))


def impls_for(backend: str) -> tuple[str, ...]:
    if backend == "cpu":
        return ("direct", "im2col")
    return ("direct", "im2col-cublas", "cudnn") if cudnn_available() else ("direct", "im2col-cublas")


def cases(size: str, backend: str, cache_bytes: int = 0) -> list[Conv2dParams]:
    hw, chans, min_batch, min_input = SHAPES[(backend, size)]
    out: list[Conv2dParams] = []
    for impl in impls_for(backend):
        for c in chans:
            out += pairs(batch_for(c, hw, min_batch, min_input), hw, c, impl)
        n = batch_for(64, hw, min_batch, min_input)
        out.append(Conv2dParams(n, 64, 128, hw, hw, 3, 2, 1, "float32", impl))  # a strided layer
    return out


def _runners() -> dict:
    cuda = {"direct": _cuda_direct, "im2col-cublas": _cuda_im2col, "cudnn": _cuda_cudnn}
    return {"cpu": {"direct": _cpu_direct, "im2col": _cpu_im2col}, "cuda": cuda}


CONV2D = Workload(
    name="conv2d", doc=__doc__.splitlines()[0], params=Conv2dParams, flops=flops, traffic=traffic,
    unit=unit, tolerance=tol, inputs=inputs, reference=reference, runners=_runners(), cases=cases,
    device_bytes=device_bytes,
)
