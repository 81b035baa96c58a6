"""The arithmetic every GPU run depends on, from the recorded properties of H100 SXM, H200, A100 and L4.

The properties are what cudaGetDeviceProperties and cudaDeviceGetAttribute report for these parts
(NVIDIA's datasheets and whitepapers: SM count, boost clock, L2, shared memory per SM, memory clock
and bus width). Each test runs the backend's own functions on them: no device, no fake measurement.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
from pynvml_spec import PynvmlSpec

from gpuroof.backends.cpu import CpuBackend
from gpuroof.backends.cuda import device as dev
from gpuroof.backends.cuda import kernels
from gpuroof.backends.cuda.blas import GEMM_LAYOUT, gemm_operands
from gpuroof.backends.cuda.timing import WINDOW_S, launches_per_window
from gpuroof.hierarchy import INSIDE, OUTSIDE, plateau_level, working_set_sizes
from gpuroof.measure import DRAM_FACTOR, peaks_and_ratios, plateau_clocks
from gpuroof.nvml import Nvml
from gpuroof.sweep import compute_point_elements

GIB = 1 << 30


def _props(major, minor, sms, threads, l2, shared, total, bus_id=0x1B):
    return {"name": b"", "major": major, "minor": minor, "multiProcessorCount": sms,
            "maxThreadsPerMultiProcessor": threads, "l2CacheSize": l2, "sharedMemPerMultiprocessor": shared,
            "totalGlobalMem": total, "pciDomainID": 0, "pciBusID": bus_id, "pciDeviceID": 0,
            "uuid": bytes(range(1, 17))}


#: name -> (properties, attributes (kHz, bits), published figures at the boost clock:
#: FP32 / FP64 vector FLOP/s, DRAM B/s, dense FP16 tensor FLOP/s or None).
GPUS = {
    "H100 SXM": (_props(9, 0, 132, 2048, 50 << 20, 228 << 10, 80 * GIB),
                 {"clock_rate_khz": 1_980_000, "memory_clock_rate_khz": 2_619_000, "memory_bus_width_bits": 5120},
                 {"float32": 66.9e12, "float64": 33.5e12, "dram": 3.35e12, "float16-matrix": 1070e12}),
    "H200": (_props(9, 0, 132, 2048, 50 << 20, 228 << 10, 141 * GIB),
             {"clock_rate_khz": 1_980_000, "memory_clock_rate_khz": 3_201_000, "memory_bus_width_bits": 6144},
             {"float32": 66.9e12, "float64": 33.5e12, "dram": 4.92e12, "float16-matrix": 1070e12}),
    "A100 SXM4 80GB": (_props(8, 0, 108, 2048, 40 << 20, 164 << 10, 80 * GIB),
                       {"clock_rate_khz": 1_410_000, "memory_clock_rate_khz": 1_593_000,
                        "memory_bus_width_bits": 5120},
                       {"float32": 19.5e12, "float64": 9.7e12, "dram": 2.04e12, "float16-matrix": 312e12}),
    "L4": (_props(8, 9, 58, 1536, 48 << 20, 100 << 10, 24 * GIB),
           {"clock_rate_khz": 2_040_000, "memory_clock_rate_khz": 6_251_000, "memory_bus_width_bits": 192},
           {"float32": 30.3e12, "float64": 0.47e12, "dram": 300e9, "float16-matrix": None}),
}


def info_of(gpu: str) -> dict:
    props, attrs, _ = GPUS[gpu]
    return dev.facts_from_properties(props, attrs)


@pytest.mark.parametrize("gpu", GPUS)
def test_compute_capability_and_facts_come_from_the_properties(gpu):
    props, attrs, _ = GPUS[gpu]
    info = info_of(gpu)
    assert info["compute_capability"] == f"{props['major']}.{props['minor']}"
    assert info["multiprocessors"] == props["multiProcessorCount"]
    assert info["l2_cache_bytes"] == props["l2CacheSize"]
    assert info["memory_clock_rate_khz"] == attrs["memory_clock_rate_khz"]
    assert info["pci_bus_id"] == "0000:1b:00.0"
    assert info["uuid"] == "GPU-01020304-0506-0708-090a-0b0c0d0e0f10"


def test_a_uuid_cut_at_a_zero_byte_is_not_used():
    props = {**GPUS["H100 SXM"][0], "uuid": b"\x01\x02"}
    assert dev.facts_from_properties(props, {})["uuid"] is None
    assert dev.parse_cc("90") == (9, 0) and dev.parse_cc("8.9") == (8, 9)  # cupy's spelling and ours


@pytest.mark.parametrize("gpu", GPUS)
def test_peaks_at_the_boost_clock_match_the_published_figures(gpu):
    _, attrs, published = GPUS[gpu]
    info = info_of(gpu)
    sm, mem = attrs["clock_rate_khz"] / 1000, attrs["memory_clock_rate_khz"] / 1000
    peaks = dev.theoretical_peaks(info["compute_capability"], info["multiprocessors"], sm,
                                  info["memory_bus_width_bits"], mem)
    for dtype in ("float32", "float64"):
        assert peaks["compute"][dtype] == pytest.approx(published[dtype], rel=0.02), dtype
    assert peaks["compute"]["float16"] == pytest.approx(
        info["multiprocessors"] * dev.FMA_LANES_PER_SM[dev.parse_cc(info["compute_capability"])]["float16"]
        * 2 * sm * 1e6)
    assert peaks["bandwidth"]["dram"] == pytest.approx(published["dram"], rel=0.02)
    matrix = dev.matrix_theoretical(info["compute_capability"], info["multiprocessors"], sm)
    if published["float16-matrix"] is None:  # Ada is not in the table: no guessed peak
        assert all(v is None for v in matrix.values())
    else:
        assert matrix["float16-matrix"] == pytest.approx(published["float16-matrix"], rel=0.02)
        assert matrix["tf32-matrix"] == pytest.approx(published["float16-matrix"] / 2, rel=0.02)


@pytest.mark.parametrize("gpu", GPUS)
def test_every_recorded_gpu_has_all_five_matrix_units(gpu):
    assert dev.matrix_units(info_of(gpu)["compute_capability"]) == \
        ("float16", "bfloat16", "tf32", "float64", "int8")


def test_int8_and_tf32_gemms_run_as_tn_with_the_same_product():
    assert GEMM_LAYOUT == {"float16": "NN", "bfloat16": "NN", "tf32": "TN", "float64": "NN", "int8": "TN"}
    assert gemm_operands("TN") == (1, 0, True) and gemm_operands("NN") == (0, 0, False)


@pytest.mark.parametrize("gpu", GPUS)
def test_hierarchy_levels_each_get_a_plateau_window_between_their_neighbours(gpu):
    info = info_of(gpu)
    levels = dev.cache_levels(info)
    assert [lv.name for lv in levels] == ["shared", "l1", "l2", "dram"]
    l1, l2 = levels[1].capacity_bytes, levels[2].capacity_bytes
    assert l1 == dev.L1_PER_SM[dev.parse_cc(info["compute_capability"])]  # per SM: every SM reads the set
    assert OUTSIDE * l1 < INSIDE * l2, "the l2 window is empty"
    sizes = working_set_sizes(16 << 10, 4 * l2, 3)  # what the working-set sweep measures
    named = [(ws, plateau_level(ws, levels)) for ws in sizes]
    window = {name: [ws for ws, n in named if n == name] for name in ("l1", "l2", "dram")}
    for name, sizes_on in window.items():
        assert len(sizes_on) >= 3, f"{name}: {len(sizes_on)} points on its plateau"
    assert max(window["l1"]) < min(window["l2"]) and max(window["l2"]) < min(window["dram"])
    # l1 sizes are read through L1, every larger one with __ldcg (nothing can serve it from L1).
    assert max(window["l1"]) <= l1 < min(window["l2"])


@pytest.mark.parametrize("gpu", GPUS)
def test_every_thread_works_at_every_working_set_and_launches_move_the_target_bytes(gpu):
    info = info_of(gpu)
    threads = info["multiprocessors"] * info["max_threads_per_multiprocessor"]
    target = 4 << 30
    for ws in working_set_sizes(16 << 10, 4 * info["l2_cache_bytes"], 3):
        nvec = ws // 32 * 2  # the sweep's working sets are whole float32 granules (32 B)
        ws = nvec * kernels.VECTOR_BYTES
        plan = kernels.cache_read_plan(nvec, threads, math.ceil(target / ws))
        copies, reads, kernel_passes = plan
        assert reads == copies * nvec and reads // threads >= kernels.CACHE_READS_PER_THREAD, (ws, plan)
        moved = reads * kernel_passes * kernels.VECTOR_BYTES
        assert target <= moved < 2 * target + reads * kernels.VECTOR_BYTES, (ws, moved)


@pytest.mark.parametrize("gpu", GPUS)
def test_dram_buffer_is_32x_l2_and_dram_points_are_far_outside_l2(gpu):
    info = info_of(gpu)
    l2 = info["l2_cache_bytes"]
    nbytes = dev.default_buffer_bytes(l2, int(0.9 * info["memory_total_bytes"]))
    assert nbytes >= 32 * l2 and nbytes % (1 << 20) == 0
    assert nbytes >= DRAM_FACTOR * l2
    assert dev.default_buffer_bytes(l2, 1 << 30) == 256 << 20  # capped at a quarter of free memory


def test_a_dram_window_of_back_to_back_launches_lasts_milliseconds():
    h200_read_s = 32 * (50 << 20) / 4.8e12  # one read of the default buffer: ~0.35 ms
    n = launches_per_window(h200_read_s)
    assert n * h200_read_s >= WINDOW_S >= 1e-3
    # 10 us of host launch path once per window (the lead launch hides even that) is below 1%.
    assert 10e-6 / (n * h200_read_s) < 0.01
    assert launches_per_window(1e-9) == 1000 and launches_per_window(1.0) == 1
    assert launches_per_window(0.0) == 1000


@pytest.mark.parametrize("gpu", GPUS)
def test_fp32_compute_point_lasts_tens_of_ms_in_whole_grid_steps(gpu):
    """Modelled: the point at 2048 FMAs runs at the FP32 peak, its trial on 1/64 of the buffer."""
    props, attrs, published = GPUS[gpu]
    info = info_of(gpu)
    most = dev.default_buffer_bytes(info["l2_cache_bytes"], int(0.9 * info["memory_total_bytes"])) // 4
    most -= most % kernels.granule("float32")
    step = info["multiprocessors"] * info["max_threads_per_multiprocessor"] * kernels.granule("float32")
    per_element_s = 2 * 2048 / published["float32"]
    trial = most // 64
    elements = compute_point_elements(trial, trial * per_element_s, 0.05, step, most)
    assert elements % step == 0, "a guarded partial step would run every FMA for only some threads"
    assert 0.01 <= elements * per_element_s <= 0.05
    # The old sizing took its time per FMA from the memory-bound fmas=1 point, a DRAM pass of 8 bytes
    # (read and write of a float32) per element: launches of about a millisecond.
    old_per_fma_s = 8 / published["dram"]
    old_elements = int(0.05 / (old_per_fma_s * 2048))
    assert old_elements * per_element_s < 0.005 and elements * per_element_s >= 0.01


class _PciNvml(PynvmlSpec):
    """pynvml as nvidia-ml-py 13 has it: nvmlDeviceGetHandleByPciBusId, no `_v2` name."""

    def __init__(self, handles):
        self.handles = handles

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        return self.handles[bus_id]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return self.handles[uuid]

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.handles[i]


def test_nvml_handle_is_matched_by_pci_bus_id_before_uuid_and_index():
    lib = _PciNvml({"0000:1b:00.0": "by-bus", "GPU-x": "by-uuid", 0: "index-0"})
    nvml = Nvml(lib)
    # CUDA_VISIBLE_DEVICES=1: CUDA device 0 is NVML device 1; the bus id still finds the right card.
    assert dev.match_nvml(nvml, "0000:1b:00.0", "GPU-x", 0) == ("by-bus", "pci_bus_id")
    assert dev.match_nvml(nvml, "0000:9a:00.0", "GPU-x", 0) == ("by-uuid", "uuid")
    assert dev.match_nvml(nvml, None, None, 0) == ("index-0", "index")
    assert dev.match_nvml(Nvml(lib), "0000:9a:00.0", None, 5) == (None, None)


def test_theoretical_compute_peak_is_taken_at_the_clock_of_its_own_plateau():
    rows = [("float32", "ro", 0, 1000.0), ("float32", "ro", 1024, 1900.0), ("float32", "ro", 2048, 1910.0),
            ("float64", "ro", 2048, None)]
    points = pd.DataFrame(rows, columns=["dtype", "variant", "fmas_per_element", "sm_clock_mhz"])
    plateaus = {"dram": [{"dtype": "float32", "variant": "ro", "fmas_per_element": 0}],
                "float32": [{"dtype": "float32", "variant": "ro", "fmas_per_element": k} for k in (1024, 2048)]}
    clocks = plateau_clocks(points, plateaus)
    assert clocks == {"float32": 1905.0}
    backend = CpuBackend(0)
    roof = {"compute": {"float32": 1e11}, "bandwidth": {"dram": 1e10}}
    theo = peaks_and_ratios(backend, roof, {"sm_clock_mhz": 1200.0, "mem_clock_mhz": None}, clocks)
    want = backend.theoretical(1905.0, None)["compute"]["float32"]
    assert want and theo["at_measured_clock"]["compute"]["float32"] == want
    assert theo["ratios"]["compute"]["float32"] == pytest.approx(1e11 / want)


def test_matrix_samples_record_the_gemm_layout():
    from gpuroof.matrix import matrix_sweep

    samples = matrix_sweep(CpuBackend(0), ("float64",), (64,), budget_s=0.0, min_reps=2, max_reps=2)
    assert list(samples["layout"]) == ["NN", "NN"] and samples["valid"].all()
