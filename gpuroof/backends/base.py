"""The backend interface: a few blocking calls that the sweep and the workloads share.

A backend is chosen once (`gpuroof.backends.get_backend`) and owns its device, its array module and
its timer. Every call that launches work returns only when the work is done (BabelStream's rule),
so host-side code never has to think about asynchrony.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from gpuroof.errors import UsageError

if TYPE_CHECKING:
    from gpuroof.hostbound import Timing

#: The sweep kernel's constants, passed as kernel arguments so the compiler cannot fold them.
#: With a = -1 every FMA v*a + b is exact in every dtype, so the closed form is exact too:
#: after K FMAs, v = x when K is even and v = b - x when K is odd.
SWEEP_A = -1.0
SWEEP_B = 3.0

VARIANTS = ("ro", "rw")  # read-only (one small write per thread) and read-write (out[i] = f(x[i]))

#: Elements checked at a time by the generic check (Backend.rw_error).
CHECK_CHUNK = 1 << 22

#: Bytes per element of each dtype the sweep knows.
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


#: The sweep's input repeats every this many elements (sweep_input): its first period holds every value.
INPUT_PERIOD = 61


def sweep_input(index: np.ndarray) -> np.ndarray:
    """The sweep's input value for element `index`: real, non-zero, exact in every dtype (≤ 30.5)."""
    return ((index * 37) % INPUT_PERIOD + 1) * 0.5


def input_sum(elements: int, fmas: int) -> float:
    """The sum of f(x) over the first `elements` inputs, in closed form (f(x) = x after an even FMA
    count, SWEEP_B - x after an odd one): the input repeats every INPUT_PERIOD elements. Exact in
    float64: every term and partial sum is a half-integer far below 2**52."""
    full, rest = divmod(int(elements), INPUT_PERIOD)
    period = sweep_input(np.arange(INPUT_PERIOD, dtype=np.int64))
    total = full * float(period.sum()) + float(period[:rest].sum())
    return SWEEP_B * elements - total if fmas % 2 else total


def fill_value(storage: Any) -> Any:
    """What an output array of `storage` dtype is filled with before a kernel writes it, so that an
    element it never writes cannot pass a check: NaN for a float type, the bfloat16 NaN bits 0x7FC0
    for uint16 (bfloat16 storage), the minimum of a signed integer type."""
    dt = np.dtype(storage)
    if dt.kind == "f":
        return np.nan
    if dt == np.uint16:
        return 0x7FC0
    if dt.kind == "i":
        return np.iinfo(dt).min
    raise TypeError(f"no fill value for output dtype {dt}")


def unwritten(xp: Any, arr: Any) -> int:
    """Elements of an output array (numpy or cupy) left at `fill_value` or otherwise unusable: not
    finite for a float type, an all-ones exponent for bfloat16 bits (uint16), the minimum of a
    signed integer type."""
    dt = arr.dtype
    if dt.kind == "f":
        bad = ~xp.isfinite(arr)
    elif dt == np.uint16:
        bad = (arr & 0x7F80) == 0x7F80
    elif dt.kind == "i":
        bad = arr == np.iinfo(dt).min
    else:
        raise TypeError(f"no fill value for output dtype {dt}")
    return int(bad.sum())


#: Every level name gpuroof knows, smallest first. A device has a subset (CPU: l1, l2, l3, dram;
#: GPU: shared, l1, l2, dram); `shared` comes from its own kernel, not from the working-set sweep.
LEVELS = ("shared", "l1", "l2", "l3", "dram")


@dataclass(frozen=True)
class Level:
    """One level of a device's memory hierarchy, as the working-set sweep sees it."""

    name: str
    capacity_bytes: int | None  # what the working set can occupy at this level (all cores / SMs)
    note: str = ""


def bf16_bits_from_float64(xp: Any, values: Any) -> Any:
    """bfloat16 bit patterns (uint16) of float64 values, rounded to nearest even via float32."""
    bits = values.astype(xp.float32).view(xp.uint32)
    rounded = (bits + xp.uint32(0x7FFF) + ((bits >> xp.uint32(16)) & xp.uint32(1))) >> xp.uint32(16)
    return rounded.astype(xp.uint16)


