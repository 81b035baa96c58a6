"""Bad input at every boundary (run files, gates, CLI options, the Python API, the pytest plugin):
one line on stderr naming what was wrong and what is allowed, exit 2, nothing half-written."""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from gpuroof.cli import main
from gpuroof.errors import UsageError
from gpuroof.results import KIND, SCHEMA_VERSION, UNFINISHED, load_run, make_run_dir, write_run
from gpuroof.roofline import Roofline

ROOT = Path(__file__).resolve().parent.parent
CASES = [("gemm", "m=64 n=64 k=64", "float32"), ("triad", "n=1048576", "float32"),
         ("conv2d", "direct 3x3", "float64")]


# --------------------------------------------------------------------------- synthesized runs


def run_meta(device: str = "Synthetic CPU", backend: str = "cpu") -> dict:
    """A complete run.json as `gpuroof measure` writes it (every section the readers use)."""
    bw = {"l2": 2e11, "dram": 2e10}
    compute = {"float32": 2e11, "float64": 1e11}
    return {
        "schema_version": SCHEMA_VERSION, "kind": KIND, "status": "complete",
        "created_utc": "2026-01-01T00:00:00+00:00", "command": ["gpuroof", "measure"],
        "backend": backend, "device": {"name": device, "index": 0},
        "host": {"hostname": "node-1", "os": "Linux", "machine": "x86_64", "user": "ci", "env": {}},
        "versions": {"python": "3.11", "gpuroof": "0.1.0"}, "settings": {"quick": True},
        "conventions": {"flops": "an FMA counts 2 FLOPs", "bytes": "compulsory traffic"},
        "ceilings": {"bandwidth": bw, "compute": compute},
        "theoretical": {"bandwidth": {"dram": 4e10, "l2": None}, "compute": {"float32": 4e11, "float64": 2e11}},
        "ratios": {"bandwidth": {"dram": 0.5, "l2": None}, "compute": {"float32": 0.5, "float64": 0.5}},
        "ridge_points": {u: p / bw["dram"] for u, p in compute.items()},
        "median_clocks": {"sm_clock_mhz": 2500.0, "mem_clock_mhz": None, "power_w": None, "temperature_c": None},
        "fit": {"points": 8, "median_abs_deviation": 0.02, "max_abs_deviation": 0.1},
        "validation": {"points": 8, "invalid": 0, "invalid_points": [], "invalid_matrix_sizes": 0},
        "throttled_points": 0, "noisy_points": 0,
    }


def points_table() -> pd.DataFrame:
    rows = []
    for dtype, size in (("float32", 4), ("float64", 8)):
        for fmas in (0, 1, 4, 16, 64):
            elements = 1 << 24
            flops, nbytes = 2 * fmas * elements, 2 * size * elements
            for rep in range(3):
                t = max(nbytes / 2e10, flops / (2e11 if dtype == "float32" else 1e11)) * (1 + 0.01 * rep)
                rows.append({"dtype": dtype, "variant": "rw", "fmas_per_element": fmas, "elements": elements,
                             "working_set_bytes": nbytes, "flops": flops, "bytes": nbytes,
                             "intensity_flop_per_byte": flops / nbytes, "rep": rep, "time_s": t, "valid": True,
                             "rel_error": 0.0, "sm_clock_mhz": 2500.0, "throttled": False})
    return pd.DataFrame(rows)


