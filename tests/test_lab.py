"""`gpuroof report DIR` on a directory of runs: the lab page (every run listed, flagged runs first with why,
cards against theoretical, figures, links to each run's report), built from the real CPU runs committed
under results/ beside the synthetic H100 fixture (tests/gpu_fixture.py)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from gpuroof import lab as labmod
from gpuroof.cli import main
from gpuroof.compare import compare, load_runs

try:
    from gpu_fixture import write_h100_run
    from test_report import Page
except ImportError:  # tests/ imported as a package
    from tests.gpu_fixture import write_h100_run
    from tests.test_report import Page

ROOT = Path(__file__).resolve().parent.parent


def committed_cpu_runs() -> list[Path]:
    """The committed real CPU runs of the one device with the most of them (three or more), each a
    complete run with its core clock measured under load; [] when results/ has no such device."""
    by_device: dict[Path, list[Path]] = {}
    for f in sorted(ROOT.glob("results/*/*/run.json")):
        meta = json.loads(f.read_text())
        if meta.get("backend") == "cpu" and meta.get("status") == "complete" and \
                (meta.get("core_clock") or {}).get("measured_mhz") and not meta.get("ceilings_source"):
            by_device.setdefault(f.parent.parent, []).append(f.parent)
    best = max(by_device.values(), key=len, default=[])
    return best if len(best) >= 3 else []


CPU_RUNS = committed_cpu_runs()
needs_runs = pytest.mark.skipif(not CPU_RUNS, reason="results/ holds no device with three complete CPU runs "
                                                     "(gpuroof run --backend cpu --quick, three times)")


def copy_run(src: Path, dst: Path) -> Path:
    """A run directory without its figures (the lab page never reads them)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("figures"))
    return dst


def edit(run: Path, change) -> None:
    meta = json.loads((run / "run.json").read_text())
    change(meta)
    (run / "run.json").write_text(json.dumps(meta))


def make_lab(root: Path, slow: bool = True, days: bool = False) -> Path:
    """A lab: the committed CPU runs (real), the synthetic H100 fixture and, with `slow`, a copy of the
    first CPU run whose DRAM and L3 ceilings are cut to half of the lowest real one (a node with a
    degraded memory channel, simulated). With `days`, the CPU runs' timestamps are moved a few days
    apart (a layout scenario: the same host measured over a week)."""
    root.mkdir(parents=True, exist_ok=True)
    cpu = [copy_run(src, root / src.parent.name / src.name) for src in CPU_RUNS]
    write_h100_run(root / "synthetic-h100-fixture")
    if slow:
        low = {lv: min(json.loads((r / "run.json").read_text())["ceilings"]["bandwidth"][lv] for r in cpu)
               for lv in ("dram", "l3")}
        slow_run = copy_run(CPU_RUNS[0], root / "degraded-copy")

        def degrade(meta: dict) -> None:
            for lv, v in low.items():
                meta["ceilings"]["bandwidth"][lv] = v * 0.5
        edit(slow_run, degrade)
        cpu.append(slow_run)
    if days:
        for i, r in enumerate(cpu):
            edit(r, lambda meta, i=i: meta.update(created_utc=f"2026-11-{20 + 3 * i:02d}T08:00:00+00:00"))
    return root


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory) -> Path:
    return make_lab(tmp_path_factory.mktemp("lab") / "lab")


@pytest.fixture(scope="module")
def lab_page(lab_dir) -> tuple[Path, str]:
    path = labmod.write_lab(lab_dir)
    return path, path.read_text(encoding="utf-8")


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _section(html: str, h2_id: str) -> str:
    start = html.index(f"<h2 id='{h2_id}'>")
    nxt = html.find("<h2 ", start + 5)
    return html[start:nxt if nxt > 0 else None]


