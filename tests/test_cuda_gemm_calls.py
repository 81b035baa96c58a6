"""The cuBLAS calls the CUDA workloads and the matrix units make (one wrapper, backends/cuda/blas.py), checked without a GPU: argument order, strides, batching.

A recorded-call fake stands in for CuPy's cuBLAS bindings and replays each recorded call with
cuBLAS's column-major semantics in NumPy, on the host buffers the pointers name. That proves the
row-major-to-column-major swap and the strides (the conv's weights shared with stride 0), not what
cuBLAS computes on a device (the `gpu`-marked runner tests compare that with the float64 reference).
"""
from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

from gpuroof.backends.cuda import blas
from gpuroof.workloads import _cuda
from gpuroof.workloads.conv2d import Conv2dParams, im2col_grid
from gpuroof.errors import UsageError


class HostArray:
    """A NumPy array posing as a CuPy one: shape, and data.ptr = its host address."""

    def __init__(self, arr: np.ndarray):
        self.arr = np.ascontiguousarray(arr)
        self.shape = self.arr.shape
        self.data = types.SimpleNamespace(ptr=self.arr.ctypes.data)


class RecordingCublas:
    """Records gemmEx / gemmStridedBatchedEx / mode calls; `replay` runs them column-major in NumPy."""

    def __init__(self, arrays):
        self.calls: list = []
        self.memory = {a.data.ptr: a.arr.reshape(-1) for a in arrays}

    def setPointerMode(self, handle, mode):
        self.calls.append(("setPointerMode", mode))

    def setMathMode(self, handle, mode):
        self.calls.append(("setMathMode", mode))

    def gemmEx(self, handle, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc, compute, algo):
        self.calls.append(("gemmStridedBatchedEx", handle, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb,
                           0, beta, C, ct, ldc, 0, 1, compute, algo))

    def gemmStridedBatchedEx(self, *args):
        self.calls.append(("gemmStridedBatchedEx", *args))

    def replay(self):
        for call in self.calls:
            if call[0] != "gemmStridedBatchedEx":
                continue
            (_, _, ta, tb, m, n, k, alpha, A, _, lda, sa, B, _, ldb, sb, beta, C, _, ldc, sc, batch,
             compute, _) = call
            assert tb == 0 and ta in (0, 1)  # the swap does NN; TN reads a B stored transposed
            scalar = {70: ctypes.c_double, 72: ctypes.c_int32}.get(compute, ctypes.c_float)
            al, be = scalar.from_address(alpha).value, scalar.from_address(beta).value
            a, b, c = self.memory[A], self.memory[B], self.memory[C]
            for i in range(batch):
                ai = np.array([[a[i * sa + (col + r * lda if ta else r + col * lda)] for col in range(k)]
                               for r in range(m)])
                bi = np.array([[b[i * sb + r + col * ldb] for col in range(n)] for r in range(k)])
                ci = al * ai @ bi
                for r in range(m):
                    for col in range(n):  # beta = 0: C is not read (cuBLAS: it need not be valid)
                        old = c[i * sc + r + col * ldc] if be else 0.0
                        c[i * sc + r + col * ldc] = ci[r, col] + be * old


@pytest.fixture
def fake(monkeypatch):
    def install(*arrays):
        cublas = RecordingCublas(arrays)
        cp = types.SimpleNamespace(cuda=types.SimpleNamespace(device=types.SimpleNamespace(
            get_cublas_handle=lambda: 7)))
        monkeypatch.setattr(_cuda, "cupy", lambda: cp)
        monkeypatch.setattr(blas, "cublas_module", lambda: cublas)
        return cublas
    return install


def test_conv_im2col_batch_is_one_strided_batched_gemm_with_the_weights_shared(fake):
    rng = np.random.default_rng(0)
    n, k_out, ckk, pix = 5, 3, 4, 6
    w = HostArray(rng.uniform(-1, 1, (k_out, ckk)).astype(np.float32))
    cols = HostArray(rng.uniform(-1, 1, (n, ckk, pix)).astype(np.float32))
    y = HostArray(np.full((n, k_out, pix), np.nan, np.float32))
    cublas = fake(w, cols, y)
    enqueue = _cuda.gemm(w, cols, y, "float32")
    enqueue()
    gemms = [c for c in cublas.calls if c[0] == "gemmStridedBatchedEx"]
    assert len(gemms) == 1 and gemms[0][21] == n  # one call for all n images
    assert gemms[0][11] == ckk * pix and gemms[0][15] == 0  # cols advance per image, weights stay
    assert not [c for c in cublas.calls if c[0].startswith("set")]  # modes: the setup's job, not per GEMM
    cublas.replay()
    np.testing.assert_allclose(y.arr, np.einsum("kc,ncp->nkp", w.arr, cols.arr), rtol=1e-5)


