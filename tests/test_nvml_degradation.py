"""NVML absent or partly unsupported: values become None, the run goes on (fakes only at this boundary).

The fakes are built on tests/pynvml_spec.py: a name the installed pynvml lacks raises, so a misspelled
NVML function in gpuroof fails here instead of reading as "unsupported" (None).
"""
import re
from pathlib import Path

import pynvml
import pytest
from pynvml_spec import PynvmlSpec, UnknownNvmlName

import gpuroof
from gpuroof.nvml import Nvml, is_throttled, reason_names


class NotSupported(Exception):
    pass


class FakeNvml(PynvmlSpec):
    """Stands in for pynvml: supports some calls, raises NotSupported for others."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    def __init__(self, init_error=None, event_reasons=True):
        self.init_error = init_error
        if not event_reasons:  # an older nvidia-ml-py without the renamed call
            self.nvmlDeviceGetCurrentClocksEventReasons = None

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"h{i}"

    def nvmlDeviceGetClockInfo(self, h, kind):
        return {1: 1980, 2: 2619}[kind]

    def nvmlDeviceGetPowerUsage(self, h):
        raise NotSupported()

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 41

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return 0x4 | 0x1

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
        return 0x40

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"


def test_missing_driver_makes_every_field_none():
    nv = Nvml(FakeNvml(init_error=RuntimeError("NVML Shared Library Not Found")))
    assert not nv.available and "Not Found" in nv.error
    assert nv.device_count() == 0
    sample = nv.sample(nv.handle(0))
    assert set(sample) == {"sm_clock_mhz", "mem_clock_mhz", "power_w", "power_source", "temperature_c",
                           "clock_event_reasons"}
    assert all(v is None for v in sample.values())


def test_unsupported_field_is_none_and_the_rest_is_read():
    nv = Nvml(FakeNvml())
    s = nv.sample(nv.handle(0))
    assert s["sm_clock_mhz"] == 1980 and s["mem_clock_mhz"] == 2619 and s["temperature_c"] == 41
    assert s["power_w"] is None
    assert s["clock_event_reasons"] == 0x5
    assert nv.static_info(nv.handle(0))["nvml_name"] == "NVIDIA H100 80GB HBM3"
    assert nv.static_info(nv.handle(0))["memory_bus_width_bits"] is None  # call absent in the fake


def test_older_library_falls_back_to_throttle_reasons():
    nv = Nvml(FakeNvml(event_reasons=False))
    assert nv.sample(nv.handle(0))["clock_event_reasons"] == 0x40


def test_reason_bits_tell_throttling_from_idle():
    assert is_throttled(0x1) is False  # idle only
    assert is_throttled(0x4) is True  # software power cap
    assert is_throttled(None) is None
    assert reason_names(0x44) == ["sw_power_cap", "hw_thermal_slowdown"]


def test_a_misspelled_nvml_function_fails_instead_of_reading_as_unsupported():
    nv = Nvml(FakeNvml())
    with pytest.raises(UnknownNvmlName, match="nvmlDeviceGetClockInf"):
        nv._call("nvmlDeviceGetClockInf", "h0", 1)
    with pytest.raises(UnknownNvmlName):
        getattr(FakeNvml(), "NVML_CLOCK_SMM", 1)
    # A call pynvml has but the fake leaves out is absent, as in an older nvidia-ml-py: None.
    assert nv._call("nvmlDeviceGetMemoryBusWidth", "h0") is None


def test_every_nvml_name_gpuroof_uses_exists_in_the_installed_pynvml():
    root = Path(gpuroof.__file__).resolve().parent
    names = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"_call\(\s*[\"'](nvml\w+)[\"']", text))
        names |= set(re.findall(r"getattr\(\s*\w+\s*,\s*[\"'](NVML_\w+)[\"']", text))
    assert len(names) >= 15, sorted(names)  # the scan found the calls (nvml.py, environment.py)
    missing = sorted(n for n in names if not hasattr(pynvml, n))
    assert not missing, f"names pynvml does not have: {missing}"


# ---------------------------------------------------------------------------------------------
# power: the instantaneous field first, nvmlDeviceGetPowerUsage (a 1 s average on Hopper) after
# ---------------------------------------------------------------------------------------------

class PowerNvml(FakeNvml):
    """nvmlDeviceGetFieldValues as pynvml's own: an array of the real c_nvmlFieldValue_t, one per field
    asked for, each with its own nvmlReturn and valueType; nvmlDeviceGetPowerUsage answers another
    figure, so a test can tell which one a sample used."""

    NVML_SUCCESS, NVML_FI_DEV_POWER_INSTANT = pynvml.NVML_SUCCESS, pynvml.NVML_FI_DEV_POWER_INSTANT
    NVML_VALUE_TYPE_DOUBLE = pynvml.NVML_VALUE_TYPE_DOUBLE
    NVML_VALUE_TYPE_UNSIGNED_INT = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    NVML_VALUE_TYPE_UNSIGNED_LONG = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    NVML_VALUE_TYPE_SIGNED_LONG_LONG = pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG
    NVML_VALUE_TYPE_SIGNED_INT = pynvml.NVML_VALUE_TYPE_SIGNED_INT
    NVML_VALUE_TYPE_UNSIGNED_SHORT = pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT

    def __init__(self, field=None, usage_mw=300_000, **kw):
        super().__init__(**kw)
        self.field = field  # None: the call fails; else (nvmlReturn, valueType, member, value)
        self.usage_mw = usage_mw
        self.asked: list = []

    def nvmlDeviceGetFieldValues(self, h, field_ids):
        self.asked.append(list(field_ids))
        if self.field is None:
            raise NotSupported("nvmlDeviceGetFieldValues: Function Not Found")
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        ret, vtype, member, value = self.field
        for i, fid in enumerate(field_ids):
            values[i].fieldId = fid
            values[i].nvmlReturn = ret
            values[i].valueType = vtype
            setattr(values[i].value, member, value)
        return values

    def nvmlDeviceGetPowerUsage(self, h):
        if self.usage_mw is None:
            raise NotSupported()
        return self.usage_mw


INSTANT = (pynvml.NVML_SUCCESS, pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", 431_250)


def test_power_is_the_instantaneous_field_where_the_driver_has_it():
    from gpuroof.nvml import POWER_INSTANT, POWER_SOURCES

    fake = PowerNvml(field=INSTANT)
    nv = Nvml(fake)
    s = nv.sample(nv.handle(0))
    assert s["power_w"] == pytest.approx(431.25) and s["power_source"] == POWER_INSTANT
    assert fake.asked == [[pynvml.NVML_FI_DEV_POWER_INSTANT]]  # one field, GPU scope (scopeId 0)
    assert "instantaneous" in POWER_SOURCES[POWER_INSTANT]
    # The constants gpuroof falls back on where an nvidia-ml-py lacks them are nvml.h's own.
    bare = PowerNvml(field=INSTANT)
    for name in ("NVML_SUCCESS", "NVML_FI_DEV_POWER_INSTANT", "NVML_VALUE_TYPE_UNSIGNED_INT"):
        setattr(bare, name, None)  # absent, as the spec reads a name the fake leaves out
    assert Nvml(bare).power("h0") == (pytest.approx(431.25), POWER_INSTANT)


@pytest.mark.parametrize("field", [
    None,  # an older driver or nvidia-ml-py without field values
    (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", 999_999),  # this field
    (pynvml.NVML_SUCCESS, pynvml.NVML_VALUE_TYPE_COUNT, "uiVal", 999_999),  # a type nvmlValue_t does not hold
])
def test_power_falls_back_to_the_averaged_reading_and_says_so(field):
    from gpuroof.nvml import POWER_SOURCES, POWER_USAGE

    nv = Nvml(PowerNvml(field=field))
    assert nv.power(nv.handle(0)) == (pytest.approx(300.0), POWER_USAGE)
    assert nv.sample(nv.handle(0))["power_source"] == POWER_USAGE
    assert "1 s" in POWER_SOURCES[POWER_USAGE]


def test_each_value_type_of_the_field_is_read_from_its_own_member():
    for vtype, member, value in ((pynvml.NVML_VALUE_TYPE_DOUBLE, "dVal", 250_500.0),
                                 (pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, "ullVal", 250_500),
                                 (pynvml.NVML_VALUE_TYPE_SIGNED_INT, "siVal", 250_500)):
        nv = Nvml(PowerNvml(field=(pynvml.NVML_SUCCESS, vtype, member, value)))
        assert nv.power(nv.handle(0))[0] == pytest.approx(250.5), member


def test_no_power_at_all_is_none_with_no_source():
    nv = Nvml(PowerNvml(field=None, usage_mw=None))
    assert nv.power(nv.handle(0)) == (None, None)
    assert nv.sample(nv.handle(0))["power_source"] is None
    assert nv.power(None) == (None, None)


def test_a_window_of_samples_says_where_its_power_came_from_and_the_csv_keeps_it(tmp_path):
    import pandas as pd

    from gpuroof.nvml import POWER_INSTANT
    from gpuroof.results import check_table
    from gpuroof.telemetry import Sampler

    nv = Nvml(PowerNvml(field=INSTANT))
    h = nv.handle(0)
    with Sampler(lambda: nv.sample(h), interval_s=0.01) as sampler:
        pass
    win = sampler.window(0.0, sampler.now())
    assert win["power_w"] == pytest.approx(431.25) and win["power_source"] == POWER_INSTANT
    f = tmp_path / "telemetry.csv"
    sampler.frame().to_csv(f, index=False)
    back = check_table(pd.read_csv(f), "telemetry", f)
    assert set(back["power_source"]) == {POWER_INSTANT}
