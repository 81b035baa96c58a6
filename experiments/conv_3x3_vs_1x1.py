"""3x3 vs 1x1 convolution on the local device: FLOP ratio, measured time ratio, roofline-predicted ratio.

A 1x1 convolution does 9x fewer FLOPs than a 3x3 one on the same tensors, yet while the input and
output dominate the bytes its intensity is about 9x lower too: on the memory slope both take about
as long (time ratio near 1), and only once both are compute-bound does the 9x show. This sweeps the
channel count and puts measured numbers on that argument, with the roofline's prediction beside
them.

    python experiments/conv_3x3_vs_1x1.py [--backend auto|cpu|cuda] [--ceilings RUN_DIR]
                                          [--channels 1,4,16,64,256] [--hw 56] [--batch N | --min-input BYTES]

Every shape is NCHW with C_in = C_out = channels. By default the batch grows for few channels until
the input tensor is at least twice the last-level cache (and at least the bench preset's size),
so the memory-bound end really streams from DRAM instead of measuring call overhead; --batch fixes
it instead. Writes results/<device-slug>/conv_3x3_vs_1x1.csv (one row per implementation and channel
count, with both cases' shapes, times, intensities, bounds and efficiencies).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuroof.backends import get_backend  # noqa: E402
from gpuroof.bench import BenchSettings, bench_cases, resolve_target  # noqa: E402
from gpuroof.errors import UsageError  # noqa: E402
from gpuroof.results import atomic_write_csv, slug  # noqa: E402
from gpuroof.workloads import Case  # noqa: E402
from gpuroof.workloads.conv2d import CONV2D, SHAPES, batch_for, impls_for, pairs  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="auto")
    p.add_argument("--ceilings", default=None, help="run directory with measured ceilings "
                   "(default: newest complete run for this device, else measure --quick first)")
    p.add_argument("--force", action="store_true", help="accept --ceilings from another device")
    p.add_argument("--channels", default=None, help="comma-separated channel counts (C_in = C_out)")
    p.add_argument("--hw", type=int, default=56, help="image height = width (default 56)")
    p.add_argument("--batch", type=int, default=None, help="images per launch for every channel count")
    p.add_argument("--min-input", type=int, default=None,
                   help="bytes the input tensor must hold at least (default: 2x the last-level cache)")
    p.add_argument("--impl", default=None, help="comma-separated implementations (default: all on this backend)")
    p.add_argument("--size", default="default", choices=("small", "default", "large"),
                   help="timing budget preset, as in gpuroof bench")
    return p.parse_args(argv)


def ratios(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (impl, channels): 3x3 over 1x1 for FLOPs, measured time and predicted time."""
    rows = []
    params = table["params"].map(json.loads)
    t = table.assign(c=params.map(lambda p: p["c_in"]), k=params.map(lambda p: p["ksize"]))
    for (impl, c), g in t.groupby(["impl", "c"], sort=False):
        r3, r1 = g[g["k"] == 3].iloc[0], g[g["k"] == 1].iloc[0]
        ok = bool(r3["valid"] and r1["valid"])
        rows.append({
            "impl": impl, "channels": int(c), "dtype": r3["dtype"],
            "flop_ratio": r3["flops"] / r1["flops"],
            "intensity_3x3": r3["intensity"], "intensity_1x1": r1["intensity"],
            "intensity_ratio": r3["intensity"] / r1["intensity"],
            "time_3x3_s": r3["time_s"], "time_1x1_s": r1["time_s"],
            "measured_time_ratio": r3["time_s"] / r1["time_s"] if ok else float("nan"),
            "predicted_time_3x3_s": r3["predicted_time_s"], "predicted_time_1x1_s": r1["predicted_time_s"],
            "predicted_time_ratio": r3["predicted_time_s"] / r1["predicted_time_s"],
            "bound_3x3": r3["bound"], "bound_1x1": r1["bound"],
            "efficiency_3x3": r3["efficiency"], "efficiency_1x1": r1["efficiency"],
            "roof_unit": r3["roof_unit"], "valid": ok,
            "notes": "; ".join(f"{k}: {n}" for k, n in (("3x3", r3["notes"]), ("1x1", r1["notes"])) if n),
        })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backend = get_backend(args.backend)
    try:
        name = backend.device_info().get("name") or backend.name
        default_chans = (1, 4, 16, 64, 256)
        chans = [int(c) for c in args.channels.split(",")] if args.channels else list(default_chans)
        _, _, min_batch, preset_input = SHAPES[(backend.name, "default")]
        min_input = args.min_input or max(2 * backend.cache_bytes(), preset_input)
        batches = {c: args.batch or batch_for(c, args.hw, min_batch, min_input) for c in chans}
        impls = args.impl.split(",") if args.impl else list(impls_for(backend.name))
        bad = [i for i in impls if i not in CONV2D.impls(backend.name)]
        if bad:
            raise UsageError(f"--impl {','.join(bad)}: allowed {', '.join(CONV2D.impls(backend.name))}")
        target = resolve_target(backend, args.ceilings, None, args.force)
        cases = [Case(CONV2D, p) for impl in impls for c in chans for p in pairs(batches[c], args.hw, c, impl)]
        table = bench_cases(backend, target.roof, cases, BenchSettings.preset(args.size, backend.name))
    except UsageError as e:
        print(f"conv_3x3_vs_1x1: error: {e}", file=sys.stderr)
        return 2
    finally:
        backend.close()
    out = ratios(table)
    out.insert(0, "device", name)
    out.insert(3, "batch", out["channels"].map(batches))
    out["hw"] = args.hw
    out["ceilings_source"] = str(target.source.path)
    dest = Path("results") / slug(name)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(dest / "conv_3x3_vs_1x1.csv", out)

    print(f"device: {name} ({backend.name}); ceilings: {target.source.path}; NCHW {args.hw}x{args.hw}, "
          "C_in = C_out = channels, batch n per channel count; 3x3 pad 1 vs 1x1 pad 0, stride 1")
    head = ("impl", "channels", "n", "FLOP 3x3/1x1", "I 3x3", "I 1x1", "measured t 3x3/1x1",
            "predicted t 3x3/1x1", "bound 3x3", "bound 1x1", "eff 3x3", "eff 1x1")
    rows = [head] + [(r.impl, str(r.channels), str(r.batch), f"{r.flop_ratio:.2f}", f"{r.intensity_3x3:.3g}",
                      f"{r.intensity_1x1:.3g}", f"{r.measured_time_ratio:.2f}",
                      f"{r.predicted_time_ratio:.2f}", str(r.bound_3x3), str(r.bound_1x1),
                      f"{r.efficiency_3x3:.2f}", f"{r.efficiency_1x1:.2f}") for r in out.itertuples()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for i, row in enumerate(rows):
        print("  ".join(c.rjust(w) if j > 0 else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in out.itertuples():
        if r.notes:
            print(f"note ({r.impl}, {r.channels} channels): {r.notes}")
    print(f"wrote {dest / 'conv_3x3_vs_1x1.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
