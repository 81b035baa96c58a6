"""Ground truth on a GPU in one command: gpuroof's run, its GPU tests, profiles and three peers, one folder.

    python experiments/gpu_truth.py [--out DIR] [--peers DIR] [--archive FILE] [--only A,B] [--skip A,B]
                                    [--deadline S] [--build-dir DIR] [--list]
    python experiments/gpu_truth.py --dry-run --out DIR [--peers DIR] [--dry-run-ceilings RUN_DIR]
    python experiments/gpu_truth.py matmul --device cuda --out FILE [--sizes 2048,4096] [--budget-s S]

On a machine with an NVIDIA GPU and no network it writes, under --out (default $OUT when set), each
step with its own time budget and log file (logs/<step>.log), and summary.json (steps, status, rc,
seconds, files; rewritten through a temporary file after every step):

    env/            nvidia-smi -q, `gpuroof info --json`, pip list
    run/            `gpuroof run --backend cuda` (full): run.json, CSVs, figures, report.html
    peers/          mixbench.txt, babelstream.txt, nvbandwidth.txt (raw) and each parsed to .json
    torch_matmul.json   torch.matmul at float64, float32, tf32, float16, bfloat16, int8 (torch._int_mm)
    pytest-gpu.xml  `pytest -m gpu -q` as JUnit XML
    profile/        experiments/profile_decoder.py (GPT-2 prefill and decode, BERT) and ResNet-50 (b32)
    benchmarks.md, table.json   gpuroof vs each peer vs theoretical (experiments/gpu_truth_table.py)

The steps run in that order after the three peers are built side by side (before anything is
measured, so no compiler shares the host with a timed window). A step that fails or runs past its
budget (its process group is ended) is recorded and the others still run; one past the overall
deadline (--deadline, 470 s) is skipped and says so; the table is always made. Exit 0 when every
step succeeded or was skipped, 1 when one failed, 2 on bad input (one line on stderr).

The peers' sources are never in this repository and nothing here downloads them: --peers DIR
(default .peers beside this tree) holds the trees fetched on the development machine, copied at call
time: mixbench/ (github:ekondis/mixbench), BabelStream/ (github:UoB-HPC/BabelStream), nvbandwidth/
(github:NVIDIA/nvbandwidth), each with <name>.commit beside it; optionally boost/*.deb (Boost
program_options for nvbandwidth, used when the system has none) and dev/include/nvml.h (used when the
CUDA toolkit has none). Each build copies its tree into --build-dir and runs the peer's own CMake.

Prepare on the development machine (docs/gpu_truth.md says the same, with why):

    mkdir -p .peers/boost .peers/dev/include            # /.peers/ and /.whl/ are in .gitignore
    M=/work/.mirror   # after the fetch tool brought github:ekondis/mixbench, UoB-HPC/BabelStream, NVIDIA/nvbandwidth
    git --git-dir $M/ekondis+mixbench/repo archive --prefix=mixbench/ HEAD LICENSE README.md include mixbench-cuda | tar -x -C .peers
    git --git-dir $M/UoB-HPC+BabelStream/repo archive --prefix=BabelStream/ HEAD LICENSE README.md CMakeLists.txt cmake \
        src/main.cpp src/Stream.h src/StreamModels.h src/Unit.h src/benchmark.h src/dpl_shim.h src/cuda | tar -x -C .peers
    git --git-dir $M/NVIDIA+nvbandwidth/repo archive --prefix=nvbandwidth/ HEAD | tar -x -C .peers
    for r in ekondis+mixbench:mixbench UoB-HPC+BabelStream:BabelStream NVIDIA+nvbandwidth:nvbandwidth; do
        git --git-dir $M/${r%%:*}/repo rev-parse HEAD > .peers/${r##*:}.commit; done
    (cd .peers/boost && apt-get download libboost-program-options1.74-dev libboost1.74-dev)
    python3 -m pip download --no-deps --only-binary=:all: -d /tmp/nvml nvidia-nvml-dev==13.4.92 && \
        unzip -o -j /tmp/nvml/nvidia_nvml_dev-*.whl 'nvidia/cu13/include/nvml.h' -d .peers/dev/include
    # gpuroof's dependencies the device image lacks (KINDS.md's list has no pydantic, platformdirs, adjustText):
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
        typing-extensions==4.16.0 platformdirs==4.14.9 adjustText==1.4.0

The device call (the run tool; carry [".peers", ".whl"], timeout_s 600):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 experiments/gpu_truth.py --out /tmp/gpu-truth \
      --peers .peers --archive $OUT/gpu-truth.tar.gz; rc=$?; cp /tmp/gpu-truth/summary.json /tmp/gpu-truth/benchmarks.md $OUT/; exit $rc

(The device returns at most 8 files from $OUT, hence one archive beside the summary and the table.)

--dry-run is the same script on a machine without a GPU (tests/test_gpu_truth.py runs it in CI):
gpuroof's command lines are parsed by gpuroof's own parser and profile_decoder's flags checked
against its --help instead of measuring; the run's stand-in is --dry-run-ceilings (default: the
newest complete run under results/), copied to run/; the peers' outputs are the samples from their
own repositories' documentation (tests/data/peers/), parsed as real ones are; the builds run the
peers' CMake with nvcc where it is present (objects only where the driver's libcuda/libnvidia-ml
are not there to link); torch.matmul, a ResNet-50 profile (64x64 pixels), the `gpu` tests' JUnit
file (every one skips) and the table run for real on the CPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, NamedTuple
from xml.etree import ElementTree

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_truth_table import atomic_write  # noqa: E402 - the table maker's, one writer for both
ROOT = HERE.parent
SAMPLES = ROOT / "tests" / "data" / "peers"

#: Seconds each step may take on an H100/H200 (the deadline may cut a later one shorter).
BUDGETS = {"env": 30, "build_mixbench": 120, "build_babelstream": 120, "build_nvbandwidth": 120,
           "gpuroof_run": 270, "mixbench": 60, "babelstream": 60, "nvbandwidth": 60, "torch_matmul": 90,
           "pytest_gpu": 150, "profile_resnet50": 90, "profile_decoder": 150, "table": 60}
#: The whole call stays under 8 minutes; the table keeps this much of it.
DEADLINE_S = 470
TABLE_RESERVE_S = 20
#: A step is not started with less than this left before the deadline.
MIN_STEP_S = 10

BUILDS = ("build_mixbench", "build_babelstream", "build_nvbandwidth")
#: Each peer: its folder under --peers, the files that must be there, and the sample that stands in
#: for its output in a dry run (tests/data/peers/README.md names their sources).
PEERS = {
    "mixbench": {"dir": "mixbench", "needs": ("mixbench-cuda/CMakeLists.txt", "mixbench-cuda/mix_kernels_cuda.cu",
                                              "mixbench-cuda/main-cuda.cpp"),
                 "sample": "mixbench-cuda-rtx2070.txt"},
    "babelstream": {"dir": "BabelStream", "needs": ("CMakeLists.txt", "src/main.cpp", "src/cuda/CUDAStream.cu",
                                                    "src/cuda/model.cmake"),
                    "sample": "babelstream-3.3-cuda-titanxp.txt"},
    "nvbandwidth": {"dir": "nvbandwidth", "needs": ("CMakeLists.txt", "nvbandwidth.cpp", "kernels.cu"),
                    "sample": "nvbandwidth-readme-device-to-device-memcpy-write-ce.txt"},
}
#: BabelStream's arrays: 2^27 doubles (1 GiB each, 3 GiB in all), 20x the 50-60 MB L2 of an H100 or
#: H200, so every kernel streams DRAM (its default 2^25 would be 5x).
BABEL_ARGS = ("--arraysize", str(1 << 27), "--numtimes", "100")
#: nvbandwidth: the device-local copy (gpuroof's DRAM peer) and the host links for context; its
#: default 512 MiB buffers are 10x L2.
NVB_ARGS = ("-t", "device_local_copy", "host_to_device_memcpy_ce", "device_to_host_memcpy_ce")
RESNET_BATCH = 32
#: The dtypes gpuroof measures as matrix units (and float32 without tf32: cuBLAS SGEMM on the FMA units).
MATMUL_DTYPES = ("float64", "float32", "tf32", "float16", "bfloat16", "int8")
MATMUL_SIZES = (2048, 4096, 8192, 16384)


class UsageError(Exception):
    """Bad input: one line on stderr, exit 2."""


class StepFailed(Exception):
    """A command of a step failed: the step is recorded as failed with this reason."""


class StepSkipped(Exception):
    """A step that cannot run here: recorded as skipped with this reason."""


# ---------------------------------------------------------------------------------------------
# models for `gpuroof profile --model experiments/gpu_truth.py:resnet50`
# ---------------------------------------------------------------------------------------------

def resnet50(batch: int = 1, image: int = 224) -> tuple[Any, Any]:
    """ResNet-50 with random weights (nothing downloaded): torchvision's where it is installed, else
    transformers' ResNetConfig, whose defaults are ResNet-50's (bottleneck stages of 3, 4, 6, 3
    blocks, widths 256 to 2048) with a 1000-class head. Inputs: `batch` images of image x image."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(batch, 3, image, image)
    try:
        import torchvision

        return torchvision.models.resnet50(weights=None).eval(), x
    except ImportError:
        from transformers import ResNetConfig, ResNetForImageClassification

        config = ResNetConfig(num_labels=1000)
        return ResNetForImageClassification(config).eval(), {"pixel_values": x}


