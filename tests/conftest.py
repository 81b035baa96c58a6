"""Shared fixtures: one real quick CPU measurement per test session; a CUDA backend where there is a device."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """The tuner's kept choices (gpuroof.tune.ChoiceCache) live in this session's own directory,
    shared by the measurements of the session (subprocesses inherit it), never the user's."""
    config._gpuroof_cache = tempfile.mkdtemp(prefix="gpuroof-test-cache-")
    os.environ["GPUROOF_CACHE_DIR"] = config._gpuroof_cache


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_gpuroof_cache", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def cpu_run(tmp_path_factory):
    """A complete `gpuroof measure --quick` on the CPU backend (real kernels, real timing).

    It runs in a fresh process, as a user runs it: the BLAS and numba worker threads that earlier
    tests left spinning in this process must not share the two cores with the measurement.
    The timeout is long because the DRAM buffers are 8x the last-level cache: a KVM guest that shows
    480 MiB of L3 streams 3.8 GiB per array, and its quick run took 370 s (issue 33 is the fix).
    """
    from gpuroof.results import load_run

    out = tmp_path_factory.mktemp("cpu-run") / "run"
    proc = subprocess.run([sys.executable, "-m", "gpuroof", "measure", "--backend", "cpu", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
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
