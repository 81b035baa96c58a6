"""Cache-level and matrix ceilings beside simple references measured in the same run.

- Each cache-level plateau of `gpuroof measure` against a plain read loop in C
  (experiments/reference/readbw.c, gcc -O3 -march=native -ffast-math -fopenmp: every thread sums its
  share of a buffer of that level's plateau size, many passes): target within 10%.
- float32 / float64 matrix ceilings against the best `numpy.matmul` rate at large sizes
  (2048, 3072, 4096): target ≥ 0.97×.
- Wall time of `gpuroof measure --quick` (target ≤ 30 s).
Writes results/<device>/bench_hierarchy_matrix.csv.

    python experiments/bench_hierarchy_matrix.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuroof.backends.cpu import CpuBackend  # noqa: E402
from gpuroof.hierarchy import INSIDE, OUTSIDE  # noqa: E402
from gpuroof.results import atomic_write_csv, slug  # noqa: E402


def build_probe(tmp: Path) -> Path:
    exe = tmp / "readbw"
    subprocess.run(["gcc", "-O3", "-march=native", "-ffast-math", "-fopenmp",
                    str(ROOT / "experiments" / "reference" / "readbw.c"), "-o", str(exe)], check=True)
    return exe


def probe_bandwidth(exe: Path, size: int) -> float:
    out = subprocess.run([str(exe), str(size)], check=True, capture_output=True, text=True).stdout
    return float(out.split()[1])


def best_matmul(dtype: str) -> float:
    rates = []
    for n in (2048, 3072, 4096):
        a = np.random.default_rng(0).uniform(-1, 1, (n, n)).astype(dtype)
        b, c = a.copy(), np.empty_like(a)
        np.matmul(a, b, out=c)
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            np.matmul(a, b, out=c)
            ts.append(time.perf_counter() - t)
        rates.append(2 * n ** 3 / float(np.median(ts)))
    return max(rates)


def main() -> int:
    backend = CpuBackend()
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_probe(Path(tmp))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "gpuroof", "measure", "--backend", "cpu", "--quick",
                            "--out", f"{tmp}/run", "--json"], cwd=ROOT, check=True, capture_output=True, text=True)
        quick_s = time.perf_counter() - t
        run = json.loads(r.stdout.strip().splitlines()[-1])
        bw = run["ceilings"]["bandwidth"]
        rows = []
        below = 0
        for lv in backend.cache_levels():
            if lv.capacity_bytes is None:
                break
            # the middle of the plateau window gpuroof uses for this level
            lo, hi = OUTSIDE * below or 16 << 10, INSIDE * lv.capacity_bytes
            size = int(np.sqrt(lo * hi)) // 4096 * 4096
            ref = probe_bandwidth(exe, size)
            rows.append({"ceiling": f"{lv.name} bandwidth", "gpuroof": bw.get(lv.name), "reference": ref,
                         "reference_kind": f"C read loop, {size} B", "ratio": bw.get(lv.name, np.nan) / ref,
                         "target": "0.90..1.10"})
            below = lv.capacity_bytes
    for dtype in ("float32", "float64"):
        ref = best_matmul(dtype)
        got = run["ceilings"]["compute"].get(f"{dtype}-matrix")
        rows.append({"ceiling": f"{dtype}-matrix", "gpuroof": got, "reference": ref,
                     "reference_kind": "best numpy.matmul at n = 2048, 3072, 4096", "ratio": got / ref,
                     "target": ">= 0.97"})
    rows.append({"ceiling": "measure --quick wall time (s)", "gpuroof": quick_s, "reference": 30.0,
                 "reference_kind": "target", "ratio": quick_s / 30.0, "target": "<= 1"})
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    dest = ROOT / "results" / slug(backend.device_info()["name"])
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(dest / "bench_hierarchy_matrix.csv", df)
    print(f"table: {dest / 'bench_hierarchy_matrix.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
