"""`gpuroof report`: one run's report.html, or the lab page of a directory of runs."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gpuroof.errors import UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof report` on the CLI's subparsers."""
    p = sub.add_parser("report", parents=[common],
                       help="write report.html (one run on one page) or, for a directory of runs, lab.html "
                            "(every card on one page)")
    p.add_argument("run_dir", metavar="DIR",
                   help="a run directory written by `gpuroof measure` or `run`; or a directory holding many "
                        "runs (what compare and merge read): one lab page")
    p.add_argument("--out", default=None,
                   help="page file (default DIR/report.html for a run, DIR/lab.html for a directory of runs)")
    p.set_defaults(func=main)


def is_run_dir(path: str | Path) -> bool:
    """A run directory (or its run.json), as opposed to a directory that holds runs below it."""
    p = Path(path)
    return p.is_file() or (p / "run.json").exists()


def main(args: argparse.Namespace) -> int:
    from gpuroof.report import write_report

    if args.out and not Path(args.out).is_dir():
        from gpuroof.results import check_out_file

        if Path(args.out).suffix.lower() not in (".html", ".htm"):
            raise UsageError(f"--out {args.out}: the report is HTML (allowed: a .html file or a directory)")
        check_out_file(args.out)
    if not Path(args.run_dir).exists():
        raise UsageError(f"{args.run_dir}: no such directory, so no run.json (allowed: a run directory, or a "
                         "directory holding runs)")
    lab = not is_run_dir(args.run_dir)
    if lab:
        from gpuroof.lab import write_lab

        path = write_lab(args.run_dir, args.out)
    else:
        path = write_report(args.run_dir, args.out)
    print(path)
    if getattr(args, "json", False):
        from gpuroof.output import emit_json

        emit_json({"run_dir": str(Path(args.run_dir)), "report": str(path), "kind": "lab" if lab else "run"})
    return 0
