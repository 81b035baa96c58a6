"""Run directories: run.json (with schema_version) and long-form CSVs, written atomically, loaded safely.

Every file a run holds has one schema here (run.json: pydantic models; CSVs: column kinds), and every
reader goes through `load_run` and `Run.table`: a file that does not match is refused at the door
with one line naming the file, the field and what is allowed. Unknown extra keys and columns are
accepted, so fields added by a newer gpuroof do not break an older reader.
"""
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
from typing import Annotated, Any, Iterator, Literal, Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gpuroof.defaults import RESULTS_ENV  # noqa: F401 - results.RESULTS_ENV, read by callers
from gpuroof.errors import UsageError
from gpuroof.roofline import Roofline, known

SCHEMA_VERSION = 1
KIND = "gpuroof-run"
#: The reason a partial run.json carries until the process that writes it finishes or is stopped:
#: a run killed with SIGKILL (or by a power cut) keeps this one, so it never reads as unexplained.
UNFINISHED = "not finished: the process writing it is still running or was killed (e.g. SIGKILL, OOM)"


# --------------------------------------------------------------------------- run.json schema

#: A measured rate: a finite number > 0 (JSON null where a ceiling could not be measured).
Rate = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
#: A theoretical peak or a ratio: a finite number >= 0.
NonNegative = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Text = Annotated[str, Field(strict=True, min_length=1)]


class _Open(BaseModel):
    """Unknown keys are kept: a newer gpuroof may add fields an older one does not know."""

    model_config = ConfigDict(extra="allow")


class CeilingsModel(_Open):
    bandwidth: dict[str, Optional[Rate]]  # B/s per memory level
    compute: dict[str, Optional[Rate]]  # FLOP/s per compute unit


class PeaksModel(_Open):
    bandwidth: dict[str, Optional[NonNegative]] = {}
    compute: dict[str, Optional[NonNegative]] = {}


class DeviceModel(_Open):
    name: Text
    #: Where telemetry's power_w came from (nvml.POWER_SOURCES); absent in runs before it was recorded.
    power_source: Optional[Annotated[str, Field(strict=True)]] = None
    #: CUDA: per kernel, blocks per SM and where that number came from (backends.cuda.launch.blocks_per_sm).
    occupancy: Optional[dict[str, dict[str, Any]]] = None


class QualityModel(_Open):
    ok: bool = Field(strict=True)
    reasons: list[Annotated[str, Field(strict=True)]] = []


class WorkloadsModel(_Open):
    cases: int = Field(default=0, strict=True, ge=0)
    valid: int = Field(default=0, strict=True, ge=0)


class RunModel(_Open):
    """run.json. A complete run has ceilings with at least one compute and one bandwidth value."""

    schema_version: int = Field(strict=True)
    kind: Literal["gpuroof-run"]
    status: Literal["partial", "complete"]
    status_reason: Optional[Annotated[str, Field(strict=True)]] = None
    created_utc: Optional[Annotated[str, Field(strict=True)]] = None
    command: Optional[list[Annotated[str, Field(strict=True)]]] = None
    backend: Text
    device: DeviceModel
    ceilings: Optional[CeilingsModel]
    theoretical: Optional[PeaksModel] = None
    theoretical_at_max_clock: Optional[PeaksModel] = None
    ratios: Optional[PeaksModel] = None
    ridge_points: Optional[dict[str, Optional[NonNegative]]] = None
    median_clocks: Optional[dict[str, Optional[Finite]]] = None
    quality: Optional[QualityModel] = None
    workloads: Optional[WorkloadsModel] = None

    @model_validator(mode="after")
    def _complete_has_ceilings(self) -> "RunModel":
        if self.status == "complete":
            cei = self.ceilings
            for kind in ("compute", "bandwidth"):
                if cei is None or not any(v is not None for v in getattr(cei, kind).values()):
                    raise ValueError(f"field ceilings.{kind}: a complete run needs at least one "
                                     f"measured {kind} ceiling")
        return self


def _pydantic_line(e: ValidationError) -> str:
    """The first error of a validation as 'field x.y = value: what is allowed' (one line)."""
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = re.sub(r" or instance of \w+", "", err["msg"].replace("Value error, ", ""))
    msg = msg.replace("Input should be", "must be")
    more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
    if err["type"] == "missing":
        return f"field {loc}: missing (required){more}"
    value = repr(err.get("input"))
    value = value if len(value) <= 60 else value[:57] + "..."
    if err["loc"] and err["type"] not in ("value_error",):
        return f"field {loc} = {value}: {msg}{more}"
    return f"{loc}: {msg}{more}" if err["loc"] else f"{msg}{more}"


