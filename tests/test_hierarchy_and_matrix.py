"""Cache-level and matrix-unit ceilings: the CPU end to end, plateau naming, GEMM checks, bad input."""
import numpy as np
import pandas as pd
import pytest

from gpuroof.backends.cpu import CpuBackend
from gpuroof.backends.cpu.blas import cpu_gemm
from gpuroof.cli import main
from gpuroof.errors import UsageError
from gpuroof.hierarchy import (Level, level_ceilings, parse_levels, plateau_level, working_set_sizes)
from gpuroof.matrix import matrix_ceilings
from gpuroof.sweep import undisturbed

CPU_LEVELS = [Level("l1", 96 << 10), Level("l2", 2 << 20), Level("l3", 32 << 20), Level("dram", None)]


def test_cpu_run_finds_l1_above_l2_above_l3_above_dram(cpu_run):
    bw = cpu_run.meta["ceilings"]["bandwidth"]
    assert list(bw) == ["l1", "l2", "l3", "dram"]
    assert bw["l1"] > bw["l2"] > bw["l3"] > bw["dram"]
    h = pd.read_csv(cpu_run.run_dir / "hierarchy.csv")
    assert h["valid"].all()
    # the smallest set is 16 KiB rounded down to whole granules (384 float32 on 2 AVX2 threads)
    granule_bytes = 4 * CpuBackend().granule("float32")
    assert (16 << 10) - granule_bytes < h["working_set_bytes"].min() <= 16 << 10
    assert h["working_set_bytes"].max() > 4 * cpu_run.meta["device"]["llc_bytes"] - granule_bytes
    assert {t["from"] for t in cpu_run.meta["hierarchy"]["transitions"]} == {"l1", "l2", "l3"}


def test_cpu_run_has_validated_matrix_ceilings(cpu_run):
    compute = cpu_run.meta["ceilings"]["compute"]
    m = pd.read_csv(cpu_run.run_dir / "matrix.csv")
    assert m["valid"].all() and set(m["unit"]) == {"float32-matrix", "float64-matrix"}
    assert compute["float32-matrix"] > compute["float64-matrix"] > 0
    assert (m["flops"] == 2 * m["n"] ** 3).all()


def test_every_roof_names_the_kernel_and_shapes_it_came_from(cpu_run):
    """run.json's ceiling_sources: per roof, the kernel, its loop shapes and the points, working sets
    or GEMM sizes that set it, read back against the run's own tables."""
    meta = cpu_run.meta
    roofs = {**meta["ceilings"]["bandwidth"], **meta["ceilings"]["compute"]}
    src = meta["ceiling_sources"]
    assert set(src) == set(roofs)
    tuned = {t["level"]: t["chosen"] for t in meta["device"]["kernel_shape"]["tuned"] if t["loop"] == "ro"}
    h = pd.read_csv(cpu_run.run_dir / "hierarchy.csv")
    for level in ("l1", "l2", "l3"):
        assert src[level]["kernel"] == "working-set read"
        assert src[level]["shapes"] == [tuned[level]]  # the shape the tuner chose there
        assert set(src[level]["working_sets_bytes"]) <= set(h["working_set_bytes"])
    points = pd.read_csv(cpu_run.run_dir / "points.csv")
    for name in ("dram", "float32", "float64"):
        assert src[name]["kernel"] == "sweep" and src[name]["points"]
        for p in src[name]["points"]:
            dtype, variant, fmas, _ = p.split()
            assert ((points["dtype"] == dtype) & (points["variant"] == variant)
                    & (points["fmas_per_element"] == int(fmas))).any(), p
    assert src["dram"]["shapes"] and "default" not in src["dram"]["shapes"]  # DRAM ran in tuned shapes
    m = pd.read_csv(cpu_run.run_dir / "matrix.csv")
    for unit in ("float32-matrix", "float64-matrix"):
        assert src[unit]["kernel"] == "library GEMM"
        assert set(src[unit]["sizes"]) <= set(m.loc[m["unit"] == unit, "n"])
        on = undisturbed(m[(m["unit"] == unit) & m["valid"]])[0]  # the sizes matrix_ceilings reads
        best = on.groupby("n")["flops"].first() / on.groupby("n")["time_s"].median()
        assert int(best.idxmax()) in src[unit]["sizes"]


