"""An output element a kernel never wrote (still the NaN fill) or any non-finite value fails the
check of every validated path: the sweep (rw and ro), the working-set sweep, the GEMM sweep and the
workloads. Real kernels run; the test then leaves part of their output as a skipped write would.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from gpuroof.backends.base import fill_value, unwritten
from gpuroof.backends.cpu import CpuBackend
from gpuroof.backends.cpu.blas import cpu_gemm
from gpuroof.hierarchy import Level, hierarchy_sweep
from gpuroof.matrix import matrix_sweep, sample_rows
from gpuroof.sweep import TOLERANCE, check

UNWRITTEN = 4096  # the count: a float32 rw point whose last 4,096 elements were never written


@pytest.fixture(scope="module")
def cpu():
    b = CpuBackend()
    yield b
    b.close()


def _fresh_rw(backend, dtype: str):
    """A sweep buffer as run_sweep leaves it before a point: output filled with NaN."""
    buf = backend.alloc_sweep(dtype, 64 * backend.granule(dtype) * 4)
    buf.out[:] = np.nan
    return buf


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rw_point_with_unwritten_tail_fails_the_closed_form_check(cpu, dtype):
    buf = _fresh_rw(cpu, dtype)
    written = buf.elements - max(buf.granule, UNWRITTEN // buf.granule * buf.granule)
    cpu.sweep_launch(buf, 1, "rw", written).run()  # the kernel covers all but the tail
    err = check(cpu, buf, "rw", 1, buf.elements, 0)
    assert math.isinf(err) and not err <= TOLERANCE[("rw", dtype)]
    # the same buffer written in full passes exactly: the check is not failing everything
    cpu.sweep_launch(buf, 1, "rw", buf.elements).run()
    assert check(cpu, buf, "rw", 1, buf.elements, 0) == 0.0


def test_rw_point_with_a_few_nan_elements_in_the_middle_fails(cpu):
    buf = _fresh_rw(cpu, "float32")
    cpu.sweep_launch(buf, 4, "rw", buf.elements).run()
    assert check(cpu, buf, "rw", 4, buf.elements, 0) == 0.0
    buf.out[1000:1003] = np.nan  # max() over a chunk holding NaN used to let these through
    assert math.isinf(check(cpu, buf, "rw", 4, buf.elements, 0))
    buf.out[1000:1003] = np.inf
    assert math.isinf(check(cpu, buf, "rw", 4, buf.elements, 0))


def test_ro_point_with_an_unwritten_partial_sum_fails(cpu):
    buf = _fresh_rw(cpu, "float32")
    buf.partial[...] = np.nan
    launch = cpu.sweep_launch(buf, 2, "ro", buf.elements)
    launch.run()
    assert check(cpu, buf, "ro", 2, buf.elements, launch.partial_elements) <= TOLERANCE[("ro", "float32")]
    buf.partial[-1] = np.nan  # one thread's sum never stored
    assert math.isinf(check(cpu, buf, "ro", 2, buf.elements, launch.partial_elements))


class _SkipsOnePartial:
    """The CPU backend, except that each working-set launch leaves its last partial sum unwritten
    (as a kernel with one thread too few would)."""

    def __init__(self, backend):
        self._b = backend

    def __getattr__(self, name):
        return getattr(self._b, name)

    def working_set_launch(self, buf, elements, passes):
        launch = self._b.working_set_launch(buf, elements, passes)

        def run():
            launch.run()
            buf.partial.reshape(-1)[-1] = np.nan
        return type(launch)(run=run, elements=launch.elements, partial_elements=launch.partial_elements,
                            partial_itemsize=launch.partial_itemsize, passes=launch.passes)


def test_working_set_sweep_marks_a_size_with_an_unwritten_sum_invalid(cpu):
    levels = [Level("l1", 32 << 10), Level("dram", None)]
    kw = dict(quick=True, budget_s=0.0, min_reps=1, max_reps=1, retries=0)
    good = hierarchy_sweep(cpu, levels, **kw)
    assert good["valid"].all()
    bad = hierarchy_sweep(_SkipsOnePartial(cpu), levels, **kw)
    assert not bad["valid"].any() and np.isinf(bad["rel_error"]).all()


def test_gemm_with_an_unwritten_element_outside_the_sampled_rows_fails():
    g = cpu_gemm("float32", 64)
    assert math.isinf(g.check())  # nothing written yet: the NaN fill fails it
    g.run()
    assert g.check() <= 1e-5
    row = next(r for r in range(64) if r not in set(sample_rows(64)))
    g.output[row, 3] = np.nan
    assert math.isinf(g.check())


class _GemmSkipsARow:
    """The CPU backend, except that each GEMM leaves row 1 (not a sampled row) unwritten."""

    def __init__(self, backend):
        self._b = backend

    def __getattr__(self, name):
        return getattr(self._b, name)

    def gemm(self, unit, n):
        g = self._b.gemm(unit, n)

        def run():
            g.run()
            g.output[1] = np.nan
        return dataclasses.replace(g, run=run)


def test_gemm_sweep_marks_a_size_with_an_unwritten_row_invalid(cpu):
    kw = dict(budget_s=0.0, min_reps=1, max_reps=1, retries=0)
    assert matrix_sweep(cpu, ("float32",), (64,), **kw)["valid"].all()
    bad = matrix_sweep(_GemmSkipsARow(cpu), ("float32",), (64,), **kw)
    assert not bad["valid"].any()


def _cases():
    from gpuroof.workloads import plan

    return plan(None, "small", "cpu", 32 << 20)


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{c.name}-{c.impl}-{c.label}")
def test_every_workload_output_fails_before_its_kernel_ran_and_passes_after(cpu, case):
    """Every CPU runner fills its output so that an element no kernel wrote fails `bench._check`,
    also where the float64 reference samples only some elements."""
    from gpuroof.bench import _check

    rng = np.random.default_rng(0)
    inputs = case.workload.inputs(case.params, rng)
    sel, ref = case.workload.reference(case.params, inputs)
    prep = case.workload.runners["cpu"][case.impl](cpu, case.params, inputs)
    assert unwritten(np, np.asarray(prep.output())) > 0, "the output is not filled before the run"
    assert math.isinf(_check(case, [prep], sel, ref))
    prep.run()
    assert _check(case, [prep], sel, ref) <= case.tolerance


def test_gemm_workload_with_one_unwritten_element_outside_the_reference_sample_fails(cpu):
    from gpuroof.bench import _check
    from gpuroof.workloads import plan

    case = plan(["gemm"], "small", "cpu", 32 << 20, {"m": 600, "n": 64, "k": 64})[0]  # 256 of 600 rows referenced
    inputs = case.workload.inputs(case.params, np.random.default_rng(0))
    sel, ref = case.workload.reference(case.params, inputs)
    prep = case.workload.runners["cpu"][case.impl](cpu, case.params, inputs)
    prep.run()
    assert _check(case, [prep], sel, ref) <= case.tolerance
    out = prep.output()
    mask = np.ones(out.shape, bool)
    mask[sel] = False
    i = np.argwhere(mask)[0]
    out[tuple(i)] = np.nan
    assert math.isinf(_check(case, [prep], sel, ref))


def test_unwritten_counts_each_storage_types_fill():
    for dtype in ("float32", "float64", "float16", "uint16", "int32"):
        a = np.zeros(10, dtype=dtype)
        assert unwritten(np, a) == 0
        a[[2, 7]] = fill_value(dtype)
        assert unwritten(np, a) == 2, dtype
    bits = np.array([0x3F80, 0x7F80, 0xFF80, 0x7FC0], dtype=np.uint16)  # 1.0, +inf, -inf, NaN (bfloat16)
    assert unwritten(np, bits) == 3


@pytest.mark.gpu
def test_cuda_rw_point_with_unwritten_tail_fails_the_closed_form_check():
    cupy = pytest.importorskip("cupy", reason="cupy is not installed")
    from gpuroof.backends import cuda

    if not cuda.CudaBackend.available():
        pytest.skip("cupy sees no CUDA device")
    b = cuda.CudaBackend(0)
    try:
        for dtype in ("float32", "bfloat16"):
            buf = b.alloc_sweep(dtype, 16 << 20)
            step = b.sweep_step(buf, 1, "rw")
            buf.out[:] = fill_value(cupy.asnumpy(buf.out[:1]).dtype)
            written = (buf.elements - UNWRITTEN) // step * step
            b.sweep_launch(buf, 1, "rw", written).run()
            assert math.isinf(check(b, buf, "rw", 1, buf.elements, 0)), dtype
            assert check(b, buf, "rw", 1, written, 0) == 0.0, dtype
    finally:
        b.close()
