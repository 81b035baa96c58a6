"""`--device all`: measure every GPU of a node in turn, each in its own process pinned with
CUDA_VISIBLE_DEVICES, one run directory per GPU.

Why a process per GPU: each child sees exactly one device (its CUDA context, NVML handle, memory
pool and compiled kernels belong to that GPU alone), a crash or a hung driver call on a sick GPU
ends that child only, and the run metadata records the CUDA_VISIBLE_DEVICES it ran under. Why in
turn, not in parallel: GPUs of one node share the host's CPU cores, PCIe switches, power and
cooling; measuring them at the same time would measure that contention, not the card.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from gpuroof.errors import UsageError
from gpuroof.results import slug, utc_stamp

#: Subcommands that take --device and --out and write one run directory.
FANOUT_COMMANDS = ("measure", "bench", "run")


@dataclass(frozen=True)
class Child:
    """One GPU's process: what to run, with which environment, writing where."""

    device: int
    argv: list[str]  # full command line, interpreter first
    env_update: dict[str, str]
    out: Path


@dataclass(frozen=True)
class ChildResult:
    device: int
    out: Path
    returncode: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and (self.out / "run.json").exists()


def _without(argv: Sequence[str], option: str) -> tuple[list[str], str | None]:
    """argv without `option VALUE` / `option=VALUE`, and the (last) value it had."""
    out: list[str] = []
    value = None
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == option:
            if i + 1 >= len(argv):
                raise UsageError(f"{option}: expected a value")
            value, skip = argv[i + 1], True
        elif a.startswith(option + "="):
            value = a.split("=", 1)[1]
        else:
            out.append(a)
    return out, value


def visible_devices(parent: str | None, count: int) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value that shows a child only the parent's device i, for each i.

    When the parent already runs under a mask (Slurm's --gres, a container runtime), device i of
    the parent is the i-th entry of that mask (an index, a GPU UUID or a MIG UUID), not index i.
    """
    if parent is None or not parent.strip():
        return [str(i) for i in range(count)]
    entries = [e.strip() for e in parent.split(",") if e.strip()]
    if len(entries) < count:
        raise UsageError(f"CUDA_VISIBLE_DEVICES={parent!r} shows {len(entries)} device(s), "
                         f"but {count} were counted")
    return entries[:count]


def default_root(now: str | None = None, host: str | None = None) -> Path:
    """results/<host>-<UTC time>-all/: the per-GPU run directories of one --device all."""
    from gpuroof.results import results_root

    return results_root() / f"{slug(host or socket.gethostname())}-{now or utc_stamp()}-all"


def plan(argv: Sequence[str], count: int, env: Mapping[str, str] | None = None,
         python: str | None = None, root: str | Path | None = None) -> list[Child]:
    """The child processes for `gpuroof <argv>` with `--device all` on `count` devices (pure).

    argv is the command line after `gpuroof`, as `cli.main` got it (e.g. ["measure", "--device",
    "all", "--quick"]; global options such as --debug may come first).
    Each child gets `--device 0` (it sees one device), CUDA_VISIBLE_DEVICES naming the parent's
    device i, and `--out <root>/gpu<i>`; `root` is the parent's --out when given, else
    results/<host>-<UTC time>-all/.
    """
    if count < 1:
        raise UsageError(f"--device all: no device found (count {count})")
    args = list(argv)
    if not any(a in FANOUT_COMMANDS for a in args):
        raise UsageError(f"--device all: only for {', '.join(FANOUT_COMMANDS)} (got {' '.join(args[:2])})")
    args, device = _without(args, "--device")
    if device != "all":
        raise UsageError(f"--device {device}: fan-out is for --device all")
    args, out = _without(args, "--out")
    base = Path(root) if root is not None else (Path(out) if out else default_root())
    masks = visible_devices((env if env is not None else os.environ).get("CUDA_VISIBLE_DEVICES"), count)
    interpreter = python or sys.executable
    children = []
    for i in range(count):
        child_out = base / f"gpu{i}"
        children.append(Child(device=i, out=child_out,
                              argv=[interpreter, "-m", "gpuroof", *args, "--device", "0", "--out", str(child_out)],
                              env_update={"CUDA_VISIBLE_DEVICES": masks[i]}))
    return children


def run_children(children: Sequence[Child], env: Mapping[str, str] | None = None,
                 say: Callable[[str], None] | None = None) -> list[ChildResult]:
    """Run each child in turn (output goes to this process's terminal). A failing GPU does not stop
    the others; Ctrl-C stops the current child (it marks its run partial) and the fan-out."""
    base_env = dict(os.environ if env is None else env)
    results = []
    for c in children:
        if say:
            say(f"gpuroof: device {c.device} (CUDA_VISIBLE_DEVICES={c.env_update['CUDA_VISIBLE_DEVICES']}) "
                f"-> {c.out}")
        c.out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(c.argv, env={**base_env, **c.env_update})
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM here: let the child mark its run partial
            _stop(proc)
            raise
        if rc in (130, -signal.SIGINT, -signal.SIGTERM):
            raise KeyboardInterrupt
        results.append(ChildResult(device=c.device, out=c.out, returncode=rc))
    return results


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM (gpuroof ends like Ctrl-C: run marked partial), then SIGKILL after `grace_s`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fan_out(argv: Sequence[str], count: int, say: Callable[[str], None] | None = None) -> list[ChildResult]:
    """`gpuroof <argv>` once per device; returns each device's run directory and exit code."""
    return run_children(plan(argv, count), say=say)


def exit_code(results: Sequence[ChildResult]) -> int:
    """0 when every device produced a run, else the first failing child's code (1 at least)."""
    for r in results:
        if not r.ok:
            return r.returncode if r.returncode not in (0, None) else 1
    return 0