def resnet50_small(batch: int = 1) -> tuple[Any, Any]:
    """The same network on 64x64 images: the dry run's profile, a second on two CPU cores."""
    return resnet50(batch, image=64)


# ---------------------------------------------------------------------------------------------
# the torch.matmul step
# ---------------------------------------------------------------------------------------------

def matmul_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gpu_truth.py matmul",
                                description="torch.matmul at every dtype gpuroof measures, a few sizes each")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--sizes", default=",".join(map(str, MATMUL_SIZES)), help="square sizes, comma-separated")
    p.add_argument("--budget-s", type=float, default=0.3, help="timed seconds per dtype and size")
    p.add_argument("--dtypes", default=",".join(MATMUL_DTYPES))
    a = p.parse_args(argv)
    try:
        sizes = [int(s) for s in a.sizes.split(",")]
        if not sizes or min(sizes) < 16:
            raise ValueError
    except ValueError:
        print(f"gpu_truth.py matmul: --sizes {a.sizes!r}: sizes of at least 16, comma-separated", file=sys.stderr)
        return 2
    dtypes = a.dtypes.split(",")
    bad = [d for d in dtypes if d not in MATMUL_DTYPES]
    if bad or not a.budget_s > 0:
        print(f"gpu_truth.py matmul: --dtypes {','.join(bad)} / --budget-s {a.budget_s}: allowed dtypes "
              f"{','.join(MATMUL_DTYPES)}, a positive budget", file=sys.stderr)
        return 2
    out = Path(a.out)
    if not out.parent.is_dir():
        print(f"gpu_truth.py matmul: --out {out}: directory {out.parent} does not exist", file=sys.stderr)
        return 2
    doc = torch_matmul(a.device, sizes, dtypes, a.budget_s)
    atomic_write(out, json.dumps(doc, indent=1))
    for d, b in best_rates(doc).items():
        print(f"{d:9s} n={b[0]:6d} {b[1] / 1e12:9.3f} T(FL)OP/s")
    for d, why in doc["unsupported"].items():
        print(f"{d:9s} not measured: {why}")
    return 0 if any(s["valid"] for s in doc["samples"]) else 1


def best_rates(doc: dict) -> dict[str, tuple[int, float]]:
    import statistics

    by: dict[tuple[str, int], list[float]] = {}
    for s in doc["samples"]:
        if s["valid"]:
            by.setdefault((s["dtype"], s["n"]), []).append(s["flops"] / s["time_s"])
    best: dict[str, tuple[int, float]] = {}
    for (d, n), rates in by.items():
        r = statistics.median(rates)
        if d not in best or r > best[d][1]:
            best[d] = (n, r)
    return best


