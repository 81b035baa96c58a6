"""How close real kernels come to the measured roofline, in one run: GEMM and triad efficiency, and
the median |measured/predicted - 1| of memory-bound and compute-bound cases.

    python experiments/bench_efficiency.py [--backend cpu] [--ceilings RUN_DIR] [--quick] [--size default]

Without --ceilings it measures the device first (`gpuroof measure`, full sweep unless --quick) into
results/<device-slug>/<UTC time>/. If the run has no float32 matrix ceiling (`float32-matrix`), it
measures one here: the best numpy.matmul (BLAS) or cupy.matmul (cuBLAS) rate over square sizes,
and adds it to the ceilings it places against, recording where it came from. Then it runs the
bench (`gpuroof bench`'s cases and rules) and writes the workloads into the run directory, and the
summary to results/<device-slug>/bench_efficiency.csv.

Targets (CPU): the largest square GEMM reaches >= 0.9 of the BLAS matrix ceiling and the triad
>= 0.9 of the DRAM ceiling. Exit status 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuroof.backends import get_backend  # noqa: E402
from gpuroof.backends.base import Backend  # noqa: E402
from gpuroof.bench import BenchSettings, Target, bench_cases, results_table, save  # noqa: E402
from gpuroof.errors import UsageError  # noqa: E402
from gpuroof.results import atomic_write_csv, load_run, slug  # noqa: E402
from gpuroof.roofline import Roofline  # noqa: E402
from gpuroof.workloads import plan  # noqa: E402

TARGET = 0.9
MATRIX_SIZES = (512, 1024, 2048, 4096)


def matrix_ceiling(backend: Backend, sizes=MATRIX_SIZES, dtype: str = "float32") -> dict:
    """Best library matmul rate (FLOP/s, median time per size) over square sizes, with the evidence."""
    xp = backend.xp
    rates = []
    for n in sizes:
        a = xp.asarray(np.random.default_rng(n).uniform(-1, 1, (n, n)).astype(dtype))
        c = xp.empty_like(a)

        def run() -> None:
            xp.matmul(a, a, out=c)
        run()
        times = backend.time(run, warmup=1, min_reps=3, max_reps=20, budget_s=0.5)
        rates.append(2 * n ** 3 / float(np.median(times)))
    best = int(np.argmax(rates))
    return {"value": rates[best], "size": sizes[best], "sizes": list(sizes), "rates_flops": rates,
            "source": f"experiments/bench_efficiency.py: best {xp.__name__}.matmul {dtype} rate over "
                      f"square sizes {', '.join(map(str, sizes))} (median time per size)",
            "measured_utc": datetime.now(timezone.utc).isoformat()}


def summarize(table: pd.DataFrame, roof: Roofline) -> dict:
    ok = table[table["valid"]]
    gemm = ok[ok["name"] == "gemm"].copy()
    params = gemm["params"].map(json.loads)
    square = gemm[params.map(lambda p: p["m"] == p["n"] == p["k"] and p["dtype"] == "float32")]
    large = square.loc[square["flops"].idxmax()] if len(square) else None
    stream = ok[(ok["name"] == "stream")]  # the preset's first case is the anchor (CPU: numba-nt)
    others = {f"stream_{r.impl}_efficiency": float(r.efficiency) for r in stream.itertuples()}
    dev = (ok["measured_over_predicted"] - 1).abs()
    out = {
        "large_gemm_case": None if large is None else large["case"],
        "large_gemm_efficiency": None if large is None else float(large["efficiency"]),
        "large_gemm_roof_unit": None if large is None else large["roof_unit"],
        "stream_case": stream["case"].iloc[0] if len(stream) else None,
        "stream_efficiency": float(stream["efficiency"].iloc[0]) if len(stream) else None,
        **others,
        "memory_bound_cases": int((ok["bound"] == "memory").sum()),
        "memory_bound_median_abs_dev": float(dev[ok["bound"] == "memory"].median()),
        "compute_bound_cases": int((ok["bound"] == "compute").sum()),
        "compute_bound_median_abs_dev": float(dev[ok["bound"] == "compute"].median()),
        "above_roof_cases": int(ok["above_roof"].sum()),
        "invalid_cases": int((~table["valid"]).sum()),
        "dram_Bps": roof.bandwidth.get("dram"),
        "float32_matrix_flops": roof.compute.get("float32-matrix"),
        "float32_vector_flops": roof.compute.get("float32"),
    }
    out["large_gemm_pass"] = bool(out["large_gemm_efficiency"] is not None
                                  and out["large_gemm_efficiency"] >= TARGET)
    out["stream_pass"] = bool(out["stream_efficiency"] is not None and out["stream_efficiency"] >= TARGET)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="cpu")
    p.add_argument("--ceilings", default=None, help="a complete run directory (default: measure now)")
    p.add_argument("--quick", action="store_true", help="measure --quick when measuring now")
    p.add_argument("--size", default="default", choices=("small", "default", "large"))
    args = p.parse_args(argv)

    argv_record = ["python", "experiments/bench_efficiency.py", *(argv if argv is not None else sys.argv[1:])]
    backend = get_backend(args.backend)
    try:
        name = backend.device_info().get("name") or backend.name
        if args.ceilings:
            source = load_run(args.ceilings)
            if not source.meta.get("ceilings"):
                raise UsageError(f"--ceilings {args.ceilings}: the run has no ceilings")
            existing = False
        else:
            from gpuroof.measure import measure

            res = measure(backend.name, 0, quick=args.quick, argv=argv_record)
            source, existing = load_run(res.run_dir), True
        ceilings = json.loads(json.dumps(source.meta["ceilings"]))
        added = {}
        if "float32-matrix" not in ceilings["compute"]:
            added["float32-matrix"] = matrix_ceiling(backend)
            ceilings["compute"]["float32-matrix"] = added["float32-matrix"]["value"]
        roof = Roofline.from_dict(ceilings)
        cases = plan(None, args.size, backend.name, backend.cache_bytes())
        table = bench_cases(backend, roof, cases, BenchSettings.preset(args.size, backend.name))
        if existing:
            # The run was measured by this script: its ceilings may carry the matrix ceiling too.
            meta = dict(source.meta)
            meta["ceilings"] = ceilings
            meta["ceilings_added"] = added
            from gpuroof.results import write_run
            write_run(source.path, meta, {})
            target = Target(roof, load_run(source.path), source.path, True)
        else:
            from gpuroof.results import fresh_run_dir, make_run_dir

            source.meta["ceilings"] = ceilings  # the new run records the ceilings it was placed on
            source.meta["ceilings_added"] = added
            run_dir = make_run_dir(fresh_run_dir(name), name, chosen=True)
            target = Target(roof, source, run_dir, False)
        run_dir = save(target, backend, table, argv_record, size=args.size, ceilings_added=added)
    except UsageError as e:
        print(f"bench_efficiency: error: {e}", file=sys.stderr)
        return 2
    finally:
        backend.close()

    summary = summarize(table, roof)
    summary.update({"device": name, "backend": backend.name, "run_dir": str(run_dir), "size": args.size,
                    "ceilings_source": str(source.path)})
    dest = Path("results") / slug(name)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(dest / "bench_efficiency.csv", pd.DataFrame([summary]))

    print(results_table(table))
    print()
    for unit, info in added.items():
        print(f"{unit} ceiling measured here: {info['value'] / 1e9:.4g} GFLOP/s (best at n={info['size']}; "
              + ", ".join(f"{n}: {r / 1e9:.4g}" for n, r in zip(info["sizes"], info["rates_flops"])) + ")")
    print(f"ceilings: dram {roof.bandwidth['dram'] / 1e9:.4g} GB/s, float32 vector "
          f"{roof.compute.get('float32', float('nan')) / 1e9:.4g} GFLOP/s, float32 matrix "
          f"{roof.compute.get('float32-matrix', float('nan')) / 1e9:.4g} GFLOP/s")
    print(f"large GEMM ({summary['large_gemm_case']}): efficiency {summary['large_gemm_efficiency']:.3f} "
          f"against {summary['large_gemm_roof_unit']} (target >= {TARGET}): "
          f"{'PASS' if summary['large_gemm_pass'] else 'FAIL'}")
    print(f"stream ({summary['stream_case']}): efficiency {summary['stream_efficiency']:.3f} against dram "
          f"(target >= {TARGET}): {'PASS' if summary['stream_pass'] else 'FAIL'}"
          + "".join(f"; {k[7:-11]} {v:.3f}" for k, v in summary.items()
                    if k.startswith("stream_") and k.endswith("_efficiency") and k != "stream_efficiency"))
    print(f"median |measured/predicted - 1|: memory-bound {summary['memory_bound_median_abs_dev']:.3f} "
          f"({summary['memory_bound_cases']} cases), compute-bound "
          f"{summary['compute_bound_median_abs_dev']:.3f} ({summary['compute_bound_cases']} cases)")
    print(f"above their roof (flagged): {summary['above_roof_cases']}; excluded: {summary['invalid_cases']}")
    print(f"run directory: {run_dir}")
    print(f"wrote {dest / 'bench_efficiency.csv'}")
    return 0 if summary["large_gemm_pass"] and summary["stream_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
