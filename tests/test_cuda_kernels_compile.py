"""CUDA backend checks that need no GPU: kernels compile with nvcc without spills; peaks, names, paths."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpuroof
from gpuroof.backends import cuda
from gpuroof.backends.base import ITEMSIZE, sweep_input
from gpuroof.errors import MeasurementError

KERNEL_DIR = Path(__file__).resolve().parent.parent / "kernels"
CU_FILES = sorted(KERNEL_DIR.glob("*.cu"))
ARCHES = ("sm_80", "sm_90")  # bfloat16 math needs sm_80; sm_90 is the H100/H200 target


def _nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found on PATH: the compile check needs a CUDA toolkit")
    return nvcc


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: p.name)
def test_kernel_compiles_for_arch_without_register_spills(path, arch, tmp_path):
    cmd = [_nvcc(), "-std=c++17", f"-arch={arch}", "-c", "-Xptxas", "-v",
           "-o", str(tmp_path / f"{path.stem}.o"), str(path)]
    if path.name == "sweep.cu":
        # Instantiate every template the backend asks NVRTC for; nvcc splits option values at
        # unescaped commas, hence the backslashes.
        cmd.insert(1, "-DGPUROOF_INSTANTIATE_FMAS=" + "\\,".join(map(str, cuda.SWEEP_FMAS)))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
    if path.name != "sweep.cu":
        return
    log = result.stdout + result.stderr
    entries = re.findall(r"Compiling entry function '(\w+)'", log)
    assert len(entries) == len(cuda.CUDA_TYPE) * len(cuda.SWEEP_FMAS) * 2 + 2  # + cache_read<false/true>
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", log)]
    assert len(spills) == len(entries)
    assert not any(spills), "register spills (local memory) in:\n" + "\n".join(
        e for e, s in zip(entries, spills) if s)


def test_theoretical_peaks_of_h100_sxm_at_max_clocks():
    peaks = cuda.theoretical_peaks("9.0", 132, 1980, 5120, 2619)
    assert peaks["compute"]["float32"] == pytest.approx(132 * 128 * 2 * 1.98e9)  # 66.9 TFLOP/s
    assert peaks["compute"]["float32"] == pytest.approx(66.9e12, rel=1e-3)
    assert peaks["compute"]["float64"] == pytest.approx(33.45e12, rel=1e-3)
    assert peaks["compute"]["float16"] == peaks["compute"]["bfloat16"] == pytest.approx(133.8e12, rel=1e-3)
    assert peaks["bandwidth"]["dram"] == pytest.approx(3.35e12, rel=1e-3)


def test_theoretical_peaks_of_a100_dram_and_missing_bf16_on_volta():
    assert cuda.theoretical_peaks((8, 0), 108, 1410, 5120, 1215)["bandwidth"]["dram"] == \
        pytest.approx(1.555e12, rel=1e-3)
    assert cuda.theoretical_peaks((7, 0), 80, 1530, 4096, 877)["compute"]["bfloat16"] is None


def test_theoretical_peaks_are_none_for_unknown_architecture_or_clock():
    unknown = cuda.theoretical_peaks("12.0", 170, 2400, 512, 1750)
    assert all(v is None for v in unknown["compute"].values())
    assert unknown["bandwidth"]["dram"] is not None  # DRAM needs no per-architecture table
    no_clocks = cuda.theoretical_peaks("9.0", 132, None, None, None)
    assert all(v is None for v in no_clocks["compute"].values())
    assert no_clocks["bandwidth"]["dram"] is None
    garbage = cuda.theoretical_peaks("garbage", 132, 1980, 5120, 2619)
    assert all(v is None for v in garbage["compute"].values())


def test_kernel_source_finds_sweep_cu_in_checkout():
    path = cuda.kernel_path("sweep.cu")
    assert path.is_file() and path.name == "sweep.cu"
    assert path.resolve() in {(KERNEL_DIR / "sweep.cu").resolve(),
                              (Path(gpuroof.__file__).parent / "_kernels" / "sweep.cu").resolve()}
    assert "template <typename T, int FMAS, bool WRITE>" in cuda.kernel_source("sweep.cu")


def test_kernel_source_reports_missing_file_as_measurement_error():
    with pytest.raises(MeasurementError, match="no_such_kernel.cu"):
        cuda.kernel_source("no_such_kernel.cu")


def test_name_expressions_cover_every_compiled_instance_once():
    for dtype, ctype in cuda.CUDA_TYPE.items():
        names = cuda.name_expressions(dtype)
        assert len(names) == len(set(names)) == 2 * len(cuda.SWEEP_FMAS)
        assert cuda.name_expression(dtype, 2048, True) == f"sweep<{ctype}, 2048, true>"
    assert cuda.SWEEP_FMAS == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def test_granule_is_v_vectors_of_16_bytes():
    assert {d: cuda.granule(d) * ITEMSIZE[d] for d in cuda.CUDA_TYPE} == \
        {d: 16 * cuda.VECS_PER_THREAD[d] for d in cuda.CUDA_TYPE}
    assert cuda.granule("float32") == 8 and cuda.granule("float16") == 16


def test_bf16_bits_hold_sweep_inputs_exactly_and_round_to_nearest_even():
    x = sweep_input(np.arange(1000))
    bits = cuda.bf16_bits_from_float64(np, x)
    assert bits.dtype == np.uint16
    assert np.array_equal(cuda.float64_from_bf16_bits(np, bits), x)
    assert np.array_equal(cuda.float64_from_bf16_bits(np, cuda.bf16_bits_from_float64(np, 3.0 - x)), 3.0 - x)
    halfway = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8])  # ties: to even mantissa
    assert cuda.float64_from_bf16_bits(np, cuda.bf16_bits_from_float64(np, halfway)).tolist() == \
        [1.0, 1 + 4 * 2.0 ** -8]


def test_importing_cuda_backend_does_not_import_cupy():
    root = str(Path(gpuroof.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    code = ("import sys, gpuroof.backends.cuda as c; c.theoretical_peaks('9.0', 132, 1980, 5120, 2619); "
            "c.kernel_source('sweep.cu'); assert 'cupy' not in sys.modules, 'cupy imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_cuda_backend_is_available_exactly_where_the_driver_lists_a_gpu():
    """Checked against the driver's own tool: available and a device counted where `nvidia-smi -L`
    lists a GPU and CuPy is installed, neither anywhere else (this machine without a GPU included)."""
    import importlib.util

    smi = shutil.which("nvidia-smi")
    listed = bool(smi) and subprocess.run([smi, "-L"], capture_output=True, text=True,
                                          timeout=60).stdout.lstrip().startswith("GPU ")
    usable = listed and importlib.util.find_spec("cupy") is not None
    assert cuda.CudaBackend.available() is usable
    assert (cuda.CudaBackend.device_count() > 0) is usable


def test_cuda_backend_without_cupy_is_unavailable_not_an_error(monkeypatch):
    """A machine without CuPy (or whose CuPy cannot load its CUDA libraries) has no CUDA backend:
    `available()` is False and no device is counted, where the import raises."""
    import gpuroof.backends.cuda as cuda_pkg

    def broken():
        raise ImportError("libcudart.so.13: cannot open shared object file")
    monkeypatch.setattr(cuda_pkg, "import_cupy", broken)
    assert cuda.CudaBackend.available() is False and cuda.CudaBackend.device_count() == 0