def torch_matmul(device: str, sizes: list[int], dtypes: list[str], budget_s: float) -> dict:
    """Square products C = A @ B on random inputs (fresh per size, never zeros), each size's result
    checked on a sample of rows against a float64 product of the same rounded inputs with gpuroof's
    per-unit tolerance (gpuroof.matrix.TOLERANCE) before its times count. Timed with CUDA events
    around windows of back-to-back products of about 20 ms (perf_counter on a CPU), after a warm-up,
    until the budget; one sample per window, in seconds per product. 2 n^3 FLOPs (int8: OPs) each."""
    import torch

    from gpuroof.matrix import TOLERANCE

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    name = torch.cuda.get_device_name(dev) if cuda else _cpu_name()
    samples: list[dict] = []
    unsupported: dict[str, str] = {}
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    gen = torch.Generator(device=dev).manual_seed(0)
    try:
        for dtype in dtypes:
            if dtype == "tf32" and not cuda:
                unsupported[dtype] = "tf32 is a CUDA tensor-core mode"
                continue
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
            for n in sizes:
                try:
                    samples += _time_matmul(torch, dev, gen, dtype, n, budget_s, TOLERANCE[dtype])
                except (RuntimeError, NotImplementedError, TypeError) as e:  # a dtype torch/cuBLAS refuses
                    msg = f"n={n}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                    unsupported.setdefault(dtype, msg)
                    if cuda:
                        torch.cuda.empty_cache()
                    if "out of memory" not in str(e).lower():
                        break
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32_before
    return {"kind": "gpu-truth-torch-matmul", "schema_version": 1, "device": name, "backend": dev.type,
            "torch": torch.__version__, "cuda": torch.version.cuda, "sizes": sizes, "budget_s": budget_s,
            "conventions": "C = A @ B, square n; 2 n^3 FLOPs (int8: integer OPs, torch._int_mm to int32); "
                           "time_s: seconds per product, one sample per timed window; float32 with "
                           "allow_tf32 off, tf32 float32 inputs with it on",
            "samples": samples, "unsupported": unsupported}


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _time_matmul(torch: Any, dev: Any, gen: Any, dtype: str, n: int, budget_s: float, tol: float) -> list[dict]:
    cuda = dev.type == "cuda"
    if dtype == "int8":
        a = torch.randint(-8, 8, (n, n), device=dev, dtype=torch.int8, generator=gen)
        b = torch.randint(-8, 8, (n, n), device=dev, dtype=torch.int8, generator=gen)
        op = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        t = {"float64": torch.float64, "float32": torch.float32, "tf32": torch.float32,
             "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
        a = torch.randn(n, n, device=dev, generator=gen).to(t)
        b = torch.randn(n, n, device=dev, generator=gen).to(t)
        op = lambda: torch.matmul(a, b)  # noqa: E731
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    c = op()
    sync()
    rows = torch.randperm(n, device=dev, generator=gen)[:16]
    ref = a[rows].double() @ b.double()
    got = c[rows].double()
    rel = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-300))
    valid = math.isfinite(rel) and rel <= tol
    del c, ref, got

    def window(k: int) -> float:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(k):
                op()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / k
        t0 = time.perf_counter()
        for _ in range(k):
            op()
        return (time.perf_counter() - t0) / k

    first = window(1)
    k = max(1, min(200, int(0.02 / max(first, 1e-9))))
    out, spent, rep = [], 0.0, 0
    while rep < 3 or (spent < budget_s and rep < 50):
        t = window(k)
        spent += t * k
        out.append({"dtype": dtype, "n": n, "rep": rep, "launches": k, "time_s": t, "flops": 2 * n ** 3,
                    "valid": valid, "rel_error": rel, "tolerance": tol})
        rep += 1
    return out


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------

class Config:
    """The call's settings (a plain class: `gpuroof profile` loads this file as a module of its own)."""

    def __init__(self, out: Path, peers: Path, build_dir: Path, dry_run: bool, dry_ceilings: Path | None,
                 deadline_s: float, arch: str = "90"):
        self.out, self.peers, self.build_dir = out, peers, build_dir
        self.dry_run, self.dry_ceilings, self.deadline_s, self.arch = dry_run, dry_ceilings, deadline_s, arch
        self.python = sys.executable
        self.started = time.monotonic()
        self.env: dict = {}
        self.remove_build_dir = False


class Step(NamedTuple):
    name: str
    action: Callable[["Context"], None]
    what: str


class Context:
    """What a step's action uses: run a command (logged, within the step's time), name its files."""

    def __init__(self, cfg: Config, step: Step, timeout_s: float):
        self.cfg, self.step = cfg, step
        self.end = time.monotonic() + timeout_s
        self.log_path = cfg.out / "logs" / f"{step.name}.log"
        self.commands: list[list[str]] = []
        self.files: list[Path] = [self.log_path]
        self.notes: list[str] = []
        self.parsed: Any = None
        self.timed_out = False
        self.rc: int | None = None
        self._log = open(self.log_path, "a", encoding="utf-8")

    def say(self, text: str) -> None:
        self._log.write(text.rstrip("\n") + "\n")
        self._log.flush()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.say(f"# note: {text}")

    def run(self, argv: list[str], *, stdout: Path | None = None, cwd: Path = ROOT, env: dict | None = None,
            check: bool = True) -> int:
        """Run argv (its output into the log, or stdout into a file), ended with its process group
        when the step's time is up. A non-zero exit raises StepFailed unless check is False."""
        argv = [str(x) for x in argv]
        self.commands.append(argv)
        left = self.end - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise StepFailed("no time left in the step's budget")
        self.say(f"$ {' '.join(argv)}")
        full_env = {**os.environ, **self.cfg.env, **(env or {})}
        out = open(stdout, "w", encoding="utf-8") if stdout else self._log
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=out, stderr=self._log,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            if stdout:
                out.close()
            raise StepFailed(f"{argv[0]}: {e.strerror or e}") from None
        try:
            rc = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            self.timed_out = True
            raise StepFailed(f"ran past the step's budget ({self.step.name}: {argv[0]})") from None
        finally:
            if stdout:
                out.close()
                self.files.append(stdout)
        self.rc = rc
        self.say(f"# exit {rc}")
        if rc != 0 and check:
            raise StepFailed(f"{Path(argv[0]).name if argv[0] != self.cfg.python else 'python'} "
                             f"{' '.join(argv[1:3])} exited {rc}")
        return rc

    def close(self) -> None:
        self._log.close()


