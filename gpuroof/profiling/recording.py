"""Recording a model's ops as the dispatcher runs them: FLOPs, compulsory bytes, unit, module and phase."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuroof.profiling import need_torch as _torch
from gpuroof.workloads.base import accumulate_unit, library_unit

if TYPE_CHECKING:
    import torch


@dataclass
class OpRecord:
    """One op instance as the dispatcher ran it."""

    op: str  # "aten::addmm"
    module: str
    phase: str  # forward | backward
    flops: int
    bytes: int
    dtype: str
    unit: str
    view: bool
    input_shapes: str


def _distinct_bytes(t: "torch.Tensor") -> int:
    """Bytes of the distinct elements a tensor addresses: a broadcast (stride-0) dimension counts once."""
    if t.is_sparse or not t.layout == _torch().strided:
        return int(t.numel() * t.element_size())
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return int(n * t.element_size()) if t.numel() else 0


def _dtype_name(dtype: "torch.dtype") -> str:
    return str(dtype).replace("torch.", "")


def _storage(t: "torch.Tensor") -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


class _Recorder:
    """A TorchDispatchMode (below autograd, so forward and backward ops alike) that records each op
    the model runs, on top of a FlopCounterMode: the counter's total before and after each op is that
    op's FLOPs, so the records add up to FlopCounterMode's total by construction, decompositions
    included, and the op stream recorded is the one that runs without the counter."""

    def __init__(self, counter: Any, device_type: str):
        from torch.utils._python_dispatch import TorchDispatchMode

        torch = _torch()
        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return recorder.dispatch(func, args, kwargs or {})

        self.mode = Mode()
        self.counter = counter
        self.gpu = device_type == "cuda"
        self.records: list[OpRecord] = []
        # float32 GEMMs run on tf32 tensor cores when the matmul precision allows it ("high"),
        # float32 convolutions when cuDNN's flag does (its default)
        self.tf32 = self.gpu and torch.get_float32_matmul_precision() != "highest"
        self.tf32_conv = self.gpu and bool(getattr(torch.backends.cudnn, "allow_tf32", False))

    def __enter__(self) -> "_Recorder":
        self.counter.__enter__()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.mode.__exit__(*exc)
        finally:
            self.counter.__exit__(*exc)

    def _module(self) -> str:
        parents = [p for p in self.counter.mod_tracker.parents if p != "Global"]
        return max(parents, key=lambda p: (p.count("."), len(p))) if parents else "(top level)"

    def _unit(self, op: str, dtype: str, flops: int) -> str:
        """Ops FlopCounterMode counts (GEMM, convolution, attention, fused RNN) run in a library on
        the matrix unit (BLAS on a CPU; tensor cores for 16-bit and tf32 on a GPU); the rest is
        elementwise work on the vector unit (16-bit data computed in float32)."""
        if dtype not in ("float64", "float32", "float16", "bfloat16"):
            return "float32"  # integer and bool ops count no FLOPs: only the bandwidth slope matters
        if flops <= 0:
            return accumulate_unit(dtype)
        if self.gpu and dtype == "float32":
            conv = "conv" in op
            if (conv and self.tf32_conv) or (not conv and self.tf32):
                return "tf32-matrix"
        return library_unit(dtype, gpu=self.gpu)

    def dispatch(self, func: Any, args: tuple, kwargs: dict) -> Any:
        from torch.utils._pytree import tree_leaves

        torch = _torch()
        before = self.counter.get_total_flops()
        out = func(*args, **kwargs)
        flops = int(self.counter.get_total_flops() - before)
        ins = [t for t in tree_leaves((args, {k: v for k, v in kwargs.items() if k != "out"}))
               if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        seen: dict = {}
        for t in ins:  # a tensor passed twice (x * x) is read once
            key = (_storage(t), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
            seen.setdefault(key, t)
        in_storages = {_storage(t) for t in ins}
        mutable = func._schema.is_mutable
        view = bool(outs) and not mutable and all(_storage(t) in in_storages for t in outs) and flops == 0
        nbytes = 0 if view else sum(_distinct_bytes(t) for t in seen.values()) + \
            sum(_distinct_bytes(t) for t in outs)
        floats = [t for t in outs + ins if t.is_floating_point()]
        dtype = _dtype_name((floats or outs or ins)[0].dtype) if (floats or outs or ins) else "float32"
        op = func._schema.name
        self.records.append(OpRecord(
            op=op, module=self._module(), phase="backward" if self.counter.mod_tracker.is_bw else "forward",
            flops=flops, bytes=int(nbytes), dtype=dtype, unit=self._unit(op, dtype, flops), view=view,
            input_shapes=" ".join("x".join(map(str, t.shape)) or "scalar" for t in ins)))
        return out


