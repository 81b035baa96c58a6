"""`gpuroof check`: a regression gate for workloads: FASTER, SLOWER, SAME or NOISY, decided by a test.

Each workload case of a baseline run is compared with the same case of a current run (measured now
when no current run is given). The comparison is made on the case's efficiency against the
measured roofline of its own run (so a card that clocked lower, or a node with slower memory, does
not read as a code regression) or, with `--by time`, on raw time. The samples are the timed
repetitions of both runs (workload_samples.csv); the decision is a Mann-Whitney U test and a
bootstrap confidence interval of the ratio of medians, never a single ratio of two numbers.

A run whose workloads were timed while other processes took more than quality.BUSY_LIMIT of the
CPUs' time (or the hypervisor stole more than STEAL_LIMIT) is not judged at all: contention makes
kernels look SLOWER (or a quiet current run FASTER) without any change to the code. Within a quiet
run, a case whose own window stayed busy after its re-measurements is NOISY. `--allow-busy` judges
them anyway.

Exit codes: 0 nothing regressed (SAME, FASTER or NOISY), 1 a case is SLOWER beyond the tolerance
or no longer passes its output check (INVALID), 2 bad input (unreadable runs, no common case,
no case with enough valid repetitions on both sides, a baseline that is the current run itself,
runs from different devices without --force, a busy run without --allow-busy). The gate never
passes having compared nothing.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuroof.defaults import CHECK_TOLERANCE
from gpuroof.errors import UsageError
from gpuroof.quality import busy_reasons
from gpuroof.results import Run, load_run
from gpuroof.units import fmt_time, text_table

KEY = ["name", "case", "dtype"]

#: Default tolerance: a change smaller than this fraction is never a regression.
TOLERANCE = CHECK_TOLERANCE
#: Significance level of the Mann-Whitney test and 1 - confidence of the bootstrap interval.
ALPHA = 0.05
#: Bootstrap resamples; the generator is seeded so the same samples always give the same verdict.
N_BOOT = 4000
SEED = 0
#: Fewer repetitions than this on either side cannot show anything: the case is NOISY.
MIN_REPS = 3

VERDICTS = ("SLOWER", "INVALID", "NOISY", "MISSING", "FASTER", "SAME")
FAILING = ("SLOWER", "INVALID")


@dataclass(frozen=True)
class Decision:
    verdict: str
    ratio: float  # current / baseline of the median (normalized) time: > 1 is slower
    ci_low: float
    ci_high: float
    p_value: float
    reason: str


def _bootstrap_ci(cur: np.ndarray, base: np.ndarray, alpha: float, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of median(cur) / median(base), each side resampled on its own."""
    from scipy.stats import bootstrap

    def ratio(c: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(c, axis=axis) / np.median(b, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (all-equal) resamples warn; the interval is still right
        res = bootstrap((cur, base), ratio, n_resamples=n_boot, confidence_level=1 - alpha,
                        method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def decide(base: np.ndarray, cur: np.ndarray, tolerance: float = TOLERANCE, alpha: float = ALPHA,
           n_boot: int = N_BOOT, seed: int = SEED) -> Decision:
    """Verdict on two sets of per-repetition times (current already normalized when comparing by
    efficiency). r = median(cur) / median(base); the band is [1/(1+tol), 1+tol].

    - SLOWER / FASTER: r is outside the band and the difference is significant: the Mann-Whitney
      p-value is below alpha and the bootstrap interval of r excludes 1.
    - NOISY: r is outside the band but not significant (the spread covers the difference), or r
      is inside the band but the interval reaches beyond it without excluding 1 (cannot tell), or
      fewer than MIN_REPS repetitions on a side.
    - SAME: r inside the band and the interval inside it too, or any significant change that stays
      inside the band.

    `check` applies this to the efficiency-normalized times and to the raw times, and keeps
    SLOWER/FASTER only when both agree (`_reconcile`).
    """
    from scipy.stats import mannwhitneyu

    base = np.asarray(base, dtype=float)
    cur = np.asarray(cur, dtype=float)
    base, cur = base[np.isfinite(base) & (base > 0)], cur[np.isfinite(cur) & (cur > 0)]
    if len(base) < MIN_REPS or len(cur) < MIN_REPS:
        r = float(np.median(cur) / np.median(base)) if len(base) and len(cur) else math.nan
        return Decision("NOISY", r, math.nan, math.nan, math.nan,
                        f"too few repetitions to test ({len(base)} baseline, {len(cur)} current; "
                        f"need {MIN_REPS} each)")
    r = float(np.median(cur) / np.median(base))
    lo, hi = _bootstrap_ci(cur, base, alpha, n_boot, seed)
    p = float(mannwhitneyu(cur, base, alternative="two-sided").pvalue)
    upper, lower = 1 + tolerance, 1 / (1 + tolerance)
    significant = p < alpha and (lo > 1 or hi < 1)
    change = f"{abs(r - 1):.1%} {'slower' if r > 1 else 'faster'}"
    stats = f"{1 - alpha:.0%} CI {lo:.3f}..{hi:.3f}, Mann-Whitney p={p:.3g}"
    if r > upper or r < lower:
        if significant:
            return Decision("SLOWER" if r > 1 else "FASTER", r, lo, hi, p,
                            f"{change}, beyond the {tolerance:.0%} tolerance ({stats})")
        return Decision("NOISY", r, lo, hi, p,
                        f"{change}, beyond the tolerance but not significant: the spread covers the "
                        f"difference ({stats})")
    if significant or (lower <= lo and hi <= upper):
        return Decision("SAME", r, lo, hi, p, f"{change}, within the {tolerance:.0%} tolerance ({stats})")
    return Decision("NOISY", r, lo, hi, p,
                    f"{change}, within the tolerance, but the interval reaches beyond it ({stats})")


# --------------------------------------------------------------------------- reading runs


def _bool(s: pd.Series) -> pd.Series:
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(("true", "1", "yes"))


@dataclass
class Cases:
    """A run's workload cases: summary rows (workloads.csv) and per-repetition times, by case key."""

    run: Run
    table: pd.DataFrame  # indexed by KEY, every case (valid or not)
    samples: dict[tuple, np.ndarray]


def load_cases(path: str | Path | Run, role: str) -> Cases:
    run = path if isinstance(path, Run) else load_run(path)
    if run.meta["status"] != "complete":
        raise UsageError(f"--{role} {run.path}: run is {run.meta['status']} "
                         f"({run.meta.get('status_reason') or 'not finished'}); its workloads are not final")
    for name in ("workloads", "workload_samples"):
        if not (run.path / f"{name}.csv").exists():
            raise UsageError(f"--{role} {run.path}: the run has no {name}.csv (run `gpuroof bench` "
                             "or `gpuroof run` to time workloads)")
    table = run.table("workloads")
    samples = run.table("workload_samples")
    for df, name, need in ((table, "workloads.csv", (*KEY, "time_s")),
                           (samples, "workload_samples.csv", (*KEY, "time_s"))):
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise UsageError(f"--{role} {run.path}/{name}: lacks column(s) {', '.join(missing)}")
    for df in (table, samples):
        df["case"] = df["case"].astype(str)
        df["dtype"] = df["dtype"].astype(str)
    table = table.assign(valid=_bool(table["valid"]) if "valid" in table.columns else True,
                         disturbed=_bool(table["disturbed"]) if "disturbed" in table.columns else False)
    table = table.drop_duplicates(KEY, keep="last").set_index(KEY)
    grouped = {k: g["time_s"].to_numpy(dtype=float) for k, g in samples.groupby(KEY, sort=False)}
    return Cases(run=run, table=table, samples=grouped)


def same_device(a: Run, b: Run) -> bool:
    return (a.meta.get("backend") == b.meta.get("backend")
            and (a.meta.get("device") or {}).get("name") == (b.meta.get("device") or {}).get("name"))


def _device(run: Run) -> str:
    return f"{(run.meta.get('device') or {}).get('name')!r} ({run.meta.get('backend')})"


def busy_line(cases: Cases, role: str) -> str | None:
    """One line naming a run whose workloads were timed on a busy machine and the share of the CPUs
    other processes took (None: quiet, or a run from before the bench recorded its window)."""
    q = (cases.run.meta.get("workloads") or {}).get("quality")
    if not isinstance(q, dict):
        return None
    act = q.get("activity") if isinstance(q.get("activity"), dict) else {}
    reasons = busy_reasons(act, "its workloads' timing") or ([] if q.get("ok") is not False else
                                                             [str(r) for r in q.get("reasons") or []])
    if not reasons:
        return None
    share, steal = act.get("other_processes_share"), act.get("steal_share")
    took = (f"other processes took {share:.0%} of the CPUs' time" if isinstance(share, (int, float))
            else reasons[0]) + (f", the hypervisor {steal:.0%}" if isinstance(steal, (int, float)) and steal > 0.005 else "")
    return (f"--{role} {cases.run.path}: the machine was busy while its workloads were timed ({took}); "
            "contention is not judged: time it again on a quiet machine, or pass --allow-busy")


def refuse_busy(cases: Cases, role: str, allow_busy: bool) -> None:
    """UsageError (exit 2) for a busy run unless `allow_busy`."""
    line = busy_line(cases, role)
    if line and not allow_busy:
        raise UsageError(line)


def _num(row: pd.Series, col: str) -> float:
    try:
        v = float(row.get(col))
    except (TypeError, ValueError):
        return math.nan
    return v


# --------------------------------------------------------------------------- the check


@dataclass
class CheckResult:
    table: pd.DataFrame  # one row per baseline case
    baseline: Run
    current: Run
    tolerance: float
    by: str
    new_cases: int  # valid cases of the current run that the baseline does not have
    allow_busy: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return {v: int((self.table["verdict"] == v).sum()) for v in VERDICTS if (self.table["verdict"] == v).any()}

    @property
    def regressed(self) -> bool:
        return bool(self.table["verdict"].isin(FAILING).any())

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    def to_dict(self) -> dict:
        return {"baseline": str(self.baseline.path), "current": str(self.current.path),
                "device": (self.current.meta.get("device") or {}).get("name"),
                "tolerance": self.tolerance, "by": self.by, "alpha": ALPHA, "counts": self.counts,
                "regressed": self.regressed, "exit_code": self.exit_code, "new_cases": self.new_cases,
                "allow_busy": self.allow_busy, "cases": self.table.to_dict("records")}


def check(baseline: Cases, current: Cases, tolerance: float = TOLERANCE, by: str = "efficiency",
          force: bool = False, allow_busy: bool = False) -> CheckResult:
    """Compare every valid case of the baseline with the current run's (see `decide`); a busy run is
    refused and a case timed in a busy window is NOISY, unless `allow_busy`."""
    if by not in ("efficiency", "time"):
        raise UsageError(f"--by {by}: allowed efficiency, time")
    if not 0 <= tolerance < 10:
        raise UsageError(f"--tolerance {tolerance * 100:g}: a percentage in [0, 1000)")
    b_run, c_run = baseline.run, current.run
    if b_run.path.resolve() == c_run.path.resolve():
        raise UsageError(f"--baseline {b_run.path} is the current run itself: a run compared with "
                         "itself cannot regress; give another run as --current (or none, to measure now)")
    if not force and not same_device(b_run, c_run):
        raise UsageError(f"--baseline {b_run.path} was measured on {_device(b_run)}, the current run "
                         f"{c_run.path} on {_device(c_run)}; use --force to compare them anyway")
    refuse_busy(baseline, "baseline", allow_busy)
    refuse_busy(current, "current", allow_busy)
    base_valid = baseline.table[baseline.table["valid"]]
    if base_valid.empty:
        raise UsageError(f"--baseline {b_run.path}: no valid workload case to compare")
    common = [k for k in base_valid.index if k in current.table.index]
    if not common:
        raise UsageError(f"no workload case in common: the baseline {b_run.path} has "
                         f"{len(base_valid)} ({', '.join(sorted({k[0] for k in base_valid.index}))}), "
                         f"the current run {c_run.path} has {len(current.table)}")
    rows = []
    for key in base_valid.index:
        b = base_valid.loc[key]
        row: dict[str, Any] = dict(zip(KEY, key))
        row.update(unit=b.get("unit"), baseline_time_s=_num(b, "time_s"),
                   baseline_efficiency=_num(b, "efficiency"))
        if key not in current.table.index:
            rows.append({**row, "verdict": "MISSING", "reason": "not in the current run"})
            continue
        c = current.table.loc[key]
        row.update(current_time_s=_num(c, "time_s"), current_efficiency=_num(c, "efficiency"))
        if not bool(c["valid"]):
            note = str(c.get("notes") or "").strip()
            rows.append({**row, "verdict": "INVALID",
                         "reason": "valid in the baseline, not in the current run" + (f": {note}" if note else "")})
            continue
        base_t = baseline.samples.get(key, np.array([]))
        cur_t = current.samples.get(key, np.array([]))
        busy = [f"{side} ({_share(r)})" for side, r in (("baseline", b), ("current", c)) if bool(r.get("disturbed"))]
        if busy and not allow_busy:
            rows.append({**row, "baseline_reps": len(base_t), "current_reps": len(cur_t), "verdict": "NOISY",
                         "reason": f"timed while other processes were busy in the {' and '.join(busy)} run, "
                                   "after its re-measurements: contention is not judged (--allow-busy to judge it)"})
            continue
        basis, scale, note = _basis(b, c, by)
        d_time = decide(base_t, cur_t, tolerance)
        d = decide(base_t, cur_t * scale, tolerance) if basis == "efficiency" else d_time
        verdict, reason = d.verdict, d.reason
        if basis == "efficiency":
            verdict, reason = _reconcile(d, d_time, scale)
        rows.append({**row, "basis": basis, "roof_ratio": scale, "time_ratio": d_time.ratio,
                     "time_verdict": d_time.verdict, "ratio": d.ratio, "ci_low": d.ci_low,
                     "ci_high": d.ci_high, "p_value": d.p_value, "baseline_reps": len(base_t),
                     "current_reps": len(cur_t), "verdict": verdict,
                     "reason": reason + (f"; {note}" if note else "")
                     + (f"; timed while other processes were busy: {', '.join(busy)}" if busy else "")})
    table = pd.DataFrame(rows)
    compared = [r for r in rows if r["verdict"] == "INVALID"
                or (_timed(baseline.samples.get(_key(r))) >= MIN_REPS
                    and _timed(current.samples.get(_key(r))) >= MIN_REPS)]
    if not compared:
        raise UsageError(f"nothing compared: none of the {len(common)} case(s) in common has {MIN_REPS} or "
                         f"more valid repetitions (finite times > 0) in both workload_samples.csv of "
                         f"the baseline {b_run.path} and the current run {c_run.path}")
    cur_valid = current.table[current.table["valid"]]
    new = sum(1 for k in cur_valid.index if k not in baseline.table.index)
    return CheckResult(table=table, baseline=b_run, current=c_run, tolerance=tolerance, by=by, new_cases=new,
                       allow_busy=allow_busy)


def _share(row: pd.Series) -> str:
    v = _num(row, "other_processes_share")
    return f"others took {v:.0%} of the CPUs' time" if math.isfinite(v) else "busy"


def _key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY)


def _timed(times: np.ndarray | None) -> int:
    """Repetitions that count: finite times > 0."""
    t = np.asarray(times if times is not None else [], dtype=float)
    return int(np.sum(np.isfinite(t) & (t > 0)))


def _basis(b: pd.Series, c: pd.Series, by: str) -> tuple[str, float, str | None]:
    """(basis, roof ratio, note): efficiency needs both runs placed on the same kind of roof."""
    if by == "time":
        return "time", 1.0, None
    att_b, att_c = _num(b, "attainable_flops"), _num(c, "attainable_flops")
    if not (math.isfinite(att_b) and math.isfinite(att_c) and att_b > 0 and att_c > 0):
        return "time", 1.0, "no attainable performance in one of the runs: compared by time"
    for col in ("roof_unit", "level"):
        ub, uc = b.get(col), c.get(col)
        if isinstance(ub, str) and isinstance(uc, str) and ub != uc:
            return "time", 1.0, (f"placed against different roofs ({col} {ub} in the baseline, {uc} now): "
                                 "compared by time")
    return "efficiency", att_c / att_b, None


def _reconcile(eff: Decision, time: Decision, roof_ratio: float) -> tuple[str, str]:
    """The verdict by efficiency, which the time must not contradict.

    Efficiency excuses a slowdown that the roofline explains (a card that clocked lower reads SAME),
    but it never turns an unchanged time into a regression: a roofline measured a few percent
    higher (measurement noise, boost clock) would otherwise fail the gate while the kernel took as
    long as before. So SLOWER and FASTER need the time to say the same; when it does not, the case
    is NOISY and the reason says that the roofline moved.
    """
    moved = f"the roofline moved x{roof_ratio:.3f} between the runs"
    if eff.verdict in ("SLOWER", "FASTER") and time.verdict != eff.verdict:
        return "NOISY", (f"{eff.reason}; but by time {time.verdict} (x{time.ratio:.3f}): {moved} "
                         "(a roofline measured differently, or a change hidden by a faster or slower device)")
    if eff.verdict == "SAME" and time.verdict in ("SLOWER", "FASTER"):
        return "SAME", f"{eff.reason}; {time.verdict.lower()} by time (x{time.ratio:.3f}), explained by the " \
                       f"roofline ({moved})"
    return eff.verdict, eff.reason


# --------------------------------------------------------------------------- measuring now


def bench_settings(meta: dict) -> Any:
    """The baseline's bench settings (repetitions, budget), so the current run is timed alike."""
    from gpuroof.bench import BenchSettings

    saved = (meta.get("workloads") or {}).get("settings")
    if isinstance(saved, dict):
        try:
            return BenchSettings(**saved)
        except TypeError:
            pass
    size = (meta.get("workloads") or {}).get("size", "default")
    return BenchSettings.preset(size if size in ("small", "default", "large") else "default", meta["backend"])


def baseline_cases(baseline: Cases) -> list:
    """The baseline's valid cases rebuilt from their recorded parameters (workloads.csv `params`)."""
    from gpuroof.workloads import WORKLOADS, Case

    cases = []
    valid = baseline.table[baseline.table["valid"]]
    if "params" not in valid.columns:
        raise UsageError(f"--baseline {baseline.run.path}: workloads.csv has no params column; "
                         "cannot run its cases again (give --current)")
    for key, row in valid.iterrows():
        w = WORKLOADS.get(key[0])
        if w is None:
            raise UsageError(f"--baseline {baseline.run.path}: workload {key[0]!r} is unknown to this "
                             f"gpuroof (it has {', '.join(WORKLOADS)})")
        try:
            params = json.loads(row["params"]) if isinstance(row["params"], str) else dict(row["params"])
            cases.append(Case(w, w.make(**params)))
        except (TypeError, ValueError) as e:
            raise UsageError(f"--baseline {baseline.run.path}: case {key[1]!r} of {key[0]}: "
                             f"unreadable params ({e})") from None
    return cases


def run_current(baseline: Cases, backend_name: str, device: int, out: str | None,
                ceilings: str | None, force: bool, progress: bool) -> Run:
    """Run the baseline's cases now on this device, against a roofline measured on this device.

    Without `ceilings` the roofline is measured first (quick) and the cases are added to that run
    directory, as `gpuroof run` does; with `ceilings` (a run of this device) they go into a new run
    directory that copies its ceilings. The cases and their timing settings are the baseline's.
    """
    from gpuroof.backends import get_backend
    from gpuroof.bench import SAMPLE_COLUMNS, bench_cases, new_run_meta, workloads_summary, write_into_run
    from gpuroof.results import fresh_run_dir, make_run_dir, write_run

    cases = baseline_cases(baseline)
    settings = bench_settings(baseline.run.meta)
    argv = ["gpuroof", *sys.argv[1:]]
    extra = {"size": (baseline.run.meta.get("workloads") or {}).get("size"),
             "settings": dataclasses.asdict(settings), "check_baseline": str(baseline.run.path)}
    backend = get_backend(backend_name, device)
    try:
        name = backend.device_info().get("name") or backend.name
        if not force and (baseline.run.meta.get("backend") != backend.name
                          or (baseline.run.meta.get("device") or {}).get("name") != name):
            raise UsageError(f"--baseline {baseline.run.path} was measured on {_device(baseline.run)}, "
                             f"this machine runs {name!r} ({backend.name}); use --force to compare anyway")
        if ceilings:
            source = load_run(ceilings)
            if not source.measured:
                raise UsageError(f"--ceilings {ceilings}: the run is not complete or has no ceilings")
            if not force and (source.device.get("name") != name or source.backend != backend.name):
                raise UsageError(f"--ceilings {ceilings}: measured on {_device(source)}, not on {name!r} "
                                 f"({backend.name}); use --force to use it anyway")
            roof = source.ceilings  # refused here, before any file is made
            run_dir = make_run_dir(out, name) if out else make_run_dir(fresh_run_dir(name, "-check"), name, chosen=True)
            meta = new_run_meta(backend, source, argv)
            write_run(run_dir, meta, {})  # partial until the cases are timed
            table = bench_cases(backend, roof, cases, settings, progress)
            meta["status"] = "complete"
            meta["workloads"] = workloads_summary(table, ceilings_source=str(source.path), **extra)
            samples = table.attrs.get("samples", pd.DataFrame(columns=SAMPLE_COLUMNS))
            write_run(run_dir, meta, {"workloads": table, "workload_samples": samples})
            return load_run(run_dir)
        from gpuroof.measure import measure

        res = measure(backend_name, device, quick=True, out=out, progress=progress, argv=argv)
        table = bench_cases(backend, res.ceilings, cases, settings, progress)
        write_into_run(res.run_dir, table, ceilings_source=str(res.run_dir), **extra)
        return load_run(res.run_dir)
    finally:
        backend.close()


# --------------------------------------------------------------------------- printing


def _f(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def render(res: CheckResult) -> str:
    head = ("verdict", "workload", "case", "dtype", "baseline", "current", "time x", "eff base", "eff now",
            "roof x", "by", "ratio", "CI", "p")
    rows = [head]
    order = {v: i for i, v in enumerate(VERDICTS)}
    t = res.table.sort_values("verdict", key=lambda s: s.map(order), kind="stable")
    for r in t.to_dict("records"):
        ci = (f"{r['ci_low']:.3f}..{r['ci_high']:.3f}"
              if isinstance(r.get("ci_low"), float) and math.isfinite(r["ci_low"]) else "-")
        rows.append((r["verdict"], r["name"], r["case"], r["dtype"], fmt_time(r.get("baseline_time_s")),
                     fmt_time(r.get("current_time_s")), _f(r.get("time_ratio"), ".3f"),
                     _f(r.get("baseline_efficiency"), ".3f"), _f(r.get("current_efficiency"), ".3f"),
                     _f(r.get("roof_ratio"), ".3f"), {"efficiency": "eff"}.get(r.get("basis"), r.get("basis") or "-"),
                     _f(r.get("ratio"), ".3f"), ci, _f(r.get("p_value"), ".2g")))
    lines = text_table(rows)
    for r in t.to_dict("records"):
        if r["verdict"] != "SAME":
            lines.append(f"{r['verdict']}: {r['name']} {r['case']} {r['dtype']}: {r['reason']}")
    counts = ", ".join(f"{n} {v}" for v, n in res.counts.items())
    basis = ("efficiency against each run's own roofline where both runs placed the case on the same "
             "roof (ratio = time x roof x; SLOWER/FASTER also need the time to agree), else time"
             if res.by == "efficiency" else "time")
    lines.append(f"compared by {basis}; tolerance {res.tolerance:.0%}; ratio > 1 is slower")
    if res.new_cases:
        lines.append(f"{res.new_cases} case(s) of the current run are not in the baseline (not compared)")
    lines.append(f"check: {counts}: " + ("REGRESSION (exit 1)" if res.regressed else "no regression"))
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line
