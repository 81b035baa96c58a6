"""The CPU backend's kernels, facts and theoretical peaks."""
import numpy as np
import pytest

from gpuroof.backends.base import SWEEP_B
from gpuroof.backends.cpu import CpuBackend
from gpuroof.backends.cpu.device import cpu_caches, cpu_theoretical, parse_cpuinfo, vector_unit
from gpuroof.errors import UsageError
from gpuroof.sweep import check, counts

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9005
physical id\t: 0
core id\t\t: 0
cpu MHz\t\t: 2596.120
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9005
physical id\t: 0
core id\t\t: 1
cpu MHz\t\t: 2600.000
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq
"""


@pytest.fixture(scope="module")
def backend():
    return CpuBackend()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", ["rw", "ro"])
@pytest.mark.parametrize("fmas", [0, 1, 2, 3, 17])
def test_cpu_sweep_kernel_matches_closed_form(backend, dtype, variant, fmas):
    buf = backend.alloc_sweep(dtype, 4 * backend.granule(dtype) * 8)
    launch = backend.sweep_launch(buf, fmas, variant, buf.elements)
    buf.partial[...] = np.nan
    buf.out[...] = np.nan
    launch.run()
    assert check(backend, buf, variant, fmas, buf.elements, launch.partial_elements) == 0.0
    if variant == "rw":
        x = buf.x.astype(np.float64)
        assert np.array_equal(buf.out.astype(np.float64), x if fmas % 2 == 0 else SWEEP_B - x)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fmas", [0, 3])
def test_cpu_check_reads_what_the_generic_check_reads(backend, dtype, fmas):
    """The CPU's one-pass rw check (backends/cpu/buffers.py) gives the generic chunked check's figure
    exactly: right output, an element off by a known amount, a NaN, an unwritten buffer."""
    from gpuroof.backends.base import Backend

    buf = backend.alloc_sweep(dtype, 5 * backend.granule(dtype) * 8 + 4096)
    n = buf.elements - backend.granule(dtype)  # a prefix: elements past it are never read

    def both():
        return backend.rw_error(buf, fmas, n), Backend.rw_error(backend, buf, fmas, n)
    backend.poison(buf, "rw", buf.elements)
    backend.sweep_launch(buf, fmas, "rw", n).run()
    assert both() == (0.0, 0.0)
    buf.out[n] = 1e9  # past the prefix: not read
    assert both() == (0.0, 0.0)
    buf.out[n // 2] += 6
    assert both() == (6.0, 6.0)
    buf.out[7] = np.nan
    assert both() == (np.inf, np.inf)
    backend.poison(buf, "rw", n)
    assert np.isnan(buf.out[:n]).all() and both() == (np.inf, np.inf)


@pytest.mark.parametrize("elements", [1, 60, 61, 62, 61 * 1000 + 17])
@pytest.mark.parametrize("fmas", [0, 1])
def test_input_sum_is_the_sum_of_the_buffer_the_kernels_read(backend, elements, fmas):
    """The ro check's closed form (base.input_sum) equals the float64 sum of f(x) over the input
    buffer the backend filled, at every remainder of the input's period."""
    from gpuroof.backends.base import input_sum

    buf = backend.alloc_sweep("float32", 256 << 10)
    x = buf.x[:elements].astype(np.float64)
    assert input_sum(elements, fmas) == float(np.sum(x if fmas % 2 == 0 else SWEEP_B - x))


def test_ro_poison_fills_the_partial_sums_and_leaves_the_outputs(backend):
    buf = backend.alloc_sweep("float32", 64 << 10)
    buf.out[:] = 1.0
    backend.poison(buf, "ro", buf.elements)
    assert np.isnan(buf.partial).all() and (buf.out == 1.0).all()
    launch = backend.sweep_launch(buf, 0, "ro", buf.elements)
    assert check(backend, buf, "ro", 0, buf.elements, launch.partial_elements) == np.inf  # never launched
    launch.run()
    assert check(backend, buf, "ro", 0, buf.elements, launch.partial_elements) < 1e-6