def test_a_2d_gemm_is_one_gemmex_and_the_modes_are_set_by_the_setup(fake):
    rng = np.random.default_rng(1)
    a = HostArray(rng.uniform(-1, 1, (3, 5)))
    b = HostArray(rng.uniform(-1, 1, (5, 4)))
    c = HostArray(np.zeros((3, 4)))
    cublas = fake(a, b, c)
    _cuda.gemm(a, b, c, "float64")()
    cublas.replay()
    np.testing.assert_allclose(c.arr, a.arr @ b.arr, rtol=1e-12)
    _cuda.cublas_modes()()
    assert cublas.calls[-2:] == [("setPointerMode", 0), ("setMathMode", 0)]


def test_gemm_strides_refuse_shapes_that_do_not_multiply():
    assert blas.gemm_strides((3, 4), (7, 4, 5), (7, 3, 5)) == (3, 5, 4, 7, 0, 20)
    assert blas.gemm_strides((7, 3, 4), (4, 5), (7, 3, 5)) == (3, 5, 4, 7, 12, 0)
    with pytest.raises(ValueError, match="do not multiply"):
        blas.gemm_strides((3, 4), (5, 5), (3, 5))
    with pytest.raises(ValueError, match="batch entries"):
        blas.gemm_strides((6, 3, 4), (4, 5), (7, 3, 5))


@pytest.mark.parametrize("kind", ["tf32", "int8"])
def test_a_tn_gemm_reads_b_stored_transposed_and_gives_the_same_product(fake, kind):
    """The matrix units' TN layout (int8, tf32) through the same call: B^T stored row-major, op T."""
    rng = np.random.default_rng(2)
    store_in, store_out = ("int8", "int32") if kind == "int8" else ("float32", "float32")
    a = rng.integers(-8, 8, (3, 5)).astype(store_in)
    b = rng.integers(-8, 8, (5, 4)).astype(store_in)
    ha, hbt = HostArray(a), HostArray(np.ascontiguousarray(b.T))
    c = HostArray(np.zeros((3, 4), store_out))
    cublas = fake(ha, hbt, c)
    blas.gemm_call(_cuda.cupy(), ha, hbt, c, kind, "TN")()
    call = cublas.calls[0]
    assert call[2:4] == (1, 0) and call[10] == 5  # op T on B^T, its leading dimension k
    assert call[22] == blas.GEMM_TYPES[kind].compute and call[18] == blas.DATA_TYPE[store_out]
    cublas.replay()
    np.testing.assert_array_equal(c.arr, a.astype(np.int64) @ b.astype(np.int64))
    with pytest.raises(ValueError, match="do not multiply"):
        blas.gemm_call(_cuda.cupy(), ha, HostArray(b), c, kind, "TN")  # B not stored transposed


def test_every_matrix_unit_has_a_gemm_type():
    assert set(blas.GEMM_LAYOUT) <= set(blas.GEMM_TYPES)
    assert {t.inputs for t in blas.GEMM_TYPES.values()} | {t.output for t in blas.GEMM_TYPES.values()} \
        <= set(blas.DATA_TYPE)


def test_im2col_grid_is_pixel_tiles_by_images_capped_at_65535():
    p = Conv2dParams(10_700, 1, 1, 56, 56, 3, 1, 1, "float32", "im2col-cublas")
    assert im2col_grid(p) == (((56 * 56 + 255) // 256, 10_700), (256,))
    big = Conv2dParams(70_000, 1, 1, 8, 8, 3, 1, 1, "float32", "im2col-cublas")
    assert im2col_grid(big)[0][1] == 65535  # the kernel strides over the images past it
    with pytest.raises(UsageError, match="32 bits"):
        im2col_grid(Conv2dParams(1, 1, 1, 50_000, 50_000, 1, 1, 0, "float32", "im2col-cublas"))
