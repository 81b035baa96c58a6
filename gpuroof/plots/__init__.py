"""Figures of a run, one module per figure (roofline, lost time, sweep, telemetry, hierarchy), and `gpuroof plot`."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable

from gpuroof.defaults import FIGURES
from gpuroof.errors import UsageError
from gpuroof.plots.common import (FORMATS, PNG_DPI, RC, Drawn, as_run, check_formats, medians, optional_table,
                                  render, samples, unit_colour, level_colour, workload_points)
from gpuroof.plots.hierarchy import cache_sizes, hierarchy_figure, hierarchy_samples
from gpuroof.plots.labels import LabelPlacer, label_box
from gpuroof.plots.losttime import advice, lost_time, losttime_figure
from gpuroof.plots.roofline import (MAX_TEXT_LABELS, Roof, draw_roofline, roof_segments,
                                    roofline_figure, short_labels)
from gpuroof.plots.sweep import sweep_figure
from gpuroof.plots.telemetry import telemetry_figure
from gpuroof.results import Run, atomic_write_bytes

WHAT = (*FIGURES, "all")

__all__ = ["FORMATS", "PNG_DPI", "RC", "FIGURES", "WHAT", "Drawn", "LabelPlacer", "MAX_TEXT_LABELS", "Roof", "advice",
           "as_run", "atomic_write_bytes", "cache_sizes", "check_formats", "draw_figures", "draw_roofline",
           "hierarchy_figure", "hierarchy_samples", "label_box", "level_colour", "lost_time", "losttime_figure",
           "make_figures", "medians", "optional_table", "render", "roof_segments",
           "roofline_figure", "samples", "short_labels", "sweep_figure", "telemetry_figure", "unit_colour",
           "workload_points"]

BUILDERS = {"roofline": roofline_figure, "losttime": losttime_figure, "sweep": sweep_figure,
            "telemetry": telemetry_figure, "hierarchy": hierarchy_figure}


def draw_figures(run: Run | str | Path, what: str = "all") -> tuple[dict[str, Drawn], dict[str, str]]:
    """The figures asked for, and for `what="all"` the reason each optional one was skipped."""
    if what not in WHAT:
        raise UsageError(f"--what {what}: not a figure (allowed: {', '.join(WHAT)})")
    run = as_run(run)
    has_points = (run.path / "points.csv").exists()
    if has_points:
        samples(run)  # a run with no valid point is refused before anything is drawn
    elif workload_points(run) is None:
        raise UsageError(f"{run.path}: run has neither points.csv nor workloads.csv: nothing to plot")
    drawn: dict[str, Drawn] = {}
    skipped: dict[str, str] = {}
    optional = ("losttime", "telemetry", "hierarchy") if has_points else ("losttime", "sweep", "telemetry", "hierarchy")
    for name in (FIGURES if what == "all" else (what,)):
        if what == "all" and name in optional:  # a bench-only run has workloads and no sweep
            try:
                drawn[name] = BUILDERS[name](run)
            except UsageError as e:
                skipped[name] = str(e)
        else:
            drawn[name] = BUILDERS[name](run)
    return drawn, skipped


def make_figures(run: Run | str | Path, formats: Iterable[str] = ("png",), out_dir: str | Path | None = None,
                 what: str = "all") -> dict[str, list[Path]]:
    """Draw and write the figures: {name: [path per format]}; files go to `out_dir` (default
    <run>/figures/), named <figure>.<format>, each written atomically."""
    formats = check_formats([formats] if isinstance(formats, str) else formats)
    run = as_run(run)
    out = Path(out_dir) if out_dir else run.path / "figures"
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise UsageError(f"--out {out}: not a writable directory ({e.strerror or e})") from None
    return _write(run, formats, out, what)[0]


def _write(run: Run, formats: tuple[str, ...], out: Path, what: str) -> tuple[dict[str, list[Path]], dict[str, str]]:
    drawn, skipped = draw_figures(run, what)
    written: dict[str, list[Path]] = {}
    for name, d in drawn.items():
        written[name] = []
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            atomic_write_bytes(path, render(d, fmt))
            written[name].append(path)
    return written, skipped
