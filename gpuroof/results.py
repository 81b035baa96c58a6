"""Run directories: run.json (with schema_version) and long-form CSVs, written atomically, loaded safely."""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from gpuroof.errors import UsageError

SCHEMA_VERSION = 1
KIND = "gpuroof-run"
REQUIRED = ("schema_version", "kind", "status", "backend", "device", "ceilings")


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python; values are never rounded."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(_clean(obj), allow_nan=False, **kw)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` to write into; on success it is made readable (mkstemp makes
    0600) and renamed over `path`, on any failure removed: never a half-written file at `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a synced temporary file and a rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def make_run_dir(out: str | Path | None, device_name: str) -> Path:
    """`out` itself when given, else <results>/<device-slug>/<UTC timestamp>/; refused if unwritable."""
    from gpuroof.output import results_root

    path = Path(out) if out else results_root() / slug(device_name) / utc_stamp()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", delete=True)
        probe.close()
    except OSError as e:
        raise UsageError(f"--out {path}: not a writable directory ({e.strerror or e})") from None
    if (path / "run.json").exists() and out:
        raise UsageError(f"--out {path}: already holds a run (run.json); choose an empty directory")
    return path


@dataclass
class Run:
    path: Path
    meta: dict

    def table(self, name: str) -> pd.DataFrame:
        f = self.path / f"{name}.csv"
        if not f.exists():
            raise UsageError(f"{self.path}: run has no {name}.csv")
        try:
            return pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise UsageError(f"{f}: not a readable CSV ({e})") from None

    @property
    def run_dir(self) -> Path:  # the name MeasureResult uses, so either can be passed around
        return self.path

    @property
    def device_name(self) -> str:
        return self.meta["device"].get("name", "?")


def load_run(path: str | Path) -> Run:
    """Load and validate a run directory (or its run.json); UsageError with one clear line otherwise."""
    p = Path(path)
    f = p / "run.json" if p.is_dir() else p
    if not f.exists():
        raise UsageError(f"{path}: not a gpuroof run (no run.json)")
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{f}: corrupt run.json ({e})") from None
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise UsageError(f"{f}: not a gpuroof run.json (kind is not {KIND!r})")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise UsageError(f"{f}: run.json lacks {', '.join(missing)}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise UsageError(f"{f}: schema_version {meta['schema_version']} (this gpuroof reads {SCHEMA_VERSION})")
    return Run(path=f.parent, meta=meta)


def write_run(path: Path, meta: dict, tables: dict[str, pd.DataFrame]) -> None:
    """Tables first, run.json last: a run.json that says 'complete' always has its tables beside it."""
    for name, df in tables.items():
        atomic_write_csv(path / f"{name}.csv", df)
    atomic_write_text(path / "run.json", dumps(meta, indent=2) + "\n")
