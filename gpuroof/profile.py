"""`gpuroof profile`: every op of a PyTorch model's forward (and backward) placed on the measured roofline."""
from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd

from gpuroof.defaults import PROFILE_REPS
from gpuroof.bench import newest_run, same_device
from gpuroof.errors import UsageError
from gpuroof.hostbound import note as host_bound_note
from gpuroof.results import results_root
from gpuroof.profiling import need_torch as _torch
from gpuroof.profiling.figure import figure
from gpuroof.profiling.formulas import flop_counter, flop_formulas  # noqa: F401 - the public names
from gpuroof.profiling.matching import SPAN, _event_time, _roots, _start, match, widen
from gpuroof.profiling.recording import _Recorder, move_inputs, split_inputs
from gpuroof.quality import Activity, window_quality
from gpuroof.profiling.tables import (COLUMNS, TOP, _aggregate, _model_row, _table, _totals, module_table,
                                      where_table)
from gpuroof.results import (Run, atomic_write_bytes, atomic_write_csv, atomic_write_text, dumps, load_run,
                             slug)
from gpuroof.units import fmt_time, si

if TYPE_CHECKING:  # torch is an optional extra (gpuroof[torch]); imported when a model is profiled
    import torch

#: What the numbers mean, written into profile.json.
CONVENTIONS = {
    "flops": "torch.utils.flop_counter.FlopCounterMode (matmul, convolution, attention; an FMA counts 2; "
             "elementwise ops count 0), with formulas added for the fused RNN kernels (oneDNN, cuDNN: "
             "2 FLOPs per weight per token forward, 4 backward), the SDPA kernels a CPU runs (the counter's "
             "own sdpa counts: attention dense, a causal mask not discounted) and the fused inference fast "
             "paths of nn.MultiheadAttention and nn.TransformerEncoderLayer",
    "bytes": "compulsory traffic: each distinct input tensor read once, each output written once "
             "(broadcast dimensions counted once); a view moves no data",
    "time": "torch.profiler: device kernel time of the op on CUDA, the op's CPU time on a CPU; the median "
            "over the profiled repetitions; a backward op belongs to the module whose forward op made its "
            "autograd node",
    "quality": "whether other processes or the hypervisor took CPU time while the repetitions ran "
               "(quality.window_quality); op times from a busy window may be inflated",
    "aggregates": "sums over op instances; predicted time is the sum of each op's roofline time "
                  "max(FLOPs / compute ceiling, bytes / DRAM bandwidth); efficiency = predicted / measured and "
                  "headroom = measured / predicted over the placed ops only (an op with no ceiling for its unit "
                  "is listed as not placed); a group is above its roof when it ran faster than its predicted time",
}

REPS = PROFILE_REPS
WARMUP = 2


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

        return {"quality": self.quality, "model": self.name, "device": self.device, "ceilings": self.ceilings,
                "ceilings_source": self.ceilings_source, "conventions": CONVENTIONS, "totals": self.totals,
                "op_types": recs("op_type"), "modules": recs("module"), "ops": recs("op")}

    def where_the_time_goes(self, top: int = TOP) -> str:
        return where_table(self.rows("op_type"), top)

    @property
    def quality(self) -> dict:
        return self.totals.get("quality") or {"ok": None, "reasons": []}

    def summary(self) -> str:
        t = self.totals
        lines = []
        if self.quality.get("ok") is False:  # first: every time below was taken on a busy machine
            lines.append("NOT QUIET: " + "; ".join(self.quality["reasons"]) + " - op times may be inflated; "
                         "profile again on a quiet machine")
        lines += [f"{self.name} on {self.device['name']} ({self.device['type']}), "
                  f"{t['phase']}: {t['ops']} ops, {si(t['flops'], 'FLOP')}, {si(t['bytes'], 'B')}",
                  f"  ops matched to the profiler cover {t['op_time_coverage']:.0%} of the profiled time "
                  f"(median over {t['reps']} repetitions of op time / profiled time; per repetition "
                  f"{fmt_time(t['op_time_per_rep_s'])} of {fmt_time(t['profiled_time_s'])}, wall {fmt_time(t['wall_time_s'])})"]
        gone = t["not_placed"]
        if t["placed_time_s"] > 0 and t["predicted_time_s"] > 0:
            line = (f"  roofline-predicted {fmt_time(t['predicted_time_s'])} for the {fmt_time(t['placed_time_s'])} of placed "
                    f"ops (sum of per-op medians): headroom {t['headroom']:.2f}x if every op ran at its roof")
            if t["headroom"] < 1:
                line += ("; under 1, the ops ran faster than their roofline time: data reused from caches, or "
                         "ceilings measured low (a --quick or busy run)")
            lines.append(line)
        else:
            lines.append("  no op could be placed on this run's roofline")
        if gone["ops"]:
            lines.append(f"  {gone['ops']} ops ({fmt_time(gone['time_s'])}) not placed, left out of the headroom: "
                         + " / ".join(gone["why"][:3]))
        lines.append(f"  achieved {si(t['achieved_flops'], 'FLOP/s')}, {si(t['achieved_bandwidth_Bps'], 'B/s')}, "
                     f"intensity {t['intensity']:.3g} FLOP/B; ceilings {self.ceilings_source}")
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


