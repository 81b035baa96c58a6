"""The CPU sweep kernels' machine code, read per instruction set: every chain in a register.

Each target is compiled (never run) in a fresh process with NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, so
an AVX2 machine checks the AVX-512 code and the other way round. The loops are found on the control
flow graph of the parfor function (natural loops of its back edges). In every innermost loop that
does vector arithmetic, and in the chunk loop around each FMA loop, there must be no vector load or
store to the stack (a spilled chain) and no scalar arithmetic; the FMA loops must carry as many
independent chains as the kernel shape says, at the shape's vector width, and the read loop as many
running sums.
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

from gpuroof.backends.cpu.isa import kernel_shape, vector_isa

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="the targets below are x86-64 instruction sets")

BASE = "+64bit,+cx16,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+lzcnt,+movbe"
AVX512 = BASE + ",+avx512f,+avx512dq,+avx512bw,+avx512vl,+avx512cd,+evex512"
TARGETS = {  # name: (LLVM CPU, features, vector bits the kernels must use)
    "avx2-znver3": ("znver3", BASE + ",-avx512f", 256),
    "avx2-haswell": ("haswell", BASE + ",-avx512f", 256),
    "avx512-znver4": ("znver4", AVX512, 512),
    # LLVM's tuning prefers ymm on these; gpuroof turns that off (isa.configure_codegen) ...
    "avx512-skylake": ("skylake-avx512", AVX512, 512),
    "avx512-emeraldrapids": ("emeraldrapids", AVX512 + ",+avx512fp16,+avx512bf16,+amx-tile", 512),
    # ... unless the features say +prefer-256-bit: then the kernels are shaped for ymm.
    "avx512-skylake-ymm": ("skylake-avx512", AVX512 + ",+prefer-256-bit", 256),
    "sse2": ("x86-64", "+64bit,+sse,+sse2,-sse3,-avx,-avx2,-fma,-avx512f", 128),
}

COMPILE = r"""
import json, sys
from numba import types
from gpuroof.backends.cpu import kernels as k
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

LABEL = re.compile(r"(\.LBB\d+_\d+):")
JUMP = re.compile(r"\s+(j\w+)\s+(\.LBB\d+_\d+)")
VREG = re.compile(r"%([xyz]mm\d+)")
STACK = re.compile(r"\(%r[sb]p\)")
FMA = re.compile(r"\bv?fn?m(add|sub)\d*[ps][sd]\b|\bv?mulp[sd]\b")  # FMA, or SSE's multiply of a*x + b
ARITH = re.compile(r"\bv?(fn?m(add|sub)\d*|add|mul)p[sd]\b")
XOR = re.compile(r"\bv?p?(ternlog[dq]|xor[dq]?|xorp[sd])\b")  # the XOR-folded read loop's logic ops
SCALAR = re.compile(r"\bv?(fn?m(add|sub)\d*|add|mul)s[sd]\b")


def parfor_functions(asm: str) -> list[list[str]]:
    """The instructions of each function of the parfor body: the kernel function and its
    __gufunc__ wrapper, into which LLVM sometimes inlines it."""
    lines = asm.splitlines()
    found = []
    for i, l in enumerate(lines):
        if "__numba_parfor_gufunc" in l and l.endswith(":") and not l[0].isspace() and l[0] != ".":
            end = next(j for j in range(i, len(lines)) if lines[j].startswith(".Lfunc_end"))
            found.append([l for l in lines[i + 1:end]
                          if l.strip() and not l.strip().startswith(("#", ".p2align", ".cfi"))])
    return found


def blocks(lines: list[str]) -> tuple[list[list[str]], list[set[int]]]:
    """Basic blocks (instruction lists) and their successors."""
    body: list[list[str]] = [[]]
    names: dict[str, int] = {}
    for l in lines:
        m = LABEL.fullmatch(l.strip())
        if m:
            if body[-1]:
                body.append([])
            names[m.group(1)] = len(body) - 1
            continue
        body[-1].append(l)
        if re.match(r"\s+(j\w+|ret\w*|ud2)\b", l):
            body.append([])
    succ: list[set[int]] = []
    for i, b in enumerate(body):
        s: set[int] = set()
        last = b[-1] if b else ""
        m = JUMP.match(last)
        if m:
            s.add(names[m.group(2)])
        if not re.match(r"\s+(jmp|ret\w*|ud2)\b", last) and i + 1 < len(body):
            s.add(i + 1)
        succ.append(s)
    return body, succ


