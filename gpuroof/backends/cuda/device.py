"""CUDA device facts and peaks: properties read once, NVML matched by PCI bus id, per-architecture tables."""
from __future__ import annotations

import uuid as _uuid
from typing import Any

import numpy as np

from gpuroof.errors import MeasurementError
from gpuroof.nvml import POWER_SOURCES, Nvml

#: Non-tensor FMA lanes per SM per clock, by compute capability (CUDA C Programming Guide,
#: "Arithmetic Instructions" throughput table; 16-bit entries count elements, a half2 FMA is two).
#: None: the unit does not exist there. An architecture missing here gets no compute peak (never guessed).
#: The peak is SMs x lanes x 2 FLOP x clock: V100 (80 SMs, 1530 MHz boost) 7.8 / 15.7 / 31.3 TFLOP/s
#: float64 / float32 / float16, NVIDIA's 7.8, 15.7 and 31.4 (Volta's half2 rate is twice its FP32
#: rate, not four times as on A100 and H100); its 125 TFLOP/s fp16 are the tensor cores' (below).
FMA_LANES_PER_SM: dict[tuple[int, int], dict[str, int | None]] = {
    (7, 0): {"float64": 32, "float32": 64, "float16": 128, "bfloat16": None},  # V100
    (8, 0): {"float64": 32, "float32": 64, "float16": 256, "bfloat16": 128},  # A100
    (8, 6): {"float64": 2, "float32": 128, "float16": 128, "bfloat16": 128},  # GA10x
    (8, 9): {"float64": 2, "float32": 128, "float16": 128, "bfloat16": 128},  # AD10x
    (9, 0): {"float64": 64, "float32": 128, "float16": 256, "bfloat16": 256},  # H100 / H200
}

#: Dense matrix-unit FLOP per clock per SM (an FMA counts 2), from NVIDIA's architecture whitepapers:
#: V100 125 TFLOP/s fp16 = 80 SMs x 1024 x 1.53 GHz (8 tensor cores x 64 FMAs); A100 312 TFLOP/s fp16
#: dense = 108 SMs x 2048 x 1.41 GHz; H100 SXM 989 TFLOP/s = 132 x 4096 x 1.83 GHz.
#: int8 is in integer OP per clock. A unit or architecture missing here has no theoretical peak (V100
#: has no tf32, bfloat16, float64 or int8 tensor cores: cuBLAS runs those GEMMs on its FMA pipes).
MATRIX_FLOP_PER_SM_CLOCK: dict[tuple[int, int], dict[str, int]] = {
    (7, 0): {"float16": 1024},
    (8, 0): {"float16": 2048, "bfloat16": 2048, "tf32": 1024, "float64": 128, "int8": 4096},
    (9, 0): {"float16": 4096, "bfloat16": 4096, "tf32": 2048, "float64": 256, "int8": 8192},
}

#: Unified L1 / shared memory per SM (bytes) by architecture. The working-set sweep's l1 level is per
#: SM: below it, loads go through L1 and every SM reads (part of) the same small working set.
L1_PER_SM: dict[tuple[int, int], int] = {(7, 0): 128 << 10, (8, 0): 192 << 10, (8, 6): 128 << 10,
                                         (8, 9): 128 << 10, (9, 0): 256 << 10}

#: The DRAM buffer (per array) is at least this many times L2: a read of it streams from DRAM with
#: at most a few percent served by what the last point left in L2.
DRAM_BUFFER_FACTOR = 32

_MIB = 1 << 20

#: cudaDeviceGetAttribute values read besides the properties (cudaDeviceAttr in driver_types.h).
#: CUDA 13 dropped clockRate and memoryClockRate from cudaDeviceProp; the attributes remain.
ATTRIBUTES = {"clock_rate_khz": 13, "memory_clock_rate_khz": 36, "memory_bus_width_bits": 37}


