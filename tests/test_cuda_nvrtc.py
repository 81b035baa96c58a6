"""Every kernel instance the CUDA path asks for, compiled by NVRTC for sm_80 and sm_90 with no GPU; SASS read.

NVRTC compiles without a device once cupy's per-device arch lookup is bypassed (its memoize wrapper
asks the driver for the current device; the wrapped function does not). The options are the ones a
run compiles with (kernels.nvrtc_options: what cupy.RawModule assembles). `make test` installs
gpuroof[nvrtc] and sets GPUROOF_REQUIRE_NVRTC=1: there a missing compiler fails instead of skipping.
The SASS checks run wherever cuobjdump (and nvdisasm, which it calls) are found.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuroof.backends.cuda import kernels
from gpuroof.workloads._cuda import CUDA_TYPE as WORKLOAD_TYPES
from gpuroof.workloads.conv2d import direct_name, im2col_name
from gpuroof.workloads.gemm import tiled_name
from gpuroof.workloads.lstm import pointwise_name
from gpuroof.workloads.mlp import bias_act_name

REQUIRED = os.environ.get("GPUROOF_REQUIRE_NVRTC") == "1"
ARCHES = ("80", "90")  # A100; H100 / H200
CONV_KSIZES = (1, 3, 5, 7)


def modules() -> dict[str, tuple[str, list[str]]]:
    """label -> (kernel file, name expressions): one entry per module a run builds (the sweep: one per
    dtype; the workloads compile theirs by name expression from the same sources)."""
    out = {f"sweep {d}": ("sweep.cu", kernels.sweep_module_expressions(d)) for d in kernels.CUDA_TYPE}
    out["shared_bw"] = ("shared_bw.cu", ["shared_read"])
    dtypes = list(WORKLOAD_TYPES)
    out["conv2d"] = ("conv2d.cu", [direct_name(d, k) for d in dtypes for k in CONV_KSIZES]
                     + [im2col_name(d) for d in dtypes])
    out["gemm"] = ("gemm.cu", [tiled_name(d) for d in dtypes]
                   + [bias_act_name(d, relu) for d in dtypes for relu in (False, True)])
    out["lstm"] = ("lstm.cu", [pointwise_name(d) for d in dtypes])
    return out


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason}; GPUROOF_REQUIRE_NVRTC=1 (make test installs gpuroof[nvrtc])", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def nvrtc():
    """(cupy._core.core, cupy.cuda.compiler) with the arch lookup that needs a device bypassed."""
    try:
        import cupy._core.core as core
        import cupy.cuda.compiler as compiler
    except Exception as exc:  # ImportError, or cupy failing to find NVRTC
        _unavailable(f"cupy is not importable ({exc}): pip install gpuroof[nvrtc]")
    mp = pytest.MonkeyPatch()
    mp.setattr(compiler, "_get_arch_for_options_for_nvrtc",
               compiler._get_arch_for_options_for_nvrtc.__wrapped__)
    yield core, compiler
    mp.undo()


_built: dict[tuple[str, str], tuple[bytes, dict]] = {}


def build(nvrtc, label: str, arch: str) -> tuple[bytes, dict]:
    """(cubin, name expression -> mangled name) of one module, compiled once per test session."""
    key = (label, arch)
    if key not in _built:
        core, compiler = nvrtc
        file, names = modules()[label]
        cubin, mapping = compiler.compile_using_nvrtc(
            kernels.kernel_source(file), kernels.nvrtc_options(core), arch=arch, name_expressions=names,
            cache_in_memory=True)
        _built[key] = (bytes(cubin), dict(mapping))
    return _built[key]


def test_nvrtc_options_find_the_fp16_and_bf16_headers(nvrtc):
    core, _ = nvrtc
    opts = kernels.nvrtc_options(core)
    assert opts[-1] == "-ftz=true" and "-std=c++17" in opts
    dirs = [Path(o[2:]) for o in opts if o.startswith("-I")]
    assert any((d / "cuda_fp16.h").is_file() and (d / "cuda_bf16.h").is_file() for d in dirs), \
        f"no include dir with cuda_fp16.h and cuda_bf16.h among {dirs} (pip install nvidia-cuda-runtime)"


@pytest.mark.parametrize("arch", ARCHES)
def test_every_instantiation_compiles_with_nvrtc_to_a_mangled_name(nvrtc, arch, capsys):
    count = 0
    for label, (file, names) in modules().items():
        cubin, mapping = build(nvrtc, label, arch)
        assert cubin[:4] == b"\x7fELF", f"{label}: NVRTC returned no cubin for sm_{arch}"
        assert set(mapping) == set(names), f"{label}: unmapped {set(names) - set(mapping)}"
        for name, mangled in mapping.items():
            assert mangled == name if "<" not in name else mangled.startswith("_Z"), (name, mangled)
        assert len(set(mapping.values())) == len(names)
        count += len(names)
    assert count == 4 * 2 * len(kernels.SWEEP_FMAS) + 2 + 1 + 4 * (len(CONV_KSIZES) + 1) + 4 * 3 + 4
    with capsys.disabled():
        print(f"\nNVRTC sm_{arch}: {count} kernel instantiations compiled, every name expression mapped")


# ---------------------------------------------------------------------------------------------
# SASS
# ---------------------------------------------------------------------------------------------

def _tool_dirs() -> list[str]:
    """PATH, plus the bin folder of the nvidia-cuda-* wheels (cuobjdump, nvdisasm)."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    try:
        import nvidia
        dirs += [str(Path(p) / sub / "bin") for p in nvidia.__path__ for sub in ("cu13", "cu12", ".")]
    except ImportError:
        pass
    return dirs


