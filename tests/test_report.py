"""report.html without a browser: self-contained, holds the whole run, says what is wrong, refuses bad input."""
from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from gpuroof import report
from gpuroof.errors import UsageError

try:
    from test_plots import make_synthetic_run, run_cli
except ImportError:  # tests/ imported as a package
    from tests.test_plots import make_synthetic_run, run_cli


class Page(HTMLParser):
    """Tags, attributes and text of a page, for checks that need no browser."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]


@pytest.fixture(scope="module")
def syn_report(tmp_path_factory) -> tuple[Path, str]:
    run = make_synthetic_run(tmp_path_factory.mktemp("rep") / "run")
    path = report.write_report(run)
    return path, path.read_text(encoding="utf-8")


def test_report_is_one_self_contained_file_without_script(syn_report):
    path, html = syn_report
    assert path.name == "report.html" and path.parent.name == "run"
    page = Page(html)
    assert page.all("script") == [] and "<script" not in html.lower()
    for tag, attrs in page.tags:
        for key in ("src", "href", "srcset", "data", "poster"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith("data:") or value.startswith("#"), (tag, key, value[:60])
    assert "http://" not in html and "https://" not in html and "@import" not in html
    imgs = page.all("img")
    assert len(imgs) == 5  # roofline, lost time, sweep, telemetry, hierarchy
    for img in imgs:
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert int(img["width"]) > 300 and img["alt"]


def test_report_holds_device_ceilings_workloads_and_provenance(syn_report):
    _, html = syn_report
    page = Page(html)
    text = "\n".join(page.text)
    assert "Synthetic H100 <SXM>" in text and "&lt;SXM&gt;" in html  # escaped, not markup
    for needle in ("dram bandwidth", "float16-matrix compute", "990 TFLOP/s", "0.606", "ridge vs DRAM",
                   "multiprocessors", "node-1", "l2 bytes", "50 MiB"):
        assert needle in text, needle
    # workloads: placement, efficiency, predicted against measured time
    for needle in ("lstm", "h=1024", "conv2d", "resnet-3x3", "memory", "compute", "93.5%", "4.9 ms"):
        assert needle in text, needle
    # the exact command and the versions
    assert any(t.startswith("gpuroof run --out ") for t in page.text)
    assert "cupy-cuda12x" in text and "13.6" in text
    heads = [t for t in page.text if t in ("Warnings", "Figures", "Workloads", "Device and host",
                                           "Command and versions")]
    assert heads == ["Warnings", "Figures", "Workloads", "Device and host", "Command and versions"]


def test_report_warns_about_invalid_throttled_and_above_roof(syn_report):
    _, html = syn_report
    warnings = [t for t in Page(html).text if t]
    joined = "\n".join(warnings)
    assert "1 of 42 sweep points failed the output check" in joined and "float32 ro 16 FMAs" in joined
    assert "throttled (sw_power_cap)" in joined
    assert "workload lstm h=1024 is above its roof" in joined
    assert "workload lstm h=4096: output check failed" in joined


def _warnings(run: Path) -> list[tuple[str, str]]:
    from gpuroof import plots

    r = plots.as_run(run)
    tel = plots.optional_table(r, "telemetry")
    return report.collect_warnings(r, plots.medians(plots.samples(r)), plots.workload_points(r), tel)


def test_report_flags_sweep_points_above_the_fitted_roof(tmp_path):
    run = make_synthetic_run(tmp_path / "run", workloads=False, hierarchy=False)
    pts = pd.read_csv(run / "points.csv")
    fast = (pts["dtype"] == "float64") & (pts["variant"] == "rw") & (pts["fmas_per_element"] == 4)
    pts.loc[fast, "time_s"] /= 3  # three times the DRAM roof: a cache, not DRAM
    pts.to_csv(run / "points.csv", index=False)
    text = "\n".join(t for _, t in _warnings(run))
    assert "1 valid sweep point(s) are more than 5% above the fitted roof" in text
    assert "the largest is float64 rw 4 FMAs at 2.9" in text  # 3x minus the 3% noise of the samples


def test_report_has_no_warning_for_a_clean_run(tmp_path):
    run = make_synthetic_run(tmp_path / "run", workloads=False, hierarchy=False)
    pts = pd.read_csv(run / "points.csv")
    pts["valid"], pts["throttled"], pts["clock_event_reasons"] = True, False, 0
    pts.to_csv(run / "points.csv", index=False)
    tel = pd.read_csv(run / "telemetry.csv")
    tel["clock_event_reasons"] = 0
    tel.to_csv(run / "telemetry.csv", index=False)
    meta = json.loads((run / "run.json").read_text())
    meta.update(throttled_points=0, validation={"points": 42, "invalid": 0, "invalid_points": []})
    (run / "run.json").write_text(json.dumps(meta))
    assert _warnings(run) == []


def test_report_command_writes_where_asked_and_replaces_atomically(tmp_path, capsys):
    run = make_synthetic_run(tmp_path / "run", workloads=False, hierarchy=False, telemetry=False)
    out = tmp_path / "out.html"
    out.write_text("old")
    assert run_cli(["report", str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<img ") == 2
    assert "No workloads were run" in html and "No hierarchy figure" in html and "No telemetry figure" in html
    assert not list(tmp_path.glob(".out.html.*"))


@pytest.mark.parametrize("case, message", [
    ("missing", "no run.json"),
    ("notrun", "not a gpuroof run"),
    ("invalid", "no valid points"),
    ("outdir", "does not exist"),
])
def test_report_bad_input_is_one_line_and_exit_2(case, message, tmp_path, capsys):
    run = make_synthetic_run(tmp_path / "run", all_invalid=case == "invalid")
    argv = ["report", str(run)]
    if case == "missing":
        argv = ["report", str(tmp_path / "nope")]
    elif case == "notrun":
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "run.json").write_text("{}")
        argv = ["report", str(tmp_path / "x")]
    elif case == "outdir":
        argv += ["--out", str(tmp_path / "no" / "such" / "report.html")]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpuroof: error: ") and message in err


def test_write_report_refuses_a_partial_run(tmp_path):
    run = make_synthetic_run(tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta.update(status="partial", ceilings=None)
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="partial"):
        report.write_report(run)


def test_time_and_byte_formatting():
    assert report.fmt_time(1.3e-5) == "13 µs" and report.fmt_time(0.0049) == "4.9 ms"
    assert report.fmt_time(float("nan")) == "-" and report.fmt_bytes(50 << 20) == "50 MiB"


def test_report_and_figures_of_a_bench_only_run(tmp_path):
    """`gpuroof bench` writes a run with workloads.csv and no sweep: roofline and report still work."""
    run = make_synthetic_run(tmp_path / "run", hierarchy=False, telemetry=False)
    (run / "points.csv").unlink()
    (run / "matrix.csv").unlink()
    meta = json.loads((run / "run.json").read_text())
    meta["ceilings_source"] = "results/synthetic/20260101T000000Z"
    (run / "run.json").write_text(json.dumps(meta))
    from gpuroof import plots

    drawn, skipped = plots.draw_figures(run, "all")
    assert list(drawn) == ["roofline", "losttime"] and "points.csv" in skipped["sweep"]
    html = report.write_report(run).read_text()
    assert "holds workloads only" in html and "results/synthetic/20260101T000000Z" in html
    assert html.count("<img ") == 2  # roofline and lost time
    with pytest.raises(UsageError, match="points.csv"):
        plots.draw_figures(run, "sweep")


def test_report_opens_with_a_verdict_ceilings_and_the_time_lost(syn_report):
    _, html = syn_report
    head = html[html.index("<h2 id='verdict'>"):html.index("<h2 id='warnings'>")]
    # the synthetic run has an invalid point and an invalid workload: not trustworthy, and it says why
    assert "Trustworthy: no." in head and "failed the output check" in head
    assert "float16 matrix" in head and "61%" in head and "DRAM bandwidth" in head and "90%" in head
    items = re.findall(r"<li><b>(.*?)</b>.*?: (.*?)\.</li>", head)
    assert [name for name, _ in items] == ["conv2d", "gemm", "mlp b=512"]  # most time lost first
    assert all("compute-bound" in why or "memory-bound" in why for _, why in items)
    assert "occupancy" in items[0][1]  # a GPU run speaks of occupancy, a CPU run of cores


def test_report_verdict_reads_the_run_quality_object(tmp_path):
    run = make_synthetic_run(tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta["validation"]["invalid"] = 0
    meta["quality"] = {"ok": False, "reasons": ["load average 3.1 on 2 cores during the sweep"]}
    (run / "run.json").write_text(json.dumps(meta))
    answer, reasons = report.trust(meta, [])
    assert answer == "no" and reasons[0].startswith("load average")
    assert report.trust({**meta, "quality": {"ok": True, "reasons": []}}, [])[0] == "yes"
    assert report.trust({**meta, "quality": {"ok": True, "reasons": []}}, [("warn", "throttled")])[0] == "with caveats"
    html = report.write_report(run).read_text()
    assert "load average 3.1 on 2 cores" in html[:html.index("<h2 id='warnings'>")]


def test_report_speaks_of_cores_on_a_cpu(tmp_path):
    run = make_synthetic_run(tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta.update(backend="cpu", max_clocks_mhz={"sm": 3000.0, "mem": None})
    (run / "run.json").write_text(json.dumps(meta))
    text = re.sub(r"<[^>]+>", " ", report.write_report(run).read_text())
    assert "SM" not in text.split() and "sm" not in text.split() and "core 3000 MHz" in text
