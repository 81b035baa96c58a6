"""The front page is current: every figure README.md shows from results/ exists and belongs to a
committed run whose run.json records `quality`, and that quality is ok (a quiet machine, ceilings
that hang together). A run from before quality was recorded, or a busy one, fails here."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpuroof.results import load_run

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Markdown images and HTML <img> tags whose source is under results/.
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?(results/[^)\s>]+)>?[^)]*\)|<img\b[^>]*\bsrc=[\"'](results/[^\"']+)[\"']")


def figure_links(text: str) -> list[str]:
    return [a or b for a, b in IMAGE.findall(text)]


def run_of(figure: Path) -> Path | None:
    """The run directory a figure belongs to: the nearest directory above it holding run.json."""
    return next((d for d in figure.parents if (d / "run.json").is_file()), None)


def test_figure_links_are_found_in_markdown_and_html():
    text = ("![a](results/x/1/figures/roofline.png)\n![b]( results/x/1/figures/l.svg \"title\")\n"
            "<img src=\"results/y/2/r.png\" width=400>\n![c](docs/other.png)")
    assert figure_links(text) == ["results/x/1/figures/roofline.png", "results/x/1/figures/l.svg", "results/y/2/r.png"]


def test_readme_shows_figures_of_a_committed_run():
    assert figure_links(README.read_text(encoding="utf-8")), "README.md shows no figure from results/"


@pytest.mark.parametrize("link", figure_links(README.read_text(encoding="utf-8")))
def test_readme_figure_comes_from_a_quality_ok_run(link):
    figure = ROOT / link
    assert figure.is_file(), f"README.md shows {link}, which is not in the repository"
    run_dir = run_of(figure)
    assert run_dir is not None, f"README.md shows {link}, which is in no run directory (no run.json above it)"
    meta = load_run(run_dir).meta
    q = meta.get("quality")
    assert isinstance(q, dict), (f"README.md shows {link} from {run_dir.relative_to(ROOT)}, whose run.json has no "
                                 "`quality`: a run from before quality was recorded; make a new run on a quiet "
                                 "machine and show its figures")
    assert q.get("ok") is True, (f"README.md shows {link} from {run_dir.relative_to(ROOT)}, whose quality is not "
                                 f"ok: {'; '.join(map(str, q.get('reasons') or []))}")
