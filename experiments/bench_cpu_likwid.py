"""gpuroof's CPU ceilings beside likwid-bench's, measured in one sitting on the same cores, per ISA.

For each instruction set the machine can run, gpuroof runs in a fresh process whose numba code
generator is held to that ISA (NUMBA_CPU_FEATURES with the wider features turned off: the kernel
shape follows the code generated) and whose BLAS is held to it too (BLAS_ENV), and likwid-bench
runs its tests for the same ISA:

    native        the widest ISA (AVX-512 or AVX2): likwid's *_avx512 or *_avx tests
    avx2          on an AVX-512 machine, every avx512 feature off: likwid's *_avx tests
    sse2          AVX, AVX2, FMA and AVX-512 off: likwid's *_sse tests (SSE has no FMA: mul + add)

gpuroof side: `gpuroof run --backend cpu` (full, or --quick: the roofline and the bench's workloads
placed on it), the ceilings exactly as the run reports them (p90 over each plateau), the DRAM
plateau's spread, the fit, the core clock, the run's verdict, and every workload's achieved rate
over the roof it sits under (efficiency: at most 1 + the noise the bench allows, or the roof is
wrong).
likwid side, on as many threads as numba uses (one per core): peakflops*_fma (FLOP/s), and load at
a quarter of each cache level's capacity per thread and at 1 GB per thread (read bandwidth), plus
copy_mem (non-temporal copy) at 1 GB per thread, the like-for-like of a DRAM ceiling that a copy
loop with non-temporal stores set. Rounds alternate the tools (likwid, gpuroof per ISA, likwid...)
so that the host's drift hits both; each tool's best round is its figure, every round is shown.

A C chain of dependent adds (compiled here with the system's cc, one pinned process per core, wall
time on otherwise idle cores) is run beside, to check gpuroof's measured core clock (target: within 3%).

    python experiments/bench_cpu_likwid.py [--quick] [--rounds 2]

Exits 1 with one line when likwid-bench or a C compiler is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHAIN_C = r"""
#include <stdio.h>
#include <stdint.h>
#include <time.h>
int main(void) {
    uint64_t v = 0, blocks = 200000;
    struct timespec a, b, ca, cb;
    clock_gettime(CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ca);
    for (uint64_t i = 0; i < blocks; i++) {
        __asm__ volatile(
#define A10 "addq %1, %0\n" "addq %1, %0\n" "addq %1, %0\n" "addq %1, %0\n" "addq %1, %0\n" \
            "addq %1, %0\n" "addq %1, %0\n" "addq %1, %0\n" "addq %1, %0\n" "addq %1, %0\n"
            A10 A10 A10 A10 A10 A10 A10 A10 A10 A10
            : "+r"(v) : "r"((uint64_t)1));
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cb);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec);
    double c = (cb.tv_sec - ca.tv_sec) + 1e-9 * (cb.tv_nsec - ca.tv_nsec);
    /* MHz: 100 dependent adds per block, one per cycle; over the thread's CPU time, and over wall time */
    printf("%f %f\n", v / c / 1e6, v / s / 1e6);
    return v != blocks * 100;
}
"""

AVX512_OFF = ("avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd", "avx512ifma", "avx512vbmi",
              "avx512vbmi2", "avx512vnni", "avx512bitalg", "avx512vpopcntdq", "avx512bf16", "avx512fp16",
              "avx512vp2intersect", "evex512", "avx10.1-256", "avx10.1-512")
SSE2_OFF = ("avx", "avx2", "fma", "f16c", "fma4", "xop", "avxvnni", "avxifma", "avxvnniint8") + AVX512_OFF


def features_without(off: tuple[str, ...]) -> str:
    """The host's LLVM feature string with `off` turned off (numba's NUMBA_CPU_FEATURES)."""
    import llvmlite.binding as ll

    feats = [f for f in ll.get_host_cpu_features().flatten().split(",") if f and f[1:] not in off]
    return ",".join(feats + [f"-{f}" for f in off])


def likwid_tests(isa: str) -> dict[str, str]:
    """likwid-bench's test per quantity for one ISA."""
    if isa == "sse2":
        return {"float32": "peakflops_sp_sse", "float64": "peakflops_sse", "load": "load_sse",
                "copy_mem": "copy_mem_sse"}
    suffix = "avx512" if isa == "avx512" else "avx"
    return {"float32": f"peakflops_sp_{suffix}_fma", "float64": f"peakflops_{suffix}_fma",
            "load": f"load_{suffix}", "copy_mem": f"copy_mem_{suffix}"}


