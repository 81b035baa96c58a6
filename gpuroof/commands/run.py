"""`gpuroof run`, the pipeline's script: measure -> bench on those ceilings -> figures -> report.html."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from gpuroof.commands import args as args_t
from gpuroof.commands.args import devices
from gpuroof.commands.show import json_summary, summary_table
from gpuroof.errors import UsageError
from gpuroof.output import emit_json


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof run` on the CLI's subparsers."""
    r = sub.add_parser("run", parents=[common],
                       help="the main job: measure, bench the workloads, draw the figures, write report.html")
    r.add_argument("--device", type=args_t.device, default=0, help="device index or 'all' (default 0)")
    r.add_argument("--quick", action="store_true", help="the short version (about a minute on 2 cores)")
    r.add_argument("--retune", action="store_true",
                   help="measure the loop shapes again instead of taking the choices an earlier run of this "
                        "device kept (user cache directory, or $GPUROOF_CACHE_DIR)")
    r.add_argument("--out", default=None, help="run directory (default RESULTS_DIR/<device>/<UTC time>/)")
    r.add_argument("--format", type=args_t.str_list, default=["png", "svg"], help="figure formats (png, svg, pdf)")
    r.add_argument("--json", action="store_true", help="stdout: one JSON document (tables go to stderr)")
    r.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """The pipeline, per device: measure the ceilings, bench the workloads on them, draw, report."""
    from gpuroof.backends import get_backend
    from gpuroof.bench import results_table, run_bench, write_into_run
    from gpuroof.measure import measure
    from gpuroof.plots import check_formats, make_figures
    from gpuroof.report import write_report

    formats = check_formats(args.format)
    indices = devices(args)
    if len(indices) > 1 and args.out:
        raise UsageError("--out with --device all: give no --out (one directory per device is made)")
    outputs = []
    for dev in indices:
        # 1. measure: the device's ceilings, written into a new run directory
        res = measure(args.backend, dev, quick=args.quick, out=args.out, argv=["gpuroof", *sys.argv[1:]],
                      retune=args.retune)
        print(summary_table(res.meta))
        # 2. bench: the workloads timed and placed on the ceilings just measured
        backend = get_backend(args.backend, dev)
        try:
            table = run_bench(backend, res.ceilings,
                              size="small" if args.quick else "default")
        finally:
            backend.close()
        write_into_run(res.run_dir, table)
        print(results_table(table))
        # 3. figures and 4. report.html, read back from the run directory alone
        figures = make_figures(res.run_dir, formats=formats)
        report = write_report(res.run_dir)
        print(f"figures: {', '.join(str(p) for paths in figures.values() for p in paths)}")
        print(f"report: {report}")
        outputs.append({**json_summary(res.meta, res.run_dir), "report": str(report),
                        "workloads": {"cases": int(len(table)), "valid": int(table["valid"].sum())}})
    if args.json:
        emit_json(outputs[0] if len(outputs) == 1 else {"runs": outputs})
    return 0