def _end_group(proc: subprocess.Popen) -> None:
    """End the process group this script started (its child's own session), politely, then for good."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _py(cfg: Config, *args: Any) -> list[str]:
    return [cfg.python, *map(str, args)]


def check_gpuroof_argv(ctx: Context, argv: list[str]) -> None:
    """Parse a gpuroof command line with gpuroof's own parser, in a fresh process (nothing measured)."""
    code = ("import sys\nfrom gpuroof.cli import build_parser\nfrom gpuroof.errors import UsageError\n"
            "try:\n    a = build_parser().parse_args(sys.argv[1:])\nexcept UsageError as e:\n"
            "    print('gpuroof refuses the command line:', e); sys.exit(2)\nprint('parsed:', a.command)\n")
    ctx.run(_py(ctx.cfg, "-c", code, *argv))


def step_env(ctx: Context) -> None:
    cfg = ctx.cfg
    env_dir = cfg.out / "env"
    env_dir.mkdir(exist_ok=True)
    if shutil.which("nvidia-smi"):
        ctx.run(["nvidia-smi", "-q"], stdout=env_dir / "nvidia-smi.txt", check=False)
    else:
        ctx.note("nvidia-smi not found: no driver snapshot")
    backend = "cpu" if cfg.dry_run else "cuda"
    ctx.run(_py(cfg, "-m", "gpuroof", "info", "--backend", backend, "--json"), stdout=env_dir / "info.json",
            check=False)
    ctx.run(_py(cfg, "-m", "pip", "list", "--format=json"), stdout=env_dir / "pip-list.json", check=False)
    info = json.loads((env_dir / "info.json").read_text() or "null")
    if not info or "devices" not in info:
        raise StepFailed(f"gpuroof info --backend {backend} gave no device list (see env/info.json and the log)")
    ctx.parsed = {"backend": info.get("backend"), "devices": [d["device"].get("name") for d in info["devices"]]}


def _cuda_home() -> Path | None:
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(str(Path(nvcc).resolve().parent.parent))
    for c in cands:
        if c and (Path(c) / "bin" / "nvcc").exists() and (Path(c) / "include" / "cuda_runtime.h").exists():
            return Path(c)
    return None


