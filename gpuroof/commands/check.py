"""`gpuroof check`: the regression gate against a baseline run."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
import sys

from gpuroof.commands import args as args_t
from gpuroof.defaults import CHECK_TOLERANCE
from gpuroof.errors import UsageError
from gpuroof.output import emit_json


PCT = args_t.percentage(1000, "5")  # --threshold / --tolerance, in percent


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof check` on the CLI's subparsers."""

    p = sub.add_parser("check", parents=[common],
                       help="regression gate: workloads now (or --current) against a baseline run; exit 1 "
                            "when one got slower")
    p.add_argument("--baseline", required=True, metavar="RUN_DIR", help="a run with workloads (bench/run)")
    p.add_argument("--current", default=None, metavar="RUN_DIR",
                   help="the run to judge (default: run the baseline's cases now on this device)")
    p.add_argument("--tolerance", type=PCT, default=CHECK_TOLERANCE, metavar="PCT",
                   help=f"changes within this many percent are SAME (default {CHECK_TOLERANCE * 100:g})")
    p.add_argument("--by", choices=("efficiency", "time"), default="efficiency",
                   help="efficiency against each run's own roofline (default) or raw time")
    p.add_argument("--force", action="store_true", help="compare runs from different devices")
    p.add_argument("--allow-busy", action="store_true",
                   help="judge runs (and cases) timed while other processes were busy; by default a busy "
                        "run is refused (exit 2) and a busy case is NOISY")
    p.add_argument("--device", type=args_t.index, default=0, help="device index when measuring now (default 0)")
    p.add_argument("--ceilings", default=None, metavar="RUN_DIR",
                   help="when measuring now: a run of this device whose ceilings to use (default: "
                        "measure them now, quick)")
    p.add_argument("--out", default=None, help="when measuring now: the new run's directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gpuroof.check import check, load_cases, refuse_busy, render, run_current
    from gpuroof.results import load_run

    baseline = load_cases(args.baseline, "baseline")
    refuse_busy(baseline, "baseline", args.allow_busy)  # before anything is measured now
    if args.current and Path(args.current).resolve() in (baseline.run.path.resolve(),
                                                         (baseline.run.path / "run.json").resolve()):
        raise UsageError(f"--current {args.current} is the baseline itself: a run compared with itself "
                         "cannot regress; give another run (or no --current, to measure now)")
    if args.current:
        if args.ceilings or args.out:
            raise UsageError("--ceilings and --out apply when measuring now; not with --current")
        current = load_cases(args.current, "current")
    else:
        from gpuroof.backends import check_index

        check_index(args.backend, args.device)
        if args.ceilings:
            load_run(args.ceilings)  # a bad file is refused before anything is planned or measured
        run = run_current(baseline, args.backend, args.device, args.out, args.ceilings, args.force,
                          progress=not args.json)
        current = load_cases(run, "current")
        print(f"current run: {run.path}", file=sys.stderr)
    res = check(baseline, current, args.tolerance, args.by, args.force, args.allow_busy)
    if args.json:
        emit_json(res.to_dict())
    else:
        print(render(res))
    return res.exit_code
