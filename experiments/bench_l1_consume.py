"""What an L1 read costs when every loaded byte is used: pure loads (likwid-bench's `load` tests)
beside loads folded by XOR (gpuroof's validated read loop), in C on the same cores, per ISA.

likwid-bench's load kernels move data into registers and drop it; no result depends on it, so
nothing can check that it was read. gpuroof's read loop folds every loaded vector into a running
XOR that the run checks against a closed form, so each vector costs a logic op besides its load
(AVX-512: one vpternlogd per two loads; AVX2: one vpxor per load). On cores where that op costs
load bandwidth, gpuroof's L1 ceiling is below likwid's by the same share, and this shows it with
both loops in one binary, compiled here with the system's cc:

    pure      16 vector loads per trip into registers no instruction reads (asm volatile)
    xor       the same loads, each folded into 8 (AVX-512) or 12 (AVX2) running XORs
    half      AVX-512 only: the 16 loads with 4 vpternlogd folding half of them (the op's share)

One thread per core (OpenMP, pinned), each reading its own buffer of --kib KiB (default: a quarter
and four fifths of the L1 data cache) over and over for about 4 GiB per timed call; rounds
interleave the loops, the best of --rounds (default 7) is shown.

    python experiments/bench_l1_consume.py [--isa native,avx2] [--kib 12,40] [--rounds 7]

Exits 1 with one line off x86-64 or without a C compiler with OpenMP.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

C = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
#ifdef __AVX512F__
#define TRIP 1024
#define R(i) "%%zmm" #i
#define LD(o, r) "vmovdqu64 " #o "(%0), %%zmm" #r "\n"
#define CLOB "xmm16","xmm17","xmm18","xmm19","xmm20","xmm21","xmm22","xmm23","xmm24","xmm25","xmm26","xmm27","xmm28","xmm29","xmm30","xmm31"
#define LOADS LD(0,16) LD(64,17) LD(128,18) LD(192,19) LD(256,20) LD(320,21) LD(384,22) LD(448,23) \
              LD(512,24) LD(576,25) LD(640,26) LD(704,27) LD(768,28) LD(832,29) LD(896,30) LD(960,31)
#define T(a, b, c) "vpternlogd $150, %%zmm" #b ", %%zmm" #a ", %%zmm" #c "\n"
#define XOR T(16,24,0) T(17,25,1) T(18,26,2) T(19,27,3) T(20,28,4) T(21,29,5) T(22,30,6) T(23,31,7)
#define HALF T(16,24,0) T(17,25,1) T(18,26,2) T(19,27,3)
#define ACC "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7"
#else
#define TRIP 384
#define LD(o, r) "vmovdqu " #o "(%0), %%ymm" #r "\n"
#define CLOB "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11"
#define LOADS LD(0,0) LD(32,1) LD(64,2) LD(96,3) LD(128,4) LD(160,5) LD(192,6) LD(224,7) LD(256,8) LD(288,9) LD(320,10) LD(352,11)
#define X(o, r) "vpxor " #o "(%0), %%ymm" #r ", %%ymm" #r "\n"
#define XOR X(0,0) X(32,1) X(64,2) X(96,3) X(128,4) X(160,5) X(192,6) X(224,7) X(256,8) X(288,9) X(320,10) X(352,11)
#define HALF XOR
#define ACC "xmm12"
#endif
static double run(size_t per, int mode, long passes) {
    double t0 = 0, t1 = 0;
    #pragma omp parallel
    {
        char *buf = aligned_alloc(4096, per);
        memset(buf, omp_get_thread_num() + 1, per);
        #pragma omp barrier
        #pragma omp master
        t0 = now();
        for (long p = 0; p < passes; p++)
            for (char *q = buf; q < buf + per; q += TRIP) {
                if (mode == 0) __asm__ volatile(LOADS :: "r"(q) : CLOB);
#ifdef __AVX512F__
                else if (mode == 1) __asm__ volatile(LOADS XOR :: "r"(q) : CLOB, ACC);
                else __asm__ volatile(LOADS HALF :: "r"(q) : CLOB, ACC);
#else
                else __asm__ volatile(XOR :: "r"(q) : CLOB);
#endif
            }
        #pragma omp barrier
        #pragma omp master
        t1 = now();
        free(buf);
    }
    return t1 - t0;
}
int main(int argc, char **argv) {
    size_t per = (size_t)atol(argv[1]) * 1024 / TRIP * TRIP;
    int rounds = atoi(argv[2]), modes = 2;
#ifdef __AVX512F__
    modes = 3;
#endif
    long passes = (4L << 30) / (per * omp_get_max_threads());
    double best[3] = {0, 0, 0};
    for (int r = 0; r < rounds; r++)
        for (int m = 0; m < modes; m++) {
            double bw = (double)per * passes * omp_get_max_threads() / run(per, m, passes);
            if (bw > best[m]) best[m] = bw;
        }
    printf("%zu %.6e %.6e %.6e\n", per, best[0], best[1], best[2]);
    return 0;
}
"""

