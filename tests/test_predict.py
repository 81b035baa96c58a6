"""`gpuroof predict`: the per-op model on synthetic rooflines (memory-bound, compute-bound, at the ridge,
changing side, carried over), the whole model per repetition, the CLI's document, files and bad input;
`--threads` making CPU devices of their own; one end-to-end predict of a real tiny profile."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gpuroof import api, cli
from gpuroof.backends.cpu.device import cpu_device_name, logical_cpus
from gpuroof.predict import NOTHING_TO_PLACE, NOT_PLACED, load_profile, predict_ops, whole_model
from gpuroof.errors import UsageError
from gpuroof.results import KIND, SCHEMA_VERSION
from gpuroof.roofline import Roofline

ROOT = Path(__file__).resolve().parent.parent

#: Source and target: DRAM 2.5x faster on the target, L2 the same, the vector roof the same, the
#: matrix roof 4x faster; source ridge (float32, dram) 10 FLOP/B, target ridge 4 FLOP/B.
SRC = {"bandwidth": {"l2": 50e9, "dram": 10e9}, "compute": {"float32": 100e9, "float32-matrix": 200e9}}
TGT = {"bandwidth": {"l2": 50e9, "dram": 25e9}, "compute": {"float32": 100e9, "float32-matrix": 800e9}}
HOST_S = 2e-3  # profiled time that no op holds


def _op(name, flops, nbytes, time_s, bound, unit="float32", cache_level=None, **kw) -> dict:
    return {"name": name, "op": name.split(" #")[0], "module": "M", "phase": "forward", "dtype": "float32",
            "unit": unit, "roof_unit": unit if bound in ("memory", "compute") else None, "flops": flops,
            "bytes": nbytes, "time_s": time_s, "bound": bound, "cache_level": cache_level, **kw}


OPS = [
    _op("aten::add #0", 1e6, 1.2e8, 24e-3, "memory"),  # roof 12 ms on the source: efficiency 0.5
    _op("aten::mm #1", 2e10, 1e7, 0.125, "compute", unit="float32-matrix"),  # roof 100 ms
    _op("aten::mul #2", 1e9, 1e8, 15e-3, "compute"),  # at the source ridge: 10 ms both ways
    _op("aten::gelu #3", 6e8, 1e8, 20e-3, "memory"),  # I = 6: memory-bound on the source, compute on the target
    _op("aten::view #4", 0.0, 0.0, 5e-6, "overhead"),
    _op("aten::bmm #5", 4e6, 1e5, 1e-3, None, unit="bfloat16-matrix"),  # no ceiling on the source: not placed
    _op("aten::copy_ #6", 0.0, 1e8, 3e-3, "memory", cache_level="l2"),  # above the dram roof: streams from l2
]


def _profile_doc(ops=OPS, ceilings=SRC, kind="cpu") -> dict:
    op_time = sum(o["time_s"] or 0.0 for o in ops)
    return {"model": "synthetic", "device": {"type": kind, "index": 0, "name": "Source CPU (avx2, 2 cores)"},
            "ceilings": ceilings, "ceilings_source": "/nowhere/source-run",
            "totals": {"phase": "forward", "profiled_time_s": op_time + HOST_S, "time_s": op_time},
            "quality": {"ok": True, "reasons": []}, "ops": ops}


def _write_profile(path: Path, doc: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "profile.json").write_text(json.dumps(doc or _profile_doc()))
    return path


def _write_run(path: Path, ceilings=TGT, backend="cpu", status="complete", name="Target CPU (avx2, 1 cores)") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    meta = {"schema_version": SCHEMA_VERSION, "kind": KIND, "status": status, "backend": backend,
            "device": {"name": name, "index": 0}, "ceilings": ceilings if status == "complete" else None,
            "quality": {"ok": True, "reasons": []}}
    (path / "run.json").write_text(json.dumps(meta))
    return path


@pytest.fixture()
def rows() -> pd.DataFrame:
    ops = pd.DataFrame(OPS)
    return predict_ops(ops, Roofline.from_dict(SRC), Roofline.from_dict(TGT)).set_index("name")


def test_memory_bound_op_scales_with_the_dram_bandwidth_ratio(rows):
    r = rows.loc["aten::add #0"]
    assert r["source_bound"] == r["target_bound"] == "memory" and r["level"] == "dram"
    assert r["source_roofline_time_s"] == pytest.approx(1.2e8 / 10e9)
    assert r["source_efficiency"] == pytest.approx(0.5)
    assert r["target_roofline_time_s"] == pytest.approx(1.2e8 / 25e9)
    assert r["predicted_time_s"] == pytest.approx(24e-3 * 10e9 / 25e9)
    assert r["speedup"] == pytest.approx(2.5) and not r["carried_over"]


def test_compute_bound_op_scales_with_the_compute_roof_of_its_unit(rows):
    r = rows.loc["aten::mm #1"]
    assert r["source_bound"] == r["target_bound"] == "compute" and r["target_unit"] == "float32-matrix"
    assert r["predicted_time_s"] == pytest.approx(0.125 * 200e9 / 800e9)  # the matrix roof, not the vector one


def test_op_at_the_ridge_scales_with_the_slower_of_its_two_roofs(rows):
    r = rows.loc["aten::mul #2"]
    # 10 ms of FLOPs and 10 ms of bytes on the source; on the target the bytes take 4 ms, the FLOPs still 10
    assert r["source_roofline_time_s"] == pytest.approx(10e-3)
    assert r["target_bound"] == "compute" and r["target_roofline_time_s"] == pytest.approx(10e-3)
    assert r["predicted_time_s"] == pytest.approx(15e-3 * max(100e9 / 100e9, 10e9 / 25e9))


def test_op_that_changes_bound_side_takes_the_target_roof_of_the_other_side(rows):
    r = rows.loc["aten::gelu #3"]
    assert (r["source_bound"], r["target_bound"]) == ("memory", "compute")
    assert r["source_roofline_time_s"] == pytest.approx(1e8 / 10e9)
    assert r["target_roofline_time_s"] == pytest.approx(6e8 / 100e9)
    assert r["predicted_time_s"] == pytest.approx(20e-3 * (6e8 / 100e9) / (1e8 / 10e9))


def test_an_op_above_the_dram_roof_scales_with_its_cache_level(rows):
    r = rows.loc["aten::copy_ #6"]
    assert r["level"] == "l2" and r["source_roofline_time_s"] == pytest.approx(1e8 / 50e9)
    assert r["predicted_time_s"] == pytest.approx(3e-3)  # l2 is as fast on the target; dram would say 1.2 ms


def test_overhead_and_unplaced_ops_are_carried_over_unchanged(rows):
    for name, why in (("aten::view #4", NOTHING_TO_PLACE), ("aten::bmm #5", NOT_PLACED)):
        r = rows.loc[name]
        assert r["carried_over"] and r["note"] == why
        assert r["predicted_time_s"] == r["measured_time_s"]
        assert pd.isna(r["target_roofline_time_s"]) and pd.isna(r["speedup"])


def test_a_matrix_unit_the_target_lacks_falls_back_to_its_vector_roof_and_a_missing_one_is_carried():
    ops = pd.DataFrame(OPS)
    vector_only = {"bandwidth": TGT["bandwidth"], "compute": {"float32": 100e9}}
    r = predict_ops(ops, Roofline.from_dict(SRC), Roofline.from_dict(vector_only)).set_index("name")
    mm = r.loc["aten::mm #1"]
    assert mm["target_unit"] == "float32" and "vector roof float32" in mm["note"]
    assert mm["predicted_time_s"] == pytest.approx(0.125 * 200e9 / 100e9)
    no_float32 = {"bandwidth": TGT["bandwidth"], "compute": {"float64": 50e9}}
    r = predict_ops(ops, Roofline.from_dict(SRC), Roofline.from_dict(no_float32)).set_index("name")
    assert r.loc["aten::add #0", "carried_over"] and "no float32 ceiling" in r.loc["aten::add #0", "note"]
    assert r.loc["aten::add #0", "predicted_time_s"] == 24e-3


def test_whole_model_is_the_profiled_time_with_each_predicted_op_replaced(rows):
    profiled = sum(o["time_s"] for o in OPS) + HOST_S
    whole = whole_model(rows.reset_index(), profiled)
    expect = HOST_S + rows["predicted_time_s"].sum()
    assert whole["predicted_time_s"] == pytest.approx(expect)
    assert whole["carried_over"]["host_time_s"] == pytest.approx(HOST_S)
    assert whole["carried_over"]["ops"] == 2 and whole["carried_over"]["ops_time_s"] == pytest.approx(5e-6 + 1e-3)
    assert whole["carried_over"]["time_s"] == pytest.approx(HOST_S + 5e-6 + 1e-3)
    assert whole["ops_predicted"] == 5 and whole["speedup"] == pytest.approx(profiled / expect)
    assert whole["roofline_time_s"] == pytest.approx(rows["target_roofline_time_s"].sum())
    assert set(whole["by_bound"]) == {"memory", "compute"}


def test_predicting_on_the_source_roofline_gives_back_the_profiled_time(tmp_path):
    prof = _write_profile(tmp_path / "prof")
    same = _write_run(tmp_path / "same", ceilings=SRC)
    doc = api.predict(prof, on=[same])
    t = doc["targets"][0]
    assert t["predicted_time_s"] == pytest.approx(doc["source"]["profiled_time_s"], rel=1e-12)
    assert all(o["predicted_time_s"] == pytest.approx(o["measured_time_s"], rel=1e-12) for o in t["ops"])
    assert t["csv"] is None and not list(prof.glob("predict-*.csv"))  # write=False writes nothing


def test_the_source_roofline_is_the_one_the_profile_recorded(tmp_path):
    doc = _profile_doc()
    doc["ceilings_source"] = str(_write_run(tmp_path / "src-run", ceilings=TGT))  # a run that now says otherwise
    prof = load_profile(_write_profile(tmp_path / "prof", doc))
    assert prof.roof == Roofline.from_dict(SRC)


def test_cli_json_is_one_document_with_targets_and_writes_a_csv_per_target(tmp_path, capsys):
    prof = _write_profile(tmp_path / "prof")
    a, b = _write_run(tmp_path / "a"), _write_run(tmp_path / "b", ceilings=SRC, name="Source CPU (avx2, 2 cores)")
    assert cli.main(["predict", str(prof), "--on", str(a), "--on", str(b), "--json"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1
    doc = json.loads(out)
    assert [t["run_dir"] for t in doc["targets"]] == [str(a), str(b)]
    for t in doc["targets"]:
        csv = Path(t["csv"])
        assert csv.parent == prof and csv.name.startswith("predict-") and csv.is_file()
        table = pd.read_csv(csv)
        assert len(table) == len(OPS) and table["predicted_time_s"].sum() == pytest.approx(
            t["predicted_time_s"] - t["carried_over"]["host_time_s"])
    assert doc["targets"][0]["speedup"] > 1 and doc["targets"][1]["speedup"] == pytest.approx(1.0)
    assert "top 5 ops by predicted time" in err and "aten::mm #1" in err and "carried over as measured" in err
    assert not list(prof.glob(".*.tmp"))


def test_cli_text_lists_the_top_ops_by_predicted_time(tmp_path, capsys):
    prof = _write_profile(tmp_path / "prof")
    assert cli.main(["predict", str(prof), "--on", str(_write_run(tmp_path / "a")), "--top", "3"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("top 3 ops"):]  # predicted: mm 31 ms, mul 15 ms, gelu 12 ms, add 9.6 ms
    assert all(op in table for op in ("aten::mm #1", "aten::mul #2", "aten::gelu #3")) and "aten::add #0" not in table
    assert "memory->compute" in table and "x the source's speed" in out


@pytest.mark.parametrize("case,expect", [
    ("missing", "no such directory"),
    ("not_profile", "not a gpuroof profile"),
    ("bad_totals", "totals.profiled_time_s"),
    ("partial", "has no ceilings"),
    ("cuda", "a cuda run; the profile was taken on cpu"),
    ("no_run", "not a gpuroof run"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, expect):
    prof, run = _write_profile(tmp_path / "prof"), _write_run(tmp_path / "run")
    if case == "missing":
        prof = tmp_path / "nowhere"
    elif case == "not_profile":
        prof = tmp_path / "empty"
        prof.mkdir()
    elif case == "bad_totals":
        doc = _profile_doc()
        doc["totals"]["profiled_time_s"] = None
        prof = _write_profile(tmp_path / "bad", doc)
    elif case == "partial":
        run = _write_run(tmp_path / "partial", status="partial")
    elif case == "cuda":
        run = _write_run(tmp_path / "gpu", backend="cuda", name="Some GPU")
    elif case == "no_run":
        run = tmp_path / "prof"
    rc = cli.main(["predict", str(prof), "--on", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0], err
    assert not list(tmp_path.rglob("predict-*.csv"))


def test_cli_needs_a_target(tmp_path, capsys):
    assert cli.main(["predict", str(_write_profile(tmp_path / "prof"))]) == 2
    assert "--on" in capsys.readouterr().err


def test_predict_help_loads_no_heavy_module():
    code = ("import sys, runpy; sys.argv = ['gpuroof', 'predict', '--help']\n"
            "try:\n    runpy.run_module('gpuroof', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('pandas', 'pydantic', 'matplotlib', 'numba', 'torch') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "usage: gpuroof predict" in r.stdout, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "LOADED []"


# ---------------------------------------------------------------------------------------------
# --threads: one machine, devices of 1 and N threads
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,expect", [
    (["measure", "--backend", "cpu", "--threads", "0"], "a positive integer"),
    (["measure", "--backend", "cpu", "--threads", "two"], "a positive integer"),
    (["measure", "--backend", "cpu", "--threads", "4096"], "--threads 4096: this machine has"),
    (["measure", "--backend", "cuda", "--threads", "1"], "--threads 1: the cuda backend has no thread count"),
    (["profile", "--model", "x.py:f", "--threads", "0"], "a positive integer"),
    (["profile", "--model", "x.py:f", "--threads", "4096"], "--threads 4096: this machine has"),
    (["profile", "--model", "x.py:f", "--device", "cuda", "--threads", "1"], "--device cuda is a GPU"),
])
def test_bad_threads_are_one_line_and_exit_2(tmp_path, capsys, argv, expect):
    rc = cli.main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_one_thread_device_is_named_apart_from_the_two_thread_one():
    facts = {"model": "AMD EPYC Processor", "family": 25, "model_number": 1, "flags": ["avx2", "fma"]}
    one, two = cpu_device_name({**facts, "cores_used": 1}), cpu_device_name({**facts, "cores_used": 2})
    assert one != two and one.endswith("1 cores)") and two.endswith("2 cores)")
    # two threads on one core (SMT siblings), chosen with --threads, are another device than one thread
    assert cpu_device_name({**facts, "cores_used": 1, "threads_chosen": 2}).endswith("1 cores, 2 threads)")
    assert cpu_device_name({**facts, "cores_used": 2, "threads_chosen": 2}) == two


def test_avx2_code_on_an_avx512_core_is_another_device():
    """NUMBA_CPU_FEATURES holding the kernels to AVX2 on an AVX-512 core makes another roofline: its
    name says so; the CPU's own ISA names nothing more."""
    facts = {"model": "Intel Xeon Processor", "family": 6, "model_number": 207, "cores_used": 2,
             "flags": ["avx512f", "avx2", "fma"]}
    native = cpu_device_name({**facts, "code_isa": "avx512"})
    assert native == cpu_device_name(facts) == "Intel Xeon Processor (family 6 model 207, avx512, 2 cores)"
    assert cpu_device_name({**facts, "code_isa": "avx2"}) == \
        "Intel Xeon Processor (family 6 model 207, avx512, avx2 code, 2 cores)"
    assert cpu_device_name({**facts, "code_isa": "generic"}) == native  # an unknown target names nothing


