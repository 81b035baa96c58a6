"""The profile's tables, summary, files and figure from op records alone (no torch): an integer op
first, a bfloat16 GEMM with no ceiling, views; what pandas 2 and pandas 3 both must write."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from gpuroof.profile import ProfileResult
from gpuroof.profiling.recording import OpRecord
from gpuroof.profiling.tables import COLUMNS, _aggregate, _model_row, _table, _totals
from gpuroof.roofline import Roofline


def _rec(op, module, flops, nbytes, dtype, unit, view=False):
    return OpRecord(op=op, module=module, phase="forward", flops=flops, bytes=nbytes, dtype=dtype, unit=unit,
                    view=view, input_shapes="")


def test_a_profile_with_integer_ops_first_and_an_unplaced_gemm_writes_and_summarises(cpu_run, tmp_path):
    n = 64
    recs = [_rec("aten::add", "M.emb", 0, 3 * 8 * n, "int64", "float32"),
            _rec("aten::embedding", "M.emb", 0, 4096, "float32", "float32"),
            _rec("aten::t", "M.lin", 0, 0, "float32", "float32", view=True),
            _rec("aten::addmm", "M.lin", 2 * n ** 3, 3 * n * n * 4, "float32", "float32-matrix"),
            _rec("aten::mm", "M.bf", 2 * n ** 3, 3 * n * n * 2, "bfloat16", "bfloat16-matrix"),
            _rec("aten::detach", "M", 0, 0, "float32", "float32", view=True)]
    times = np.array([[1e-5, 2e-5, 1e-6, 3e-5, 4e-5, np.nan], [1.1e-5, 2.2e-5, 1e-6, 3.1e-5, 4e-5, np.nan]])
    roof = Roofline.from_dict(cpu_run.meta["ceilings"])
    if "bfloat16-matrix" in roof.compute or "bfloat16" in roof.compute:
        pytest.skip("this run has a bfloat16 ceiling")
    ops = _table(recs, times, roof)
    totals = _totals(ops, [1.2e-4, 1.3e-4], [1.5e-4, 1.6e-4], np.nansum(times, axis=1).tolist(), 4 * n ** 3,
                     False, "none")
    totals["quality"] = {"ok": True, "reasons": [], "activity": None}
    table = pd.concat([ops, _aggregate(ops, "op", "op_type"), _aggregate(ops, "module", "module"),
                       _model_row(ops, totals)], ignore_index=True).reindex(columns=COLUMNS)
    res = ProfileResult("records", table, totals, {"type": "cpu", "name": cpu_run.meta["device"]["name"]},
                        cpu_run.meta["ceilings"], str(cpu_run.path), cpu_run.meta)
    model = res.rows("model").iloc[0]
    assert model["dtype"] == "int64,float32,bfloat16" and model["bound"] in ("memory", "compute")
    bf = res.rows("module").set_index("name").loc["M.bf"]
    assert not isinstance(bf["bound"], str) and math.isnan(bf["efficiency"])
    placed = ops[ops["predicted_time_s"].notna()]
    assert totals["headroom"] == pytest.approx(placed["time_s"].sum() / placed["predicted_time_s"].sum())
    assert totals["not_placed"]["ops"] == 1 and "bfloat16-matrix" in totals["not_placed"]["why"][0]
    files = res.write(tmp_path)
    assert files["png"].stat().st_size > 20_000
    doc = json.loads(files["json"].read_text())
    assert doc["totals"]["flops"] == 4 * n ** 3 and doc["quality"]["ok"] is True
    assert len(pd.read_csv(files["csv"])) == len(table)