def float64_from_bf16_bits(xp: Any, bits: Any) -> Any:
    """float64 values of bfloat16 bit patterns (exact: bf16 is the top half of a float32)."""
    return (bits.astype(xp.uint32) << xp.uint32(16)).view(xp.float32).astype(xp.float64)


@dataclass
class SweepBuffers:
    """Device arrays of one dtype: input `x`, output `out` (rw) and per-thread `partial` sums (ro)."""

    dtype: str
    x: Any
    out: Any
    partial: Any
    elements: int  # size of x and out
    granule: int  # elements processed must be a multiple of this
    extra: dict = field(default_factory=dict)


T = TypeVar("T")


def check_reps(warmup: int, min_reps: int, max_reps: int, budget_s: float) -> None:
    """What every timer accepts: warmup >= 0, 1 <= min_reps <= max_reps, budget_s >= 0."""
    if warmup < 0:
        raise UsageError(f"warmup {warmup}: must be >= 0")
    if min_reps < 1 or max_reps < min_reps:
        raise UsageError(f"min_reps {min_reps}, max_reps {max_reps}: need 1 <= min_reps <= max_reps")
    if budget_s < 0:
        raise UsageError(f"budget_s {budget_s}: must be >= 0")


#: NVBench's stop rule, scaled to a point's budget: once `min_reps` samples and MIN_TIME_SHARE of
#: the budget are in, a point stops as soon as the relative standard deviation of its times is at
#: most NOISE_TARGET; a noisy one goes on to the budget (the cap) or `max_reps`, and its spread
#: says so (run.json `stop_rule`). Quiet machines end their points early; noisy ones do not lose
#: repetitions to it.
NOISE_TARGET = 0.01
MIN_TIME_SHARE = 0.25
#: Samples before their spread may stop a point (fewer say little about it).
NOISE_MIN_SAMPLES = 5


def relative_noise(times: "list[float] | np.ndarray") -> float:
    """Standard deviation over mean of the times (inf with fewer than two)."""
    t = np.asarray(times, dtype=np.float64)
    if len(t) < 2 or not t.mean() > 0:
        return float("inf")
    return float(t.std(ddof=1) / t.mean())


def repeat(sample: Callable[[], T], *, min_reps: int, max_reps: int, budget_s: float,
           seconds: Callable[[T], float] | None = None) -> list[T]:
    """The stop rule every timer shares: take samples until `max_reps`, or until at least `min_reps`
    and `budget_s` seconds of wall time from the first one, or, past `min_reps` (and
    NOISE_MIN_SAMPLES) and MIN_TIME_SHARE of the budget, until the times' relative noise is at most
    NOISE_TARGET. `seconds` reads the time
    out of a sample (default: the sample is the time; a sample that is no number never stops on noise)."""
    out: list[T] = []
    times: list[float] = []
    start = time.perf_counter()
    settle, deadline = start + MIN_TIME_SHARE * budget_s, start + budget_s
    while len(out) < max_reps:
        if len(out) >= min_reps:
            now = time.perf_counter()
            if now >= deadline or (now >= settle and len(times) >= NOISE_MIN_SAMPLES
                                   and relative_noise(times) <= NOISE_TARGET):
                break
        s = sample()
        out.append(s)
        t = seconds(s) if seconds is not None else s
        if isinstance(t, (int, float, np.floating)) and not isinstance(t, bool):
            times.append(float(t))
    return out


def _nothing() -> None:
    pass


class Blocking:
    """A callable that enqueues device work and waits for it; `enqueue` alone does not wait, so a
    device timer can put its events around the device work only.

    `setup` sets host-side state the enqueues rely on (cuBLAS handle modes): a timer calls it once
    before each window of enqueues, outside the timed part; a blocking call runs it first.
    """

    def __init__(self, enqueue: Callable[[], None], wait: Callable[[], None],
                 setup: Callable[[], None] | None = None):
        self.enqueue = enqueue
        self._wait = wait
        self.setup = setup or _nothing

    def __call__(self) -> None:
        self.setup()
        self.enqueue()
        self._wait()


