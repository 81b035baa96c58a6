"""Put your own kernel on a measured roofline: declare its FLOPs and bytes, time it, place it.

    from gpuroof import api
    res = api.measure_kernel(fn, flops=2 * n, bytes=12 * n, unit="float32", backend="cpu")
    print(res.summary())

`fn` is any callable: a NumPy function (it blocks), a CuPy kernel or a torch op on the GPU (the
CUDA timer puts events on the current stream around the call, CuPy's, joined with torch's when
torch uses another one, so asynchronous launches on a side stream are timed as device work). The
host's time to make the call is measured beside the device time: a call whose host time is at least
90% of its device time is flagged host-bound (gpuroof.hostbound). The placement uses the same
timer, the same ceilings and the same rules as `gpuroof bench`, and the window is watched as
bench's is: timed again when other processes were busy, and `result.quality` says whether the kept
window was quiet.
"""
from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpuroof.backends.base import Backend
from gpuroof.bench import NOISE_FLOOR, newest_run, place_case, same_device
from gpuroof.errors import MeasurementError, UsageError
from gpuroof.hostbound import note as host_bound_note, window_figures
from gpuroof.results import results_root
from gpuroof.quality import BUSY_RETRIES, quiet_window
from gpuroof.results import Run, load_run, slug
from gpuroof.roofline import Roofline

#: Timing defaults: a short warm-up, then repeat for about half a second (at least 10 times).
WARMUP = 3
MIN_REPS = 10
MAX_REPS = 10_000
BUDGET_S = 0.5


def _backend(backend: str | Backend, device: int) -> tuple[Backend, bool]:
    """(backend, whether this call made it and must close it)."""
    if isinstance(backend, Backend):
        return backend, False
    from gpuroof.backends import get_backend
    return get_backend(backend, device), True


def load_roofline(run: str | Path | Run | Roofline | None = None, backend: str | Backend = "auto",
                  device: int = 0, force: bool = False) -> tuple[Roofline, str | None]:
    """(roofline, where it came from). `run` None: the newest complete run for this device in the results
    directory ($GPUROOF_RESULTS, else ./results); with none there, a quick measurement first, as
    `gpuroof bench` does (said on stderr; about half a minute on a CPU).

    A run measured on another device (or backend) than `backend`'s is refused unless `force`, as
    the CLI's --ceilings is: its ceilings would place the kernel against someone else's roof.
    """
    if isinstance(run, Roofline):
        return run, None
    if run is not None and not isinstance(run, (str, Path, Run)):
        raise UsageError(f"ceilings={run!r}: allowed a run directory (str or Path), a Run, a Roofline "
                         "or None (the newest run of this device)")
    loaded = run if isinstance(run, Run) else load_run(run) if run is not None else None
    b, owned = _backend(backend, device) if loaded is None or not force else (None, False)
    try:
        if b is not None:
            name = b.device_info().get("name") or b.name
            if loaded is None:
                loaded = newest_run(b.name, name)
                if loaded is None:
                    from gpuroof.measure import measure

                    print(f"gpuroof: no complete run for {name!r} under {results_root() / slug(name)}/: "
                          "measuring the ceilings first (measure --quick); pass ceilings=<run directory> "
                          "to reuse one", file=sys.stderr)
                    loaded = load_run(measure(b.name, device, quick=True, progress=False).run_dir)
            elif not same_device(loaded, b.name, name):
                raise UsageError(f"ceilings={str(loaded.path)!r}: measured on "
                                 f"{loaded.meta['device'].get('name')!r} ({loaded.meta.get('backend')}), "
                                 f"this kernel runs on {name!r} ({b.name}); pass force=True to use it anyway")
    finally:
        if owned:
            b.close()
    if loaded.ceilings is None:
        raise UsageError(f"{loaded.path}: the run has no ceilings (status {loaded.status})")
    return loaded.ceilings, str(loaded.path)


