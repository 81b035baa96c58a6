"""`gpuroof merge`: every run below some directories as one long-form table (CSV or Parquet).

One row per ceiling and one per workload case, each carrying who measured it: host, device, UUID,
driver, library versions, timestamps and the batch scheduler's ids. A directory written by many
machines (a Slurm array, a Kubernetes Indexed Job) holds runs of every state: complete ones, runs
still being written (`partial`), runs of an older or newer schema and corrupt files. A merge reads
what it can and lists the rest with the reason; one bad run never aborts it.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from gpuroof.errors import UsageError
from gpuroof.results import Run, atomic_path, atomic_write_csv, check_meta, check_out_file

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

#: Columns every row carries: who, where and when it was measured.
RUN_COLUMNS = (
    "run_dir", "schema_version", "status", "created_utc", "backend", "hostname", "device",
    "device_index", "device_uuid", "pci_bus_id", "compute_capability", "driver_version",
    "cuda_driver_version", "cuda_runtime_version", "gpuroof_version", "python_version",
    "numpy_version", "numba_version", "cupy_version", "slurm_job_id", "slurm_array_task_id",
    "job_completion_index", "cuda_visible_devices", "quick",
)

#: Ceiling rows: what was measured, what the data sheet says at the measured clock and at the max.
CEILING_COLUMNS = ("ceiling_flops", "ceiling_Bps", "theoretical_flops", "theoretical_Bps",
                   "theoretical_max_clock_flops", "theoretical_max_clock_Bps", "ratio",
                   "ridge_flop_per_byte", "sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c")


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class Found:
    """The runs found below some directories, and the files that looked like runs but were not read."""

    runs: list[Run] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def run_files(dirs: Iterable[str | Path]) -> list[Path]:
    """Every run.json at or below each directory, in a stable order, each once."""
    seen: set[Path] = set()
    out: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.is_file() and p.name == "run.json":
            candidates = [p]
        elif p.is_dir():
            candidates = sorted(p.rglob("run.json"))
        else:
            raise UsageError(f"{d}: no such directory")
        for f in candidates:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def read_run(f: Path) -> Run | Skipped:
    """The run whose run.json is `f`, or why it cannot be read (corrupt, foreign, other schema,
    a field that does not match the schema)."""
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Skipped(f.parent, f"corrupt run.json ({type(e).__name__}: {e})")
    try:
        check_meta(meta, "run.json")
    except UsageError as e:
        return Skipped(f.parent, str(e).removeprefix("run.json: "))
    return Run(path=f.parent, meta=meta)


def find_runs(dirs: Iterable[str | Path]) -> Found:
    """Read every run below `dirs`; unreadable ones are listed in `skipped`, never raised."""
    found = Found()
    for f in run_files(dirs):
        r = read_run(f)
        (found.skipped if isinstance(r, Skipped) else found.runs).append(r)
    return found


# --------------------------------------------------------------------------- rows of one run


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def run_columns(run: Run) -> dict:
    meta = run.meta
    dev, host, ver = meta.get("device") or {}, meta.get("host") or {}, meta.get("versions") or {}
    env = host.get("env") or {}
    return {
        "run_dir": str(run.path),
        "schema_version": meta.get("schema_version"),
        "status": meta.get("status"),
        "created_utc": meta.get("created_utc"),
        "backend": meta.get("backend"),
        "hostname": host.get("hostname"),
        "device": dev.get("name"),
        "device_index": dev.get("index"),
        "device_uuid": dev.get("uuid"),
        "pci_bus_id": dev.get("pci_bus_id"),
        "compute_capability": dev.get("compute_capability"),
        "driver_version": dev.get("driver_version"),
        "cuda_driver_version": dev.get("cuda_driver_version"),
        "cuda_runtime_version": dev.get("cuda_runtime_version"),
        "gpuroof_version": ver.get("gpuroof"),
        "python_version": ver.get("python"),
        "numpy_version": ver.get("numpy"),
        "numba_version": ver.get("numba"),
        "cupy_version": dev.get("cupy_version") or ver.get("cupy-cuda12x") or ver.get("cupy-cuda13x")
        or ver.get("cupy"),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "job_completion_index": env.get("JOB_COMPLETION_INDEX"),
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
        "quick": _get(meta, "settings", "quick"),
    }


def ceiling_rows_v1(run: Run) -> list[dict]:
    """One row per measured ceiling of a schema-1 run (none for a run that did not finish)."""
    meta = run.meta
    cei = meta.get("ceilings") or {}
    clocks = meta.get("median_clocks") or {}
    rows = []
    for kind, unit_col, value_col, suffix in (("bandwidth", "level", "ceiling_Bps", "Bps"),
                                              ("compute", "unit", "ceiling_flops", "flops")):
        for name, value in (cei.get(kind) or {}).items():
            rows.append({
                "record": "ceiling", "kind": kind, unit_col: name, value_col: value,
                f"theoretical_{suffix}": _get(meta, "theoretical", kind, name),
                f"theoretical_max_clock_{suffix}": _get(meta, "theoretical_at_max_clock", kind, name),
                "ratio": _get(meta, "ratios", kind, name),
                "ridge_flop_per_byte": _get(meta, "ridge_points", name) if kind == "compute" else None,
                **{k: clocks.get(k) for k in ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c")},
            })
    return rows


def workload_rows_v1(run: Run) -> tuple[list[dict], str | None]:
    """One row per workload case (workloads.csv), the workload's name in column `workload`."""
    f = run.path / "workloads.csv"
    if not f.exists():
        return [], None
    try:
        df = run.table("workloads")
    except UsageError as e:
        return [], f"workloads.csv left out ({str(e).removeprefix(str(f) + ': ')}); its ceilings were kept"
    df = df.rename(columns={"name": "workload"})
    df.insert(0, "kind", "workload")
    df.insert(0, "record", "workload")
    return df.to_dict("records"), None


