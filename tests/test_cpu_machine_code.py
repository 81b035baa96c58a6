"""The CPU sweep kernels' machine code, read per instruction set: every chain in a register.

Each target is compiled (never run) in a fresh process with NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, so
an AVX2 machine checks the AVX-512 code and the other way round. In every loop that does vector
arithmetic there must be no vector load or store to the stack (a spilled chain), and the FMA loops
must carry as many independent chains as the kernel shape says.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpuroof.backends.cpu_isa import kernel_shape, vector_isa

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="the targets below are x86-64 instruction sets")

BASE = "+64bit,+cx16,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+lzcnt,+movbe"
AVX512 = BASE + ",+avx512f,+avx512dq,+avx512bw,+avx512vl,+avx512cd,+evex512"
TARGETS = {  # name: (LLVM CPU, features)
    "avx2-znver3": ("znver3", BASE + ",-avx512f"),
    "avx2-haswell": ("haswell", BASE + ",-avx512f"),
    "avx512-znver4": ("znver4", AVX512),
    "avx512-skylake": ("skylake-avx512", AVX512),  # LLVM prefers 256-bit vectors there
    "sse2": ("x86-64", "+64bit,+sse,+sse2,-avx,-avx2,-fma,-avx512f"),
}

COMPILE = r"""
import json, sys
from numba import types
from gpuroof.backends import _cpu_kernels as k
out = {"shape": k.SHAPE.to_dict(), "asm": {}}
for dt in ("float32", "float64"):
    t = getattr(types, dt)
    arr = t[::1]
    for name, second in (("sweep_rw", arr), ("sweep_ro", t[:, ::1])):
        fn = getattr(k, name)
        fn.compile((arr, second, types.int64, t, t, types.int64, types.int64))
        lib = fn.overloads[fn.signatures[-1]].library
        out["asm"][f"{name}/{dt}"] = lib.get_asm_str()
json.dump(out, sys.stdout)
"""

VREG = re.compile(r"%([xyz]mm\d+)")
STACK = re.compile(r"\(%r[sb]p\)")


def loops(asm: str) -> list[tuple[int, int]]:
    """(first, last) line of each loop of the gufunc (the prange body): a label and a later jump back."""
    lines = gufunc(asm)
    labels = {l[:-1]: i for i, l in enumerate(lines) if re.fullmatch(r"\.LBB\d+_\d+:", l)}
    spans = []
    for j, l in enumerate(lines):
        m = re.match(r"\s+j\w+\s+(\.LBB\d+_\d+)", l)
        if m and m.group(1) in labels and labels[m.group(1)] < j:
            spans.append((labels[m.group(1)], j))
    return spans


def gufunc(asm: str) -> list[str]:
    lines = asm.splitlines()
    start = next(i for i, l in enumerate(lines) if "__numba_parfor_gufunc" in l and l.endswith(":"))
    return lines[start:]


ARITH = re.compile(r"\bv(fmadd|add)\w*p[sd]\b")


def hot_loops(asm: str) -> list[list[str]]:
    """The innermost loops doing vector arithmetic (the FMA loops and the read loop) and, around
    each FMA loop, the chunk loop that loads its chains, folds or stores them: a spill anywhere
    there costs a store and a load per chunk or per FMA."""
    lines = gufunc(asm)
    spans = loops(asm)

    def inside(a, b):  # a strictly inside b
        return b[0] <= a[0] and a[1] <= b[1] and a != b
    arith = [s for s in spans if any(ARITH.search(l) for l in lines[s[0]:s[1] + 1])]
    inner = [s for s in arith if not any(inside(o, s) for o in arith)]
    hot = set(inner)
    for s in inner:
        around = [o for o in spans if inside(s, o)]
        if around and any("vfmadd" in l for l in lines[s[0]:s[1] + 1]):
            hot.add(min(around, key=lambda o: o[1] - o[0]))
    return [lines[a:b + 1] for a, b in sorted(hot)]


def innermost_fma_loop(asm: str) -> list[str]:
    lines = gufunc(asm)
    fma = [s for s in loops(asm) if any("vfmadd" in l for l in lines[s[0]:s[1] + 1])]
    a, b = min(fma, key=lambda s: s[1] - s[0])
    return lines[a:b + 1]


def vector_stack_traffic(body: list[str]) -> list[str]:
    return [l.strip() for l in body if STACK.search(l) and VREG.search(l)]


def fma_chains(body: list[str]) -> int:
    """Distinct destination registers of the vector FMAs of a loop: its independent chains."""
    return len({VREG.findall(l)[-1] for l in body if "vfmadd" in l and VREG.findall(l)})


@pytest.fixture(scope="module", params=sorted(TARGETS))
def target(request, tmp_path_factory):
    cpu, features = TARGETS[request.param]
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features,
           "NUMBA_CACHE_DIR": str(tmp_path_factory.mktemp("numba-cache"))}
    r = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return request.param, json.loads(r.stdout)


def test_kernel_shape_follows_the_register_file(target):
    name, got = target
    shape = got["shape"]
    want = {"avx2": (256, 16), "avx512": (512 if "skylake" not in name else 256, 32), "sse2": (128, 16)}
    assert (shape["vector_bits"], shape["vector_registers"]) == want[name.split("-")[0]]
    free = shape["vector_registers"] - 4
    assert 8 <= shape["rw_chains"] + 0 and shape["rw_chains"] + 2 <= shape["vector_registers"]
    assert shape["ro_chains"] + shape["ro_sums"] + 2 <= shape["vector_registers"]
    assert shape["ro_chains"] >= 8 and shape["read_sums"] <= free


def test_no_chain_is_spilled_in_any_arithmetic_loop(target):
    name, got = target
    for kernel, asm in got["asm"].items():
        hot = hot_loops(asm)
        assert hot, f"{name} {kernel}: no vector arithmetic loop found"
        for body in hot:
            spills = vector_stack_traffic(body)
            assert not spills, f"{name} {kernel}: stack traffic in a hot loop: {spills[:4]}"


def test_fma_loops_carry_every_chain(target):
    name, got = target
    shape = got["shape"]
    width = "zmm" if shape["vector_bits"] == 512 else "ymm" if shape["vector_bits"] == 256 else "xmm"
    for kernel, asm in got["asm"].items():
        chains = shape["rw_chains"] if "rw" in kernel else shape["ro_chains"]
        innermost = innermost_fma_loop(asm)
        assert fma_chains(innermost) == chains, f"{name} {kernel}"
        assert all(width in l for l in innermost if "vfmadd" in l), f"{name} {kernel}: not {width} FMAs"


def test_host_target_is_named():
    isa = vector_isa()
    assert isa.name in ("avx512", "avx2", "avx", "sse2")
    assert kernel_shape(isa).rw_chains >= 8
