"""How long gpuroof takes to give its ceilings, cold and warm, beside likwid-bench on the same cores.

Each gpuroof command runs twice in fresh processes on the CPU backend: cold (an empty numba cache
and an empty tuner cache, as after a fresh install) and warm (the same caches again, as every later
run of the same device finds them). Its wall time is the whole process, start-up included; the phases
come from the run's own record (run.json `phases`: compile, allocate, each sweep, hierarchy, matrix),
and the run's verdict and ceilings are printed beside, so that a faster run that measures less
well shows as such.

    measure --quick, run --quick, measure, run     (--commands picks a subset)

likwid-bench is timed for the same set of ceilings: peakflops (float32 and float64 FMA), load at a
quarter of each cache level per thread and at 1 GB per thread, and copy_mem at 1 GB per thread, one
process per test, as many threads as gpuroof uses; its total is the like-for-like of `measure
--no-matrix` (likwid has no GEMM and no workloads). Other tools (mixbench-cpu, ERT) are not fetched
or built here: give their command with --peer NAME=COMMAND and it is timed the same way.

    python experiments/bench_tool_speed.py [--commands measure-quick,run-quick] [--peer ert="..."]

Exits 1 with one line when a command fails; likwid-bench missing only leaves its row out.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMMANDS = {"measure-quick": ["measure", "--quick"], "run-quick": ["run", "--quick"],
            "measure": ["measure"], "run": ["run"]}


def timed(cmd: list[str], env: dict) -> float:
    """Wall seconds of one process; raises with its last stderr line when it fails."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{shlex.join(cmd)} exited {r.returncode}: {last}")
    return took


def gpuroof(args: list[str], caches: Path, out: Path) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_CACHE_DIR=str(caches / "numba"),
               GPUROOF_CACHE_DIR=str(caches / "gpuroof"))
    took = timed([sys.executable, "-m", "gpuroof", *args, "--backend", "cpu", "--out", str(out)], env)
    return took, json.loads((out / "run.json").read_text())


def phases(meta: dict) -> str:
    """run.json's phases, merged by kind (both dtypes' compile, allocate, sweeps)."""
    total: dict[str, float] = {}
    for p in meta.get("phases") or []:
        name = p["phase"].split()[0] if p["phase"].split()[0] in ("compile", "allocate", "matrix") else p["phase"]
        total[name] = total.get(name, 0.0) + p["t_end_s"] - p["t_start_s"]
    return ", ".join(f"{k} {v:.1f}" for k, v in total.items() if v >= 0.05)


def likwid_seconds(threads: int, levels: dict[str, int], isa: str) -> float | None:
    """Wall seconds of likwid-bench for the same ceilings as `measure --no-matrix`, None without it."""
    if not shutil.which("likwid-bench"):
        return None
    suffix = "avx512" if isa == "avx512" else "avx"
    sizes = {name: cap // threads // 4 for name, cap in levels.items()} | {"dram": 1_000_000_000}
    tests = [(f"peakflops_sp_{suffix}_fma", 16_000), (f"peakflops_{suffix}_fma", 16_000)]
    tests += [(f"load_{suffix}", s) for s in sizes.values()] + [(f"copy_mem_{suffix}", sizes["dram"])]
    total = 0.0
    for test, per_thread in tests:
        total += timed(["likwid-bench", "-t", test, "-W", f"N:{max(1, per_thread * threads // 1000)}kB:{threads}"],
                       dict(os.environ))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", default=",".join(COMMANDS), help=f"comma list of {', '.join(COMMANDS)}")
    ap.add_argument("--peer", action="append", default=[], metavar="NAME=COMMAND",
                    help="another tool's command line for the same ceilings, timed as it is")
    args = ap.parse_args()
    wanted = [c.strip() for c in args.commands.split(",") if c.strip()]
    bad = [c for c in wanted if c not in COMMANDS]
    peers = [p.split("=", 1) for p in args.peer]
    if bad or not wanted or any(len(p) != 2 or not p[0] or not p[1] for p in peers):
        print(f"bench_tool_speed: --commands {args.commands!r} / --peer {args.peer}: allowed commands "
              f"{', '.join(COMMANDS)}; a peer is NAME=COMMAND", file=sys.stderr)
        return 2
    from gpuroof.backends.cpu import CpuBackend
    from gpuroof.backends.cpu.device import isa_level
    from gpuroof.units import text_table

    backend = CpuBackend()
    threads = backend.threads
    isa = isa_level(backend.facts.get("flags", []))
    levels = {lv.name: lv.capacity_bytes for lv in backend.cache_levels() if lv.capacity_bytes}
    backend.close()
    work = Path(tempfile.mkdtemp(prefix="bench-tool-speed-"))
    rows = [["tool", "command", "cold s", "warm s", "phases (warm, s)", "quality (warm)", "ceilings (warm)"]]
    try:
        for name in wanted:
            caches = work / f"caches-{name}"  # empty: the cold run fills it, the warm one finds it
            cold, _ = gpuroof(COMMANDS[name], caches, work / f"{name}-cold")
            warm, meta = gpuroof(COMMANDS[name], caches, work / f"{name}-warm")
            q = meta.get("quality") or {}
            roofs = {**meta["ceilings"]["bandwidth"], **meta["ceilings"]["compute"]}
            rows.append(["gpuroof", f"gpuroof {' '.join(COMMANDS[name])}", f"{cold:.1f}", f"{warm:.1f}", phases(meta),
                         "ok" if q.get("ok") else "NOT OK: " + "; ".join(q.get("reasons") or []),
                         ", ".join(f"{k} {v / 1e9:.4g}" for k, v in roofs.items())])
            print(f"{name}: cold {cold:.1f} s, warm {warm:.1f} s", file=sys.stderr)
        lk = likwid_seconds(threads, levels, isa)
        if lk is not None:
            rows.append(["likwid-bench", f"peakflops sp+dp, load at {', '.join(levels)} and 1 GB, copy_mem (_{isa})",
                         "", f"{lk:.1f}", "one process per test", "", ""])
        for peer, command in peers:
            rows.append([peer, command, "", f"{timed(shlex.split(command), dict(os.environ)):.1f}", "", "", ""])
    except RuntimeError as e:
        print(f"bench_tool_speed: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"CPU backend, {threads} threads, {isa}; whole-process wall times, same sitting")
    print("\n".join(text_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
