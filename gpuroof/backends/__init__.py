"""Backend selection: chosen once, by name or automatically (cuda when cupy sees a device, else cpu)."""
from __future__ import annotations

from gpuroof.backends.base import Backend
from gpuroof.errors import UsageError

NAMES = ("auto", "cuda", "cpu")


def cuda_available() -> bool:
    try:
        from gpuroof.backends.cuda import CudaBackend
    except ImportError:
        return False
    return CudaBackend.available()


def resolve_name(name: str) -> str:
    """The concrete backend that `name` means on this machine."""
    if name not in NAMES:
        raise UsageError(f"--backend {name}: unknown backend (allowed: {', '.join(NAMES)})")
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cuda" and not cuda_available():
        raise UsageError("--backend cuda: no CUDA device is usable here (cupy missing or no GPU); "
                         "use --backend cpu or auto")
    return name


def device_count(name: str) -> int:
    if resolve_name(name) == "cpu":
        return 1
    from gpuroof.backends.cuda import CudaBackend
    return CudaBackend.device_count()


def get_backend(name: str = "auto", device: int = 0) -> Backend:
    concrete = resolve_name(name)
    if concrete == "cuda":
        from gpuroof.backends.cuda import CudaBackend
        return CudaBackend(device)
    from gpuroof.backends.cpu import CpuBackend
    return CpuBackend(device)


def check_index(name: str, device: int) -> None:
    """UsageError naming the indices this machine has when `device` is not one of them (for
    commands that take one device index, never 'all')."""
    n = device_count(name)
    if not 0 <= device < n:
        raise UsageError(f"--device {device}: this machine has {n} {resolve_name(name)} device(s) "
                         f"(allowed: {'0' if n == 1 else f'0..{n - 1}'})")
