"""`gpuroof profile`: every op of a PyTorch model's forward (and backward) placed on the measured roofline."""
from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gpuroof.bench import newest_run, place_case, same_device
from gpuroof.errors import UsageError
from gpuroof.hostbound import host_bound, note as host_bound_note
from gpuroof.output import emit_json, results_root
from gpuroof.results import (Run, atomic_write_bytes, atomic_write_csv, atomic_write_text, dumps, load_run,
                             slug)
from gpuroof.roofline import Roofline
from gpuroof.units import si, text_table
from gpuroof.workloads.base import accumulate_unit, library_unit

if TYPE_CHECKING:  # torch is an optional extra (gpuroof[torch]); imported when a model is profiled
    import torch

#: What the numbers mean, written into profile.json.
CONVENTIONS = {
    "flops": "torch.utils.flop_counter.FlopCounterMode (matmul, convolution, attention; an FMA counts 2; "
             "elementwise ops count 0), with a formula added for the fused RNN kernels (oneDNN, cuDNN): "
             "2 FLOPs per weight per token forward, 4 backward",
    "bytes": "compulsory traffic: each distinct input tensor read once, each output written once "
             "(broadcast dimensions counted once); a view moves no data",
    "time": "torch.profiler: device kernel time of the op on CUDA, the op's CPU time on a CPU; the median "
            "over the profiled repetitions",
    "aggregates": "sums over op instances; predicted time is the sum of each op's roofline time "
                  "max(FLOPs / compute ceiling, bytes / DRAM bandwidth); efficiency = predicted / measured",
}

#: Bound of an op that moves no data and does no FLOPs (a view): its time is dispatch overhead.
OVERHEAD = "overhead"

KINDS = ("op", "op_type", "module", "model")
COLUMNS = ["kind", "name", "op", "module", "phase", "index", "count", "dtype", "unit", "roof_unit", "level",
           "input_shapes", "flops", "bytes", "intensity", "time_s", "time_share", "achieved_flops",
           "achieved_bandwidth_Bps", "attainable_flops", "efficiency", "predicted_time_s",
           "measured_over_predicted", "lost_time_s", "bound", "above_roof", "cache_level",
           "cache_attainable_flops", "cache_efficiency", "notes", "host_bound"]
REPS = 5
WARMUP = 2
TOP = 10  # rows of the "where the time goes" table


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise UsageError("profiling needs PyTorch: pip install 'gpuroof[torch]'") from None
    return torch


# ---------------------------------------------------------------------------------------------
# FLOP formulas FlopCounterMode lacks: the fused RNN kernels nn.LSTM/nn.GRU run on
# ---------------------------------------------------------------------------------------------

def _tokens(input_shape: Any) -> int:
    return math.prod(input_shape[:-1])


