"""The pytest plugin: the README's example test runs for real on the CPU backend (pytester)."""
from __future__ import annotations

import os
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gpuroof.pytest_plugin import CACHE_VERSION, Settings, cache_file, measure_reason, stale_reason

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

#: The README's example, verbatim: a user's performance test against the measured roofline.
EXAMPLE = '''
"""Performance tests against this device's measured roofline (gpuroof's pytest plugin)."""
import numpy as np

N = 1 << 24  # 64 MiB per float32 array: past most last-level caches (1 FLOP per 12 bytes: memory-bound)


def test_vector_add_is_memory_bound_and_near_its_roof(placement):
    x, y = np.ones(N, np.float32), np.ones(N, np.float32)
    out = np.empty_like(x)
    # 1 FLOP per element; 3 arrays of 4-byte elements moved once (2 read, 1 written)
    p = placement(lambda: np.add(x, y, out=out), flops=N, bytes=3 * 4 * N, unit="float32")
    assert p.bound == "memory"
    # one NumPy thread against the all-core DRAM roof; a GPU kernel would assert >= 0.8 here
    assert p.efficiency >= 0.1, p


def test_roofline_fixture_has_the_measured_ceilings(roofline):
    assert roofline.bandwidth["dram"] > 0
    assert roofline.ridge("float32") > 1 / 12  # the vector add sits left of the ridge
'''

