"""`gpuroof show`: a run directory's summary, the measured ceilings beside the theoretical ones."""
from __future__ import annotations

import argparse
from typing import Any

from gpuroof.errors import UsageError
from gpuroof.output import emit_json
from gpuroof.units import si, text_table

#: The run.json sections `summary_table` reads.
SUMMARY_KEYS = ("theoretical", "ratios", "ridge_points", "median_clocks", "fit", "validation", "conventions")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof show` on the CLI's subparsers."""
    p = sub.add_parser("show", parents=[common], help="print the summary of a run directory")
    p.add_argument("run_dir", help="a run directory (or its run.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gpuroof.results import load_run

    run = load_run(args.run_dir)
    if run.ceilings is not None:
        missing = [k for k in SUMMARY_KEYS if not isinstance(run.meta.get(k), dict)]
        if missing:
            raise UsageError(f"{run.path / 'run.json'}: field {missing[0]}: missing or not an object "
                             f"(the summary needs {', '.join(SUMMARY_KEYS)})")
    if run.ceilings is None:
        raise UsageError(f"{args.run_dir}: run is {run.status} and has no ceilings "
                         f"({run.meta.get('status_reason', 'not finished')})")
    if args.json:
        emit_json(json_summary(run.meta, run.path))
    else:
        print(f"{run.device_name} ({run.meta['backend']}), {run.meta.get('created_utc', '?')}")
        print(summary_table(run.meta))
    return 0


def summary_table(meta: dict) -> str:
    """Measured ceilings beside theoretical ones, with ratios and ridge points."""
    rows = [("ceiling", "measured", "theoretical", "ratio", "ridge FLOP/B")]
    theo, ratios = meta["theoretical"], meta["ratios"]
    for lvl, v in meta["ceilings"]["bandwidth"].items():
        r = ratios["bandwidth"].get(lvl)
        rows.append((f"{lvl} bandwidth", si(v, "B/s"), si(theo["bandwidth"].get(lvl), "B/s"),
                     f"{r:.3f}" if r else "-", ""))
    for unit, v in meta["ceilings"]["compute"].items():
        r = ratios["compute"].get(unit)
        rows.append((unit, si(v, "FLOP/s"), si(theo["compute"].get(unit), "FLOP/s"),
                     f"{r:.3f}" if r else "-", f"{meta['ridge_points'][unit]:.3g}"))
    lines = text_table(rows)
    q = meta.get("quality") if isinstance(meta.get("quality"), dict) else None
    if q is not None:  # first: whether these numbers are the hardware's
        lines[:0] = ([f"quality: NOT OK ({len(q['reasons'])} reason(s))"] + [f"  - {r}" for r in q["reasons"]]
                     if not q.get("ok") else ["quality: ok (quiet machine, levels in order, fit within limits)"]) \
            + [f"  warning: {w}" for w in q.get("warnings") or []]
    fit = meta["fit"]
    clocks = meta["median_clocks"]
    core = "core" if meta.get("backend") == "cpu" else "SM"  # the device's own word
    lines.append(f"clocks (median during points): {core} {clocks['sm_clock_mhz'] or '-'} MHz, "
                 f"memory {clocks['mem_clock_mhz'] or '-'} MHz; throttled points: {meta['throttled_points']}")
    cc = meta.get("core_clock") if isinstance(meta.get("core_clock"), dict) else None
    if cc and cc.get("measured_mhz"):
        lines.append(f"core clock measured under load: {cc['measured_mhz']:.0f} MHz (dependent-add chain; "
                     f"the OS reports {cc.get('os_reported_mhz') or '-'} MHz); theoretical is at the measured clock"
                     + (f" ({cc['reason']})" if cc.get("reason") else ""))
    elif cc and cc.get("reason"):
        lines.append(f"core clock: {cc['reason']}; no theoretical peak at the measured clock")
    stat = meta.get("ceiling_statistic") if isinstance(meta.get("ceiling_statistic"), dict) else None
    if stat and stat.get("by_ceiling"):
        spread = ", ".join(f"{k} {v['spread']:.1%}" for k, v in stat["by_ceiling"].items()
                           if isinstance(v, dict) and isinstance(v.get("spread"), (int, float)))
        lines.append(f"ceiling = {stat['statistic']}; spread (p90-p10)/p90: {spread}")
    stop = meta.get("stop_rule") if isinstance(meta.get("stop_rule"), dict) else None
    if stop and isinstance(stop.get("points"), dict):
        parts = [f"{name} {v['under_noise_target']} of {v['points']}" for name, v in stop.items()
                 if isinstance(v, dict) and "under_noise_target" in v]
        lines.append(f"stop rule: points under {stop['noise_target']:.1%} relative noise (could end early): "
                     + ", ".join(parts) + "; the others ran to their budget (a noisy machine gets more repetitions)")
    lines.append((f"fit to min(P, B*I): median |dev| {fit['median_abs_deviation']:.3f}, "
                  f"max |dev| {fit['max_abs_deviation']:.3f} over {fit['points']} points"
                  if fit.get("points") else "fit to min(P, B*I): no point to fit (none memory-bound from DRAM "
                                            "and valid, or all left out)")
                 + (f" ({fit['excluded_cache_resident']} cache-resident points near the ridge left out)"
                    if fit.get("excluded_cache_resident") else "")
                 + f"; invalid points: {meta['validation']['invalid']}"
                 f" of {meta['validation']['points']}")
    lines.append(f"convention: {meta['conventions']['flops']}; bytes: {meta['conventions']['bytes']}")
    return "\n".join(lines)


def json_summary(meta: dict, run_dir: object) -> dict:
    return {"run_dir": str(run_dir), "backend": meta["backend"], "device": meta["device"],
            "ceilings": meta["ceilings"], "theoretical": meta["theoretical"], "ratios": meta["ratios"],
            "ridge_points": meta["ridge_points"], "median_clocks": meta["median_clocks"],
            "fit": meta["fit"], "validation": meta["validation"], "status": meta["status"]}
