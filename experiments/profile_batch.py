"""The TPU paper's argument on your device: MLP, LSTM and CNN at a small and a large batch, profiled op by
op with `gpuroof profile`, each whole model then placed on the measured roofline.

    python experiments/profile_batch.py [--device cpu|cuda] [--ceilings RUN_DIR]

Writes results/<device>/profile/<model>-b<batch>/ (profile.csv, profile.json, profile.png) for each,
and results/<device>/profile/batch.csv and batch.png: one row and one point per (model, batch).
At batch 1 the MLP and the LSTM read each weight for a handful of FLOPs and sit under the bandwidth
slope; a large batch reuses every weight and moves them toward the compute roof.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pandas as pd

from gpuroof import api
from gpuroof.plots import draw_roofline, render
from gpuroof.results import atomic_write_bytes, atomic_write_csv, slug

HERE = Path(__file__).resolve().parent
BATCHES = {"mlp": (1, 256), "lstm": (1, 64), "cnn": (1, 32)}


def _models():
    spec = importlib.util.spec_from_file_location("profile_models", HERE / "profile_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--ceilings", default=None, help="run directory (default: newest for this device)")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    models = _models()
    rows, meta, device = [], None, None
    for name, batches in BATCHES.items():
        for batch in batches:
            model, x = getattr(models, name)(batch=batch)
            res = api.profile(model, x, device=args.device, ceilings=args.ceilings, reps=args.reps,
                              name=f"{name}-b{batch}")
            device, meta = res.device, res.meta
            out = Path("results") / slug(device["name"]) / "profile" / f"{name}-b{batch}"
            res.write(out)
            t = res.totals
            rows.append({"model": name, "batch": batch, "flops": t["flops"], "bytes": t["bytes"],
                         "intensity": t["intensity"], "time_s": t["time_s"],
                         "achieved_flops": t["achieved_flops"], "attainable_flops": t["attainable_flops"],
                         "efficiency": t["efficiency"], "predicted_time_s": t["predicted_time_s"],
                         "headroom": t["headroom"], "bound": t["bound"], "dtype": "float32",
                         "op_time_coverage": t["op_time_coverage"], "dir": str(out)})
            print(res.summary())
    table = pd.DataFrame(rows)
    base = Path("results") / slug(device["name"]) / "profile"
    atomic_write_csv(base / "batch.csv", table)
    kernels = pd.DataFrame({"x": table["intensity"], "y": table["achieved_flops"], "dtype": table["dtype"],
                            "kernel": table["model"], "label": [f"{m} b{b}" for m, b in zip(table["model"],
                                                                                          table["batch"])],
                            "valid": True, "above": False})
    drawn = draw_roofline(meta, kernels, "models", title=f"MLP, LSTM and CNN by batch on {device['name']}",
                          notes=["Each point: one whole forward pass (FLOPs from FlopCounterMode, compulsory "
                                 "bytes, op time from torch.profiler)."])
    atomic_write_bytes(base / "batch.png", render(drawn, "png"))
    print(table[["model", "batch", "intensity", "achieved_flops", "efficiency", "bound", "headroom"]]
          .to_string(index=False))


if __name__ == "__main__":
    main()
