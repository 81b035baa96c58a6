"""An MLP: a chain of square layers y = act(x W + b), ReLU on every layer but the last.

Each layer is a library GEMM followed by a bias+activation epilogue (numba on the CPU, the
`bias_act` kernel of kernels/gemm.cu on CUDA). With a small batch the chain streams its weights
(memory slope); with a large one it is a string of square GEMMs (compute roof).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpuroof.backends.base import ITEMSIZE
from gpuroof.workloads.base import (Prepared, Traffic, Workload, check_dtype, check_impl,
                                    check_positive, library_unit, random_inputs, sample_rows,
                                    to_storage, tolerance)

IMPLS = ("blas", "cublas")
REF_ROWS = 64


@dataclass(frozen=True)
class MlpParams:
    batch: int
    width: int
    layers: int
    dtype: str = "float32"
    impl: str = "blas"

    def __post_init__(self) -> None:
        check_positive("mlp", batch=self.batch, width=self.width, layers=self.layers)
        check_dtype("mlp", self.dtype)
        check_impl("mlp", self.impl, IMPLS)

    @property
    def label(self) -> str:
        return f"{self.impl} B={self.batch} d={self.width} L={self.layers}"


def flops(p: MlpParams) -> int:
    """Per layer: the GEMM (2 B d d) and the bias add (B d); max(x, 0) is a comparison, 0 FLOPs."""
    return p.layers * (2 * p.batch * p.width * p.width + p.batch * p.width)


def traffic(p: MlpParams) -> Traffic:
    """The input read once, every weight and bias read once, the last activation written once."""
    s = ITEMSIZE[p.dtype]
    return Traffic(input_bytes=s * p.batch * p.width,
                   weight_bytes=s * p.layers * (p.width * p.width + p.width),
                   output_bytes=s * p.batch * p.width)


def unit(p: MlpParams) -> str:
    return library_unit(p.dtype, gpu=p.impl == "cublas")


def tol(p: MlpParams) -> float:
    return tolerance(p.dtype, p.width, depth=p.layers)


def inputs(p: MlpParams, rng: np.random.Generator) -> dict:
    scale = np.sqrt(6.0 / p.width)  # He-uniform: activations keep their size through ReLU layers
    return {"x": random_inputs(rng, p.dtype, (p.batch, p.width)),
            "w": random_inputs(rng, p.dtype, (p.layers, p.width, p.width), scale=scale),
            "b": random_inputs(rng, p.dtype, (p.layers, p.width), scale=0.1)}


def reference(p: MlpParams, x: dict) -> tuple:
    rows = sample_rows(p.batch, REF_ROWS)
    a = x["x"][rows]
    for layer in range(p.layers):
        a = a @ x["w"][layer] + x["b"][layer]
        if layer < p.layers - 1:
            a = np.maximum(a, 0.0)
    return (rows, slice(None)), a


def device_bytes(p: MlpParams) -> int:
    return traffic(p).total + 2 * ITEMSIZE[p.dtype] * p.batch * p.width  # two ping-pong activations


def _cpu_blas(backend, p: MlpParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cpu_kernels as k

    xs, ws, bs = (to_storage(x[n], p.dtype) for n in ("x", "w", "b"))
    acts = [np.full((p.batch, p.width), np.nan, dtype=xs.dtype) for _ in range(2)]
    layers = p.layers

    def run() -> None:
        cur = xs
        for layer in range(layers):
            nxt = acts[layer % 2]
            np.matmul(cur, ws[layer], out=nxt)
            k.bias_act(nxt, bs[layer], layer < layers - 1)
            cur = nxt
    return Prepared(run=run, output=lambda: acts[(layers - 1) % 2], keep=[xs, ws, bs, acts])


def bias_act_name(dtype: str, relu: bool) -> str:
    from gpuroof.workloads._cuda import CUDA_TYPE
    return f"bias_act<{CUDA_TYPE[dtype]}, {'true' if relu else 'false'}>"


def cuda_kernels(p: MlpParams) -> int:
    """Kernels one call of the CUDA runner enqueues: per layer its GEMM and the bias-activation kernel."""
    from gpuroof.workloads._cuda import GEMM_KERNELS
    return p.layers * (GEMM_KERNELS + 1)


def _cuda_cublas(backend, p: MlpParams, x: dict) -> Prepared:
    from gpuroof.workloads import _cuda

    xs, ws, bs = (_cuda.device_array(x[n], p.dtype) for n in ("x", "w", "b"))
    acts = [_cuda.empty((p.batch, p.width), p.dtype) for _ in range(2)]
    steps = []
    cur = xs
    for layer in range(p.layers):
        nxt = acts[layer % 2]
        relu = layer < p.layers - 1
        kernel = _cuda.function("gemm.cu", bias_act_name(p.dtype, relu))
        total = p.batch * p.width
        grid, block = _cuda.grid_1d(total)
        steps.append((_cuda.gemm(cur, ws[layer], nxt, p.dtype), kernel, grid, block,
                      (nxt, bs[layer], np.int64(total), np.int32(p.width))))
        cur = nxt

    def enqueue() -> None:
        for gemm, kernel, grid, block, args in steps:
            gemm()
            kernel(grid, block, args)
    last = acts[(p.layers - 1) % 2]
    return Prepared(run=_cuda.blocking(enqueue, _cuda.cublas_modes(), cuda_kernels(p)),
                    output=lambda: _cuda.host(last),
                    keep=[xs, ws, bs, acts, steps])


def cases(size: str, backend: str, cache_bytes: int = 0) -> list[MlpParams]:
    if backend == "cpu":
        width, batches = {"small": (1024, (1, 64, 512)), "default": (2048, (1, 32, 256, 2048)),
                          "large": (4096, (1, 32, 256, 2048, 4096))}[size]
        return [MlpParams(b, width, 4, "float32", "blas") for b in batches]
    width, batches = {"small": (2048, (1, 64, 1024, 4096)), "default": (4096, (1, 16, 256, 2048, 8192)),
                      "large": (8192, (1, 16, 256, 2048, 8192, 16384))}[size]
    return [MlpParams(b, width, 4, d, "cublas") for d in ("float32", "float16") for b in batches]


MLP = Workload(
    name="mlp", doc=__doc__.splitlines()[0], params=MlpParams, flops=flops, traffic=traffic,
    unit=unit, tolerance=tol, inputs=inputs, reference=reference,
    runners={"cpu": {"blas": _cpu_blas}, "cuda": {"cublas": _cuda_cublas}}, cases=cases,
    device_bytes=device_bytes,
)