def check_unit(roof: Roofline, unit: object) -> str:
    """`unit` if the roofline can place against it (a compute ceiling it has, or '<dtype>-matrix'
    whose dtype it has); UsageError listing the units it has otherwise."""
    have = sorted(roof.compute)
    vector = unit[:-len("-matrix")] if isinstance(unit, str) and unit.endswith("-matrix") else None
    if not isinstance(unit, str) or (unit not in roof.compute and vector not in roof.compute):
        raise UsageError(f"unit={unit!r}: not a compute ceiling of this roofline (allowed: "
                         f"{', '.join(have) or 'none: the roofline has no compute ceiling'}"
                         f"{'; or <dtype>-matrix for one of these dtypes' if have else ''})")
    return unit


def _count(label: str, v: object, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        raise UsageError(f"{label}={v!r}: an integer >= {low}")
    return int(v)


def _positive(label: str, v: object) -> float:
    try:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError
        f = float(v)
    except (TypeError, OverflowError):
        f = math.nan
    if not math.isfinite(f) or f <= 0:
        raise UsageError(f"{label}={v!r}: a finite number > 0" if len(repr(v)) < 60
                         else f"{label}: a finite number > 0 (got a {type(v).__name__} out of range)")
    return f


def _check_backend(backend: object, device: int) -> None:
    """backend= one of the names (or a Backend) and device= an index this machine has."""
    from gpuroof.backends import NAMES, device_count

    if isinstance(backend, Backend):
        return
    if not isinstance(backend, str) or backend not in NAMES:
        raise UsageError(f"backend={backend!r}: allowed {', '.join(map(repr, NAMES))} or a Backend")
    if device > 0:
        n = device_count(backend)
        if device >= n:
            raise UsageError(f"device={device}: this machine has {n} device(s) for the {backend} backend "
                             f"(allowed: {'0' if n == 1 else f'0..{n - 1}'})")


def split_device(backend: object, device: object) -> tuple[object, object]:
    """(backend, device index) from the two ways of naming a device: `device` as profile() takes it
    ("auto", "cpu", "cuda", "cuda:N") or an index beside `backend` (kept as an alias)."""
    if not isinstance(device, str):
        return backend, device
    name, _, index = device.partition(":")
    if name not in ("auto", "cpu", "cuda") or (index and not index.isdigit()) or (index and name != "cuda"):
        raise UsageError(f"device={device!r}: allowed an index, 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if isinstance(backend, str) and backend not in ("auto", name):
        raise UsageError(f"device={device!r} and backend={backend!r} name different backends (give one)")
    return (backend if name == "auto" else name), int(index or 0)


def check_arguments(fn: object, flops: object, bytes: object, name: object, warmup: object,
                    min_reps: object, max_reps: object, budget_s: object, check: object,
                    device: object) -> tuple[float, float]:
    """Every argument of `measure_kernel` that needs no roofline, checked before anything runs."""
    if not callable(fn):
        raise UsageError(f"fn: {fn!r} is not callable")
    f, b = _positive("flops", flops), _positive("bytes", bytes)
    if not isinstance(name, str) or not name:
        raise UsageError(f"name={name!r}: a non-empty string")
    _count("warmup", warmup, 0)
    lo = _count("min_reps", min_reps, 1)
    _count("max_reps", max_reps, lo)
    _positive("budget_s", budget_s)
    if check is not None and not callable(check):
        raise UsageError(f"check={check!r}: a callable returning True when the output is right, or None")
    _count("device", device, 0)
    return f, b


@dataclass
class KernelResult:
    """A user kernel's timing and its place on the roofline (fields as in workloads.csv)."""

    name: str
    flops: float
    bytes: float
    unit: str
    times_s: np.ndarray
    placement: dict
    notes: list[str] = field(default_factory=list)
    ceilings_source: str | None = None
    #: enqueue_s, enqueue_fraction, host_bound (gpuroof.hostbound.window_figures): None on the CPU.
    host: dict = field(default_factory=dict)

    @property
    def host_bound(self) -> bool | None:
        return self.host.get("host_bound")

    #: The timed window's quality (quality.Window.quality): ok, reasons, activity, attempts.
    quality: dict = field(default_factory=lambda: {"ok": True, "reasons": [], "activity": None, "attempts": 1})

    @property
    def busy(self) -> bool:
        """Whether other processes (or the hypervisor) were busy in every window timed."""
        return self.quality.get("ok") is False

    @property
    def time_s(self) -> float:
        return float(np.median(self.times_s))

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes

    @property
    def efficiency(self) -> float:
        return float(self.placement["efficiency"])

    @property
    def above_roof(self) -> bool:
        return bool(self.placement["above_roof"])

    def to_dict(self) -> dict:
        q1, q3 = np.quantile(self.times_s, [0.25, 0.75])
        act = self.quality.get("activity") or {}
        return {"name": self.name, "flops": self.flops, "bytes": self.bytes, "unit": self.unit,
                "time_s": self.time_s, "time_q1_s": float(q1), "time_q3_s": float(q3),
                "reps": int(len(self.times_s)), **self.placement, "notes": "; ".join(self.notes),
                "ceilings_source": self.ceilings_source, **self.host,
                "other_processes_share": act.get("other_processes_share"), "steal_share": act.get("steal_share"),
                "disturbed": self.busy, "attempts": self.quality.get("attempts"), "quality": self.quality}

    def summary(self) -> str:
        from gpuroof.units import si

        p = self.placement
        lines = [f"{self.name}: {self.time_s * 1e3:.4g} ms (median of {len(self.times_s)}), "
                 f"{si(p['achieved_flops'], 'FLOP/s')}, {si(p['achieved_bandwidth_Bps'], 'B/s')}, "
                 f"intensity {self.intensity:.3g} FLOP/B",
                 f"  {p['bound'] or '-'}-bound against {p['roof_unit'] or self.unit} and dram: attainable "
                 f"{si(p['attainable_flops'], 'FLOP/s')}, efficiency {p['efficiency']:.2f}, "
                 f"measured/predicted {p['measured_over_predicted']:.2f}"
                 + ("  ABOVE ROOF" if p["above_roof"] else "") + ("  HOST-BOUND" if self.host_bound else "")]
        lines += [f"  BUSY: {r}; the time is not the hardware's" for r in self.quality.get("reasons") or []]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def measure_kernel(fn: Callable[[], Any], *, flops: float, bytes: float, unit: str = "float32",
                   name: str = "kernel", backend: str | Backend = "auto", device: int | str = 0,
                   ceilings: str | Path | Run | Roofline | None = None,
                   check: Callable[[], bool] | None = None, warmup: int = WARMUP,
                   min_reps: int = MIN_REPS, max_reps: int = MAX_REPS,
                   budget_s: float = BUDGET_S, force: bool = False,
                   busy_retries: int = BUSY_RETRIES) -> KernelResult:
    """Time `fn` with the backend's timer and place it against measured ceilings.

    flops: FLOPs of one call (an FMA counts 2). bytes: compulsory bytes of one call (inputs read
    once, outputs written once). unit: the compute ceiling that bounds it, a dtype for vector FMA
    math ("float32") or "<dtype>-matrix" for BLAS/cuBLAS/tensor-core work (placed against the
    vector roof, with a note, when the run has no matrix ceiling). check: called once after the
    first call; a falsy answer raises MeasurementError before anything is timed. force: accept
    ceilings= a run of another device. busy_retries: times `fn` is timed again while other processes
    (or the hypervisor) took more than quality.BUSY_LIMIT of the CPUs; the least disturbed window
    is kept and `result.quality` (`result.busy`) says whether it was quiet. Every argument is
    checked before `fn` is first called: a bad one raises UsageError naming it and what is allowed.
    device: an index of `backend`'s devices, or a device named as profile() names it ("cpu", "cuda:1").
    """
    backend, device = split_device(backend, device)
    flops, bytes = check_arguments(fn, flops, bytes, name, warmup, min_reps, max_reps, budget_s, check,
                                   device)
    _check_backend(backend, device)
    _count("busy_retries", busy_retries, 0)
    b, owned = _backend(backend, device)
    try:
        roof, source = load_roofline(ceilings, b, device, force)
        check_unit(roof, unit)
        fn()  # first call: compilation, lazy allocation, autotuning stay out of the timing
        if check is not None and not check():
            raise MeasurementError(f"{name}: check() failed after the first call; not timed")
        win = quiet_window(lambda: b.timed(fn, warmup=warmup, min_reps=min_reps, max_reps=max_reps,
                                           budget_s=budget_s), f"the timing of {name}", busy_retries)
        timing = win.result
    finally:
        if owned:
            b.close()
    times = timing.times_s
    med = float(np.median(times))
    q1, q3 = np.quantile(times, [0.25, 0.75])
    spread = float((q3 - q1) / med) if med > 0 else NOISE_FLOOR
    placed = place_case(roof, float(flops), float(bytes), med, unit, spread)
    notes = placed.pop("notes")
    host = window_figures(timing)
    if host["host_bound"]:
        notes.append(host_bound_note(host["enqueue_s"], med))
    return KernelResult(name=name, flops=float(flops), bytes=float(bytes), unit=unit,
                        times_s=np.asarray(times), placement=placed, notes=notes,
                        ceilings_source=source, host=host, quality=win.quality())


def profile(model: Any, inputs: Any, *, device: str = "auto", backward: bool = False,
            ceilings: str | Path | Run | None = None, force: bool = False, reps: int = 5,
            name: str | None = None, backend: str | None = None) -> Any:
    """Every op of the model's call (and its backward) on the device's measured roofline: FLOPs from
    FlopCounterMode, time from torch.profiler, compulsory bytes; see gpuroof.profile.profile_model.
    `inputs`: a tensor (`model(x)`), a tuple of positional arguments, a dict of keyword arguments
    (`model(**inputs)`, e.g. a tokenizer's output) or a pair (args, kwargs). A torch.compile'd model is
    refused (ValueError). Returns a ProfileResult (`.table`, `.totals`, `.quality`, `.summary()`,
    `.write(dir)`); needs gpuroof[torch]. backend= ("cpu", "cuda"), as measure_kernel takes it, is an
    alias of device=."""
    from gpuroof.profile import profile_model

    if backend is not None:
        if device not in ("auto", backend) and str(device).partition(":")[0] != backend:
            raise UsageError(f"device={device!r} and backend={backend!r} name different devices (give one)")
        device = backend if device == "auto" else device

    return profile_model(model, inputs, device=device, backward=backward, ceilings=ceilings, force=force,
                         reps=reps, name=name)


def predict(profile: str | Path, on: str | Path | list[str | Path], *, write: bool = False) -> dict:
    """A saved profile (the directory `gpuroof profile` wrote) predicted on other measured devices:
    `on` one or more complete run directories of the profile's backend. Each op keeps its source
    efficiency against the roofline profile.json recorded (gpuroof.predict: the model); ops with
    nothing to place and the host's time are carried over as measured, shown apart. Returns the
    document `gpuroof predict --json` prints: `targets`, each with `predicted_time_s` (the whole
    model per repetition, the quantity of the profile's totals.profiled_time_s), the roofline
    bound, the carried-over time and the per-op rows. write: also write predict-<target>.csv beside
    the profile (their paths in each target's `csv`)."""
    from gpuroof.predict import predict as predict_profile

    res = predict_profile(profile, on)
    return res.to_json(res.write() if write else None)