@pytest.fixture(scope="module")
def cuobjdump():
    path = os.pathsep.join(_tool_dirs())
    tool = shutil.which("cuobjdump", path=path)
    if tool is None or shutil.which("nvdisasm", path=path) is None:
        pytest.skip("cuobjdump or nvdisasm not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    env = {**os.environ, "PATH": path}

    def run(cubin: bytes, flag: str, tmp: Path) -> str:
        # The cubin cupy hands back lacks the ELF's final byte (its program headers end one byte
        # past it); the driver does not mind, cuobjdump does. Pad to the size the header declares.
        end = int.from_bytes(cubin[0x20:0x28], "little") + \
            int.from_bytes(cubin[0x36:0x38], "little") * int.from_bytes(cubin[0x38:0x3A], "little")
        file = tmp / "k.cubin"
        file.write_bytes(cubin + b"\0" * max(0, end - len(cubin)))
        out = subprocess.run([tool, flag, str(file)], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout
    return run


def functions(sass: str) -> dict[str, list[tuple[int, str, str]]]:
    """mangled name -> [(address, opcode, operands)] from `cuobjdump -sass`."""
    out: dict[str, list[tuple[int, str, str]]] = {}
    current = None
    for line in sass.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = out.setdefault(m.group(1), [])
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);", line)
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return out


def resources(text: str) -> dict[str, dict[str, int]]:
    """mangled name -> {'REG': .., 'STACK': .., 'LOCAL': ..} from `cuobjdump -res-usage`."""
    out = {}
    for name, body in re.findall(r"Function (\S+):\s*\n\s*(.*)", text):
        out[name] = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", body)}
    return out


def innermost_loops(code: list[tuple[int, str, str]]) -> list[list[str]]:
    """Opcodes of each loop whose body holds no other loop (a loop: a backward branch, from its
    target to the branch)."""
    return [[op for _, op, _ in ins] for ins in innermost_loop_code(code)]


def innermost_loop_code(code: list[tuple[int, str, str]]) -> list[list[tuple[int, str, str]]]:
    """Each innermost loop's instructions (address, opcode, operands)."""
    loops = []
    for addr, op, args in code:
        m = re.match(r"0x([0-9a-f]+)", args.strip()) if op == "BRA" else None
        if m and int(m.group(1), 16) < addr:
            loops.append((int(m.group(1), 16), addr))
    inner = [(lo, hi) for lo, hi in loops if not any(lo <= a and b <= hi and (a, b) != (lo, hi)
                                                     for a, b in loops)]
    return [[ins for ins in code if lo <= ins[0] <= hi] for lo, hi in inner]


#: The packed or scalar FMA opcode each dtype's chains compile to (-ftz=true gives FFMA.FTZ).
FMA_OP = {"float64": "DFMA", "float32": "FFMA.FTZ", "float16": "HFMA2", "bfloat16": "HFMA2.BF16_V2"}


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("dtype", list(kernels.CUDA_TYPE))
def test_sweep_sass_has_8_chains_of_32_fmas_per_loop_trip_128_bit_accesses_and_no_spills(
        nvrtc, cuobjdump, dtype, arch, tmp_path, capsys):
    cubin, mapping = build(nvrtc, f"sweep {dtype}", arch)
    code = functions(cuobjdump(cubin, "-sass", tmp_path))
    res = resources(cuobjdump(cubin, "-res-usage", tmp_path))
    regs = {}
    for name, mangled in mapping.items():
        assert res[mangled]["LOCAL"] == 0 and res[mangled]["STACK"] == 0, f"{name}: local memory {res[mangled]}"
        ops = [op for _, op, _ in code[mangled]]
        assert not any(op.startswith(("LDL", "STL")) for op in ops), f"{name}: local loads or stores"
        regs[name] = res[mangled]["REG"]
        if not name.startswith("sweep<"):
            continue
        loads = [op for op in ops if op.startswith("LDG")]
        assert loads and all(".128" in op for op in loads), f"{name}: loads {sorted(set(loads))}"
        if name.endswith("true>"):
            stores = [op for op in ops if op.startswith("STG")]
            assert stores and all(".128" in op for op in stores), f"{name}: stores {sorted(set(stores))}"
    # 2048 FMAs = 64 trips of an unrolled block of 32 FMAs on each of 8 chains: 256 per trip, in the
    # full steps and in the guarded last step alike (a half2 / bfloat162 FMA is one instruction;
    # the compiler may keep more than one copy of a loop).
    for write in ("false", "true"):
        name = f"sweep<{kernels.CUDA_TYPE[dtype]}, 2048, {write}>"
        per_trip = [ops.count(FMA_OP[dtype]) for ops in innermost_loops(code[mapping[name]])]
        trips = [n for n in per_trip if n]
        assert len(trips) >= 2 and set(trips) == {256}, f"{name}: FMAs per loop trip {per_trip}"
    with capsys.disabled():
        ro = [r for n, r in regs.items() if n.endswith("false>") and n.startswith("sweep")]
        rw = [r for n, r in regs.items() if n.endswith("true>") and n.startswith("sweep")]
        print(f"\nsm_{arch} sweep<{dtype}>: registers ro {min(ro)}-{max(ro)}, rw {min(rw)}-{max(rw)}; "
              f"{FMA_OP[dtype]} per loop trip at 2048 FMAs: 256; no spills")


def loads_in_flight(code: list[tuple[int, str, str]]) -> int:
    """Most 128-bit global loads outstanding at once in this straight-line code.

    A load stays in flight until a later instruction names a register it writes (reads it, or
    overwrites it: either waits on the load's scoreboard, and issue is in order). Each register a
    later instruction names counts as itself and the next one (it may be half of a 64-bit
    operand), so the count can only err low.
    """
    outstanding: list[set[int]] = []
    most = 0
    for _, op, args in code:
        named = {int(r) for r in re.findall(r"\bR(\d+)\b", args)}
        named |= {r + 1 for r in named}
        is_load = op.startswith("LDG") and ".128" in op
        dest = None
        if is_load:
            first = re.match(r"\s*R(\d+)", args)
            dest = set(range(int(first.group(1)), int(first.group(1)) + 4)) if first else None
            named -= dest or set()  # its own address may share the destination registers
        outstanding = [regs for regs in outstanding if not regs & named]
        if dest:
            outstanding.append(dest)
        most = max(most, len(outstanding))
    return most


@pytest.mark.parametrize("arch", ARCHES)
def test_cache_read_keeps_at_least_4_independent_loads_in_flight(nvrtc, cuobjdump, arch, tmp_path, capsys):
    """The old loop (one load feeding four adds behind the loop's exit test) had one load in flight."""
    cubin, mapping = build(nvrtc, "sweep float32", arch)
    code = functions(cuobjdump(cubin, "-sass", tmp_path))
    res = resources(cuobjdump(cubin, "-res-usage", tmp_path))
    for name in kernels.CACHE_READ.values():
        loops = innermost_loop_code(code[mapping[name]])
        hot = max(loops, key=lambda ins: sum(op.startswith("LDG") for _, op, _ in ins))
        flight = loads_in_flight(hot)
        assert flight >= 4, f"{name}: {flight} load(s) in flight in its hot loop"
        loads = sum(op.startswith("LDG") for _, op, _ in hot)
        with capsys.disabled():
            print(f"\nsm_{arch} {name}: {flight} loads in flight, {loads} loads per trip, "
                  f"{res[mapping[name]]['REG']} registers")


def test_loads_in_flight_counts_a_load_consumed_at_once_as_one():
    serial = [(0, "LDG.E.128", "R4, desc[UR6][R2.64]"), (1, "FADD.FTZ", "R8, R8, R4"),
              (2, "LDG.E.128", "R4, desc[UR6][R6.64]"), (3, "FADD.FTZ", "R8, R8, R5")]
    assert loads_in_flight(serial) == 1
    batched = [(0, "LDG.E.128", "R4, desc[UR6][R2.64]"), (1, "LDG.E.128", "R12, desc[UR6][R10.64]"),
               (2, "IMAD.WIDE.U32", "R20, R22, 0x10, R24"), (3, "LDG.E.128", "R16, desc[UR6][R20.64]"),
               (4, "FADD.FTZ", "R8, R8, R4"), (5, "LDG.E.128", "R28, desc[UR6][R26.64]")]
    assert loads_in_flight(batched) == 3  # the add waits for the first load before the fourth issues
    overwrite = [(0, "LDG.E.128", "R4, desc[UR6][R2.64]"), (1, "IADD3", "R7, R20, R22, RZ"),
                 (2, "LDG.E.128", "R12, desc[UR6][R10.64]")]
    assert loads_in_flight(overwrite) == 1  # writing R7 waits for the load that writes R4..R7


@pytest.mark.parametrize("arch", ARCHES)
def test_cache_read_bypasses_l1_only_in_its_cg_instance(nvrtc, cuobjdump, arch, tmp_path):
    cubin, mapping = build(nvrtc, "sweep float32", arch)
    code = functions(cuobjdump(cubin, "-sass", tmp_path))
    cg = {op for _, op, _ in code[mapping["cache_read<true>"]] if op.startswith("LDG")}
    ca = {op for _, op, _ in code[mapping["cache_read<false>"]] if op.startswith("LDG")}
    assert cg == {"LDG.E.128.STRONG.GPU"}, cg  # ld.global.cg: cached in L2 only
    assert ca == {"LDG.E.128.CONSTANT"}, ca  # ld.global.nc: through L1


@pytest.mark.parametrize("arch", ARCHES)
def test_conv2d_direct_feeds_8_fmas_from_two_128_bit_shared_loads(nvrtc, cuobjdump, arch, tmp_path):
    cubin, mapping = build(nvrtc, "conv2d", arch)
    code = functions(cuobjdump(cubin, "-sass", tmp_path))
    ops = [op for _, op, _ in code[mapping[direct_name("float32", 3)]]]
    shared = [op for op in ops if op.startswith("LDS")]
    assert shared and all(op == "LDS.128" for op in shared), sorted(set(shared))
    assert ops.count("FFMA.FTZ") >= 4 * len(shared), (ops.count("FFMA.FTZ"), len(shared))


#: Opcodes a 32-bit integer division leaves in SASS: by a runtime divisor, IMAD.HI (with the
#: reciprocal from I2F.RP and MUFU.RCP, hoisted when the divisor is loop-invariant); a 64-bit one
#: calls a routine.
DIVISION_OPS = ("IMAD.HI", "MUFU.RCP", "I2F.RP", "I2F.U32.RP", "CALL")

#: Most SASS instructions per element the im2col hot loop may take (the one-element-per-thread
#: kernel it replaced took 91, five of its divisions among them).
IM2COL_MAX_INSTRUCTIONS_PER_ELEMENT = 10


@pytest.mark.parametrize("arch", ARCHES)
def test_im2col_hot_loop_has_no_division_and_few_instructions_per_element(nvrtc, cuobjdump, arch, tmp_path,
                                                                          capsys):
    cubin, mapping = build(nvrtc, "conv2d", arch)
    code = functions(cuobjdump(cubin, "-sass", tmp_path))
    figures = []
    for dtype in WORKLOAD_TYPES:
        body = code[mapping[im2col_name(dtype)]]
        ops = [op for _, op, _ in body]
        assert ops.count("MUFU.RCP") == 1, f"{dtype}: {ops.count('MUFU.RCP')} reciprocals (one: pixel -> oh, ow)"
        loops = [loop for loop in innermost_loops(body) if any(op.startswith("STG") for op in loop)]
        assert loops, f"{dtype}: no loop stores"
        for loop in loops:
            divisions = sorted({op for op in loop if op.startswith(DIVISION_OPS)})
            assert not divisions, f"{dtype}: a storing loop divides: {divisions}"
        hot = max(loops, key=lambda loop: sum(op.startswith("STG") for op in loop))
        per = len(hot) / sum(op.startswith("STG") for op in hot)
        assert per <= IM2COL_MAX_INSTRUCTIONS_PER_ELEMENT, f"{dtype}: {per:.1f} instructions per element"
        figures.append(f"{dtype} {per:.2f}")
    with capsys.disabled():
        print(f"\nsm_{arch} im2col hot loop, SASS instructions per element: {', '.join(figures)}; "
              "divisions in it: 0; per thread: 1")
