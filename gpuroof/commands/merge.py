"""`gpuroof merge`: many runs as one long table."""
from __future__ import annotations

import argparse
from typing import Any
import sys



def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof merge` on the CLI's subparsers."""
    p = sub.add_parser("merge", parents=[common],
                       help="every run below some directories as one long-form table (CSV or Parquet)")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="directories searched for run directories")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="FILE.csv or FILE.parquet (Parquet needs pyarrow)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gpuroof.results import check_out_file
    from gpuroof.merge import merge, out_format, write_table

    out_format(args.out)  # refuse a bad --out before reading anything
    check_out_file(args.out)
    m = merge(args.dirs)
    write_table(m.table, args.out)
    for s in m.skipped:
        print(f"gpuroof: skipped {s.path}: {s.reason}", file=sys.stderr)
    for s in m.notes:
        print(f"gpuroof: note {s.path}: {s.reason}", file=sys.stderr)
    counts = m.table["record"].value_counts().to_dict()
    print(f"merged {len(m.runs)} run(s): {counts.get('ceiling', 0)} ceiling rows, "
          f"{counts.get('workload', 0)} workload rows -> {args.out}"
          + (f"; skipped {len(m.skipped)}" if m.skipped else ""))
    if getattr(args, "json", False):
        from gpuroof.output import emit_json

        emit_json({"out": str(args.out), "runs": len(m.runs), "rows": {str(k): int(v) for k, v in counts.items()},
                   "skipped": [{"path": str(s.path), "reason": s.reason} for s in m.skipped]})
    return 0
