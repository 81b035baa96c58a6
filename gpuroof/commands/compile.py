"""`gpuroof compile`: every sweep kernel compiled into the disk caches ahead of the first run."""
from __future__ import annotations

import argparse
import os
from typing import Any

from gpuroof.commands import args as args_t
from gpuroof.output import emit_json


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof compile` on the CLI's subparsers."""
    p = sub.add_parser("compile", parents=[common],
                       help="compile every kernel a run may use into the disk caches (done by `make`), "
                            "so no run pays for it")
    p.add_argument("--device", type=args_t.index, default=0, help="device index (default 0)")
    p.add_argument("--dtype", type=args_t.str_list, default=None,
                   help="comma list of dtypes (default: every one the backend measures)")
    p.add_argument("--jobs", type=args_t.positive, default=os.cpu_count() or 1,
                   help="cpu backend: dtypes compiled at once, one process each (default: the logical CPUs)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gpuroof.backends import compile_kernels, resolve_name

    name = resolve_name(args.backend)
    done = compile_kernels(name, args.device, tuple(args.dtype) if args.dtype else None, args.jobs)
    if args.json:
        emit_json({"backend": name, "device": args.device, "compiled": done})
    else:
        for d in done:
            print(f"{name} {d['dtype']}: every sweep kernel compiled or loaded from the cache in "
                  f"{d['seconds']:.1f} s")
    return 0
