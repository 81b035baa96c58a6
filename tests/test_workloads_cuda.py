"""CUDA workloads: kernels compile with nvcc (sm_80, sm_90) without spills; on a device, every runner is correct."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpuroof.workloads import WORKLOADS, Case
from gpuroof.workloads.base import rel_error, to_float64
from gpuroof.workloads.conv2d import CONV2D, Conv2dParams, direct_name, im2col_name
from gpuroof.workloads.gemm import GEMM, GemmParams, tiled_name
from gpuroof.workloads.lstm import LSTM, LstmParams, pointwise_name
from gpuroof.workloads.mlp import MLP, MlpParams, bias_act_name
from gpuroof.workloads.stream import STREAM, StreamParams

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
FILES = ("conv2d.cu", "gemm.cu", "lstm.cu")
ARCHES = ("sm_80", "sm_90")


def _nvcc() -> str:
    nvcc = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if Path("/usr/local/bin/nvcc").exists() else None)
    if nvcc is None:
        pytest.skip("nvcc not found: the compile check needs a CUDA toolkit")
    return nvcc


def _compile(src: Path, out: Path, *defines: str) -> str:
    """nvcc for sm_80 and sm_90 in one call (-gencode each), with ptxas statistics."""
    gencode = [f"-gencode=arch=compute_{a[3:]},code={a}" for a in ARCHES]
    cmd = [_nvcc(), "-std=c++17", *gencode, "-c", "-Xptxas", "-v", *defines, "-o", str(out), str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
    return result.stdout + result.stderr


def _requested_instances() -> dict[str, set[str]]:
    """Every name expression the runners ask NVRTC for, over all CUDA cases of every size."""
    names: dict[str, set[str]] = {f: set() for f in FILES}
    for size in ("small", "default", "large"):
        for w in WORKLOADS.values():
            for p in w.cases(size, "cuda", 50 << 20):
                if w is GEMM and p.impl == "tiled":
                    names["gemm.cu"].add(tiled_name(p.dtype))
                elif w is CONV2D and p.impl == "direct":
                    names["conv2d.cu"].add(direct_name(p.dtype, p.ksize))
                elif w is CONV2D and p.impl == "im2col-cublas" and not p.is_pointwise_gemm:
                    names["conv2d.cu"].add(im2col_name(p.dtype))
                elif w is LSTM:
                    names["lstm.cu"].add(pointwise_name(p.dtype))
                elif w is MLP:
                    names["gemm.cu"].update({bias_act_name(p.dtype, True), bias_act_name(p.dtype, False)})
    return names


@pytest.mark.parametrize("name", FILES)
def test_workload_kernels_compile_for_sm80_and_sm90_without_spills(name, tmp_path):
    """All explicit instances (-DGPUROOF_INSTANTIATE_ALL) plus every name expression the runners
    request (a probe that takes each instance's address) compile for both architectures."""
    wanted = sorted(_requested_instances()[name])
    assert wanted
    probe = tmp_path / f"probe_{name}"
    probe.write_text(f'#include "{KERNELS / name}"\n'
                     "void* gpuroof_probe[] = {\n" + ",\n".join(f"    (void*)&{n}" for n in wanted) + "\n};\n")
    log = _compile(probe, tmp_path / "p.o", "-DGPUROOF_INSTANTIATE_ALL")
    entries = re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", log)
    assert {arch for _, arch in entries} == set(ARCHES)
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", log)]
    assert len(spills) == len(entries)
    assert not any(spills), "register spills in " + ", ".join(
        f"{e} ({a})" for (e, a), s in zip(entries, spills) if s)


# ---------------------------------------------------------------------------------------------
# on a device
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cuda(cuda_backend):
    return cuda_backend


def _check_on_device(backend, workload, p) -> float:
    x = workload.inputs(p, np.random.default_rng(2))
    sel, ref = workload.reference(p, x)
    prep = workload.runners["cuda"][p.impl](backend, p, x)
    prep.run()
    prep.run()
    return rel_error(to_float64(np.asarray(prep.output())[sel], p.dtype), ref)


GPU_CASES = [
    (GEMM, GemmParams(1, 512, 384, "float32", "cublas")),
    (GEMM, GemmParams(70, 130, 260, "float16", "cublas")),
    (GEMM, GemmParams(70, 130, 260, "bfloat16", "cublas")),
    (GEMM, GemmParams(70, 130, 260, "float32", "tiled")),
    (GEMM, GemmParams(1, 100, 1000, "float16", "tiled")),
    (GEMM, GemmParams(64, 64, 64, "bfloat16", "tiled")),
    (CONV2D, Conv2dParams(1, 1, 1, 64, 64, 3, 1, 1, "float32", "direct")),
    (CONV2D, Conv2dParams(1, 1, 1, 64, 64, 1, 1, 0, "float32", "direct")),
    (CONV2D, Conv2dParams(2, 3, 11, 9, 13, 3, 2, 1, "float32", "direct")),
    (CONV2D, Conv2dParams(2, 5, 9, 17, 15, 5, 1, 2, "float16", "direct")),
    (CONV2D, Conv2dParams(2, 3, 11, 9, 13, 3, 2, 1, "float32", "im2col-cublas")),
    (CONV2D, Conv2dParams(2, 16, 8, 12, 12, 1, 1, 0, "float32", "im2col-cublas")),
    (CONV2D, Conv2dParams(1, 8, 8, 10, 10, 3, 1, 1, "float16", "im2col-cublas")),
    (LSTM, LstmParams(3, 48, 32, 5, "float32", "cublas")),
    (LSTM, LstmParams(16, 64, 64, 8, "float16", "cublas")),
    (MLP, MlpParams(5, 96, 3, "float32", "cublas")),
    (MLP, MlpParams(64, 128, 4, "float16", "cublas")),
    (STREAM, StreamParams(1_000_003, "float32", "cupy")),
    (STREAM, StreamParams(1_000_003, "float16", "cupy")),
]


@pytest.mark.gpu
@pytest.mark.parametrize("workload,p", GPU_CASES, ids=lambda v: getattr(v, "label", getattr(v, "name", "")))
def test_cuda_runner_matches_float64_reference(cuda, workload, p):
    assert _check_on_device(cuda, workload, p) <= workload.tolerance(p)


@pytest.mark.gpu
def test_cuda_cudnn_conv_matches_reference_when_available(cuda):
    from gpuroof.workloads.conv2d import cudnn_available

    if not cudnn_available():
        pytest.skip("this cupy has no cuDNN wrapper (removed in CuPy v14) or libcudnn is missing")
    p = Conv2dParams(2, 8, 16, 14, 14, 3, 1, 1, "float32", "cudnn")
    assert _check_on_device(cuda, CONV2D, p) <= CONV2D.tolerance(p)


@pytest.mark.gpu
def test_cuda_bench_small_cases_validate_and_are_placed(cuda):
    """A few real cases through run_case with the CUDA event timer (ceilings: a plain model)."""
    from gpuroof.bench import BenchSettings, run_case
    from gpuroof.roofline import Roofline

    roof = Roofline(bandwidth={"dram": 1e12}, compute={"float32": 1e13, "float16": 2e13})
    for workload, p in [(GEMM, GemmParams(512, 512, 512, "float32", "cublas")),
                        (CONV2D, Conv2dParams(4, 32, 32, 28, 28, 3, 1, 1, "float32", "direct")),
                        (LSTM, LstmParams(8, 256, 256, 4, "float16", "cublas"))]:
        row, samples = run_case(cuda, roof, Case(workload, p), BenchSettings(2, 5, 20, 0.05))
        assert row["valid"], row["notes"]
        assert row["time_s"] > 0 and len(samples) == row["reps"] >= 5