@dataclass(frozen=True)
class Launch:
    """One prepared sweep launch: `run()` blocks until done; the counts describe exactly that work."""

    run: Callable[[], None]
    elements: int
    partial_elements: int  # per-thread partial sums written by the read-only variant
    partial_itemsize: int
    passes: int = 1  # times each element is read in one launch (cache-sized working sets)
    #: The sum the ro partial sums must make where the loop does not sum the input (an XOR-folded
    #: read): computed from the input on demand. None: base.input_sum's closed form.
    expected_sum: Callable[[], float] | None = None


class Backend:
    """Interface; the cpu and cuda packages implement it."""

    name: str = "base"
    xp: Any = np  # array module (numpy or cupy)

    def device_info(self) -> dict:  # name, index, and what the theoretical peaks need
        raise NotImplementedError

    def dtypes(self) -> tuple[str, ...]:
        raise NotImplementedError

    def cache_bytes(self) -> int:
        """Size of the last-level cache: DRAM points need working sets many times larger."""
        raise NotImplementedError

    def free_memory_bytes(self) -> int:
        raise NotImplementedError

    def default_buffer_bytes(self) -> int:
        raise NotImplementedError

    def alloc_sweep(self, dtype: str, nbytes: int) -> SweepBuffers:
        raise NotImplementedError

    def compile(self, dtype: str) -> None:
        """Compile (or load) the sweep kernels of `dtype` now, so compile time stays out of every
        timed window."""

    def sweep_launch(self, buf: SweepBuffers, fmas: int, variant: str, elements: int,
                     passes: int = 1, kernel: Any = None) -> Launch:
        """Prepare one launch over the first `elements` of `buf`, streamed `passes` times; `kernel`:
        one of `kernel_variants` (None: the backend's own shape)."""
        raise NotImplementedError

    def kernel_variants(self, variant: str, working_set_bytes: int) -> list:
        """Shapes of `variant`'s streaming loop (no FMAs) worth trying at this working set, passed
        back as `sweep_launch(kernel=...)`; gpuroof.tune measures them and keeps the best. Empty:
        the backend has one shape per loop."""
        return []

    def sweep_step(self, buf: SweepBuffers, fmas: int, variant: str) -> int:
        """Elements one whole step of the launch covers: a compute point sized in whole steps never
        runs a partial, guarded step (which does every FMA for only part of the threads)."""
        return buf.granule

    def working_set_launch(self, buf: SweepBuffers, elements: int, passes: int, kernel: Any = None) -> Launch:
        """One launch of the working-set sweep: every element of the first `elements` read about
        `passes` times; its `passes` says how many exactly."""
        return self.sweep_launch(buf, 0, "ro", elements, passes, kernel=kernel)

    def cache_levels(self) -> list[Level]:
        """The levels the working-set sweep can reach, smallest first, `dram` (capacity None) last."""
        raise NotImplementedError

    def hierarchy_bytes_per_launch(self) -> int:
        """Bytes one working-set launch streams: enough that launch overhead is noise at every level."""
        raise NotImplementedError

    def shared_bandwidth(self, *, budget_s: float, min_reps: int, max_reps: int) -> dict:
        """Shared-memory read bandwidth, on a device whose cache_levels name `shared`:
        {'times_s', 'bytes', 'rel_error', ...}."""
        raise NotImplementedError(f"{self.name}: no shared memory")

    def matrix_units(self) -> tuple[str, ...]:
        """The GEMM units (dtypes, tf32, ...) the matrix phase measures."""
        raise NotImplementedError

    def matrix_sizes(self, quick: bool) -> tuple[int, ...]:
        """Square GEMM sizes the matrix phase tries, smallest first."""
        raise NotImplementedError

    def gemm(self, unit: str, n: int) -> "Gemm":
        """One prepared n×n GEMM of `unit` with its own check."""
        raise NotImplementedError

    def time(self, fn: Callable[[], None], *, warmup: int, min_reps: int, max_reps: int,
             budget_s: float) -> np.ndarray:
        """Seconds of each repetition of `fn` after `warmup` calls, repeated until `budget_s`."""
        raise NotImplementedError

    def timed(self, fn: Callable[[], None], *, warmup: int, min_reps: int, max_reps: int,
              budget_s: float) -> "Timing":
        """`time` with the host's enqueue time beside it (gpuroof.hostbound.Timing). Here, where the
        host runs the work itself, there is no enqueue time: `enqueue_s` and `replay` are None."""
        from gpuroof.hostbound import Timing
        return Timing(np.asarray(self.time(fn, warmup=warmup, min_reps=min_reps, max_reps=max_reps,
                                           budget_s=budget_s), dtype=np.float64))

    def timed_graph(self, fn: Callable[[], None], *, launches: int, warmup: int, min_reps: int,
                    max_reps: int, budget_s: float) -> "Timing | None":
        """`launches` enqueues of `fn` replayed as one CUDA graph per window; None on a backend
        without graphs."""
        return None

    def as_float64(self, arr: Any, dtype: str) -> Any:
        """`arr` (stored as `dtype`) as float64, on the backend's own array module."""
        raise NotImplementedError

    def poison(self, buf: SweepBuffers, variant: str, elements: int) -> None:
        """Fill what a launch of `variant` writes with NaN (bfloat16: its NaN bits) before it runs:
        rw the first `elements` outputs, ro the partial sums. A result the kernel never writes can
        then never pass the check."""
        if variant == "rw":
            buf.out[:elements] = fill_value(buf.out.dtype)  # the one fill every output gets
        else:
            buf.partial[...] = np.nan

    def rw_error(self, buf: SweepBuffers, fmas: int, elements: int) -> float:
        """The largest |out - f(x)| over the first `elements` of an rw launch, in float64, f(x) the
        closed form after `fmas` FMAs (x when even, SWEEP_B - x when odd); inf when any output is
        not finite (unwritten: the NaN fill, or overflowed).

        Here in chunks of CHECK_CHUNK elements on the array module: the float64 copies of a chunk
        stay small whatever the buffer's size (a DRAM buffer is 8x the last-level cache)."""
        xp = self.xp
        worst = 0.0
        for lo in range(0, elements, CHECK_CHUNK):
            hi = min(elements, lo + CHECK_CHUNK)
            x = self.as_float64(buf.x[lo:hi], buf.dtype)
            got = self.as_float64(buf.out[lo:hi], buf.dtype)
            if not bool(xp.isfinite(got).all()):
                return float("inf")
            worst = max(worst, float(xp.max(xp.abs(got - (x if fmas % 2 == 0 else SWEEP_B - x)))))
        return worst

    def telemetry_source(self) -> Callable[[], dict]:
        """A callable returning one telemetry sample (clocks, power, temperature, ...)."""
        raise NotImplementedError

    def theoretical(self, sm_clock_mhz: float | None, mem_clock_mhz: float | None) -> dict:
        """{'compute': {dtype: FLOP/s or None}, 'bandwidth': {'dram': B/s or None}} at these clocks."""
        raise NotImplementedError

    def core_clock_mhz(self) -> float | None:
        """The core clock (MHz) measured under load on every core in use, or None where the device's
        telemetry reports the clock during every point (a GPU through NVML)."""
        return None

    def max_clocks(self) -> tuple[float | None, float | None]:
        """(SM or core MHz, memory MHz) at their maximum, None where unknown."""
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Gemm:
    """One prepared n×n×n GEMM: `run()` blocks; `check()` returns the relative error of the output."""

    unit: str
    n: int
    run: Callable[[], None]
    check: Callable[[], float]
    itemsize_in: int
    itemsize_out: int
    layout: str = "NN"  # the library's operation pair (cuBLAS column-major: transa, transb)
    #: C (host or device array), filled with backends.base.fill_value before the first run: `check`
    #: fails when any element of it is left unwritten, sampled row or not.
    output: Any = None

    @property
    def flops(self) -> int:
        return 2 * self.n ** 3  # n² outputs, n multiply-adds each; an FMA counts 2

    @property
    def bytes(self) -> int:
        """Compulsory traffic: A and B read once, C written once."""
        return 2 * self.n * self.n * self.itemsize_in + self.n * self.n * self.itemsize_out


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref|; inf when anything is not finite or the shapes differ."""
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return math.inf
    denom = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if denom == 0.0:
        return 0.0 if err == 0.0 else math.inf
    return err / denom


def sample_rows(total: int, limit: int = 8) -> np.ndarray:
    """At most `limit` evenly spaced indices in [0, total), first and last included."""
    if total <= limit:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, limit).round().astype(np.int64))