def likwid(test: str, per_thread: int, threads: int) -> float:
    """FLOP/s (peakflops tests) or bytes/s (load and copy tests) of one likwid-bench run."""
    r = subprocess.run(["likwid-bench", "-t", test, "-W", f"N:{max(1, per_thread * threads // 1000)}kB:{threads}"],
                       check=True, capture_output=True, text=True)
    key = "MFlops/s" if "peakflops" in test else "MByte/s"
    return float(re.findall(rf"^{key}:\s*([\d.]+)", r.stdout, re.MULTILINE)[-1]) * 1e6


#: The BLAS held to the same ISA as numba (OpenBLAS's core type; MKL's instruction cap): else the GEMM
#: roof and the BLAS-backed workloads keep the wider ISA, and the run's check of the vector roof
#: against the GEMM (quality.VECTOR_VS_BLAS) compares two instruction sets.
BLAS_ENV = {"avx2": {"OPENBLAS_CORETYPE": "Haswell", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
            "sse2": {"OPENBLAS_CORETYPE": "Core2", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}}


def run_gpuroof(features: str | None, quick: bool, out: Path, isa: str = "native") -> dict:
    """One `gpuroof run` in a fresh process, its numba held to `features` (None: native): run.json,
    with the placed workloads under `workloads_table`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **BLAS_ENV.get(isa, {}))
    env.pop("NUMBA_CPU_FEATURES", None)
    if features:
        env["NUMBA_CPU_FEATURES"] = features
        env["NUMBA_CACHE_DIR"] = str(out.parent / "numba-cache")  # a cache per feature set
    cmd = [sys.executable, "-m", "gpuroof", "run", "--backend", "cpu", "--out", str(out), "--json"] + \
        (["--quick"] if quick else [])
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    meta = json.loads((out / "run.json").read_text())
    import pandas as pd

    meta["workloads_table"] = pd.read_csv(out / "workloads.csv") if (out / "workloads.csv").exists() else None
    return meta


def workload_lines(run: dict) -> list[str]:
    """The run's workloads over their roofs: the highest efficiency, and every one flagged above."""
    from gpuroof.bench import NOISE_FLOOR

    wl = run.get("workloads_table")
    if wl is None or wl.empty:
        return ["  workloads: none placed"]
    placed = wl[wl["valid"].astype(bool) & wl["efficiency"].notna()]
    if placed.empty:
        return ["  workloads: none placed"]
    top = placed.sort_values("efficiency", ascending=False)
    above = top[top["above_roof"].fillna(False).astype(bool)]
    lines = [f"  workloads: {len(placed)} placed, achieved / roof at most {top['efficiency'].iloc[0]:.3f} "
             f"({top['name'].iloc[0]} {top['case'].iloc[0]} {top['impl'].iloc[0]}); "
             f"{len(above)} above their roof beyond the noise (>{NOISE_FLOOR:.0%} and the spread)"]
    lines += [f"    ABOVE: {r.name} {r.case} {r.impl} {r.efficiency:.3f} of the {r.roof_unit}/{r.level} roof: {r.notes}"
              for r in above.itertuples()]
    lines += [f"    {r.name} {r.case} {r.impl}: {r.efficiency:.3f} ({r.bound}-bound, {r.roof_unit})"
              for r in top.head(5).itertuples()]
    return lines


def c_chain_mhz(cc: str, cores: int, workdir: Path) -> tuple[float, float]:
    """The slowest core's clock from the C chain, one process pinned per core, all at once: over
    each process's CPU time (gpuroof's method, written again in C), and over wall time (which a
    virtual machine's host, running other guests on the same cores, drags down unseen)."""
    src, exe = workdir / "chain.c", workdir / "chain"
    if not exe.exists():
        src.write_text(CHAIN_C)
        subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    procs = [subprocess.Popen(["taskset", "-c", str(c), str(exe)], stdout=subprocess.PIPE, text=True)
             for c in range(cores)]
    got = [tuple(float(v) for v in p.communicate()[0].split()) for p in procs]
    return min(g[0] for g in got), min(g[1] for g in got)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="gpuroof run --quick (default: the full run)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of both tools (default 2)")
    ap.add_argument("--isa", default=None, help="comma list of native,avx2,sse2 (default: every one the CPU has)")
    args = ap.parse_args()
    if not shutil.which("likwid-bench"):
        print("bench_cpu_likwid: likwid-bench not found (apt-get install likwid)", file=sys.stderr)
        return 1
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        print("bench_cpu_likwid: no C compiler (cc or gcc) for the reference clock chain", file=sys.stderr)
        return 1
    from gpuroof.backends.cpu import CpuBackend
    from gpuroof.backends.cpu.device import isa_level
    from gpuroof.quality import Activity
    from gpuroof.units import text_table

    backend = CpuBackend()
    threads, cores = backend.threads, backend.facts["cores_used"]
    native = isa_level(backend.facts.get("flags", []))
    setups = {"native": (native, None)}
    if native == "avx512":
        setups["avx2"] = ("avx2", features_without(AVX512_OFF))
    if native in ("avx512", "avx2", "avx"):
        setups["sse2"] = ("sse2", features_without(SSE2_OFF))
    if args.isa:
        setups = {k: v for k, v in setups.items() if k in args.isa.split(",")}
    levels = {lv.name: lv.capacity_bytes for lv in backend.cache_levels() if lv.capacity_bytes}
    sizes = {name: cap // threads // 4 for name, cap in levels.items()} | {"dram": 1_000_000_000}

    work = Path(tempfile.mkdtemp(prefix="bench-cpu-likwid-"))
    activity = Activity()
    ref: dict[tuple[str, str, int], list[float]] = {}
    runs: dict[str, list[dict]] = {k: [] for k in setups}
    chain: list[tuple[float, float]] = []
    for rnd in range(args.rounds):
        chain.append(c_chain_mhz(cc, cores, work))
        for key, (isa, _) in setups.items():
            tests = likwid_tests(isa)
            for q in ("float32", "float64"):
                ref.setdefault((key, tests[q], 16_000), []).append(likwid(tests[q], 16_000, threads))
            for level, size in sizes.items():
                ref.setdefault((key, tests["load"], size), []).append(likwid(tests["load"], size, threads))
            ref.setdefault((key, tests["copy_mem"], sizes["dram"]), []).append(
                likwid(tests["copy_mem"], sizes["dram"], threads))
        for key, (isa, feats) in setups.items():
            runs[key].append(run_gpuroof(feats, args.quick, work / f"{key}-{rnd}", key))
        chain.append(c_chain_mhz(cc, cores, work))
    act = activity.stop()

    def per(size: int) -> str:
        return f"{size // 1000} kB" if size < 10**6 else f"{size // 10**6} MB" if size < 10**9 else "1 GB"

    table = [["ISA", "ceiling", "gpuroof (best round)", "rounds", "likwid test (per thread)", "likwid rounds", "ratio"]]
    for key, (isa, _) in setups.items():
        tests = likwid_tests(isa)
        best = {}
        for run in runs[key]:
            for kind in ("compute", "bandwidth"):
                for name, v in run["ceilings"][kind].items():
                    best.setdefault(name, []).append(v)
        rows = [(q, tests[q], 16_000) for q in ("float32", "float64")]
        rows += [(level, tests["load"], size) for level, size in sizes.items()]
        rows += [("dram", tests["copy_mem"], sizes["dram"])]
        for name, test, size in rows:
            got, theirs = best.get(name), ref[(key, test, size)]
            unit = "GFLOP/s" if "peakflops" in test else "GB/s"
            table.append([f"{key} ({runs[key][0]['device']['kernel_shape']['isa']} "
                          f"{runs[key][0]['device']['kernel_shape']['vector_bits']}-bit)", name,
                          f"{max(got) / 1e9:.1f} {unit}" if got else "n/a",
                          ", ".join(f"{v / 1e9:.1f}" for v in got or []), f"{test} {per(size)}",
                          ", ".join(f"{v / 1e9:.1f}" for v in theirs),
                          f"{max(got) / max(theirs):.3f}" if got else "n/a"])
    print("\n".join(text_table(table)))
    print()
    for key, rs in runs.items():
        for i, r in enumerate(rs):
            st = (r.get("ceiling_statistic") or {}).get("by_ceiling", {}).get("dram", {})
            clock = r.get("core_clock") or {}
            mhz = clock.get("measured_mhz")
            tuned = "; ".join(f"{t['dtype']} {t['level']}: {t['chosen']}"
                              for t in r["device"].get("kernel_shape", {}).get("tuned", []))
            cpu_c, wall_c = [c for c, _ in chain], [w for _, w in chain]
            bound = clock.get("lowest_mhz_the_plateaus_allow")
            print(f"{key} round {i + 1}: quality {'ok' if r['quality']['ok'] else 'NOT OK: ' + '; '.join(r['quality']['reasons'])}; "
                  f"DRAM spread {st.get('spread', float('nan')):.1%}; fit max |dev| {r['fit']['max_abs_deviation']:.3f}; "
                  f"core clock {f'{mhz:.0f} MHz' if mhz else 'not measured'} "
                  f"(C chain over CPU time {min(cpu_c):.0f}-{max(cpu_c):.0f} MHz"
                  + (f", gpuroof / C {mhz / max(cpu_c):.3f}" if mhz else "")
                  + f"; over wall time {min(wall_c):.0f}-{max(wall_c):.0f} MHz"
                  + (f"; the FMA plateau needs at least {bound * 1.05:.0f} MHz" if bound else "") + ")")
            print(f"  tuned: {tuned}")
            print("\n".join(workload_lines(r)))
    share = act["other_processes_share"]
    print(f"\nthreads: {threads}; other processes took {share:.1%} of the CPUs' time during the bench"
          + (" (the ratios measure the contention)" if share > 0.1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
