"""Recording a model's ops as the dispatcher runs them: FLOPs, compulsory bytes, unit, module and phase."""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuroof.errors import UsageError
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
    if t.is_nested or t.is_sparse or not t.layout == _torch().strided:  # no strides to read: every element
        return int(t.numel() * t.element_size())
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return int(n * t.element_size()) if t.numel() else 0


def _shape_text(t: "torch.Tensor") -> str:
    if t.is_nested:
        return f"nested({t.size(0)})"
    return "x".join(map(str, t.shape)) or "scalar"


def _dtype_name(dtype: "torch.dtype") -> str:
    return str(dtype).replace("torch.", "")


def _storage(t: "torch.Tensor") -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


TOP_LEVEL = "(top level)"


def split_inputs(inputs: Any) -> tuple[tuple, dict]:
    """(args, kwargs) of the model's call from what the model function returned: a tensor (one
    positional argument), a dict (keyword arguments, as a tokenizer's output is passed), a tuple or
    list (positional arguments), or a pair (tuple or list of args, dict of kwargs)."""
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        if len(inputs) == 2 and isinstance(inputs[0], (tuple, list)) and isinstance(inputs[1], dict):
            return tuple(inputs[0]), dict(inputs[1])
        return tuple(inputs), {}
    if inputs is None:
        raise UsageError("inputs: None (allowed: a tensor, a tuple of positional arguments, a dict of keyword "
                         "arguments, or (args, kwargs))")
    return (inputs,), {}


def move_inputs(args: tuple, kwargs: dict, dev: Any) -> tuple[tuple, dict]:
    """Every tensor in the arguments, nested ones too, moved to `dev`."""
    from torch.utils._pytree import tree_map

    torch = _torch()
    return tree_map(lambda t: t.to(dev) if isinstance(t, torch.Tensor) else t, (args, kwargs))


class _Recorder:
    """A TorchDispatchMode (below autograd, so forward and backward ops alike) that records each op
    the model runs, on top of a FlopCounterMode: the counter's total before and after each op is that
    op's FLOPs, so the records add up to FlopCounterMode's total by construction, decompositions
    included, and the op stream recorded is the one that runs without the counter."""

    def __init__(self, counter: Any, device_type: str, model: Any = None):
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
        # backward ops are attributed to the module whose forward op made their autograd node:
        # a node's sequence number is taken when it is made, just before its op is dispatched
        self.in_backward = False  # set by the caller before it calls backward()
        self._fwd_seq: list[int] = []
        self._fwd_module: list[str] = []
        root = type(model).__name__ if model is not None else ""
        self._param_module = {} if model is None else {
            id(p): ".".join([root, *name.split(".")[:-1]]) for name, p in model.named_parameters()}
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
        return max(parents, key=lambda p: (p.count("."), len(p))) if parents else TOP_LEVEL

    def _backward_module(self, node: Any) -> str:
        """The forward module of the autograd node running now: a parameter's gradient accumulation
        belongs to the parameter's module; any other node to the module of the forward op that
        made it (the first op dispatched after its sequence number was taken)."""
        if node is None:
            return TOP_LEVEL  # backward() itself (the seed gradient), before the engine runs a node
        var = getattr(node, "variable", None)
        if var is not None:
            return self._param_module.get(id(var), TOP_LEVEL)
        i = bisect.bisect_left(self._fwd_seq, node._sequence_nr() + 1)
        return self._fwd_module[i] if i < len(self._fwd_module) else TOP_LEVEL

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
        node = torch._C._current_autograd_node()
        backward = self.in_backward or node is not None
        if backward:
            module = self._backward_module(node)
        else:
            module = self._module()
            self._fwd_seq.append(torch._C._autograd._get_sequence_nr())
            self._fwd_module.append(module)
        before = self.counter.get_total_flops()
        out = func(*args, **kwargs)
        flops = int(self.counter.get_total_flops() - before)
        ins = [t for t in tree_leaves((args, {k: v for k, v in kwargs.items() if k != "out"}))
               if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        seen: dict = {}
        for t in ins:  # a tensor passed twice (x * x) is read once
            key = (_storage(t), id(t)) if t.is_nested else \
                (_storage(t), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
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
            op=op, module=module, phase="backward" if backward else "forward",
            flops=flops, bytes=int(nbytes), dtype=dtype, unit=self._unit(op, dtype, flops), view=view,
            input_shapes=" ".join(_shape_text(t) for t in ins)))
        return out


