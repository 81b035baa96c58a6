"""`gpuroof profile`: a PyTorch model's ops counted, timed and placed."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gpuroof.commands import args as args_t
from gpuroof.defaults import PROFILE_REPS
from gpuroof.errors import UsageError
from gpuroof.output import emit_json


def register(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare `gpuroof profile` on the CLI's subparsers (cli.build_parser calls this)."""

    p = sub.add_parser("profile", help="place every op of a PyTorch model on the measured roofline")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.add_argument("--model", required=True,
                   help="FILE.py:FUNCTION returning (model, inputs), e.g. experiments/profile_models.py:mlp")
    p.add_argument("--batch", type=args_t.positive, default=None, help="passed to FUNCTION as batch=N")
    p.add_argument("--device", default="auto", help="auto (cuda if torch sees one, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--backward", action="store_true", help="profile forward and backward (of the outputs' sum)")
    p.add_argument("--ceilings", default=None,
                   help="run directory whose measured ceilings to use (default: the newest complete run "
                        "for this device under results/)")
    p.add_argument("--force", action="store_true", help="accept --ceilings from a different device")
    p.add_argument("--threads", type=args_t.positive, default=None, metavar="N",
                   help="cpu: run torch and the BLAS on N threads (1..logical CPUs), the device `measure "
                        "--threads N` names (default: torch's own count, the device of every logical CPU)")
    p.add_argument("--reps", type=args_t.positive, default=PROFILE_REPS,
                   help=f"profiled repetitions (default {PROFILE_REPS})")
    p.add_argument("--out", default=None,
                   help="directory for profile.csv, profile.json and the figure "
                        "(default results/<device>/profile/<FUNCTION>-b<N>/)")
    p.add_argument("--format", type=args_t.str_list, default=["png"], help="figure formats (png, svg, pdf)")
    p.add_argument("--json", action="store_true", help="stdout is exactly one JSON document")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from gpuroof.results import check_out_dir, results_root, slug
    from gpuroof.profile import load_model, profile_model
    from gpuroof.profiling.tables import module_table
    from gpuroof.plots import check_formats

    formats = check_formats(args.format)
    if args.threads is not None:  # refused before the model is built
        from gpuroof.backends.cpu.device import check_threads

        check_threads(args.threads)
        if str(args.device).startswith("cuda"):
            raise UsageError(f"--threads {args.threads}: a thread count makes a CPU device; --device "
                             f"{args.device} is a GPU (allowed: --device cpu, or leave --threads out)")
    if args.out:
        check_out_dir(args.out)  # refused before the model is loaded and timed
    model, inputs, name = load_model(args.model, args.batch)
    if args.backward:
        name += "-backward"
    try:
        res = profile_model(model, inputs, device=args.device, backward=args.backward, ceilings=args.ceilings,
                            force=args.force, reps=args.reps, name=name, threads=args.threads)
    except UsageError as e:  # name the CLI's flags, not the Python arguments
        msg = str(e)
        for arg, flag in (("device=", "--device "), ("ceilings", "--ceilings"), ("reps=", "--reps "),
                          ("threads=", "--threads ")):
            if msg.startswith(arg):
                msg = flag + msg[len(arg):]
        if msg.startswith("inputs:"):
            msg = f"--model {args.model}:" + msg[len("inputs:"):]
        raise UsageError(msg) from None
    out = Path(args.out) if args.out else results_root() / slug(res.device["name"]) / "profile" / name
    files = res.write(out, formats)
    if args.json:
        emit_json({**res.to_json(), "out_dir": str(out), "files": {k: str(v) for k, v in files.items()}})
        return 0
    print(res.summary())
    print()
    print(module_table(res.rows("module")))
    print()
    print(res.where_the_time_goes())
    print(f"files: {', '.join(str(p) for p in files.values())}")
    return 0
