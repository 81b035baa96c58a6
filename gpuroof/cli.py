"""Command line: parses, calls, prints. `main(argv) -> exit code` (0 ok, 1 runtime failure, 2 bad input)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from typing import Callable

from gpuroof import __version__
from gpuroof.commands import (bench, check, compare, compile, info, measure, merge, plot, predict, profile,
                              report, run, show)
from gpuroof.errors import MeasurementError, UsageError
from gpuroof.defaults import RESULTS_ENV
from gpuroof.output import emit_json, emitted, json_mode


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


#: The subcommands in the order `gpuroof --help` lists them, one module of gpuroof/commands/ each.
COMMANDS = (info, compile, measure, run, bench, plot, report, compare, check, merge, profile, predict, show)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gpuroof", description="Measure a device's roofline and place real kernels on it.")
    p.add_argument("--version", action="version", version=f"gpuroof {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    common = _Parser(add_help=False)
    common.add_argument("--backend", default="auto", help="auto (cuda if usable, else cpu), cuda or cpu")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("--results-dir", default=argparse.SUPPRESS, metavar="DIR",
                        help=f"where run directories go and are looked up (default ${RESULTS_ENV}, else ./results)")

    for module in COMMANDS:
        module.register(sub, common)
    for parser in sub.choices.values():  # one contract: --json and --results-dir on every command
        options = {o for a in parser._actions for o in a.option_strings}
        if "--json" not in options:
            parser.add_argument("--json", action="store_true", help="stdout: one JSON document (text goes to stderr)")
        if "--results-dir" not in options:
            parser.add_argument("--results-dir", default=argparse.SUPPRESS, metavar="DIR",
                                help=f"where run directories go and are looked up (default ${RESULTS_ENV}, "
                                     "else ./results)")
    return p


def _fan_out(argv: list[str], args: argparse.Namespace) -> int | None:
    """--device all on a node with several CUDA devices: one child process per GPU, each pinned with
    CUDA_VISIBLE_DEVICES; None when there is nothing to fan out (the command then runs in-process)."""
    from gpuroof.backends import device_count, resolve_name

    if resolve_name(args.backend) != "cuda" or device_count("cuda") < 2:
        return None
    from gpuroof.fanout import exit_code, fan_out

    results = fan_out(argv, device_count("cuda"), say=lambda m: print(m, file=sys.stderr))
    for r in results:
        print(f"device {r.device}: {r.out}" + ("" if r.ok else f" (failed, exit {r.returncode})"))
    return exit_code(results)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (kill, a batch scheduler's time limit) ends a run like Ctrl-C: marked partial, no temp files."""
    raise KeyboardInterrupt


def _one_line(text: str) -> str:
    """A message stays one line even when it quotes a path or value with a line break in it."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        error = _one_line(f"gpuroof: error: {e}")
        print(error, file=sys.stderr)
        if "--json" in argv:
            emit_json({"command": next((a for a in argv if not a.startswith("-")), None), "exit_code": 2,
                       "error": error, "output": []})
        return 2
    as_json = bool(getattr(args, "json", False))
    from gpuroof.results import results_dir  # pandas and pydantic: after the parser, which --help ends in

    with json_mode(as_json) as printed, results_dir(getattr(args, "results_dir", None)) as root:
        rc, error = _call(argv, args, debug, root)
        if as_json and not emitted():  # a failure, or a command with nothing of its own to say in JSON
            emit_json({"command": args.command, "exit_code": rc, "error": error,
                       "output": "".join(printed.text).splitlines()})
    return rc


#: Commands that write run directories say where results live (--results-dir, $GPUROOF_RESULTS, ./results).
WRITES_RUNS = ("measure", "run", "bench", "check")


def _call(argv: list[str], args: argparse.Namespace, debug: bool, root: object) -> tuple[int, str | None]:
    """(exit code, the one-line error or None): 2 bad input, 1 runtime failure, 130 interrupted."""
    error = None
    try:
        if getattr(args, "device", None) == "all":
            rc = _fan_out(argv, args)
            if rc is not None:
                return rc, None
        func: Callable[[argparse.Namespace], int] = args.func
        rc = func(args)
        if args.command in WRITES_RUNS:  # after the run: bad input stays one line on stderr
            print(f"results directory: {root} (--results-dir, else ${RESULTS_ENV}, else ./results)")
        return rc, None
    except UsageError as e:
        if debug:
            traceback.print_exc()
        error = f"gpuroof: error: {e}"
        rc = 2
    except KeyboardInterrupt:
        from gpuroof.results import mark_interrupted

        left = ", ".join(str(p) for p in mark_interrupted())
        error = (f"gpuroof: interrupted; {left} marked partial" if left else
                 "gpuroof: interrupted; no run directory was left partial")
        rc = 130
    except (MeasurementError, Exception) as e:  # noqa: BLE001 - one line unless --debug
        if debug:
            traceback.print_exc()
        error = f"gpuroof: failed: {type(e).__name__}: {e}"
        rc = 1
    error = _one_line(error)
    print(error, file=sys.stderr)
    return rc, error


if __name__ == "__main__":
    sys.exit(main())
