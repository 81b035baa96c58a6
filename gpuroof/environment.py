"""What a reader needs to trust a comparison beyond library versions: the source tree and the NVIDIA stack."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


def _run(argv: list[str], cwd: Path | None = None) -> str | None:
    """stdout of a short command, or None when it is absent or fails (a run never fails for this)."""
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def git_state(cwd: Path | None = None) -> dict:
    """{'git_commit': sha, 'git_dirty': bool} of the working directory's repository; {} outside one.
    The measured numbers belong to the code that produced them: a kernel edited and not committed
    is said so (dirty)."""
    if shutil.which("git") is None:
        return {}
    sha = _run(["git", "rev-parse", "HEAD"], cwd)
    if not sha:
        return {}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd)
    return {"git_commit": sha, "git_dirty": bool(status) if status is not None else None}


def nvidia_stack() -> dict:
    """{'nvidia_driver', 'cuda_driver', 'cuda_toolkit'}: what is there (absent keys on a machine without them)."""
    from gpuroof.nvml import Nvml

    out: dict = {}
    nv = Nvml()
    if nv.available:
        out["nvidia_driver"] = nv.driver_version()
        v = nv._call("nvmlSystemGetCudaDriverVersion_v2") or nv._call("nvmlSystemGetCudaDriverVersion")
        if isinstance(v, int) and v > 0:
            out["cuda_driver"] = f"{v // 1000}.{v % 1000 // 10}"
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc:
        m = re.search(r"release (\d+\.\d+)", _run([nvcc, "--version"]) or "")
        if m:
            out["cuda_toolkit"] = m.group(1)
    return {k: v for k, v in out.items() if v}


def environment() -> dict:
    """The fields run.json's `versions` gains beside the Python packages."""
    return {**git_state(), **nvidia_stack()}