def device_identity(dev: "torch.device", threads: int | None = None) -> tuple[str, str, dict]:
    """(gpuroof backend name, device name as `measure` records it, device description); `threads`:
    the CPU device of that many threads, as `measure --threads` names it."""
    if dev.type == "cuda":
        torch = _torch()
        name = torch.cuda.get_device_name(dev.index or 0)
        return "cuda", name, {"type": "cuda", "index": dev.index or 0, "name": name}
    from gpuroof.backends.cpu import CpuBackend

    b = CpuBackend(0, threads=threads)
    try:
        name = b.device_info().get("name") or "cpu"
    finally:
        b.close()
    desc = {"type": "cpu", "index": 0, "name": name}
    return "cpu", name, desc if threads is None else {**desc, "threads": threads}


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads and the BLAS's (threadpoolctl) at `threads` while the model runs, the
    previous counts given back after; None leaves them as they are."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


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
    if not run.measured:
        raise UsageError(f"{arg} {run.path}: the run is not complete or has no ceilings")
    if not force and not same_device(run, backend, device_name):
        raise UsageError(f"{arg} {run.path}: measured on {run.meta['device'].get('name')!r} "
                         f"({run.meta.get('backend')}), the model runs on {device_name!r} ({backend}); "
                         "pass a run of this device (or force it)")
    return run


