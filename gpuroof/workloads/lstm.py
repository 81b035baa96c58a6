"""An LSTM-like recurrence: per step, one gates GEMM [x_t, h] W plus one fused pointwise kernel, T steps.

The gates GEMM is (B x (I+H)) times ((I+H) x 4H); the pointwise kernel adds the bias, applies
sigmoid/tanh, updates the cell and writes h (kernels/lstm.cu; numba on the CPU). Every step must
stream the weights while doing only 2B FLOPs per weight, so the intensity grows with the batch B:
a batch sweep walks the point up the memory slope.

Layout: one buffer XH of shape (T+1, B, I+H) holds x_t in its first I columns and h_t in the last
H; the GEMM of step t reads XH[t] and the pointwise kernel writes h_{t+1} into XH[t+1], so no copy
joins x and h. The cell state is updated in place; step 0 reads c0, so every launch starts from the
same state and repeats give identical outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpuroof.backends.base import ITEMSIZE
from gpuroof.workloads.base import (Prepared, Traffic, Workload, check_dtype, check_impl,
                                    check_positive, library_unit, quantize, random_inputs,
                                    sample_rows, to_storage, tolerance)

IMPLS = ("blas", "cublas")

#: FLOPs of the pointwise part per (batch row, hidden unit): 4 bias adds, 3 sigmoids and 2 tanh
#: (one each), c' = f*c + i*g (a multiply and an FMA: 3), h' = o*tanh(c') (1).
POINTWISE_FLOPS = 4 + 5 + 3 + 1

#: Batch rows the float64 reference follows through all steps (rows are independent).
REF_ROWS = 16

BLOCK = 256


@dataclass(frozen=True)
class LstmParams:
    batch: int
    input_size: int
    hidden: int
    steps: int
    dtype: str = "float32"
    impl: str = "blas"

    def __post_init__(self) -> None:
        check_positive("lstm", batch=self.batch, input_size=self.input_size, hidden=self.hidden,
                       steps=self.steps)
        check_dtype("lstm", self.dtype)
        check_impl("lstm", self.impl, IMPLS)

    @property
    def label(self) -> str:
        return f"{self.impl} B={self.batch} I={self.input_size} H={self.hidden} T={self.steps}"


def flops(p: LstmParams) -> int:
    gemm = 2 * p.batch * (p.input_size + p.hidden) * 4 * p.hidden
    return p.steps * (gemm + POINTWISE_FLOPS * p.batch * p.hidden)


def traffic(p: LstmParams) -> Traffic:
    """Per step: read x_t, h, c and the weights and bias; write h and c. Times T."""
    s, b, i, h = ITEMSIZE[p.dtype], p.batch, p.input_size, p.hidden
    return Traffic(input_bytes=p.steps * s * (b * i + 2 * b * h),
                   weight_bytes=p.steps * s * ((i + h) * 4 * h + 4 * h),
                   output_bytes=p.steps * s * 2 * b * h)


def unit(p: LstmParams) -> str:
    return library_unit(p.dtype, gpu=p.impl == "cublas")  # the gates GEMM: nearly all the FLOPs


def tol(p: LstmParams) -> float:
    # Gates and state are rounded to the storage dtype every step; sigmoid/tanh are contractions,
    # so errors add up over the steps rather than grow: sqrt(T) stages' worth.
    return tolerance(p.dtype, p.input_size + p.hidden, depth=int(np.ceil(np.sqrt(p.steps))))


def inputs(p: LstmParams, rng: np.random.Generator) -> dict:
    k = p.input_size + p.hidden
    return {"x": random_inputs(rng, p.dtype, (p.steps, p.batch, p.input_size)),
            "h0": random_inputs(rng, p.dtype, (p.batch, p.hidden)),
            "c0": random_inputs(rng, p.dtype, (p.batch, p.hidden)),
            "w": random_inputs(rng, p.dtype, (k, 4 * p.hidden), scale=np.sqrt(3.0 / k)),
            "bias": random_inputs(rng, p.dtype, (4 * p.hidden,), scale=0.5)}


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def reference(p: LstmParams, x: dict, round_to: str | None = None) -> tuple:
    """h_1..h_T and c_T for a sample of batch rows, as one (T+1, rows, H) array.

    `round_to` rounds the gates and the state to a dtype each step, as a kernel storing them in
    that dtype does (used to check that the tolerance covers that rounding).
    """
    rows = sample_rows(p.batch, REF_ROWS)
    q = (lambda v: quantize(v, round_to)) if round_to else (lambda v: v)
    h, c = x["h0"][rows], x["c0"][rows]
    hid = p.hidden
    out = np.empty((p.steps + 1, len(rows), hid))
    for t in range(p.steps):
        g = q(np.concatenate([x["x"][t][rows], h], axis=1) @ x["w"]) + x["bias"]
        i, f = _sigmoid(g[:, :hid]), _sigmoid(g[:, hid:2 * hid])
        gg, o = np.tanh(g[:, 2 * hid:3 * hid]), _sigmoid(g[:, 3 * hid:])
        c = q(f * c + i * gg)
        h = q(o * np.tanh(c))
        out[t] = h
    out[p.steps] = c
    return (slice(None), rows, slice(None)), out


def device_bytes(p: LstmParams) -> int:
    s, b, i, h = ITEMSIZE[p.dtype], p.batch, p.input_size, p.hidden
    return s * ((p.steps + 1) * b * (i + h) + (i + h) * 4 * h + 4 * h + b * 4 * h + 2 * b * h)


def _host_buffers(p: LstmParams, x: dict) -> dict:
    """XH (T+1, B, I+H) with x_t and h0 in place, plus weights, bias, c0 in storage form."""
    i = p.input_size
    xh = np.zeros((p.steps + 1, p.batch, i + p.hidden))
    xh[:p.steps, :, :i] = x["x"]
    xh[0, :, i:] = x["h0"]
    xh[1:, :, i:] = np.nan  # h_1..h_T are the output: a step that never writes its h fails the check
    return {"xh": to_storage(xh, p.dtype), "w": to_storage(x["w"], p.dtype),
            "bias": to_storage(x["bias"], p.dtype), "c0": to_storage(x["c0"], p.dtype)}


def _cpu_blas(backend, p: LstmParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cpu_kernels as k

    hb = _host_buffers(p, x)
    xh, w, bias, c0 = hb["xh"], hb["w"], hb["bias"], hb["c0"]
    gates = np.empty((p.batch, 4 * p.hidden), dtype=xh.dtype)
    c = np.full((p.batch, p.hidden), np.nan, dtype=xh.dtype)
    i, steps = p.input_size, p.steps

    def run() -> None:
        for t in range(steps):
            np.matmul(xh[t], w, out=gates)
            k.lstm_pointwise(gates, bias, c0 if t == 0 else c, c, xh[t + 1, :, i:])

    def output() -> np.ndarray:
        return np.concatenate([xh[1:, :, i:], c[None]], axis=0)
    return Prepared(run=run, output=output, keep=[xh, w, bias, c0, gates, c])


def pointwise_name(dtype: str) -> str:
    from gpuroof.workloads._cuda import CUDA_TYPE
    return f"lstm_pointwise<{CUDA_TYPE[dtype]}>"


def cuda_kernels(p: LstmParams) -> int:
    """Kernels one call of the CUDA runner enqueues: per step the gates' GEMM and the pointwise cell."""
    from gpuroof.workloads._cuda import GEMM_KERNELS
    return p.steps * (GEMM_KERNELS + 1)


