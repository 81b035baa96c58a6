"""What the CUDA backend compiles: kernel sources, their instantiations, NVRTC options and storage forms (no cupy)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import gpuroof
from gpuroof.backends.base import ITEMSIZE, bf16_bits_from_float64, float64_from_bf16_bits  # noqa: F401 - the cuda package's names
from gpuroof.errors import MeasurementError

#: FMAs per element the sweep kernel is compiled for (one template instance each, per dtype and
#: variant). The sweep chooses its intensities from these; the compile tests instantiate them.
SWEEP_FMAS = (0,) + tuple(2 ** k for k in range(12))  # 0, 1, 2, 4, ..., 2048

#: Threads per block. 256 lets 8 blocks fill an SM of 2048 threads when registers allow.
BLOCK = 256

#: Bytes per load and store of the sweep kernel (uint4 / float4 / double2).
VECTOR_BYTES = 16

#: C++ type of each dtype in kernels/sweep.cu.
CUDA_TYPE = {"float64": "double", "float32": "float", "float16": "__half", "bfloat16": "__nv_bfloat16"}

#: 16-byte vectors a thread keeps in flight per step; mirrors `Ops<T>::kVecsPerThread` in sweep.cu.
#: Each gives 8 independent FMA chains per thread (double 4x2 lanes, float 2x4, 16-bit 2x4 pairs).
VECS_PER_THREAD = {"float64": 4, "float32": 2, "float16": 2, "bfloat16": 2}

#: How the sweep stores each dtype on the device (bfloat16 as its 16-bit pattern: numpy has no bf16).
STORAGE_DTYPE = {"float64": "float64", "float32": "float32", "float16": "float16", "bfloat16": "uint16"}

#: Per-thread read-only sums: float for float/half/bf16, double for double (as in sweep.cu).
PARTIAL_DTYPE = {"float64": "float64", "float32": "float32", "float16": "float32", "bfloat16": "float32"}

#: NVRTC options the backend passes to cupy.RawModule. The FMAs are explicit (fma/fmaf/__hfma2), so
#: no fast-math flag is needed. cupy adds its include paths and -ftz=true (`nvrtc_options`).
COMPILE_OPTIONS = ("-std=c++17",)

#: Working-set reads (kernels/sweep.cu `cache_read`): CG = true loads with __ldcg (L2, never L1).
CACHE_READ = {False: "cache_read<false>", True: "cache_read<true>"}

#: A cache_read thread reads at least this many 16-byte vectors per pass, so even the smallest
#: working set keeps every thread of the grid streaming (several loads in flight, little loop cost).
CACHE_READS_PER_THREAD = 8


def kernel_path(name: str) -> Path:
    """Path of a CUDA source: the wheel's copy (gpuroof/_kernels/) first, then a checkout's kernels/."""
    pkg = Path(gpuroof.__file__).resolve().parent
    candidates = (pkg / "_kernels" / name, pkg.parent / "kernels" / name)
    for path in candidates:
        if path.is_file():
            return path
    raise MeasurementError(
        f"kernel source {name!r} not found; looked in {', '.join(str(p) for p in candidates)} "
        "(a broken install: reinstall gpuroof, or run from a source checkout)")


def kernel_source(name: str) -> str:
    """Text of a CUDA source found by `kernel_path`."""
    path = kernel_path(name)
    try:
        return path.read_text()
    except OSError as exc:
        raise MeasurementError(f"kernel source {path}: cannot read it ({exc})") from exc


def nvrtc_options(cupy_core: Any, options: tuple[str, ...] = COMPILE_OPTIONS) -> tuple[str, ...]:
    """The options NVRTC receives from `cupy.RawModule(code, options)`, less the -arch flag.

    cupy's RawModule goes through `compile_with_cache`, which assembles its include paths (cupy's own
    and the CUDA headers: a toolkit's, or the nvidia-cuda-runtime wheel's) and then adds -ftz=true.
    The compile check calls NVRTC with exactly these, so what it proves is what a run compiles.
    """
    return tuple(cupy_core.assemble_cupy_compiler_options(tuple(options))) + ("-ftz=true",)


def granule(dtype: str) -> int:
    """Elements a sweep length must be a multiple of: one step of one thread (V 16-byte vectors)."""
    return VECS_PER_THREAD[dtype] * VECTOR_BYTES // ITEMSIZE[dtype]


def name_expression(dtype: str, fmas: int, write: bool) -> str:
    """The NVRTC name expression of one sweep instance, e.g. 'sweep<float, 64, true>'."""
    return f"sweep<{CUDA_TYPE[dtype]}, {int(fmas)}, {'true' if write else 'false'}>"


def name_expressions(dtype: str) -> list[str]:
    """Every instance of one dtype: all of SWEEP_FMAS, read-only and read-write."""
    return [name_expression(dtype, k, w) for k in SWEEP_FMAS for w in (False, True)]


def sweep_module_expressions(dtype: str) -> list[str]:
    """Everything one dtype's sweep module holds: its sweep instances, and for float32 (the type the
    working-set sweep streams) the two cache_read kernels."""
    extra = list(CACHE_READ.values()) if dtype == "float32" else []
    return name_expressions(dtype) + extra


def cache_read_plan(nvec: int, threads: int, passes: int) -> tuple[int, int, int]:
    """(copies, reads_per_pass, kernel_passes) of a cache_read launch over `nvec` vectors.

    Each pass reads every vector `copies` times (copies x nvec reads, spread over all `threads`, at
    least CACHE_READS_PER_THREAD each), so no thread idles below the grid's own size and the closed
    form stays exact. `passes` asks for that many reads of every element in all; the kernel makes
    ceil(passes / copies) passes, so a launch moves about the bytes the caller asked for.
    """
    if nvec <= 0 or threads <= 0 or passes <= 0:
        raise ValueError(f"cache_read over {nvec} vectors, {threads} threads, {passes} passes")
    copies = max(1, -(-CACHE_READS_PER_THREAD * threads // nvec))
    reads = copies * nvec
    if reads >= 2 ** 31:  # the kernel's unsigned index plus its advance stays below 2^32
        raise ValueError(f"cache_read: {reads} reads per pass exceed 32-bit indices")
    return copies, reads, max(1, -(-passes // copies))


def round_tf32(a: np.ndarray) -> np.ndarray:
    """float64 values rounded to tf32 (10 explicit mantissa bits) as the tensor cores read float32."""
    bits = a.astype(np.float32).view(np.uint32)
    bits = (bits + np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return bits.view(np.float32).astype(np.float64)