@needs_runs
def test_lab_page_lists_every_run_and_flags_the_slow_one_first(lab_page, lab_dir):
    path, html = lab_page
    assert path == lab_dir / "lab.html"
    page = Page(html)
    heads = [t for t in page.text if t in ("Flagged first", "Cards: ceilings against theoretical", "Figures",
                                          "Every run", "Made with")]
    assert heads == ["Flagged first", "Cards: ceilings against theoretical", "Figures", "Every run", "Made with"]
    every = _text(_section(html, "runs"))
    names = [r.name for r in CPU_RUNS] + ["synthetic-h100-fixture", "degraded-copy"]
    for n in names:
        assert n in every, n
    assert every.count("#") >= len(names)
    flagged = _section(html, "verdict")
    items = re.findall(r'<li class="(bad|warn)"><b>(#\d+) (.*?)</b>', flagged)
    assert items, "nothing flagged"
    sev = [s for s, _, _ in items]
    assert sev == sorted(sev)  # "bad" before "warn": the worst first
    slow = [i for i, (_, _, name) in enumerate(items) if "degraded-copy" in name]
    assert len(slow) == 1 and items[slow[0]][0] == "bad"
    why = _text(flagged.split('<li class="')[1 + slow[0]])
    assert "below the median" in why and "DRAM bandwidth" in why and "L3 bandwidth" in why
    assert "synthetic-h100-fixture" not in _text(flagged)  # a healthy card with nothing to say


@needs_runs
def test_lab_page_is_self_contained_and_links_each_runs_own_report(lab_page, lab_dir):
    path, html = lab_page
    page = Page(html)
    assert page.all("script") == [] and "http://" not in html and "https://" not in html
    imgs = page.all("img")
    assert [i["alt"] for i in imgs] == ["rooflines figure", "ceilings figure"]  # no day-long span: no time series
    assert all(i["src"].startswith("data:image/png;base64,") for i in imgs)
    links = {a["href"] for a in page.all("a") if not a["href"].startswith("#")}
    with_report = [r for r in CPU_RUNS if (r / "report.html").exists()]
    assert with_report and len(links) >= len(with_report)
    for href in links:
        target = (path.parent / href).resolve()
        assert target.name == "report.html" and target.exists(), href
    assert "none: gpuroof report" in _text(html) and "synthetic-h100-fixture" in _text(html)
    assert "No ceilings-over-time figure: no host's runs span a day" in _text(html)


@needs_runs
def test_lab_cards_show_ceilings_against_theoretical_and_the_measured_core_clock(lab_page):
    _, html = lab_page
    cards = _text(_section(html, "cards"))
    assert "NVIDIA H100 80GB HBM3" in cards and "SM 1755 MHz" in cards
    assert "3.35 TB/s" in cards  # the fixture's theoretical DRAM, from gpuroof's own H100 table
    assert "88% of theor." in cards  # 2.95 / 3.35
    for run in CPU_RUNS:
        meta = json.loads((run / "run.json").read_text())
        measured = meta["core_clock"]["measured_mhz"]
        assert f"core {measured:.0f} MHz" in cards
        os_mhz = meta["median_clocks"]["sm_clock_mhz"]
        if abs(os_mhz - measured) >= 1:  # the OS's nominal figure is never shown as the clock
            assert f"core {os_mhz:.0f} MHz" not in cards
    assert '<td class="num bad"><b>' in _section(html, "cards")  # the degraded copy's DRAM, in red


def test_lab_says_why_a_card_is_flagged_clock_throttling_quality(tmp_path):
    """Four synthetic H100 cards; one at a low SM clock, throttled and with a quality record that is not ok."""
    for i in range(3):
        write_h100_run(tmp_path / f"card{i}", host=f"fixture-node-{i}")
    write_h100_run(tmp_path / "card3", host="fixture-node-3", sm_mhz=1410.0, throttled_points=7,
                   scale={"float32": 0.8, "float64": 0.8}, quality={"ok": False, "reasons": ["busy: 40% of the CPUs"]})
    runs = labmod.find_lab(tmp_path).cards
    c = compare(runs, 0, overlap=False)
    cs = labmod.concerns(c, runs)
    slow = [i for i, r in enumerate(runs) if r.path.name == "card3"][0]
    text = " | ".join(x.text for x in cs[slow])
    assert "float32 vector" in text and "20% below the median" in text
    assert "SM clock 1410 MHz, 20% under the median 1755 MHz" in text
    assert "7 sweep point(s) ran while the device was throttled" in text
    assert "quality: busy: 40% of the CPUs" in text
    assert [labmod.flagged(x) for i, x in enumerate(cs) if i != slow] == [False] * 3
    html = labmod.render_lab(tmp_path)
    assert _text(_section(html, "verdict")).count("card") == 1 and "1 of 4 runs flagged" in _text(html)


