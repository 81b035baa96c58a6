"""`gpuroof predict`: a saved model profile carried to other measured rooflines, op by op and whole.

The model (stated in profile-prediction documents as MODEL and in docs/prediction.md): each op that
the profile placed keeps its source efficiency. With F its FLOPs, B its compulsory bytes, P[u] the
compute ceiling of the unit it was placed against and BW[l] the bandwidth of the level it streams
from (the cache level the profile found it above the DRAM roof from, else DRAM),

    roof(R)   = max(F / P_R[u], B / BW_R[l])           the pure roofline time on roofline R
    eff_src   = roof(src) / measured_src                  its efficiency on the source
    predicted = roof(tgt) / eff_src = measured_src * roof(tgt) / roof(src)

so a memory-bound op scales with the bandwidth ratio of its level, a compute-bound op with the
compute-roof ratio of its unit, an op at the source ridge with the larger of the two time ratios,
and an op whose bound side changes with the target's roof of the other side. Why efficiency and
not the lost time is carried: the time an op loses against its roof on a CPU is mostly the same
loops running short of the roof (a GEMM's packing, an elementwise op's partial vectors), which
scales with the machine as the roof does.

What has no roofline time is carried over as measured, never hidden in a ratio: ops with no
FLOPs and no bytes (views: dispatch overhead), ops the profile could not time or place, ops whose
unit has no ceiling on the target, and the host's share of the profiled time (the profiled
repetition's top-level time that no op was matched to). The whole model's predicted time per
repetition is then the profile's own `totals.profiled_time_s` with every predicted op's measured
time replaced by its prediction: onto the source's own roofline it gives back profiled_time_s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuroof.errors import UsageError
from gpuroof.results import Run, atomic_write_bytes, atomic_write_csv, load_run, read_json, slug
from gpuroof.roofline import Roofline, known

MODEL = ("per op: predicted = measured_src * roof_tgt / roof_src, roof = max(FLOPs / compute ceiling of the "
         "op's unit, bytes / bandwidth of the level it streams from: its cache level when the profile "
         "found it above the DRAM roof, else DRAM); the op's source efficiency roof_src / measured_src is "
         "kept. Ops with nothing to place (views, no FLOPs and no bytes), ops not timed or placed, ops "
         "whose unit has no ceiling on the target and the host's share of the profiled time are carried "
         "over as measured. Whole model per repetition = the profile's totals.profiled_time_s with each "
         "predicted op's measured time replaced by its prediction")

#: Columns of predict-<target>.csv and of each target's `ops` in the JSON document.
COLUMNS = ["name", "op", "module", "phase", "dtype", "unit", "level", "flops", "bytes", "intensity",
           "measured_time_s", "source_roofline_time_s", "source_bound", "source_efficiency", "target_unit",
           "target_roofline_time_s", "target_bound", "predicted_time_s", "speedup", "carried_over", "note"]
#: Why an op is carried over as measured (its `note`).
NOTHING_TO_PLACE = "no FLOPs and no bytes (a view or dispatch overhead): carried over as measured"
NOT_PLACED = "not timed or not placed on the source roofline: carried over as measured"


@dataclass(frozen=True)
class Profile:
    """A saved `gpuroof profile`: its profile.json and the source roofline it recorded."""

    path: Path  # the profile directory
    doc: dict
    ops: pd.DataFrame
    roof: Roofline

    @property
    def name(self) -> str:
        return str(self.doc.get("model") or self.path.name)

    @property
    def kind(self) -> str:
        """The device type the profile was taken on (cpu, cuda): a backend name of `measure`."""
        return str(self.doc["device"].get("type") or "?")

    @property
    def device_name(self) -> str:
        return str(self.doc["device"].get("name") or "?")

    @property
    def profiled_time_s(self) -> float:
        return float(self.doc["totals"]["profiled_time_s"])


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_profile(path: str | Path) -> Profile:
    """A profile directory (or its profile.json) checked for what a prediction reads: the ops with
    FLOPs, bytes, time and placement, totals.profiled_time_s, the device and the recorded ceilings."""
    p = Path(path)
    f = p / "profile.json" if p.is_dir() else p
    if not p.exists():
        raise UsageError(f"{path}: no such directory (allowed: a directory `gpuroof profile` wrote)")
    if not f.is_file() or f.name != "profile.json":
        raise UsageError(f"{path}: not a gpuroof profile (no profile.json; allowed: a directory `gpuroof "
                         "profile` wrote, or its profile.json)")
    doc = read_json(f)
    if not isinstance(doc, dict):
        raise UsageError(f"{f}: not a gpuroof profile (a JSON object with ops, totals, ceilings, device)")
    for key, kind in (("ops", list), ("totals", dict), ("ceilings", dict), ("device", dict)):
        if not isinstance(doc.get(key), kind):
            raise UsageError(f"{f}: field {key}: missing or not a{'n object' if kind is dict else ' list'} "
                             "(not a profile `gpuroof profile` wrote)")
    t = doc["totals"].get("profiled_time_s")
    if not _number(t) or t <= 0:
        raise UsageError(f"{f}: field totals.profiled_time_s={t!r}: a time in seconds > 0")
    if not doc["ops"]:
        raise UsageError(f"{f}: field ops: empty (a profile has one row per op)")
    ops = pd.DataFrame(doc["ops"])
    missing = [c for c in ("name", "flops", "bytes", "time_s", "bound") if c not in ops.columns]
    if missing:
        raise UsageError(f"{f}: field ops: no {', '.join(missing)} (a profile's op rows have name, flops, "
                         "bytes, time_s, bound, roof_unit)")
    for i, op in enumerate(doc["ops"]):  # the JSON's own values: pandas reads a null among numbers as NaN
        for c in ("flops", "bytes", "time_s"):
            v = op.get(c) if isinstance(op, dict) else op
            if not (v is None or _number(v)):
                raise UsageError(f"{f}: field ops[{i}].{c}={v!r}: a number or null")
    ops[["flops", "bytes", "time_s"]] = ops[["flops", "bytes", "time_s"]].astype(float)
    for c in ("op", "module", "phase", "dtype", "unit", "roof_unit", "cache_level"):
        if c not in ops.columns:
            ops[c] = None
    try:
        roof = known(doc["ceilings"])
    except UsageError as e:
        raise UsageError(f"{f}: field ceilings: {e}") from None
    if "dram" not in roof.bandwidth:
        raise UsageError(f"{f}: field ceilings.bandwidth: no dram ceiling (the profile places ops against it)")
    return Profile(path=f.parent, doc=doc, ops=ops, roof=roof)


def load_target(path: str | Path, profile: Profile) -> Run:
    """A complete run with measured ceilings, of the backend the profile was taken on."""
    if not Path(path).exists():
        raise UsageError(f"--on {path}: no such directory (allowed: a complete `gpuroof measure` or `run` "
                         "directory)")
    try:
        run = load_run(path)
    except UsageError as e:
        raise UsageError(f"--on {e}") from None
    if not run.measured or run.ceilings is None:
        raise UsageError(f"--on {path}: the run is {run.status} and has no ceilings (allowed: a complete "
                         "`gpuroof measure` or `run` directory)")
    if run.backend != profile.kind:
        raise UsageError(f"--on {path}: a {run.backend} run; the profile was taken on {profile.kind}, and an "
                         f"op's efficiency and the host's time carry over only between devices of one kind "
                         f"(allowed: {profile.kind} runs)")
    if "dram" not in run.ceilings.bandwidth:
        raise UsageError(f"--on {path}: the run has no dram bandwidth ceiling (allowed: a run that measured dram)")
    return run


def _roof_times(roof: Roofline, flops: pd.Series, nbytes: pd.Series, unit: pd.Series,
                level: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(roofline time max(F/P[unit], B/BW[level]), bound side) per op; NaN where `unit` has no ceiling."""
    t_compute = flops / unit.map(roof.compute).astype(float)
    t_memory = nbytes / level.map(roof.bandwidth).astype(float)
    t = np.fmax(t_compute, t_memory).where(t_compute.notna())
    bound = pd.Series(np.where(t_memory > t_compute, "memory", "compute"), index=flops.index).where(t.notna())
    return t, bound


