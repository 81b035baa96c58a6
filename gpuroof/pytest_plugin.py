"""pytest plugin: the `roofline` fixture (this device's measured roofline, cached) and `placement`.

    def test_my_kernel_is_near_the_roof(placement):
        p = placement(my_kernel, flops=2 * n, bytes=12 * n, unit="float32")
        assert p.efficiency >= 0.8, p

The roofline is measured once per device and driver and cached (a JSON file per device, driver,
backend and measurement settings); it is measured again when the entry is older than
`gpuroof_max_age_days`, when gpuroof's version changed, or on `--gpuroof-remeasure`. Several
pytest processes (xdist) share one measurement through a lock file. The plugin is registered
through the `pytest11` entry point, so installing gpuroof is enough.

A kernel is timed as `gpuroof.api.measure_kernel` times it: again while other processes are busy
on the machine. When every window stayed busy the test is skipped, with the share of the CPUs
they took as the reason, rather than failed or passed on a contended time; `--gpuroof-allow-busy`
(ini `gpuroof_allow_busy`) judges it anyway.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

#: A cached roofline older than this is measured again (days); ini `gpuroof_max_age_days`.
MAX_AGE_DAYS = 7.0
CACHE_VERSION = 1


def _default_cache_dir() -> Path:
    if os.environ.get("GPUROOF_CACHE_DIR"):
        return Path(os.environ["GPUROOF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpuroof"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("gpuroof", "measured roofline of this device (gpuroof)")
    g.addoption("--gpuroof-remeasure", action="store_true", default=False,
                help="measure the device's roofline again instead of using the cached one")
    g.addoption("--gpuroof-backend", default=None, help="auto (default), cuda or cpu")
    g.addoption("--gpuroof-device", type=int, default=None, help="device index (default 0)")
    g.addoption("--gpuroof-cache-dir", default=None,
                help="where cached rooflines live (default $GPUROOF_CACHE_DIR or ~/.cache/gpuroof)")
    g.addoption("--gpuroof-allow-busy", action="store_true", default=False,
                help="judge a kernel timed while other processes were busy (default: skip its test)")
    parser.addini("gpuroof_backend", "gpuroof backend: auto, cuda or cpu", default="auto")
    parser.addini("gpuroof_device", "gpuroof device index", default="0")
    parser.addini("gpuroof_dtypes", "dtypes to measure, comma-separated (default: all of the backend)",
                  default="")
    parser.addini("gpuroof_quick", "measure with --quick (fewer points, shorter timing)", type="bool",
                  default=False)
    parser.addini("gpuroof_levels", "memory levels to measure, e.g. dram or l1,l2,dram (default: all)",
                  default="")
    parser.addini("gpuroof_matrix", "measure the matrix-unit (GEMM) ceilings", type="bool", default=True)
    parser.addini("gpuroof_max_age_days", "re-measure a cached roofline older than this",
                  default=str(MAX_AGE_DAYS))
    parser.addini("gpuroof_cache_dir", "directory of cached rooflines", default="")
    parser.addini("gpuroof_allow_busy", "judge kernels timed while other processes were busy",
                  type="bool", default=False)


@dataclass(frozen=True)
class Settings:
    backend: str
    device: int
    dtypes: tuple[str, ...]
    quick: bool
    max_age_days: float
    cache_dir: Path
    remeasure: bool
    levels: str | None = None  # None: every level the device has
    matrix: bool = True
    allow_busy: bool = False  # judge a kernel timed on a busy machine instead of skipping its test

    @classmethod
    def from_config(cls, config: pytest.Config) -> "Settings":
        from gpuroof.errors import UsageError

        opt = config.getoption
        cache = opt("--gpuroof-cache-dir") or config.getini("gpuroof_cache_dir")
        cache_dir = Path(cache) if cache else _default_cache_dir()
        if not cache_dir.is_absolute():
            cache_dir = Path(config.rootpath) / cache_dir
        try:
            max_age = float(config.getini("gpuroof_max_age_days"))
            device = opt("--gpuroof-device")
            device = int(config.getini("gpuroof_device")) if device is None else device
        except ValueError as e:
            raise UsageError(f"gpuroof ini option: {e}") from None
        dtypes = tuple(d.strip() for d in str(config.getini("gpuroof_dtypes")).split(",") if d.strip())
        from gpuroof.backends import NAMES

        backend = opt("--gpuroof-backend") or config.getini("gpuroof_backend") or "auto"
        if backend not in NAMES:
            raise UsageError(f"--gpuroof-backend {backend}: unknown backend (allowed: {', '.join(NAMES)})")
        if device < 0:
            raise UsageError(f"--gpuroof-device {device}: a device index (0, 1, ...)")
        if not max_age >= 0 or max_age == float("inf"):
            raise UsageError(f"gpuroof_max_age_days = {max_age:g}: a finite number of days >= 0")
        return cls(backend=backend,
                   device=device, dtypes=dtypes, quick=bool(config.getini("gpuroof_quick")),
                   max_age_days=max_age, cache_dir=cache_dir, remeasure=bool(opt("--gpuroof-remeasure")),
                   levels=str(config.getini("gpuroof_levels")).strip() or None,
                   matrix=bool(config.getini("gpuroof_matrix")),
                   allow_busy=bool(opt("--gpuroof-allow-busy") or config.getini("gpuroof_allow_busy")))


def check_settings(config: pytest.Config) -> Settings:
    """The plugin's settings, every one checked: a typo in an option is a usage error (pytest exit
    4), never a session whose performance tests all skip and pass the gate."""
    from gpuroof.backends import device_count
    from gpuroof.errors import UsageError

    s = Settings.from_config(config)
    explicit = config.getoption("--gpuroof-cache-dir") or config.getini("gpuroof_cache_dir")
    if explicit:
        try:
            s.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--gpuroof-cache-dir {s.cache_dir}: cannot be created "
                             f"({e.strerror or e}); give a writable directory") from None
        if not s.cache_dir.is_dir() or not os.access(s.cache_dir, os.W_OK | os.X_OK):
            raise UsageError(f"--gpuroof-cache-dir {s.cache_dir}: not a writable directory")
    if s.device != 0:  # device 0 exists wherever the backend does; an absent backend skips its tests
        try:
            n = device_count(s.backend)
        except UsageError:
            n = None
        if n is not None and s.device >= n:
            raise UsageError(f"--gpuroof-device {s.device}: this machine has {n} device(s) for the "
                             f"{s.backend} backend (allowed: {'0' if n == 1 else f'0..{n - 1}'})")
    return s


def pytest_configure(config: pytest.Config) -> None:
    from gpuroof.errors import UsageError

    if config.getoption("--help", False) or config.getoption("--version", False):
        return
    try:
        check_settings(config)
    except UsageError as e:
        raise pytest.UsageError(f"gpuroof: {e}") from None


def pytest_report_header(config: pytest.Config) -> str:
    try:
        s = Settings.from_config(config)
    except Exception as e:  # noqa: BLE001 - a header never breaks a session
        return f"gpuroof: bad settings ({e})"
    return (f"gpuroof: backend {s.backend}, device {s.device}, roofline cache {s.cache_dir}"
            + (" (remeasure)" if s.remeasure else ""))


# --------------------------------------------------------------------------- the cache


def cache_key(settings: Settings, backend_name: str, device: dict) -> dict:
    """What a cached roofline is valid for: this device (name, UUID), its driver, the backend,
    the measurement settings and the gpuroof that measured it."""
    from gpuroof import __version__

    return {"cache_version": CACHE_VERSION, "gpuroof": __version__, "backend": backend_name,
            "device": device.get("name"), "uuid": device.get("uuid"),
            "driver": device.get("driver_version"), "dtypes": sorted(settings.dtypes),
            "quick": settings.quick, "levels": settings.levels, "matrix": settings.matrix}


def cache_file(cache_dir: Path, key: dict) -> Path:
    from gpuroof.results import slug

    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return (cache_dir / f"roofline-{slug(str(key['device']))}-{slug(str(key['driver'] or 'nodriver'))}-"
            f"{digest}.json")


def stale_reason(entry: dict | None, key: dict, now: float, max_age_days: float) -> str | None:
    """Why a cache entry cannot be used (None when it can)."""
    if entry is None:
        return "no cached roofline for this device, driver and settings"
    if entry.get("key") != key:
        return "the cached roofline is for another device, driver, gpuroof or settings"
    meta = entry.get("meta") or {}
    if meta.get("status") != "complete" or not (meta.get("ceilings") or {}).get("compute"):
        return "the cached roofline is incomplete"
    from gpuroof.errors import UsageError
    from gpuroof.roofline import Roofline

    try:
        Roofline.from_dict(meta["ceilings"])
    except UsageError as e:
        return f"the cached roofline is not valid ({e})"
    age_days = (now - float(entry.get("measured_at", 0))) / 86400
    if age_days > max_age_days:
        return f"the cached roofline is {age_days:.1f} days old (max {max_age_days:g})"
    return None


def measure_reason(settings: Settings, entry: dict | None, key: dict, now: float) -> str | None:
    """Why the roofline must be measured now (None: the cached one is used)."""
    if settings.remeasure:
        return "--gpuroof-remeasure"
    return stale_reason(entry, key, now, settings.max_age_days)


def read_entry(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return entry if isinstance(entry, dict) else None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (several pytest processes measure one device once)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the rename keeps the cache consistent anyway
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class DeviceRoofline:
    """The measured roofline of the device the tests run on, and where it came from."""

    backend_name: str
    device_index: int
    meta: dict  # the run.json of the measurement
    cache_path: Path
    measured_utc: str
    measured_now: bool
    roofline: Any = field(repr=False)  # gpuroof.roofline.Roofline

    @property
    def device(self) -> str:
        return (self.meta.get("device") or {}).get("name", "?")

    @property
    def compute(self) -> dict[str, float]:
        return dict(self.roofline.compute)

    @property
    def bandwidth(self) -> dict[str, float]:
        return dict(self.roofline.bandwidth)

    def attainable(self, intensity: float, unit: str, level: str = "dram") -> float:
        return self.roofline.attainable(intensity, unit, level)

    def ridge(self, unit: str, level: str = "dram") -> float:
        return self.roofline.ridge(unit, level)

    def place(self, flops: float, nbytes: float, time_s: float, unit: str, level: str = "dram") -> Any:
        from gpuroof.roofline import place

        return place(self.roofline, flops, nbytes, time_s, unit, level)


def load_or_measure(settings: Settings, backend: Any, say: Callable[[str], None] = lambda m: None) -> DeviceRoofline:
    """The cached roofline of `backend`'s device, measured (and cached) first when stale."""
    from gpuroof.measure import measure
    from gpuroof.results import atomic_write_text, dumps, slug, utc_stamp
    from gpuroof.roofline import Roofline

    info = backend.device_info()
    key = cache_key(settings, backend.name, info)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_file(settings.cache_dir, key)
    with _locked(settings.cache_dir / ".lock"):
        entry = read_entry(path)
        why = measure_reason(settings, entry, key, time.time())
        measured = False
        if why:
            say(f"gpuroof: measuring the roofline of {info.get('name')} ({why})")
            # $GPUROOF_RESULTS, when set, is where every gpuroof run goes (CLI, API, plugin); else the cache keeps it
            from gpuroof.results import RESULTS_ENV, results_root

            runs = results_root() if os.environ.get(RESULTS_ENV) else settings.cache_dir / "runs"
            out = runs / slug(str(info.get("name"))) / utc_stamp()
            n = 1
            while out.exists():
                out = out.with_name(f"{utc_stamp()}-{n}")
                n += 1
            out.parent.mkdir(parents=True, exist_ok=True)  # the cache's own layout; --out's rule is the CLI's
            res = measure(backend.name, settings.device, list(settings.dtypes) or None, settings.quick,
                          out=str(out), argv=["pytest", "--gpuroof"], progress=False,
                          levels=settings.levels, matrix=settings.matrix)
            entry = {"key": key, "measured_at": time.time(),
                     "measured_utc": datetime.now(timezone.utc).isoformat(), "run_dir": str(res.run_dir),
                     "meta": res.meta}
            atomic_write_text(path, dumps(entry, indent=1) + "\n")
            entry = json.loads(path.read_text(encoding="utf-8"))  # what later sessions will read
            measured = True
    meta = entry["meta"]
    return DeviceRoofline(backend_name=backend.name, device_index=settings.device, meta=meta,
                          cache_path=path, measured_utc=entry.get("measured_utc", "?"),
                          measured_now=measured, roofline=Roofline.from_dict(meta["ceilings"]))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def gpuroof_backend(pytestconfig: pytest.Config) -> Iterator[Any]:
    """The backend the roofline is measured on and user kernels are timed with (one per session)."""
    from gpuroof.backends import get_backend
    from gpuroof.errors import UsageError

    s = Settings.from_config(pytestconfig)
    try:
        backend = get_backend(s.backend, s.device)
    except UsageError as e:
        pytest.skip(f"gpuroof: {e}")
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="session")
def roofline(pytestconfig: pytest.Config, gpuroof_backend: Any) -> DeviceRoofline:
    """This device's measured roofline (cached per device and driver; see the module doc)."""
    s = Settings.from_config(pytestconfig)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def say(msg: str) -> None:
        """On the terminal even while output is captured: a measurement takes a while."""
        if reporter is None:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(msg)
        else:
            reporter.write_line(msg)

    r = load_or_measure(s, gpuroof_backend, say)
    say(f"gpuroof: roofline of {r.device} ({r.backend_name}) measured {r.measured_utc}, cached in "
        f"{r.cache_path}")
    q = r.meta.get("quality")
    if isinstance(q, dict) and q.get("ok") is False:  # the one cached roofline: said, not hidden
        say(f"gpuroof: WARNING: this roofline's quality is not ok ({'; '.join(map(str, q.get('reasons') or []))}); "
            "measure it again on a quiet machine with --gpuroof-remeasure")
    return r