def _mkldnn_rnn(input_shape, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's RNN layer (nn.LSTM/GRU on a CPU): the two gate GEMMs, 2 FLOPs per weight per token."""
    return 2 * _tokens(input_shape) * (math.prod(w_ih) + math.prod(w_hh))


def _mkldnn_rnn_backward(input_shape, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    """Its backward: the input gradient and the weight gradient, each as many FLOPs as the forward."""
    return 2 * _mkldnn_rnn(input_shape, w_ih, w_hh)


def _cudnn_rnn(input_shape, weights, *args, out_shape=None, **kwargs) -> int:
    """cuDNN's RNN (every layer and direction): 2 FLOPs per weight-matrix element per token."""
    return 2 * _tokens(input_shape) * sum(math.prod(w) for w in weights if len(w) == 2)


def _cudnn_rnn_backward(input_shape, weights, *args, out_shape=None, **kwargs) -> int:
    return 2 * _cudnn_rnn(input_shape, weights)


def flop_formulas() -> dict:
    """`custom_mapping` for FlopCounterMode: its registry has no entry for the fused RNN kernels,
    which would put a whole nn.LSTM at 0 FLOPs. Elementwise gate math is left out, as
    FlopCounterMode leaves out every elementwise op."""
    torch = _torch()
    aten = torch.ops.aten
    table = {"mkldnn_rnn_layer": _mkldnn_rnn, "mkldnn_rnn_layer_backward": _mkldnn_rnn_backward,
             "_cudnn_rnn": _cudnn_rnn, "_cudnn_rnn_backward": _cudnn_rnn_backward}
    return {getattr(aten, name): fn for name, fn in table.items() if hasattr(aten, name)}


def flop_counter() -> Any:
    """A FlopCounterMode with gpuroof's RNN formulas, not printing its table."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=flop_formulas())


# ---------------------------------------------------------------------------------------------
# recording: op instances with their FLOPs, bytes, module and phase
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# timing: torch.profiler events matched to the records
# ---------------------------------------------------------------------------------------------

SPAN = "gpuroof.profile.rep"


def _start(e: Any) -> float:
    return e.time_range.start


def _roots(span: Any, tops: list) -> list:
    """The events of one repetition, in time order: the span's children, and the top-level events
    of other threads inside it (the autograd engine runs a GPU's backward on its own thread)."""
    inside = [e for e in tops if e is not span and e.name != SPAN and e.thread != span.thread
              and span.time_range.start <= e.time_range.start <= span.time_range.end
              and str(getattr(e, "device_type", "CPU")).endswith("CPU")]  # host events, not kernels
    return sorted([*span.cpu_children, *inside], key=_start)


def _preorder(roots: list) -> tuple[list, list[int]]:
    """Events in pre-order (time order among siblings) and, for each, the index just past its subtree."""
    order: list = []
    ends: list[int] = []

    def visit(e: Any) -> None:
        k = len(order)
        order.append(e)
        ends.append(0)
        for c in sorted(e.cpu_children, key=_start):
            visit(c)
        ends[k] = len(order)

    for r in roots:
        visit(r)
    return order, ends


#: How many of the following ops a search for one op may not run past (see `match`).
LOOKAHEAD = 8


def match(ops: list[str], roots: list) -> list:
    """The profiler event of each recorded op, in order: a pre-order walk that takes the first event
    of the op's name and skips its subtree (the kernels it called), and walks into events that are
    not the op (composite ops such as aten::linear, whose parts the dispatcher recorded). An op the
    profiler records no event for (aten::detach inside an RNN) gets None: its search gives up at the
    first event named as one of the next ops, so it consumes nothing."""
    order, ends = _preorder(roots)
    found: list = [None] * len(ops)
    pos = 0
    for i, op in enumerate(ops):
        ahead = set(ops[i + 1:i + 1 + LOOKAHEAD]) - {op}
        k = pos
        while k < len(order):
            name = order[k].name
            if name == op:
                found[i] = order[k]
                pos = ends[k]
                break
            if name in ahead:
                break
            k += 1
    return found


def widen(found: list) -> list:
    """Each matched event replaced by its highest ancestor that holds no other matched event (below
    the repetition's span): aten::conv2d for its aten::convolution, the autograd node for its one
    kernel op. The wrapper's own dispatch time then belongs to the op it wraps, and the ops add up to
    the profiled time; a wrapper of several ops (aten::linear: t and addmm) keeps its own time."""
    count: dict[int, int] = {}
    for e in found:
        p = e.cpu_parent if e is not None else None
        while p is not None and p.name != SPAN:
            count[id(p)] = count.get(id(p), 0) + 1
            p = p.cpu_parent
    out = []
    for e in found:
        while e is not None and e.cpu_parent is not None and e.cpu_parent.name != SPAN \
                and count.get(id(e.cpu_parent)) == 1:
            e = e.cpu_parent
        out.append(e)
    return out


def _event_time(e: Any, gpu: bool) -> float:
    """Seconds: device (kernel) time on CUDA, CPU time on a CPU."""
    return (e.device_time_total if gpu else e.cpu_time_total) * 1e-6


# ---------------------------------------------------------------------------------------------
# the profile
# ---------------------------------------------------------------------------------------------

@dataclass
class ProfileResult:
    """Op instances, op types, modules and the whole model, each placed on the roofline."""

    name: str
    table: pd.DataFrame  # every row of profile.csv (kind: op | op_type | module | model)
    totals: dict
    device: dict
    ceilings: dict
    ceilings_source: str
    meta: dict = field(default_factory=dict)  # the ceilings run's run.json (for the figure)

    def rows(self, kind: str) -> pd.DataFrame:
        return self.table[self.table["kind"] == kind].reset_index(drop=True)

    @property
    def ops(self) -> pd.DataFrame:
        return self.rows("op")

    def to_json(self) -> dict:
        def recs(kind: str) -> list[dict]:
            return self.rows(kind).drop(columns=["kind"]).to_dict("records")

        return {"model": self.name, "device": self.device, "ceilings": self.ceilings,
                "ceilings_source": self.ceilings_source, "conventions": CONVENTIONS, "totals": self.totals,
                "op_types": recs("op_type"), "modules": recs("module"), "ops": recs("op")}

    def where_the_time_goes(self, top: int = TOP) -> str:
        return where_table(self.rows("op_type"), top)

    def summary(self) -> str:
        t = self.totals
        lines = [f"{self.name} on {self.device['name']} ({self.device['type']}), "
                 f"{t['phase']}: {t['ops']} ops, {si(t['flops'], 'FLOP')}, {si(t['bytes'], 'B')}",
                 f"  op time {_ms(t['time_s'])} (median per op) of {_ms(t['profiled_time_s'])} profiled "
                 f"({t['op_time_coverage']:.0%}), wall {_ms(t['wall_time_s'])}; roofline-predicted {_ms(t['predicted_time_s'])}: "
                 f"headroom {t['headroom']:.2f}x if every op ran at its roof",
                 f"  achieved {si(t['achieved_flops'], 'FLOP/s')}, {si(t['achieved_bandwidth_Bps'], 'B/s')}, "
                 f"intensity {t['intensity']:.3g} FLOP/B; ceilings {self.ceilings_source}"]
        if t.get("host_bound"):
            lines.append("  HOST-BOUND: " + host_bound_note(t["enqueue_s"], t["profiled_time_s"]))
        return "\n".join(lines)

    def write(self, out: str | Path, formats: tuple[str, ...] = ("png",)) -> dict[str, Path]:
        """profile.csv, profile.json and the figure, each written to a temporary name and renamed."""
        from gpuroof.plots import check_formats, render

        formats = check_formats(formats)
        path = Path(out)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"out {path}: not a writable directory ({e.strerror or e})") from None
        files = {"csv": path / "profile.csv", "json": path / "profile.json"}
        atomic_write_csv(files["csv"], self.table)
        drawn = figure(self)
        for fmt in formats:
            files[fmt] = path / f"profile.{fmt}"
            atomic_write_bytes(files[fmt], render(drawn, fmt))
        atomic_write_text(files["json"], dumps({**self.to_json(), "files": {k: str(v) for k, v in files.items()},
                                                "caption": drawn.caption}, indent=2) + "\n")
        return files


def _ms(s: float) -> str:
    return f"{s * 1e3:.4g} ms" if math.isfinite(s) else "-"


def _as_device(device: Any) -> "torch.device":
    torch = _torch()
    if device == "auto" or device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"device={device!r}: not a device (allowed: auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device={device!r}: torch sees no CUDA device here (allowed: auto, cpu)")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UsageError(f"device={device!r}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return torch.device("cuda", dev.index or 0)
    if dev.type != "cpu":
        raise UsageError(f"device={device!r}: gpuroof places cpu and cuda devices only (allowed: auto, cpu, "
                         "cuda, cuda:N)")
    return dev


def device_identity(dev: "torch.device") -> tuple[str, str, dict]:
    """(gpuroof backend name, device name as `measure` records it, device description)."""
    if dev.type == "cuda":
        torch = _torch()
        name = torch.cuda.get_device_name(dev.index or 0)
        return "cuda", name, {"type": "cuda", "index": dev.index or 0, "name": name}
    from gpuroof.backends.cpu import CpuBackend

    b = CpuBackend(0)
    try:
        name = b.device_info().get("name") or "cpu"
    finally:
        b.close()
    return "cpu", name, {"type": "cpu", "index": 0, "name": name}


def resolve_ceilings(backend: str, device_name: str, ceilings: str | Path | Run | None,
                     force: bool = False, arg: str = "ceilings") -> Run:
    """The run whose ceilings place the ops: `ceilings`, else the newest complete run for this device
    under results/ (as `bench` finds it); one measured on another device is refused unless forced."""
    if ceilings is None:
        run = newest_run(backend, device_name)
        if run is None:
            raise UsageError(f"{arg}: no complete run for {device_name!r} under {results_root() / slug(device_name)}/; "
                             f"run `gpuroof measure --backend {backend}` first, or pass a run directory")
    else:
        run = ceilings if isinstance(ceilings, Run) else load_run(ceilings)
    if run.meta.get("status") != "complete" or not run.meta.get("ceilings"):
        raise UsageError(f"{arg} {run.path}: the run is not complete or has no ceilings")
    if not force and not same_device(run, backend, device_name):
        raise UsageError(f"{arg} {run.path}: measured on {run.meta['device'].get('name')!r} "
                         f"({run.meta.get('backend')}), the model runs on {device_name!r} ({backend}); "
                         "pass a run of this device (or force it)")
    return run


def _move(inputs: Any, dev: "torch.device") -> tuple:
    torch = _torch()
    items = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    return tuple(t.to(dev) if isinstance(t, torch.Tensor) else t for t in items)


def _loss(out: Any) -> "torch.Tensor":
    """A scalar to call backward on: the sum of every floating-point output that needs a gradient."""
    from torch.utils._pytree import tree_leaves

    torch = _torch()
    parts = [t.float().sum() for t in tree_leaves(out)
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
    if not parts:
        raise UsageError("backward: the model's outputs need no gradient (no parameter or input requires grad)")
    return torch.stack(parts).sum()


def profile_model(model: Any, inputs: Any, *, device: Any = "auto", backward: bool = False,
                  ceilings: str | Path | Run | None = None, force: bool = False, reps: int = REPS,
                  warmup: int = WARMUP, name: str | None = None) -> ProfileResult:
    """Run `model(*inputs)` (and a backward of the sum of its outputs) under FlopCounterMode and
    torch.profiler and place every op on the device's measured roofline.

    model: an nn.Module (moved to `device`; without `backward` it runs under torch.no_grad());
    inputs: a tensor or a tuple of positional arguments (moved to `device`);
    device: auto | cpu | cuda | cuda:N; ceilings: a run directory (default: the newest complete run
    for this device under results/); reps: profiled repetitions, each op's time is their median.
    """
    torch = _torch()
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"model: {type(model).__name__} is not a torch.nn.Module")
    if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1:
        raise UsageError(f"reps={reps!r}: a positive integer")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 1:
        raise UsageError(f"warmup={warmup!r}: a positive integer (the first call is never timed)")
    dev = _as_device(device)
    backend, device_name, device_desc = device_identity(dev)
    run = resolve_ceilings(backend, device_name, ceilings, force)
    roof = Roofline.from_dict(run.meta["ceilings"])
    gpu = dev.type == "cuda"
    model = model.to(dev)
    args = _move(inputs, dev)

    def step() -> None:
        out = model(*args)
        if backward:
            _loss(out).backward()

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize(dev)

    grad = torch.enable_grad() if backward else torch.no_grad()
    with grad:
        try:
            for _ in range(warmup):  # lazy init, allocator, oneDNN/cuDNN plans: never timed
                step()
            sync()
        except UsageError:
            raise
        except Exception as e:  # the model's own failure is bad input: one line, naming the argument
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UsageError(f"inputs: model(*inputs) raised {type(e).__name__}: {first}"[:400]) from None
        with _Recorder(flop_counter(), dev.type) as rec:
            step()
            sync()
        records = rec.records
        if not records:
            raise UsageError("model: its forward ran no torch op; nothing to profile")
        counted = rec.counter.get_total_flops()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
        with torch_profile(activities=activities) as prof:
            for _ in range(reps):
                with record_function(SPAN):
                    step()
                sync()
    events = list(prof.events())
    tops = [e for e in events if e.cpu_parent is None]
    spans = sorted((e for e in tops if e.name == SPAN), key=_start)
    names = [r.op for r in records]
    times = np.full((len(spans), len(records)), np.nan)
    span_s, op_s = [], []
    for j, span in enumerate(spans):
        roots = _roots(span, tops)
        for i, e in enumerate(widen(match(names, roots))):
            if e is not None:
                times[j, i] = _event_time(e, gpu)
        op_s.append(sum(_event_time(e, gpu) for e in roots))
        span_s.append(span.cpu_time_total * 1e-6)
    table = _table(records, times, roof)
    label = name or type(model).__name__
    totals = _totals(table, op_s, span_s, np.nansum(times, axis=1).tolist(), counted, backward,
                     str(torch.__version__), gpu)
    table = pd.concat([table, _aggregate(table, "op", "op_type"), _aggregate(table, "module", "module"),
                       _model_row(table, totals)], ignore_index=True).reindex(columns=COLUMNS)
    return ProfileResult(name=label, table=table, totals=totals, device=device_desc,
                         ceilings=run.meta["ceilings"], ceilings_source=str(run.path), meta=run.meta)


def _table(records: list[OpRecord], times: np.ndarray, roof: Roofline) -> pd.DataFrame:
    """One row per op instance, placed with bench's place_case (views: overhead, nothing to place)."""
    rows = []
    for i, r in enumerate(records):
        col = times[:, i]
        ok = col[np.isfinite(col)]
        t = float(np.median(ok)) if len(ok) else math.nan
        spread = float((np.quantile(ok, 0.75) - np.quantile(ok, 0.25)) / t) if len(ok) > 1 and t > 0 else 0.0
        row: dict[str, Any] = {"kind": "op", "name": f"{r.op} #{i}", "op": r.op, "module": r.module,
                               "phase": r.phase, "index": i, "count": 1, "dtype": r.dtype, "unit": r.unit,
                               "input_shapes": r.input_shapes, "flops": r.flops, "bytes": r.bytes,
                               "time_s": t}
        notes: list[str] = []
        if not len(ok) and r.view:
            row.update(time_s=0.0, intensity=math.nan, predicted_time_s=0.0, bound=OVERHEAD, efficiency=math.nan,
                       above_roof=False, attainable_flops=math.nan, measured_over_predicted=math.nan)
            notes.append("a view the profiler records no event for: no time, no data moved")
        elif not len(ok):
            notes.append("not found in the profiler's events; not timed, not placed")
        elif r.view or (r.flops == 0 and r.bytes == 0):
            row.update(intensity=math.nan, predicted_time_s=0.0, bound=OVERHEAD, efficiency=0.0,
                       above_roof=False, achieved_flops=0.0, achieved_bandwidth_Bps=0.0,
                       attainable_flops=math.nan, measured_over_predicted=math.inf)
            notes.append("a view (no data moved, no FLOPs): its time is dispatch overhead")
        elif t <= 0:
            notes.append("the profiler gave it no time (no kernel); not placed")
        else:
            placed = place_case(roof, float(r.flops), float(r.bytes), t, r.unit, spread)
            notes += placed.pop("notes")
            row.update(placed)
            if r.flops == 0 and math.isfinite(row["predicted_time_s"]):
                # achieved / attainable is 0/0 at zero FLOPs; predicted / measured is the same ratio
                row["efficiency"] = row["predicted_time_s"] / t
                if row.get("cache_level"):
                    row["cache_efficiency"] = r.bytes / roof.bandwidth[row["cache_level"]] / t
                    notes = [n.replace("efficiency nan", f"efficiency {row['cache_efficiency']:.2f}") for n in notes]
        row["notes"] = "; ".join(notes)
        rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    total = df["time_s"].sum()
    df["time_share"] = df["time_s"] / total if total > 0 else math.nan
    df["lost_time_s"] = df["time_s"] - df["predicted_time_s"]
    return df


def _combine(g: pd.DataFrame) -> dict:
    """Placement fields of a group of op instances: they run one after another, so the roofline time
    of the group is the sum of its ops' roofline times."""
    placed = g[g["predicted_time_s"].notna()]
    flops, nbytes, t = float(g["flops"].sum()), float(g["bytes"].sum()), float(g["time_s"].sum())
    pred = float(placed["predicted_time_s"].sum())
    by_bound = placed.groupby("bound")["predicted_time_s"].sum()
    units = g.groupby("unit")["time_s"].sum()
    return {"count": int(len(g)), "dtype": ",".join(dict.fromkeys(g["dtype"].astype(str))),
            "unit": units.idxmax() if len(units) else None, "flops": flops, "bytes": nbytes,
            "intensity": flops / nbytes if nbytes else math.nan, "time_s": t,
            "achieved_flops": flops / t if t > 0 else math.nan,
            "achieved_bandwidth_Bps": nbytes / t if t > 0 else math.nan,
            "attainable_flops": flops / pred if pred > 0 else math.nan,
            "efficiency": pred / t if t > 0 else math.nan, "predicted_time_s": pred,
            "measured_over_predicted": t / pred if pred > 0 else math.inf, "lost_time_s": t - pred,
            "bound": by_bound.idxmax() if len(by_bound) and by_bound.max() > 0 else
            (OVERHEAD if len(placed) else None),
            "above_roof": bool(placed["above_roof"].fillna(False).astype(bool).any()),
            "notes": f"{int(len(g) - len(placed))} op(s) not placed" if len(placed) < len(g) else ""}


def _aggregate(ops: pd.DataFrame, key: str, kind: str) -> pd.DataFrame:
    total = ops["time_s"].sum()
    rows = []
    for value, g in ops.groupby(key, sort=False):
        row = {"kind": kind, "name": value, key: value, "phase": ",".join(dict.fromkeys(g["phase"])),
               **_combine(g)}
        row["time_share"] = row["time_s"] / total if total > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows).sort_values("time_s", ascending=False)


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def _totals(ops: pd.DataFrame, profiled_s: list[float], wall_s: list[float], matched_s: list[float],
            counted: int, backward: bool, torch_version: str, gpu: bool = False) -> dict:
    """Whole-model figures. profiled_time_s: the time the profiler gives the step's top-level events
    (device time on CUDA); wall_time_s: the step's span on the host clock, whose difference from
    the op time is Python and framework work between ops. op_time_coverage: per repetition, the
    time of the matched ops over the profiled time (the median over repetitions), so that a
    preemption in one repetition counts on both sides. On CUDA the step's host span is its enqueue
    time: host_bound says whether it reached 90% of the profiled device time (gpuroof.hostbound);
    on a CPU the host does the work and host_bound is None."""
    ratios = [m / p for m, p in zip(matched_s, profiled_s) if p > 0]
    c = _combine(ops)
    enqueue = _median(wall_s) if gpu else None
    return {"phase": "forward+backward" if backward else "forward", "ops": c["count"],
            "ops_placed": int(ops["bound"].notna().sum()), "ops_timed": int(ops["time_s"].notna().sum()),
            "flops": c["flops"], "flop_counter_total": int(counted), "bytes": c["bytes"],
            "intensity": c["intensity"], "time_s": c["time_s"], "profiled_time_s": _median(profiled_s), "wall_time_s": _median(wall_s),
            "op_time_coverage": _median(ratios), "rep_op_time_s": matched_s, "rep_profiled_time_s": profiled_s,
            "predicted_time_s": c["predicted_time_s"], "headroom": c["measured_over_predicted"],
            "efficiency": c["efficiency"], "achieved_flops": c["achieved_flops"],
            "achieved_bandwidth_Bps": c["achieved_bandwidth_Bps"], "attainable_flops": c["attainable_flops"],
            "bound": c["bound"], "reps": len(profiled_s), "torch": torch_version,
            "enqueue_s": enqueue, "host_bound": host_bound(enqueue, _median(profiled_s))}


def _model_row(ops: pd.DataFrame, totals: dict) -> pd.DataFrame:
    row = {"kind": "model", "name": "(whole model)", "phase": totals["phase"], **_combine(ops), "time_share": 1.0,
           "host_bound": totals.get("host_bound")}
    if totals.get("host_bound"):
        row["notes"] = "; ".join(filter(None, [row.get("notes"), host_bound_note(
            totals["enqueue_s"], totals["profiled_time_s"])]))
    return pd.DataFrame([row])


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

def _why(r: dict) -> str:
    if r["bound"] == OVERHEAD:
        return "views only: dispatch overhead, no data moved"
    if r["bound"] == "memory":
        return (f"memory-bound at {r['intensity']:.3g} FLOP/B: {si(r['achieved_bandwidth_Bps'], 'B/s')}, "
                f"{r['efficiency']:.0%} of its roofline time")
    if r["bound"] == "compute":
        return f"compute-bound ({r['unit']}): {si(r['achieved_flops'], 'FLOP/s')}, {r['efficiency']:.0%} of its roof"
    return r.get("notes") or "not placed"


def where_table(types: pd.DataFrame, top: int = TOP) -> str:
    """Op types by the time they lose against the roofline (measured - predicted), and why."""
    rows = [("op type", "n", "time", "share", "predicted", "lost", "eff", "why")]
    for r in types.sort_values("lost_time_s", ascending=False).head(top).to_dict("records"):
        rows.append((r["name"], r["count"], _ms(r["time_s"]), f"{r['time_share']:.1%}",
                     _ms(r["predicted_time_s"]), _ms(r["lost_time_s"]),
                     f"{r['efficiency']:.2f}" if math.isfinite(r["efficiency"]) else "-", _why(r)))
    return "\n".join(["where the time goes (op types losing the most time against the roofline):",
                      *text_table(rows)])


def module_table(mods: pd.DataFrame, top: int = TOP) -> str:
    rows = [("module", "ops", "FLOP", "bytes", "time", "share", "eff", "bound")]
    for r in mods.head(top).to_dict("records"):
        rows.append((r["name"], r["count"], si(r["flops"], ""), si(r["bytes"], "B"), _ms(r["time_s"]),
                     f"{r['time_share']:.1%}", f"{r['efficiency']:.2f}" if math.isfinite(r["efficiency"]) else "-",
                     r["bound"] or "-"))
    return "\n".join(text_table(rows))


def figure(res: ProfileResult) -> Any:
    """The TPU paper's figure for one model: each op type a point at its total intensity and rate,
    its area proportional to its share of the time, the whole model a square, on the measured roofs."""
    from gpuroof.plots import draw_roofline

    types = res.rows("op_type")
    on_axes = types[(types["flops"] > 0) & (types["time_s"] > 0)]
    off = types[~types.index.isin(on_axes.index)].sort_values("time_s", ascending=False)
    t = res.totals
    pts = [{"x": r["intensity"], "y": r["achieved_flops"], "dtype": r["dtype"].split(",")[0],
            "kernel": "op type (area: share of time)", "label": f"{r['name'].replace('aten::', '')} "
            f"{r['time_share']:.0%}", "valid": True, "above": bool(r["above_roof"]),
            "size": 30 + 900 * r["time_share"]} for r in on_axes.to_dict("records")]
    model = res.rows("model").iloc[0]
    pts.append({"x": model["intensity"], "y": model["achieved_flops"], "dtype": str(model["dtype"]).split(",")[0],
                "kernel": "whole model", "label": "model", "valid": True, "above": False, "size": 140})
    notes = []
    if len(off):
        big = off[off["time_share"] >= 0.005]
        listed = ", ".join(f"{n.replace('aten::', '')} {s:.0%}" for n, s in zip(big["name"], big["time_share"]))
        rest = f"{', ' if listed else ''}{len(off) - len(big)} more under 0.5%" if len(off) > len(big) else ""
        notes.append(textwrap.fill(f"Zero-FLOP op types are not on the log axes ({off['time_share'].sum():.0%} "
                                   f"of the time): {listed}{rest}.", 140))
    notes.append(f"{t['phase']}, op time {_ms(t['time_s'])}, roofline-predicted {_ms(t['predicted_time_s'])} "
                 f"(headroom {t['headroom']:.2f}x).")
    kernels = pd.DataFrame(pts)
    drawn = draw_roofline(res.meta, kernels.drop(columns=["size"]), "ops",
                          title=f"{res.name} on {res.device['name']}: op types on the measured roofline",
                          notes=notes)
    for coll in drawn.fig.axes[0].collections:
        if coll.get_gid() == "kernels":
            finite = kernels[np.isfinite(kernels["x"]) & np.isfinite(kernels["y"]) & (kernels["x"] > 0)
                             & (kernels["y"] > 0)]
            coll.set_sizes(finite["size"].to_numpy(float))
            coll.set_alpha(0.7)
    drawn.name = "profile"
    drawn.caption = (f"{res.name}: each op type at its total FLOPs / bytes and FLOPs / time, area proportional "
                     f"to its share of the op time; the square is the whole model. " + drawn.caption)
    return drawn


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def load_model(spec: str, batch: int | None) -> tuple[Any, Any, str]:
    """--model FILE.py:FUNCTION -> (model, inputs, name); FUNCTION(batch=N) returns (model, inputs)."""
    path, sep, func = spec.rpartition(":")
    if not sep or not path or not func.isidentifier():
        raise UsageError(f"--model {spec}: expected FILE.py:FUNCTION, e.g. experiments/profile_models.py:mlp")
    f = Path(path)
    if not f.is_file():
        raise UsageError(f"--model {spec}: no such file {path}")
    _torch()
    mod_name = f"gpuroof_user_model_{slug(f.stem).replace('-', '_')}"
    loader = importlib.util.spec_from_file_location(mod_name, f)
    if loader is None or loader.loader is None:
        raise UsageError(f"--model {spec}: {path} is not a Python file")
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"--model {spec}: importing {path} raised {type(e).__name__}: {e}") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise UsageError(f"--model {spec}: {path} has no function {func!r}")
    try:
        made = fn() if batch is None else fn(batch=batch)
    except TypeError as e:
        raise UsageError(f"--model {spec}: {func}({'' if batch is None else f'batch={batch}'}) failed: {e}") from None
    except Exception as e:
        raise UsageError(f"--model {spec}: {func}() raised {type(e).__name__}: {e}") from None
    if not (isinstance(made, tuple) and len(made) == 2):
        raise UsageError(f"--model {spec}: {func}() must return (model, inputs), got {type(made).__name__}")
    return made[0], made[1], func + ("" if batch is None else f"-b{batch}")


