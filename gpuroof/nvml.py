"""The only module that imports pynvml (nvidia-ml-py): device facts and telemetry samples.

Initialisation failure is stored and reported when asked for; an unsupported field is None; a missing
driver never crashes a run.
"""
from __future__ import annotations

from typing import Any, Callable

try:  # nvidia-ml-py is a core dependency, but a broken install must not break the CPU backend
    import pynvml as _nv
except ImportError as exc:  # pragma: no cover - exercised through FakeNvml in tests
    _nv = None
    _IMPORT_ERROR: Exception | None = exc
else:
    _IMPORT_ERROR = None

#: Clock-event (throttle) reason bits that mean the clocks were held below what the load asked for.
#: GPU idle, application-clock and display settings are informational and do not count.
THROTTLE_BITS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}
INFO_BITS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x10: "sync_boost",
             0x100: "display_clock_setting"}


#: Where a sample's power_w came from (`power_source` in every telemetry sample and in run.json's
#: device): the instantaneous field where the driver has it, else nvmlDeviceGetPowerUsage, which on
#: Ampere (except GA100) and newer is an average over the last second: a point timed for 0.1-0.5 s
#: would record mostly the phase before it.
POWER_INSTANT = "NVML_FI_DEV_POWER_INSTANT"
POWER_USAGE = "nvmlDeviceGetPowerUsage"
POWER_SOURCES = {
    POWER_INSTANT: "instantaneous GPU power (nvmlDeviceGetFieldValues, NVML_FI_DEV_POWER_INSTANT, GPU scope)",
    POWER_USAGE: "nvmlDeviceGetPowerUsage: averaged over 1 s on Ampere (except GA100) and newer, "
                 "instantaneous on older GPUs (the instantaneous field was not available)",
}


def reason_names(mask: int | None) -> list[str]:
    """Names of the bits set in a clock-event reason mask (throttling ones first)."""
    if mask is None:
        return []
    bits = {**THROTTLE_BITS, **INFO_BITS}
    return [name for bit, name in bits.items() if mask & bit]


def is_throttled(mask: int | None) -> bool | None:
    if mask is None:
        return None
    return any(mask & bit for bit in THROTTLE_BITS)


