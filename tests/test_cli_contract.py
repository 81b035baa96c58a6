"""One CLI contract: --json means stdout is exactly one JSON document; one rule for where results live;
`info` on a CPU says what the CPU is; run.json records the source tree and toolchain."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpuroof import cli
from gpuroof.commands import show as show_command
from gpuroof.bench import newest_run
from gpuroof.results import RESULTS_ENV, results_root
from gpuroof.results import make_run_dir

try:
    from test_plots import make_synthetic_run
except ImportError:  # tests/ imported as a package
    from tests.test_plots import make_synthetic_run

ROOT = Path(__file__).resolve().parent.parent


def one_document(text: str) -> object:
    """The whole of stdout parsed as one JSON document (json.loads refuses anything around it)."""
    return json.loads(text)


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    return make_synthetic_run(tmp_path_factory.mktemp("contract") / "run")


@pytest.fixture(scope="module")
def syn2(tmp_path_factory) -> Path:
    return make_synthetic_run(tmp_path_factory.mktemp("contract2") / "run")


@pytest.mark.parametrize("argv", [
    ["show", "{run}"],
    ["plot", "{run}", "--what", "roofline", "--out", "{tmp}/figs"],
    ["report", "{run}", "--out", "{tmp}/r.html"],
    ["compare", "{run}", "{run2}"],
    ["merge", "{run}", "--out", "{tmp}/all.csv"],
    ["info", "--backend", "cpu"],
])
def test_json_flag_makes_stdout_exactly_one_document(argv, syn, syn2, tmp_path, capsys):
    argv = [a.format(run=syn, run2=syn2, tmp=tmp_path) for a in argv] + ["--json"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    doc = one_document(out)
    assert isinstance(doc, dict) and doc
    assert out.count("\n") == 1  # one line: a document, not a table followed by a document


def test_compare_format_json_stays_an_alias_of_json(syn, syn2, capsys):
    assert cli.main(["compare", str(syn), str(syn2), "--format", "json"]) == 0
    a = one_document(capsys.readouterr().out)
    assert cli.main(["compare", str(syn), str(syn2), "--json"]) == 0
    assert one_document(capsys.readouterr().out) == a


def test_json_with_bad_input_is_still_one_document_and_exit_2(tmp_path, capsys):
    assert cli.main(["show", str(tmp_path / "nope"), "--json"]) == 2
    out, err = capsys.readouterr()
    doc = one_document(out)
    assert doc["exit_code"] == 2 and "no run.json" in doc["error"]
    assert err.count("\n") == 1 and "no run.json" in err
    assert cli.main(["show", "--json", "--no-such-flag"]) == 2  # refused by the parser, still a document
    assert one_document(capsys.readouterr().out)["exit_code"] == 2


def test_measure_json_sends_its_table_to_stderr(tmp_path):
    """A real (tiny) measurement in a fresh process, as a script would run it."""
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "gpuroof", "measure", "--backend", "cpu", "--quick", "--dtype",
                        "float32", "--levels", "dram", "--no-matrix", "--out", str(out), "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = one_document(p.stdout)
    assert doc["run_dir"] == str(out) and doc["ceilings"]["compute"]["float32"] > 0
    assert "ceiling" in p.stderr and "results directory:" in p.stderr  # the table and the rule, on stderr
    # the first line comes at once, though stderr is no terminal (the progress bars draw only on one)
    assert p.stderr.splitlines()[0] == (f"gpuroof: measuring {doc['device']['name']} (quick: float32; levels dram) "
                                        f"into {out}"), p.stderr.splitlines()[:2]
    meta = json.loads((out / "run.json").read_text())
    assert meta["versions"]["git_commit"] == subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                                                             capture_output=True, text=True).stdout.strip()
    assert isinstance(meta["versions"]["git_dirty"], bool)


def test_results_dir_is_one_rule(tmp_path, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert results_root() == Path("results")
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "elsewhere"))
    assert results_root() == tmp_path / "elsewhere"
    made = make_run_dir(None, "Some CPU")
    assert made.parent == tmp_path / "elsewhere" / "some-cpu"
    # the CLI's --results-dir wins over the variable while the command runs, and is undone after
    syn = make_synthetic_run(tmp_path / "cli-root" / "synthetic-h100-sxm" / "20260101T000000Z")
    seen = []
    monkeypatch.setattr(show_command, "main", lambda args: seen.append(results_root()) or 0)
    assert cli.main(["show", str(syn), "--results-dir", str(tmp_path / "cli-root")]) == 0
    assert seen == [tmp_path / "cli-root"] and results_root() == tmp_path / "elsewhere"
    # the API and bench look up the newest run there
    found = newest_run("cuda", "Synthetic H100 <SXM>", tmp_path / "cli-root")
    assert found is not None and found.path == syn


def test_bench_out_of_a_missing_directory_is_an_error(tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    rc = cli.main(["bench", "--backend", "cpu", "--workload", "gemm", "--shape", "m=16,n=64,k=64",
                   "--ceilings", str(make_synthetic_run(tmp_path / "r")), "--force", "--out", str(missing)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no such directory" in err
    assert not missing.exists()


def test_info_on_a_cpu_shows_cores_isa_caches_clock_and_peaks(capsys):
    assert cli.main(["info", "--backend", "cpu"]) == 0
    out = capsys.readouterr().out
    for word in ("cores:", "ISA:", "caches:", "clock:"):
        assert word in out, out
    assert "SM" not in out.split()
    doc_rc = cli.main(["info", "--backend", "cpu", "--json"])
    dev = one_document(capsys.readouterr().out)["devices"][0]
    assert doc_rc == 0
    if dev["device"].get("max_clock_mhz") or dev["device"].get("nominal_clock_mhz"):
        assert "theoretical peaks (at the" in out and "unknown" not in out
        assert dev["theoretical_at_max_clock"]["compute"]["float32"] > 0


@pytest.mark.slow
def test_measure_kernel_without_a_run_measures_quickly_and_says_so(tmp_path, monkeypatch, capfd):
    """The README's API example in an empty directory: a quick measurement first, not an error."""
    import numpy as np

    from gpuroof import api

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    x = np.ones(1 << 20, dtype=np.float32)
    res = api.measure_kernel(lambda: x * 2.0, flops=x.size, bytes=8 * x.size, unit="float32", backend="cpu")
    err = capfd.readouterr().err
    assert "measuring the ceilings first" in err
    assert Path(res.ceilings_source).resolve().is_relative_to((tmp_path / "results").resolve())
    assert len(list((tmp_path / "results").rglob("run.json"))) == 1
    assert res.efficiency > 0


