"""gpuroof's CPU ceilings beside likwid-bench's, measured in one sitting on the same cores.

gpuroof side (one fresh process per vector width, since numba fixes the width when its code
generator starts): the quick intensity sweep (compute ceilings: the best FLOP rate of each dtype)
and the working-set sweep (read bandwidth: the median over each level's plateau), the same calls as
`gpuroof measure --quick`. On an AVX-512 machine it runs twice: the kernels as gpuroof builds them
(zmm) and as LLVM's 256-bit preference would (NUMBA_CPU_FEATURES=<host>,+prefer-256-bit: ymm).

likwid side, on as many threads as numba uses (one per core), before and after gpuroof (the best of
the two runs is the reference): peakflops_sp_avx512_fma / peakflops_avx512_fma / peakflops_sp_avx_fma
(avx_fma variants on an AVX2 machine) at 16 kB per thread, load_avx512 (load_avx) at 16 kB, 1 MB and
1 GB per thread: the L1, L2 and DRAM read bandwidth. Prints gpuroof / likwid per row (target ≥ 0.95).
Exits 1 with one line when likwid-bench is not installed.

    python experiments/bench_cpu_likwid.py
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: (row, likwid test ({isa}: avx512 or avx), bytes per thread)
ROWS = [
    ("float32 FLOP/s", "peakflops_sp_{isa}_fma", 16_000),
    ("float64 FLOP/s", "peakflops_{isa}_fma", 16_000),
    ("L1 read B/s", "load_{isa}", 16_000),
    ("L2 read B/s", "load_{isa}", 1_000_000),
    ("DRAM read B/s", "load_{isa}", 1_000_000_000),
]
#: On an AVX-512 machine, the ymm peak too: what kernels held to LLVM's 256-bit preference aim at.
YMM_ROW = ("float32 FLOP/s", "peakflops_sp_avx_fma", 16_000)

def gpuroof_side() -> dict:
    """Ceilings of this process's kernels (called in a child process, printed as JSON)."""
    from gpuroof.backends.cpu import CpuBackend
    from gpuroof.hierarchy import hierarchy_sweep, level_ceilings, summarize_hierarchy
    from gpuroof.sweep import SweepSettings, run_sweep, summarize
    from gpuroof.telemetry import Sampler

    backend = CpuBackend()
    levels = backend.cache_levels()
    with Sampler(backend.telemetry_source(), 0.1) as sampler:
        pts = summarize(run_sweep(backend, SweepSettings.preset(backend.dtypes(), quick=True), sampler).samples)
        hier = summarize_hierarchy(hierarchy_sweep(backend, levels, quick=True, sampler=sampler, budget_s=0.05,
                                                   min_reps=3, max_reps=10), levels)
    bandwidth, _ = level_ceilings(hier, levels)
    ok = pts[pts["valid"] & (pts["flops"] > 0)]
    return {"shape": backend._k.SHAPE.to_dict(), "threads": backend.threads,
            "compute": {d: float(v) for d, v in ok.groupby("dtype")["flops_per_s"].max().items()},
            "bandwidth": bandwidth}


def run_gpuroof(extra_features: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if extra_features:
        import llvmlite.binding as ll

        env["NUMBA_CPU_FEATURES"] = ll.get_host_cpu_features().flatten() + extra_features
    r = subprocess.run([sys.executable, __file__, "--gpuroof-side"], env=env, cwd=ROOT, check=True,
                       capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def busy(seconds: float = 1.0) -> float:
    """Fraction of the machine's CPU time used by anything over `seconds` (from /proc/stat): both
    tools time every core, so a run beside other work measures the scheduler, not the hardware."""
    import time

    def sample() -> tuple[int, int]:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(vals), vals[3] + vals[4]
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def likwid(test: str, per_thread: int, threads: int) -> float:
    """FLOP/s (peakflops tests) or bytes/s (load tests) of one likwid-bench run."""
    r = subprocess.run(["likwid-bench", "-t", test, "-W", f"N:{per_thread * threads // 1000}kB:{threads}"],
                       check=True, capture_output=True, text=True)
    key = "MFlops/s" if "peakflops" in test else "MByte/s"
    return float(re.findall(rf"^{key}:\s*([\d.]+)", r.stdout, re.MULTILINE)[-1]) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpuroof-side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.gpuroof_side:
        print(json.dumps(gpuroof_side()))
        return 0
    if not shutil.which("likwid-bench"):
        print("bench_cpu_likwid: likwid-bench not found (apt-get install likwid)", file=sys.stderr)
        return 1
    flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE).group(1).split())
    isa = "avx512" if "avx512f" in flags else "avx"
    import numba

    threads = numba.config.NUMBA_NUM_THREADS
    rows = [(row, test.format(isa=isa), size) for row, test, size in ROWS] + ([YMM_ROW] if isa == "avx512" else [])
    runs_ref: dict[tuple[str, int], list[float]] = {}

    def reference() -> None:
        for _, test, size in rows:
            runs_ref.setdefault((test, size), []).append(likwid(test, size, threads))

    before = busy()
    reference()
    runs = [run_gpuroof(None)] + ([run_gpuroof(",+prefer-256-bit")] if isa == "avx512" else [])
    reference()  # again after: the best of the two runs is the reference, both are shown
    ref = {key: max(v) for key, v in runs_ref.items()}

    from gpuroof.units import text_table

    table = [["quantity", "gpuroof kernels", "gpuroof", "likwid-bench", "likwid (before, after)", "ratio"]]
    for res in runs:
        for row, test, size in rows:
            if "FLOP" in row:
                got = res["compute"].get(row.split()[0])
            else:
                got = res["bandwidth"].get(row.split()[0].lower())
            per_thread = f"{size // 1000} kB" if size < 10**6 else f"{size // 10**6} MB" if size < 10**9 else "1 GB"
            table.append([row, f"{res['shape']['isa']} {res['shape']['vector_bits']}-bit",
                          f"{got / 1e9:.1f} G" if got else "n/a", f"{test} {per_thread}/thread",
                          ", ".join(f"{v / 1e9:.1f} G" for v in runs_ref[test, size]),
                          f"{got / ref[test, size]:.3f}" if got else "n/a"])
    print("\n".join(text_table(table)))
    after = busy()
    if max(before, after) > 0.1:
        print(f"warning: the machine was {100 * max(before, after):.0f}% busy around the run: "
              "the ratios measure the contention")
    print(f"threads: {threads}; gpuroof's kernels: {runs[0]['shape']['vector_width_reason'] or runs[0]['shape']['isa']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
