"""The host-bound flag from the timer to every place it shows: bench rows, the text table, workloads.csv,
the report, the roofline figure, api.measure_kernel and the profile totals; and bench's CUDA-graph
replay decision.

CUDA windows are simulated by a backend whose `timed` answers a CUDA-like Timing (an enqueue time
beside the device time) around the CPU's real run: what is tested is what the code does with the two
times, not what a device measures (tests/test_cuda_hostbound_gpu.py does that on a GPU).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_plots import make_synthetic_run, synthetic_workloads

from gpuroof import plots
from gpuroof.backends.cpu import CpuBackend
from gpuroof.bench import GRAPH_BELOW_S, BenchSettings, graph_replay, results_table, run_case
from gpuroof.hostbound import Timing, flagged
from gpuroof.roofline import Roofline
from gpuroof.workloads import Case
from gpuroof.workloads.gemm import GEMM, GemmParams

ROOF = Roofline(bandwidth={"dram": 1e10}, compute={"float32": 1e11})
CASE = Case(GEMM, GemmParams(64, 64, 64, "float32", "blas"))
SETTINGS = BenchSettings(1, 3, 3, 0.0)


class EnqueueBackend(CpuBackend):
    """The CPU backend with a CUDA-like timer: each window's device time is the CPU's real time,
    and the host is said to have spent `fraction` of it enqueueing. `timed_graph` answers `graph`
    (a Timing, or an exception to raise) and records its calls."""

    def __init__(self, fraction: float, graph=None):
        super().__init__(0)
        self.fraction, self.graph, self.graph_calls = fraction, graph, []

    def timed(self, fn, **kw):
        times = self.time(fn, **kw)
        return Timing(times, times * self.fraction, replay="stream", launches_per_window=7)

    def timed_graph(self, fn, **kw):
        self.graph_calls.append(kw)
        if isinstance(self.graph, Exception):
            raise self.graph
        return self.graph


def test_cpu_bench_leaves_the_host_bound_cell_empty_not_false(tmp_path):
    row, _ = run_case(CpuBackend(0), ROOF, CASE, SETTINGS)
    assert row["valid"], row["notes"]
    assert row["host_bound"] is None and row["enqueue_s"] is None and row["replay"] is None
    assert math.isnan(row["stream_time_s"])
    pd.DataFrame([row]).to_csv(tmp_path / "w.csv", index=False)
    back = pd.read_csv(tmp_path / "w.csv")
    assert back["host_bound"].isna().all() and not flagged(back["host_bound"].iloc[0])


def test_a_host_bound_window_is_flagged_in_the_row_the_table_and_the_notes():
    backend = EnqueueBackend(0.97)
    row, _ = run_case(backend, ROOF, CASE, SETTINGS)
    assert row["valid"] and row["host_bound"] is True and row["enqueue_fraction"] == pytest.approx(0.97)
    assert row["replay"] == "stream" and row["stream_time_s"] == row["time_s"]
    assert "host-bound" in row["notes"] and "CUDA graph" in row["notes"]
    # The CPU's runners are not capturable: bench says why it kept the stream time.
    assert "refuses stream capture" in row["notes"] and backend.graph_calls == []
    table = results_table(pd.DataFrame([row]))
    assert "HOST-BOUND" in table and "batch the work" in table


def test_a_device_bound_window_is_not_flagged():
    row, _ = run_case(EnqueueBackend(0.2), ROOF, CASE, SETTINGS)
    assert row["host_bound"] is False and "host-bound" not in row["notes"]
    assert "HOST-BOUND" not in results_table(pd.DataFrame([row]))


def _stream(device_s: float, fraction: float) -> Timing:
    times = np.full(5, device_s)
    return Timing(times, times * fraction, replay="stream", launches_per_window=40)


@pytest.mark.parametrize("device_s,fraction,capturable,replayed,note", [
    (2e-3, 0.1, True, False, ""),  # long and device-bound: the stream time stands
    (GRAPH_BELOW_S / 2, 0.1, True, True, "CUDA graph replay of 40 launches"),  # short
    (2e-3, 0.95, True, True, "CUDA graph replay"),  # host-bound
    (2e-3, 0.95, False, False, "refuses stream capture"),  # host-bound, but cuBLAS through CuPy
])
def test_bench_replays_short_or_host_bound_windows_through_a_graph_where_the_runner_allows(
        device_s, fraction, capturable, replayed, note):
    graph = Timing(np.full(3, device_s / 2), np.full(3, 1e-7), replay="graph", launches_per_window=40)
    backend = EnqueueBackend(fraction, graph)
    got, text = graph_replay(backend, None, _stream(device_s, fraction), capturable, SETTINGS)
    assert (got is graph) is replayed and (len(backend.graph_calls) == 1) is replayed
    if replayed:
        assert backend.graph_calls[0]["launches"] == 40  # the stream window's own launch count
    assert note in text


def test_a_failed_capture_keeps_the_stream_time_and_says_why():
    from gpuroof.backends.cuda.timing import GraphUnsupported

    backend = EnqueueBackend(0.95, GraphUnsupported("CUDARuntimeError: cudaErrorStreamCaptureUnsupported"))
    got, text = graph_replay(backend, None, _stream(1e-5, 0.95), True, SETTINGS)
    assert got is None and "capture failed" in text and "cudaErrorStreamCaptureUnsupported" in text


def test_the_cpu_is_never_replayed():
    got, text = graph_replay(CpuBackend(0), None, Timing(np.full(3, 1e-6)), True, SETTINGS)
    assert got is None and text == ""


def test_roofline_figure_and_report_mark_host_bound_workloads(tmp_path):
    from gpuroof.report import workloads_table

    run = make_synthetic_run(tmp_path / "run", hierarchy=False, telemetry=False)
    w = synthetic_workloads()
    w["host_bound"] = [True, False, None, None, False, None]
    w.to_csv(run / "workloads.csv", index=False)
    d = plots.roofline_figure(run)
    ax = d.fig.axes[0]
    squares = [c for c in ax.collections if c.get_gid() == "host-bound"]
    assert len(squares) == 1 and len(squares[0].get_offsets()) == 1
    assert np.allclose(squares[0].get_offsets()[0], [w["intensity"][0], w["achieved_flops"][0]])
    assert "host-bound" in " ".join(t.get_text() for t in d.fig.legends[0].get_texts())
    assert "1 host-bound point" in d.caption
    html = workloads_table(pd.read_csv(run / "workloads.csv"))
    assert html.count("host-bound") == 1
    w["host_bound"] = None  # a CPU run: no square, no legend entry
    w.to_csv(run / "workloads.csv", index=False)
    d = plots.roofline_figure(run)
    assert not [c for c in d.fig.axes[0].collections if c.get_gid() == "host-bound"]
    assert "host-bound" not in d.caption


def test_measure_kernel_on_the_cpu_leaves_host_bound_empty():
    from gpuroof import api

    x = np.ones(1 << 16)
    res = api.measure_kernel(lambda: x * 2.0, flops=x.size, bytes=16 * x.size, backend="cpu", ceilings=ROOF,
                             min_reps=3, max_reps=3, budget_s=0.01)
    assert res.host_bound is None and res.to_dict()["host_bound"] is None
    assert "HOST-BOUND" not in res.summary()


def test_measure_kernel_flags_a_host_bound_call():
    from gpuroof import api

    x = np.ones(1 << 16)
    res = api.measure_kernel(lambda: x * 2.0, flops=x.size, bytes=16 * x.size, backend=EnqueueBackend(1.0),
                             ceilings=ROOF, min_reps=3, max_reps=3, budget_s=0.01)
    assert res.host_bound is True and res.to_dict()["enqueue_fraction"] == pytest.approx(1.0)
    assert "HOST-BOUND" in res.summary() and any("host-bound" in n for n in res.notes)


def test_profile_totals_flag_a_cuda_step_whose_host_span_reaches_its_device_time():
    from gpuroof.profile import _model_row, _totals

    ops = pd.DataFrame({"flops": [1e9], "bytes": [1e6], "time_s": [1e-3], "predicted_time_s": [5e-4],
                        "bound": ["compute"], "unit": ["float32"], "roof_unit": ["float32"], "dtype": ["float32"],
                        "above_roof": [False], "notes": [""]})
    cuda = _totals(ops, [1e-3], [1.2e-3], [1e-3], 10 ** 9, False, "2.13", gpu=True)
    assert cuda["host_bound"] is True and cuda["enqueue_s"] == pytest.approx(1.2e-3)
    assert "host-bound" in _model_row(ops, cuda)["notes"].iloc[0]
    cpu = _totals(ops, [1e-3], [1.2e-3], [1e-3], 10 ** 9, False, "2.13", gpu=False)
    assert cpu["host_bound"] is None and cpu["enqueue_s"] is None
    assert _totals(ops, [1e-3], [0.3e-3], [1e-3], 10 ** 9, False, "2.13", gpu=True)["host_bound"] is False


def test_report_warns_of_host_bound_sweep_points_and_failed_matrix_units(tmp_path):
    from gpuroof.report import collect_warnings
    from gpuroof.results import load_run

    run = load_run(make_synthetic_run(tmp_path / "run", hierarchy=False, telemetry=False))
    run.meta["matrix_failed_units"] = {"int8-matrix": "CUBLASError: cuBLAS Error: CUBLAS_STATUS_NOT_SUPPORTED"}
    run.meta["host_bound_points"] = 2
    found = collect_warnings(run, None, None, None)
    assert ("bad", "the matrix unit int8-matrix failed and has no ceiling: CUBLASError: cuBLAS Error: "
                   "CUBLAS_STATUS_NOT_SUPPORTED.") in found
    assert any(sev == "warn" and text.startswith("2 sweep point(s) were host-bound") for sev, text in found)
    run.meta["host_bound_points"] = None  # a CPU run: the flag does not apply, nothing to say
    del run.meta["matrix_failed_units"]
    assert not [t for _, t in collect_warnings(run, None, None, None) if "host-bound" in t or "matrix unit" in t]
