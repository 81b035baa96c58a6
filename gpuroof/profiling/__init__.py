"""Parts of `gpuroof profile`: FLOP formulas, recording a model's ops, matching them to the profiler's
events, the placed tables and the figure (gpuroof.profile runs them and holds the command)."""
from __future__ import annotations

from typing import Any

from gpuroof.errors import UsageError


def need_torch() -> Any:
    """torch, or the one line that says how to install it (it is an optional extra, gpuroof[torch])."""
    try:
        import torch
    except ImportError:
        raise UsageError("profiling needs PyTorch: pip install 'gpuroof[torch]'") from None
    return torch