@needs_runs
def test_lab_draws_each_ceiling_over_time_when_a_hosts_runs_span_days(tmp_path):
    root = make_lab(tmp_path / "lab", slow=True, days=True)
    html = labmod.render_lab(root)
    page = Page(html)
    assert [i["alt"] for i in page.all("img")] == ["rooflines figure", "ceilings figure", "over-time figure"]
    assert "Each ceiling of" in _text(html)


def test_lab_lists_workload_only_and_unfinished_runs_apart(tmp_path):
    write_h100_run(tmp_path / "card")
    write_h100_run(tmp_path / "bench-only")
    edit(tmp_path / "bench-only", lambda m: m.update(ceilings_source=str(tmp_path / "card")))
    write_h100_run(tmp_path / "partial")
    edit(tmp_path / "partial", lambda m: m.update(status="partial", ceilings=None, status_reason="interrupted"))
    lab = labmod.find_lab(tmp_path)
    assert [r.path.name for r in lab.cards] == ["card"]
    assert [r.path.name for r in lab.workload_runs] == ["bench-only"]
    assert [(s.path.name, "interrupted" in s.reason) for s in lab.skipped] == [("partial", True)]
    text = _text(labmod.render_lab(tmp_path))
    assert "Workload runs" in text and "bench-only" in text and "Not read" in text and "interrupted" in text


@needs_runs
def test_report_command_on_a_directory_writes_the_lab_page(lab_dir, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", str(lab_dir), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "lab" and doc["report"] == str(out) and out.read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".page.html.*"))  # written to a temporary name, then renamed


@pytest.mark.parametrize("case, needle", [
    ("empty", "holds no complete run with measured ceilings"),
    ("missing", "no such directory"),
    ("out", "the report is HTML"),
])
def test_report_on_a_bad_directory_is_one_line_and_exit_2(case, needle, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = {"empty": ["report", str(tmp_path / "empty")], "missing": ["report", str(tmp_path / "nope")],
            "out": ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "lab.txt")]}[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


@needs_runs
def test_lab_reads_what_compare_reads(lab_dir):
    """The lab page and `compare DIR` see the same cards (compare also takes a workload-only run)."""
    assert {r.path for r in labmod.find_lab(lab_dir).cards} == {r.path for r in load_runs([lab_dir])}


PROFILE = ROOT / "results/amd-epyc-family-25-model-1-avx2-2-cores/20261203T103839Z/profile/gpt2-decode"


@needs_runs
@pytest.mark.skipif(not (PROFILE / "profile.json").is_file(), reason="results/ holds no gpt2-decode profile")
def test_lab_predicts_each_profile_on_every_card_of_its_kind(tmp_path):
    """Models x cards: a profile found below the lab's root gets, per CPU card, the whole-model time
    `gpuroof predict` gives on that card's roofline; a card of another kind (the H100 fixture) gets none."""
    from gpuroof.predict import predict
    from gpuroof.units import si

    root = make_lab(tmp_path / "lab", slow=False)
    shutil.copytree(PROFILE, root / "profiles" / "gpt2-decode")
    html = labmod.render_lab(root)
    models = _text(_section(html, "models"))
    assert "gpt2-decode" in models and "Profiles not read" not in models
    cards = labmod.find_lab(root).cards
    cpu = [r for r in cards if r.backend == "cpu"]
    want = predict(root / "profiles" / "gpt2-decode", [r.path for r in cpu]).to_json()["targets"]
    for t in want:
        assert f"{si(t['predicted_time_s'], 's', 3)} {t['speedup']:.2f}x" in models
    header = re.findall(r"<th[^>]*>([^<]*)</th>", _section(html, "models"))
    assert header[4:] == [f"#{i + 1}" for i, r in enumerate(cards) if r.backend == "cpu"]  # none for the GPU
