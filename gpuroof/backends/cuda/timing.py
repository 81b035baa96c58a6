"""CUDA-event timing of enqueued work: back-to-back launches per event pair on the stream the work goes
to, the host's enqueue time beside every window, CUDA-graph replay for short launches, and the one
non-blocking stream a backend does all its work on."""
from __future__ import annotations

import math
import sys
import time as _time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from gpuroof.backends.base import check_reps, repeat
from gpuroof.errors import MeasurementError, UsageError
from gpuroof.hostbound import Timing, kernels_per_call

#: Device time one event pair brackets. With a single launch per pair on an idle stream the host's
#: launch path (several microseconds in Python) falls between the events: 4-15% of a 100 us DRAM
#: read. Milliseconds of back-to-back launches put that below a percent.
WINDOW_S = 5e-3

#: Most kernels enqueued in one window (keeps a repetition bounded for the tiniest kernels, and the
#: launch queue, about a thousand entries deep, from filling: a full queue makes enqueue wait on the
#: device and would read as host-bound). A call that enqueues several kernels (an LSTM's steps, an
#: MLP's layers, im2col and its GEMM) counts each of them (hostbound.kernels_per_call).
MAX_LAUNCHES = 1000

Clock = Callable[[], float]


def launches_per_window(launch_s: float, window_s: float = WINDOW_S, most: int = MAX_LAUNCHES,
                        kernels: int = 1) -> int:
    """Back-to-back calls that fill one timed window of `window_s`: 1 .. `most` // `kernels`, so that
    the window never enqueues more than `most` kernels when each call enqueues `kernels` of them
    (at least one call, even when one call alone enqueues more)."""
    if isinstance(kernels, bool) or not isinstance(kernels, (int, np.integer)) or kernels < 1:
        raise UsageError(f"kernels {kernels!r}: kernels enqueued per call must be an integer >= 1")
    cap = max(1, most // int(kernels))
    if not math.isfinite(launch_s) or launch_s <= 0:
        return cap
    return int(min(cap, max(1, math.ceil(window_s / launch_s))))


# ---------------------------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------------------------

def current_streams(cp: Any) -> list:
    """The streams the caller's work goes to: CuPy's current stream (the events go there), then
    torch's current stream on the same device when torch is imported, has initialised CUDA and
    uses another stream (a torch side stream, `with torch.cuda.stream(s)`).

    Events recorded with no stream go to the legacy null stream, which does not wait for work on a
    non-blocking stream: that work would fall outside the window.
    """
    main = cp.cuda.get_current_stream()
    streams = [main]
    torch = sys.modules.get("torch")
    if torch is None:
        return streams
    try:
        if not torch.cuda.is_initialized():
            return streams
        ts = torch.cuda.current_stream(cp.cuda.Device().id)
        if int(ts.cuda_stream) == int(main.ptr):
            return streams
    except Exception:  # a CPU build of torch, or CUDA not usable from torch: CuPy's stream only
        return streams
    from_external = getattr(cp.cuda.Stream, "from_external", None)
    streams.append(from_external(ts) if from_external is not None
                   else cp.cuda.ExternalStream(int(ts.cuda_stream)))
    return streams


def with_caller(streams: list, caller: Any) -> list:
    """`streams` (the backend's own first: current_streams inside OwnStream.active) with `caller`,
    the stream that was current before the backend's was made so, second where it is none of them:
    work a caller's function sends there explicitly stays inside the window too."""
    if any(int(s.ptr) == int(caller.ptr) for s in streams):
        return streams
    return streams[:1] + [caller] + streams[1:]


class OwnStream:
    """The one non-blocking stream a backend does all its work on: `active()` makes it (and the
    backend's device) current, so kernels, cuBLAS (which CuPy sets to the current stream before
    every call), events and waits all go to it, whatever stream the caller has made current.

    A non-blocking stream does not wait for the legacy null stream, nor the null stream for it. So
    that work the caller enqueued before (inputs filled, outputs poisoned) comes first and work the
    caller enqueues after (a check of the outputs) comes last, entering from another stream makes
    this one wait for the caller's stream (an event it records), and leaving makes the caller's
    stream wait for this one: device-side waits, the host never blocks for them. Entered while it is
    already current (a backend call inside another, a launch inside a timed window, a capture), it
    joins nothing.
    """

    def __init__(self, cp: Any, device: Any):
        self._cp, self._device = cp, device
        with device:
            self.stream = cp.cuda.Stream(non_blocking=True)
            self._enter = cp.cuda.Event(disable_timing=True)
            self._leave = cp.cuda.Event(disable_timing=True)

    @property
    def ptr(self) -> int:
        return int(self.stream.ptr)

    @contextmanager
    def active(self) -> Iterator[Any]:
        """The backend's device and stream current for the block (yields the stream)."""
        with self._device:
            caller = self._cp.cuda.get_current_stream()
            if int(caller.ptr) == self.ptr:
                yield self.stream
                return
            self._enter.record(caller)
            self.stream.wait_event(self._enter)
            try:
                with self.stream:
                    yield self.stream
            finally:
                self._leave.record(self.stream)
                caller.wait_event(self._leave)

    def synchronize(self) -> None:
        """Block the host until everything enqueued on the stream has run."""
        self.stream.synchronize()


class Bracket:
    """An event pair around work on one or more streams: start and end go on the first stream;
    every other stream waits for the start and is joined back (an event it records, which the first
    stream waits for) before the end, so the pair brackets the work on all of them."""

    def __init__(self, cp: Any, streams: list):
        self._cp = cp
        self.streams = streams
        self.start, self.end = cp.cuda.Event(), cp.cuda.Event()
        self._joins = [cp.cuda.Event(disable_timing=True) for _ in streams[1:]]

    def open(self) -> None:
        self.start.record(self.streams[0])
        for s in self.streams[1:]:
            s.wait_event(self.start)

    def close(self) -> None:
        for s, joined in zip(self.streams[1:], self._joins):
            joined.record(s)
            self.streams[0].wait_event(joined)
        self.end.record(self.streams[0])

    def seconds(self) -> float:
        self.end.synchronize()
        return self._cp.cuda.get_elapsed_time(self.start, self.end) * 1e-3  # ms -> s


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------

def time_events(cp: Any, fn: Callable[[], None], *, warmup: int, min_reps: int, max_reps: int,
                budget_s: float, window_s: float = WINDOW_S, streams: list | None = None,
                clock: Clock = _time.perf_counter) -> Timing:
    """Seconds per launch, device and host enqueue, one sample per event pair, until `budget_s` of
    wall time or `max_reps`.

    `fn` exposes `enqueue` (a backends.base.Blocking): each repetition calls its `setup` (cuBLAS
    modes), enqueues one untimed lead launch, records the start event behind it, then `n` launches
    and the end event, so the stream is busy while the host records and launches; a sample is the
    window over `n`, and `clock` times the host's `n` enqueues beside it. `n` fills `window_s`, from
    one timed launch after the warm-up, and never enqueues more than MAX_LAUNCHES kernels (a call
    that enqueues several counts each: hostbound.kernels_per_call). Any other callable is bracketed
    whole, one call per pair (its host time counts too, and is its enqueue time). The events go on
    `streams` (default: the current ones, `current_streams`).
    """
    check_reps(warmup, min_reps, max_reps, budget_s)
    body = getattr(fn, "enqueue", None)
    setup = getattr(fn, "setup", None) if body is not None else None
    kernels = kernels_per_call(fn)
    bracket = Bracket(cp, streams if streams is not None else current_streams(cp))

    def window(n: int) -> tuple[float, float]:
        if setup is not None:
            setup()
        if body is not None:
            body()  # the lead launch: the stream is busy when the start event is recorded
        bracket.open()
        t0 = clock()
        for _ in range(n):
            (body or fn)()
        t1 = clock()
        bracket.close()
        return bracket.seconds() / n, (t1 - t0) / n

    for _ in range(warmup):
        fn()
    n = launches_per_window(window(1)[0], window_s, kernels=kernels) if body is not None else 1
    times, enqueues = zip(*repeat(lambda: window(n), min_reps=min_reps, max_reps=max_reps, budget_s=budget_s,
                                  seconds=lambda s: s[0]))
    return Timing(np.asarray(times, dtype=np.float64), np.asarray(enqueues, dtype=np.float64),
                  replay="stream", launches_per_window=n, kernels_per_call=kernels)


class GraphUnsupported(MeasurementError):
    """The launches could not be captured into a CUDA graph (the reason says why)."""


def capture_graph(cp: Any, enqueue: Callable[[], None], launches: int,
                  stream: Any = None) -> tuple[Any, Any]:
    """(graph, stream): `launches` calls of `enqueue` captured on `stream` (default: a new
    non-blocking stream), made current for the capture.

    Nothing runs during the capture. A call that fails there (CuPy refuses cuBLAS calls on a
    capturing stream; a synchronising call breaks the capture) ends the capture and raises
    GraphUnsupported with its reason.
    """
    stream = stream if stream is not None else cp.cuda.Stream(non_blocking=True)
    graph = None
    with stream:
        stream.begin_capture()
        try:
            for _ in range(launches):
                enqueue()
        except Exception as exc:
            try:
                stream.end_capture()
            except Exception:  # an invalidated capture: discarded either way
                pass
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise GraphUnsupported(f"{type(exc).__name__}: {text}") from exc
        graph = stream.end_capture()
    return graph, stream


def time_graph(cp: Any, fn: Callable[[], None], *, launches: int, warmup: int, min_reps: int,
               max_reps: int, budget_s: float, clock: Clock = _time.perf_counter,
               stream: Any = None) -> Timing:
    """Seconds per launch of `launches` enqueues of `fn` captured into a CUDA graph, replayed (as
    triton's do_bench_cudagraph does): the host launches one graph per window, so its launch path
    no longer sits between the kernels. `fn` must expose `enqueue` (a Blocking); its `setup` runs
    before the capture. One untimed replay leads every window; `enqueue_s` is the host's time to
    launch the graph, per captured launch. The capture, the replays, the events and the waits all
    go on `stream` (a backend's own, OwnStream; default: a new non-blocking stream).
    """
    check_reps(warmup, min_reps, max_reps, budget_s)
    body = getattr(fn, "enqueue", None)
    if body is None:
        raise UsageError("a CUDA graph replays enqueued launches: the callable has no `enqueue`")
    if launches < 1:
        raise UsageError(f"launches {launches}: must be >= 1")
    getattr(fn, "setup", lambda: None)()
    graph, stream = capture_graph(cp, body, launches, stream)
    bracket = Bracket(cp, [stream])
    graph.upload(stream)

    def window() -> tuple[float, float]:
        graph.launch(stream)  # the lead replay
        bracket.open()
        t0 = clock()
        graph.launch(stream)
        t1 = clock()
        bracket.close()
        return bracket.seconds() / launches, (t1 - t0) / launches

    for _ in range(warmup):
        graph.launch(stream)
    stream.synchronize()
    times, enqueues = zip(*repeat(window, min_reps=min_reps, max_reps=max_reps, budget_s=budget_s,
                                  seconds=lambda s: s[0]))
    return Timing(np.asarray(times, dtype=np.float64), np.asarray(enqueues, dtype=np.float64),
                  replay="graph", launches_per_window=launches, kernels_per_call=kernels_per_call(fn))
