"""What a workload is: parameters, analytic FLOPs and compulsory bytes, its unit, runners, a reference.

A workload is data: a frozen `Workload` holding pure functions of a frozen
parameter dataclass. FLOPs and bytes are counted analytically; intensity is derived from them and
never typed in. Each backend has a runner that allocates device arrays from float64 inputs and
returns a `Prepared` whose `run` blocks until the work is done (the backend contract); the float64
NumPy reference says what the output must be before any time counts.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from gpuroof.backends.base import (ITEMSIZE, Blocking, bf16_bits_from_float64,  # noqa: F401  (Blocking: the workloads' runs)
                                   float64_from_bf16_bits, rel_error, sample_rows)
from gpuroof.errors import UsageError

#: The counting conventions every workload follows; written into each run.json that holds workloads.
CONVENTIONS = {
    "flops": "analytic: an FMA counts 2 FLOPs (a multiply and an add); a bias add or a scalar "
             "multiply counts 1; sigmoid and tanh count 1 each; max(x, 0) counts 0",
    "bytes": "compulsory traffic: every input, weight and output array moved once per launch "
             "(inputs read once, weights read once, outputs written once); intermediates a fused "
             "implementation would keep on chip are not counted; reported as input_bytes, "
             "weight_bytes and output_bytes so other conventions can be derived",
    "lstm": "one case is T steps; each step is its own gates GEMM plus pointwise launch and must "
            "read the weights, its input x_t and the state (h, c), and write the new state; the "
            "counts are T times one step's",
    "intensity": "flops / bytes (FLOP/byte), derived, never declared",
    "time": "seconds per launch (a whole case: all T steps, all layers); median over repetitions",
    "check": "every output is compared with a float64 NumPy reference computed from the same "
             "(dtype-rounded) inputs: max |out - ref| / max |ref| must not exceed the case's "
             "tolerance before its time counts",
}

#: Unit roundoff of each storage dtype (half the distance from 1 to the next number).
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}

#: The dtype arithmetic is accumulated in: 16-bit inputs accumulate in float32 everywhere here.
ACCUMULATE = {"float64": "float64", "float32": "float32", "float16": "float32", "bfloat16": "float32"}

SIZES = ("small", "default", "large")


def tolerance(dtype: str, reduction: int, depth: int = 1) -> float:
    """Normwise relative tolerance: output rounding plus a sqrt(n) accumulation term, per stage.

    `reduction` is the length of the longest dot product behind one output element; `depth` the
    number of dependent stages whose rounding errors add up (MLP layers, LSTM steps). Random
    rounding errors grow like sqrt(n) (Higham, ch. 3), so the margin of 4-8 unit roundoffs over
    that keeps honest kernels passing while a wrong index or a missed term (errors of order 1e-2
    or more) fails.
    """
    store = UNIT_ROUNDOFF[dtype]
    acc = UNIT_ROUNDOFF[ACCUMULATE[dtype]]
    return (8 * store + 8 * acc * math.sqrt(max(1, reduction))) * max(1, depth)


def accumulate_unit(dtype: str) -> str:
    """Vector FMA unit a hand-written kernel runs on (16-bit data accumulates in float32)."""
    return ACCUMULATE[dtype]


def matrix_unit(dtype: str) -> str:
    """The matrix-unit ceiling key of `dtype`, e.g. 'float32-matrix' (measure's GEMM sweep)."""
    return f"{dtype}-matrix"


def library_unit(dtype: str, gpu: bool) -> str:
    """The ceiling a library GEMM (BLAS, cuBLAS, cuDNN) is bounded by.

    On the CPU it is the BLAS ceiling of its dtype (`<dtype>-matrix`). On CUDA, 16-bit and float64
    GEMMs run on tensor cores (`<dtype>-matrix`), but float32 with float32 compute is an SGEMM on
    the FP32 FMA pipes, i.e. the float32 vector roof.
    """
    if gpu and dtype == "float32":
        return "float32"
    return matrix_unit(dtype)


@dataclass(frozen=True)
class Traffic:
    """Compulsory bytes of one launch, kept apart so other conventions can be derived."""

    input_bytes: int
    weight_bytes: int
    output_bytes: int

    @property
    def total(self) -> int:
        return self.input_bytes + self.weight_bytes + self.output_bytes


@dataclass
class Prepared:
    """One case allocated on a backend. `run()` blocks until done; `output()` is the result as a host
    array in storage form (bfloat16 as uint16 bits), which the bench converts to float64.

    `run` may carry an `enqueue` attribute (work submitted, not waited for) so that a device timer
    can put its events around exactly the device work.
    """

    run: Callable[[], None]
    output: Callable[[], Any]
    keep: list = field(default_factory=list)  # arrays that must live as long as `run`
    #: `run.enqueue` may be captured into a CUDA graph: it only launches kernels on the current
    #: stream (no library call, which CuPy refuses during capture; no allocation, no synchronise).
    graph: bool = False



Runner = Callable[[Any, Any, Mapping[str, np.ndarray]], Prepared]


@dataclass(frozen=True)
class Workload:
    """A declaration: everything about a workload except the numbers a run measures."""

    name: str
    doc: str
    params: type  # the frozen parameter dataclass
    flops: Callable[[Any], int]
    traffic: Callable[[Any], Traffic]
    unit: Callable[[Any], str]  # compute ceiling key: "float32" (vector FMA) or "float32-matrix"
    tolerance: Callable[[Any], float]
    inputs: Callable[[Any, np.random.Generator], dict]  # float64 values exact in the case's dtype
    reference: Callable[[Any, Mapping[str, np.ndarray]], tuple]  # -> (index into output, float64)
    runners: Mapping[str, Mapping[str, Runner]]  # backend name -> impl -> runner
    cases: Callable[[str, str, int], list]  # (size, backend name, last-level cache bytes) -> params
    device_bytes: Callable[[Any], int]  # every array a runner allocates, workspaces included
    #: The byte count includes data a launch reads more than once (LSTM: the weights every step),
    #: which a cache can serve within one launch however large the rotation between launches is.
    reuse_within_launch: bool = False

    def impls(self, backend: str) -> tuple[str, ...]:
        return tuple(self.runners.get(backend, {}))

    def intensity(self, p: Any) -> float:
        return self.flops(p) / self.traffic(p).total

    def make(self, **kw: Any) -> Any:
        """Parameters from keyword values, with every field checked (UsageError on bad input)."""
        names = {f.name for f in dataclasses.fields(self.params)}
        bad = sorted(set(kw) - names)
        if bad:
            raise UsageError(f"--shape {','.join(bad)}: not a {self.name} parameter "
                             f"(allowed: {', '.join(sorted(names))})")
        return self.params(**kw)


def params_dict(p: Any) -> dict:
    return dataclasses.asdict(p)


def check_positive(owner: str, **values: int) -> None:
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise UsageError(f"{owner}: {k}={v!r} must be a positive integer")


def check_dtype(owner: str, dtype: str, allowed: tuple[str, ...] = tuple(ITEMSIZE)) -> None:
    if dtype not in allowed:
        raise UsageError(f"{owner}: dtype={dtype!r} (allowed: {', '.join(allowed)})")


def check_impl(owner: str, impl: str, allowed: tuple[str, ...]) -> None:
    if impl not in allowed:
        raise UsageError(f"{owner}: impl={impl!r} (allowed: {', '.join(allowed)})")


# ---------------------------------------------------------------------------------------------
# dtypes on the host: numpy has no bfloat16, so it is stored as its 16-bit pattern (uint16)
# ---------------------------------------------------------------------------------------------

STORAGE = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


def to_storage(values: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values as a host array of the dtype's storage type (C-contiguous)."""
    if dtype == "bfloat16":
        return np.ascontiguousarray(bf16_bits_from_float64(np, np.asarray(values, dtype=np.float64)))
    return np.ascontiguousarray(values, dtype=STORAGE[dtype])


def to_float64(arr: np.ndarray, dtype: str) -> np.ndarray:
    """A host array in storage form as float64 values."""
    if dtype == "bfloat16":
        return float64_from_bf16_bits(np, np.asarray(arr, dtype=np.uint16))
    return np.asarray(arr, dtype=np.float64)


def quantize(values: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values rounded to `dtype`: the exact inputs a kernel of that dtype sees."""
    return to_float64(to_storage(values, dtype), dtype)


def random_inputs(rng: np.random.Generator, dtype: str, shape: tuple, scale: float = 1.0) -> np.ndarray:
    """Uniform values in [-scale, scale), rounded to `dtype` (so the reference sees what the kernel sees)."""
    return quantize(rng.uniform(-scale, scale, size=shape), dtype)
