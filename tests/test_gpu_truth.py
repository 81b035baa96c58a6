"""experiments/gpu_truth.py on a machine without a GPU: its dry run, its runner, the peers' parsers and the table.

The parsers read the peers' own documented outputs (tests/data/peers/, sources in its README); the
gpuroof side of the table is tests/gpu_fixture.py's synthetic H100 run, which the table names as such.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "peers"
SCRIPT = ROOT / "experiments" / "gpu_truth.py"
PEERS = Path(os.environ.get("GPU_TRUTH_PEERS", ROOT / ".peers"))


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


truth = _load("gpu_truth", SCRIPT)
table = _load("gpu_truth_table", ROOT / "experiments" / "gpu_truth_table.py")


def _read(name: str) -> str:
    return (DATA / name).read_text()


def _data_rows(text: str) -> list[list[str]]:
    """mixbench's data rows as the sample shows them: lines that begin with an iteration count."""
    return [ln.split(",") for ln in text.splitlines() if ln.strip()[:1].isdigit() and ln.count(",") == 16]


@pytest.fixture(scope="module")
def h100_run(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests"))
    from gpu_fixture import write_h100_run

    return write_h100_run(tmp_path_factory.mktemp("fixture") / "h100")


# ---------------------------------------------------------------------------------------------
# parsers
# ---------------------------------------------------------------------------------------------

def test_mixbench_parser_reads_the_readme_sample():
    text = _read("mixbench-cuda-rtx2070.txt")
    m = table.parse_mixbench(text)
    rows = _data_rows(text)
    assert m["device"] == "GeForce RTX 2070"
    assert [r["compute_iters"] for r in m["rows"]] == [int(r[0]) for r in rows]
    # GB/sec is the 5th, 9th, 13th, 17th field; GFLOPS single/double/half the 4th, 8th, 12th
    assert m["best"]["bandwidth_Bps"] == pytest.approx(max(float(r[i]) for r in rows for i in (4, 8, 12, 16)) * 1e9)
    for unit, col in (("float32", 3), ("float64", 7), ("float16", 11), ("int32", 15)):
        assert m["best"]["compute"][unit] == pytest.approx(max(float(r[col]) for r in rows) * 1e9)


def test_mixbench_group_that_did_not_run_has_no_best():
    """A GPU without half precision prints a time of 0 and an infinite rate for it: no ceiling."""
    text = _read("mixbench-cuda-rtx2070.txt")
    lines = []
    for ln in text.splitlines():
        cells = ln.split(",")
        if ln.strip()[:1].isdigit() and len(cells) == 17:
            cells[10], cells[11], cells[12] = "    0.00", "     inf", "    inf"
        lines.append(",".join(cells))
    m = table.parse_mixbench("\n".join(lines))
    assert "float16" not in m["best"]["compute"]
    assert "float32" in m["best"]["compute"]


def test_babelstream_parser_reads_the_repository_sample():
    b = table.parse_babelstream(_read("babelstream-3.3-cuda-titanxp.txt"))
    assert b["device"] == "TITAN Xp" and b["version"] == "3.3" and b["precision"] == "double"
    assert list(b["kernels"]) == ["Copy", "Mul", "Add", "Triad", "Dot"]
    assert b["best"]["kernel"] == "Triad"
    assert b["best"]["bandwidth_Bps"] == pytest.approx(436491.299e6)
    assert b["kernels"]["Copy"]["min_s"] == pytest.approx(0.00124)


def test_babelstream_parser_takes_the_unit_from_the_header():
    """From 4.0 the rate column is named by its unit (src/Unit.h): GB/s is 1000 times MBytes/sec."""
    text = _read("babelstream-3.3-cuda-titanxp.txt")
    mb = table.parse_babelstream(text)["best"]["bandwidth_Bps"]
    gb = table.parse_babelstream(text.replace("MBytes/sec", "GB/s      "))["best"]["bandwidth_Bps"]
    assert gb == pytest.approx(mb * 1000)
    with pytest.raises(table.ParseError, match="unknown rate unit"):
        table.parse_babelstream(text.replace("MBytes/sec", "Parsecs/s "))


def test_nvbandwidth_parser_reads_the_readme_samples():
    d2d = table.parse_nvbandwidth(_read("nvbandwidth-readme-device-to-device-memcpy-write-ce.txt"))
    t = d2d["testcases"]["device_to_device_memcpy_write_ce"]
    assert t["description"] == "memcpy CE GPU(row) <- GPU(column) bandwidth (GB/s)"
    assert t["columns"] == [str(i) for i in range(8)] and list(t["rows"]) == [str(i) for i in range(8)]
    assert all(t["rows"][str(i)][i] == 0.0 for i in range(8))
    assert t["rows"]["0"][1] == pytest.approx(276.07)
    assert d2d["best"]["device_local_copy_Bps"] is None  # the sample has no device-local copy
    h2d = table.parse_nvbandwidth(_read("nvbandwidth-readme-host-to-device-memcpy-ce.txt"))
    assert h2d["testcases"]["host_to_device_memcpy_ce"]["rows"]["0"][0] == pytest.approx(26.03)


def test_nvbandwidth_device_local_copy_counts_read_and_write():
    """nvbandwidth reports bytes copied: the DRAM traffic of a device-local copy is twice its rate."""
    tests = table.parse_nvbandwidth(_read("nvbandwidth-readme-host-to-device-memcpy-ce.txt"))["testcases"]
    best = table.nvbandwidth_best({"device_local_copy": tests["host_to_device_memcpy_ce"]})
    assert best["device_local_copy_Bps"] == pytest.approx(26.03e9)
    assert best["dram_traffic_Bps"] == pytest.approx(2 * 26.03e9)


def test_parsers_refuse_another_tools_output():
    with pytest.raises(table.ParseError, match="Compute iters"):
        table.parse_mixbench(_read("babelstream-3.3-cuda-titanxp.txt"))
    with pytest.raises(table.ParseError, match="no results table"):
        table.parse_babelstream(_read("mixbench-cuda-rtx2070.txt"))
    with pytest.raises(table.ParseError, match="Running"):
        table.parse_nvbandwidth(_read("babelstream-3.3-cuda-titanxp.txt"))
    with pytest.raises(table.ParseError, match="not JSON"):
        table.parse_torch_matmul(_read("mixbench-cuda-rtx2070.txt"))


@pytest.fixture(scope="module")
def matmul_doc():
    pytest.importorskip("torch")
    return truth.torch_matmul("cpu", [32, 64], ["float64", "float32", "tf32", "bfloat16"], 0.01)


def test_torch_matmul_step_checks_and_times_every_dtype(matmul_doc):
    doc = matmul_doc
    assert doc["kind"] == "gpu-truth-torch-matmul" and doc["backend"] == "cpu"
    assert doc["unsupported"]["tf32"].startswith("tf32 is a CUDA")
    for dtype in ("float64", "float32", "bfloat16"):
        mine = [s for s in doc["samples"] if s["dtype"] == dtype]
        assert {s["n"] for s in mine} == {32, 64} and all(s["valid"] and s["time_s"] > 0 for s in mine)
        assert all(s["flops"] == 2 * s["n"] ** 3 for s in mine)
        assert all(s["rel_error"] <= s["tolerance"] for s in mine)


def test_torch_matmul_parser_recomputes_the_best_size_from_valid_samples(matmul_doc):
    doc = json.loads(json.dumps(matmul_doc))
    parsed = table.parse_torch_matmul(json.dumps(doc))
    assert set(parsed["best"]) == {"float64", "float32", "bfloat16"}
    for dtype, b in parsed["best"].items():
        times: dict[int, list[float]] = {}
        for s in doc["samples"]:
            if s["dtype"] == dtype:
                times.setdefault(s["n"], []).append(s["time_s"])
        rate = {n: 2 * n ** 3 / statistics.median(t) for n, t in times.items()}
        assert b["n"] == max(rate, key=rate.get)
        assert b["flop_per_s"] == pytest.approx(rate[b["n"]])
    for s in doc["samples"]:
        if s["dtype"] == "float64":
            s["valid"] = False  # a failed check: its times must not count
    assert "float64" not in table.parse_torch_matmul(json.dumps(doc))["best"]


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

def _saved_outputs(out: Path, run: Path, matmul: dict | None) -> Path:
    (out / "run").mkdir(parents=True)
    shutil.copyfile(run / "run.json", out / "run" / "run.json")
    (out / "peers").mkdir()
    for peer, spec in truth.PEERS.items():
        shutil.copyfile(DATA / spec["sample"], out / "peers" / f"{peer}.txt")
    if matmul is not None:
        (out / "torch_matmul.json").write_text(json.dumps(matmul))
    return out


def test_table_maker_turns_saved_outputs_into_the_benchmarks_table(tmp_path, h100_run, matmul_doc):
    out = _saved_outputs(tmp_path / "out", h100_run, matmul_doc)
    src = table.read_sources(out)
    assert not src.missing
    rows = {r["quantity"]: r for r in table.rows_of(src)}
    meta = json.loads((h100_run / "run.json").read_text())
    dram = rows["DRAM bandwidth"]
    babel = table.parse_babelstream(_read("babelstream-3.3-cuda-titanxp.txt"))["best"]["bandwidth_Bps"]
    mix = table.parse_mixbench(_read("mixbench-cuda-rtx2070.txt"))["best"]
    assert dram["gpuroof"] == meta["ceilings"]["bandwidth"]["dram"]
    assert dram["BabelStream"] == babel and dram["mixbench"] == mix["bandwidth_Bps"]
    assert dram["nvbandwidth"] is None  # the README sample has no device_local_copy
    assert dram["over_best_peer"] == pytest.approx(dram["gpuroof"] / max(babel, mix["bandwidth_Bps"]))
    assert dram["theoretical"] == meta["theoretical"]["bandwidth"]["dram"]
    f32 = rows["float32 vector"]
    assert f32["mixbench"] == mix["compute"]["float32"]
    assert f32["over_theoretical"] == pytest.approx(meta["ceilings"]["compute"]["float32"]
                                                    / meta["theoretical"]["compute"]["float32"])
    assert f32["met"] is (f32["over_theoretical"] >= 0.97 and f32["gpuroof"] >= f32["mixbench"])
    f64m = rows["float64 matrix"]
    assert f64m["torch.matmul"] == table.parse_torch_matmul(json.dumps(matmul_doc))["best"]["float64"]["flop_per_s"]
    assert rows["L2 bandwidth"]["met"] is (meta["ceilings"]["bandwidth"]["l2"] > meta["ceilings"]["bandwidth"]["dram"])
    text = table.render(src)
    assert "SYNTHETIC FIXTURE" in text  # the fixture is never shown as a measurement
    assert "name different devices" in text  # RTX 2070, TITAN Xp, H100 fixture, this CPU
    assert "| " + " | ".join(table.COLUMNS) + " |" in text


def test_table_leaves_a_broken_source_empty_and_says_why(tmp_path, h100_run):
    out = _saved_outputs(tmp_path / "out", h100_run, None)
    (out / "peers" / "babelstream.txt").write_text("Segmentation fault\n")
    src = table.read_sources(out)
    assert "no results table" in src.missing["babelstream"]
    assert "torch_matmul.json absent" in src.missing["torch_matmul"]
    text = table.render(src)
    assert "BabelStream: not read (peers/babelstream.txt: ParseError" in text
    assert table.rows_of(src)[0]["BabelStream"] is None


def test_benchmarks_md_holds_the_table_makers_layout():
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    assert doc.count(table.BEGIN) == 1 and doc.count(table.END) == 1
    block = doc.split(table.BEGIN, 1)[1].split(table.END, 1)[0]
    assert "| " + " | ".join(table.COLUMNS) + " |" in block.splitlines()


def test_write_doc_replaces_only_the_block(tmp_path, h100_run):
    doc = tmp_path / "benchmarks.md"
    shutil.copyfile(ROOT / "docs" / "benchmarks.md", doc)
    before = doc.read_text()
    out = _saved_outputs(tmp_path / "out", h100_run, None)
    r = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_truth_table.py"), str(out),
                        "--write-doc", str(doc)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    after = doc.read_text()
    assert after.split(table.BEGIN)[0] == before.split(table.BEGIN)[0]
    assert after.split(table.END)[1] == before.split(table.END)[1]
    assert "SYNTHETIC FIXTURE" in after.split(table.BEGIN)[1].split(table.END)[0]


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------

def _cfg(tmp_path: Path, deadline: float = 600) -> "truth.Config":
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    return truth.Config(out=out, peers=tmp_path / "peers", build_dir=tmp_path / "build", dry_run=True,
                        dry_ceilings=None, deadline_s=deadline)


def test_a_failing_step_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    monkeypatch.setattr(truth, "MIN_STEP_S", 0.5)
    monkeypatch.setitem(truth.BUDGETS, "mixbench", 1)
    summary = truth.Summary(cfg, [])
    pidfile = tmp_path / "pid"

    def fails(ctx):
        ctx.run([sys.executable, "-c", "import sys; print('to the log'); sys.exit(3)"])

    def hangs(ctx):
        ctx.run([sys.executable, "-c", f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
                                       "time.sleep(60)"])

    def breaks(ctx):
        raise KeyError("a bug")

    def works(ctx):
        ctx.run([sys.executable, "-c", "print('ok')"])

    recs = {name: truth.run_step(cfg, truth.Step(name, action, name), summary)
            for name, action in (("env", fails), ("mixbench", hangs), ("babelstream", breaks), ("table", works))}
    assert recs["env"]["status"] == "failed" and recs["env"]["rc"] == 3
    assert "to the log" in (cfg.out / "logs" / "env.log").read_text()
    assert recs["mixbench"]["status"] == "timed_out" and recs["mixbench"]["seconds"] < 20
    pid = int(pidfile.read_text())
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # the hung child's process group was ended
        os.kill(pid, 0)
    assert recs["babelstream"]["status"] == "failed" and "KeyError" in recs["babelstream"]["reason"]
    assert recs["table"]["status"] == "ok" and recs["table"]["rc"] == 0
    saved = json.loads((cfg.out / "summary.json").read_text())
    assert list(saved["steps"]) == ["env", "mixbench", "babelstream", "table"]
    assert all({"status", "rc", "seconds", "files"} <= set(r) for r in saved["steps"].values())
    assert "logs/env.log" in saved["steps"]["env"]["files"]


def test_a_step_the_deadline_cannot_fit_is_skipped_and_says_so(tmp_path):
    cfg = _cfg(tmp_path, deadline=25)  # 25 s less the table's 20 s: under the 10 s a step needs
    rec = truth.run_step(cfg, truth.Step("mixbench", lambda ctx: None, "x"), truth.Summary(cfg, []))
    assert rec["status"] == "skipped" and rec["reason"].startswith("overall deadline")


@pytest.mark.parametrize("argv, says", [
    ([], "--out: required"),
    (["--out", "{tmp}/out", "--only", "mixbench,nosuch"], "unknown step nosuch"),
    (["--out", "{tmp}/out", "--peers", "{tmp}/file"], "not a directory"),
    (["--out", "{tmp}/no/such/out"], "does not exist"),
    (["--out", "{tmp}/out", "--dry-run", "--dry-run-ceilings", "{tmp}"], "not a gpuroof run"),
    (["--out", "{tmp}/out", "--dry-run-ceilings", "{tmp}"], "only with --dry-run"),
    (["matmul", "--out", "{tmp}/m.json", "--sizes", "8"], "sizes of at least 16"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, argv, says):
    (tmp_path / "file").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    r = subprocess.run([sys.executable, str(SCRIPT), *(a.format(tmp=tmp_path) for a in argv)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


# ---------------------------------------------------------------------------------------------
# the dry run
# ---------------------------------------------------------------------------------------------

def test_dry_run_runs_every_step_and_parser(tmp_path, h100_run):
    """Every step but the builds (next test) on the CPU: files where the GPU run will write them."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "truth"
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--dry-run-ceilings",
                        str(h100_run), "--skip", ",".join(truth.BUILDS), "--archive", str(tmp_path / "t.tar.gz")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    bad = {k: (v["status"], v["reason"]) for k, v in summary["steps"].items() if v["status"] != "ok"}
    assert r.returncode == 0 and not bad, (bad, r.stdout[-2000:], r.stderr[-2000:])
    assert list(summary["steps"]) == [n for n in truth.NAMES if n not in truth.BUILDS]
    for name, rec in summary["steps"].items():
        assert f"logs/{name}.log" in rec["files"] and rec["seconds"] >= 0
    for f in ("env/info.json", "run/run.json", "peers/mixbench.txt", "peers/mixbench.json", "peers/babelstream.json",
              "peers/nvbandwidth.json", "torch_matmul.json", "pytest-gpu.xml", "profile/resnet50-b1/profile.json",
              "profile/resnet50-b1/profile.png", "benchmarks.md", "table.json"):
        assert (out / f).is_file(), f
    steps = summary["steps"]
    assert steps["pytest_gpu"]["parsed"]["tests"] > 0 and steps["pytest_gpu"]["parsed"]["failures"] == 0
    assert steps["profile_resnet50"]["parsed"]["flops"] > 0
    assert steps["mixbench"]["parsed"]["device"] == "GeForce RTX 2070"
    assert steps["babelstream"]["parsed"]["best"]["kernel"] == "Triad"
    assert steps["table"]["parsed"]["rows"] >= 8
    assert "float64" in steps["torch_matmul"]["parsed"]["best"]
    # gpuroof's own parser accepted the very command line the device runs
    assert steps["gpuroof_run"]["commands"][0][3:] == truth.run_argv(truth.Config(out, out, out, True, None, 1))
    assert "NVIDIA H100 80GB HBM3" in (out / "benchmarks.md").read_text()
    import tarfile
    with tarfile.open(tmp_path / "t.tar.gz") as tar:
        assert "truth/summary.json" in tar.getnames()


def _peer_sources_or_skip() -> None:
    absent = [str(PEERS / spec["dir"] / n) for spec in truth.PEERS.values() for n in spec["needs"]
              if not (PEERS / spec["dir"] / n).is_file()]
    if absent:
        pytest.skip(f"the peers' sources are not here ({absent[0]}{' and more' if len(absent) > 1 else ''}; "
                    "docs/gpu_truth.md says how to fetch them into .peers, or set GPU_TRUTH_PEERS)")


@pytest.mark.slow
def test_dry_run_builds_the_peers_with_their_own_cmake(tmp_path):
    """With nvcc here, each peer's CMake configures and compiles it for sm_90 (about 40 s on two cores):
    mixbench links; BabelStream and nvbandwidth compile every object, and link where the driver's
    libraries (or the toolkit's stubs) are here to link against."""
    _peer_sources_or_skip()
    cuda = truth._cuda_home()
    if cuda is None:
        pytest.skip("no CUDA toolkit here (nvcc with include/cuda_runtime.h): the builds are checked on the device")
    if not shutil.which("cmake"):
        pytest.skip("cmake not found")
    out = tmp_path / "truth"
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--peers", str(PEERS),
                        "--build-dir", str(tmp_path / "build"), "--only", ",".join(truth.BUILDS)],
                       capture_output=True, text=True, timeout=900)
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert steps["build_mixbench"]["status"] == "ok", (steps["build_mixbench"], r.stdout[-2000:])
    assert Path(steps["build_mixbench"]["parsed"]["binary"]).is_file()
    assert any(c[:2] == ["cmake", "-G"] or c[0] == "cmake" for c in steps["build_mixbench"]["commands"])
    for name in ("build_babelstream", "build_nvbandwidth"):
        rec = steps[name]
        if rec["status"] == "skipped":  # only for a prerequisite that is really absent here
            reason = rec["reason"]
            if "nvml.h" in reason:
                assert not truth._nvml_header(cuda) and not (PEERS / "dev" / "include" / "nvml.h").exists()
            else:
                assert "Boost" in reason and not list((PEERS / "boost").glob("*.deb")), reason
            continue
        assert rec["status"] == "ok", rec
        parsed = rec["parsed"]
        assert parsed.get("objects", 0) > 0 or Path(parsed["binary"]).is_file(), parsed
        assert parsed["commit"] == (PEERS / f"{truth.PEERS[name[6:]]['dir']}.commit").read_text().strip()