def workload_tables(scale: float = 1.0, reps: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, samples = [], []
    for i, (name, case, dtype) in enumerate(CASES):
        t = 1e-3 * (i + 1) * scale
        rows.append({"name": name, "case": case, "impl": "x", "dtype": dtype, "unit": dtype, "roof_unit": dtype,
                     "level": "dram", "flops": 1e6, "bytes": 1e6, "intensity": 1.0, "time_s": t,
                     "achieved_flops": 1e6 / t, "achieved_bandwidth_Bps": 1e6 / t,
                     "attainable_flops": 2e10, "efficiency": 1e6 / t / 2e10, "bound": "memory",
                     "above_roof": False, "notes": "", "valid": True, "params": "{}"})
        for rep in range(reps):
            samples.append({"name": name, "case": case, "impl": "x", "dtype": dtype, "rep": rep, "copy": 0,
                            "time_s": t * (1 + 0.002 * rep)})
    return pd.DataFrame(rows), pd.DataFrame(samples)


def make_run(path: Path, meta: dict | None = None, scale: float = 1.0, workloads: bool = True) -> Path:
    tables = {"points": points_table()}
    if workloads:
        tables["workloads"], tables["workload_samples"] = workload_tables(scale)
    path.mkdir(parents=True, exist_ok=True)
    write_run(path, meta or run_meta(), tables)
    return path


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Valid runs, made once through the writer functions: two of one device, one of another."""
    base = tmp_path_factory.mktemp("runs")
    return {"a": make_run(base / "a"), "b": make_run(base / "b", scale=1.01),
            "other": make_run(base / "other", run_meta(device="Another CPU"))}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_error(argv: list[str], capsys, root: Path, expect: str) -> str:
    """Run the CLI on bad input: exit 2, exactly one line on stderr (naming `expect`), no traceback,
    and not a file written, changed or left half-written below `root`."""
    before = _snapshot(root)
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("gpuroof: error: "), err
    assert "Traceback" not in err
    assert expect in lines[0], lines[0]
    assert _snapshot(root) == before
    return lines[0]


# --------------------------------------------------------------------------- the battery

def _set(path: list[str], value):
    def edit(meta: dict) -> dict:
        d = meta
        for k in path[:-1]:
            d = d[k]
        if value is DELETE:
            del d[path[-1]]
        else:
            d[path[-1]] = value
        return meta
    return edit


DELETE = object()

#: run.json edits -> what the one line must name. Each is read by `show`, `report` and `check`.
BAD_META = {
    "ceilings-string": (_set(["ceilings"], "abc"), "field ceilings = 'abc'"),
    "device-string": (_set(["device"], "abc"), "field device = 'abc'"),
    "dram-negative": (_set(["ceilings", "bandwidth", "dram"], -50), "ceilings.bandwidth.dram = -50: must be greater than 0"),
    "dram-zero": (_set(["ceilings", "bandwidth", "dram"], 0), "ceilings.bandwidth.dram = 0"),
    "dram-text": (_set(["ceilings", "bandwidth", "dram"], "abc"), "ceilings.bandwidth.dram = 'abc': must be a valid number"),
    "dram-bool": (_set(["ceilings", "bandwidth", "dram"], True), "ceilings.bandwidth.dram = True"),
    "compute-text": (_set(["ceilings", "compute", "float32"], "fast"), "ceilings.compute.float32"),
    "compute-inf": (_set(["ceilings", "compute", "float32"], 1e999), "ceilings.compute.float32 = inf"),
    "schema-text": (_set(["schema_version"], "1"), "schema_version = '1': not an integer"),
    "schema-newer": (_set(["schema_version"], SCHEMA_VERSION + 1),
                     f"schema_version {SCHEMA_VERSION + 1} (newer; this gpuroof reads {SCHEMA_VERSION}"),
    "schema-older": (_set(["schema_version"], 0), f"schema_version 0 (older; this gpuroof reads {SCHEMA_VERSION})"),
    "schema-missing": (_set(["schema_version"], DELETE), "field schema_version: missing"),
    "status-unknown": (_set(["status"], "done"), "field status = 'done': must be 'partial' or 'complete'"),
    "kind-missing": (_set(["kind"], DELETE), "not a gpuroof run.json"),
    "backend-missing": (_set(["backend"], DELETE), "field backend: missing"),
    "device-no-name": (_set(["device"], {"index": 0}), "field device.name: missing"),
    "device-empty-name": (_set(["device", "name"], ""), "field device.name = ''"),
    "ceilings-missing": (_set(["ceilings"], DELETE), "field ceilings: missing"),
    "complete-no-compute": (_set(["ceilings", "compute"], {}), "at least one measured compute ceiling"),
    "quality-not-bool": (_set(["quality"], {"ok": "yes", "reasons": []}), "field quality.ok = 'yes'"),
    "ridge-negative": (_set(["ridge_points", "float32"], -1.0), "field ridge_points.float32 = -1.0"),
    "clocks-text": (_set(["median_clocks"], "fast"), "field median_clocks = 'fast'"),
    "workloads-negative": (_set(["workloads"], {"cases": -1}), "field workloads.cases = -1"),
    "theoretical-negative": (_set(["theoretical", "compute", "float32"], -4e11), "theoretical.compute.float32"),
    "command-text": (_set(["command"], "gpuroof measure"), "field command = 'gpuroof measure'"),
}


def _bad_meta_run(tmp_path: Path, key: str) -> Path:
    edit, _ = BAD_META[key]
    d = make_run(tmp_path / "bad")
    meta = json.loads((d / "run.json").read_text())
    (d / "run.json").write_text(json.dumps(edit(meta)))
    return d


@pytest.mark.parametrize("key", sorted(BAD_META))
def test_bad_run_json_is_one_line_naming_the_field(key, tmp_path, capsys, runs):
    d = _bad_meta_run(tmp_path, key)
    expect = BAD_META[key][1]
    _one_line_error(["show", str(d)], capsys, tmp_path, expect)
    _one_line_error(["check", "--baseline", str(runs["a"]), "--current", str(d)], capsys, tmp_path, expect)


@pytest.mark.parametrize("key", ["ceilings-string", "dram-negative", "schema-newer", "device-string"])
def test_bad_run_json_is_refused_by_report_and_plot(key, tmp_path, capsys):
    d = _bad_meta_run(tmp_path, key)
    _one_line_error(["report", str(d)], capsys, tmp_path, BAD_META[key][1])
    _one_line_error(["plot", str(d)], capsys, tmp_path, BAD_META[key][1])


def test_show_names_a_missing_summary_section(tmp_path, capsys):
    d = make_run(tmp_path / "r", workloads=False)
    meta = json.loads((d / "run.json").read_text())
    del meta["theoretical"]
    (d / "run.json").write_text(json.dumps(meta))
    _one_line_error(["show", str(d)], capsys, tmp_path, "field theoretical: missing")


def _edit_csv(name: str, edit):
    def apply(d: Path) -> None:
        f = d / f"{name}.csv"
        df = pd.read_csv(f)
        edited = edit(df)
        (df if edited is None else edited).to_csv(f, index=False)
    return apply


def _edit_bytes(name: str, edit):
    def apply(d: Path) -> None:
        f = d / f"{name}.csv"
        f.write_bytes(edit(f.read_bytes()))
    return apply


def _col(col: str, value, row: int | None = 0):
    def edit(df: pd.DataFrame) -> None:
        df[col] = df[col].astype(object)
        if row is None:
            df[col] = value
        else:
            df.loc[row, col] = value
    return edit


#: CSV edits -> (command that reads the table, what the line must name).
BAD_CSV = {
    "points-time-nan": (_edit_csv("points", _col("time_s", math.nan)), "plot", "points.csv: column time_s, row 1: empty"),
    "points-time-negative": (_edit_csv("points", _col("time_s", -1.0)), "plot", "column time_s, row 1: -1.0"),
    "points-time-text": (_edit_csv("points", _col("time_s", "slow")), "plot", "column time_s, row 1: 'slow'"),
    "points-valid-text": (_edit_csv("points", _col("valid", "maybe")), "plot", "column valid, row 1: 'maybe' (allowed: True or False)"),
    "points-cut-mid-row": (_edit_bytes("points", lambda b: b[:-20]), "plot", "points.csv: cut short"),
    "points-lacks-column": (_edit_csv("points", lambda df: df.drop(columns=["flops"])), "plot",
                            "points.csv: lacks column(s) flops"),
    "points-fmas-fraction": (_edit_csv("points", _col("fmas_per_element", 1.5)), "report", "column fmas_per_element, row 1: 1.5"),
    "points-binary": (_edit_bytes("points", lambda b: b"\xff\xfe\x00garbage\n"), "report", "points.csv"),
    "workloads-time-negative": (_edit_csv("workloads", _col("time_s", -1e-3)), "check", "workloads.csv: column time_s, row 1"),
    "workloads-lacks-name": (_edit_csv("workloads", lambda df: df.drop(columns=["name"])), "check",
                             "workloads.csv: lacks column(s) name"),
    "workloads-valid-text": (_edit_csv("workloads", _col("valid", "perhaps")), "check", "column valid, row 1: 'perhaps'"),
    "workloads-cut": (_edit_bytes("workloads", lambda b: b[:-3]), "check", "workloads.csv: cut short"),
    "samples-time-nan": (_edit_csv("workload_samples", _col("time_s", math.nan, None)), "check",
                         "workload_samples.csv: column time_s, row 1: empty"),
    "samples-time-negative": (_edit_csv("workload_samples", _col("time_s", -1.0, None)), "check",
                              "workload_samples.csv: column time_s, row 1: -1.0"),
    "samples-time-zero": (_edit_csv("workload_samples", _col("time_s", 0.0, 3)), "check", "column time_s, row 4: 0.0"),
    "samples-header-only": (_edit_csv("workload_samples", lambda df: df.iloc[:0]), "check",
                            "nothing compared"),
}


@pytest.mark.parametrize("key", sorted(BAD_CSV))
def test_bad_csv_is_one_line_naming_file_column_and_row(key, tmp_path, capsys, runs):
    edit, command, expect = BAD_CSV[key]
    d = make_run(tmp_path / "bad")
    edit(d)
    argv = (["check", "--baseline", str(runs["a"]), "--current", str(d)] if command == "check"
            else [command, str(d)])
    _one_line_error(argv, capsys, tmp_path, expect)


def _cli_cases(t: Path, runs: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    """argv -> what the line must name; each fails before anything is measured or written."""
    a, other = str(runs["a"]), str(runs["other"])
    (t / "file.txt").write_text("x")
    (t / "dir.csv").mkdir()
    (t / "dir.png").mkdir()
    m = ["measure", "--backend", "cpu"]
    bad = make_run(t / "bad-ceilings", workloads=False)
    meta = json.loads((bad / "run.json").read_text())
    meta["ceilings"]["bandwidth"]["dram"] = -50
    (bad / "run.json").write_text(json.dumps(meta))
    partial = make_run(t / "partial")
    meta = json.loads((partial / "run.json").read_text())
    meta.update(status="partial", status_reason="interrupted")
    (partial / "run.json").write_text(json.dumps(meta))
    return {
        "check-ceilings-bad-run": (["check", "--backend", "cpu", "--baseline", a, "--ceilings", str(bad),
                                    "--out", str(t / "new"), "--force"], "ceilings.bandwidth.dram = -50"),
        "check-baseline-is-current": (["check", "--baseline", a, "--current", a], "is the baseline itself"),
        "check-baseline-is-current-json": (["check", "--baseline", a, "--current", f"{a}/run.json"],
                                           "is the baseline itself"),
        "check-other-device": (["check", "--baseline", a, "--current", other], "use --force"),
        "check-tolerance-negative": (["check", "--baseline", a, "--current", other, "--tolerance", "-5"],
                                     "a percentage in [0, 1000)"),
        "check-device-5": (["check", "--backend", "cpu", "--baseline", a, "--device", "5"],
                           "--device 5: this machine has 1 cpu device(s) (allowed: 0)"),
        "check-ceilings-with-current": (["check", "--baseline", a, "--current", other, "--out", str(t / "x")],
                                        "apply when measuring now"),
        "merge-out-directory": (["merge", a, "--out", str(t / "dir.csv")], "is a directory"),
        "merge-out-missing-dir": (["merge", a, "--out", str(t / "nope" / "m.csv")], "does not exist"),
        "merge-out-unknown-format": (["merge", a, "--out", str(t / "m.txt")], "unknown format '.txt'"),
        "compare-plot-directory": (["compare", a, other, "--plot", str(t / "dir.png")], "is a directory"),
        "compare-plot-gif": (["compare", a, other, "--plot", str(t / "x.gif")], "unknown figure format"),
        "compare-one-run": (["compare", a], "at least two runs"),
        "compare-threshold": (["compare", a, other, "--threshold", "150"], "--threshold"),
        "compare-missing": (["compare", a, str(t / "nope")], "no such run directory"),
        "report-out-pdf": (["report", a, "--out", str(t / "x.pdf")], "the report is HTML"),
        "report-out-missing-dir": (["report", a, "--out", str(t / "nope" / "r.html")], "does not exist"),
        "show-newline-path": (["show", str(t / "a\nb")], "a\\nb"),
        "show-not-a-run": (["show", str(t)], "no run.json"),
        "check-partial-current": (["check", "--baseline", a, "--current", str(partial)], "run is partial (interrupted)"),
        "measure-empty-dtype": ([*m, "--dtype", ""], "--dtype: '': empty"),
        "measure-comma-dtype": ([*m, "--dtype", ","], "--dtype: ',': empty"),
        "measure-duplicate-dtype": ([*m, "--dtype", "float32,float32"], "float32 given more than once"),
        "measure-unknown-dtype": ([*m, "--dtype", "flaot32"], "--dtype flaot32: not supported"),
        "measure-upper-dtype": ([*m, "--dtype", "FLOAT32"], "--dtype FLOAT32: not supported"),
        "measure-buffer-below-llc": ([*m, "--buffer-size", "64M", "--out", str(t / "r")], "last-level cache"),
        "measure-buffer-zero": ([*m, "--buffer-size", "0"], "must be positive"),
        "measure-buffer-text": ([*m, "--buffer-size", "lots"], "--buffer-size"),
        "measure-device-5": ([*m, "--device", "5"], "--device 5"),
        "measure-device-text": ([*m, "--device", "first"], "a device index"),
        "measure-out-file": ([*m, "--out", str(t / "file.txt")], "not a writable directory"),
        "measure-out-proc": ([*m, "--out", "/proc/gpuroof-nope"], "not a writable directory"),
        "measure-out-existing-run": ([*m, "--out", a], "already holds a run"),
        "measure-levels": ([*m, "--levels", "l9"], "l9"),
        "measure-backend-gpu": (["measure", "--backend", "gpu"], "--backend gpu: unknown backend"),
        "bench-empty-workload": (["bench", "--backend", "cpu", "--workload", ""], "--workload: '': empty"),
        "bench-duplicate-workload": (["bench", "--backend", "cpu", "--workload", "gemm,gemm"], "given more than once"),
        "bench-unknown-workload": (["bench", "--backend", "cpu", "--workload", "nope"], "nope"),
        "bench-device-5": (["bench", "--backend", "cpu", "--device", "5"], "(allowed: 0)"),
        "bench-size": (["bench", "--backend", "cpu", "--size", "huge"], "invalid choice"),
        "run-format": (["run", "--backend", "cpu", "--format", "gif"], "gif"),
        "run-duplicate-format": (["run", "--backend", "cpu", "--format", "png,png"], "given more than once"),
        "info-backend": (["info", "--backend", "gpu"], "unknown backend"),
        "show-backend": (["show", a, "--backend", "gpu", "--nope"], "unrecognized arguments: --nope"),
        "compile-dtype": (["compile", "--backend", "cpu", "--dtype", "float8"], "dtype 'float8'"),
        "plot-what": (["plot", a, "--what", "nope"], "invalid choice: 'nope'"),
        "predict-missing-profile": (["predict", str(t / "no-profile"), "--on", a], "no such directory"),
        "profile-missing-model": (["profile", "--model", f"{t / 'nope.py'}:f", "--device", "cpu"], "no such file"),
    }


_CLI_NAMES = [
    "check-ceilings-bad-run", "check-baseline-is-current", "check-baseline-is-current-json", "check-other-device",
    "check-tolerance-negative", "check-device-5", "check-ceilings-with-current", "merge-out-directory",
    "merge-out-missing-dir", "merge-out-unknown-format", "compare-plot-directory", "compare-plot-gif",
    "compare-one-run", "compare-threshold", "compare-missing", "report-out-pdf", "report-out-missing-dir",
    "show-newline-path", "show-not-a-run", "check-partial-current", "measure-empty-dtype", "measure-comma-dtype",
    "measure-duplicate-dtype", "measure-unknown-dtype", "measure-upper-dtype", "measure-buffer-below-llc",
    "measure-buffer-zero", "measure-buffer-text", "measure-device-5", "measure-device-text", "measure-out-file",
    "measure-out-proc", "measure-out-existing-run", "measure-levels", "measure-backend-gpu",
    "bench-empty-workload", "bench-duplicate-workload", "bench-unknown-workload", "bench-device-5", "bench-size",
    "run-format", "run-duplicate-format", "info-backend", "show-backend", "compile-dtype", "plot-what",
    "predict-missing-profile", "profile-missing-model",
]


def test_every_cli_case_is_in_the_battery(tmp_path):
    assert sorted(_cli_cases(tmp_path, {"a": tmp_path, "other": tmp_path})) == sorted(_CLI_NAMES)


@pytest.mark.parametrize("key", _CLI_NAMES)
def test_bad_option_is_one_line_before_any_work(key, tmp_path, capsys, runs, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may appear under results/ either
    argv, expect = _cli_cases(tmp_path, runs)[key]
    _one_line_error(argv, capsys, tmp_path, expect)


def test_every_command_of_the_cli_is_in_the_battery(tmp_path):
    """Each subcommand `gpuroof --help` lists has at least one bad input here: a command added to
    the CLI without one fails this test (cli.COMMANDS is the CLI's own list)."""
    from gpuroof import cli

    commands = {m.__name__.rsplit(".", 1)[-1] for m in cli.COMMANDS}
    covered = {argv[0] for argv, _ in _cli_cases(tmp_path, {"a": tmp_path, "other": tmp_path}).values()}
    assert commands - covered == set()


def test_show_takes_debug_and_backend_as_the_readme_says(runs, capsys):
    assert main(["show", str(runs["a"]), "--debug", "--backend", "cpu"]) == 0
    assert "Synthetic CPU" in capsys.readouterr().out


# --------------------------------------------------------------------------- gates that cannot pass on nothing


def test_check_passes_only_having_compared_cases(runs, capsys):
    assert main(["check", "--baseline", str(runs["a"]), "--current", str(runs["b"])]) == 0
    out = capsys.readouterr().out
    assert "no regression" in out and "SAME" in out


def test_check_with_no_common_case_exits_2(tmp_path, runs, capsys):
    d = make_run(tmp_path / "c")
    df = pd.read_csv(d / "workloads.csv")
    df["name"] = "mlp"
    df.to_csv(d / "workloads.csv", index=False)
    _one_line_error(["check", "--baseline", str(runs["a"]), "--current", str(d)], capsys, tmp_path,
                    "no workload case in common")


def test_check_with_too_few_repetitions_everywhere_exits_2(tmp_path, runs, capsys):
    d = make_run(tmp_path / "c")
    s = pd.read_csv(d / "workload_samples.csv")
    s[s["rep"] < 2].to_csv(d / "workload_samples.csv", index=False)
    _one_line_error(["check", "--baseline", str(runs["a"]), "--current", str(d)], capsys, tmp_path,
                    "nothing compared")


# --------------------------------------------------------------------------- compare and merge skip bad runs


def test_compare_and_merge_of_a_directory_skip_and_list_bad_runs(tmp_path, capsys):
    make_run(tmp_path / "fleet" / "good1")
    make_run(tmp_path / "fleet" / "good2", scale=1.1)
    bad = make_run(tmp_path / "fleet" / "bad-json")
    meta = json.loads((bad / "run.json").read_text())
    meta["ceilings"]["bandwidth"]["dram"] = -50
    (bad / "run.json").write_text(json.dumps(meta))
    bad_csv = make_run(tmp_path / "fleet" / "bad-csv")
    (bad_csv / "workloads.csv").write_text("name,case,dtype,time_s\ngemm,x,float32,-1\n")
    assert main(["compare", str(tmp_path / "fleet")]) == 0
    cap = capsys.readouterr()
    assert "skipped" in cap.err and "bad-json" in cap.err and "bad-csv" in cap.err
    assert "ceilings.bandwidth.dram = -50" in cap.err
    assert "good1" in cap.out and "good2" in cap.out and "bad-json" not in cap.out
    out = tmp_path / "m.csv"
    assert main(["merge", str(tmp_path / "fleet"), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "skipped" in cap.err and "bad-json" in cap.err and "note" in cap.err and "bad-csv" in cap.err
    merged = pd.read_csv(out)
    assert not merged["run_dir"].str.contains("bad-json").any()
    assert pd.api.types.is_float_dtype(merged["ceiling_Bps"])


def test_schema_accepts_unknown_fields_and_a_quality_object(tmp_path):
    meta = run_meta()
    meta["quality"] = {"ok": False, "reasons": ["clock varied 12%"], "score": 0.4}
    meta["a_field_from_a_newer_gpuroof"] = {"anything": [1, 2]}
    d = make_run(tmp_path / "r", meta)
    df = pd.read_csv(d / "points.csv").assign(extra_column="x")
    df.to_csv(d / "points.csv", index=False)
    run = load_run(d)
    assert run.meta["quality"]["reasons"] == ["clock varied 12%"]
    assert "extra_column" in run.table("points").columns


# --------------------------------------------------------------------------- the Python API


class Calls:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1


ROOF = Roofline(bandwidth={"dram": 2e10}, compute={"float32": 2e11, "float64": 1e11})


@pytest.mark.parametrize("kw,expect", [
    ({"unit": "flaot32"}, "unit='flaot32': not a compute ceiling of this roofline (allowed: float32, float64"),
    ({"unit": "FLOAT32"}, "unit='FLOAT32'"),
    ({"unit": "float16"}, "allowed: float32, float64"),
    ({"unit": "float16-matrix"}, "unit='float16-matrix'"),
    ({"unit": 32}, "unit=32"),
    ({"max_reps": 0}, "max_reps=0: an integer >= 10"),
    ({"min_reps": 0}, "min_reps=0: an integer >= 1"),
    ({"min_reps": 20, "max_reps": 10}, "max_reps=10: an integer >= 20"),
    ({"warmup": "3"}, "warmup='3': an integer >= 0"),
    ({"warmup": -1}, "warmup=-1"),
    ({"warmup": True}, "warmup=True"),
    ({"budget_s": 0}, "budget_s=0: a finite number > 0"),
    ({"budget_s": math.inf}, "budget_s=inf"),
    ({"ceilings": {}}, "ceilings={}: allowed a run directory"),
    ({"ceilings": 3}, "ceilings=3"),
    ({"flops": 10**400}, "flops: a finite number > 0"),
    ({"flops": True}, "flops=True: a finite number > 0"),
    ({"flops": math.nan}, "flops=nan"),
    ({"flops": -1}, "flops=-1"),
    ({"flops": "100"}, "flops='100'"),
    ({"bytes": 0}, "bytes=0"),
    ({"name": ""}, "name=''"),
    ({"check": "yes"}, "check='yes'"),
    ({"device": -1}, "device=-1"),
    ({"backend": 0}, "backend=0"),
    ({"backend": "gpu"}, "backend='gpu': allowed 'auto', 'cuda', 'cpu'"),
    ({"device": 5}, "device=5: this machine has 1 device(s) for the cpu backend (allowed: 0)"),
])
def test_measure_kernel_checks_every_argument_before_timing(kw, expect):
    from gpuroof import api

    fn = Calls()
    args = {"flops": 1e6, "bytes": 1e6, "unit": "float32", "backend": "cpu", "ceilings": ROOF, **kw}
    with pytest.raises(UsageError) as e:
        api.measure_kernel(fn, **args)
    assert expect in str(e.value) and "\n" not in str(e.value)
    assert fn.n == 0  # refused before the first call


def test_measure_kernel_refuses_ceilings_of_another_device_unless_forced(runs):
    from gpuroof import api

    fn = Calls()
    with pytest.raises(UsageError, match="measured on 'Another CPU' .*force=True"):
        api.measure_kernel(fn, flops=1e6, bytes=1e6, backend="cpu", ceilings=runs["other"])
    assert fn.n == 0
    res = api.measure_kernel(fn, flops=1e6, bytes=1e6, backend="cpu", ceilings=runs["other"], force=True,
                             min_reps=3, max_reps=5, budget_s=0.01, warmup=0)
    assert fn.n >= 4 and res.ceilings_source == str(runs["other"]) and math.isfinite(res.efficiency)


@pytest.mark.parametrize("bandwidth,compute,expect", [
    ({"dram": -1e9}, {"float32": 1e12}, "bandwidth['dram']=-1000000000.0"),
    ({"dram": 0}, {"float32": 1e12}, "bandwidth['dram']=0"),
    ({"dram": 1e9}, {"float32": math.nan}, "compute['float32']=nan"),
    ({"dram": 1e9}, {"float32": math.inf}, "compute['float32']=inf"),
    ({"dram": "1e9"}, {"float32": 1e12}, "bandwidth['dram']='1e9'"),
    ({"dram": 1e9}, {"": 1e12}, "key ''"),
    ("fast", {"float32": 1e12}, "bandwidth='fast'"),
])
def test_roofline_refuses_ceilings_that_are_not_positive_finite_numbers(bandwidth, compute, expect):
    with pytest.raises(UsageError) as e:
        Roofline(bandwidth=bandwidth, compute=compute)
    msg = str(e.value)
    assert expect in msg
    assert any(allowed in msg for allowed in ("a finite number > 0", "a dict of name", "a non-empty name"))


# --------------------------------------------------------------------------- the pytest plugin


@pytest.mark.parametrize("option,expect", [
    (["--gpuroof-backend", "gpu"], "--gpuroof-backend gpu: unknown backend (allowed: auto, cuda, cpu)"),
    (["--gpuroof-device", "5"], "--gpuroof-device 5: this machine has"),
    (["--gpuroof-cache-dir", "/proc/gpuroof-nope"], "--gpuroof-cache-dir /proc/gpuroof-nope: cannot be created"),
    (["--gpuroof-device", "-1"], "--gpuroof-device -1"),
])
def test_plugin_turns_a_bad_option_into_a_usage_error(tmp_path, option, expect):
    (tmp_path / "test_k.py").write_text("def test_k(roofline):\n    assert roofline\n")
    env = {**os.environ, "GPUROOF_CACHE_DIR": str(tmp_path / "cache")}
    if option[0] == "--gpuroof-device" and option[1] == "5":
        option = [*option, "--gpuroof-backend", "cpu"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *option, "test_k.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 4, r.stdout + r.stderr
    assert expect in r.stderr and "skipped" not in r.stdout
    assert not (tmp_path / "cache").exists()  # nothing measured


# --------------------------------------------------------------------------- kill safety


def test_run_dir_probe_creates_no_file(tmp_path, monkeypatch):
    """A probe that writes a file leaves it behind when the process is killed at that moment."""
    real_open = os.open

    def guarded(path, *a, **kw):
        assert not str(path).startswith(str(tmp_path)), f"make_run_dir created {path}"
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", guarded)
    d = make_run_dir(tmp_path / "r", "cpu")
    monkeypatch.undo()
    assert d.is_dir() and list(d.iterdir()) == []


def test_partial_run_always_says_why_and_complete_never(tmp_path):
    meta = run_meta()
    meta["status"], meta["ceilings"] = "partial", None
    write_run(tmp_path, meta, {})
    assert json.loads((tmp_path / "run.json").read_text())["status_reason"] == UNFINISHED
    meta.update(status="complete", ceilings=run_meta()["ceilings"], status_reason="stale")
    write_run(tmp_path, meta, {})
    assert "status_reason" not in json.loads((tmp_path / "run.json").read_text())


@pytest.mark.slow
def test_sigkilled_measure_leaves_a_partial_run_with_a_reason(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gpuroof", "measure", "--backend", "cpu", "--quick",
                             "--dtype", "float32", "--no-matrix", "--levels", "dram", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (out / "run.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "partial" and meta["status_reason"] == UNFINISHED
    assert not [p for p in out.iterdir() if p.name.startswith(".probe")]
    with pytest.raises(UsageError, match="no ceilings"):
        from gpuroof.api import load_roofline
        load_roofline(out, "cpu", force=True)


@pytest.mark.slow
def test_sigint_on_bench_into_a_complete_run_does_not_claim_it_was_marked_partial(tmp_path):
    from gpuroof.backends import get_backend

    b = get_backend("cpu")
    name = b.device_info()["name"]
    b.close()
    d = make_run(tmp_path / "run", run_meta(device=name), workloads=False)
    before = (d / "run.json").read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "gpuroof", "bench", "--backend", "cpu", "--size", "small",
                             "--out", str(d)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "no run directory was left partial" in err and "marked partial" not in err
    assert (d / "run.json").read_bytes() == before
    assert not [p for p in d.iterdir() if p.name.startswith(".")]


def test_an_interrupted_run_says_so_and_a_completed_one_is_left_alone(tmp_path):
    from gpuroof.results import mark_interrupted

    meta = run_meta()
    left, done = tmp_path / "left", tmp_path / "done"
    for d in (left, done):
        d.mkdir()
        write_run(d, {**meta, "status": "partial", "ceilings": None}, {})
    write_run(done, meta, {})
    marked = mark_interrupted()
    assert left.resolve() in marked and done.resolve() not in marked
    assert json.loads((left / "run.json").read_text())["status_reason"] == "interrupted"
    assert json.loads((done / "run.json").read_text())["status"] == "complete"