def test_working_set_sizes_cover_the_range_geometrically():
    sizes = working_set_sizes(16 << 10, 128 << 20, 2)
    assert sizes[0] == 16 << 10 and sizes[-1] >= 128 << 20
    ratios = np.diff(np.log2(sizes))
    assert np.allclose(ratios, 0.5, atol=0.01)


@pytest.mark.parametrize("ws,level", [(16 << 10, "l1"), (48 << 10, "l1"), (96 << 10, None),
                                      (256 << 10, "l2"), (1 << 20, "l2"), (3 << 20, None),
                                      (8 << 20, "l3"), (40 << 20, None), (64 << 20, "dram")])
def test_plateau_level_names_sets_well_inside_a_level(ws, level):
    assert plateau_level(ws, CPU_LEVELS) == level


def test_level_ceilings_are_plateau_medians_with_transitions():
    pts = pd.DataFrame({"working_set_bytes": [16e3, 32e3, 300e3, 600e3, 8e6, 16e6, 70e6, 128e6],
                        "bandwidth_Bps": [500, 520, 300, 310, 150, 140, 40, 42],
                        "valid": True})
    pts["level"] = [plateau_level(int(w), CPU_LEVELS) for w in pts["working_set_bytes"]]
    bw, transitions = level_ceilings(pts, CPU_LEVELS)
    assert bw == {"l1": 510, "l2": 305, "l3": 145, "dram": 41}
    assert [t["from"] for t in transitions] == ["l1", "l2", "l3"]
    assert transitions[0]["working_set_bytes"] == 300e3


def test_parse_levels_checks_names_and_the_device():
    have = ("l1", "l2", "l3", "dram")
    assert parse_levels(None, have) == have
    assert parse_levels("dram,l1", have) == ("l1", "dram")
    with pytest.raises(UsageError, match="unknown level l9"):
        parse_levels("l1,l9", have)
    with pytest.raises(UsageError, match="no shared level"):
        parse_levels("shared", have)


def test_cpu_gemm_is_checked_against_float64():
    g = cpu_gemm("float32", 128)
    g.run()
    assert g.check() < 1e-5
    assert g.flops == 2 * 128 ** 3 and g.bytes == 3 * 128 * 128 * 4


def test_matrix_ceiling_is_the_p90_of_the_repetitions_over_its_plateau():
    """As every other ceiling: a GEMM of a plateau size timed again at its own median sits under it."""
    from gpuroof.sweep import CEILING_PERCENTILE

    rates = {512: [1.0e11, 1.3e11, 1.19e11, 1.25e11, 1.2e11], 1024: [1.2e11, 1.25e11, 1.22e11, 1.21e11, 1.24e11],
             256: [0.5e11] * 5}  # 256 is off the plateau: 0.5 < 0.97 x the best median
    df = pd.DataFrame([{"unit": "float32-matrix", "n": n, "flops": 2 * n ** 3, "time_s": 2 * n ** 3 / r,
                        "valid": True} for n, rs in rates.items() for r in rs])
    want = float(np.percentile(rates[512] + rates[1024], CEILING_PERCENTILE))
    got = matrix_ceilings(df)["float32-matrix"]
    assert got == pytest.approx(want) and got > max(np.median(v) for v in rates.values())


def test_matrix_ceiling_ignores_invalid_sizes():
    df = pd.DataFrame({"unit": ["float32-matrix"] * 4, "n": [64, 64, 128, 128], "time_s": [1e-3, 1e-3, 1e-4, 1e-4],
                       "flops": [2 * 64 ** 3] * 2 + [2 * 128 ** 3] * 2, "valid": [True, True, False, False]})
    assert matrix_ceilings(df) == {"float32-matrix": pytest.approx(2 * 64 ** 3 / 1e-3)}


