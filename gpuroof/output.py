"""One output contract for every command: with --json, stdout carries exactly one JSON document and
everything else (tables, progress, notes) goes to stderr."""
from __future__ import annotations

import io
import sys
from contextlib import contextmanager, redirect_stdout
from typing import Any, Iterator

_document: dict[str, Any] = {"stream": None, "written": False}


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
    from gpuroof.results import dumps  # pandas and pydantic: loaded by the command that prints

    stream.write(dumps(obj) + "\n")
    stream.flush()
    _document["written"] = True
