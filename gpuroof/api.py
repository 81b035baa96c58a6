"""Put your own kernel on a measured roofline: declare its FLOPs and bytes, time it, place it.

    from gpuroof import api
    res = api.measure_kernel(fn, flops=2 * n, bytes=12 * n, unit="float32", backend="cpu")
    print(res.summary())

`fn` is any callable: a NumPy function (it blocks), a CuPy kernel or a torch op on the GPU (the
CUDA timer puts events on the current stream around the call, so asynchronous launches are timed
as device work). The placement uses the same timer, the same ceilings and the same rules as
`gpuroof bench`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpuroof.backends.base import Backend
from gpuroof.bench import NOISE_FLOOR, newest_run, place_case
from gpuroof.errors import MeasurementError, UsageError
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
                  device: int = 0) -> tuple[Roofline, str | None]:
    """(roofline, where it came from). `run` None: the newest complete run for this device in results/."""
    if isinstance(run, Roofline):
        return run, None
    if isinstance(run, Run):
        loaded = run
    elif run is not None:
        loaded = load_run(run)
    else:
        b, owned = _backend(backend, device)
        try:
            name = b.device_info().get("name") or b.name
            loaded = newest_run(b.name, name)
        finally:
            if owned:
                b.close()
        if loaded is None:
            raise UsageError(f"no complete run for {name!r} under results/{slug(name)}/: run "
                             "`gpuroof measure` first, or pass ceilings=<run directory>")
    if not loaded.meta.get("ceilings"):
        raise UsageError(f"{loaded.path}: the run has no ceilings (status {loaded.meta.get('status')})")
    return Roofline.from_dict(loaded.meta["ceilings"]), str(loaded.path)


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
        return {"name": self.name, "flops": self.flops, "bytes": self.bytes, "unit": self.unit,
                "time_s": self.time_s, "time_q1_s": float(q1), "time_q3_s": float(q3),
                "reps": int(len(self.times_s)), **self.placement, "notes": "; ".join(self.notes),
                "ceilings_source": self.ceilings_source}

    def summary(self) -> str:
        from gpuroof.units import si

        p = self.placement
        lines = [f"{self.name}: {self.time_s * 1e3:.4g} ms (median of {len(self.times_s)}), "
                 f"{si(p['achieved_flops'], 'FLOP/s')}, {si(p['achieved_bandwidth_Bps'], 'B/s')}, "
                 f"intensity {self.intensity:.3g} FLOP/B",
                 f"  {p['bound'] or '-'}-bound against {p['roof_unit'] or self.unit} and dram: attainable "
                 f"{si(p['attainable_flops'], 'FLOP/s')}, efficiency {p['efficiency']:.2f}, "
                 f"measured/predicted {p['measured_over_predicted']:.2f}"
                 + ("  ABOVE ROOF" if p["above_roof"] else "")]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def measure_kernel(fn: Callable[[], Any], *, flops: float, bytes: float, unit: str = "float32",
                   name: str = "kernel", backend: str | Backend = "auto", device: int = 0,
                   ceilings: str | Path | Run | Roofline | None = None,
                   check: Callable[[], bool] | None = None, warmup: int = WARMUP,
                   min_reps: int = MIN_REPS, max_reps: int = MAX_REPS,
                   budget_s: float = BUDGET_S) -> KernelResult:
    """Time `fn` with the backend's timer and place it against measured ceilings.

    flops: FLOPs of one call (an FMA counts 2). bytes: compulsory bytes of one call (inputs read
    once, outputs written once). unit: the compute ceiling that bounds it, a dtype for vector FMA
    math ("float32") or "<dtype>-matrix" for BLAS/cuBLAS/tensor-core work (placed against the
    vector roof, with a note, when the run has no matrix ceiling). check: called once after the
    first call; a falsy answer raises MeasurementError before anything is timed.
    """
    if not callable(fn):
        raise UsageError(f"fn: {fn!r} is not callable")
    for label, v in (("flops", flops), ("bytes", bytes)):
        if not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) or v <= 0:
            raise UsageError(f"{label}={v!r}: must be a positive number")
    if not isinstance(unit, str) or not unit:
        raise UsageError(f"unit={unit!r}: a dtype ('float32') or '<dtype>-matrix'")
    b, owned = _backend(backend, device)
    try:
        roof, source = load_roofline(ceilings, b, device)
        fn()  # first call: compilation, lazy allocation, autotuning stay out of the timing
        if check is not None and not check():
            raise MeasurementError(f"{name}: check() failed after the first call; not timed")
        times = b.time(fn, warmup=warmup, min_reps=min_reps, max_reps=max_reps, budget_s=budget_s)
    finally:
        if owned:
            b.close()
    med = float(np.median(times))
    q1, q3 = np.quantile(times, [0.25, 0.75])
    spread = float((q3 - q1) / med) if med > 0 else NOISE_FLOOR
    placed = place_case(roof, float(flops), float(bytes), med, unit, spread)
    notes = placed.pop("notes")
    return KernelResult(name=name, flops=float(flops), bytes=float(bytes), unit=unit,
                        times_s=np.asarray(times), placement=placed, notes=notes,
                        ceilings_source=source)


def profile(model: Any, inputs: Any, *, device: str = "auto", backward: bool = False,
            ceilings: str | Path | Run | None = None, force: bool = False, reps: int = 5,
            name: str | None = None) -> Any:
    """Every op of `model(*inputs)` (and its backward) on the device's measured roofline: FLOPs from
    FlopCounterMode, time from torch.profiler, compulsory bytes; see gpuroof.profile.profile_model.
    Returns a ProfileResult (`.table`, `.totals`, `.summary()`, `.write(dir)`); needs gpuroof[torch]."""
    from gpuroof.profile import profile_model

    return profile_model(model, inputs, device=device, backward=backward, ceilings=ceilings, force=force,
                         reps=reps, name=name)
