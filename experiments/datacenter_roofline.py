"""Production-like MLP, LSTM and CNN layers on the measured roofline of this device.

The figure of Jouppi et al., "In-Datacenter Performance Analysis of a Tensor Processing Unit"
(ISCA 2017, fig. 5-8), made on whatever device runs this: six inference workloads of the kinds
that datacenters serve, at production-like sizes, placed on the roofline that `gpuroof measure`
measured here. Serving batches are small, so MLPs and LSTMs (matrix-vector-like, every weight
read once per batch) sit on the bandwidth slope far below the ridge, while convolutions (every
weight reused at every pixel) reach the compute roof. The table says which is which, with the
efficiency each case reaches against its own roof.

    python experiments/datacenter_roofline.py                     # ceilings: newest run in results/<device>/
    python experiments/datacenter_roofline.py --run results/<device>/<stamp>
    python experiments/datacenter_roofline.py --backend cpu --out /tmp/dc

Writes results/datacenter_roofline/<device>/: datacenter_roofline.png and .pdf, workloads.csv
(one row per case, the columns of `gpuroof bench`), datacenter_roofline.md (the table) and
provenance.json (ceilings source, command, versions).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuroof import plots  # noqa: E402
from gpuroof.backends import get_backend  # noqa: E402
from gpuroof.bench import BenchSettings, bench_cases, newest_run  # noqa: E402
from gpuroof.errors import UsageError  # noqa: E402
from gpuroof.measure import measure, versions  # noqa: E402
from gpuroof.report import fmt_time  # noqa: E402
from gpuroof.results import Run, atomic_write_csv, atomic_write_text, dumps, load_run, slug  # noqa: E402
from gpuroof.roofline import Roofline  # noqa: E402
from gpuroof.units import si  # noqa: E402
from gpuroof.workloads import WORKLOADS, Case  # noqa: E402


@dataclass(frozen=True)
class Spec:
    """One production-like case: a tag for the figure, the workload, and its parameters."""

    tag: str  # as in the TPU paper: MLP0, LSTM1, CNN0, ...
    family: str  # marker in the figure
    workload: str
    params: dict


#: Shapes after the TPU paper's table 1 (MLP0: 5 layers, batch 200; LSTM0: batch 64; CNN1: batch
#: 32) and the layers that dominate ResNet-50 (3x3 and 1x1 convolutions on 56x56 maps). The small-
#: batch cases are what a latency-bound service runs.
SPECS = (
    Spec("MLP0", "MLP", "mlp", {"batch": 200, "width": 2048, "layers": 5}),
    Spec("MLP1", "MLP", "mlp", {"batch": 8, "width": 4096, "layers": 4}),
    Spec("LSTM0", "LSTM", "lstm", {"batch": 64, "input_size": 1024, "hidden": 1024, "steps": 32}),
    Spec("LSTM1", "LSTM", "lstm", {"batch": 8, "input_size": 1536, "hidden": 1536, "steps": 16}),
    Spec("CNN0", "CNN", "conv2d", {"n": 32, "c_in": 64, "c_out": 64, "h": 56, "w": 56, "ksize": 3, "stride": 1,
                                   "pad": 1}),
    Spec("CNN1", "CNN", "conv2d", {"n": 32, "c_in": 256, "c_out": 256, "h": 56, "w": 56, "ksize": 1,
                                   "stride": 1, "pad": 0}),
)

#: Implementations the figure prefers: the vendor library where there is one (what production runs).
PREFERRED_IMPLS = ("cudnn", "cublas", "blas", "im2col", "direct")


def choose(backend_name: str, workload: str) -> tuple[str, str]:
    """(impl, dtype): the preferred implementation this backend has, and the narrowest dtype its
    presets use (float16 on a GPU, as served models are; float32 on a CPU)."""
    w = WORKLOADS[workload]
    impls = w.impls(backend_name)
    impl = next((i for i in PREFERRED_IMPLS if i in impls), impls[0] if impls else None)
    if impl is None:
        raise UsageError(f"{workload}: no implementation on the {backend_name} backend")
    dtypes = {p.dtype for p in w.cases("default", backend_name)}
    dtype = next(d for d in ("float16", "bfloat16", "float32", "float64") if d in dtypes or d == "float64")
    return impl, dtype


def build_cases(backend_name: str, scale: float = 1.0) -> list[tuple[Spec, Case]]:
    """The SPECS as bench cases; `scale` < 1 shrinks batches and images (for a quick look on a laptop)."""
    out = []
    for spec in SPECS:
        impl, dtype = choose(backend_name, spec.workload)
        params = dict(spec.params)
        for key in ("batch", "n"):
            if key in params:
                params[key] = max(1, int(round(params[key] * scale)))
        w = WORKLOADS[spec.workload]
        out.append((spec, Case(w, w.make(**params, dtype=dtype, impl=impl))))
    return out


def ceilings_run(args: argparse.Namespace, backend_name: str, device_name: str) -> Run:
    """--run, else the newest complete run of this device under results/, else a fresh measure."""
    if args.run:
        run = load_run(args.run)
        if run.meta.get("status") != "complete" or not run.meta.get("ceilings"):
            raise UsageError(f"--run {args.run}: not a complete run with ceilings")
        if run.meta["device"].get("name") != device_name and not args.force:
            raise UsageError(f"--run {args.run}: measured on {run.meta['device'].get('name')!r}, this is "
                             f"{device_name!r} (--force to use it anyway)")
        return run
    found = newest_run(backend_name, device_name, ROOT / "results")
    if found is not None:
        return found
    print(f"no complete run for {device_name!r} under results/: measuring first", file=sys.stderr)
    res = measure(backend_name, args.device, quick=args.quick_measure,
                  out=str(ROOT / "results" / slug(device_name) / datetime.now(timezone.utc)
                          .strftime("%Y%m%dT%H%M%SZ")), argv=["gpuroof", "measure", "--backend", backend_name]
                  + (["--quick"] if args.quick_measure else []))
    return load_run(res.run_dir)


def table_markdown(df: pd.DataFrame, meta: dict, source: Run) -> str:
    bw = meta["ceilings"]["bandwidth"].get("dram")
    lines = [f"# Production-like workloads on {meta['device'].get('name')} ({meta['backend']})", "",
             f"Ceilings from `{source.path}`: DRAM {si(bw, 'B/s')}; "
             + ", ".join(f"{u} {si(v, 'FLOP/s')} (ridge {v / bw:.3g} FLOP/B)"
                         for u, v in meta["ceilings"]["compute"].items()) + ".", "",
             "| case | workload | shape | dtype | unit | FLOP/B | achieved | attainable | efficiency | bound "
             "| measured / predicted | notes |",
             "|---|---|---|---|---|---:|---:|---:|---:|---|---:|---|"]
    for r in df.to_dict("records"):
        ok = bool(r.get("valid"))
        lines.append("| " + " | ".join([
            r["tag"], r["name"], str(r["case"]), r["dtype"], str(r.get("roof_unit") or r["unit"]),
            f"{r['intensity']:.3g}", si(r["achieved_flops"], "FLOP/s") if ok else "-",
            si(r["attainable_flops"], "FLOP/s") if ok else "-",
            f"{r['efficiency']:.0%}" if ok else "invalid", str(r.get("bound") or "-"),
            f"{r['measured_over_predicted']:.2f}" if ok else "-",
            str(r.get("notes") or "").replace("|", "/")]) + " |")
    lines += ["", "Measured time per case is the median over repetitions; attainable = min(compute ceiling "
              "of the unit, DRAM bandwidth × intensity).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="auto", help="auto, cuda or cpu")
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--run", default=None, help="run directory whose ceilings to use (default: newest in results/)")
    p.add_argument("--force", action="store_true", help="use --run even if it was measured on another device")
    p.add_argument("--scale", type=float, default=1.0, help="shrink batches and images (0 < scale <= 1)")
    p.add_argument("--quick-measure", action="store_true", help="when measuring first, use measure --quick")
    p.add_argument("--out", default=None, help="output directory (default results/datacenter_roofline/<device>/)")
    args = p.parse_args(argv)
    if not 0 < args.scale <= 1:
        p.error("--scale must be in (0, 1]")
    try:
        backend = get_backend(args.backend, args.device)
    except UsageError as e:
        p.error(str(e))
    try:
        info = backend.device_info()
        name = info.get("name") or backend.name
        source = ceilings_run(args, backend.name, name)
        roof = Roofline.from_dict(source.meta["ceilings"])
        specs_cases = build_cases(backend.name, args.scale)
        settings = BenchSettings.preset("default", backend.name)
        rows = []
        for spec, case in specs_cases:  # one at a time: a case too big for this machine is skipped, not fatal
            try:
                one = bench_cases(backend, roof, [case], settings, progress=False)
                one.attrs.clear()  # per-repetition samples; pandas cannot concat frames whose attrs hold frames
                rows.append(one)
            except UsageError as e:
                print(f"{spec.tag}: skipped: {e}", file=sys.stderr)
                rows.append(pd.DataFrame([{"name": case.name, "case": case.label, "dtype": case.dtype,
                                           "unit": case.unit, "flops": case.flops, "bytes": case.bytes,
                                           "intensity": case.intensity, "valid": False,
                                           "notes": f"skipped: {e}"}]))
            print(f"{spec.tag}: done", file=sys.stderr)
        table = pd.concat(rows, ignore_index=True)
    except UsageError as e:
        print(f"datacenter_roofline: error: {e}", file=sys.stderr)
        return 2
    finally:
        backend.close()
    table.insert(0, "tag", [s.tag for s, _ in specs_cases])
    table.insert(1, "family", [s.family for s, _ in specs_cases])

    out = Path(args.out) if args.out else ROOT / "results" / "datacenter_roofline" / slug(name)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(source.meta)
    kernels = pd.DataFrame({
        "x": table["intensity"].astype(float), "y": table["achieved_flops"].astype(float),
        "dtype": table["dtype"].astype(str), "kernel": table["family"], "label": table["tag"],
        "valid": table["valid"].astype(bool), "above": table["above_roof"].fillna(False).astype(bool),
        "unit": table["unit"]})  # the roof each point is read against: its colour on the roofline
    drawn = plots.draw_roofline(meta, kernels, "workloads",
                                title=f"Production-like inference on {name}: which layers reach the roof")
    for fmt in ("png", "pdf"):
        plots.atomic_write_bytes(out / f"datacenter_roofline.{fmt}", plots.render(drawn, fmt))
    atomic_write_csv(out / "workloads.csv", table)
    atomic_write_text(out / "datacenter_roofline.md", table_markdown(table, meta, source))
    atomic_write_text(out / "provenance.json", dumps({
        "experiment": "experiments/datacenter_roofline.py", "command": shlex.join([sys.argv[0], *(argv or sys.argv[1:])]),
        "created_utc": datetime.now(timezone.utc).isoformat(), "device": info, "backend": backend.name,
        "ceilings_source": str(source.path), "ceilings": source.meta["ceilings"], "scale": args.scale,
        "specs": [{"tag": s.tag, "workload": s.workload, "params": c.params_dict()} for s, c in specs_cases],
        "versions": versions(), "caption": drawn.caption}, indent=2) + "\n")

    for r in table.to_dict("records"):
        state = (f"{r['bound']}-bound, {r['efficiency']:.0%} of its roof" if r["valid"]
                 else f"not placed: {r['notes']}")
        print(f"{r['tag']:6} {r['name']:7} I={r['intensity']:8.3g} FLOP/B  "
              f"{si(r['achieved_flops'], 'FLOP/s') if r['valid'] else '-':>14}  {fmt_time(r['time_s']):>10}  {state}")
    print(f"figure: {out / 'datacenter_roofline.png'}\ntable:  {out / 'datacenter_roofline.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