def test_page_pool_hands_memory_out_again_only_when_no_array_uses_it():
    from gpuroof.backends.cpu.device import PagePool

    pool = PagePool()
    n = PagePool.MIN_BYTES // 4
    a = pool.empty(n, "float32")
    b = pool.empty(n, "float32")
    assert a.ctypes.data % PagePool.ALIGN == 0 and b.ctypes.data != a.ctypes.data
    alive = a[10:20]  # a slice of `a` keeps its memory in use
    addr = a.ctypes.data
    del a
    c = pool.empty(n // 2, "float64")
    assert c.ctypes.data not in (addr, b.ctypes.data) and alive.base is not None
    del alive
    d = pool.empty(n // 2, "float64")  # same bytes in another dtype: a's memory again
    assert d.ctypes.data == addr and d.dtype == np.float64 and d.size == n // 2
    small = pool.empty(16, "float32")  # small arrays are never pooled
    assert small.ctypes.data % PagePool.ALIGN == 0 and len(pool._raws) == 3
    pool.clear()
    assert pool._raws == [] and d.size == n // 2  # arrays handed out stay valid


def test_check_catches_a_wrong_result(backend):
    buf = backend.alloc_sweep("float32", backend.granule("float32") * 4 * 2)
    launch = backend.sweep_launch(buf, 1, "rw", buf.elements)
    launch.run()
    buf.out[5] += 1
    assert check(backend, buf, "rw", 1, buf.elements, 0) > 0


def test_ro_kernel_covers_every_element(backend):
    """The per-thread partial sums add up to the closed-form sum over the whole range."""
    buf = backend.alloc_sweep("float64", backend.granule("float64") * 8 * 16)
    launch = backend.sweep_launch(buf, 0, "ro", buf.elements)
    launch.run()
    assert buf.partial.sum() == pytest.approx(buf.x.sum(), rel=1e-15)
    _, nbytes = counts("float64", "ro", 0, buf.elements, launch.partial_elements, launch.partial_itemsize)
    assert nbytes == buf.x.nbytes + buf.partial.nbytes


def test_launch_rejects_element_counts_off_the_granule(backend):
    buf = backend.alloc_sweep("float32", backend.granule("float32") * 4 * 2)
    with pytest.raises(ValueError):
        backend.sweep_launch(buf, 1, "rw", backend.granule("float32") + 1)


def test_unknown_dtype_and_device_are_usage_errors(backend):
    with pytest.raises(UsageError, match="float16"):
        backend.alloc_sweep("float16", 1 << 20)
    with pytest.raises(UsageError, match="--device 3"):
        CpuBackend(3)


def test_buffer_larger_than_memory_is_a_usage_error(backend):
    with pytest.raises(UsageError, match="GiB"):
        backend.alloc_sweep("float64", 1 << 50)


def test_timer_returns_seconds_within_budget(backend):
    calls = []
    times = backend.time(lambda: calls.append(1), warmup=2, min_reps=3, max_reps=5, budget_s=0.0)
    assert len(times) == 3 and len(calls) == 5 and np.all(times >= 0)


def test_parse_cpuinfo_counts_physical_cores_and_reads_flags():
    facts = parse_cpuinfo(CPUINFO)
    assert facts["vendor"] == "AuthenticAMD" and facts["family"] == 26
    assert facts["physical_cores"] == 2 and facts["logical_cpus"] == 2
    assert "avx512f" in facts["flags"] and facts["mhz"] == [2596.12, 2600.0]


def test_parse_cpuinfo_counts_smt_siblings_once():
    two_threads_one_core = CPUINFO.replace("core id\t\t: 1", "core id\t\t: 0")
    assert parse_cpuinfo(two_threads_one_core)["physical_cores"] == 1


AVX512 = ["fma", "avx2", "avx512f"]


@pytest.mark.parametrize("vendor,family,flags,model,name,expect", [
    ("AuthenticAMD", 0x1A, AVX512, 2, "AMD EPYC 9B45", (512, 2)),                  # Zen 5
    ("AuthenticAMD", 0x19, AVX512, 17, "AMD EPYC 9654", (256, 2)),                 # Zen 4 double-pumps 512
    ("GenuineIntel", 6, ["fma", "avx2"], 151, "12th Gen Intel Core i7", (256, 2)),  # Haswell .. Alder Lake
    ("GenuineIntel", 6, AVX512, 207, "Intel(R) Xeon(R) Processor", (512, 2)),    # Emerald Rapids
    ("GenuineIntel", 6, AVX512, 143, "Intel Xeon Platinum 8480+", (512, 2)),      # Sapphire Rapids
    ("GenuineIntel", 6, AVX512, 140, "11th Gen Intel Core i7-1165G7", (512, 1)),  # Tiger Lake
    ("GenuineIntel", 6, AVX512, 167, "11th Gen Intel Core i9-11900K", (512, 1)),  # Rocket Lake: one unit
    # a KVM guest of an Emerald Rapids host shown as model 167: its AMX flags say two units
    ("GenuineIntel", 6, AVX512 + ["amx_tile", "avx512_fp16"], 167, "Intel(R) Xeon(R) Processor", (512, 2)),
    ("GenuineIntel", 6, AVX512, 85, "Intel Xeon Gold 6148", (512, 2)),            # Skylake-SP, two units
    ("GenuineIntel", 6, AVX512, 85, "Intel Xeon Silver 4110", (512, 1)),          # Skylake-SP, one unit
    ("GenuineIntel", 6, AVX512, 85, "Intel(R) Xeon(R) Processor", None),          # SKU not named: unknown
    ("GenuineIntel", 6, AVX512, None, "", None),                                   # no model number
    ("AuthenticAMD", 0x1A, ["sse2"], 2, "AMD EPYC", None),                         # no FMA
])
def test_vector_unit_only_answers_what_flags_model_and_name_settle(vendor, family, flags, model, name, expect):
    assert vector_unit(vendor, family, flags, model, name) == expect


def test_cpu_theoretical_zen5_two_cores():
    facts = parse_cpuinfo(CPUINFO) | {"cores_used": 2}
    theo = cpu_theoretical(facts, 2600.0)
    # 2 cores × 16 float32 lanes × 2 pipes × 2 FLOP × 2.6 GHz
    assert theo["compute"]["float32"] == pytest.approx(2 * 16 * 2 * 2 * 2.6e9)
    assert theo["compute"]["float64"] == pytest.approx(2 * 8 * 2 * 2 * 2.6e9)
    assert theo["bandwidth"]["dram"] is None


def test_cpu_theoretical_is_omitted_when_unknowable():
    facts = parse_cpuinfo(CPUINFO.replace("AuthenticAMD", "GenuineIntel")) | {"cores_used": 2}
    assert set(cpu_theoretical(facts, 2600.0)["compute"].values()) == {None}
    assert cpu_theoretical(parse_cpuinfo(CPUINFO) | {"cores_used": 2}, None)["compute"]["float32"] is None


def test_cpu_caches_from_sysfs(tmp_path):
    for i, (level, kind, size, shared) in enumerate([(1, "Data", "48K", "0"), (1, "Instruction", "32K", "0"),
                                                    (2, "Unified", "1024K", "0"),
                                                    (3, "Unified", "32768K", "0-1")]):
        d = tmp_path / "cpu0" / "cache" / f"index{i}"
        d.mkdir(parents=True)
        for name, val in [("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)]:
            (d / name).write_text(f"{val}\n")
    caches = cpu_caches(tmp_path)
    assert [(c["level"], c["size_bytes"], c["shared_by_cpus"]) for c in caches] == \
        [(1, 48 << 10, 1), (2, 1 << 20, 1), (3, 32 << 20, 2)]


def test_default_buffer_is_many_times_the_last_level_cache(backend, monkeypatch):
    monkeypatch.setattr(backend, "cache_bytes", lambda: 32 << 20)
    monkeypatch.setattr(backend, "free_memory_bytes", lambda: 64 << 30)
    assert backend.default_buffer_bytes() == 8 * (32 << 20)


def test_default_buffer_is_eight_last_level_caches(backend, monkeypatch):
    """A guest reporting a 300 MiB L3: 2.4 GiB per array (fill and check run in chunks, so nothing
    beyond input and output grows with it); at least 64 MiB."""
    monkeypatch.setattr(backend, "cache_bytes", lambda: 300 << 20)
    assert backend.default_buffer_bytes() == 8 * (300 << 20)
    monkeypatch.setattr(backend, "cache_bytes", lambda: 1 << 20)
    assert backend.default_buffer_bytes() == 64 << 20


@pytest.mark.parametrize("fmas", [0, 1])
def test_ro_sums_stay_exact_across_flushes(backend, fmas):
    """Threads whose range is 2.5 × FLUSH_CHUNKS chunks add their sums into float64 in parts, and
    many passes over a small range add them every few passes: the sums are exact either way, and
    only the final float64 -> float32 rounding of each lane is left (relative 6e-8 at most)."""
    k = backend._k
    chunk = max(k.READ_SUMS, k.RO_CHAINS) * k.SHAPE.vector_bytes  # bytes
    buf = backend.alloc_sweep("float32", backend.threads * (5 * k.FLUSH_CHUNKS // 2) * chunk)
    for elements, passes in ((buf.elements, 2), (backend.granule("float32") * 4, 3 * k.FLUSH_CHUNKS)):
        launch = backend.sweep_launch(buf, fmas, "ro", elements, passes)
        buf.partial[...] = np.nan
        launch.run()
        assert check(backend, buf, "ro", fmas, elements, launch.partial_elements, passes) <= 1e-7


def _all_variants(backend):
    k = backend._k
    return k.SHAPE.every_variant("rw") + k.SHAPE.every_variant("ro")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fmas", [0, 1, 3])
def test_every_tuned_shape_matches_closed_form(backend, dtype, fmas):
    """Each shape the tuner may pick (half width, half the sums, prefetch, non-temporal stores)
    computes exactly what the default does, on a buffer of several granules."""
    for kernel in _all_variants(backend):
        buf = backend.alloc_sweep(dtype, 3 * backend.granule(dtype) * 8)
        launch = backend.sweep_launch(buf, fmas, kernel.loop, buf.elements, passes=2, kernel=kernel)
        buf.partial[...] = np.nan
        buf.out[...] = np.nan
        launch.run()
        assert check(backend, buf, kernel.loop, fmas, buf.elements, launch.partial_elements, 2,
                     launch.expected_sum) == 0.0, kernel.name


@pytest.mark.parametrize("passes", [1, 2, 3, 7, 64, 1000, 65536, 65539])
def test_pass_xor_sum_counts_every_pass(passes):
    """sum over p < passes of (p XOR D) mod 2^32, bit by bit, against the sum itself."""
    from gpuroof.backends.cpu.buffers import pass_xor_sum

    d = np.array([0, 1, 0x3FC00000, 0xFFFFFFFF, 0x12345678, 0x80000001], np.uint32)
    want = [sum(p ^ int(v) for p in range(passes)) % (1 << 32) for v in d]
    assert pass_xor_sum(d, passes).tolist() == want


def _xor_brute_force(words, threads, sums, per_vector, passes):
    """The XOR-folded read's totals by hand: every 32-bit word, one at a time."""
    chunk = sums * per_vector
    nchunks = len(words) // chunk
    total = 0
    for t in range(threads):
        lanes = [0] * (sums // 2 * per_vector)
        for c in range(t * nchunks // threads, (t + 1) * nchunks // threads):
            for v in range(sums):
                for w in range(per_vector):
                    lanes[(v % (sums // 2)) * per_vector + w] ^= int(words[(c * sums + v) * per_vector + w])
        for lane in lanes:
            w = sum(p ^ lane for p in range(passes)) % (1 << 32)
            total += (w & 0xFFFF) + (w >> 16)
    return total


@pytest.mark.parametrize("dtype,passes", [("float64", 3), ("float32", 3), ("float32", 1 << 12)])
def test_xor_folded_read_checks_every_element_and_every_pass(backend, dtype, passes):
    """The XOR-folded read loop's partial sums make exactly what the input says, word by word
    (buffers.xor_read_total against a brute force); a launch that read one granule less, one pass
    less, or a buffer changed since is caught by the same check."""
    from gpuroof.backends.cpu.buffers import xor_read_total

    kernel = next(v for v in backend._k.SHAPE.every_variant("ro") if v.xor)
    buf = backend.alloc_sweep(dtype, 3 * backend.granule(dtype) * 8)
    rng = np.random.default_rng(3)
    buf.x[:] = rng.uniform(-30, 30, buf.elements).astype(dtype)  # every bit pattern differs
    n, g = buf.elements, backend.granule(dtype)
    want = _xor_brute_force(buf.x[:n].view(np.uint32), backend.threads, kernel.chains, kernel.vector_bytes // 4, min(passes, 3))
    assert xor_read_total(buf.x[:n], backend.threads, kernel.chains, kernel.vector_bytes, min(passes, 3)) == want

    def err(elements, passes, expect_from):
        launch = backend.sweep_launch(buf, 0, "ro", elements, passes=passes, kernel=kernel)
        backend.poison(buf, "ro", n)
        launch.run()
        return check(backend, buf, "ro", 0, n, launch.partial_elements, passes, expect_from.expected_sum)
    full = backend.sweep_launch(buf, 0, "ro", n, passes=passes, kernel=kernel)
    assert passes > 3 or full.expected_sum() == want
    assert err(n, passes, full) == 0.0
    assert err(n, passes - 1, full) > 1e-6  # a pass missing (a power of two of them too)
    assert err(n - g, passes, full) > 1e-6  # a granule never read
    before = full.expected_sum()
    buf.x[5] += 1  # the input changed under the launch
    assert err(n, passes, full) == 0.0 and full.expected_sum() != before


def test_kernel_of_the_other_loop_is_refused(backend):
    buf = backend.alloc_sweep("float32", backend.granule("float32") * 4 * 2)
    ro = backend._k.SHAPE.default_variant("ro")
    with pytest.raises(ValueError, match="not a rw loop"):
        backend.sweep_launch(buf, 0, "rw", buf.elements, kernel=ro)


def test_tuner_keeps_the_fastest_valid_shape_and_records_every_candidate(backend):
    """The tuner times every candidate in rounds on the level's working set and keeps the fastest,
    unless it beats the register file's own shape by less than MIN_GAIN; the trial is recorded
    with each candidate's rate, and the level's later points reuse the choice without a trial."""
    from gpuroof.tune import MIN_GAIN, Tuner

    levels = backend.cache_levels()
    tuner = Tuner(backend, levels, budget_s=0.03, min_reps=2, max_reps=4)
    buf = backend.alloc_sweep("float32", 64 << 10)
    chosen = tuner.kernel(buf, "ro", buf.elements, passes=4)
    assert len(tuner.trials) == 1
    trial = tuner.trials[0]
    cands = backend.kernel_variants("ro", buf.elements * 4)
    assert set(trial["candidates_Bps"]) == {k.name for k in cands} and trial["chosen"] == chosen.name
    rates = trial["candidates_Bps"]
    assert all(r > 0 for r in rates.values())
    default = cands[0].name
    fastest = max(rates, key=rates.get)
    if rates[fastest] >= MIN_GAIN * rates[default]:
        assert chosen.name == fastest and trial["why"].endswith("the default shape's bandwidth")
    else:
        assert chosen.name == default and trial["why"] == "the register file's own shape"
    from gpuroof.tune import ROUNDS
    rounds = trial["rounds"]  # the default is timed in every round, the others in 1 or all
    assert set(rounds) == set(rates) and rounds[default] == ROUNDS and set(rounds.values()) <= {1, ROUNDS}
    assert tuner.kernel(buf, "ro", buf.elements, passes=4) is chosen and len(tuner.trials) == 1
    assert tuner.known("float32", "ro", buf.elements * 4) is chosen


@pytest.mark.parametrize("variant", ["rw", "ro"])
def test_tuner_drops_a_fast_shape_that_fails_its_check(backend, variant):
    """A candidate that returns at once and writes nothing is the fastest of the trial: it is
    checked before its rate counts, fails, is recorded as failed, and the next shape is kept."""
    from dataclasses import replace

    from gpuroof.backends.base import Launch
    from gpuroof.tune import Tuner

    class Broken:  # the real backend, with one shape of the streaming loop that does no work
        def __init__(self, real):
            self.real = real
            self.cands = real.kernel_variants(variant, 1 << 12)
            self.broken = replace(self.cands[0], chains=self.cands[0].chains * 2)

        def __getattr__(self, name):
            return getattr(self.real, name)

        def kernel_variants(self, variant, working_set_bytes):
            return self.cands + [self.broken]

        def sweep_launch(self, buf, fmas, variant, elements, passes=1, kernel=None):
            if kernel == self.broken:
                good = self.real.sweep_launch(buf, fmas, variant, elements, passes)
                return Launch(lambda: None, good.elements, good.partial_elements, good.partial_itemsize, passes)
            return self.real.sweep_launch(buf, fmas, variant, elements, passes, kernel=kernel)

    fake = Broken(backend)
    tuner = Tuner(fake, backend.cache_levels(), budget_s=0.03, min_reps=2, max_reps=4)
    buf = backend.alloc_sweep("float32", 64 << 10)
    chosen = tuner.kernel(buf, variant, buf.elements, passes=4)
    trial = tuner.trials[0]
    assert chosen != fake.broken and chosen in fake.cands
    assert trial["checked"][fake.broken.name] is False and trial["candidates_Bps"][fake.broken.name] is None
    assert trial["checked"][fake.cands[0].name] is True and trial["checked"][chosen.name] is True


def test_tuner_keeps_its_choice_for_the_next_run_of_the_same_device_only(backend, tmp_path):
    """A level's choice is written to the cache under the device's fingerprint; the next tuner of
    the same fingerprint takes it without timing anything and says so, for any dtype; retune, or a
    changed version, measures again."""
    from gpuroof.tune import ChoiceCache, Tuner, fingerprint

    info = backend.device_info()
    fp = fingerprint("cpu", info, {"gpuroof": "1.0", "numba": "0.60"})
    assert fingerprint("cpu", {**info, "nominal_clock_mhz": 1.0}, {"gpuroof": "1.0", "numba": "0.60"}) == fp

    def tuner(cache):
        return Tuner(backend, backend.cache_levels(), budget_s=0.03, min_reps=2, max_reps=4, cache=cache)
    buf = backend.alloc_sweep("float32", 64 << 10)
    first = tuner(ChoiceCache.open(fp, tmp_path))
    chosen = first.kernel(buf, "ro", buf.elements, passes=4)
    assert first.trials[0]["cached"] is False and first.cache.path.exists()

    timed = []
    real_time = backend.time
    backend.time = lambda *a, **k: timed.append(1) or real_time(*a, **k)
    try:
        again = tuner(ChoiceCache.open(fp, tmp_path))
        buf64 = backend.alloc_sweep("float64", 64 << 10)  # the same bytes in float64: the same level
        assert again.kernel(buf64, "ro", buf64.elements, passes=4) == chosen and not timed
        assert again.trials[0]["cached"] is True and again.trials[0]["chosen"] == chosen.name
        assert again.trials[0]["candidates_Bps"] == first.trials[0]["candidates_Bps"]  # the evidence kept
    finally:
        backend.time = real_time
    for cache in (ChoiceCache.open(fp, tmp_path, retune=True),
                  ChoiceCache.open(fingerprint("cpu", info, {"gpuroof": "1.1", "numba": "0.60"}), tmp_path)):
        t = tuner(cache)
        t.kernel(buf, "ro", buf.elements, passes=4)
        assert t.trials[0]["cached"] is False


def test_clock_is_read_right_while_other_threads_spin(backend):
    """Threads of the same process spin on every core (as a parallel runtime's workers do after a
    parallel region): the chain runs for only part of the wall time, but the clock comes from each
    chain's own CPU time, so it reads as on idle cores (or not at all), never a fraction of it.
    The tolerance is wide (the clock itself may move); a wall-time reading would be ~half."""
    import threading
    import time as _time

    quiet = backend.core_clock_mhz(seconds=0.2)
    if quiet is None:
        pytest.skip("no dependent-add chain for this machine")
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            backend._k.add_chain(20000)  # nogil: competes with the chain for the cores
    spinners = [threading.Thread(target=spin) for _ in range(backend.facts["cores_used"])]
    for th in spinners:
        th.start()
    try:
        _time.sleep(0.05)
        busy = backend.core_clock_mhz(seconds=0.2)
        shares = backend.last_clock["cpu_share_of_wall"]
    finally:
        stop.set()
        for th in spinners:
            th.join()
    assert busy is not None
    assert 0.8 * quiet < busy < 1.25 * quiet
    assert min(shares) < 0.9  # the chains did share their cores: the test tested something