def _cuda_cublas(backend, p: LstmParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cuda

    cp = _cuda.cupy()
    hb = {k: cp.asarray(v) for k, v in _host_buffers(p, x).items()}
    xh, w, bias, c0 = hb["xh"], hb["w"], hb["bias"], hb["c0"]
    gates = _cuda.empty((p.batch, 4 * p.hidden), p.dtype, fill_nan=False)
    c = _cuda.empty((p.batch, p.hidden), p.dtype)
    i, hid = p.input_size, p.hidden
    gemms = [_cuda.gemm(xh[t], w, gates, p.dtype) for t in range(p.steps)]
    kernel = _cuda.function("lstm.cu", pointwise_name(p.dtype))
    grid, block = _cuda.grid_1d(p.batch * hid, BLOCK)
    ldh = np.int32(i + hid)
    # h_{t+1} goes to XH[t+1, :, I:]: a pointer I elements into row 0 of that slice, row stride I+H.
    pw_args = [(gates, bias, c0 if t == 0 else c, c, xh[t + 1, :, i:], ldh, np.int32(p.batch),
                np.int32(hid)) for t in range(p.steps)]

    def enqueue() -> None:
        for gemm, args in zip(gemms, pw_args):
            gemm()
            kernel(grid, block, args)

    def output() -> np.ndarray:
        h = _cuda.host(xh[1:, :, i:])
        return np.concatenate([h, _cuda.host(c)[None]], axis=0)
    return Prepared(run=_cuda.blocking(enqueue, _cuda.cublas_modes(), cuda_kernels(p)), output=output,
                    keep=[hb, gates, c, gemms, pw_args])


def cases(size: str, backend: str, cache_bytes: int = 0) -> list[LstmParams]:
    if backend == "cpu":
        width, steps, batches = {"small": (512, 8, (1, 8, 64)),
                                 "default": (1024, 8, (1, 4, 16, 64, 256)),
                                 "large": (2048, 16, (1, 4, 16, 64, 256, 1024))}[size]
        return [LstmParams(b, width, width, steps, "float32", "blas") for b in batches]
    width, steps, batches = {"small": (1024, 16, (1, 8, 64, 256)),
                             "default": (2048, 32, (1, 4, 16, 64, 256, 1024)),
                             "large": (4096, 32, (1, 4, 16, 64, 256, 1024, 4096))}[size]
    return [LstmParams(b, width, width, steps, d, "cublas") for d in ("float32", "float16")
            for b in batches]


LSTM = Workload(
    name="lstm", doc=__doc__.splitlines()[0], params=LstmParams, flops=flops, traffic=traffic,
    unit=unit, tolerance=tol, inputs=inputs, reference=reference,
    runners={"cpu": {"blas": _cpu_blas}, "cuda": {"cublas": _cuda_cublas}}, cases=cases,
    device_bytes=device_bytes, reuse_within_launch=True,
)