def _lib_dirs(cuda: Path | None) -> list[Path]:
    """Where the driver's libraries or the toolkit's link stubs may lie (libcuda.so, libnvidia-ml.so)."""
    dirs = [Path(d) for d in os.environ.get("LIBRARY_PATH", "").split(":") if d]
    if cuda:
        dirs += [cuda / "lib64" / "stubs", cuda / "targets" / "x86_64-linux" / "lib" / "stubs", cuda / "lib64"]
    dirs += [Path("/usr/local/nvidia/lib64"), Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib")]
    return [d for d in dirs if d.is_dir()]


def _has_lib(dirs: list[Path], name: str) -> bool:
    return any((d / f"lib{name}.so").exists() for d in dirs)


def _find_versioned(dirs: list[Path], name: str) -> Path | None:
    """lib<name>.so.1 in the library directories, or where the dynamic loader's cache has it."""
    for d in dirs:
        if (d / f"lib{name}.so.1").exists():
            return d / f"lib{name}.so.1"
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in cache.splitlines():
        left, _, right = line.partition("=>")
        if left.strip().startswith(f"lib{name}.so.1 ") and "x86-64" in left and Path(right.strip()).exists():
            return Path(right.strip())
    return None


def _build_env(ctx: Context, cuda: Path, nvml: bool = True) -> tuple[dict, list[str]]:
    """LIBRARY_PATH with every directory that holds the driver's libraries or their stubs; CPATH with
    the carried nvml.h only when the toolkit has none. Returns the env and the libraries still missing."""
    dirs = _lib_dirs(cuda)
    links = ctx.cfg.build_dir / f"links-{ctx.step.name}"
    for name in ("cuda", "nvidia-ml"):  # only lib<name>.so.1 (a driver mount): link it under the -l name
        versioned = None if _has_lib(dirs, name) else _find_versioned(dirs, name)
        if versioned:
            links.mkdir(exist_ok=True)
            (links / f"lib{name}.so").unlink(missing_ok=True)
            (links / f"lib{name}.so").symlink_to(versioned)
            ctx.note(f"lib{name}.so -> {versioned}")
    if links.is_dir():
        dirs.insert(0, links)
    env = {"LIBRARY_PATH": ":".join(str(d) for d in dirs)}
    if nvml and not _nvml_header(cuda):
        carried = ctx.cfg.peers / "dev" / "include"
        if (carried / "nvml.h").exists():
            env["CPATH"] = str(carried)
            ctx.note(f"nvml.h from {carried} (the CUDA toolkit at {cuda} has none)")
    missing = [f"lib{n}.so" for n in ("cuda", "nvidia-ml") if not _has_lib(dirs, n)]
    return env, missing


def _peer_tree(ctx: Context, peer: str) -> Path:
    spec = PEERS[peer]
    src = ctx.cfg.peers / spec["dir"]
    absent = [n for n in spec["needs"] if not (src / n).is_file()]
    if absent:
        raise StepSkipped(f"peer source missing: {src / absent[0]}" + (f" (and {len(absent) - 1} more)"
                                                                      if len(absent) > 1 else ""))
    commit = ctx.cfg.peers / f"{spec['dir']}.commit"
    ctx.parsed = {"source": str(src), "commit": commit.read_text().strip() if commit.exists() else None}
    dest = ctx.cfg.build_dir / peer / "src"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    return dest


def _cmake_build(ctx: Context, peer: str, source: Path, options: list[str], exe: str, cuda: Path,
                 env: dict, missing_libs: list[str]) -> None:
    """The peer's own CMake: configure (Ninja where there is one) and build. In a dry run without the
    driver's libraries, every object is compiled and the link left out, with a note saying so."""
    build = ctx.cfg.build_dir / peer / "build"
    if build.exists():
        shutil.rmtree(build)
    ninja = shutil.which("ninja")
    gen = ["-G", "Ninja"] if ninja else []
    ctx.run(["cmake", *gen, "-S", source, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
             f"-DCMAKE_CUDA_COMPILER={cuda / 'bin' / 'nvcc'}", *options], env=env)
    jobs = str(max(1, (os.cpu_count() or 2) // len(BUILDS)))
    if ctx.cfg.dry_run and missing_libs:
        if not ninja:
            ctx.note(f"configured; compile skipped: no ninja to build the objects alone, and no "
                     f"{', '.join(missing_libs)} to link against here")
            return
        listing = subprocess.run([ninja, "-C", str(build), "-t", "targets", "all"], capture_output=True, text=True)
        objs = [ln.split(":", 1)[0] for ln in listing.stdout.splitlines() if ln.split(":", 1)[0].endswith(".o")]
        if not objs:
            raise StepFailed("ninja lists no object files to compile")
        ctx.run(["cmake", "--build", build, "-j", jobs, "--target", *objs], env=env)
        ctx.note(f"compiled {len(objs)} objects; link skipped: no {', '.join(missing_libs)} here (the driver's "
                 f"libraries, or the toolkit's stubs)")
        ctx.parsed["objects"] = len(objs)
        return
    ctx.run(["cmake", "--build", build, "-j", jobs], env=env)
    if not (build / exe).is_file():
        raise StepFailed(f"the build made no {build / exe}")
    ctx.parsed["binary"] = str(build / exe)


def _cuda_or_skip() -> Path:
    cuda = _cuda_home()
    if cuda is None:
        raise StepSkipped("no CUDA toolkit (nvcc with include/cuda_runtime.h; set CUDA_HOME) to compile the peers")
    if not shutil.which("cmake"):
        raise StepSkipped("cmake not found")
    return cuda


def step_build_mixbench(ctx: Context) -> None:
    src = _peer_tree(ctx, "mixbench")
    cuda = _cuda_or_skip()
    env, _ = _build_env(ctx, cuda, nvml=False)
    _cmake_build(ctx, "mixbench", src / "mixbench-cuda", [f"-DCMAKE_CUDA_ARCHITECTURES={ctx.cfg.arch}"],
                 "mixbench-cuda", cuda, env, [])  # mixbench links the static CUDA runtime alone


def _nvml_build(ctx: Context, peer: str) -> tuple[Path, Path, dict, list]:
    """A peer that includes nvml.h: its tree, the CUDA toolkit, the build environment and the
    libraries missing to link; skipped where no nvml.h is found."""
    src = _peer_tree(ctx, peer)
    cuda = _cuda_or_skip()
    env, missing = _build_env(ctx, cuda)
    if "CPATH" not in env and not _nvml_header(cuda):
        raise StepSkipped(f"nvml.h: not in the CUDA toolkit ({cuda}) nor in {ctx.cfg.peers / 'dev/include'}")
    return src, cuda, env, missing


def step_build_babelstream(ctx: Context) -> None:
    src, cuda, env, missing = _nvml_build(ctx, "babelstream")
    _cmake_build(ctx, "babelstream", src, ["-DMODEL=cuda", f"-DCUDA_ARCH=sm_{ctx.cfg.arch}"], "cuda-stream",
                 cuda, env, [m for m in missing if "nvidia-ml" in m])


def step_build_nvbandwidth(ctx: Context) -> None:
    src, cuda, env, missing = _nvml_build(ctx, "nvbandwidth")
    options = [f"-DCMAKE_CUDA_ARCHITECTURES={ctx.cfg.arch}"]
    debs = sorted((ctx.cfg.peers / "boost").glob("*.deb"))
    if debs:
        root = ctx.cfg.build_dir / "nvbandwidth" / "boost"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        for deb in debs:
            _unpack_deb(ctx, deb, root)
        configs = sorted(root.glob("usr/lib/*/cmake/Boost-*/BoostConfig.cmake"))
        if not configs:
            raise StepFailed(f"{ctx.cfg.peers / 'boost'}: the packages hold no BoostConfig.cmake")
        options.append(f"-DBoost_DIR={configs[-1].parent}")
        ctx.note(f"Boost from {', '.join(d.name for d in debs)}")
    elif not any(Path(d, "boost", "program_options.hpp").exists() for d in ("/usr/include", "/usr/local/include")):
        raise StepSkipped(f"Boost program_options: not in /usr/include or /usr/local/include, and no "
                          f"{ctx.cfg.peers / 'boost'}/*.deb")
    _cmake_build(ctx, "nvbandwidth", src, options, "nvbandwidth", cuda, env, missing)


def _nvml_header(cuda: Path) -> bool:
    return any((p / "nvml.h").exists() for p in (cuda / "include", cuda / "targets" / "x86_64-linux" / "include"))


def _unpack_deb(ctx: Context, deb: Path, root: Path) -> None:
    """A .deb's files into root (never into /): dpkg-deb where it is, else ar + tar from Python."""
    if shutil.which("dpkg-deb"):
        ctx.run(["dpkg-deb", "-x", deb, root])
        return
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise StepFailed(f"{deb}: not a .deb (ar archive)")
    pos = 8
    while pos + 60 <= len(data):
        name, size = data[pos:pos + 16].decode().strip().rstrip("/"), int(data[pos + 48:pos + 58].decode().strip())
        body = data[pos + 60: pos + 60 + size]
        if name.startswith("data.tar"):
            import io

            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                tar.extractall(root, filter="data")
            return
        pos += 60 + size + (size % 2)
    raise StepFailed(f"{deb}: no data.tar member")


def _peer_run(ctx: Context, peer: str, exe: str, args: tuple[str, ...]) -> None:
    """Run a built peer into peers/<peer>.txt (a dry run: its documented sample stands in), then parse it."""
    import gpu_truth_table as table

    peers = ctx.cfg.out / "peers"
    peers.mkdir(exist_ok=True)
    raw = peers / f"{peer}.txt"
    if ctx.cfg.dry_run:
        sample = SAMPLES / PEERS[peer]["sample"]
        shutil.copyfile(sample, raw)
        ctx.files.append(raw)
        ctx.note(f"dry run: {sample.relative_to(ROOT)} (from the peer's own repository) stands in for its output")
    else:
        binary = ctx.cfg.build_dir / peer / "build" / exe
        if not binary.is_file():
            raise StepSkipped(f"{binary} was not built (see logs/build_{peer}.log)")
        ctx.run([binary, *args], stdout=raw)
    try:
        parsed = table.PARSERS[peer](raw.read_text(encoding="utf-8", errors="replace"))
    except table.ParseError as e:
        raise StepFailed(f"{raw.name}: {e}") from None
    atomic_write(peers / f"{peer}.json", json.dumps(parsed, indent=1))
    ctx.files.append(peers / f"{peer}.json")
    ctx.parsed = {"device": parsed.get("device"), "best": parsed.get("best")}


def step_mixbench(ctx: Context) -> None:
    _peer_run(ctx, "mixbench", "mixbench-cuda", ())


def step_babelstream(ctx: Context) -> None:
    _peer_run(ctx, "babelstream", "cuda-stream", BABEL_ARGS)


def step_nvbandwidth(ctx: Context) -> None:
    _peer_run(ctx, "nvbandwidth", "nvbandwidth", NVB_ARGS)


def run_argv(cfg: Config) -> list[str]:
    return ["run", "--backend", "cuda", "--out", str(cfg.out / "run")]


def step_gpuroof_run(ctx: Context) -> None:
    cfg = ctx.cfg
    argv = run_argv(cfg)
    if cfg.dry_run:
        check_gpuroof_argv(ctx, argv)
        if cfg.dry_ceilings is None:
            raise StepFailed("dry run: no complete run under results/ to stand in for the GPU run "
                             "(give --dry-run-ceilings RUN_DIR)")
        (cfg.out / "run").mkdir(exist_ok=True)
        shutil.copyfile(cfg.dry_ceilings / "run.json", cfg.out / "run" / "run.json")
        ctx.note(f"dry run: {cfg.dry_ceilings} stands in for the run (its run.json copied to run/)")
    else:
        ctx.run(_py(cfg, "-m", "gpuroof", *argv))
    meta = json.loads((cfg.out / "run" / "run.json").read_text())
    ctx.files.append(cfg.out / "run" / "run.json")
    ctx.parsed = {"device": meta.get("device", {}).get("name"), "status": meta.get("status"),
                  "quality_ok": (meta.get("quality") or {}).get("ok"), "ceilings": meta.get("ceilings")}


def step_torch_matmul(ctx: Context) -> None:
    cfg = ctx.cfg
    out = cfg.out / "torch_matmul.json"
    extra = ["--device", "cpu", "--sizes", "64,128", "--budget-s", "0.02"] if cfg.dry_run else ["--device", "cuda"]
    ctx.run(_py(cfg, Path(__file__).resolve(), "matmul", "--out", out, *extra))
    ctx.files.append(out)
    import gpu_truth_table as table

    parsed = table.parse_torch_matmul(out.read_text())
    ctx.parsed = {"device": parsed["device"], "best": parsed["best"], "unsupported": parsed["unsupported"]}


def _gpu_test_files() -> list[str]:
    """The test files that hold `gpu`-marked tests (the dry run collects these alone)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text(encoding="utf-8", errors="replace"))


def step_pytest_gpu(ctx: Context) -> None:
    cfg = ctx.cfg
    xml = cfg.out / "pytest-gpu.xml"
    targets = _gpu_test_files() if cfg.dry_run else ["tests"]
    # a module that cannot be imported on the device must not stop the gpu tests of the others
    rc = ctx.run(_py(cfg, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                     "--continue-on-collection-errors", *targets), check=False)
    if not xml.exists():
        raise StepFailed(f"pytest exited {rc} and wrote no {xml.name}")
    ctx.files.append(xml)
    ctx.parsed = junit_counts(xml)
    if rc != 0:
        raise StepFailed(f"pytest -m gpu exited {rc}: {ctx.parsed}")
    if cfg.dry_run and ctx.parsed["tests"] == 0:
        raise StepFailed("the gpu marker selected no test")


def junit_counts(xml: Path) -> dict:
    """tests, failures, errors, skipped, passed over every <testsuite> of a JUnit XML file."""
    root = ElementTree.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    c = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    return c


def decoder_argv(cfg: Config) -> list[str]:
    return ["--device", "cuda", "--ceilings", str(cfg.out / "run"), "--reps", "5", "--out", str(cfg.out / "profile")]


def step_profile_decoder(ctx: Context) -> None:
    cfg = ctx.cfg
    script = HERE / "profile_decoder.py"
    argv = decoder_argv(cfg)
    if cfg.dry_run:  # GPT-2 small and BERT-base take minutes on two cores: the flags are checked instead
        help_file = cfg.out / "logs" / "profile_decoder-help.txt"
        ctx.run(_py(cfg, script, "--help"), stdout=help_file)
        text = help_file.read_text()
        flags = [a for a in argv if a.startswith("--")]
        unknown = [f for f in flags if f not in text]
        if unknown:
            raise StepFailed(f"profile_decoder.py does not take {', '.join(unknown)}")
        ctx.note(f"dry run: flags {' '.join(flags)} checked against profile_decoder.py --help")
        return
    (cfg.out / "profile").mkdir(exist_ok=True)
    ctx.run(_py(cfg, script, *argv))
    made = {name: (cfg.out / "profile" / name / "profile.json").exists()
            for name in ("gpt2-prefill", "gpt2-decode", "bert")}
    ctx.files += [cfg.out / "profile" / n / "profile.json" for n, ok in made.items() if ok]
    ctx.files += [p for p in (cfg.out / "profile" / "decoder.csv", cfg.out / "profile" / "gpt2-prefill-decode.png")
                  if p.exists()]
    ctx.parsed = {"profiles": made}
    if not all(made.values()):
        raise StepFailed(f"profile.json missing for {', '.join(n for n, ok in made.items() if not ok)}")


def step_profile_resnet50(ctx: Context) -> None:
    cfg = ctx.cfg
    here = Path(__file__).resolve()
    if cfg.dry_run:
        func, batch, extra = "resnet50_small", 1, ["--device", "cpu", "--reps", "1", "--force"]
    else:
        func, batch, extra = "resnet50", RESNET_BATCH, ["--device", "cuda"]
    out = cfg.out / "profile" / f"resnet50-b{batch}"
    out.parent.mkdir(exist_ok=True)
    ctx.run(_py(cfg, "-m", "gpuroof", "profile", "--model", f"{here}:{func}", "--batch", batch,
                "--ceilings", cfg.out / "run", "--out", out, *extra))
    wanted = [out / n for n in ("profile.json", "profile.csv", "profile.png")]
    absent = [p.name for p in wanted if not p.exists()]
    if absent:
        raise StepFailed(f"gpuroof profile wrote no {', '.join(absent)} in {out}")
    ctx.files += wanted
    doc = json.loads((out / "profile.json").read_text())
    t = doc["totals"]
    if not t.get("flops", 0) > 0:
        raise StepFailed(f"{out / 'profile.json'}: totals.flops is {t.get('flops')}")
    ctx.parsed = {"model": doc.get("model"), "flops": t["flops"], "time_s": t.get("time_s"),
                  "bound": t.get("bound"), "quality_ok": (doc.get("quality") or {}).get("ok")}


def step_table(ctx: Context) -> None:
    cfg = ctx.cfg
    ctx.run(_py(cfg, HERE / "gpu_truth_table.py", cfg.out, "--markdown", cfg.out / "benchmarks.md",
                "--json", cfg.out / "table.json"))
    ctx.files += [cfg.out / "benchmarks.md", cfg.out / "table.json"]
    rows = json.loads((cfg.out / "table.json").read_text())["rows"]
    ctx.parsed = {"rows": len(rows), "targets_met": sum(r["met"] is True for r in rows),
                  "targets_missed": [r["quantity"] for r in rows if r["met"] is False]}


STEPS = [
    Step("env", step_env, "nvidia-smi -q, gpuroof info, pip list"),
    Step("build_mixbench", step_build_mixbench, "mixbench-cuda with its CMake"),
    Step("build_babelstream", step_build_babelstream, "BabelStream (MODEL=cuda) with its CMake"),
    Step("build_nvbandwidth", step_build_nvbandwidth, "nvbandwidth with its CMake"),
    Step("gpuroof_run", step_gpuroof_run, "gpuroof run --backend cuda (full)"),
    Step("mixbench", step_mixbench, "mixbench-cuda"),
    Step("babelstream", step_babelstream, "BabelStream, 2^27 doubles per array"),
    Step("nvbandwidth", step_nvbandwidth, "nvbandwidth device_local_copy and host copies"),
    Step("torch_matmul", step_torch_matmul, "torch.matmul per dtype and size"),
    Step("pytest_gpu", step_pytest_gpu, "pytest -m gpu -q"),
    Step("profile_resnet50", step_profile_resnet50, f"gpuroof profile ResNet-50, batch {RESNET_BATCH}"),
    Step("profile_decoder", step_profile_decoder, "experiments/profile_decoder.py: GPT-2 prefill, decode; BERT"),
    Step("table", step_table, "gpuroof vs peers vs theoretical"),
]
NAMES = [s.name for s in STEPS]


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------

class Summary:
    """summary.json, rewritten (temporary file, then rename) after every step; one lock for the builds."""

    def __init__(self, cfg: Config, argv: list[str]):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.doc = {"kind": "gpu-truth-summary", "schema_version": 1,
                    "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "command": [sys.executable, str(Path(__file__).resolve()), *argv], "dry_run": cfg.dry_run,
                    "out": str(cfg.out), "peers": str(cfg.peers), "build_dir": str(cfg.build_dir),
                    "cuda_arch": cfg.arch, "deadline_s": cfg.deadline_s, "steps": {}}

    def record(self, name: str, rec: dict) -> None:
        with self.lock:
            self.doc["steps"][name] = rec
            self.write()

    def write(self) -> None:
        self.doc["seconds"] = time.monotonic() - self.cfg.started
        atomic_write(self.cfg.out / "summary.json", json.dumps(self.doc, indent=1, default=str))


def run_step(cfg: Config, step: Step, summary: Summary, reserve_s: float = TABLE_RESERVE_S) -> dict:
    """Run one step within min(its budget, what the deadline leaves) and record how it went."""
    left = cfg.deadline_s - (time.monotonic() - cfg.started) - (0 if step.name == "table" else reserve_s)
    budget = min(BUDGETS[step.name], left)
    rec: dict[str, Any] = {"what": step.what, "budget_s": BUDGETS[step.name], "timeout_s": budget}
    if budget < MIN_STEP_S and step.name != "table":
        rec.update(status="skipped", reason=f"overall deadline: {max(left, 0):.0f} s left of {cfg.deadline_s:.0f}",
                   rc=None, seconds=0.0, files=[])
        summary.record(step.name, rec)
        return rec
    ctx = Context(cfg, step, max(budget, MIN_STEP_S))
    t0 = time.monotonic()
    status, reason = "ok", None
    try:
        step.action(ctx)
    except StepSkipped as e:
        status, reason = "skipped", str(e)
    except StepFailed as e:
        status, reason = ("timed_out" if ctx.timed_out else "failed"), str(e)
    except Exception as e:  # a bug or a broken output in one step must not stop the others
        status, reason = "failed", f"{type(e).__name__}: {e}"
    finally:
        if reason:
            ctx.say(f"# {status}: {reason}")
        ctx.close()
    rec.update(status=status, reason=reason, rc=ctx.rc, seconds=time.monotonic() - t0,
               commands=ctx.commands, notes=ctx.notes, parsed=ctx.parsed,
               files=sorted({_rel(p, cfg.out) for p in ctx.files if Path(p).exists()}))
    summary.record(step.name, rec)
    print(f"{step.name:18s} {status:9s} {rec['seconds']:7.1f} s  {reason or ''}", flush=True)
    return rec


def _rel(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(p)


def run_all(cfg: Config, names: list[str], argv: list[str]) -> dict:
    """The steps in order; the builds side by side right after env, before anything is measured."""
    summary = Summary(cfg, argv)
    builds = [s for s in STEPS if s.name in names and s.name in BUILDS]

    def build_all() -> None:
        with ThreadPoolExecutor(max_workers=len(builds)) as pool:
            list(pool.map(lambda b: run_step(cfg, b, summary), builds))

    for s in STEPS:
        if s.name not in names or s.name in BUILDS:
            continue
        if s.name != "env" and builds:
            build_all()
            builds = []
        run_step(cfg, s, summary)
    if builds:
        build_all()
    summary.doc["ok"] = all(r["status"] in ("ok", "skipped") for r in summary.doc["steps"].values())
    summary.write()
    return summary.doc


def write_archive(out: Path, archive: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", dir=archive.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(out, arcname=out.name)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def newest_complete_run(results: Path) -> Path | None:
    """The newest run.json under results/ whose status is complete (the dry run's stand-in)."""
    best: tuple[str, Path] | None = None
    for f in results.glob("**/run.json"):
        try:
            meta = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("status") == "complete" and meta.get("ceilings"):
            key = str(meta.get("created_utc", ""))
            if best is None or key > best[0]:
                best = (key, f.parent)
    return best[1] if best else None


def _names(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in NAMES]
    if bad or not items:
        raise UsageError(f"{flag} {text!r}: unknown step {', '.join(bad) or '(none given)'} "
                         f"(steps: {', '.join(NAMES)})")
    return items


def _gpu_arch() -> str | None:
    """The compute capability nvidia-smi reports (9.0 -> '90'); None without a driver."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        cap = r.stdout.split()[0].strip()
        return cap.replace(".", "") if r.returncode == 0 and cap.replace(".", "").isdigit() else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def parse_args(argv: list[str]) -> tuple[Config, list[str], Path | None]:
    p = argparse.ArgumentParser(prog="gpu_truth.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder of everything written (default $OUT)")
    p.add_argument("--peers", default=str(ROOT / ".peers"), help="folder of the peers' sources (default .peers)")
    p.add_argument("--build-dir", default=None, help="where the peers are built (default: a folder in /tmp)")
    p.add_argument("--archive", default=None, help="also pack --out into this .tar.gz at the end")
    p.add_argument("--only", default=None, help="run these steps alone (comma-separated)")
    p.add_argument("--skip", default=None, help="leave these steps out (comma-separated)")
    p.add_argument("--deadline", type=float, default=DEADLINE_S, help=f"overall seconds (default {DEADLINE_S})")
    p.add_argument("--dry-run", action="store_true", help="check every step on a machine without a GPU")
    p.add_argument("--dry-run-ceilings", default=None, metavar="RUN_DIR",
                   help="the run standing in for gpuroof's in a dry run (default: newest complete under results/)")
    p.add_argument("--list", action="store_true", help="print the steps and their budgets, and exit")
    a = p.parse_args(argv)
    if a.list:
        for s in STEPS:
            print(f"{s.name:18s} {BUDGETS[s.name]:4d} s  {s.what}")
        raise SystemExit(0)
    if not a.out:
        raise UsageError("--out: required when $OUT is not set")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a directory")
    if not out.exists() and not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist")
    if (out / "summary.json").exists():
        raise UsageError(f"--out {out}: already holds a summary.json (choose an empty folder)")
    peers = Path(a.peers)
    if peers.exists() and not peers.is_dir():
        raise UsageError(f"--peers {peers}: not a directory")
    if not a.deadline > 0:
        raise UsageError(f"--deadline {a.deadline}: a positive number of seconds")
    names = _names(a.only, "--only") if a.only else list(NAMES)
    if a.skip:
        skip = _names(a.skip, "--skip")
        names = [n for n in names if n not in skip]
    if "table" not in names and not a.only:
        names.append("table")
    archive = Path(a.archive) if a.archive else None
    if archive and not archive.parent.is_dir():
        raise UsageError(f"--archive {archive}: directory {archive.parent} does not exist")
    dry = None
    if a.dry_run:
        dry = Path(a.dry_run_ceilings) if a.dry_run_ceilings else newest_complete_run(ROOT / "results")
        if a.dry_run_ceilings and not (dry / "run.json").is_file():
            raise UsageError(f"--dry-run-ceilings {dry}: not a gpuroof run (no run.json)")
    elif a.dry_run_ceilings:
        raise UsageError("--dry-run-ceilings: only with --dry-run")
    out.mkdir(exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    build = Path(a.build_dir) if a.build_dir else Path(tempfile.mkdtemp(prefix="gpu-truth-build-"))
    build.mkdir(parents=True, exist_ok=True)
    made_build = not a.build_dir
    arch = _gpu_arch()
    cfg = Config(out=out, peers=peers, build_dir=build, dry_run=a.dry_run, dry_ceilings=dry,
                 deadline_s=a.deadline, arch=arch or "90")
    # gpuroof and the experiments import from this tree; nothing is written under the repo's results/
    cfg.remove_build_dir = made_build  # a folder of our own making goes at the end; one given stays
    cfg.env = {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               "GPUROOF_RESULTS": str(out / "results"), "PYTHONUNBUFFERED": "1"}
    return cfg, names, archive


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["matmul"]:
        return matmul_main(argv[1:])
    try:
        cfg, names, archive = parse_args(argv)
    except UsageError as e:
        print(f"gpu_truth.py: {e}", file=sys.stderr)
        return 2
    print(f"gpu_truth: {len(names)} steps into {cfg.out} (deadline {cfg.deadline_s:.0f} s"
          f"{', dry run' if cfg.dry_run else ''}; sm_{cfg.arch})", flush=True)
    try:
        doc = run_all(cfg, names, argv)
    finally:
        if cfg.remove_build_dir:
            shutil.rmtree(cfg.build_dir, ignore_errors=True)
    if archive:
        try:
            write_archive(cfg.out, archive)
        except OSError as e:
            print(f"gpu_truth.py: --archive {archive}: {e.strerror or e}", file=sys.stderr)
            return 1
    if (cfg.out / "benchmarks.md").exists():
        print((cfg.out / "benchmarks.md").read_text())
    print(f"summary: {cfg.out / 'summary.json'} ({doc['seconds']:.0f} s)")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
