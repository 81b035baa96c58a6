"""`gpuroof predict`: a saved model profile's time on other measured devices, op by op and whole."""
from __future__ import annotations

import argparse
from typing import Any

from gpuroof.commands import args as args_t
from gpuroof.output import emit_json

#: Ops listed per target in the text table (--top).
TOP = 10


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Declare `gpuroof predict` on the CLI's subparsers."""
    p = sub.add_parser("predict", help="predict a saved profile's time on other measured devices")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.add_argument("profile_dir", metavar="PROFILE_DIR", help="a directory `gpuroof profile` wrote (profile.json)")
    p.add_argument("--on", action="append", required=True, metavar="RUN_DIR",
                   help="a complete measure/run directory of the device to predict on (repeat for several)")
    p.add_argument("--top", type=args_t.positive, default=TOP, metavar="N",
                   help=f"ops listed per target, by predicted time (default {TOP})")
    p.add_argument("--json", action="store_true", help="stdout: one JSON document (tables go to stderr)")
    p.set_defaults(func=main)


def _text(doc: dict, top: int) -> str:
    from gpuroof.units import fmt_time as _t, text_table

    src = doc["source"]
    lines = [f"{doc['model']} ({doc['phase']}) profiled on {src['device'].get('name')}: "
             f"{_t(src['profiled_time_s'])} per repetition; ceilings {src['ceilings_source']}"]
    if src.get("quality") is False:
        lines.append("  NOT QUIET: the profile was taken on a busy machine; its op times may be inflated")
    lines.append("model: each op keeps its source efficiency, predicted = measured x roof_tgt / roof_src (roof: "
                 "max(FLOPs / its unit's ceiling, bytes / its level's bandwidth)); what has no roof is carried over")
    for tgt in doc["targets"]:
        c = tgt["carried_over"]
        lines += ["", f"on {tgt['device']} ({tgt['run_dir']}): predicted {_t(tgt['predicted_time_s'])} per "
                  f"repetition, {tgt['speedup']:.2f}x the source's speed",
                  f"  {tgt['ops_predicted']} ops predicted: {_t(tgt['predicted_ops_measured_time_s'])} measured -> "
                  f"{_t(tgt['predicted_ops_time_s'])} (pure roofline on the target {_t(tgt['roofline_time_s'])}; "
                  f"whole model at the roof {_t(tgt['roofline_bound_s'])})",
                  f"  carried over as measured: {_t(c['time_s'])} ({c['ops']} ops {_t(c['ops_time_s'])}, host "
                  f"{_t(c['host_time_s'])})"]
        if tgt.get("quality") is False:
            lines.append("  the target run's quality is not ok: its ceilings may be low (gpuroof show)")
        ops = sorted((r for r in tgt["ops"] if not r["carried_over"]), key=lambda r: -r["predicted_time_s"])
        rows = [("op", "module", "bound", "measured", "eff", "roof tgt", "predicted", "speedup")]
        for r in ops[:top]:
            bound = r["source_bound"] if r["source_bound"] == r["target_bound"] else \
                f"{r['source_bound']}->{r['target_bound']}"
            module = r["module"][-40:] if isinstance(r["module"], str) else ""
            rows.append((r["name"], module, f"{bound} {r['target_unit']}",
                         _t(r["measured_time_s"]), f"{r['source_efficiency']:.2f}", _t(r["target_roofline_time_s"]),
                         _t(r["predicted_time_s"]), f"{r['speedup']:.2f}x"))
        lines += [f"  top {min(top, len(ops))} ops by predicted time:", *("  " + t for t in text_table(rows))]
        if tgt.get("csv"):
            lines.append(f"  per op: {tgt['csv']}")
        if tgt.get("figure"):
            lines.append(f"  figure: {tgt['figure']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from gpuroof.predict import predict

    res = predict(args.profile_dir, args.on)
    doc = res.to_json(res.write())
    print(_text(doc, args.top))
    if args.json:
        emit_json(doc)
    return 0