def check_meta(meta: Any, f: Path | str) -> dict:
    """`meta` (a parsed run.json) if it matches the schema; UsageError naming `f`, the field and
    what is allowed otherwise. A schema_version newer than this gpuroof's is refused with both."""
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise UsageError(f"{f}: not a gpuroof run.json (kind is not {KIND!r})")
    version = meta.get("schema_version")
    if "schema_version" not in meta:
        raise UsageError(f"{f}: field schema_version: missing (required; this gpuroof reads {SCHEMA_VERSION})")
    if type(version) is not int:
        raise UsageError(f"{f}: field schema_version = {version!r}: not an integer "
                         f"(this gpuroof reads schema_version {SCHEMA_VERSION})")
    if version != SCHEMA_VERSION:
        age = "newer" if version > SCHEMA_VERSION else "older"
        hint = "; upgrade gpuroof to read it" if age == "newer" else ""
        raise UsageError(f"{f}: schema_version {version} ({age}; this gpuroof reads {SCHEMA_VERSION}{hint})")
    try:
        RunModel.model_validate(meta)
    except ValidationError as e:
        raise UsageError(f"{f}: {_pydantic_line(e)}") from None
    return meta


# --------------------------------------------------------------------------- CSV schemas

#: Column kinds: "str" text, "int"/"num" numbers, "time" a finite duration > 0 in seconds,
#: "bool" True/False; a trailing "?" allows empty cells. Columns not listed are not checked.
#: Each timed window's columns (quality.Window.columns), where a table has them.
WINDOW = {"other_processes_share": "num?", "steal_share": "num?", "disturbed": "bool?", "attempts": "int?"}
TABLES: dict[str, dict[str, str]] = {
    "points": {"dtype": "str", "variant": "str", "fmas_per_element": "int", "flops": "num",
               "bytes": "num", "intensity_flop_per_byte": "num", "rep": "int", "time_s": "time",
               "valid": "bool", "sm_clock_mhz": "num?", "throttled": "bool?", **WINDOW},
    "hierarchy": {"working_set_bytes": "num", "bytes": "num?", "rep": "int?", "time_s": "time?",
                  "bandwidth_Bps": "num?", "valid": "bool?", "throttled": "bool?", **WINDOW},
    "matrix": {"unit": "str", "dtype": "str", "n": "int", "rep": "int?", "time_s": "time?",
               "flops": "num?", "bytes": "num?", "valid": "bool", "throttled": "bool?",
               "failed": "bool?", "error": "str?", **WINDOW},  # a failed unit's size: failed, its error, no time
    "shared": {"rep": "int", "time_s": "time", "bytes": "num", "valid": "bool"},
    "workloads": {"name": "str", "case": "str", "dtype": "str", "flops": "num?", "bytes": "num?",
                  "time_s": "time?", "efficiency": "num?", "attainable_flops": "num?",
                  "above_roof": "bool?", "valid": "bool?", **WINDOW},
    "workload_samples": {"name": "str", "case": "str", "dtype": "str", "time_s": "time"},
    "telemetry": {"t_s": "num", "sm_clock_mhz": "num?", "mem_clock_mhz": "num?", "power_w": "num?",
                  "power_source": "str?", "temperature_c": "num?"},
}
_ALLOWED = {"str": "text", "int": "an integer", "num": "a finite number",
            "time": "a finite number of seconds > 0", "bool": "True or False"}
_TRUE, _FALSE = {"true", "1", "1.0"}, {"false", "0", "0.0"}


def _bad_cells(col: pd.Series, kind: str) -> pd.Series:
    """A boolean mask of the cells of `col` that are not of `kind` (empty cells counted separately)."""
    present = col.notna()
    if kind == "str":
        return pd.Series(False, index=col.index)
    if kind == "bool":
        if col.dtype == bool:
            return pd.Series(False, index=col.index)
        text = col.astype(str).str.strip().str.lower()
        return present & ~text.isin(_TRUE | _FALSE)
    num = pd.to_numeric(col, errors="coerce")
    bad = present & (num.isna() | ~np.isfinite(num.fillna(0)))
    if kind == "int":
        bad |= present & num.notna() & (num != num.round())
    if kind == "time":
        bad |= present & num.notna() & ~(num > 0)
    return bad


