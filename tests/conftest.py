"""Shared fixtures: one real quick CPU measurement per test session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def cpu_run(tmp_path_factory):
    """A complete `measure --quick` on the CPU backend (real kernels, real timing)."""
    from gpuroof.measure import measure

    out = tmp_path_factory.mktemp("cpu-run") / "run"
    return measure(backend_name="cpu", quick=True, out=str(out), progress=False)