#: schema_version -> reader(run) -> (rows, note). A future schema adds its reader here; a version
#: without one is listed as skipped, with the versions this gpuroof reads.
READERS: dict[int, Callable[[Run], tuple[list[dict], str | None]]] = {}


def _rows_v1(run: Run) -> tuple[list[dict], str | None]:
    work, note = workload_rows_v1(run)
    return ceiling_rows_v1(run) + work, note


READERS[1] = _rows_v1


@dataclass
class Merged:
    table: pd.DataFrame
    runs: list[Path]
    skipped: list[Skipped]
    notes: list[Skipped]


def merge(dirs: Iterable[str | Path]) -> Merged:
    """All runs below `dirs` as one long-form DataFrame; UsageError when there is nothing to merge."""
    dirs = list(dirs)
    found = find_runs(dirs)
    frames, merged, notes = [], [], []
    skipped = list(found.skipped)
    for run in found.runs:
        try:
            rows, note = READERS[run.meta["schema_version"]](run)
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # a run.json with a broken field
            skipped.append(Skipped(run.path, f"unreadable field in run.json ({type(e).__name__}: {e})"))
            continue
        if note:
            notes.append(Skipped(run.path, note))
        if not rows:
            skipped.append(Skipped(run.path, f"status {run.meta.get('status')!r}: no ceilings and no "
                                             "workloads yet"))
            continue
        df = pd.DataFrame(rows)
        for k, v in reversed(run_columns(run).items()):
            df.insert(0, k, v)
        frames.append(df)
        merged.append(run.path)
    if not frames:
        what = "no gpuroof run" if not found.runs and not found.skipped else "no readable run"
        detail = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
        raise UsageError(f"{what} found below {', '.join(str(d) for d in dirs)}"
                         + (f" ({detail})" if detail else ""))
    table = pd.concat(frames, ignore_index=True, sort=False)
    order = [c for c in (*RUN_COLUMNS, "record", "kind", "level", "unit") if c in table.columns]
    table = table[order + [c for c in table.columns if c not in order]]
    return Merged(table=table, runs=merged, skipped=skipped, notes=notes)


# --------------------------------------------------------------------------- writing


def out_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--out {path}: unknown format {suffix or '(no suffix)'!r} "
                         f"(allowed: {', '.join(FORMATS)})")
    fmt = FORMATS[suffix]
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError(f"--out {path}: writing Parquet needs pyarrow (pip install pyarrow), "
                             "or write .csv") from None
    return fmt


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns that mix types (True and NaN, numbers and text) as one Arrow type each."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype != object:
            continue
        kinds = {type(v) for v in out[c].dropna()}
        if kinds <= {bool}:
            out[c] = out[c].astype("boolean")
        elif not kinds <= {str}:
            out[c] = out[c].map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    return out


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """CSV or Parquet by the suffix, written beside the target and renamed (never half a file)."""
    path = Path(path)
    fmt = out_format(path)
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: directory {path.parent} does not exist")
    if fmt == "csv":
        atomic_write_csv(path, df)
        return
    with atomic_path(path) as tmp:
        _parquet_safe(df).to_parquet(tmp, index=False)


# --------------------------------------------------------------------------- command line
