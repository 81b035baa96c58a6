"""Shared fixtures: one real quick CPU measurement per test session; a CUDA backend where there is a device."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cpu_run(tmp_path_factory):
    """A complete `gpuroof measure --quick` on the CPU backend (real kernels, real timing).

    It runs in a fresh process, as a user runs it: the BLAS and numba worker threads that earlier
    tests left spinning in this process must not share the two cores with the measurement.
    """
    from gpuroof.results import load_run

    out = tmp_path_factory.mktemp("cpu-run") / "run"
    proc = subprocess.run([sys.executable, "-m", "gpuroof", "measure", "--backend", "cpu", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return load_run(out)


@pytest.fixture(scope="module")
def cuda_backend():
    """A CUDA backend on device 0, closed after the module; skips without cupy or a visible device."""
    pytest.importorskip("cupy", reason="cupy is not installed (pip install gpuroof[cuda13])")
    from gpuroof.backends.cuda import CudaBackend

    if not CudaBackend.available():
        pytest.skip("cupy sees no CUDA device (no GPU or no driver)")
    b = CudaBackend(0)
    yield b
    b.close()