def check_table(df: pd.DataFrame, name: str, f: Path | str) -> pd.DataFrame:
    """`df` (read from `f`) if it matches the schema of `name`.csv; UsageError naming the file,
    the column, the first bad row and what is allowed otherwise."""
    schema = TABLES.get(name)
    if schema is None or (df.empty and len(df.columns) == 0):  # a table written with no rows at all
        return df
    missing = [c for c, k in schema.items() if c not in df.columns and not k.endswith("?")]
    if missing:
        raise UsageError(f"{f}: lacks column(s) {', '.join(missing)} (a {name}.csv has "
                         f"{', '.join(c for c, k in schema.items() if not k.endswith('?'))})")
    for c, kind in schema.items():
        if c not in df.columns:
            continue
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        col = df[c]
        if not optional and col.isna().any():
            i = int(np.flatnonzero(col.isna().to_numpy())[0])
            raise UsageError(f"{f}: column {c}, row {i + 1}: empty (allowed: {_ALLOWED[kind]})")
        bad = _bad_cells(col, kind)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            cell = col.iloc[i]
            value = repr(cell.item() if isinstance(cell, np.generic) else cell)
            raise UsageError(f"{f}: column {c}, row {i + 1}: {value[:40]} (allowed: {_ALLOWED[kind]}"
                             f"{', or empty' if optional else ''})")
    return df


def read_table(f: Path, name: str) -> pd.DataFrame:
    """Read `f` as `name`.csv and check it: unreadable, cut short (no final newline: a writer
    stopped mid-row) or not matching the schema is a UsageError with one line."""
    try:
        raw = f.read_bytes()
    except OSError as e:
        raise UsageError(f"{f}: cannot read ({e.strerror or e})") from None
    if raw and not raw.endswith(b"\n"):
        raise UsageError(f"{f}: cut short (the last row has no line end; the file was not written "
                         "to the end)")
    if not raw.strip():
        return pd.DataFrame()
    try:
        df = pd.read_csv(f)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        msg = " ".join(str(e).split())
        raise UsageError(f"{f}: not a readable CSV ({msg[:120]})") from None
    return check_table(df, name, f)


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


#: Where run directories go when no --out is given: --results-dir, else this variable, else ./results.
DEFAULT_RESULTS = "results"


def results_root() -> Path:
    """The one rule for the CLI, the API and the pytest plugin: $GPUROOF_RESULTS, else ./results."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


@contextmanager
def results_dir(path: str | None) -> Iterator[Path]:
    """Within the block, results_root() is `path` (when given); child processes (one per GPU) inherit it."""
    if not path:
        yield results_root()
        return
    old = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(path)
    try:
        yield results_root()
    finally:
        if old is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = old


def check_out_dir(out: str | Path, flag: str = "--out") -> Path:
    """The one rule of every --out that names a directory: an existing directory, or a new one made
    inside a directory that exists (a missing parent is refused before any work, nothing made)."""
    path = Path(out)
    if not path.exists() and not path.parent.exists():
        raise UsageError(f"{flag} {path}: no such directory {path.parent} (--out makes one new directory, "
                         "inside one that exists)")
    return path


def make_out_dir(out: str | Path, flag: str = "--out") -> Path:
    """`out` made by the rule of `check_out_dir`; refused if unwritable."""
    path = check_out_dir(out, flag)
    try:
        path.mkdir(exist_ok=True)
    except OSError as e:
        raise UsageError(f"{flag} {path}: not a writable directory ({e.strerror or e})") from None
    return path


def fresh_run_dir(device_name: str, suffix: str = "") -> Path:
    """A path no run holds yet: <results>/<device-slug>/<UTC timestamp><suffix>, numbered when taken
    (nothing is made here)."""
    base = results_root() / slug(device_name)
    path = base / f"{utc_stamp()}{suffix}"
    i = 1
    while (path / "run.json").exists():
        path = base / f"{utc_stamp()}{suffix}-{i}"
        i += 1
    return path


def make_run_dir(out: str | Path | None, device_name: str, *, chosen: bool = False) -> Path:
    """The run directory, made: `out` by the rule of `check_out_dir`, or with `chosen` a path gpuroof
    chose itself (fresh_run_dir; the user's --out already checked), its parents made; with no `out` a
    fresh one under the results directory. Refused if unwritable or, for a user's --out, if a run is
    already there."""
    given = bool(out) and not chosen
    path = check_out_dir(out) if given else Path(out) if out else fresh_run_dir(device_name)
    try:
        path.mkdir(parents=not given, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {path}: not a writable directory ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):  # a probe that leaves no file behind, even when killed
        raise UsageError(f"--out {path}: not a writable directory (permission denied or read-only)")
    if (path / "run.json").exists() and given:
        raise UsageError(f"--out {path}: already holds a run (run.json); choose an empty directory")
    return path


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """`path` if a file can be written there: refused up front (before any work) when it names a
    directory, its directory is missing or not writable, or it exists and cannot be replaced."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {p}: is a directory (allowed: a file name in an existing directory)")
    if not p.parent.is_dir():
        raise UsageError(f"{flag} {p}: directory {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{flag} {p}: not writable (permission denied or read-only)")
    return p