def _target_unit(unit: pd.Series, roof: Roofline) -> tuple[pd.Series, pd.Series]:
    """The unit each op is placed against on the target: its source unit, or, for a `<dtype>-matrix`
    unit the target measured no matrix ceiling for, the vector roof of its dtype (as bench's
    place_case falls back); None where the target has neither. And the note that says so."""
    vector = unit.fillna("").str.replace(r"-matrix$", "", regex=True)
    has = unit.isin(list(roof.compute))
    falls = ~has & vector.isin(list(roof.compute)) & (vector != unit)
    out = unit.where(has, vector.where(falls))
    note = pd.Series("", index=unit.index)
    note[falls] = "no " + unit[falls] + " ceiling on the target: its vector roof " + vector[falls] + " instead"
    return out, note


def predict_ops(ops: pd.DataFrame, src: Roofline, tgt: Roofline) -> pd.DataFrame:
    """One row per op of the profile: its source roofline time, bound and efficiency, its roofline
    time and bound on the target, and the prediction that keeps its efficiency (module docstring).
    Ops with no roofline time are carried over (`carried_over`, with the reason in `note`)."""
    f, b, t = ops["flops"].fillna(0.0), ops["bytes"].fillna(0.0), ops["time_s"]
    unit = ops["roof_unit"].where(ops["roof_unit"].notna(), None)
    cache = ops["cache_level"]
    in_both = cache.isin([lv for lv in src.bandwidth if lv in tgt.bandwidth])
    level = cache.where(in_both, "dram")
    nothing = (f <= 0) & (b <= 0)
    placed = ops["bound"].isin(["memory", "compute"]) & unit.isin(list(src.compute)) & (t > 0) & ~nothing
    roof_src, bound_src = _roof_times(src, f, b, unit.where(placed), level)
    unit_tgt, note = _target_unit(unit.where(placed), tgt)
    roof_tgt, bound_tgt = _roof_times(tgt, f, b, unit_tgt, level)
    predicted = roof_src.notna() & roof_tgt.notna() & (roof_src > 0)
    no_ceiling = placed & ~predicted
    note[no_ceiling] = ("no " + unit[no_ceiling].astype(str)
                        + " ceiling (nor its vector roof) on the target: carried over as measured")
    note[~placed & nothing] = NOTHING_TO_PLACE
    note[~placed & ~nothing] = NOT_PLACED
    measured = t.fillna(0.0)
    pred = (measured * roof_tgt / roof_src).where(predicted, measured)
    out = pd.DataFrame({
        "name": ops["name"], "op": ops["op"], "module": ops["module"], "phase": ops["phase"], "dtype": ops["dtype"],
        "unit": unit, "level": level.where(placed), "flops": f, "bytes": b,
        "intensity": (f / b).where(b > 0), "measured_time_s": t,
        "source_roofline_time_s": roof_src, "source_bound": bound_src,
        "source_efficiency": (roof_src / t).where(predicted | placed),
        "target_unit": unit_tgt.where(predicted), "target_roofline_time_s": roof_tgt.where(predicted),
        "target_bound": bound_tgt.where(predicted), "predicted_time_s": pred,
        "speedup": (measured / pred).where(predicted), "carried_over": ~predicted, "note": note,
    })
    return out.reindex(columns=COLUMNS)


