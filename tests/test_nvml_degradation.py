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
    assert set(sample) == {"sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c", "clock_event_reasons"}
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