@dataclass
class Run:
    path: Path
    meta: dict

    def table(self, name: str) -> pd.DataFrame:
        f = self.path / f"{name}.csv"
        if not f.exists():
            raise UsageError(f"{self.path}: run has no {name}.csv")
        return read_table(f, name)

    @property
    def run_dir(self) -> Path:  # the name MeasureResult uses, so either can be passed around
        return self.path

    @property
    def device_name(self) -> str:
        return self.meta["device"].get("name", "?")

    @property
    def device(self) -> dict:
        """The device as run.json records it (name, index, and what its peaks need)."""
        return self.meta["device"]

    @property
    def ceilings(self) -> Roofline | None:
        """The measured ceilings as the model reads them (roofline.known: a null or non-finite entry,
        a unit that failed, left out); None in a run that has none (not finished)."""
        c = self.meta.get("ceilings")
        return known(c) if c else None

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "?"))

    @property
    def measured(self) -> bool:
        """Complete, with measured ceilings: a run others can be placed on."""
        return self.status == "complete" and bool(self.meta.get("ceilings"))

    @property
    def backend(self) -> str | None:
        return self.meta.get("backend")

    @property
    def quality(self) -> dict:
        """Whether the numbers are the hardware's ({'ok', 'reasons', 'warnings'}); {} where not judged."""
        q = self.meta.get("quality")
        return q if isinstance(q, dict) else {}


def read_json(f: Path) -> Any:
    """The JSON document in `f`; UsageError with one line when it cannot be read or parsed."""
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{f}: corrupt {f.name} ({e})") from None
    except OSError as e:
        raise UsageError(f"{f}: cannot read ({e.strerror or e})") from None


def load_run(path: str | Path) -> Run:
    """Load and validate a run directory (or its run.json); UsageError with one clear line otherwise."""
    p = Path(path)
    f = p / "run.json" if p.is_dir() else p
    if not f.exists():
        raise UsageError(f"{path}: not a gpuroof run (no run.json)")
    return Run(path=f.parent, meta=check_meta(read_json(f), f))


def write_run(path: Path, meta: dict, tables: dict[str, pd.DataFrame]) -> None:
    """Tables first, run.json last: a run.json that says 'complete' always has its tables beside it.

    A partial run.json always carries a status_reason (UNFINISHED until the writer says why it
    stopped); a complete one never does. The last partial run this process wrote is remembered,
    so that an interrupted command can say which run it left partial (and not claim one it did not).
    """
    meta = dict(meta)
    if meta.get("status") == "partial":
        meta.setdefault("status_reason", UNFINISHED)
        PARTIAL.add(Path(path).resolve())
    else:
        meta.pop("status_reason", None)
        PARTIAL.discard(Path(path).resolve())
    for name, df in tables.items():
        atomic_write_csv(path / f"{name}.csv", df)
    atomic_write_text(path / "run.json", dumps(meta, indent=2) + "\n")


#: Run directories this process wrote as partial and has not completed (see `write_run`).
PARTIAL: set[Path] = set()


def mark_interrupted() -> list[Path]:
    """After Ctrl-C or SIGTERM: every run this process left partial says 'interrupted' (instead of
    UNFINISHED) unless its writer already gave a reason. Returns those runs."""
    for path in sorted(PARTIAL):
        try:
            meta = json.loads((path / "run.json").read_text(encoding="utf-8"))
            if meta.get("status") == "partial" and meta.get("status_reason") in (None, UNFINISHED):
                meta["status_reason"] = "interrupted"
                atomic_write_text(path / "run.json", dumps(meta, indent=2) + "\n")
        except (OSError, ValueError):
            pass  # the run keeps its UNFINISHED reason
    return sorted(PARTIAL)