INI = """
[pytest]
gpuroof_backend = cpu
gpuroof_quick = true
gpuroof_dtypes = float32
gpuroof_levels = dram
gpuroof_matrix = false
"""


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    """The inner sessions run in their own process (NumPy cannot be imported twice in one) and
    must find this checkout's gpuroof even when it is not installed."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _plugin_args() -> list[str]:
    """`-p gpuroof.pytest_plugin` unless the installed entry point already loads it."""
    registered = any(ep.value == "gpuroof.pytest_plugin" for ep in entry_points(group="pytest11"))
    if registered and not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    return ["-p", "gpuroof.pytest_plugin"]


def test_plugin_is_registered_through_the_pytest11_entry_point():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project.get("entry-points", {}).get("pytest11", {}).get("gpuroof") == "gpuroof.pytest_plugin"


def test_readme_example_measures_once_then_uses_the_cache(pytester, tmp_path):
    """First session measures (quick, float32) and passes; the second reads the cache and passes."""
    pytester.makeini(INI)
    pytester.makepyfile(test_example=EXAMPLE)
    cache = tmp_path / "cache"
    # judged even on a machine other sessions keep busy: this test is about measuring and caching
    args = [*_plugin_args(), f"--gpuroof-cache-dir={cache}", "-p", "no:cacheprovider", "--gpuroof-allow-busy"]

    first = pytester.runpytest_subprocess(*args)
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["*gpuroof: measuring the roofline of * (no cached roofline*"])
    entries = list(cache.glob("roofline-*.json"))
    assert len(entries) == 1
    assert list((cache / "runs").rglob("run.json")), "the measurement's run directory is kept"

    entry = (entries[0].read_bytes(), entries[0].stat().st_mtime_ns)
    runs = sorted((cache / "runs").rglob("run.json"))
    second = pytester.runpytest_subprocess(*args)
    second.assert_outcomes(passed=2)
    assert "measuring the roofline" not in second.stdout.str()
    second.stdout.fnmatch_lines([f"*gpuroof: roofline of * (cpu) measured *cached in {entries[0]}*"])
    # a cached roofline is not measured again: no new run directory, the entry neither rewritten nor added to
    assert sorted((cache / "runs").rglob("run.json")) == runs
    assert (entries[0].read_bytes(), entries[0].stat().st_mtime_ns) == entry
    assert list(cache.glob("roofline-*.json")) == entries


def test_a_failing_assertion_shows_where_the_kernel_stands(pytester, tmp_path, cpu_run):
    """A cache entry made from a real measurement; an impossible threshold fails with the summary."""
    from gpuroof.backends.cpu import CpuBackend
    from gpuroof.pytest_plugin import cache_key
    from gpuroof.results import atomic_write_text, dumps

    pytester.makeini("[pytest]\ngpuroof_backend = cpu\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    settings = Settings(backend="cpu", device=0, dtypes=(), quick=False, max_age_days=7, cache_dir=cache,
                        remeasure=False)
    key = cache_key(settings, "cpu", CpuBackend().device_info())
    atomic_write_text(cache_file(cache, key), dumps({"key": key, "measured_at": time.time(),
                                                     "measured_utc": "now", "meta": cpu_run.meta}))
    pytester.makepyfile(test_slow='''
import numpy as np

def test_copy_reaches_ten_times_the_roof(placement):
    a = np.ones(1 << 20); b = np.empty_like(a)
    p = placement(lambda: np.copyto(b, a), flops=1, bytes=16 << 20, unit="float64")
    assert p.efficiency >= 10, p
''')
    res = pytester.runpytest_subprocess(*_plugin_args(), f"--gpuroof-cache-dir={cache}", "-p", "no:cacheprovider",
                                        "-vv", "--gpuroof-allow-busy")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*memory-bound against float64 and dram: attainable*efficiency*"])
    assert "measuring the roofline" not in res.stdout.str()


def test_cuda_backend_without_a_gpu_skips_with_a_reason(pytester, tmp_path):
    from gpuroof.backends import cuda_available

    if cuda_available():
        pytest.skip("a CUDA device is present: this test is about machines without one")
    pytester.makeini("[pytest]\ngpuroof_backend = cuda\n")
    pytester.makepyfile(test_gpu="def test_needs_roof(roofline):\n    assert roofline\n")
    res = pytester.runpytest_subprocess(*_plugin_args(), f"--gpuroof-cache-dir={tmp_path}", "-rs",
                                        "-p", "no:cacheprovider")
    res.assert_outcomes(skipped=1)
    res.stdout.fnmatch_lines(["*gpuroof: --backend cuda: no CUDA device is usable here*"])


def _settings(tmp_path: Path, **kw) -> Settings:
    base = dict(backend="cpu", device=0, dtypes=("float32",), quick=True, max_age_days=7.0,
                cache_dir=tmp_path, remeasure=False)
    return Settings(**{**base, **kw})


def test_cache_entry_is_stale_when_old_for_another_driver_or_incomplete(tmp_path):
    key = {"cache_version": CACHE_VERSION, "device": "NVIDIA H100", "driver": "550.54", "uuid": "GPU-1"}
    meta = {"status": "complete", "ceilings": {"compute": {"float32": 1e12}, "bandwidth": {"dram": 1e12}}}
    now = 1_000_000.0
    fresh = {"key": key, "measured_at": now - 3600, "meta": meta}
    s = _settings(tmp_path)
    assert measure_reason(s, fresh, key, now) is None
    assert "remeasure" in measure_reason(_settings(tmp_path, remeasure=True), fresh, key, now)
    assert "no cached" in stale_reason(None, key, now, 7)
    assert "days old" in stale_reason({**fresh, "measured_at": now - 8 * 86400}, key, now, 7)
    assert "another device, driver" in stale_reason(fresh, {**key, "driver": "560.28"}, now, 7)
    assert "incomplete" in stale_reason({**fresh, "meta": {"status": "partial"}}, key, now, 7)
    broken = {**meta, "ceilings": {"compute": {"float32": -1e12}, "bandwidth": {"dram": 1e12}}}
    assert "not valid" in stale_reason({**fresh, "meta": broken}, key, now, 7)


def test_cache_file_is_named_by_device_and_driver_and_differs_per_driver(tmp_path):
    a = cache_file(tmp_path, {"device": "NVIDIA H100 80GB HBM3", "driver": "550.54.15"})
    b = cache_file(tmp_path, {"device": "NVIDIA H100 80GB HBM3", "driver": "560.28.03"})
    assert a.name.startswith("roofline-nvidia-h100-80gb-hbm3-550-54-15-") and a != b
