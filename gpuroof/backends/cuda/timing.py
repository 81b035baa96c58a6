"""CUDA-event timing of enqueued work: several back-to-back launches per event pair, the stream never idle."""
from __future__ import annotations

import math
import time as _time
from typing import Any, Callable

import numpy as np

from gpuroof.errors import UsageError

#: Device time one event pair brackets. With a single launch per pair on an idle stream the host's
#: launch path (several microseconds in Python) falls between the events: 4-15% of a 100 us DRAM
#: read. Milliseconds of back-to-back launches put that below a percent.
WINDOW_S = 5e-3

#: Most launches in one window (keeps a repetition bounded for the tiniest kernels).
MAX_LAUNCHES = 1000


def launches_per_window(launch_s: float, window_s: float = WINDOW_S, most: int = MAX_LAUNCHES) -> int:
    """Back-to-back launches that fill one timed window of `window_s` (1 .. `most`)."""
    if not math.isfinite(launch_s) or launch_s <= 0:
        return most
    return int(min(most, max(1, math.ceil(window_s / launch_s))))


def check_reps(warmup: int, min_reps: int, max_reps: int, budget_s: float) -> None:
    if warmup < 0:
        raise UsageError(f"warmup {warmup}: must be >= 0")
    if min_reps < 1 or max_reps < min_reps:
        raise UsageError(f"min_reps {min_reps}, max_reps {max_reps}: need 1 <= min_reps <= max_reps")
    if budget_s < 0:
        raise UsageError(f"budget_s {budget_s}: must be >= 0")


def time_events(cp: Any, stream: Any, fn: Callable[[], None], *, warmup: int, min_reps: int,
                max_reps: int, budget_s: float, window_s: float = WINDOW_S) -> np.ndarray:
    """Seconds per launch, one sample per event pair, until `budget_s` of wall time or `max_reps`.

    `fn` exposes `enqueue` (a backends.base.Blocking): each repetition enqueues one
    untimed lead launch, records the start event behind it, then `n` launches and the end event, so
    the stream is busy while the host records and launches; a sample is the window over `n`. `n`
    fills `window_s`, from one timed launch after the warm-up. Any other callable is bracketed
    whole, one call per pair (its host time counts too).
    """
    check_reps(warmup, min_reps, max_reps, budget_s)
    body = getattr(fn, "enqueue", None)
    start, end = cp.cuda.Event(), cp.cuda.Event()

    def window(n: int, lead: bool) -> float:
        if lead:
            body()
        start.record(stream)
        for _ in range(n):
            (body or fn)()
        end.record(stream)
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end) * 1e-3 / n  # ms -> s

    for _ in range(warmup):
        fn()
    n = launches_per_window(window(1, True), window_s) if body is not None else 1
    times: list[float] = []
    deadline = _time.perf_counter() + budget_s
    while len(times) < max_reps and (len(times) < min_reps or _time.perf_counter() < deadline):
        times.append(window(n, body is not None))
    return np.asarray(times, dtype=np.float64)
