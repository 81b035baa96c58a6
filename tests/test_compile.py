"""`gpuroof compile` (run by `make`): every sweep kernel a run may try lands in numba's disk cache,
so the next process loads each one instead of compiling it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json
from gpuroof.backends.cpu import CpuBackend
from gpuroof.backends.cpu import kernels as k
b = CpuBackend(0)
b.compile("float32")
stats = [d.stats for d in list(k._RW.values()) + list(k._RO.values())]
print(json.dumps({"kernels": len(stats), "hits": sum(sum(s.cache_hits.values()) for s in stats),
                  "misses": sum(sum(s.cache_misses.values()) for s in stats),
                  "shapes": len(k.SHAPE.every_variant("rw")) + len(k.SHAPE.every_variant("ro"))}))
"""


def test_compile_leaves_every_sweep_shape_in_the_disk_cache():
    proc = subprocess.run([sys.executable, "-m", "gpuroof", "compile", "--backend", "cpu", "--dtype", "float32",
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["backend"] == "cpu" and [d["dtype"] for d in doc["compiled"]] == ["float32"]
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr
    s = json.loads(probe.stdout.strip().splitlines()[-1])
    assert s["kernels"] == s["shapes"]  # every shape a run may try was built
    assert s["misses"] == 0 and s["hits"] >= s["kernels"], s  # and each one came from the disk cache


def test_compile_refuses_a_dtype_the_backend_does_not_measure():
    proc = subprocess.run([sys.executable, "-m", "gpuroof", "compile", "--backend", "cpu", "--dtype", "float8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gpuroof: error: dtype 'float8': the cpu backend has float64, float32"]
