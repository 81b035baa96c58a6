"""A BLAS held below the CPU is named with what it costs: from threadpoolctl's record of OpenBLAS
(its `architecture`) and from the environment variables that override a BLAS's kernels."""
from __future__ import annotations

import pytest

from gpuroof import quality

from test_trust_boundaries import run_meta

#: threadpoolctl.threadpool_info() of numpy's OpenBLAS with OPENBLAS_CORETYPE=Haswell on AVX-512 cores.
HASWELL = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.27", "num_threads": 2,
           "architecture": "Haswell"}


def cpu_meta(isa: str = "avx512", width_bits: int = 512, blas: list | None = None, env: dict | None = None,
             matrix: float = 2.6e11) -> dict:
    """A CPU run's meta: vector kernels on `isa`, FMA pipes `width_bits` wide, float32 vector 541
    GFLOP/s and a BLAS GEMM ceiling of `matrix`."""
    m = run_meta()
    m["device"].update(kernel_shape={"isa": isa, "vector_bits": 512 if isa == "avx512" else 256},
                       vector_unit={"width_bits": width_bits, "fma_pipes": 2}, isa_level=isa)
    m["ceilings"]["compute"] = {"float32": 5.41e11, "float32-matrix": matrix}
    m["activity"] = {"other_processes_share": 0.0, "steal_share": 0.0}
    m["platform"] = {"blas": blas if blas is not None else [HASWELL], "blas_env": env or {}}
    return m


def test_openblas_on_haswell_kernels_under_avx512_is_named_with_its_cost():
    q = quality.assess(cpu_meta())
    assert len(q["warnings"]) == 1, q
    w = q["warnings"][0]
    assert "BLAS held below the CPU" in w and "openblas 0.3.27" in w and "Haswell kernels (avx2)" in w
    assert "vector kernels use avx512" in w
    assert "at most about 50% of the FMA units' peak (256-bit against 512-bit FMA)" in w
    assert "measured: float32-matrix 260.0 GFLOP/s is 0.48x the float32 vector ceiling" in w
    assert q["ok"] is True  # the GEMM ceiling is this BLAS's on this machine: a warning, not a wrong run


def test_a_blas_on_the_cpus_own_kernels_is_not_warned_about():
    assert quality.assess(cpu_meta(blas=[{**HASWELL, "architecture": "SkylakeX"}], matrix=5.2e11))["warnings"] == []
    assert quality.assess(cpu_meta(isa="avx2", width_bits=256, matrix=5.2e11))["warnings"] == []


def test_haswell_kernels_on_256_bit_pipes_cost_no_peak():
    """Zen 4: AVX-512 instructions on 256-bit FMA pipes; Haswell kernels reach the same peak."""
    w = quality.assess(cpu_meta(width_bits=256, matrix=5.2e11))["warnings"]
    assert len(w) == 1 and "the FMA pipes are 256-bit, so its peak is the same" in w[0]


@pytest.mark.parametrize("var,value,says", [
    ("OPENBLAS_CORETYPE", "Haswell", "OpenBLAS runs its Haswell kernels whatever the CPU (avx2)"),
    ("MKL_ENABLE_INSTRUCTIONS", "AVX2", "MKL is limited to AVX2 instructions (avx2)"),
    ("MKL_DEBUG_CPU_TYPE", "5", "MKL takes the code path of CPU type 5"),
])
def test_a_blas_override_in_the_environment_is_named(var, value, says):
    w = quality.assess(cpu_meta(blas=[], env={var: value}))["warnings"]
    assert len(w) == 1 and w[0].startswith(f"BLAS override: {var}={value} is set") and says in w[0], w
    if var != "MKL_DEBUG_CPU_TYPE":
        assert "at most about 50%" in w[0]


def test_platform_state_records_the_blas_overrides(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    monkeypatch.delenv("MKL_DEBUG_CPU_TYPE", raising=False)
    assert quality.platform_state()["blas_env"] == {"OPENBLAS_CORETYPE": "Haswell"}


def test_a_blas_far_under_the_vector_ceiling_is_named_even_when_nothing_explains_it():
    w = quality.assess(cpu_meta(blas=[{**HASWELL, "internal_api": "mkl", "architecture": None}]))["warnings"]
    assert len(w) == 1 and "0.48x the float32 vector FMA ceiling" in w[0]


def test_gpu_runs_have_no_blas_warning():
    m = cpu_meta()
    m["backend"] = "cuda"
    assert quality.assess(m)["warnings"] == []