def test_the_backend_names_the_isa_its_kernels_were_compiled_for():
    """A CPU backend in a process whose code generator is held to AVX2 on an AVX-512 machine is
    named `..., avx512, avx2 code, ...`; in one left native, not."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_cpu_likwid", ROOT / "experiments" / "bench_cpu_likwid.py")
    likwid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(likwid)  # the features string the benchmarks force AVX2 with
    if "+avx512f" not in likwid.features_without(()).split(","):
        pytest.skip("no AVX-512 here: no narrower code to force beside the CPU's own")
    avx2 = likwid.features_without(likwid.AVX512_OFF)
    code = "from gpuroof.backends.cpu import CpuBackend; print(CpuBackend().device_info()['name'])"
    names = {}
    for label, extra in (("native", {}), ("avx2", {"NUMBA_CPU_FEATURES": avx2})):
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
        proc = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True,
                              cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        names[label] = proc.stdout.strip()
    assert ", avx512, " in names["native"] and " code, " not in names["native"]
    assert names["avx2"] == names["native"].replace(", avx512, ", ", avx512, avx2 code, ")


def test_cpu_backend_threads_set_numba_and_the_blas_and_give_them_back():
    import numba
    from threadpoolctl import threadpool_info

    from gpuroof.backends.cpu import CpuBackend

    before, blas_before = numba.get_num_threads(), [i["num_threads"] for i in threadpool_info()]
    b = CpuBackend(0, threads=1)
    try:
        info = b.device_info()
        assert b.threads == numba.get_num_threads() == 1 and info["cores_used"] == 1 and info["threads"] == 1
        assert "1 cores" in info["name"]
        assert all(i["num_threads"] == 1 for i in threadpool_info())
    finally:
        b.close()
    assert numba.get_num_threads() == before and [i["num_threads"] for i in threadpool_info()] == blas_before
    if logical_cpus() >= 2:
        b2 = CpuBackend(0, threads=2)
        try:
            assert b2.device_info()["name"] != info["name"]
        finally:
            b2.close()


# ---------------------------------------------------------------------------------------------
# end to end: a real profile of a tiny model, predicted on the device it was profiled on
# ---------------------------------------------------------------------------------------------

TINY = '''
import torch


def build(batch=32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256))
    return model.eval(), torch.randn(batch, 256)
'''


@pytest.fixture(scope="module")
def tiny_profile(cpu_run, tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'gpuroof[torch]')")
    where = tmp_path_factory.mktemp("tiny")
    (where / "tiny.py").write_text(TINY)
    out = where / "prof"
    proc = subprocess.run([sys.executable, "-m", "gpuroof", "profile", "--model", f"{where / 'tiny.py'}:build",
                           "--device", "cpu", "--ceilings", str(cpu_run.path), "--reps", "3", "--out", str(out),
                           "--json"], cwd=where, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_predict_end_to_end_on_the_profiled_device_gives_back_its_time(tiny_profile, cpu_run):
    proc = subprocess.run([sys.executable, "-m", "gpuroof", "predict", str(tiny_profile), "--on", str(cpu_run.path),
                           "--json"], cwd=tiny_profile, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    prof = json.loads((tiny_profile / "profile.json").read_text())
    (t,) = doc["targets"]
    assert t["predicted_time_s"] == pytest.approx(prof["totals"]["profiled_time_s"], rel=1e-9)
    assert t["speedup"] == pytest.approx(1.0, rel=1e-9) and t["ops_predicted"] >= 2  # the two GEMMs at least
    assert {o["op"] for o in t["ops"] if not o["carried_over"]} >= {"aten::addmm"}
    assert t["carried_over"]["host_time_s"] == pytest.approx(
        prof["totals"]["profiled_time_s"] - sum(o["time_s"] or 0 for o in prof["ops"]))
    assert Path(t["csv"]).is_file() and Path(t["csv"]).parent == tiny_profile
    assert doc["source"]["ceilings"] == prof["ceilings"]


@pytest.mark.skipif(logical_cpus() < 2, reason="one logical CPU: no device of fewer threads to make")
def test_profile_end_to_end_with_one_thread_is_another_device_than_the_run(tiny_profile, cpu_run, tmp_path, capsys):
    """--threads 1 names the 1-core device: the default run (every CPU) is refused as another device's."""
    rc = cli.main(["profile", "--model", f"{tiny_profile.parent / 'tiny.py'}:build", "--device", "cpu",
                   "--threads", "1", "--ceilings", str(cpu_run.path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--ceilings" in err[0] and "1 cores" in err[0], err


def test_the_figure_has_an_arrow_from_each_measured_op_to_its_prediction():
    """plots.predict: one arrow per drawn op, from FLOPs / measured time on the source to FLOPs /
    predicted time on the target, at the op's intensity; ops without FLOPs or bytes are not drawn."""
    from gpuroof.plots.predict import prediction_figure

    src, tgt = Roofline.from_dict(SRC), Roofline.from_dict(TGT)
    rows = predict_ops(pd.DataFrame(OPS), src, tgt)
    drawn = prediction_figure(src, tgt, rows, model="synthetic", source_name="S", target_name="T")
    arrows = [a for a in drawn.fig.axes[0].texts if getattr(a, "arrow_patch", None) is not None]
    want = rows[~rows["carried_over"] & (rows["flops"] > 0) & (rows["bytes"] > 0)]
    assert len(arrows) == len(want) == 4  # add, mm, mul, gelu; not the view, the bmm nor the copy
    got = sorted((a.xyann[0], a.xyann[1], a.xy[1]) for a in arrows)
    exp = sorted((r.flops / r.bytes, r.flops / r.measured_time_s, r.flops / r.predicted_time_s)
                 for r in want.itertuples())
    assert [v for t in got for v in t] == pytest.approx([v for t in exp for v in t])
    mm = next(a for a in arrows if a.xy[0] == pytest.approx(2e10 / 1e7))
    assert mm.xy[1] > mm.xyann[1]  # the matrix op points up: the target's matrix roof is 4x higher


def test_cli_writes_the_figure_beside_the_csv(tmp_path, capsys):
    prof = _write_profile(tmp_path / "prof")
    assert cli.main(["predict", str(prof), "--on", str(_write_run(tmp_path / "a"))]) == 0
    out = capsys.readouterr().out
    (png,) = prof.glob("predict-*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"figure: {png}" in out
    assert png.with_suffix(".csv").is_file()


def test_an_op_without_a_time_loads_and_a_time_that_is_not_a_number_is_refused(tmp_path):
    """An op the profiler could not time has time_s null (a profile of BERT has one): it is carried
    over, not a reason to refuse the profile; a string where a number belongs is refused in one line."""
    ops = OPS + [_op("aten::where #7", 1e6, 1e6, None, None)]
    prof = load_profile(_write_profile(tmp_path / "ok", _profile_doc(ops)))
    rows = predict_ops(prof.ops, prof.roof, Roofline.from_dict(TGT))
    assert bool(rows.iloc[-1]["carried_over"]) and rows.iloc[-1]["note"] == NOT_PLACED
    bad = [dict(o) for o in OPS]
    bad[2]["bytes"] = "lots"
    with pytest.raises(UsageError, match=r"field ops\[2\]\.bytes='lots': a number or null"):
        load_profile(_write_profile(tmp_path / "bad", _profile_doc(bad)))


def test_a_profile_with_nothing_to_draw_gets_its_csv_and_no_figure(tmp_path, capsys):
    """Every op carried over (no FLOPs, not placed): the prediction still stands, with no figure."""
    ops = [_op("aten::view #0", 0.0, 0.0, 5e-6, "overhead"), _op("aten::where #1", 1e6, 1e6, None, None)]
    prof = _write_profile(tmp_path / "prof", _profile_doc(ops))
    assert cli.main(["predict", str(prof), "--on", str(_write_run(tmp_path / "a")), "--json"]) == 0
    (t,) = json.loads(capsys.readouterr().out)["targets"]
    assert t["figure"] is None and Path(t["csv"]).is_file() and not list(prof.glob("predict-*.png"))
