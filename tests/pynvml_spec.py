"""The base of every pynvml fake in the tests: it refuses any NVML name the installed pynvml lacks.

`gpuroof.nvml.Nvml._call` reads a function with `getattr(lib, name, None)`, so a fake that answered
None (or raised AttributeError) for any name would let a misspelled function pass every test. A fake
built on `PynvmlSpec` raises `UnknownNvmlName` instead, an exception that getattr's default does
not swallow; a name pynvml has but the fake leaves out reads as absent (None), as in an older
nvidia-ml-py that lacks the call.
"""
from __future__ import annotations

import pynvml


class UnknownNvmlName(Exception):
    """A name that the installed nvidia-ml-py does not define."""


def _nvml_name(name: str) -> bool:
    return name.startswith(("nvml", "NVML"))


class PynvmlSpec:
    """Subclass it and define the calls a test needs; every other NVML name is checked against pynvml."""

    def __getattribute__(self, name: str):
        if _nvml_name(name) and not hasattr(pynvml, name):
            raise UnknownNvmlName(f"pynvml has no {name!r} (nvidia-ml-py {_version()})")
        return object.__getattribute__(self, name)

    def __getattr__(self, name: str):  # only when the fake does not define a name pynvml has
        if _nvml_name(name):
            return None
        raise AttributeError(name)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("nvidia-ml-py")
    except Exception:
        return "?"
