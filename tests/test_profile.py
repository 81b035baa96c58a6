"""`gpuroof profile` on the CPU: FLOPs against FlopCounterMode and closed forms, times against the profile,
every op placed, the files and the JSON document, bad input."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

if os.environ.get("GPUROOF_REQUIRE_TORCH"):  # CI installs torch: there these tests must run, not skip
    import torch
else:
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'gpuroof[torch]')")

from gpuroof import api, cli  # noqa: E402
from gpuroof.profile import flop_counter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "experiments" / "profile_models.py"
REPS = 3


def _examples():
    spec = importlib.util.spec_from_file_location("profile_models", MODELS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def examples():
    return _examples()


def _ops(res) -> pd.DataFrame:
    return res.rows("op")


def test_linear_layer_flops_and_bytes_match_the_closed_form(cpu_run):
    b, n_in, n_out = 32, 256, 128
    res = api.profile(torch.nn.Linear(n_in, n_out, bias=False), torch.randn(b, n_in), device="cpu",
                      ceilings=cpu_run.path, reps=REPS)
    ops = _ops(res)
    assert set(ops["op"]) == {"aten::t", "aten::mm"}  # the transpose is a view: no bytes, no FLOPs
    assert ops["flops"].sum() == 2 * b * n_in * n_out
    assert ops["bytes"].sum() == (b * n_in + n_in * n_out + b * n_out) * 4
    mm = ops[ops["op"] == "aten::mm"].iloc[0]
    assert mm["unit"] == "float32-matrix" and mm["module"] == "Linear"
    assert mm["intensity"] == pytest.approx(mm["flops"] / mm["bytes"])
    assert mm["achieved_flops"] == pytest.approx(mm["flops"] / mm["time_s"])
    assert mm["bound"] in ("memory", "compute") and mm["time_s"] > 0


def test_lstm_flops_are_the_gate_gemms_of_every_layer_and_step(cpu_run):
    b, t, n_in, h, layers = 3, 5, 24, 32, 2
    model = torch.nn.LSTM(n_in, h, num_layers=layers, batch_first=True)
    res = api.profile(model, torch.randn(b, t, n_in), device="cpu", ceilings=cpu_run.path, reps=REPS)
    expected = sum(2 * t * b * 4 * h * (d + h) for d in [n_in] + [h] * (layers - 1))
    assert res.totals["flops"] == expected
    rnn = _ops(res)[_ops(res)["flops"] > 0]
    assert len(rnn) == layers and (rnn["bound"].notna()).all()


@pytest.mark.parametrize("name,batch", [("mlp", 2), ("lstm", 2), ("cnn", 2)])
def test_example_rows_add_up_to_flop_counter_and_profiled_time(cpu_run, examples, tmp_path, name, batch):
    model, x = getattr(examples, name)(batch=batch)
    res = api.profile(model, x, device="cpu", ceilings=cpu_run.path, reps=REPS, name=name)
    with torch.no_grad(), flop_counter() as fc:  # an independent count of the same forward
        model(x)
    ops = _ops(res)
    assert ops["flops"].sum() == fc.get_total_flops() == res.totals["flop_counter_total"] > 0
    if name != "lstm":  # no RNN: gpuroof's formulas add nothing to torch's own counter
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as plain:
            model(x)
        assert ops["flops"].sum() == plain.get_total_flops()
    t = res.totals
    assert ops["time_s"].notna().all()
    assert len(t["rep_op_time_s"]) == REPS
    # per repetition, matched op time over profiled time; the median over the repetitions
    assert t["op_time_coverage"] == pytest.approx(1.0, rel=0.10)
    assert t["wall_time_s"] >= 0.9 * t["profiled_time_s"]
    assert ops["bound"].notna().all(), ops[ops["bound"].isna()][["name", "notes"]]  # every op placed
    assert (ops["predicted_time_s"] >= 0).all()
    # aggregates are sums of their op instances
    for kind in ("op_type", "module"):
        agg = res.rows(kind)
        assert agg["flops"].sum() == ops["flops"].sum()
        assert agg["time_s"].sum() == pytest.approx(ops["time_s"].sum())
        assert agg["time_share"].sum() == pytest.approx(1.0)
    assert t["predicted_time_s"] == pytest.approx(ops["predicted_time_s"].sum())
    assert t["headroom"] == pytest.approx(t["time_s"] / t["predicted_time_s"])
    files = res.write(tmp_path / name)
    assert files["png"].stat().st_size > 20_000
    table = pd.read_csv(files["csv"])
    assert set(table["kind"]) == {"op", "op_type", "module", "model"}
    assert (table["kind"] == "op").sum() == len(ops)
    assert json.loads(files["json"].read_text())["totals"]["flops"] == t["flops"]
    assert "where the time goes" in res.where_the_time_goes()


def test_mlp_moves_from_the_bandwidth_slope_to_the_compute_roof_as_the_batch_grows(cpu_run, examples):
    """Weights are read once per forward whatever the batch, FLOPs grow with it: intensity rises
    with the batch and crosses the ridge."""
    placed = {}
    for batch in (1, 512):
        model, x = examples.mlp(batch=batch)
        res = api.profile(model, x, device="cpu", ceilings=cpu_run.path, reps=1)
        placed[batch] = res.rows("op_type").set_index("name").loc["aten::addmm"]
    assert placed[1]["bound"] == "memory" and placed[512]["bound"] == "compute"
    assert placed[512]["intensity"] > 100 * placed[1]["intensity"]


def test_profile_cli_json_is_one_document_and_writes_the_files(cpu_run, tmp_path):
    """In a process of its own, as a user runs it: what torch's C++ side prints must not reach stdout."""
    out = tmp_path / "prof"
    proc = subprocess.run([sys.executable, "-m", "gpuroof", "profile", "--model", f"{MODELS}:mlp", "--batch", "2",
                           "--device", "cpu", "--ceilings", str(cpu_run.path), "--reps", "2", "--out", str(out),
                           "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the whole of stdout
    assert doc["model"] == "mlp-b2" and doc["out_dir"] == str(out)
    assert doc["totals"]["flops"] == sum(o["flops"] for o in doc["ops"])
    assert {o["name"] for o in doc["op_types"]} >= {"aten::addmm", "aten::relu"}
    for f in ("profile.csv", "profile.json", "profile.png"):
        assert (out / f).is_file()
    assert not list(out.glob(".*.tmp"))


def test_profile_cli_prints_where_the_time_goes(cpu_run, tmp_path, capsys):
    rc = cli.main(["profile", "--model", f"{MODELS}:cnn", "--batch", "1", "--device", "cpu",
                   "--ceilings", str(cpu_run.path), "--reps", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "where the time goes" in out and "aten::convolution" in out and "headroom" in out


BAD_MODELS = '''
import torch
def raises(batch=1):
    class Boom(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")
    return Boom(), torch.randn(batch, 4)
def wrong_shape(batch=1):
    return torch.nn.Linear(8, 4), torch.randn(batch, 5)
def not_a_pair():
    return 3
'''


@pytest.mark.parametrize("args,expect", [
    (["--model", "{bad}:raises"], "raised RuntimeError: boom"),
    (["--model", "{bad}:wrong_shape"], "mat1 and mat2 shapes cannot be multiplied"),
    (["--model", "{bad}:not_a_pair"], "must return (model, inputs)"),
    (["--model", "{bad}:missing"], "has no function 'missing'"),
    (["--model", "nowhere.py:mlp"], "no such file"),
    (["--model", "{models}:mlp", "--device", "tpu"], "--device 'tpu'"),
    (["--model", "{models}:mlp", "--batch", "0"], "a positive integer"),
])
def test_profile_cli_bad_input_is_one_line_and_exit_2(cpu_run, tmp_path, capsys, args, expect):
    bad = tmp_path / "bad_models.py"
    bad.write_text(BAD_MODELS)
    argv = ["profile", *[a.format(bad=bad, models=MODELS) for a in args], "--ceilings", str(cpu_run.path),
            "--reps", "1", "--out", str(tmp_path / "out")]
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "out").exists()


def _other_device_run(cpu_run, dest: Path) -> Path:
    shutil.copytree(cpu_run.path, dest)
    meta = json.loads((dest / "run.json").read_text())
    meta["device"]["name"] = "Some Other CPU"
    (dest / "run.json").write_text(json.dumps(meta))
    return dest


def test_ceilings_of_another_device_are_refused(cpu_run, tmp_path, capsys):
    other = _other_device_run(cpu_run, tmp_path / "other")
    rc = cli.main(["profile", "--model", f"{MODELS}:mlp", "--device", "cpu", "--ceilings", str(other),
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--ceilings" in err[0] and "Some Other CPU" in err[0]
    with pytest.raises(ValueError, match="^ceilings .*Some Other CPU"):
        api.profile(torch.nn.Linear(4, 4), torch.randn(2, 4), device="cpu", ceilings=other)


def test_api_bad_arguments_raise_value_errors_naming_them(cpu_run):
    lin = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="^inputs: .*RuntimeError"):
        api.profile(lin, torch.randn(2, 5), device="cpu", ceilings=cpu_run.path)
    with pytest.raises(ValueError, match="^device='tpu'"):
        api.profile(lin, torch.randn(2, 4), device="tpu", ceilings=cpu_run.path)
    with pytest.raises(ValueError, match="^model: "):
        api.profile(lambda x: x, torch.randn(2, 4), device="cpu", ceilings=cpu_run.path)
    with pytest.raises(ValueError, match="^reps=0"):
        api.profile(lin, torch.randn(2, 4), device="cpu", ceilings=cpu_run.path, reps=0)


def _event(name, start, children=()):
    from types import SimpleNamespace

    return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start), cpu_children=list(children))


def test_matching_walks_into_composites_and_skips_ops_the_profiler_does_not_record():
    from gpuroof.profile import match

    t, mm = _event("aten::t", 2, [_event("aten::transpose", 3)]), _event("aten::mm", 5, [_event("aten::empty", 6)])
    roots = [_event("aten::linear", 1, [t, mm]), _event("aten::relu", 8, [_event("aten::clamp_min", 9)]),
             _event("aten::t", 10), _event("aten::mm", 11)]
    ops = ["aten::t", "aten::mm", "aten::detach", "aten::relu", "aten::t", "aten::mm"]
    found = match(ops, roots)
    assert [f and (f.name, f.time_range.start) for f in found] == [
        ("aten::t", 2), ("aten::mm", 5), None, ("aten::relu", 8), ("aten::t", 10), ("aten::mm", 11)]


def test_backward_of_a_linear_layer_adds_the_weight_gradient_gemm(cpu_run):
    """The input needs no gradient, so the backward is one GEMM (the weight's): 2*B*in*out more FLOPs."""
    b, n_in, n_out = 16, 64, 32
    res = api.profile(torch.nn.Linear(n_in, n_out, bias=False), torch.randn(b, n_in), device="cpu",
                      ceilings=cpu_run.path, reps=REPS, backward=True)
    ops = _ops(res)
    by_phase = ops.groupby("phase")["flops"].sum()
    assert by_phase["forward"] == by_phase["backward"] == 2 * b * n_in * n_out
    assert res.totals["phase"] == "forward+backward" and ops["bound"].notna().all()