def _loss(out: Any) -> "torch.Tensor":
    """A scalar to call backward on: the sum of every floating-point output that needs a gradient."""
    from torch.utils._pytree import tree_leaves

    torch = _torch()
    parts = [t.float().sum() for t in tree_leaves(out)
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
    if not parts:
        raise UsageError("backward: the model's outputs need no gradient (no parameter or input requires grad)")
    return torch.stack(parts).sum()


def refuse_compiled(model: Any) -> None:
    """A torch.compile'd model (or one with a compiled submodule) is refused: FlopCounterMode and the
    dispatcher hooks see eager ops only, and after one call under them Dynamo stops using the
    compiled code, so its numbers would be the eager model's under the compiled model's name."""
    torch = _torch()
    optimized = getattr(getattr(torch, "_dynamo", None), "eval_frame", None)
    cls = getattr(optimized, "OptimizedModule", None)
    for name, m in model.named_modules():
        if (cls is not None and isinstance(m, cls)) or getattr(m, "_compiled_call_impl", None) is not None:
            where = f" (submodule {name})" if name else ""
            raise UsageError(f"model: torch.compile'd{where}; gpuroof profiles eager ops (FlopCounterMode and "
                             "torch.profiler see the eager dispatcher, and Dynamo drops the compiled code "
                             "under them): pass the model before torch.compile")


def profile_model(model: Any, inputs: Any, *, device: Any = "auto", backward: bool = False,
                  ceilings: str | Path | Run | None = None, force: bool = False, reps: int = REPS,
                  warmup: int = WARMUP, name: str | None = None, threads: int | None = None) -> ProfileResult:
    """Run `model(*inputs)` (and a backward of the sum of its outputs) under FlopCounterMode and
    torch.profiler and place every op on the device's measured roofline.

    model: an nn.Module (moved to `device`; without `backward` it runs under torch.no_grad());
    inputs: how to call it (tensors moved to `device`): a tensor, `model(x)`; a tuple or list of
    positional arguments, `model(*inputs)`; a dict of keyword arguments, `model(**inputs)` (a
    tokenizer's output: input_ids, attention_mask, ...); or a pair (args, kwargs), `model(*args, **kwargs)`;
    device: auto | cpu | cuda | cuda:N; ceilings: a run directory (default: the newest complete run
    for this device under results/); reps: profiled repetitions, each op's time is their median;
    threads (CPU only): torch and the BLAS run on that many threads, and the device is the one
    `measure --threads` of the same count names (its ceilings are looked for).
    """
    torch = _torch()
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"model: {type(model).__name__} is not a torch.nn.Module")
    refuse_compiled(model)
    if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1:
        raise UsageError(f"reps={reps!r}: a positive integer")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 1:
        raise UsageError(f"warmup={warmup!r}: a positive integer (the first call is never timed)")
    args, kwargs = split_inputs(inputs)
    dev = _as_device(device)
    if threads is not None:
        if dev.type != "cpu":
            raise UsageError(f"threads={threads!r}: a thread count makes a CPU device; the model runs on "
                             f"{dev} (allowed: device='cpu', or leave threads out)")
        from gpuroof.backends.cpu.device import check_threads

        check_threads(threads, "threads=")  # before the backend is made: the CLI names it --threads
    backend, device_name, device_desc = device_identity(dev, threads)
    run = resolve_ceilings(backend, device_name, ceilings, force)
    roof = run.ceilings
    gpu = dev.type == "cuda"
    model = model.to(dev)
    args, kwargs = move_inputs(args, kwargs, dev)

    def step(rec: _Recorder | None = None) -> None:
        out = model(*args, **kwargs)
        if backward:
            loss = _loss(out)
            if rec is not None:
                rec.in_backward = True
            loss.backward()

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize(dev)

    grad = torch.enable_grad() if backward else torch.no_grad()
    with grad, torch_threads(threads):
        try:
            for _ in range(warmup):  # lazy init, allocator, oneDNN/cuDNN plans: never timed
                step()
            sync()
        except UsageError:
            raise
        except Exception as e:  # the model's own failure is bad input: one line, naming the argument
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UsageError(f"inputs: model(*inputs) raised {type(e).__name__}: {first}"[:400]) from None
        with _Recorder(flop_counter(), dev.type, model) as rec:
            step(rec)
            sync()
        records = rec.records
        if not records:
            raise UsageError("model: its forward ran no torch op; nothing to profile")
        counted = rec.counter.get_total_flops()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
        activity = Activity()
        with torch_profile(activities=activities) as prof:
            for _ in range(reps):
                with record_function(SPAN):
                    step()
                sync()
        quality = window_quality(activity.stop(), "the profiled repetitions")
    events = list(prof.events())
    tops = [e for e in events if e.cpu_parent is None]
    spans = sorted((e for e in tops if e.name == SPAN), key=_start)
    names = [r.op for r in records]
    views = [r.view for r in records]
    times = np.full((len(spans), len(records)), np.nan)
    span_s, op_s = [], []
    for j, span in enumerate(spans):
        roots = _roots(span, tops)
        for i, e in enumerate(widen(match(names, roots, views))):
            if e is not None:
                times[j, i] = _event_time(e, gpu)
        op_s.append(sum(_event_time(e, gpu) for e in roots))
        span_s.append(span.cpu_time_total * 1e-6)
    table = _table(records, times, roof)
    label = name or type(model).__name__
    totals = _totals(table, op_s, span_s, np.nansum(times, axis=1).tolist(), counted, backward,
                     str(torch.__version__), gpu)
    totals["quality"] = quality
    table = pd.concat([table, _aggregate(table, "op", "op_type"), _aggregate(table, "module", "module"),
                       _model_row(table, totals)], ignore_index=True).reindex(columns=COLUMNS)
    table["quality_ok"] = quality["ok"]  # every row: a filtered table still says the window was busy
    table["quality_reasons"] = "; ".join(quality["reasons"])
    return ProfileResult(name=label, table=table, totals=totals, device=device_desc,
                         ceilings=run.meta["ceilings"], ceilings_source=str(run.path), meta=run.meta)


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
