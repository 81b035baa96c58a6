"""The measured core clock against the FMA plateau it must explain: re-measured, then dropped."""
import pytest

from gpuroof.backends.cpu.device import cpu_theoretical
from gpuroof.measure import measured_clock, settle_clock
from gpuroof.quality import assess

FACTS = {"vendor": "AuthenticAMD", "family": 25, "model_number": 1, "flags": ["fma", "avx2"],
         "model": "AMD EPYC", "cores_used": 2}


class Readings:
    """The backend's clock as a scripted sequence of readings (the theoretical peaks are the real
    formula of the CPU backend: 2 cores x 8 float32 lanes x 2 pipes x 2 = 64 FLOP per cycle)."""

    def __init__(self, *readings):
        self.readings = list(readings)
        self.calls = 0

    def core_clock_mhz(self):
        self.calls += 1
        return self.readings.pop(0)

    def theoretical(self, sm_clock_mhz, mem_clock_mhz):
        return cpu_theoretical(FACTS, sm_clock_mhz)


#: A float32 plateau that needs at least 3000 MHz on these cores (64 FLOP per cycle).
COMPUTE = {"float32": 64 * 3000e6, "float64": 32 * 2900e6}


def test_clock_the_plateau_confirms_is_kept_without_a_second_reading():
    b = Readings()
    got = settle_clock(b, measured_clock(3100.0, 3120.0, 2445.0), COMPUTE)
    assert got["measured_mhz"] == pytest.approx(3110.0) and b.calls == 0
    assert got["lowest_mhz_the_plateaus_allow"] == pytest.approx(3000 / 1.05)


def test_low_clock_is_measured_again_and_the_new_reading_kept():
    b = Readings(3050.0)
    got = settle_clock(b, measured_clock(1500.0, 1550.0, 2445.0), COMPUTE)
    assert b.calls == 1
    assert got["measured_mhz"] == 3050.0 and got["rejected_mhz"] == [1525.0]
    assert "measured again" in got["reason"]


def test_clock_the_plateau_still_disproves_is_dropped_and_the_hardware_not_blamed():
    b = Readings(1600.0)
    got = settle_clock(b, measured_clock(1500.0, 1550.0, 2445.0), COMPUTE)
    assert got["measured_mhz"] is None and got["rejected_mhz"] == [1525.0, 1600.0]
    assert got["reason"].startswith("clock not measured")
    # with no clock there is no theoretical at the measured clock, so no "above theoretical" reason
    theo = b.theoretical(None, None)["compute"]
    ratios = {"compute": {u: (COMPUTE[u] / theo[u] if theo[u] else None) for u in COMPUTE}, "bandwidth": {}}
    q = assess({"backend": "cpu", "ratios": ratios, "ceilings": {"compute": COMPUTE, "bandwidth": {}}})
    assert not any("theoretical" in r for r in q["reasons"])


def test_no_theoretical_means_no_judgement_of_the_clock():
    class Unknown(Readings):
        def theoretical(self, sm_clock_mhz, mem_clock_mhz):
            return {"compute": {"float32": None, "float64": None}, "bandwidth": {}}
    b = Unknown()
    got = settle_clock(b, measured_clock(1000.0, None, None), COMPUTE)
    assert got["measured_mhz"] == 1000.0 and b.calls == 0