def whole_model(rows: pd.DataFrame, profiled_time_s: float) -> dict:
    """The model per repetition on the target: profiled_time_s with each predicted op's measured time
    replaced by its prediction. The carried-over time is given in its parts: ops with nothing to
    place, ops not placed or without a target ceiling, and the host (profiled time no op holds:
    top-level events matched to no op, and the median of the repetitions' sums against the sum of
    the ops' medians, which can make it slightly negative)."""
    pred = rows[~rows["carried_over"]]
    carried = rows[rows["carried_over"]]
    ops_time = float(rows["measured_time_s"].fillna(0.0).sum())
    host = profiled_time_s - ops_time
    by_note = carried.groupby("note")["measured_time_s"].agg(["size", "sum"])
    carried_ops = float(carried["measured_time_s"].fillna(0.0).sum())
    predicted_ops = float(pred["predicted_time_s"].sum())
    total = predicted_ops + carried_ops + host
    return {
        "predicted_time_s": total,
        "source_time_s": profiled_time_s,
        "speedup": profiled_time_s / total if total > 0 else math.nan,
        "ops_predicted": int(len(pred)),
        "predicted_ops_measured_time_s": float(pred["measured_time_s"].sum()),
        "predicted_ops_time_s": predicted_ops,
        "roofline_time_s": float(pred["target_roofline_time_s"].sum()),
        "roofline_bound_s": float(pred["target_roofline_time_s"].sum()) + carried_ops + host,
        "by_bound": {k: {"ops": int(len(g)), "measured_time_s": float(g["measured_time_s"].sum()),
                         "predicted_time_s": float(g["predicted_time_s"].sum())}
                     for k, g in pred.groupby("target_bound")},
        "carried_over": {"time_s": carried_ops + host, "ops": int(len(carried)), "ops_time_s": carried_ops,
                         "host_time_s": host,
                         "why": [{"note": n, "ops": int(r["size"]), "time_s": float(r["sum"])}
                                 for n, r in by_note.iterrows()]},
    }


def target_slug(run: Run) -> str:
    """The name of a target in file names: its device and its run directory's name."""
    return slug(f"{run.device_name} {run.path.name}")


