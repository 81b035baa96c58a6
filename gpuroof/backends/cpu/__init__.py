"""The CPU backend: numba kernels with the sweep semantics of kernels/sweep.cu, perf_counter timing
(device.py: what the CPU is; isa.py: the loop shapes; kernels.py: the numba kernels; blas.py: GEMMs)."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpuroof.backends.base import (INPUT_PERIOD, ITEMSIZE, Backend, Gemm, Launch, Level, SweepBuffers, check_reps, repeat,
                                   sweep_input)
from gpuroof.backends.cpu.blas import cpu_gemm
from gpuroof.backends.cpu.device import (SYS_CPU, CpuTelemetry, PagePool, check_threads, cpu_caches,
                                         cpu_device_name, cpu_theoretical, isa_level, meminfo_available,
                                         parse_cpuinfo, read, vector_unit)
from gpuroof.errors import UsageError


def set_threads(threads: int) -> Callable[[], None]:
    """Run numba's parallel kernels and the BLAS (threadpoolctl: OpenBLAS, MKL, OpenMP) on `threads`
    threads; returns what gives the previous counts back. numba's count holds for the calling thread,
    the one that launches every kernel; one over NUMBA_NUM_THREADS (numba's pool) is refused."""
    import numba
    from threadpoolctl import threadpool_limits

    check_threads(threads)
    if threads > numba.config.NUMBA_NUM_THREADS:
        raise UsageError(f"--threads {threads}: numba's pool has {numba.config.NUMBA_NUM_THREADS} threads "
                         "(NUMBA_NUM_THREADS is set lower); unset it or ask for fewer")
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    limits = threadpool_limits(limits=threads)

    def restore() -> None:
        limits.restore_original_limits()
        numba.set_num_threads(before)
    return restore


class CpuBackend(Backend):
    name = "cpu"
    xp = np

    def __init__(self, device_index: int = 0, threads: int | None = None):
        """`threads`: the threads the numba kernels and the BLAS use (--threads; default numba's, one
        per logical CPU). A chosen count makes a device of its own (cores_used, and the name): one
        machine measured with 1 and 2 threads gives two rooflines to predict between. The numba and
        BLAS thread counts are set for the backend's life and given back by close()."""
        if device_index != 0:
            raise UsageError(f"--device {device_index}: the cpu backend has one device (allowed: 0 or all)")
        if threads is not None:
            check_threads(threads)
        import numba  # imported here so that `gpuroof info` on a GPU node does not pay for it

        from gpuroof.backends.cpu import buffers, kernels

        self._k = kernels
        self._buffers = buffers
        self._pool = PagePool()
        self._restore: Callable[[], None] | None = None
        if threads is not None:
            self._restore = set_threads(threads)
        self.threads = numba.get_num_threads()
        self.facts = parse_cpuinfo(read(Path("/proc/cpuinfo")) or "")
        self.facts["cores_used"] = min(self.threads, self.facts.get("physical_cores") or self.threads)
        self.facts["code_isa"] = kernels.SHAPE.isa.name  # what the kernels are compiled for (the device's name)
        if threads is not None:
            self.facts["threads_chosen"] = self.threads
        self.caches = cpu_caches()
        self._numba_version = numba.__version__

    def device_info(self) -> dict:
        max_mhz = self.max_clocks()[0]
        unit = vector_unit(self.facts.get("vendor"), self.facts.get("family"), self.facts.get("flags", []),
                           self.facts.get("model_number"), self.facts.get("model") or "")
        return {
            "name": cpu_device_name(self.facts),
            "model_name": self.facts.get("model") or platform.processor() or "cpu",
            "isa_level": isa_level(self.facts.get("flags", [])),
            "index": 0,
            "vendor": self.facts.get("vendor"),
            "family": self.facts.get("family"),
            "model_number": self.facts.get("model_number"),
            "logical_cpus": self.facts.get("logical_cpus"),
            "physical_cores": self.facts.get("physical_cores"),
            "cores_used": self.facts["cores_used"],
            "threads": self.threads,
            "vector_unit": None if unit is None else {"width_bits": unit[0], "fma_pipes": unit[1]},
            # what the sweep kernels were compiled for: vector width (and why), chains per loop
            "kernel_shape": self._k.SHAPE.to_dict(),
            "isa": [f for f in ("avx512f", "avx2", "fma", "avx", "sse2", "neon", "asimd")
                    if f in self.facts.get("flags", [])],
            "caches": self.caches,
            "llc_bytes": self.cache_bytes(),
            "max_clock_mhz": max_mhz,
            "nominal_clock_mhz": max(self.facts["mhz"]) if self.facts.get("mhz") else None,
            "memory_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "numba": self._numba_version,
        }

    def dtypes(self) -> tuple[str, ...]:
        return ("float64", "float32")

    def cache_bytes(self) -> int:
        return max((c["size_bytes"] for c in self.caches), default=32 << 20)

    def free_memory_bytes(self) -> int:
        return meminfo_available()

    def default_buffer_bytes(self) -> int:
        """8× the last-level cache (so DRAM, not cache, is measured), at least 64 MiB. The input is
        filled and checked in chunks, so memory beyond input and output is small at any size."""
        return max(8 * self.cache_bytes(), 64 << 20)

    def core_clock_mhz(self, seconds: float = 0.3) -> float | None:
        """The core clock under load: one thread per core in use runs a chain of dependent integer
        adds (one per cycle) for about `seconds`; MHz = adds / the thread's own CPU time, the
        slowest core's. None where no chain is written for this machine.

        CPU time, not wall time: a thread that shares its core with another (the parallel runtime's
        workers spinning after a parallel region, the telemetry sampler, another program) is
        descheduled for part of the wall time but adds at the core's clock while it runs; divided
        by wall time it would report a fraction of the clock. The share of wall time each chain ran
        is kept in `last_clock` (under 0.9: the cores were shared while the clock was measured).
        """
        import threading

        if self._k.CHAIN_ASM is None:
            return None
        self._k.add_chain(1)  # compiled (or loaded from cache) outside the timed window
        t0 = time.thread_time()
        self._k.add_chain(2000)
        probe = max(time.thread_time() - t0, 1e-6)
        blocks = max(1000, int(2000 * seconds / probe))
        runs: list[tuple[float, float]] = []

        def run() -> None:
            w, c = time.perf_counter(), time.thread_time()
            n = self._k.add_chain(blocks)
            cpu, wall = time.thread_time() - c, time.perf_counter() - w
            if n == blocks * self._k.CLOCK_ADDS and cpu > 0:  # the chain did every add
                runs.append((n / cpu / 1e6, cpu / wall))
        threads = [threading.Thread(target=run) for _ in range(self.facts["cores_used"])]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if len(runs) != len(threads):
            return None
        self.last_clock = {"mhz_per_thread": [r for r, _ in runs], "cpu_share_of_wall": [s for _, s in runs]}
        return min(r for r, _ in runs)

    def granule(self, dtype: str) -> int:
        """Elements a launch must be a multiple of: whole chunks of every kernel loop, per thread."""
        return self._k.SHAPE.chunk_elements(ITEMSIZE[dtype]) * self.threads

    def alloc_sweep(self, dtype: str, nbytes: int) -> SweepBuffers:
        if dtype not in self.dtypes():
            raise UsageError(f"dtype {dtype}: the cpu backend supports {', '.join(self.dtypes())}")
        granule = self.granule(dtype)
        if nbytes <= 0:
            raise UsageError(f"--buffer-size {nbytes} bytes: must be positive")
        # rounded up to whole granules: a buffer asked for at 8x the last-level cache stays at least
        # that, so its points count as DRAM points (rounded down they fell just short)
        n = -(-nbytes // ITEMSIZE[dtype] // granule) * granule
        need = 2 * n * ITEMSIZE[dtype]
        if need > 0.8 * self.free_memory_bytes():
            raise UsageError(f"--buffer-size {nbytes} bytes: needs {need / 2**30:.1f} GiB (input and output), "
                             f"the machine has {self.free_memory_bytes() / 2**30:.1f} GiB available")
        x = self._pool.empty(n, dtype)
        # sweep_input repeats every INPUT_PERIOD elements: fill from one tile, never an int64 index array of n.
        tile = sweep_input(np.arange(INPUT_PERIOD << 16, dtype=np.int64)).astype(dtype)
        self._buffers.fill_tiled(x, tile, self.threads)
        out = self._pool.empty(n, dtype)
        self._buffers.fill_nan(out, n, self.threads)  # its pages touched here, on every core, not in a timing
        partial = np.empty(self.threads * self._k.LANES, dtype=dtype)
        return SweepBuffers(dtype=dtype, x=x, out=out, partial=partial, elements=n, granule=granule)

    def kernel_variants(self, variant: str, working_set_bytes: int) -> list:
        """Shapes of the streaming loop (fmas = 0) of `variant` worth trying at this working set,
        the register file's own first (isa.KernelShape.variants); gpuroof.tune keeps the best."""
        dram = working_set_bytes >= 2 * self.cache_bytes()
        return self._k.SHAPE.variants(variant, dram)

    def sweep_launch(self, buf: SweepBuffers, fmas: int, variant: str, elements: int,
                     passes: int = 1, kernel: Any = None) -> Launch:
        """`kernel`: a isa.LoopVariant of `variant`'s streaming loop (None: the shape's own). With
        FMAs the loop keeps the register file's width and chains and takes only the variant's
        prefetch and kind of store (where the streaming loop won with them at that size)."""
        if elements % buf.granule or not 0 < elements <= buf.elements:
            raise ValueError(f"elements={elements} must be a positive multiple of {buf.granule} ≤ {buf.elements}")
        if passes < 1:
            raise ValueError(f"passes={passes} must be ≥ 1")
        if kernel is not None and kernel.loop != variant:
            raise ValueError(f"kernel {kernel.name}: not a {variant} loop")
        t = np.dtype(buf.dtype).type
        a, b = t(-1.0), t(3.0)
        x = buf.x[:elements]
        threads = self.threads
        if variant == "rw":
            out = buf.out[:elements]
            if fmas and kernel is not None:
                kernel = replace(self._k.SHAPE.default_variant("rw"), nontemporal=kernel.nontemporal,
                                 prefetch=kernel.prefetch)
            if kernel is not None and kernel.nontemporal and out.ctypes.data % kernel.vector_bytes:
                raise ValueError(f"{kernel.name}: the output must start on a {kernel.vector_bytes}-byte boundary")
            fn = self._k.rw_kernel(kernel)

            def run() -> None:
                fn(x, out, fmas, a, b, threads, passes)
            partial_elements = 0
        elif variant == "ro":
            partial = buf.partial.reshape(threads, self._k.LANES)
            if fmas and kernel is not None:
                kernel = replace(self._k.SHAPE.default_variant("ro"), prefetch=kernel.prefetch)
            fn = self._k.ro_kernel(kernel)

            def run() -> None:
                fn(x, partial, fmas, a, b, threads, passes)
            partial_elements = buf.partial.size
            if kernel is not None and kernel.xor and not fmas:  # the loop XORs, it does not sum
                return Launch(run=run, elements=elements, partial_elements=partial_elements,
                              partial_itemsize=ITEMSIZE[buf.dtype], passes=passes,
                              expected_sum=lambda: float(self._buffers.xor_read_total(x, threads, kernel.chains,
                                                                                    kernel.vector_bytes, passes)))
        else:
            raise ValueError(f"variant {variant!r}: allowed ro, rw")
        return Launch(run=run, elements=elements, partial_elements=partial_elements,
                      partial_itemsize=ITEMSIZE[buf.dtype], passes=passes)

    def working_set_launch(self, buf: SweepBuffers, elements: int, passes: int, kernel: Any = None) -> Launch:
        return self.sweep_launch(buf, 0, "ro", elements, passes, kernel=kernel)

    def compile(self, dtype: str) -> None:
        """JIT-compile (or load from numba's cache) both kernels for `dtype`, outside any timing."""
        buf = self.alloc_sweep(dtype, self.granule(dtype) * ITEMSIZE[dtype])
        for variant in ("rw", "ro"):
            for kernel in self._k.SHAPE.every_variant(variant):  # every shape a run may try
                for fmas in (0, 1):  # two code paths in each kernel
                    launch = self.sweep_launch(buf, fmas, variant, buf.elements, kernel=kernel)
                    launch.run()
                    if launch.expected_sum is not None:  # and the XOR-folded read's reference
                        launch.expected_sum()
        if self._k.CHAIN_ASM is not None:
            self._k.add_chain(1)  # the clock's add chain
        self.poison(buf, "rw", buf.elements)  # and the rw check, with the fill before it
        self.rw_error(buf, 1, buf.elements)
        buf.out[0] = np.nan  # and the second pass of a failed rw check
        self.rw_error(buf, 1, buf.elements)

    def time(self, fn: Callable[[], None], *, warmup: int, min_reps: int, max_reps: int,
             budget_s: float) -> np.ndarray:
        """Wall seconds of each call of `fn` (the host runs the work itself), under the shared stop rule."""
        check_reps(warmup, min_reps, max_reps, budget_s)
        for _ in range(warmup):
            fn()

        def once() -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        return np.asarray(repeat(once, min_reps=min_reps, max_reps=max_reps, budget_s=budget_s))

    def as_float64(self, arr, dtype: str):
        return np.asarray(arr, dtype=np.float64)

    def poison(self, buf: SweepBuffers, variant: str, elements: int) -> None:
        if variant == "rw":  # on every core, at memory speed
            self._buffers.fill_nan(buf.out, elements, self.threads)
        else:
            buf.partial[...] = np.nan

    def rw_error(self, buf: SweepBuffers, fmas: int, elements: int) -> float:
        """One parallel pass (backends/cpu/buffers.py) instead of the generic chunked copies."""
        return self._buffers.rw_error(buf.x, buf.out, elements, fmas, self.threads)

    def empty(self, n: int, dtype) -> np.ndarray:
        """A page-aligned array of `n` elements from the run's page pool (device.PagePool): memory a
        finished buffer left, whose pages are already touched, when there is some."""
        return self._pool.empty(n, dtype)

    def telemetry_source(self) -> Callable[[], dict]:
        return CpuTelemetry()

    def close(self) -> None:
        self._pool.clear()
        if self._restore is not None:  # the thread counts this process had before --threads
            self._restore()
            self._restore = None

    def max_clocks(self) -> tuple[float | None, float | None]:
        khz = read(SYS_CPU / "cpu0" / "cpufreq" / "cpuinfo_max_freq")
        return (int(khz) / 1000.0 if khz and khz.isdigit() else None), None

    def theoretical(self, sm_clock_mhz: float | None, mem_clock_mhz: float | None) -> dict:
        return cpu_theoretical(self.facts, sm_clock_mhz)

    # -- cache levels ---------------------------------------------------------------------------

    def cache_levels(self) -> list[Level]:
        """l1, l2, l3 (as sysfs has them) and dram. A per-core cache counts once per core in use:
        every thread streams its own share of the working set."""
        levels = []
        for c in sorted(self.caches, key=lambda c: c["level"]):
            instances = -(-self.threads // max(1, c["shared_by_cpus"]))
            kind = "per core" if c["shared_by_cpus"] == 1 else f"shared by {c['shared_by_cpus']} CPUs"
            levels.append(Level(f"l{c['level']}", c["size_bytes"] * instances,
                                f"{c['size_bytes']} B {kind}, {instances} in use"))
        return levels + [Level("dram", None, "main memory")]

    def hierarchy_bytes_per_launch(self) -> int:
        """Bytes one working-set launch streams: enough that numba's parallel launch (~50 µs) is
        noise even at L1 bandwidth."""
        return 512 << 20

    # -- matrix units --------------------------------------------------------------------------

    def matrix_units(self) -> tuple[str, ...]:
        return ("float32", "float64")

    def matrix_sizes(self, quick: bool) -> tuple[int, ...]:
        return (1024, 2048, 3072) if quick else (512, 1024, 2048, 3072, 4096)

    def gemm(self, unit: str, n: int) -> Gemm:
        return cpu_gemm(unit, n)
