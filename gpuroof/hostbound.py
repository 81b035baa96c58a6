"""Host-bound windows: when the host's enqueue time is as long as the device time, the host is the limit.

A timed CUDA window records device time between two events. When Python enqueues the launches more
slowly than the device runs them, the device idles between launches and the events measure the
host: the point then lands far under its roof for a reason the roofline cannot show. Every CUDA
window therefore records the host's enqueue time beside its device time (`Timing`), and a window
whose enqueue time is at least HOST_BOUND_FRACTION of its device time is flagged host-bound, with
what to do about it. On the CPU backend the host does the work itself: the flag does not apply and
stays None (an empty cell), never False.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: A window whose host enqueue time is at least this fraction of its device time is host-bound.
#: A device-bound window enqueues in a small fraction of its device time (the launch queue absorbs
#: the launches while the device works); a host-bound one spends nearly all of it enqueueing, the
#: device waiting on each launch.
HOST_BOUND_FRACTION = 0.9

#: What to do about a host-bound window.
ADVICE = ("batch the work into fewer, larger launches (one strided-batched GEMM, not one per item), "
          "fuse launches, or replay them through a CUDA graph")


@dataclass(frozen=True)
class Timing:
    """Per-launch seconds of each timed window: device time from events, and the host's time to
    enqueue the same launches (None where the host runs the work: the CPU backend).

    replay: "stream" (launches enqueued from Python onto the stream), "graph" (a CUDA graph of the
    launches replayed), None on the CPU. launches_per_window counts calls; kernels_per_call, the
    kernels each call enqueues (kernels_per_call()).
    """

    times_s: np.ndarray
    enqueue_s: np.ndarray | None = None
    replay: str | None = None
    launches_per_window: int = 1
    kernels_per_call: int = 1


def kernels_per_call(fn: object) -> int:
    """Kernels one call of `fn` enqueues: its `kernels_per_call` (a workload's run says how many it
    enqueues: an LSTM two per step, an MLP two per layer, im2col its unfolding and its GEMM); for a
    rotation of calls (`runs`, bench.Rotation), the most of any of them; 1 otherwise.

    A timed window caps the kernels it enqueues, not the calls (backends.cuda.timing.MAX_LAUNCHES):
    a window of calls that enqueue many kernels each would otherwise fill the launch queue, whose
    wait then reads as host-bound."""
    n = getattr(fn, "kernels_per_call", None)
    if n is None and isinstance(getattr(fn, "runs", None), (list, tuple)) and fn.runs:  # type: ignore[attr-defined]
        n = max(kernels_per_call(r) for r in fn.runs)  # type: ignore[attr-defined]
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"kernels_per_call {n!r}: a call enqueues an integer number of kernels >= 1")
    return int(n)


def host_bound(enqueue_s: float | None, device_s: float | None) -> bool | None:
    """True when the host's enqueue took at least HOST_BOUND_FRACTION of the device time; None when
    either is unknown (no enqueue clock: the CPU backend) or the device time is not positive."""
    if enqueue_s is None or device_s is None:
        return None
    if not (math.isfinite(enqueue_s) and math.isfinite(device_s)) or device_s <= 0:
        return None
    ratio = enqueue_s / device_s
    return bool(ratio >= HOST_BOUND_FRACTION or math.isclose(ratio, HOST_BOUND_FRACTION))  # 90% counts


def window_figures(timing: Timing) -> dict:
    """The figures a table row records: median enqueue and device time per launch, their ratio and
    the flag (enqueue_s, enqueue_fraction, host_bound), all None without an enqueue clock."""
    times = np.asarray(timing.times_s, dtype=np.float64)
    if timing.enqueue_s is None or not len(times):
        return {"enqueue_s": None, "enqueue_fraction": None, "host_bound": None}
    enq = float(np.median(np.asarray(timing.enqueue_s, dtype=np.float64)))
    dev = float(np.median(times))
    return {"enqueue_s": enq, "enqueue_fraction": enq / dev if dev > 0 else None,
            "host_bound": host_bound(enq, dev)}


def flagged(cell: object) -> bool:
    """True for a host_bound cell that says True (a bool, a NumPy bool, or CSV text); False for False
    and for an empty cell (None, NaN: the CPU, where the flag does not apply)."""
    return str(cell).strip().lower() in ("true", "1", "1.0")


def per_rep(timing: Timing) -> list[dict]:
    """enqueue_s and host_bound of each repetition, for long-form sample rows (None on the CPU)."""
    if timing.enqueue_s is None:
        return [{"enqueue_s": None, "host_bound": None} for _ in timing.times_s]
    return [{"enqueue_s": float(e), "host_bound": host_bound(float(e), float(t))}
            for e, t in zip(timing.enqueue_s, timing.times_s)]


def note(enqueue_s: float, device_s: float) -> str:
    """The sentence a host-bound row carries: the two times and what to do."""
    return (f"host-bound: enqueueing took {_us(enqueue_s)} per launch from the host, "
            f"{enqueue_s / device_s:.0%} of its {_us(device_s)} of device time, so the device waited on "
            f"the host and the roofline cannot explain the time; {ADVICE}")


def _us(s: float) -> str:
    return f"{s * 1e6:.3g} us" if s < 1e-3 else f"{s * 1e3:.3g} ms"
