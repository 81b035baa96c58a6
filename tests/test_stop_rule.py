"""The one stop rule every timer shares (backends.base.repeat / check_reps), on the CPU timer."""
import pytest

from gpuroof.backends.base import check_reps, repeat
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