def natural_loops(succ: list[set[int]]) -> list[frozenset[int]]:
    """The blocks of each natural loop (one per header), from the back edges of the dominator tree."""
    n = len(succ)
    pred: list[set[int]] = [set() for _ in range(n)]
    for u, ss in enumerate(succ):
        for v in ss:
            pred[v].add(u)
    dom = [set(range(n)) for _ in range(n)]
    dom[0] = {0}
    changed = True
    while changed:
        changed = False
        for v in range(1, n):
            new = {v} | (set.intersection(*(dom[p] for p in pred[v])) if pred[v] else set())
            if new != dom[v]:
                dom[v], changed = new, True
    loops: dict[int, set[int]] = {}
    for u, ss in enumerate(succ):
        for h in ss:
            if h in dom[u]:  # back edge u -> h
                body, todo = loops.setdefault(h, {h}), [u]
                while todo:
                    x = todo.pop()
                    if x not in body:
                        body.add(x)
                        todo.extend(pred[x])
    return [frozenset(b) for b in loops.values()]


def hot_loops(asm: str) -> list[tuple[str, list[str]]]:
    """(kind, instructions) of each innermost loop doing vector arithmetic ('fma' or 'read') and of
    the chunk loop around each FMA loop ('chunk'): a spill anywhere there costs a store and a load
    per chunk or per FMA."""
    found = []
    for function in parfor_functions(asm):
        body, succ = blocks(function)
        loops = natural_loops(succ)

        def code(loop):
            return [l for b in sorted(loop) for l in body[b]]
        for loop in loops:
            if any(o < loop for o in loops) or not any(ARITH.search(l) or xor_op(l) for l in code(loop)):
                continue
            kind = "fma" if any(FMA.search(l) for l in code(loop)) else "read"
            found.append((kind, code(loop)))
            around = [o for o in loops if loop < o]
            if kind == "fma" and around:
                found.append(("chunk", code(min(around, key=len))))
    return found


def xor_op(line: str) -> bool:
    """A logic op of the XOR-folded read loop; not the zero idiom (x ^ x) that clears a register."""
    return bool(XOR.search(line)) and ("(" in line or len(set(VREG.findall(line))) > 1)


def vector_stack_traffic(code: list[str]) -> list[str]:
    return [l.strip() for l in code if STACK.search(l) and VREG.search(l)]


def chains(code: list[str], op: re.Pattern) -> int:
    """Distinct destination registers (AT&T: the last operand) of the matching instructions."""
    return len({VREG.findall(l)[-1] for l in code if op.search(l) and VREG.findall(l)})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every target's kernels compiled, each in a process of its own (the code generator's target is
    fixed per process), as many at once as there are CPUs: numba compiles on one thread, and nothing
    here is timed."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> tuple[str, subprocess.CompletedProcess]:
        cpu, features, _ = TARGETS[name]
        env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features,
               "NUMBA_CACHE_DIR": str(tmp_path_factory.mktemp("numba-cache"))}
        return name, subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True,
                                    cwd=Path(__file__).resolve().parent.parent, timeout=600)
    with ThreadPoolExecutor(max_workers=max(1, min(len(TARGETS), os.cpu_count() or 1))) as pool:
        return dict(pool.map(one, sorted(TARGETS)))


@pytest.fixture(scope="module", params=sorted(TARGETS))
def target(request, compiled):
    r = compiled[request.param]
    assert r.returncode == 0, r.stderr[-2000:]
    return request.param, json.loads(r.stdout)


def test_kernel_shape_follows_the_register_file(target):
    name, got = target
    shape = got["shape"]
    registers = {"avx2": 16, "avx512": 32, "sse2": 16}[name.split("-")[0]]
    assert (shape["vector_bits"], shape["vector_registers"]) == (TARGETS[name][2], registers)
    assert 8 <= shape["rw_chains"] and shape["rw_chains"] + 2 <= registers
    assert shape["ro_chains"] + shape["ro_sums"] + 2 <= registers
    assert shape["ro_chains"] >= 8 and shape["read_sums"] <= registers - 4
    if name.startswith("avx512"):
        assert shape["vector_width_reason"].startswith(f"{shape['vector_bits']}-bit")


def test_no_chain_is_spilled_in_any_hot_loop(target):
    name, got = target
    for kernel, asm in got["asm"].items():
        hot = hot_loops(asm)
        assert {k for k, _ in hot} == {"fma", "chunk"} | ({"read"} if "ro" in kernel else set()), \
            f"{name} {kernel}: loops found: {[k for k, _ in hot]}"
        for kind, code in hot:
            spills = vector_stack_traffic(code)
            assert not spills, f"{name} {kernel}: stack traffic in a {kind} loop: {spills[:4]}"
            scalar = [l.strip() for l in code if SCALAR.search(l)]
            assert not scalar, f"{name} {kernel}: scalar arithmetic in a {kind} loop: {scalar[:4]}"


def test_fma_and_read_loops_carry_every_chain(target):
    name, got = target
    shape = got["shape"]
    width = {512: "zmm", 256: "ymm", 128: "xmm"}[shape["vector_bits"]]
    for kernel, asm in got["asm"].items():
        want = shape["rw_chains"] if "rw" in kernel else shape["ro_chains"]
        for kind, code in hot_loops(asm):
            if kind == "fma":
                assert chains(code, FMA) == want, f"{name} {kernel}"
                assert all(width in l for l in code if FMA.search(l)), f"{name} {kernel}: not {width} FMAs"
            elif kind == "read":
                assert chains(code, ARITH) == shape["read_sums"], f"{name} {kernel}: read sums"
                assert all(width in l for l in code if ARITH.search(l)), f"{name} {kernel}: not {width} adds"


