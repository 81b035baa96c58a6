"""FLOP/byte accounting of the sweep, size parsing, and the closed form the kernels are checked against."""
import numpy as np
import pytest

from gpuroof.backends.base import SWEEP_A, SWEEP_B, sweep_input
from gpuroof.sweep import FMA_GRID, QUICK_FMA_GRID, counts
from gpuroof.units import parse_bytes, si


def test_rw_point_counts_two_flops_per_fma_and_read_plus_write():
    flops, nbytes = counts("float32", "rw", fmas=8, elements=1000, partial_elements=0, partial_itemsize=4)
    assert flops == 2 * 8 * 1000
    assert nbytes == 1000 * 4 * 2


def test_ro_point_counts_the_partial_sums_it_writes():
    flops, nbytes = counts("float16", "ro", fmas=3, elements=4096, partial_elements=64, partial_itemsize=4)
    assert flops == 2 * 3 * 4096
    assert nbytes == 4096 * 2 + 64 * 4


def test_zero_fmas_is_pure_traffic():
    assert counts("float64", "rw", 0, 10, 0, 8) == (0, 160)


def test_fma_grid_spans_four_decades_of_intensity_and_every_ridge():
    assert FMA_GRID[0] == 0 and FMA_GRID[-1] >= 2048
    # lowest nonzero intensity (float64 rw, 1 FMA) to highest (16-bit ro, 2048 FMAs)
    lo = 2 * 1 / 16
    hi = 2 * FMA_GRID[-1] / 2
    assert hi / lo >= 1e4
    assert lo < 0.5 and hi > 500  # ridges of current GPUs and CPUs lie between ~1 and ~300 FLOP/B
    assert set(QUICK_FMA_GRID) <= set(FMA_GRID)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_closed_form_is_exact_in_every_dtype(dtype):
    x = sweep_input(np.arange(10_000)).astype(dtype)
    assert np.all(x > 0) and len(np.unique(x)) == 61
    a, b = np.array(SWEEP_A, dtype), np.array(SWEEP_B, dtype)
    v = x.copy()
    for k in range(1, 6):
        v = v * a + b
        expect = x if k % 2 == 0 else SWEEP_B - x.astype(np.float64)
        assert np.array_equal(v.astype(np.float64), np.asarray(expect, np.float64))


@pytest.mark.parametrize("text,expect", [("4096", 4096), ("512M", 512 << 20), ("1GiB", 1 << 30),
                                         ("300MB", 300_000_000), ("2k", 2048), ("1.5G", 3 << 29)])
def test_parse_bytes(text, expect):
    assert parse_bytes(text) == expect


@pytest.mark.parametrize("bad", ["", "12Q", "-5M", "M"])
def test_parse_bytes_rejects_garbage(bad):
    with pytest.raises(ValueError):
        parse_bytes(bad)


def test_si_scales_units():
    assert si(1.5e12, "FLOP/s") == "1.5 TFLOP/s"
    assert si(3.35e12, "B/s") == "3.35 TB/s"
    assert si(None, "B/s") == "-"
