"""The CUDA timer's bookkeeping without a GPU: which stream the events go to, what a window brackets,
the host's enqueue time beside the device time, and CUDA-graph capture.

A recorded-call fake stands in for cupy's events and streams (and for torch's current stream): the
tests check the calls the timer makes and the arithmetic it does on their answers. The fake device
runs a window in max(launches x device time per launch, the host's enqueue span): the device cannot
finish before the host has enqueued the last launch. What a real device measures is left to the
`gpu`-marked tests (tests/test_cuda_hostbound_gpu.py).
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from gpuroof.backends.base import Blocking
from gpuroof.backends.cuda import timing
from gpuroof.hostbound import HOST_BOUND_FRACTION, Timing, host_bound, note, window_figures


class Clock:
    """The host clock the timer reads; enqueues advance it by their host time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeStream:
    def __init__(self, log, name, ptr):
        self.log, self.name, self.ptr = log, name, ptr
        self.capturing = False

    def wait_event(self, event):
        self.log.append(("wait", self.name, event.name))

    def synchronize(self):
        self.log.append(("sync", self.name))

    def begin_capture(self):
        self.capturing = True
        self.log.append(("begin_capture", self.name))

    def end_capture(self):
        self.capturing = False
        self.log.append(("end_capture", self.name))
        return FakeGraph(self.log)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeGraph:
    def __init__(self, log):
        self.log = log

    def upload(self, stream):
        self.log.append(("upload", stream.name))

    def launch(self, stream):
        self.log.append(("graph_launch", stream.name))


class FakeCupy:
    """cupy.cuda's events and streams as far as the timer uses them, plus a device model."""

    def __init__(self, clock, device_s):
        self.log: list = []
        self.clock, self.device_s = clock, device_s
        self.current = FakeStream(self.log, "cupy", 0x1000)
        self.launches = 0  # launches enqueued since the last start event
        self.opened_at = 0.0
        cp = self
        names = iter(f"e{i}" for i in range(10 ** 6))

        class Event:
            def __init__(self, disable_timing=False):
                self.name = next(names)
                self.disable_timing = disable_timing
                self.elapsed_ms = None

            def record(self, stream=None):
                cp.log.append(("record", self.name, stream.name if stream is not None else None))
                if self.disable_timing:
                    return
                self.at = (cp.clock.now, cp.launches)

            def synchronize(self):
                cp.log.append(("event_sync", self.name))

        class Stream:
            null = FakeStream(self.log, "null", 0)

            def __new__(cls, non_blocking=False):
                return FakeStream(cp.log, "side", 0x3000)

        self.cuda = types.SimpleNamespace(
            Event=Event, Stream=Stream, get_current_stream=lambda: self.current,
            get_elapsed_time=self.elapsed, Device=lambda: types.SimpleNamespace(id=0),
            ExternalStream=lambda ptr: FakeStream(self.log, "torch", ptr))

    def enqueue(self, host_s):
        self.clock.now += host_s
        self.launches += 1
        self.log.append(("launch",))

    def elapsed(self, start, end) -> float:
        (t0, n0), (t1, n1) = start.at, end.at
        return max((n1 - n0) * self.device_s, t1 - t0) * 1e3  # ms


def blocking(cp, host_s, setups):
    return Blocking(lambda: cp.enqueue(host_s), lambda: None, setup=lambda: setups.append(1))


def install_torch(monkeypatch, cp, ptr, initialised=True):
    stream = types.SimpleNamespace(cuda_stream=ptr)
    cuda = types.SimpleNamespace(is_initialized=lambda: initialised, current_stream=lambda device=None: stream)
    monkeypatch.setitem(__import__("sys").modules, "torch", types.SimpleNamespace(cuda=cuda))
    return stream


# ---------------------------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------------------------

def test_events_go_on_cupys_current_stream_never_the_legacy_null_stream(monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "torch", raising=False)
    cp = FakeCupy(Clock(), 1e-3)
    cp.current = FakeStream(cp.log, "nonblocking", 0x2000)  # `with cupy.cuda.Stream(non_blocking=True):`
    timing.time_events(cp, lambda: cp.enqueue(1e-6), warmup=0, min_reps=2, max_reps=2, budget_s=0.0)
    records = [e for e in cp.log if e[0] == "record"]
    assert records and {stream for _, _, stream in records} == {"nonblocking"}


def test_a_torch_side_stream_is_bracketed_by_waiting_on_the_start_and_joining_before_the_end(monkeypatch):
    cp = FakeCupy(Clock(), 1e-3)
    install_torch(monkeypatch, cp, ptr=0x5000)
    streams = timing.current_streams(cp)
    assert [s.name for s in streams] == ["cupy", "torch"] and streams[1].ptr == 0x5000
    calls = []
    res = timing.time_events(cp, lambda: (calls.append(1), cp.enqueue(1e-6)), warmup=0, min_reps=1,
                             max_reps=1, budget_s=0.0)
    assert len(res.times_s) == 1 and len(calls) == 1  # a plain callable: one call per pair
    seq = [e for e in cp.log if e[0] in ("record", "wait", "launch")]
    start, join, end = seq[0][1], seq[3][1], seq[5][1]
    assert seq == [("record", start, "cupy"), ("wait", "torch", start), ("launch",),
                   ("record", join, "torch"), ("wait", "cupy", join), ("record", end, "cupy")]