class Placed:
    """A user kernel's placement: the fields of `gpuroof.api.KernelResult` and of its placement
    (`efficiency`, `bound`, `attainable_flops`, `above_roof`, ...) as attributes; its repr is the
    summary, so a failing assertion says where the kernel stands."""

    def __init__(self, result: Any):
        self.result = result

    def __getattr__(self, name: str) -> Any:
        result = self.__dict__["result"]
        if name in result.placement:
            return result.placement[name]
        return getattr(result, name)

    def __repr__(self) -> str:
        return self.result.summary()


@pytest.fixture
def placement(pytestconfig: pytest.Config, roofline: DeviceRoofline, gpuroof_backend: Any) -> Callable[..., Placed]:
    """`placement(fn, flops=..., bytes=..., unit="float32")`: time `fn` with the backend's timer
    and place it on the measured roofline (`gpuroof.api.measure_kernel` with these ceilings). A
    kernel timed only in busy windows skips the test, naming why (see the module doc)."""
    from gpuroof.api import measure_kernel

    allow_busy = Settings.from_config(pytestconfig).allow_busy

    def place(fn: Callable[[], Any], *, flops: float, bytes: float, unit: str = "float32",
              **kw: Any) -> Placed:
        name = kw.pop("name", getattr(fn, "__name__", "kernel"))
        res = measure_kernel(fn, flops=flops, bytes=bytes, unit=unit, name=name, backend=gpuroof_backend,
                             ceilings=roofline.roofline, **kw)
        if res.busy and not allow_busy:
            pytest.skip(f"gpuroof: not judged: {'; '.join(res.quality['reasons'])}, in each of "
                        f"{res.quality.get('attempts')} window(s) (--gpuroof-allow-busy to judge it)")
        return Placed(res)

    return place
