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


def compile_kernels(name: str, device: int, dtypes: tuple[str, ...] | None = None,
                    jobs: int = 1) -> list[dict]:
    """Compile every sweep kernel a run of backend `name` may use into its disk cache (numba's
    cache beside the package for the CPU, CuPy's kernel cache for CUDA), so no run pays for it.
    On the CPU each dtype compiles in its own process, `jobs` at a time (numba compiles on one
    thread; nothing is measured meanwhile, so every core may work). One record per dtype:
    {"dtype", "seconds"}."""
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    from gpuroof.errors import MeasurementError, UsageError

    backend = get_backend(name, device)
    try:
        allowed = backend.dtypes()
        wanted = tuple(dtypes or allowed)
        bad = [d for d in wanted if d not in allowed]
        if bad:
            raise UsageError(f"dtype {bad[0]!r}: the {backend.name} backend has {', '.join(allowed)}")
        if jobs <= 1 or len(wanted) == 1 or backend.name != "cpu":
            out = []
            for d in wanted:
                t0 = time.perf_counter()
                backend.compile(d)
                out.append({"dtype": d, "seconds": time.perf_counter() - t0})
            return out
    finally:
        backend.close()

    def one(d: str) -> dict:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "gpuroof", "compile", "--backend", name,
                               "--device", str(device), "--dtype", d, "--jobs", "1"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise MeasurementError(f"compiling the {d} kernels failed: "
                                   f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
        return {"dtype": d, "seconds": time.perf_counter() - t0}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, wanted))
