"""One machine as two devices: profile models on each, predict each from the other, compare.

    python experiments/predict_cross_device.py --out /tmp/xdev                      # 1 and 2 threads
    python experiments/predict_cross_device.py --run 1=RUN_DIR --run 2=RUN_DIR --out /tmp/xdev
    python experiments/predict_cross_device.py --pair isa --out /tmp/xisa          # native vs AVX2

`--pair threads` (default): each thread count N is a device of its own (`gpuroof measure --backend cpu
--quick --threads N`, unless `--run N=DIR` gives its run), and every model is profiled with the
matching `--threads` (torch and the BLAS on N threads). `--pair isa`, on an AVX-512 machine: the
native code and AVX2 code forced are the two devices, on every core: the roofline's numba kernels
held to AVX2 (NUMBA_CPU_FEATURES with every avx512 feature off, a numba cache of their own), the
BLAS too (OPENBLAS_CORETYPE, MKL_ENABLE_INSTRUCTIONS), and torch's kernels for the profile
(ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2); `--run native=DIR --run avx2=DIR` gives runs.
Then `gpuroof predict` carries the profile of one device to the other's roofline, and the prediction
is compared with the profile measured there: whole-model time per repetition (the profiles'
`totals.profiled_time_s`) and, per op predicted (matched by the op's name and index in the recorded
op sequence), the relative error |predicted - measured| / measured: its median, 90th percentile and
time-weighted median (each op weighted by its measured time on the target). Models: GPT-2 small
reading a 128-token prompt (random weights from its config, nothing downloaded) and the MLP of
experiments/profile_models.py. Prints one table and writes it to OUT/predict_cross_device.csv.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gpuroof import api
from gpuroof.units import fmt_time, text_table

HERE = Path(__file__).resolve().parent
MODELS = HERE / "profile_models.py"


@dataclass(frozen=True)
class Device:
    """One of the two devices: its label, the thread count it runs on (None: every core) and the
    environment its processes get."""

    label: str
    threads: int | None = None
    env: dict = field(default_factory=dict)

    @property
    def threads_args(self) -> list[str]:
        return ["--threads", str(self.threads)] if self.threads else []


def devices(pair: str, threads: str, out: Path) -> list[Device]:
    if pair == "threads":
        counts = [int(n) for n in threads.split(",")]
        if len(counts) != 2:
            sys.exit("--threads: two thread counts, e.g. 1,2")
        return [Device(f"{n}t", n) for n in counts]
    sys.path.insert(0, str(HERE))
    from bench_cpu_likwid import AVX512_OFF, BLAS_ENV, features_without

    if "avx512f" not in features_without(()):
        sys.exit("--pair isa: this CPU has no AVX-512, so there is no AVX2 code to force beside its own")
    avx2 = {"NUMBA_CPU_FEATURES": features_without(AVX512_OFF), "NUMBA_CACHE_DIR": str(out / "numba-cache-avx2"),
            **BLAS_ENV["avx2"], "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    return [Device("native"), Device("avx2", env=avx2)]


def _gpuroof(*argv: str, env: dict | None = None) -> dict:
    """`gpuroof ARGV --json` in a process of its own (as a user runs it): its document."""
    proc = subprocess.run([sys.executable, "-m", "gpuroof", *argv, "--json"], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"gpuroof {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


def measure(dev: Device, out: Path) -> Path:
    run = out / f"run-{dev.label}"
    print(f"measuring {dev.label} -> {run}", file=sys.stderr)
    doc = _gpuroof("measure", "--backend", "cpu", "--quick", *dev.threads_args, "--out", str(run), env=dev.env)
    return Path(doc.get("run_dir", run))


def model_spec(spec: str) -> tuple[str, str, str]:
    """FUNCTION[:BATCH] of experiments/profile_models.py, or FILE.py:FUNCTION[:BATCH]:
    (FILE.py:FUNCTION for --model, the batch or '', a short name for the folders)."""
    path, sep, rest = spec.rpartition(".py:")
    where, rest = (f"{path}.py", rest) if sep else (str(MODELS), spec)
    func, _, batch = rest.partition(":")
    return f"{where}:{func}", batch, func + (f"-b{batch}" if batch else "")


def profile(spec: str, dev: Device, run: Path, reps: int, out: Path, backward: bool = False) -> Path:
    model, batch, name = model_spec(spec)
    where = out / f"profile-{name}{'-bwd' if backward else ''}-{dev.label}"
    print(f"profiling {spec}{' forward+backward' if backward else ''} on {dev.label} -> {where}", file=sys.stderr)
    _gpuroof("profile", "--model", model, *(["--batch", batch] if batch else []), "--device", "cpu",
             *(["--backward"] if backward else []), *dev.threads_args, "--ceilings", str(run), "--reps", str(reps),
             "--out", str(where), "--format", "png", env=dev.env)
    return where


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value at half of the total weight (values sorted)."""
    if not len(values) or weights.sum() <= 0:
        return float("nan")
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def compare(src_profile: Path, tgt_profile: Path, tgt_run: Path) -> dict:
    """Predicted (from the source profile on the target's run) against the target's own profile."""
    doc = api.predict(src_profile, on=[tgt_run], write=True)
    (t,) = doc["targets"]
    measured = json.loads((tgt_profile / "profile.json").read_text())
    pred = pd.DataFrame(t["ops"])
    meas = pd.DataFrame(measured["ops"])[["name", "op", "time_s"]].rename(columns={"time_s": "target_time_s"})
    both = pred[~pred["carried_over"].astype(bool)].merge(meas, on=["name", "op"], how="inner")
    both = both[both["target_time_s"] > 0]
    err = (both["predicted_time_s"] - both["target_time_s"]).abs() / both["target_time_s"]
    whole_meas = float(measured["totals"]["profiled_time_s"])
    return {"source_s": doc["source"]["profiled_time_s"], "predicted_s": t["predicted_time_s"],
            "measured_s": whole_meas, "error": t["predicted_time_s"] / whole_meas - 1,
            "roofline_s": t["roofline_bound_s"], "carried_s": t["carried_over"]["time_s"],
            "ops_compared": int(len(both)), "ops_predicted": t["ops_predicted"],
            "op_median": float(err.median()) if len(err) else float("nan"),
            "op_p90": float(err.quantile(0.9)) if len(err) else float("nan"),
            "op_time_weighted_median": weighted_median(err.to_numpy(), both["target_time_s"].to_numpy()),
            "src_quality": (json.loads((src_profile / "profile.json").read_text()).get("quality") or {}).get("ok"),
            "tgt_quality": (measured.get("quality") or {}).get("ok")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder of the runs, profiles and the table")
    p.add_argument("--run", action="append", default=[], metavar="LABEL=RUN_DIR",
                   help="an existing run of a device (1=DIR for 1 thread; native=DIR, avx2=DIR); else it is "
                        "measured with measure --quick")
    p.add_argument("--pair", choices=("threads", "isa"), default="threads",
                   help="the two devices: two thread counts (default) or native vs AVX2 code")
    p.add_argument("--threads", default="1,2", help="--pair threads: the two thread counts (default 1,2)")
    p.add_argument("--models", default="gpt2_prefill,mlp:1,mlp:256",
                   help="FUNCTION[:BATCH] of experiments/profile_models.py or FILE.py:FUNCTION[:BATCH], "
                        "comma-separated")
    p.add_argument("--backward", action="store_true", help="profile forward and backward (gpuroof profile --backward)")
    p.add_argument("--reps", type=int, default=5, help="profiled repetitions per model and device")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    devs = devices(a.pair, a.threads, out)
    given = {k if a.pair == "isa" else f"{k}t": Path(v) for k, _, v in (r.partition("=") for r in a.run)}
    runs = {d.label: given.get(d.label) or measure(d, out) for d in devs}
    rows = []
    for spec in a.models.split(","):
        profiles = {d.label: profile(spec, d, runs[d.label], a.reps, out, a.backward) for d in devs}
        for src, tgt in ((devs[0].label, devs[1].label), (devs[1].label, devs[0].label)):
            r = compare(profiles[src], profiles[tgt], runs[tgt])
            rows.append({"model": spec + (" fwd+bwd" if a.backward else ""), "direction": f"{src} -> {tgt}", **r})
    table = pd.DataFrame(rows)
    table.to_csv(out / "predict_cross_device.csv", index=False)
    lines = [("model", "direction", "source", "predicted", "measured", "error", "roofline", "carried",
              "ops", "op median", "op p90", "op time-wtd median", "quiet")]
    for r in rows:
        lines.append((r["model"], r["direction"], fmt_time(r["source_s"]), fmt_time(r["predicted_s"]),
                      fmt_time(r["measured_s"]), f"{r['error']:+.1%}", fmt_time(r["roofline_s"]),
                      fmt_time(r["carried_s"]), f"{r['ops_compared']}/{r['ops_predicted']}",
                      f"{r['op_median']:.1%}", f"{r['op_p90']:.1%}", f"{r['op_time_weighted_median']:.1%}",
                      f"{r['src_quality']}/{r['tgt_quality']}"))
    print("\n".join(text_table(lines)))
    print(f"runs: {', '.join(f'{k} {v}' for k, v in runs.items())}; table: {out / 'predict_cross_device.csv'}")


if __name__ == "__main__":
    main()
