"""`gpuroof measure`: sweep intensity on one device (or each) and write its ceilings into a run directory."""
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
    """Declare `gpuroof measure` on the CLI's subparsers."""
    m = sub.add_parser("measure", parents=[common], help="sweep intensity: measured memory and compute ceilings")
    m.add_argument("--device", type=args_t.device, default=0, help="device index or 'all' (default 0)")
    m.add_argument("--dtype", type=args_t.str_list, default=None,
                   help="comma-separated dtypes (default: all the backend has)")
    m.add_argument("--quick", action="store_true", help="fewer points and shorter timing (about 30 s on 2 cores)")
    m.add_argument("--buffer-size", type=args_t.size, default=None,
                   help="bytes per sweep array, e.g. 512M or 2GiB (default: ≥ 8× last-level cache)")
    m.add_argument("--levels", default=None,
                   help="memory levels to measure, e.g. l1,l2,dram (default: every level the device has: "
                        "l1,l2,l3,dram on a CPU; shared,l1,l2,dram on a GPU)")
    m.add_argument("--no-matrix", action="store_true", help="skip the GEMM (matrix unit) ceilings")
    m.add_argument("--retune", action="store_true",
                   help="measure the loop shapes again instead of taking the choices an earlier run of this "
                        "device kept (user cache directory, or $GPUROOF_CACHE_DIR)")
    m.add_argument("--threads", type=args_t.positive, default=None, metavar="N",
                   help="cpu backend: run the kernels and the BLAS on N threads (1..logical CPUs), a device "
                        "of its own (its name says the cores used); default one per logical CPU")
    m.add_argument("--out", default=None, help="run directory (default RESULTS_DIR/<device>/<UTC time>/)")
    m.add_argument("--json", action="store_true", help="stdout: one JSON document (tables go to stderr)")
    m.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gpuroof.measure import check_threads_backend, measure

    check_threads_backend(args.backend, args.threads)  # before the devices are counted
    indices = devices(args)
    if len(indices) > 1 and args.out:
        raise UsageError("--out with --device all: give no --out (one directory per device is made)")
    summaries = []
    for dev in indices:
        res = measure(args.backend, dev, args.dtype, args.quick, args.buffer_size, args.out,
                      argv=["gpuroof", *sys.argv[1:]], levels=args.levels, matrix=not args.no_matrix,
                      retune=args.retune, threads=args.threads)
        print(summary_table(res.meta))
        print(f"run directory: {res.run_dir}")
        summaries.append(json_summary(res.meta, res.run_dir))
    if args.json:
        emit_json(summaries[0] if len(summaries) == 1 else {"runs": summaries})
    return 0
