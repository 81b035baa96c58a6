"""One output contract for every command: with --json, stdout carries exactly one JSON document and
everything else (tables, progress, notes) goes to stderr; where results live is one rule."""
from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Iterator

from gpuroof.results import dumps

#: Where run directories go when no --out is given: --results-dir, else this variable, else ./results.
RESULTS_ENV = "GPUROOF_RESULTS"
DEFAULT_RESULTS = "results"

_document: dict[str, Any] = {"stream": None, "written": False}


def results_root() -> Path:
    """The one rule for the CLI, the API and the pytest plugin: $GPUROOF_RESULTS, else ./results."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


@contextmanager
def results_dir(path: str | None) -> Iterator[Path]:
    """Within the block, results_root() is `path` (when given); child processes (one per GPU) inherit it."""
    if not path:
        yield results_root()
        return
    old = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(path)
    try:
        yield results_root()
    finally:
        if old is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = old


class _Tee(io.TextIOBase):
    """What a command prints in JSON mode: passed on to stderr, and kept."""

    def __init__(self) -> None:
        self.text: list[str] = []

    def write(self, s: str) -> int:
        self.text.append(s)
        return sys.stderr.write(s)

    def flush(self) -> None:
        sys.stderr.flush()


@contextmanager
def json_mode(on: bool) -> Iterator[_Tee | None]:
    """With `on`, print() goes to stderr for the whole command; emit_json() alone reaches stdout."""
    if not on:
        yield None
        return
    tee = _Tee()
    _document.update(stream=sys.stdout, written=False)
    try:
        with redirect_stdout(tee):
            yield tee
    finally:
        _document["stream"] = None


def emitted() -> bool:
    return bool(_document["written"])


def emit_json(obj: Any) -> None:
    """Print the command's one JSON document (to the real stdout in JSON mode)."""
    stream = _document["stream"] or sys.stdout
    if _document["stream"] is not None and _document["written"]:
        raise RuntimeError("a command emitted two JSON documents")
    stream.write(dumps(obj) + "\n")
    stream.flush()
    _document["written"] = True