def _positive(text: str) -> int:
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: a positive integer")


def register(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare `gpuroof profile` on the CLI's subparsers (cli.build_parser calls this)."""
    from gpuroof.cli import _list

    p = sub.add_parser("profile", help="place every op of a PyTorch model on the measured roofline")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.add_argument("--model", required=True,
                   help="FILE.py:FUNCTION returning (model, inputs), e.g. experiments/profile_models.py:mlp")
    p.add_argument("--batch", type=_positive, default=None, help="passed to FUNCTION as batch=N")
    p.add_argument("--device", default="auto", help="auto (cuda if torch sees one, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--backward", action="store_true", help="profile forward and backward (of the outputs' sum)")
    p.add_argument("--ceilings", default=None,
                   help="run directory whose measured ceilings to use (default: the newest complete run "
                        "for this device under results/)")
    p.add_argument("--force", action="store_true", help="accept --ceilings from a different device")
    p.add_argument("--reps", type=_positive, default=REPS, help=f"profiled repetitions (default {REPS})")
    p.add_argument("--out", default=None,
                   help="directory for profile.csv, profile.json and the figure "
                        "(default results/<device>/profile/<FUNCTION>-b<N>/)")
    p.add_argument("--format", type=_list, default=["png"], help="figure formats (png, svg, pdf)")
    p.add_argument("--json", action="store_true", help="stdout is exactly one JSON document")
    p.set_defaults(func=main_profile)
    return p


def main_profile(args: argparse.Namespace) -> int:
    from gpuroof.plots import check_formats

    formats = check_formats(args.format)
    model, inputs, name = load_model(args.model, args.batch)
    if args.backward:
        name += "-backward"
    try:
        res = profile_model(model, inputs, device=args.device, backward=args.backward, ceilings=args.ceilings,
                            force=args.force, reps=args.reps, name=name)
    except UsageError as e:  # name the CLI's flags, not the Python arguments
        msg = str(e)
        for arg, flag in (("device=", "--device "), ("ceilings", "--ceilings"), ("reps=", "--reps ")):
            if msg.startswith(arg):
                msg = flag + msg[len(arg):]
        if msg.startswith("inputs:"):
            msg = f"--model {args.model}:" + msg[len("inputs:"):]
        raise UsageError(msg) from None
    out = Path(args.out) if args.out else results_root() / slug(res.device["name"]) / "profile" / name
    files = res.write(out, formats)
    if args.json:
        emit_json({**res.to_json(), "out_dir": str(out), "files": {k: str(v) for k, v in files.items()}})
        return 0
    print(res.summary())
    print()
    print(module_table(res.rows("module")))
    print()
    print(res.where_the_time_goes())
    print(f"files: {', '.join(str(p) for p in files.values())}")
    return 0