def test_code_generator_started_earlier_keeps_its_width(tmp_path):
    """numba compiled something before gpuroof's kernels were imported: the prefer-256-bit tuning can
    no longer be turned off, so the kernels are shaped for ymm and the run says why."""
    cpu, features, _ = TARGETS["avx512-skylake"]
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features, "NUMBA_CACHE_DIR": str(tmp_path)}
    first = "import numba\nnumba.njit(lambda v: v + 1)(1)\n"
    r = subprocess.run([sys.executable, "-c", first + COMPILE], env=env, capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    assert got["shape"]["vector_bits"] == 256 and "could not be turned off" in got["shape"]["vector_width_reason"]
    fma = [code for kind, code in hot_loops(got["asm"]["sweep_rw/float32"]) if kind == "fma"]
    assert fma and all("ymm" in l for code in fma for l in code if FMA.search(l))


def test_host_target_is_named():
    isa = vector_isa()
    assert isa.name in ("avx512", "avx2", "avx", "sse2")
    assert kernel_shape(isa).rw_chains >= 8


VARIANTS = r"""
import json, sys
from numba import types
from gpuroof.backends.cpu import kernels as k
t = types.float32
out = {"shape": k.SHAPE.to_dict(), "asm": {}, "variants": {}}
for loop in ("rw", "ro"):
    for v in k.SHAPE.every_variant(loop):
        fn = k.rw_kernel(v) if loop == "rw" else k.ro_kernel(v)
        fn.compile((t[::1], t[::1] if loop == "rw" else t[:, ::1], types.int64, t, t, types.int64, types.int64))
        out["asm"][v.name] = fn.overloads[fn.signatures[-1]].library.get_asm_str()
        out["variants"][v.name] = {"loop": loop, "bits": 8 * v.vector_bytes, "chains": v.chains,
                                   "nontemporal": v.nontemporal, "prefetch": v.prefetch, "xor": v.xor}
json.dump(out, sys.stdout)
"""


@pytest.mark.parametrize("name", ["avx2-znver3", "avx512-znver4"])
def test_every_tuned_variant_keeps_its_chains_in_registers(name, tmp_path):
    """The shapes a run may choose (isa.KernelShape.variants: half width, half the sums, XOR-folded
    reads, prefetch, non-temporal stores) are held to the same machine code as the default: no spill or
    scalar arithmetic in a hot loop, the variant's width and chains, and the instructions that make
    it what it says (movnt* stores, prefetches)."""
    cpu, features, _ = TARGETS[name]
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features, "NUMBA_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", VARIANTS], env=env, capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    assert len(got["variants"]) >= 4
    if name.startswith("avx512"):  # Zen 5's L2: the ymm read loop must be a candidate
        assert {v["bits"] for v in got["variants"].values()} == {256, 512}
    for vname, v in got["variants"].items():
        asm, width = got["asm"][vname], {512: "zmm", 256: "ymm"}[v["bits"]]
        hot = hot_loops(asm)
        assert hot, vname
        for kind, code in hot:
            assert not vector_stack_traffic(code), f"{name} {vname}: spill in a {kind} loop"
            assert not [l for l in code if SCALAR.search(l)], f"{name} {vname}: scalar arithmetic"
        read = [code for kind, code in hot if kind == "read"]
        if v["loop"] == "ro" and v["xor"]:  # half as many running XORs, two loads folded into each
            ops = [l for l in read[0] if xor_op(l)]
            assert read and chains(ops, XOR) == v["chains"] // 2, f"{name} {vname}: running XORs"
            assert all(width in l for l in ops), f"{name} {vname}: not {width}"
            assert not [l for l in read[0] if ARITH.search(l)], f"{name} {vname}: float arithmetic"
            if name.startswith("avx512"):  # one three-input op per two loaded vectors
                assert all("ternlog" in l for l in ops), f"{name} {vname}: {ops[:2]}"
        elif v["loop"] == "ro":
            assert read and chains(read[0], ARITH) == v["chains"], f"{name} {vname}: read sums"
            assert all(width in l for l in read[0] if ARITH.search(l)), f"{name} {vname}: not {width}"
        nt = [l for l in asm.splitlines() if re.search(r"\bv?movnt", l)]
        assert bool(nt) == v["nontemporal"], f"{name} {vname}: non-temporal stores {nt[:2]}"
        pf = [l for l in asm.splitlines() if re.search(r"\bprefetch", l)]
        assert bool(pf) == bool(v["prefetch"]), f"{name} {vname}: prefetches {pf[:2]}"