HEAVY = ("pandas", "pydantic", "matplotlib", "seaborn", "scipy", "numba", "cupy", "torch")


@pytest.mark.parametrize("argv", [["--help"], ["measure", "--help"], ["compare", "--help"], ["check", "--help"],
                                  ["plot", "--help"], ["profile", "--help"], ["bench", "--help"]])
def test_help_loads_no_heavy_module(argv):
    """`gpuroof --help` and every command's parser are built from light modules only (gpuroof.defaults):
    the libraries a command needs are imported when it runs, so help and bad-flag errors come at once."""
    code = ("import sys, runpy; sys.argv = ['gpuroof', *%r]\n"
            "try:\n    runpy.run_module('gpuroof', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in %r if m in sys.modules))" % (argv, HEAVY))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parent.parent)
    assert "usage: gpuroof" in r.stdout, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "LOADED []"


def test_the_defaults_the_parser_shows_are_the_ones_the_modules_use():
    from gpuroof import check, compare, compare_text, defaults, plots, profile

    assert check.TOLERANCE == defaults.CHECK_TOLERANCE and profile.REPS == defaults.PROFILE_REPS
    assert compare_text.FORMATS == defaults.COMPARE_FORMATS and plots.WHAT == (*defaults.FIGURES, "all")
    p = cli.build_parser()
    args = p.parse_args(["check", "--baseline", "x"])
    assert args.tolerance == check.TOLERANCE
    assert p.parse_args(["compare", "a"]).threshold == compare.SICK_THRESHOLD
