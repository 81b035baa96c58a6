"""Sweep launches on one CUDA device: buffers, NVRTC modules, grids from the occupancy API, prepared launches."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gpuroof.backends.base import (ITEMSIZE, SWEEP_A, SWEEP_B, VARIANTS, Blocking, Launch, SweepBuffers,
                                   sweep_input)
from gpuroof.backends.cuda.kernels import (BLOCK, CACHE_READ, COMPILE_OPTIONS, PARTIAL_DTYPE,
                                           STORAGE_DTYPE, SWEEP_FMAS, VECTOR_BYTES, bf16_bits_from_float64,
                                           cache_read_plan, granule, kernel_path, kernel_source,
                                           name_expression, sweep_module_expressions)
from gpuroof.errors import MeasurementError, UsageError

_MIB = 1 << 20
_GIB = 1 << 30
#: Elements filled per step when writing the input on the device (bounds the temporaries to ~100 MiB).
_FILL_CHUNK = 1 << 22


def _gib(nbytes: float) -> str:
    return f"{nbytes / _GIB:.2f} GiB"


OCCUPANCY_API = "occupancy API"
FALLBACK = "fallback"


def blocks_per_sm(query: Callable[[], int], fallback: int) -> dict:
    """Resident blocks per SM of one kernel and where the number came from: `query()` (the occupancy
    API, cuOccupancyMaxActiveBlocksPerMultiprocessor) when it answers a positive count, else
    `fallback`, with the error or the answer that made it fall back (`error`, only then). A grid
    sized from a fallback is a guess about registers and shared memory: the run records it
    (run.json device.occupancy) so the grid of every kernel, and how it was chosen, can be read back."""
    try:
        n = int(query())
    except Exception as exc:  # CUDADriverError, a driver without the call
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"blocks_per_sm": int(fallback), "source": FALLBACK, "error": f"{type(exc).__name__}: {text}"}
    if n <= 0:
        return {"blocks_per_sm": int(fallback), "source": FALLBACK,
                "error": f"the occupancy API answered {n} blocks per SM"}
    return {"blocks_per_sm": n, "source": OCCUPANCY_API}


class SweepLaunches:
    """Compiles and launches the sweep and working-set kernels of one device on the backend's own
    stream (timing.OwnStream): every launch, wait and fill goes there."""

    def __init__(self, cp: Any, info: dict, free_bytes: Any, own: Any):
        self._cp = cp
        self._info = info
        self._free_bytes = free_bytes
        self._own = own
        self.stream = own.stream
        self._modules: dict[str, Any] = {}
        self._kernels: dict[str, tuple[Any, int]] = {}  # name expression -> (kernel, grid)
        #: Per kernel compiled (name expression): blocks per SM and where the number came from.
        self.occupancy: dict[str, dict] = {}
        self._errors = (cp.cuda.driver.CUDADriverError, cp.cuda.runtime.CUDARuntimeError)

    def _occupancy(self, name: str, kernel: Any, fallback: int) -> int:
        """Blocks per SM of `kernel` (blocks_per_sm, BLOCK threads each), recorded under `name`; the
        grid is that times the multiprocessors."""
        occ = blocks_per_sm(lambda: self._cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
            kernel.kernel.ptr, BLOCK, 0), fallback)
        self.occupancy[name] = occ
        return occ["blocks_per_sm"]

    def close(self) -> None:
        self._kernels.clear()
        self._modules.clear()

    def max_threads(self) -> int:
        """Most threads a grid sized by occupancy can have: every SM full."""
        sms = self._info["multiprocessors"] or 1
        per_sm = self._info["max_threads_per_multiprocessor"] or 2048
        return sms * (-(-per_sm // BLOCK) * BLOCK)

    def alloc(self, dtype: str, nbytes: int) -> SweepBuffers:
        cp = self._cp
        itemsize = ITEMSIZE[dtype]
        g = granule(dtype)
        elements = int(nbytes) // itemsize // g * g
        if elements <= 0:
            raise UsageError(f"--buffer-size {nbytes} B: smaller than one {dtype} granule "
                             f"({g * itemsize} B)")
        threads = self.max_threads()
        partial_itemsize = np.dtype(PARTIAL_DTYPE[dtype]).itemsize
        # x and out, the per-thread sums, and the temporaries of the chunked fill below.
        need = 2 * elements * itemsize + threads * partial_itemsize + 4 * 8 * _FILL_CHUNK
        free = self._free_bytes()
        if need > free:
            raise UsageError(f"--buffer-size {_gib(nbytes)}: needs {_gib(need)}, "
                             f"the device has {_gib(free)} free")
        storage = cp.dtype(STORAGE_DTYPE[dtype])
        try:
            with self._own.active():
                x = cp.empty(elements, dtype=storage)
                for start in range(0, elements, _FILL_CHUNK):
                    stop = min(start + _FILL_CHUNK, elements)
                    values = sweep_input(cp.arange(start, stop, dtype=cp.int64))
                    x[start:stop] = (bf16_bits_from_float64(cp, values) if dtype == "bfloat16"
                                     else values.astype(storage))
                # NaN everywhere: an element the kernel fails to write cannot pass the check.
                out = cp.full(elements, 0x7FC0 if dtype == "bfloat16" else np.nan, dtype=storage)
                partial = cp.zeros(threads, dtype=PARTIAL_DTYPE[dtype])
                self.stream.synchronize()
        except cp.cuda.memory.OutOfMemoryError as exc:
            raise MeasurementError(f"--buffer-size {_gib(nbytes)}: allocation failed ({exc})") from exc
        return SweepBuffers(dtype=dtype, x=x, out=out, partial=partial, elements=elements, granule=g,
                            extra={"storage_dtype": STORAGE_DTYPE[dtype],
                                   "partial_dtype": PARTIAL_DTYPE[dtype]})

    def kernel(self, dtype: str, key: str) -> tuple[Any, int]:
        """(kernel, grid) of one name expression of `dtype`'s module; grid = resident blocks per SM
        (occupancy API) x multiprocessors. One RawModule per dtype, compiled on first use and cached
        by cupy on disk."""
        hit = self._kernels.get(key)
        if hit is not None:
            return hit
        try:
            with self._own.active():
                mod = self._modules.get(dtype)
                if mod is None:
                    mod = self._cp.RawModule(code=kernel_source("sweep.cu"), options=COMPILE_OPTIONS,
                                             name_expressions=sweep_module_expressions(dtype))
                    self._modules[dtype] = mod
                kernel = mod.get_function(key)
        except Exception as exc:  # cupy.cuda.compiler.CompileException, driver errors
            raise MeasurementError(
                f"compiling {key} from {kernel_path('sweep.cu')} failed: {exc} "
                "(NVRTC needs the CUDA headers: install gpuroof[cuda13], which brings them)") from exc
        # Without an answer from the occupancy API: assume the thread limit binds (recorded as such).
        with self._own.active():
            blocks = self._occupancy(key, kernel,
                                     max(1, (self._info["max_threads_per_multiprocessor"] or 2048) // BLOCK))
        grid = blocks * (self._info["multiprocessors"] or 1)
        self._kernels[key] = (kernel, grid)
        return kernel, grid

    def compile(self, dtype: str) -> None:
        for key in sweep_module_expressions(dtype):
            self.kernel(dtype, key)

    def step(self, buf: SweepBuffers, fmas: int, variant: str) -> int:
        """Elements one grid-stride step of the whole grid covers (threads x granule)."""
        _, grid = self.kernel(buf.dtype, name_expression(buf.dtype, fmas, variant == "rw"))
        return grid * BLOCK * buf.granule

    def _call(self, kernel: Any, grid: int, args: tuple, label: str) -> Blocking:
        """A launch of `kernel` on the backend's stream (made current for the enqueue), and a wait
        on that stream: never the legacy null stream, which does not wait for a non-blocking one."""
        own, errors = self._own, self._errors

        def enqueue() -> None:
            try:
                with own.active():
                    kernel((grid,), (BLOCK,), args)
            except errors as exc:
                raise MeasurementError(f"{label} launch failed: {exc}") from exc

        def wait() -> None:
            try:
                own.synchronize()
            except errors as exc:
                raise MeasurementError(f"{label} failed on the device: {exc}") from exc

        return Blocking(enqueue, wait)

    def sweep(self, buf: SweepBuffers, fmas: int, variant: str, elements: int, passes: int) -> Launch:
        if variant not in VARIANTS:
            raise UsageError(f"variant {variant!r}: allowed {', '.join(VARIANTS)}")
        if fmas not in SWEEP_FMAS:
            raise UsageError(f"fmas {fmas}: the CUDA sweep is compiled for "
                             f"{', '.join(map(str, SWEEP_FMAS))}")
        if not 0 < elements <= buf.elements or elements % buf.granule:
            raise UsageError(f"elements {elements}: must be a positive multiple of {buf.granule} "
                             f"and at most {buf.elements}")
        if not 1 <= passes < 2**32:
            raise UsageError(f"passes {passes}: must be between 1 and 2**32 - 1")
        write = variant == "rw"
        label = name_expression(buf.dtype, fmas, write)
        kernel, grid = self.kernel(buf.dtype, label)
        threads = grid * BLOCK
        if threads > buf.partial.size:
            raise MeasurementError(f"grid of {threads} threads exceeds the partial buffer "
                                   f"({buf.partial.size}); occupancy reported more than fits an SM")
        args = (buf.x, buf.out, buf.partial, np.uint64(elements), np.float64(SWEEP_A),
                np.float64(SWEEP_B), np.uint32(passes))
        return Launch(run=self._call(kernel, grid, args, label), elements=int(elements),
                      partial_elements=threads if not write else 0,
                      partial_itemsize=int(buf.partial.itemsize), passes=int(passes))

    def working_set(self, buf: SweepBuffers, elements: int, passes: int, l1_per_sm: int | None) -> Launch:
        """A cache_read launch: every element of the first `elements` read about `passes` times.

        A working set up to one SM's L1 is read through L1 (every SM reads part of the same small
        set, so it stays there); a larger one with __ldcg, which bypasses L1: otherwise each thread's
        re-read slice would be served by its own SM's L1 up to SMs x L1 bytes (33 MiB on H100, more
        than half of L2) and the l2 plateau would be empty.
        """
        if buf.dtype != "float32":
            raise UsageError(f"working-set sweep: dtype {buf.dtype}; it streams float32")
        per_vec = VECTOR_BYTES // ITEMSIZE["float32"]
        if not 0 < elements <= buf.elements or elements % per_vec:
            raise UsageError(f"elements {elements}: must be a positive multiple of {per_vec} "
                             f"and at most {buf.elements}")
        nbytes = elements * ITEMSIZE["float32"]
        cg = not l1_per_sm or nbytes > l1_per_sm
        label = CACHE_READ[cg]
        kernel, grid = self.kernel("float32", label)
        threads = grid * BLOCK
        if threads > buf.partial.size:
            raise MeasurementError(f"grid of {threads} threads exceeds the partial buffer "
                                   f"({buf.partial.size}); occupancy reported more than fits an SM")
        nvec = elements // per_vec
        try:
            copies, reads, kernel_passes = cache_read_plan(nvec, threads, passes)
        except ValueError as exc:
            raise UsageError(f"working set of {elements} elements: {exc}") from exc
        args = (buf.x, buf.partial, np.uint32(nvec), np.uint32(reads), np.uint32(kernel_passes))
        return Launch(run=self._call(kernel, grid, args, label), elements=int(elements),
                      partial_elements=threads, partial_itemsize=int(buf.partial.itemsize),
                      passes=copies * kernel_passes)

    def shared_read(self) -> tuple[Blocking, Any, Any, int, int, int]:
        """(run, values, partial, blocks, tile, passes) of kernels/shared_bw.cu on every SM."""
        cp = self._cp
        tile = 2048  # float4s, as GPUROOF_SHARED_TILE in the kernel
        with self._own.active():
            mod = cp.RawModule(code=kernel_source("shared_bw.cu"), options=COMPILE_OPTIONS)
            kernel = mod.get_function("shared_read")
            # the tile fills most of an SM's shared memory: one resident block where the API is silent
            blocks = self._occupancy("shared_read", kernel, 1) * (self._info["multiprocessors"] or 1)
            values = sweep_input(cp.arange(tile * 4, dtype=cp.int64)).astype(cp.float32)
            partial = cp.full(blocks * BLOCK, np.nan, dtype=cp.float32)
        passes = 2000
        run = self._call(kernel, blocks, (values, partial, np.uint32(passes)), "shared_read")
        return run, values, partial, blocks, tile, passes
