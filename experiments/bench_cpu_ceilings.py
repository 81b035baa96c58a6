"""gpuroof's CPU ceilings beside C references measured in the same run, and how long a measure takes.

References (experiments/reference/, compiled here with gcc -O3 -march=native -fopenmp):
  stream.c  STREAM-style copy and triad      -> DRAM bandwidth
  fma.c     12-accumulator vector FMA loop   -> float32 / float64 FLOP/s
Prints ratios gpuroof / reference (targets: DRAM ≥ 0.95 × best of copy and triad; compute ≥ 0.95 ×
the FMA loop) and the wall time of `gpuroof measure --quick` (≤ 30 s) and the full measure (≤ 3 min).
Writes results/<device>/bench_cpu_ceilings.csv.

    python experiments/bench_cpu_ceilings.py [--skip-full]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
REF = Path(__file__).resolve().parent / "reference"
sys.path.insert(0, str(ROOT))

from gpuroof.backends.cpu import CpuBackend  # noqa: E402
from gpuroof.results import atomic_write_csv, slug  # noqa: E402


def build(tmp: Path) -> dict[str, Path]:
    if not shutil.which("gcc"):
        sys.exit("bench: gcc not found; the references need gcc with OpenMP")
    out = {}
    for name, extra in (("stream", []), ("fma", ["-ffp-contract=fast"])):
        exe = tmp / name
        subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", *extra, str(REF / f"{name}.c"), "-o", str(exe)],
                       check=True)
        out[name] = exe
    return out


def run_ref(exe: Path, *args: str) -> dict[str, float]:
    r = subprocess.run([str(exe), *args], check=True, capture_output=True, text=True)
    return {k: float(v) for k, v in (line.split() for line in r.stdout.strip().splitlines())}


def gpuroof_measure(out: Path, quick: bool) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "gpuroof", "measure", "--backend", "cpu", "--out", str(out), "--json"]
    if quick:
        cmd.append("--quick")
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1]), time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-full", action="store_true", help="only the quick measure")
    args = ap.parse_args()
    backend = CpuBackend()
    llc = backend.cache_bytes()
    elements = str(8 * llc // 8)  # each STREAM array 8× the last-level cache, like gpuroof's buffer
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exe = build(tmp)
        stream = run_ref(exe["stream"], elements, "20")
        fma = run_ref(exe["fma"])
        quick, t_quick = gpuroof_measure(tmp / "quick", quick=True)
        full, t_full = (None, None) if args.skip_full else gpuroof_measure(tmp / "full", quick=False)
        stream2 = run_ref(exe["stream"], elements, "20")  # again after: the machine's drift shows
        fma2 = run_ref(exe["fma"])
    best_bw = max(stream["copy"], stream["triad"], stream2["copy"], stream2["triad"])
    rows = []
    for label, res, secs in (("quick", quick, t_quick), ("full", full, t_full)):
        if res is None:
            continue
        c = res["ceilings"]
        rows.append({"measure": label, "wall_s": secs,
                     "dram_Bps": c["bandwidth"]["dram"], "stream_best_Bps": best_bw,
                     "dram_ratio": c["bandwidth"]["dram"] / best_bw,
                     "float32_flops": c["compute"]["float32"],
                     "fma_ref_float32": max(fma["float32"], fma2["float32"]),
                     "float32_ratio": c["compute"]["float32"] / max(fma["float32"], fma2["float32"]),
                     "float64_flops": c["compute"]["float64"],
                     "fma_ref_float64": max(fma["float64"], fma2["float64"]),
                     "float64_ratio": c["compute"]["float64"] / max(fma["float64"], fma2["float64"])})
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(f"STREAM (2 runs): copy {stream['copy'] / 1e9:.1f} / {stream2['copy'] / 1e9:.1f} GB/s, "
          f"triad {stream['triad'] / 1e9:.1f} / {stream2['triad'] / 1e9:.1f} GB/s")
    print(f"FMA loop (2 runs): float32 {fma['float32'] / 1e9:.1f} / {fma2['float32'] / 1e9:.1f} GFLOP/s, "
          f"float64 {fma['float64'] / 1e9:.1f} / {fma2['float64'] / 1e9:.1f} GFLOP/s")
    for r in rows:
        print(f"{r['measure']:>5}: wall {r['wall_s']:.1f} s | DRAM {r['dram_Bps'] / 1e9:.1f} GB/s = "
              f"{r['dram_ratio']:.3f}× STREAM | float32 {r['float32_flops'] / 1e9:.1f} GFLOP/s = "
              f"{r['float32_ratio']:.3f}× | float64 {r['float64_flops'] / 1e9:.1f} GFLOP/s = {r['float64_ratio']:.3f}×")
    dest = ROOT / "results" / slug(backend.device_info()["name"])
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(dest / "bench_cpu_ceilings.csv", df)
    print(f"table: {dest / 'bench_cpu_ceilings.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
