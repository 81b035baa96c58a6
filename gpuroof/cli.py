"""Command line: parses, calls, prints. `main(argv) -> exit code` (0 ok, 1 runtime failure, 2 bad input)."""
from __future__ import annotations

import argparse
import signal
from importlib import import_module
import sys
import threading
import traceback
from typing import Callable

from gpuroof import __version__
from gpuroof.errors import MeasurementError, UsageError
from gpuroof.output import emit_json, emitted, json_mode
from gpuroof.results import RESULTS_ENV, results_dir
from gpuroof.units import parse_bytes, si, text_table


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _size(text: str) -> int:
    try:
        n = parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return n


def _device(text: str) -> int | str:
    if text == "all":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: a device index (0, 1, ...) or 'all'")


def _index(text: str) -> int:
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: a device index (0, 1, ...)")


def _list(text: str) -> list[str]:
    """A comma-separated list: empty (which would silently mean 'all') and repeated items refused."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r}: empty (give one or more names, or leave the option out)")
    twice = sorted({t for t in items if items.count(t) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{text!r}: {', '.join(twice)} given more than once")
    return items


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

    info = sub.add_parser("info", parents=[common], help="devices found, backend, theoretical peaks")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_info)

    m = sub.add_parser("measure", parents=[common], help="sweep intensity: measured memory and compute ceilings")
    m.add_argument("--device", type=_device, default=0, help="device index or 'all' (default 0)")
    m.add_argument("--dtype", type=_list, default=None, help="comma-separated dtypes (default: all the backend has)")
    m.add_argument("--quick", action="store_true", help="fewer points and shorter timing (about 30 s on 2 cores)")
    m.add_argument("--buffer-size", type=_size, default=None,
                   help="bytes per sweep array, e.g. 512M or 2GiB (default: ≥ 8× last-level cache)")
    m.add_argument("--levels", default=None,
                   help="memory levels to measure, e.g. l1,l2,dram (default: every level the device has: "
                        "l1,l2,l3,dram on a CPU; shared,l1,l2,dram on a GPU)")
    m.add_argument("--no-matrix", action="store_true", help="skip the GEMM (matrix unit) ceilings")
    m.add_argument("--out", default=None, help="run directory (default RESULTS_DIR/<device>/<UTC time>/)")
    m.add_argument("--json", action="store_true", help="stdout: one JSON document (tables go to stderr)")
    m.set_defaults(func=cmd_measure)

    r = sub.add_parser("run", parents=[common],
                       help="the main job: measure, bench the workloads, draw the figures, write report.html")
    r.add_argument("--device", type=_device, default=0, help="device index or 'all' (default 0)")
    r.add_argument("--quick", action="store_true", help="the short version (about a minute on 2 cores)")
    r.add_argument("--out", default=None, help="run directory (default RESULTS_DIR/<device>/<UTC time>/)")
    r.add_argument("--format", type=_list, default=["png", "svg"], help="figure formats (png, svg, pdf)")
    r.add_argument("--json", action="store_true", help="stdout: one JSON document (tables go to stderr)")
    r.set_defaults(func=cmd_run)

    for module in ("bench", "plot", "report", "compare", "check", "merge", "profile"):
        import_module(f"gpuroof.commands.{module}").register(sub, common)

    show = sub.add_parser("show", parents=[common], help="print the summary of a run directory")
    show.add_argument("run_dir", help="a run directory (or its run.json)")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=cmd_show)
    for parser in sub.choices.values():  # one contract: --json and --results-dir on every command
        options = {o for a in parser._actions for o in a.option_strings}
        if "--json" not in options:
            parser.add_argument("--json", action="store_true", help="stdout: one JSON document (text goes to stderr)")
        if "--results-dir" not in options:
            parser.add_argument("--results-dir", default=argparse.SUPPRESS, metavar="DIR",
                                help=f"where run directories go and are looked up (default ${RESULTS_ENV}, "
                                     "else ./results)")
    return p


def _devices(args: argparse.Namespace) -> list[int]:
    from gpuroof.backends import device_count

    n = device_count(args.backend)
    if args.device == "all":
        return list(range(n))
    if args.device >= n:
        raise UsageError(f"--device {args.device}: this machine has {n} device(s) for the "
                         f"{args.backend} backend (allowed: 0..{n - 1} or all)")
    return [args.device]


def cmd_info(args: argparse.Namespace) -> int:
    from gpuroof.backends import device_count, get_backend, resolve_name

    name = resolve_name(args.backend)
    devices = []
    for i in range(device_count(name)):
        b = get_backend(name, i)
        try:
            max_sm, max_mem = b.max_clocks()
            info = b.device_info()
            clock, clock_source = max_sm, "max clock"
            if not max_sm and info.get("nominal_clock_mhz"):  # a VM has no cpufreq: the clock /proc/cpuinfo shows
                clock, clock_source = info["nominal_clock_mhz"], "nominal clock from /proc/cpuinfo, not measured"
            devices.append({"device": info, "dtypes": list(b.dtypes()),
                            "theoretical_at_max_clock": b.theoretical(clock, max_mem) if (clock or max_mem) else None,
                            "theoretical_clock_source": clock_source if clock else None,
                            "max_clocks_mhz": {"sm": max_sm, "mem": max_mem}})
        finally:
            b.close()
    out = {"backend": name, "devices": devices}
    if args.json:
        emit_json(out)
        return 0
    print(f"backend: {name}")
    for d in devices:
        for line in device_lines(name, d):
            print(line)
    return 0


#: The run.json sections `summary_table` reads.
SUMMARY_KEYS = ("theoretical", "ratios", "ridge_points", "median_clocks", "fit", "validation", "conventions")


def device_lines(backend: str, d: dict) -> list[str]:
    """`gpuroof info` for one device, in its own words: cores, ISA and caches on a CPU; SMs on a GPU."""
    dev, clocks = d["device"], d["max_clocks_mhz"]
    lines = [f"device {dev.get('index', 0)}: {dev['name']}"]
    if backend == "cpu":
        lines.append(f"  cores: {dev.get('physical_cores') or '?'} physical, {dev.get('logical_cpus') or '?'} logical, "
                     f"{dev.get('cores_used') or '?'} used")
        vec = dev.get("vector_unit") or {}
        lines.append(f"  ISA: {', '.join(dev.get('isa') or []) or '-'}"
                     + (f"; vector unit {vec['width_bits']} bit x {vec['fma_pipes']} FMA pipes" if vec else ""))
        caches = [f"L{c.get('level')} {c.get('type', '')} {c.get('size_bytes', 0) // 1024} KiB"
                  + (f" per {c['shared_by_cpus']} CPUs" if c.get("shared_by_cpus", 1) > 1 else " per core")
                  for c in dev.get("caches") or [] if isinstance(c, dict)]
        lines.append(f"  caches: {'; '.join(caches) or '-'}")
        lines.append(f"  clock: max {clocks['sm'] or '-'} MHz, nominal {dev.get('nominal_clock_mhz') or '-'} MHz")
    else:
        if dev.get("multiprocessors"):
            lines.append(f"  SMs: {dev['multiprocessors']}")
        lines.append(f"  max clocks: SM {clocks['sm'] or '-'} MHz, memory {clocks['mem'] or '-'} MHz")
    lines.append(f"  dtypes: {', '.join(d['dtypes'])}")
    theo = d["theoretical_at_max_clock"]
    if theo:
        lines.append(f"  theoretical peaks (at the {d['theoretical_clock_source']}):")
        for dt, v in theo["compute"].items():
            lines.append(f"    {dt}: {si(v, 'FLOP/s')}")
        if (theo.get("bandwidth") or {}).get("dram"):
            lines.append(f"    dram: {si(theo['bandwidth']['dram'], 'B/s')}")
    else:
        lines.append("  theoretical peaks: unknown (no clock reported)")
    return lines


def summary_table(meta: dict) -> str:
    """Measured ceilings beside theoretical ones, with ratios and ridge points."""
    rows = [("ceiling", "measured", "theoretical", "ratio", "ridge FLOP/B")]
    theo, ratios = meta["theoretical"], meta["ratios"]
    for lvl, v in meta["ceilings"]["bandwidth"].items():
        r = ratios["bandwidth"].get(lvl)
        rows.append((f"{lvl} bandwidth", si(v, "B/s"), si(theo["bandwidth"].get(lvl), "B/s"),
                     f"{r:.3f}" if r else "-", ""))
    for unit, v in meta["ceilings"]["compute"].items():
        r = ratios["compute"].get(unit)
        rows.append((unit, si(v, "FLOP/s"), si(theo["compute"].get(unit), "FLOP/s"),
                     f"{r:.3f}" if r else "-", f"{meta['ridge_points'][unit]:.3g}"))
    lines = text_table(rows)
    q = meta.get("quality") if isinstance(meta.get("quality"), dict) else None
    if q is not None:  # first: whether these numbers are the hardware's
        lines[:0] = ([f"quality: NOT OK ({len(q['reasons'])} reason(s))"] + [f"  - {r}" for r in q["reasons"]]
                     if not q.get("ok") else ["quality: ok (quiet machine, levels in order, fit within limits)"]) \
            + [f"  warning: {w}" for w in q.get("warnings") or []]
    fit = meta["fit"]
    clocks = meta["median_clocks"]
    core = "core" if meta.get("backend") == "cpu" else "SM"  # the device's own word
    lines.append(f"clocks (median during points): {core} {clocks['sm_clock_mhz'] or '-'} MHz, "
                 f"memory {clocks['mem_clock_mhz'] or '-'} MHz; throttled points: {meta['throttled_points']}")
    cc = meta.get("core_clock") if isinstance(meta.get("core_clock"), dict) else None
    if cc and cc.get("measured_mhz"):
        lines.append(f"core clock measured under load: {cc['measured_mhz']:.0f} MHz (dependent-add chain; "
                     f"the OS reports {cc.get('os_reported_mhz') or '-'} MHz); theoretical is at the measured clock"
                     + (f" ({cc['reason']})" if cc.get("reason") else ""))
    elif cc and cc.get("reason"):
        lines.append(f"core clock: {cc['reason']}; no theoretical peak at the measured clock")
    stat = meta.get("ceiling_statistic") if isinstance(meta.get("ceiling_statistic"), dict) else None
    if stat and stat.get("by_ceiling"):
        spread = ", ".join(f"{k} {v['spread']:.1%}" for k, v in stat["by_ceiling"].items()
                           if isinstance(v, dict) and isinstance(v.get("spread"), (int, float)))
        lines.append(f"ceiling = {stat['statistic']}; spread (p90-p10)/p90: {spread}")
    lines.append(f"fit to min(P, B*I): median |dev| {fit['median_abs_deviation']:.3f}, "
                 f"max |dev| {fit['max_abs_deviation']:.3f} over {fit['points']} points"
                 + (f" ({fit['excluded_cache_resident']} cache-resident points near the ridge left out)"
                    if fit.get("excluded_cache_resident") else "")
                 + f"; invalid points: {meta['validation']['invalid']}"
                 f" of {meta['validation']['points']}")
    lines.append(f"convention: {meta['conventions']['flops']}; bytes: {meta['conventions']['bytes']}")
    return "\n".join(lines)


def json_summary(meta: dict, run_dir: object) -> dict:
    return {"run_dir": str(run_dir), "backend": meta["backend"], "device": meta["device"],
            "ceilings": meta["ceilings"], "theoretical": meta["theoretical"], "ratios": meta["ratios"],
            "ridge_points": meta["ridge_points"], "median_clocks": meta["median_clocks"],
            "fit": meta["fit"], "validation": meta["validation"], "status": meta["status"]}


def cmd_measure(args: argparse.Namespace) -> int:
    from gpuroof.measure import measure

    devices = _devices(args)
    if len(devices) > 1 and args.out:
        raise UsageError("--out with --device all: give no --out (one directory per device is made)")
    summaries = []
    for dev in devices:
        res = measure(args.backend, dev, args.dtype, args.quick, args.buffer_size, args.out,
                      argv=["gpuroof", *sys.argv[1:]], levels=args.levels, matrix=not args.no_matrix)
        print(summary_table(res.meta))
        print(f"run directory: {res.run_dir}")
        summaries.append(json_summary(res.meta, res.run_dir))
    if args.json:
        emit_json(summaries[0] if len(summaries) == 1 else {"runs": summaries})
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """measure -> bench (on the ceilings just measured) -> figures -> report.html, per device."""
    from gpuroof.backends import get_backend
    from gpuroof.bench import results_table, run_bench, write_into_run
    from gpuroof.measure import measure
    from gpuroof.plots import check_formats, make_figures
    from gpuroof.report import write_report
    from gpuroof.roofline import Roofline

    formats = check_formats(args.format)
    devices = _devices(args)
    if len(devices) > 1 and args.out:
        raise UsageError("--out with --device all: give no --out (one directory per device is made)")
    outputs = []
    for dev in devices:
        res = measure(args.backend, dev, quick=args.quick, out=args.out, argv=["gpuroof", *sys.argv[1:]])
        print(summary_table(res.meta))
        backend = get_backend(args.backend, dev)
        try:
            table = run_bench(backend, Roofline.from_dict(res.meta["ceilings"]),
                              size="small" if args.quick else "default")
        finally:
            backend.close()
        write_into_run(res.run_dir, table)
        print(results_table(table))
        figures = make_figures(res.run_dir, formats=formats)
        report = write_report(res.run_dir)
        print(f"figures: {', '.join(str(p) for paths in figures.values() for p in paths)}")
        print(f"report: {report}")
        outputs.append({**json_summary(res.meta, res.run_dir), "report": str(report),
                        "workloads": {"cases": int(len(table)), "valid": int(table["valid"].sum())}})
    if args.json:
        emit_json(outputs[0] if len(outputs) == 1 else {"runs": outputs})
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from gpuroof.results import load_run

    run = load_run(args.run_dir)
    if run.meta.get("ceilings"):
        missing = [k for k in SUMMARY_KEYS if not isinstance(run.meta.get(k), dict)]
        if missing:
            raise UsageError(f"{run.path / 'run.json'}: field {missing[0]}: missing or not an object "
                             f"(the summary needs {', '.join(SUMMARY_KEYS)})")
    if not run.meta.get("ceilings"):
        raise UsageError(f"{args.run_dir}: run is {run.meta['status']} and has no ceilings "
                         f"({run.meta.get('status_reason', 'not finished')})")
    if args.json:
        emit_json(json_summary(run.meta, run.path))
    else:
        print(f"{run.device_name} ({run.meta['backend']}), {run.meta.get('created_utc', '?')}")
        print(summary_table(run.meta))
    return 0


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
