"""The one stop rule every timer shares (backends.base.repeat / check_reps), on the CPU timer."""
import pytest

from gpuroof.backends.base import MIN_TIME_SHARE, NOISE_MIN_SAMPLES, NOISE_TARGET, check_reps, relative_noise, repeat
from gpuroof.backends.cpu import CpuBackend
from gpuroof.errors import UsageError


def test_repeat_takes_min_reps_even_with_no_budget_and_stops_at_max_reps():
    assert len(repeat(lambda: 1.0, min_reps=3, max_reps=10, budget_s=0.0)) == 3
    assert len(repeat(lambda: 1.0, min_reps=3, max_reps=5, budget_s=60.0)) == 5


def test_repeat_runs_on_until_the_budget_between_min_and_max():
    import time
    got = repeat(lambda: time.sleep(0.01), min_reps=1, max_reps=10_000, budget_s=0.1)
    assert 2 <= len(got) < 10_000  # the budget ended it, not max_reps


@pytest.mark.parametrize("bad", [dict(warmup=-1), dict(min_reps=0), dict(max_reps=2, min_reps=3),
                                 dict(budget_s=-1.0)])
def test_every_timer_refuses_the_same_bad_counts(bad):
    kw = {"warmup": 0, "min_reps": 1, "max_reps": 5, "budget_s": 0.0, **bad}
    with pytest.raises(UsageError):
        check_reps(**kw)
    calls = []
    with pytest.raises(UsageError):
        CpuBackend().time(lambda: calls.append(1), **kw)
    assert not calls  # refused before anything ran


def test_the_cpu_timer_warms_up_then_times_under_the_stop_rule():
    calls = []
    times = CpuBackend().time(lambda: calls.append(1), warmup=2, min_reps=4, max_reps=4, budget_s=10.0)
    assert len(calls) == 6 and len(times) == 4 and (times >= 0).all()


def _clocked(times):
    """A sample that takes no time and reports the next of `times` (the stop rule reads the value)."""
    it = iter(times)
    return lambda: next(it)


def test_a_quiet_point_stops_on_its_noise_once_the_minimum_time_has_passed():
    import time
    start = time.perf_counter()
    got = repeat(lambda: (time.sleep(0.002), 1.0)[1], min_reps=2, max_reps=10_000, budget_s=0.4)
    took = time.perf_counter() - start
    assert NOISE_MIN_SAMPLES <= len(got) < 10_000
    assert MIN_TIME_SHARE * 0.4 <= took < 0.4  # past the minimum time, before the cap


def test_a_noisy_point_runs_to_the_cap_and_its_spread_says_so():
    import itertools
    import time
    noisy = itertools.cycle([1.0, 1.5])  # 20% spread: never under the target
    start = time.perf_counter()
    got = repeat(lambda: (time.sleep(0.002), next(noisy))[1], min_reps=2, max_reps=10_000, budget_s=0.2)
    assert time.perf_counter() - start >= 0.2 and relative_noise(got) > NOISE_TARGET


def test_noise_never_stops_a_point_before_its_minimum_samples_or_min_reps():
    assert len(repeat(_clocked([1.0] * 100), min_reps=20, max_reps=100, budget_s=0.0)) == 20
    got = repeat(_clocked([1.0] * 100), min_reps=1, max_reps=100, budget_s=1e-9)
    assert len(got) == 1  # the budget (the cap) ended it at min_reps
    # a sample that is no number (here a tuple) is read through `seconds`
    assert len(repeat(lambda: (1.0, 0.0), min_reps=1, max_reps=7, budget_s=0.0, seconds=lambda s: s[0])) == 1


def test_relative_noise_is_the_standard_deviation_over_the_mean():
    assert relative_noise([1.0]) == float("inf")
    assert relative_noise([1.0, 1.0, 1.0]) == 0.0
    assert relative_noise([1.0, 3.0]) == pytest.approx((2 ** 0.5) / 2)
