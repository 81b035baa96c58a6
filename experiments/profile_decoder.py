"""A transformers decoder's prefill and decode step, and an encoder, profiled op by op on one device.

    python experiments/profile_decoder.py [--device cpu|cuda] [--ceilings RUN_DIR] [--reps N] [--backward]

GPT-2 small (random weights from its config, nothing downloaded) reads a prompt of 128 tokens
(prefill) and then generates one token reading its KV cache (decode); BERT-base encodes 128 tokens
given as keyword inputs with an attention mask. Each is profiled with `gpuroof profile`'s API and
its FLOP total compared with the closed form from the config; prefill and decode are then drawn on
one roofline. With --backward, GPT-2's forward and backward are profiled as well (op-time coverage
and FLOPs by module). Writes results/<device>/profile/<name>/ for each, and
results/<device>/profile/gpt2-prefill-decode.png and decoder.csv.

Needs gpuroof[transformers]. Prefill multiplies every weight by 128 tokens and lands right of the
ridge; decode multiplies it by one token and stays under the bandwidth slope (about 0.5 FLOP/B in
float32) whatever the machine.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pandas as pd

from gpuroof import api
from gpuroof.plots import render
from gpuroof.profiling.figure import figure_together
from gpuroof.results import atomic_write_bytes, atomic_write_csv, slug

HERE = Path(__file__).resolve().parent
PROMPT = 128
GPT2 = {"layers": 12, "width": 768, "heads": 12, "vocab": 50257}
BERT = {"layers": 12, "width": 768, "intermediate": 3072, "vocab": 30522}


def _models():
    spec = importlib.util.spec_from_file_location("profile_models", HERE / "profile_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gpt2_flops(b: int, q: int, k: int, backward: bool = False) -> int:
    """Closed form: per layer 2 * tokens * 12 E^2 of GEMMs and 4 * b * q * k * E of attention (dense),
    and the LM head; a backward doubles every GEMM (input and weight gradients) and does 10 * b * q * k * E
    of attention a layer."""
    n, e, v = GPT2["layers"], GPT2["width"], GPT2["vocab"]
    gemm = n * 24 * b * q * e * e + 2 * b * q * e * v
    att = n * 4 * b * q * k * e
    return gemm + att if not backward else 3 * gemm + att + n * 10 * b * q * k * e


def bert_flops(b: int, s: int) -> int:
    n, e, i = BERT["layers"], BERT["width"], BERT["intermediate"]
    return n * (8 * b * s * e * e + 4 * b * s * e * i + 4 * b * s * s * e) + 2 * b * e * e  # + the pooler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--ceilings", default=None, help="run directory (default: newest for this device)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--backward", action="store_true", help="also profile GPT-2's forward and backward")
    p.add_argument("--out", default=None, help="folder of the outputs (default: results/<device>/profile; "
                                              "the ceilings' run directory/profile keeps them with their run)")
    args = p.parse_args()
    models = _models()
    cases = [("gpt2-prefill", lambda: models.gpt2_prefill(1, seq=PROMPT), gpt2_flops(1, PROMPT, PROMPT), False),
             ("gpt2-decode", lambda: models.gpt2_decode(1, past=PROMPT), gpt2_flops(1, 1, PROMPT + 1), False),
             ("bert", lambda: models.bert(1, seq=PROMPT), bert_flops(1, PROMPT), False)]
    if args.backward:
        cases.append(("gpt2-prefill-backward", lambda: models.gpt2_prefill(1, seq=PROMPT),
                      gpt2_flops(1, PROMPT, PROMPT, backward=True), True))
    rows, results = [], {}
    for name, make, analytic, backward in cases:
        model, inputs = make()
        res = api.profile(model, inputs, device=args.device, ceilings=args.ceilings, reps=args.reps, name=name,
                          backward=backward)
        results[name] = res
        out = (Path(args.out) if args.out else Path("results") / slug(res.device["name"]) / "profile") / name
        res.write(out)
        t = res.totals
        att = res.ops[res.ops["op"].str.contains("attention")]
        rows.append({"model": name, "flops": t["flops"], "analytic_flops": analytic,
                     "flops_over_analytic": t["flops"] / analytic, "attention_flops": float(att["flops"].sum()),
                     "bytes": t["bytes"], "intensity": t["intensity"], "time_s": t["time_s"],
                     "op_time_coverage": t["op_time_coverage"], "headroom": t["headroom"], "bound": t["bound"],
                     "quality_ok": res.quality["ok"], "dir": str(out)})
        print(res.summary())
        print(f"  FLOPs / closed form: {t['flops'] / analytic:.4f}\n")
    base = Path(args.out) if args.out else Path("results") / slug(results["gpt2-prefill"].device["name"]) / "profile"
    table = pd.DataFrame(rows)
    atomic_write_csv(base / "decoder.csv", table)
    pair = [results["gpt2-prefill"], results["gpt2-decode"]]
    drawn = figure_together(pair, f"GPT-2 small, prefill of {PROMPT} tokens and one decode step, on "
                                  f"{pair[0].device['name']}")
    atomic_write_bytes(base / "gpt2-prefill-decode.png", render(drawn, "png"))
    print(table[["model", "flops_over_analytic", "intensity", "op_time_coverage", "headroom", "bound",
                 "quality_ok"]].to_string(index=False))


if __name__ == "__main__":
    main()
