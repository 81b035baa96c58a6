"""`gpuroof bench`: real kernels timed and placed on the newest run's roofline."""
from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any
import sys

from gpuroof.commands import args as args_t
from gpuroof.errors import MeasurementError
from gpuroof.output import emit_json
from gpuroof.workloads import SIZES
from gpuroof.workloads import WORKLOADS
from gpuroof.workloads import parse_shape
from gpuroof.workloads import plan


def register(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare `gpuroof bench` on the CLI's subparsers (cli.build_parser calls this)."""

    b = sub.add_parser("bench", parents=[common],
                       help="time real kernels (conv, GEMM, LSTM, MLP, triad) and place them on the roofline")
    b.add_argument("--device", type=args_t.index, default=0, help="device index (default 0)")
    b.add_argument("--workload", type=args_t.str_list, default=None,
                   help=f"comma-separated workloads ({', '.join(WORKLOADS)}; default: all)")
    b.add_argument("--size", choices=SIZES, default="default",
                   help="case preset: small (CI, ~20 s on 2 cores), default or large")
    b.add_argument("--shape", default=None,
                   help="key=value,... parameters of one workload instead of its preset, "
                        "e.g. --workload gemm --shape m=1,n=8192,k=8192")
    b.add_argument("--ceilings", default=None,
                   help="run directory whose measured ceilings to use (default: the newest complete "
                        "run for this device under the results directory, else measure --quick first)")
    b.add_argument("--force", action="store_true", help="accept --ceilings from a different device")
    b.add_argument("--out", default=None,
                   help="a complete measure run directory to add the workloads to, or a new directory")
    b.add_argument("--json", action="store_true", help="stdout: one JSON document (tables go to stderr)")
    b.set_defaults(func=main)
    return b


def main(args: argparse.Namespace) -> int:
    from gpuroof.backends import check_index, get_backend
    from gpuroof.bench import (BenchSettings, bench_cases, check_fits, json_records, new_run_meta, resolve_target,
                               results_table, save)
    from gpuroof.results import make_run_dir, write_run

    shape = parse_shape(args.shape)
    check_index(args.backend, args.device)
    backend = get_backend(args.backend, args.device)
    try:
        cases = plan(args.workload, args.size, backend.name, backend.cache_bytes(), shape)
        check_fits(backend, cases)
        progress = not args.json
        target = resolve_target(backend, args.ceilings, args.out, args.force, progress, args.device)
        argv = ["gpuroof", *sys.argv[1:]]
        if not target.existing:
            make_run_dir(target.run_dir, backend.device_info().get("name") or backend.name, chosen=True)  # --out checked
            write_run(target.run_dir, new_run_meta(backend, target.source, argv), {})  # partial
        settings = BenchSettings.preset(args.size, backend.name)
        try:
            table = bench_cases(backend, target.roof, cases, settings, progress=progress)
        except MemoryError as e:
            raise MeasurementError(f"out of memory during the bench: {e}") from None
        run_dir = save(target, backend, table, argv, size=args.size, settings=asdict(settings))
    finally:
        backend.close()
    print(results_table(table))
    bad = int((~table["valid"]).sum())
    if bad:
        print(f"gpuroof: {bad} of {len(table)} cases failed their check or did not run; excluded",
              file=sys.stderr)
    quality = table.attrs.get("quality") or {}
    for reason in quality.get("reasons") or []:
        print(f"gpuroof: {reason}: these times are not the hardware's, and `gpuroof check` will not "
              "judge this run (--allow-busy to make it)", file=sys.stderr)
    print(f"ceilings: {target.source.path}")
    print(f"run directory: {run_dir}")
    if args.json:
        emit_json({"run_dir": str(run_dir), "backend": backend.name,
                   "device": backend.device_info().get("name"), "ceilings": target.source.meta["ceilings"],
                   "ceilings_source": str(target.source.path), "quality": quality,
                   "workloads": json_records(table)})
    return 0
