"""`gpuroof plot`: a run's figures, drawn from its files."""
from __future__ import annotations

import argparse
from typing import Any

from gpuroof.commands import args as args_t
from gpuroof.defaults import FIGURES
from gpuroof.errors import UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof plot` on the CLI's subparsers."""
    p = sub.add_parser("plot", parents=[common], help="draw the run's figures (roofline, sweep, telemetry, ...)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `gpuroof measure` or `run`")
    p.add_argument("--what", choices=(*FIGURES, "all"), default="all",
                   help="which figure (default all that the run has)")
    p.add_argument("--format", type=args_t.formats, default=("png",), dest="formats",
                   help="png (default), svg or pdf; several joined by commas, e.g. png,pdf")
    p.add_argument("--out", default=None, help="directory for the figures (default RUN_DIR/figures)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gpuroof.plots import _write
    from gpuroof.plots.common import as_run
    from gpuroof.results import make_out_dir
    import sys

    run = as_run(args.run_dir)
    out = make_out_dir(args.out) if args.out else run.path / "figures"
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: not a writable directory ({e.strerror or e})") from None
    written, skipped = _write(run, args.formats, out, args.what)
    for name, why in skipped.items():
        print(f"gpuroof: skipped the {name} figure: {why}", file=sys.stderr)
    for paths in written.values():
        for p in paths:
            print(p)
    if getattr(args, "json", False):
        from gpuroof.output import emit_json

        emit_json({"run_dir": str(run.path), "figures": {n: [str(p) for p in ps] for n, ps in written.items()},
                   "skipped": skipped})
    return 0
