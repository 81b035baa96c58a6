"""The workload table: conv2d, gemm, lstm, mlp, stream, and the cases a bench runs from them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gpuroof.errors import UsageError
from gpuroof.workloads.base import (CONVENTIONS, SIZES, Traffic, Workload, params_dict)
from gpuroof.workloads.conv2d import CONV2D
from gpuroof.workloads.gemm import GEMM
from gpuroof.workloads.lstm import LSTM
from gpuroof.workloads.mlp import MLP
from gpuroof.workloads.stream import STREAM

WORKLOADS: dict[str, Workload] = {w.name: w for w in (CONV2D, GEMM, LSTM, MLP, STREAM)}

__all__ = ["CONVENTIONS", "SIZES", "WORKLOADS", "Case", "Workload", "get", "plan", "parse_shape"]


def get(name: str) -> Workload:
    if name not in WORKLOADS:
        raise UsageError(f"--workload {name}: unknown workload (allowed: {', '.join(WORKLOADS)})")
    return WORKLOADS[name]


@dataclass(frozen=True)
class Case:
    """One workload with one set of parameters: what a bench row is about, before any timing."""

    workload: Workload
    params: Any

    @property
    def name(self) -> str:
        return self.workload.name

    @property
    def label(self) -> str:
        return self.params.label

    @property
    def dtype(self) -> str:
        return self.params.dtype

    @property
    def impl(self) -> str:
        return self.params.impl

    @property
    def flops(self) -> int:
        return int(self.workload.flops(self.params))

    @property
    def traffic(self) -> Traffic:
        return self.workload.traffic(self.params)

    @property
    def bytes(self) -> int:
        return int(self.traffic.total)

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes

    @property
    def unit(self) -> str:
        return self.workload.unit(self.params)

    @property
    def tolerance(self) -> float:
        return float(self.workload.tolerance(self.params))

    @property
    def device_bytes(self) -> int:
        return int(self.workload.device_bytes(self.params))

    def params_dict(self) -> dict:
        return params_dict(self.params)


def parse_shape(text: str | list[str] | None) -> dict[str, Any]:
    """'m=1,n=4096,k=4096' (or a list of 'key=value') -> {'m': 1, ...}; ints where they parse."""
    if not text:
        return {}
    items = text.split(",") if isinstance(text, str) else list(text)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.strip().partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--shape {item!r}: expected key=value (e.g. m=1,n=4096,k=4096)")
        value = value.strip()
        try:
            out[key.strip()] = int(value)
        except ValueError:
            out[key.strip()] = value
    return out


def plan(names: list[str] | None, size: str, backend_name: str, cache_bytes: int = 0,
         shape: dict[str, Any] | None = None) -> list[Case]:
    """The cases to run, in table order; UsageError for unknown names, sizes or shape keys.

    `shape` replaces the size preset of ONE workload: each implementation and dtype the preset
    has on this backend runs once with the preset's first shape updated by `shape` (which may
    itself fix `impl` or `dtype`).
    """
    if size not in SIZES:
        raise UsageError(f"--size {size}: unknown size (allowed: {', '.join(SIZES)})")
    chosen = [get(n) for n in (names or list(WORKLOADS))]
    if len({w.name for w in chosen}) != len(chosen):
        raise UsageError(f"--workload {','.join(names or [])}: a workload is named twice")
    cases: list[Case] = []
    for w in chosen:
        preset = w.cases(size, backend_name, cache_bytes)
        if not preset:
            raise UsageError(f"--workload {w.name}: no cases on the {backend_name} backend")
        if not shape:
            cases += [Case(w, p) for p in preset]
            continue
        if len(chosen) > 1:
            raise UsageError("--shape needs exactly one --workload (the keys are that workload's parameters)")
        base = dataclasses.asdict(preset[0])
        variants = list(dict.fromkeys((p.impl, p.dtype) for p in preset))
        if "impl" in shape or "dtype" in shape:
            variants = [(shape.get("impl", base["impl"]), shape.get("dtype", base["dtype"]))]
        for impl, dtype in variants:
            p = w.make(**{**base, **shape, "impl": impl, "dtype": dtype})
            if impl not in w.impls(backend_name):
                raise UsageError(f"--shape impl={impl}: not available for {w.name} on the "
                                 f"{backend_name} backend (allowed: {', '.join(w.impls(backend_name))})")
            cases.append(Case(w, p))
    return cases