class Nvml:
    """Lazy NVML session. `available` is False when the library or driver is missing."""

    def __init__(self, lib: Any = None):
        self._nv = lib if lib is not None else _nv
        self.error: str | None = None
        self._ready = False
        if self._nv is None:
            self.error = f"nvidia-ml-py not importable: {_IMPORT_ERROR}"
            return
        try:
            self._nv.nvmlInit()
            self._ready = True
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.error = f"NVML unavailable: {exc}"

    @property
    def available(self) -> bool:
        return self._ready

    def _call(self, fn: str, *args: Any) -> Any:
        """Call an NVML function; None when NVML, the function or the field is unsupported."""
        if not self._ready:
            return None
        f: Callable | None = getattr(self._nv, fn, None)
        if f is None:
            return None
        try:
            return f(*args)
        except Exception:  # NVMLError_NotSupported, NoPermission, FunctionNotFound, ...
            return None

    def device_count(self) -> int:
        return self._call("nvmlDeviceGetCount") or 0

    def handle(self, index: int) -> Any:
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def handle_by_uuid(self, uuid: str) -> Any:
        return self._call("nvmlDeviceGetHandleByUUID", uuid)

    def handle_by_pci_bus_id(self, bus_id: str) -> Any:
        """Handle of the GPU at `bus_id` ('0000:1b:00.0' as CUDA writes it; NVML takes that form)."""
        return self._call("nvmlDeviceGetHandleByPciBusId", bus_id)

    def driver_version(self) -> str | None:
        v = self._call("nvmlSystemGetDriverVersion")
        return v.decode() if isinstance(v, bytes) else v

    def static_info(self, h: Any) -> dict:
        """Facts that do not change during a run. Clocks in MHz, memory bus width in bits."""
        if h is None:
            return {}
        nv = self._nv
        name = self._call("nvmlDeviceGetName", h)
        uuid = self._call("nvmlDeviceGetUUID", h)
        return {
            "nvml_name": name.decode() if isinstance(name, bytes) else name,
            "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
            "max_sm_clock_mhz": self._call("nvmlDeviceGetMaxClockInfo", h, getattr(nv, "NVML_CLOCK_SM", 1)),
            "max_mem_clock_mhz": self._call("nvmlDeviceGetMaxClockInfo", h, getattr(nv, "NVML_CLOCK_MEM", 2)),
            "memory_bus_width_bits": self._call("nvmlDeviceGetMemoryBusWidth", h),
            "power_limit_w": _milli(self._call("nvmlDeviceGetEnforcedPowerLimit", h)),
        }

    def field_value(self, h: Any, field_id: int) -> int | float | None:
        """One NVML field of device `h` (nvmlDeviceGetFieldValues), or None: when the call fails,
        and when the field's own status (`nvmlReturn` of its nvmlFieldValue_t: the call succeeds if
        any field was read) is not NVML_SUCCESS, or its `valueType` is not one nvmlValue_t holds.
        The scope (`scopeId`) stays 0, which for the power fields is NVML_POWER_SCOPE_GPU."""
        nv = self._nv
        values = self._call("nvmlDeviceGetFieldValues", h, [int(field_id)])
        try:
            v = values[0]
            if int(v.nvmlReturn) != _or(getattr(nv, "NVML_SUCCESS", None), 0):
                return None
            member = {_or(getattr(nv, "NVML_VALUE_TYPE_DOUBLE", None), 0): "dVal",
                      _or(getattr(nv, "NVML_VALUE_TYPE_UNSIGNED_INT", None), 1): "uiVal",
                      _or(getattr(nv, "NVML_VALUE_TYPE_UNSIGNED_LONG", None), 2): "ulVal",
                      _or(getattr(nv, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", None), 3): "ullVal",
                      _or(getattr(nv, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", None), 4): "sllVal",
                      _or(getattr(nv, "NVML_VALUE_TYPE_SIGNED_INT", None), 5): "siVal",
                      _or(getattr(nv, "NVML_VALUE_TYPE_UNSIGNED_SHORT", None), 6): "usVal"}.get(int(v.valueType))
            return None if member is None else getattr(v.value, member)
        except (TypeError, IndexError, AttributeError, ValueError):  # no values, or not the NVML struct
            return None

    def power(self, h: Any) -> tuple[float | None, str | None]:
        """(W, source): the instantaneous field (NVML_FI_DEV_POWER_INSTANT, milliwatts) where the
        driver supports it, else nvmlDeviceGetPowerUsage (milliwatts; a 1 s average on Ampere except
        GA100 and newer); (None, None) when neither answers. The source is one of POWER_SOURCES."""
        if h is None:
            return None, None
        mw = self.field_value(h, _or(getattr(self._nv, "NVML_FI_DEV_POWER_INSTANT", None), 186))
        if mw is not None:
            return _milli(mw), POWER_INSTANT
        mw = self._call("nvmlDeviceGetPowerUsage", h)
        return (_milli(mw), POWER_USAGE) if mw is not None else (None, None)

    def sample(self, h: Any) -> dict:
        """One telemetry sample: MHz, W, °C and the clock-event reason mask (None where unsupported),
        and where the power came from (`power_source`: a POWER_SOURCES key, None without power)."""
        nv = self._nv
        if h is None:
            return dict.fromkeys(("sm_clock_mhz", "mem_clock_mhz", "power_w", "power_source", "temperature_c",
                                  "clock_event_reasons"))
        reasons = self._call("nvmlDeviceGetCurrentClocksEventReasons", h)
        if reasons is None:  # drivers before the rename only have the older throttle call
            reasons = self._call("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        power_w, power_source = self.power(h)
        return {
            "sm_clock_mhz": self._call("nvmlDeviceGetClockInfo", h, getattr(nv, "NVML_CLOCK_SM", 1)),
            "mem_clock_mhz": self._call("nvmlDeviceGetClockInfo", h, getattr(nv, "NVML_CLOCK_MEM", 2)),
            "power_w": power_w,
            "power_source": power_source,
            "temperature_c": self._call("nvmlDeviceGetTemperature", h,
                                        getattr(nv, "NVML_TEMPERATURE_GPU", 0)),
            "clock_event_reasons": reasons,
        }


def _milli(v: Any) -> float | None:
    return None if v is None else v / 1000.0


def _or(v: Any, default: Any) -> Any:
    """An NVML constant, or its value in nvml.h where this nvidia-ml-py lacks the name (None)."""
    return default if v is None else v
