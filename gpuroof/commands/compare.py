"""`gpuroof compare`: runs and cards side by side."""
from __future__ import annotations

import argparse
from typing import Any
import json
import sys

from gpuroof.commands import args as args_t
from gpuroof.defaults import COMPARE_FORMATS, SICK_THRESHOLD, TERMINAL_WIDTH
from gpuroof.errors import UsageError


PCT = args_t.percentage(100, "10")  # --threshold / --tolerance, in percent


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof compare` on the CLI's subparsers."""
    p = sub.add_parser("compare", parents=[common],
                       help="runs side by side: ceilings, ridges, clocks, workloads, speedups; flags sick nodes")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories (a directory that is not a run stands for every run below it)")
    p.add_argument("--baseline", default=None, metavar="RUN_DIR",
                   help="the run speedups are relative to (default: the first)")
    p.add_argument("--format", choices=COMPARE_FORMATS, default="table",
                   help="table (default), markdown, csv or json (json is --json)")
    p.add_argument("--json", action="store_true", help="stdout: one JSON document (as --format json)")
    p.add_argument("--wide", action="store_true",
                   help="table: one row per run with every ceiling a column (default: ceilings as rows, runs as "
                        f"columns, fitting {TERMINAL_WIDTH} columns)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="FILE.png, .svg or .pdf: the rooflines of every device model; beside it FILE-ceilings.png "
                        "(.svg, .pdf): one panel per ceiling, every run a point")
    p.add_argument("--threshold", type=PCT, default=SICK_THRESHOLD, metavar="PCT",
                   help="flag a ceiling this many percent below the median of all runs of the same "
                        f"device model, given 3 or more (default {SICK_THRESHOLD * 100:g})")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gpuroof.results import check_out_file
    from gpuroof.compare import compare, load_runs
    from gpuroof.plots.compare import plot_format, plot_paths, write_plot
    from gpuroof.compare_text import render

    if args.plot:
        plot_format(args.plot)
        for target in plot_paths(args.plot):
            check_out_file(target, "--plot")
    warn = lambda m: print(f"gpuroof: {m}", file=sys.stderr)  # noqa: E731
    paths = list(args.run_dirs)
    base_idx = 0
    if args.baseline:
        base = load_runs([args.baseline])
        if len(base) != 1:
            raise UsageError(f"--baseline {args.baseline}: holds {len(base)} runs; name one run directory")
        runs = load_runs(paths, warn)
        resolved = [r.path.resolve() for r in runs]
        if base[0].path.resolve() in resolved:
            base_idx = resolved.index(base[0].path.resolve())
        else:
            runs = base + runs
    else:
        runs = load_runs(paths, warn)
    c = compare(runs, base_idx, args.threshold)
    if args.json or args.format == "json":  # --format json: the older spelling of --json
        from gpuroof.output import emit_json

        emit_json(json.loads(render(c, "json")))
    else:
        print(render(c, args.format, wide=args.wide))
    if args.plot:
        for path in write_plot(c, args.plot):
            print(f"figure: {path}", file=sys.stderr)
    return 0