FLAGS = {"native": ["-march=native"], "avx2": ["-mavx2", "-mfma", "-mno-avx512f"]}


def build(isa: str, where: Path) -> Path:
    src = where / "l1_consume.c"
    src.write_text(C)
    exe = where / f"l1_consume_{isa}"
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    r = subprocess.run([cc, "-O2", "-fopenmp", *FLAGS[isa], str(src), "-o", str(exe)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench_l1_consume: {cc} failed for {isa}: {r.stderr.strip().splitlines()[-1:]}")
    return exe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default="native,avx2", help="comma list of native, avx2 (default both)")
    ap.add_argument("--kib", default=None, help="KiB per thread, comma list (default: 1/4 and 4/5 of L1d)")
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    if platform.machine().lower() not in ("x86_64", "amd64"):
        print("bench_l1_consume: x86-64 only (the loops are x86 assembly)", file=sys.stderr)
        return 1
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        print("bench_l1_consume: no C compiler (cc or gcc)", file=sys.stderr)
        return 1
    isas = [s.strip() for s in a.isa.split(",") if s.strip()]
    bad = [s for s in isas if s not in FLAGS]
    if bad:
        print(f"bench_l1_consume: --isa {bad[0]}: allowed native, avx2", file=sys.stderr)
        return 2
    from gpuroof.backends.cpu.device import cpu_caches, parse_cpuinfo

    facts = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    cores = int(facts.get("physical_cores") or os.cpu_count() or 1)
    l1 = next((c["size_bytes"] for c in cpu_caches() if c["level"] == 1), 32768)
    kib = [int(k) for k in a.kib.split(",")] if a.kib else [l1 // 4096, l1 * 4 // 5 // 1024]
    env = {**os.environ, "OMP_NUM_THREADS": str(cores), "OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}
    name = facts.get("model") or platform.processor() or "this CPU"
    print(f"{name}: L1d {l1 // 1024} KiB per core, {cores} threads, best of {a.rounds} rounds")
    print(f"{'isa':7} {'KiB/thread':>10} {'pure GB/s':>10} {'xor GB/s':>9} {'xor/pure':>8} {'half GB/s':>10}")
    with tempfile.TemporaryDirectory(prefix="l1-consume-") as d:
        exes = {isa: build(isa, Path(d)) for isa in isas}
        for k in kib:
            for isa, exe in exes.items():
                out = subprocess.run([str(exe), str(k), str(a.rounds)], env=env, capture_output=True, text=True,
                                     check=True).stdout.split()
                per, pure, xor, half = int(out[0]), float(out[1]), float(out[2]), float(out[3])
                print(f"{isa:7} {per / 1024:10.1f} {pure / 1e9:10.1f} {xor / 1e9:9.1f} {xor / pure:8.3f} "
                      + (f"{half / 1e9:10.1f}" if half else f"{'-':>10}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