def test_torch_on_cupys_own_stream_or_without_cuda_adds_no_stream(monkeypatch):
    cp = FakeCupy(Clock(), 1e-3)
    install_torch(monkeypatch, cp, ptr=cp.current.ptr)
    assert [s.name for s in timing.current_streams(cp)] == ["cupy"]
    install_torch(monkeypatch, cp, ptr=0x5000, initialised=False)  # torch imported, CUDA never used
    assert [s.name for s in timing.current_streams(cp)] == ["cupy"]


# ---------------------------------------------------------------------------------------------
# the host's enqueue time beside the device time
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host_s,device_s,flagged", [
    (40e-6, 10e-6, True),  # Python enqueues slower than the device runs: the device waits
    (9.5e-6, 10e-6, True),  # 95% of the device time
    (5e-6, 10e-6, False),  # the queue runs ahead of the device
    (1e-6, 2e-3, False),  # a long kernel
])
def test_enqueue_time_is_measured_per_launch_beside_the_device_time(monkeypatch, host_s, device_s, flagged):
    monkeypatch.delitem(__import__("sys").modules, "torch", raising=False)
    clock = Clock()
    cp = FakeCupy(clock, device_s)
    setups: list = []
    res = timing.time_events(cp, blocking(cp, host_s, setups), warmup=1, min_reps=3, max_reps=3,
                             budget_s=0.0, clock=clock)
    n = timing.launches_per_window(max(host_s, device_s))  # the sizing window's own launch
    assert res.replay == "stream" and res.launches_per_window == n
    assert np.allclose(res.enqueue_s, host_s)
    assert np.allclose(res.times_s, max(host_s, device_s))
    fig = window_figures(res)
    assert fig["host_bound"] is flagged
    assert fig["enqueue_fraction"] == pytest.approx(host_s / max(host_s, device_s))
    # cuBLAS modes: set once per window (warm-up, sizing window, 3 windows), not once per launch.
    assert len(setups) == 1 + 1 + 3 < sum(e == ("launch",) for e in cp.log)


def test_host_bound_is_the_90_percent_rule_and_none_without_an_enqueue_clock():
    assert HOST_BOUND_FRACTION == 0.9
    assert host_bound(0.9e-3, 1e-3) is True and host_bound(0.89e-3, 1e-3) is False
    assert host_bound(None, 1e-3) is None and host_bound(1e-3, None) is None
    assert host_bound(1e-3, 0.0) is None and host_bound(float("nan"), 1e-3) is None
    cpu = window_figures(Timing(np.array([1e-3, 2e-3])))  # the CPU backend: no enqueue clock
    assert cpu == {"enqueue_s": None, "enqueue_fraction": None, "host_bound": None}
    text = note(3.2e-3, 3.3e-3)
    assert "3.2 ms" in text and "97%" in text and "CUDA graph" in text and "batch" in text


# ---------------------------------------------------------------------------------------------
# CUDA graphs
# ---------------------------------------------------------------------------------------------

def test_a_call_refused_during_capture_ends_the_capture_and_says_why():
    cp = FakeCupy(Clock(), 1e-6)

    def gemm():
        raise NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")
    with pytest.raises(timing.GraphUnsupported, match="NotImplementedError: calling cuBLAS API"):
        timing.capture_graph(cp, gemm, 8)
    assert [e[0] for e in cp.log] == ["begin_capture", "end_capture"]


def test_graph_replay_captures_the_launches_once_and_launches_one_graph_per_window():
    clock = Clock()
    cp = FakeCupy(clock, 1e-6)
    setups: list = []
    fn = blocking(cp, 5e-6, setups)
    res = timing.time_graph(cp, fn, launches=50, warmup=2, min_reps=3, max_reps=3, budget_s=0.0, clock=clock)
    kinds = [e[0] for e in cp.log]
    captured = kinds[kinds.index("begin_capture"):kinds.index("end_capture")]
    assert captured.count("launch") == 50 and kinds.count("launch") == 50  # nothing enqueued outside
    assert kinds.count("graph_launch") == 2 + 2 * 3  # warm-up, then a lead and a timed replay per window
    assert res.replay == "graph" and res.launches_per_window == 50 and len(res.times_s) == 3
    assert setups == [1]  # cuBLAS modes before the capture
    with pytest.raises(timing.UsageError):
        timing.time_graph(cp, lambda: None, launches=4, warmup=0, min_reps=1, max_reps=1, budget_s=0.0)
