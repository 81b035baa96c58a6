"""SYNTHETIC GPU run for layout tests: an H100 SXM run directory built from the run.json schema.

NOT A MEASUREMENT. No GPU was run to make it. The ceilings below are plausible values chosen by hand
for an NVIDIA H100 SXM5 80GB (132 SMs, max SM clock 1980 MHz, HBM3 at 2619 MHz on a 5120-bit bus) so
that pages and figures that compare device models can be tested on a machine without a GPU. The
theoretical peaks come from gpuroof's own per-architecture tables (backends/cuda/device.py) at the
clocks given, and agree with NVIDIA's data sheet (FP64 34, FP32 67 TFLOP/s, FP16 tensor 989
TFLOP/s dense at boost, DRAM 3.35 TB/s). Every run this module writes says so in run.json
(`synthetic_fixture`) and in its host name and directory name; never show one as a result.
"""
from __future__ import annotations

from pathlib import Path

from gpuroof.backends.cuda import device as cuda_device
from gpuroof.results import KIND, SCHEMA_VERSION, check_meta, write_run

NAME = "NVIDIA H100 80GB HBM3"
SMS, MAX_SM_MHZ, MEM_MHZ, BUS_BITS = 132, 1980.0, 2619.0, 5120
NOTE = ("synthetic fixture for layout tests (tests/gpu_fixture.py): hand-chosen H100-like values, "
        "not a measurement")

#: Hand-chosen ceilings at the SM clock below (B/s, FLOP/s): what a healthy card of this model might show.
BANDWIDTH = {"shared": 2.9e13, "l1": 2.1e13, "l2": 7.6e12, "dram": 2.95e12}
COMPUTE = {"float64": 2.9e13, "float32": 5.8e13, "float16": 1.15e14, "float16-matrix": 6.6e14,
           "tf32-matrix": 3.4e14, "float64-matrix": 5.4e13}


def theoretical(sm_mhz: float) -> dict:
    """gpuroof's own H100 peaks at `sm_mhz`, for the units this fixture has."""
    vec = cuda_device.theoretical_peaks("9.0", SMS, sm_mhz, BUS_BITS, MEM_MHZ)
    mat = cuda_device.matrix_theoretical("9.0", SMS, sm_mhz)
    comp = {u: (vec["compute"].get(u) if u in vec["compute"] else mat.get(u)) for u in COMPUTE}
    return {"compute": comp, "bandwidth": {lv: (vec["bandwidth"]["dram"] if lv == "dram" else None)
                                           for lv in BANDWIDTH}}


def write_h100_run(path: Path, host: str = "fixture-h100-node", created_utc: str = "2026-12-01T10:00:00+00:00",
                   sm_mhz: float = 1755.0, scale: dict[str, float] | None = None,
                   throttled_points: int = 0, quality: dict | None = None) -> Path:
    """A complete run directory (run.json only) of the synthetic H100, checked against the schema.

    `scale` multiplies named ceilings (a slower card); `sm_mhz` is its median SM clock during the
    points. The run says it is synthetic in `synthetic_fixture`, its host name and its command.
    """
    scale = scale or {}
    bw = {k: v * scale.get(k, 1.0) for k, v in BANDWIDTH.items()}
    comp = {k: v * scale.get(k, 1.0) for k, v in COMPUTE.items()}
    theo, at_max = theoretical(sm_mhz), theoretical(MAX_SM_MHZ)
    ratio = {kind: {k: (v / theo[kind][k] if theo[kind].get(k) else None) for k, v in vals.items()}
             for kind, vals in (("compute", comp), ("bandwidth", bw))}
    meta = {
        "schema_version": SCHEMA_VERSION, "kind": KIND, "status": "complete", "backend": "cuda",
        "synthetic_fixture": NOTE, "created_utc": created_utc,
        "command": ["tests/gpu_fixture.py", "(synthetic: no measurement)"],
        "device": {"name": NAME, "index": 0, "compute_capability": "9.0", "multiprocessors": SMS,
                   "l2_cache_bytes": 50 << 20, "memory_total_bytes": 80 << 30, "uuid": f"GPU-fixture-{host}",
                   "driver_version": "fixture"},
        "host": {"hostname": host, "os": "Linux", "machine": "x86_64", "env": {}},
        "versions": {"gpuroof": "fixture"},
        "ceilings": {"bandwidth": bw, "compute": comp},
        "theoretical": theo, "theoretical_at_max_clock": at_max,
        "max_clocks_mhz": {"sm": MAX_SM_MHZ, "mem": MEM_MHZ},
        "ratios": ratio,
        "ridge_points": {u: p / bw["dram"] for u, p in comp.items()},
        "median_clocks": {"sm_clock_mhz": sm_mhz, "mem_clock_mhz": MEM_MHZ, "power_w": 690.0,
                          "temperature_c": 61.0},
        "throttled_points": throttled_points,
        "quality": quality or {"ok": True, "reasons": []},
    }
    check_meta(meta, path / "run.json")
    path.mkdir(parents=True, exist_ok=True)
    write_run(path, meta, {})
    return path