def import_cupy() -> Any:
    """Import cupy on first use; a clear MeasurementError when it is missing or broken."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a RuntimeError from a broken CUDA install
        raise MeasurementError(
            f"the CUDA backend needs cupy, which is not importable ({exc}); "
            "install gpuroof[cuda13] or gpuroof[cuda12] to match the driver") from exc
    return cupy


def parse_cc(cc: Any) -> tuple[int, int] | None:
    """(major, minor) from '9.0', (9, 0) or 90 (cupy's Device.compute_capability is '90'); None when
    it cannot be read."""
    try:
        if isinstance(cc, str):
            if "." in cc:
                major, minor = cc.split(".", 1)
                return int(major), int(minor)
            cc = int(cc)
        if isinstance(cc, (int, np.integer)):
            return int(cc) // 10, int(cc) % 10
        major, minor = cc
        return int(major), int(minor)
    except (TypeError, ValueError):
        return None


def pci_bus_id(props: dict) -> str | None:
    """'0000:1b:00.0' (domain:bus:device.function, as cudaDeviceGetPCIBusId writes it) from the properties."""
    try:
        return f"{int(props['pciDomainID']):04x}:{int(props['pciBusID']):02x}:{int(props['pciDeviceID']):02x}.0"
    except (KeyError, TypeError, ValueError):
        return None


def facts_from_properties(props: dict, attrs: dict) -> dict:
    """Device facts from cudaGetDeviceProperties (`props`, as cupy returns it) and the ATTRIBUTES values.

    Compute capability comes from the properties' major/minor: without it there is no vector peak,
    no L1 level, no bfloat16 or int8 matrix unit and no tensor-core peak. The UUID is kept only when
    all 16 bytes arrived (cupy's string stops at the first zero byte, so a short one is unusable).
    """
    name = props.get("name")
    raw = props.get("uuid")
    uuid = None
    if isinstance(raw, (bytes, bytearray)) and len(raw) == 16:
        uuid = "GPU-" + str(_uuid.UUID(bytes=bytes(raw)))  # NVML's spelling
    major, minor = props.get("major"), props.get("minor")
    return {
        "name": name.decode() if isinstance(name, bytes) else name,
        "compute_capability": f"{int(major)}.{int(minor)}" if major is not None and minor is not None
        else None,
        "multiprocessors": props.get("multiProcessorCount"),
        "max_threads_per_multiprocessor": props.get("maxThreadsPerMultiProcessor"),
        "l2_cache_bytes": props.get("l2CacheSize"),
        "shared_memory_per_multiprocessor": props.get("sharedMemPerMultiprocessor"),
        "memory_total_bytes": props.get("totalGlobalMem"),
        "clock_rate_khz": attrs.get("clock_rate_khz") or props.get("clockRate"),  # peak SM clock
        "memory_clock_rate_khz": attrs.get("memory_clock_rate_khz") or props.get("memoryClockRate"),
        "memory_bus_width_bits": attrs.get("memory_bus_width_bits") or props.get("memoryBusWidth"),
        "pci_bus_id": pci_bus_id(props),
        "uuid": uuid,
    }


def match_nvml(nvml: Nvml, bus_id: str | None, uuid: str | None, index: int) -> tuple[Any, str | None]:
    """(NVML handle, how it was matched) for a CUDA device.

    The PCI bus id first: it is unique and survives CUDA_VISIBLE_DEVICES and Slurm's renumbering.
    Then the full UUID; the index (NVML numbers every GPU of the node) only as the last resort.
    """
    if not nvml.available:
        return None, None
    tries = (("pci_bus_id", bus_id, nvml.handle_by_pci_bus_id), ("uuid", uuid, nvml.handle_by_uuid),
             ("index", index, nvml.handle))
    for how, key, find in tries:
        handle = find(key) if key is not None else None
        if handle is not None:
            return handle, how
    return None, None


def read_device_info(cp: Any, index: int, nvml: Nvml) -> dict:
    """Everything the backend records about device `index`; '_nvml_handle' is the matched handle."""
    rt = cp.cuda.runtime
    try:
        props = dict(rt.getDeviceProperties(index))
    except Exception:
        props = {}
    attrs = {}
    for key, enum in ATTRIBUTES.items():
        try:
            attrs[key] = int(rt.deviceGetAttribute(enum, index))
        except Exception:
            attrs[key] = None
    info: dict[str, Any] = {"backend": "cuda", "index": index, **facts_from_properties(props, attrs)}
    if info["compute_capability"] is None:  # cupy's own reading, as '90'
        try:
            cc = parse_cc(cp.cuda.Device(index).compute_capability)
            info["compute_capability"] = f"{cc[0]}.{cc[1]}" if cc else None
        except Exception:
            pass
    try:
        info["pci_bus_id"] = rt.deviceGetPCIBusId(index)
    except Exception:
        pass
    try:
        with cp.cuda.Device(index):
            info["memory_total_bytes"] = int(rt.memGetInfo()[1])
    except Exception:
        pass
    handle, match = match_nvml(nvml, info["pci_bus_id"], info["uuid"], index)
    info["nvml_match"] = match
    info["nvml_error"] = nvml.error
    # where every telemetry sample's power comes from (the samples record it too: power_source)
    source = nvml.power(handle)[1]
    info["power_source"] = source
    info["power_source_note"] = POWER_SOURCES.get(source) if source else "no power reading from NVML"
    for key, value in nvml.static_info(handle).items():
        if info.get(key) is None:
            info[key] = value
    info.update(_versions(cp, nvml))
    info["_nvml_handle"] = handle
    return info


def _versions(cp: Any, nvml: Nvml) -> dict:
    def version(v: int | None) -> str | None:  # CUDA's integer versions (13000) as '13.0'
        return f"{v // 1000}.{(v % 1000) // 10}" if v else None

    def call(f: Any) -> Any:
        try:
            return f()
        except Exception:
            return None

    nvrtc = call(lambda: cp.cuda.nvrtc.getVersion())  # the library may be missing on a driver-only node
    return {"driver_version": nvml.driver_version(),
            "cuda_driver_version": version(call(lambda: cp.cuda.runtime.driverGetVersion())),
            "cuda_runtime_version": version(call(lambda: cp.cuda.get_local_runtime_version())),
            "nvrtc_version": ".".join(map(str, nvrtc)) if nvrtc else None,
            "cupy_version": cp.__version__}


def theoretical_peaks(cc: Any, multiprocessors: int | None, sm_clock_mhz: float | None,
                      bus_width_bits: int | None, mem_clock_mhz: float | None) -> dict:
    """Peaks at the given clocks: {'compute': {dtype: FLOP/s | None}, 'bandwidth': {'dram': B/s | None}}.

    Compute = multiprocessors x FMA lanes per SM x 2 FLOP per FMA x SM clock (non-tensor units: the
    sweep's FMAs run there). DRAM = memory clock x 2 (double data rate, as NVML reports HBM and GDDR
    clocks) x bus width in bytes. Anything unknown gives None rather than a guess.
    """
    lanes = FMA_LANES_PER_SM.get(parse_cc(cc) or (-1, -1), {})
    compute: dict[str, float | None] = {}
    for dtype in ("float64", "float32", "float16", "bfloat16"):
        n = lanes.get(dtype)
        if n is None or not multiprocessors or not sm_clock_mhz:
            compute[dtype] = None
        else:
            compute[dtype] = float(multiprocessors) * n * 2.0 * float(sm_clock_mhz) * 1e6
    dram = None
    if bus_width_bits and mem_clock_mhz:
        dram = float(mem_clock_mhz) * 1e6 * 2.0 * float(bus_width_bits) / 8.0
    return {"compute": compute, "bandwidth": {"dram": dram}}


def matrix_units(cc: Any) -> tuple[str, ...]:
    """Matrix units cuBLAS drives on this architecture (bfloat16 from Ampere, int8 from Turing)."""
    cc = parse_cc(cc) or (0, 0)
    units = ["float16", "tf32", "float64"]
    if cc >= (8, 0):
        units.insert(1, "bfloat16")
    if cc >= (7, 5):
        units.append("int8")
    return tuple(units)


def matrix_theoretical(cc: Any, multiprocessors: int | None,
                       sm_clock_mhz: float | None) -> dict[str, float | None]:
    """Dense matrix-unit peaks ('<unit>-matrix': FLOP/s) at the given SM clock; None where unknown."""
    table = MATRIX_FLOP_PER_SM_CLOCK.get(parse_cc(cc) or (-1, -1), {})
    return {f"{u}-matrix": (table[u] * multiprocessors * sm_clock_mhz * 1e6
                            if u in table and multiprocessors and sm_clock_mhz else None)
            for u in matrix_units(cc)}


def l1_per_sm(info: dict) -> int | None:
    """Unified L1 / shared bytes per SM of this architecture; None where the table has none."""
    return L1_PER_SM.get(parse_cc(info.get("compute_capability")) or (-1, -1))


def cache_levels(info: dict) -> list:
    """shared (its own kernel), l1 (per SM), l2 (device-wide), dram: the levels the device has."""
    from gpuroof.backends.base import Level

    levels = [Level("shared", None, f"{info.get('shared_memory_per_multiprocessor')} B per SM")]
    l1 = l1_per_sm(info)
    if l1:
        levels.append(Level("l1", l1, f"{l1} B unified L1/shared per SM; every SM reads the working set"))
    levels.append(Level("l2", int(info.get("l2_cache_bytes") or 0), "device-wide; loads bypass L1 (__ldcg)"))
    return levels + [Level("dram", None, "device memory")]


def default_buffer_bytes(l2_bytes: int, free_bytes: int) -> int:
    """Bytes of x (out is as large): DRAM_BUFFER_FACTOR x L2 (at least 256 MiB), at most 1/4 of free
    memory, in whole MiB."""
    want = -(-max(DRAM_BUFFER_FACTOR * l2_bytes, 256 * _MIB) // _MIB) * _MIB
    cap = free_bytes // 4 // _MIB * _MIB
    return int(min(want, cap))