def test_cpu_cache_levels_count_per_core_caches_once_per_thread():
    b = CpuBackend()
    levels = {lv.name: lv for lv in b.cache_levels()}
    assert set(levels) >= {"l1", "dram"}
    l1 = next(c for c in b.caches if c["level"] == 1)
    if l1["shared_by_cpus"] == 1:
        assert levels["l1"].capacity_bytes == l1["size_bytes"] * b.threads


def _bad(args, capsys, match):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_levels_bad_input(capsys):
    _bad(["measure", "--backend", "cpu", "--levels", "l1,l7"], capsys, "unknown level l7")
    _bad(["measure", "--backend", "cpu", "--levels", "shared"], capsys, "no shared level")


def test_matrix_plateau_is_reached_when_the_largest_size_gains_little():
    from gpuroof.matrix import matrix_plateaus

    def rows(unit, rates):
        return [{"unit": unit, "n": n, "time_s": 2 * n ** 3 / r, "flops": 2 * n ** 3, "valid": True}
                for n, r in rates]

    df = pd.DataFrame(rows("float32-matrix", [(512, 100e9), (1024, 200e9), (2048, 201e9)])
                      + rows("float64-matrix", [(512, 50e9), (1024, 60e9), (2048, 90e9)]))
    assert matrix_plateaus(df) == {"float32-matrix": True, "float64-matrix": False}


class CUBLASError(Exception):
    """Stands in for cupy_backends' CUBLASError (its library is not loadable without a GPU stack)."""


class RefusingBackend(CpuBackend):
    """The CPU backend whose library refuses one unit, as cuBLAS refuses a layout it lacks: at the
    first enqueue (`where="run"`) or when the GEMM is prepared (`where="prepare"`)."""

    def __init__(self, refused: str, where: str):
        super().__init__(0)
        self.refused, self.where = refused, where

    def gemm(self, unit, n):
        if unit != self.refused:
            return super().gemm(unit, n)
        if self.where == "prepare":
            raise CUBLASError("cuBLAS Error: CUBLAS_STATUS_NOT_SUPPORTED")
        g = super().gemm(unit, n)

        def run():
            raise CUBLASError("cuBLAS Error: CUBLAS_STATUS_NOT_SUPPORTED")
        return type(g)(**{**g.__dict__, "run": run})


@pytest.mark.parametrize("where", ["prepare", "run"])
def test_a_unit_the_library_refuses_is_recorded_invalid_and_the_other_units_still_run(where, tmp_path):
    from gpuroof.matrix import failed_units, matrix_sweep
    from gpuroof.results import check_table, write_run

    backend = RefusingBackend("float32", where)
    samples = matrix_sweep(backend, ("float32", "float64"), (64, 128), budget_s=0.0, min_reps=2, max_reps=2)
    refused = samples[samples["unit"] == "float32-matrix"]
    assert len(refused) == 1 and not refused["valid"].any() and refused["time_s"].isna().all()
    assert failed_units(samples) == {"float32-matrix": "CUBLASError: cuBLAS Error: CUBLAS_STATUS_NOT_SUPPORTED"}
    ok = samples[samples["unit"] == "float64-matrix"]
    assert ok["valid"].all() and sorted(set(ok["n"])) == [64, 128]
    assert set(matrix_ceilings(samples)) == {"float64-matrix"}
    # The run directory takes the failed row (no time) and reads it back through the schema.
    write_run(tmp_path, {"schema_version": 1}, {"matrix": samples})
    back = check_table(pd.read_csv(tmp_path / "matrix.csv"), "matrix", tmp_path / "matrix.csv")
    assert failed_units(back) == failed_units(samples)