@dataclass
class Prediction:
    """A profile predicted on each target run: per op rows and the whole model per target."""

    profile: Profile
    targets: list[tuple[Run, pd.DataFrame, dict]]

    def write(self, out: str | Path | None = None) -> list[dict[str, Path]]:
        """Per target, beside the profile (or in `out`), each written atomically: predict-<target>.csv
        (one row per op) and predict-<target>.png (plots.predict: the ops measured on the source's
        roofline, arrows to their predictions on the target's). One {"csv", "figure"} per target."""
        from gpuroof.plots.common import render
        from gpuroof.plots.predict import prediction_figure

        where = Path(out) if out is not None else self.profile.path
        files = []
        for run, rows, _ in self.targets:
            stem = where / f"predict-{target_slug(run)}"
            drawn = prediction_figure(self.profile.roof, run.ceilings, rows, model=self.profile.name,
                                      source_name=self.profile.device_name, target_name=run.device_name)
            try:
                atomic_write_csv(stem.with_suffix(".csv"), rows)
                if drawn is not None:  # no op with a point to draw: no figure
                    atomic_write_bytes(stem.with_suffix(".png"), render(drawn, "png"))
            except OSError as e:
                raise UsageError(f"{where}: cannot write {stem.name} ({e.strerror or e})") from None
            files.append({"csv": stem.with_suffix(".csv"),
                          "figure": stem.with_suffix(".png") if drawn is not None else None})
        return files

    def to_json(self, files: list[dict[str, Path]] | None = None) -> dict:
        p = self.profile
        src = {"device": p.doc["device"], "ceilings": p.doc["ceilings"],
               "ceilings_source": p.doc.get("ceilings_source"), "profiled_time_s": p.profiled_time_s,
               "op_time_s": float(p.ops["time_s"].fillna(0.0).sum()),
               "quality": (p.doc.get("quality") or {}).get("ok")}
        targets = []
        for i, (run, rows, whole) in enumerate(self.targets):
            targets.append({"run_dir": str(run.path), "device": run.device_name, "backend": run.backend,
                            "quality": run.quality.get("ok"), "ceilings": run.ceilings.to_dict(), **whole,
                            "csv": str(files[i]["csv"]) if files else None,
                            "figure": str(files[i]["figure"]) if files and files[i]["figure"] else None,
                            "ops": rows.to_dict("records")})
        return {"profile": str(p.path), "model": p.name, "phase": p.doc["totals"].get("phase"),
                "model_used": MODEL, "source": src, "targets": targets}


def predict(profile: str | Path | Profile, on: list[str | Path] | tuple[str | Path, ...] | str | Path) -> Prediction:
    """The profile (a directory `gpuroof profile` wrote) predicted on every run of `on` (complete
    run directories of the profile's backend); the source roofline is the one profile.json recorded."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    targets = [on] if isinstance(on, (str, Path)) else list(on)
    if not targets:
        raise UsageError("--on: give one or more run directories to predict on")
    out = []
    for t in targets:
        run = load_target(t, prof)
        rows = predict_ops(prof.ops, prof.roof, run.ceilings)
        out.append((run, rows, whole_model(rows, prof.profiled_time_s)))
    return Prediction(profile=prof, targets=out)


def find_profiles(root: str | Path) -> tuple[list[Profile], list[tuple[Path, str]]]:
    """Every profile below `root` (a directory holding profile.json), by path; and those that could
    not be read, each with why."""
    found, bad = [], []
    for f in sorted(Path(root).rglob("profile.json")):
        try:
            found.append(load_profile(f.parent))
        except UsageError as e:
            bad.append((f.parent, str(e)))
    return found, bad


def models_by_cards(profiles: list[Profile], runs: list[Run]) -> pd.DataFrame:
    """One row per (profile, run of the profile's kind with a DRAM ceiling): the whole model's
    predicted time per repetition on that run's roofline, its speed-up over the profiled time, and
    whether the run is of the device the profile was taken on (`source_device`)."""
    rows = []
    for i, p in enumerate(profiles):
        for j, run in enumerate(runs):
            if run.backend != p.kind or run.ceilings is None or "dram" not in run.ceilings.bandwidth:
                continue
            whole = whole_model(predict_ops(p.ops, p.roof, run.ceilings), p.profiled_time_s)
            rows.append({"profile": i, "run": j, "model": p.name, "phase": p.doc["totals"].get("phase"),
                         "profiled_on": p.device_name, "profiled_time_s": p.profiled_time_s,
                         "device": run.device_name, "predicted_time_s": whole["predicted_time_s"],
                         "speedup": whole["speedup"], "source_device": run.device_name == p.device_name})
    return pd.DataFrame(rows, columns=["profile", "run", "model", "phase", "profiled_on", "profiled_time_s",
                                       "device", "predicted_time_s", "speedup", "source_device"])
