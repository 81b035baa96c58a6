"""`gpuroof show`'s summary of a run holds whatever a finished run may hold."""
import copy
import json
from pathlib import Path

from gpuroof.commands.show import summary_table

RUN = Path(__file__).resolve().parent.parent / "results/amd-epyc-family-25-model-1-avx2-2-cores/20261203T103839Z"


def test_a_run_whose_fit_had_no_point_is_summarised_not_crashed():
    """A busy quick run can leave no DRAM-bound valid point to fit: fit has 0 points and null deviations."""
    meta = json.loads((RUN / "run.json").read_text())
    assert meta["fit"]["points"] > 0 and f"over {meta['fit']['points']} points" in summary_table(meta)
    empty = copy.deepcopy(meta)
    empty["fit"].update(points=0, median_abs_deviation=None, max_abs_deviation=None, worst_point=None)
    text = summary_table(empty)
    assert "fit to min(P, B*I): no point to fit" in text and "median |dev|" not in text
