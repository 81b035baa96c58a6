"""The Slurm job array for real: munged, slurmctld and slurmd on localhost, a 3-task array of CPU
measurements, then the merge-and-compare job, all submitted by experiments/slurm/submit.sh.

There is no systemd here: the test starts the daemons itself (in the foreground, as its own child
processes), waits for them by polling, and stops exactly those processes at the end.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "experiments" / "slurm"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")
TASKS = 3
#: The array's command: a real quick measurement of one dtype and the DRAM level. Its sweep streams
#: 8x the last-level cache, so its time follows the L3: about 12 s alone on a 2-core Zen 4 (32 MiB),
#: about 45 s on a guest that shows 480 MiB.
TASK_CMD = (f"{sys.executable} -m gpuroof measure --backend cpu --quick --dtype float32 --levels dram "
            "--no-matrix")
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
        "DEADLINE", "PREEMPTED")



def _missing() -> list[str]:
    return [d for d in DAEMONS if shutil.which(d) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, ok, timeout: float, procs: dict, logs: Path, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        for name, p in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode} while waiting for {what}:\n"
                                   + _tail(logs / f"{name}.log"))
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s\n" + "\n".join(
        _tail(logs / f"{n}.log") for n in procs))


def _tail(path: Path, n: int = 20) -> str:
    try:
        return f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"--- {path.name}: none"


SLURM_CONF = """\
ClusterName=gpuroofci
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/run/munge.sock
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/log/jobcomp.txt
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=ci Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture
def cluster():
    """A one-node Slurm cluster on localhost; yields the environment its clients need."""
    missing = _missing()
    if missing:
        pytest.skip(f"Slurm/munge not installed ({', '.join(missing)} missing; .ci/run installs "
                    "slurmctld, slurmd, slurm-client and munge from Debian)")
    if os.geteuid() != 0:
        pytest.skip("the local slurmd must run as root to start jobs")
    d = Path(tempfile.mkdtemp(prefix="gpuroof-slurm-", dir="/tmp"))  # munged wants a world-searchable path
    d.chmod(0o755)
    for sub, mode in (("munge", 0o700), ("run", 0o755), ("state", 0o700), ("spool", 0o755), ("log", 0o755)):
        (d / sub).mkdir()
        (d / sub).chmod(mode)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, ctld_port=_free_port(), slurmd_port=_free_port(),
                                      user="root", d=d, cpus=os.cpu_count() or 1))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    logs = d / "log"
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, argv: list[str]) -> None:
        with open(logs / f"{name}.log", "ab") as log:
            procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)

    def sinfo_idle() -> bool:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() in ("idle", "mixed")

    try:
        start("munged", ["munged", "-F", f"--key-file={key}", f"--socket={d}/run/munge.sock",
                         f"--pid-file={d}/run/munged.pid", f"--seed-file={d}/munge/seed",
                         f"--log-file={logs}/munged.daemon.log"])
        _wait("munged's socket", lambda: (d / "run" / "munge.sock").exists(), 15, procs, logs)
        start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)])
        start("slurmd", ["slurmd", "-D", "-N", host, "-f", str(conf)])
        _wait("an idle node", sinfo_idle, 30, procs, logs)
        yield {"env": env, "dir": d, "procs": procs}
    finally:
        try:  # jobs of this cluster that are still there
            subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for name in ("slurmd", "slurmctld", "munged"):  # exactly the processes started above
            p = procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        shutil.rmtree(d, ignore_errors=True)


def _job_state(job: str, env: dict) -> str | None:
    r = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True)
    for field in r.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


@pytest.mark.slurm
def test_slurm_array_measures_each_task_then_merges_and_compares(cluster, tmp_path):
    env = {**cluster["env"], "GPUROOF_RESULTS": str(tmp_path / "results"), "GPUROOF_TASKS": str(TASKS),
           "GPUROOF_SBATCH_ARGS": "--exclusive", "GPUROOF_CMD": TASK_CMD,
           "GPUROOF": f"{sys.executable} -m gpuroof",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    sub = subprocess.run([str(SLURM / "submit.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=30)
    assert sub.returncode == 0, sub.stderr
    array, merge = sub.stdout.split()

    # One task at a time (--exclusive, as submit.sh's default): each measurement has the node to itself,
    # as on a cluster, instead of two sharing 2 cores and being timed again as busy. The deadline is
    # a hang's, not a speed target: 3 tasks of up to about 3 minutes each on a slow, large-L3 machine.
    deadline = time.monotonic() + 900
    while (state := _job_state(merge, env)) not in DONE:
        assert time.monotonic() < deadline, (f"merge job {merge} still {state}; array tasks: "
                                             + ", ".join(f"{i}={_job_state(f'{array}_{i}', env)}"
                                                         for i in range(TASKS)))
        time.sleep(0.5)
    logs = tmp_path / "results" / "logs"
    out = "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.out")))
    assert state == "COMPLETED", out

    comp = [dict(f.split("=", 1) for f in line.split() if "=" in f)
            for line in (cluster["dir"] / "log" / "jobcomp.txt").read_text().splitlines()]
    tasks = [c for c in comp if c.get("ArrayJobId") == array]
    assert sorted(int(c["ArrayTaskId"]) for c in tasks) == list(range(TASKS))
    assert all(c["JobState"] == "COMPLETED" for c in tasks), tasks

    job_dir = tmp_path / "results" / array
    runs = sorted(job_dir.glob("*-task*/run.json"))
    assert len(runs) == TASKS, out
    metas = [json.loads(p.read_text()) for p in runs]
    assert all(m["status"] == "complete" for m in metas)
    assert sorted(m["host"]["env"]["SLURM_ARRAY_TASK_ID"] for m in metas) == [str(i) for i in range(TASKS)]
    assert all(m["host"]["env"].get("SLURM_JOB_ID") for m in metas)
    assert {m["host"]["hostname"] for m in metas} == {socket.gethostname()}

    with open(job_dir / "merged.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ceilings = [r for r in rows if r["record"] == "ceiling"]
    assert {r["slurm_array_task_id"] for r in ceilings} == {str(i) for i in range(TASKS)}
    assert {(r["kind"], r["level"] or r["unit"]) for r in ceilings} == {("bandwidth", "dram"), ("compute", "float32")}
    assert all(r["slurm_job_id"] and r["hostname"] for r in ceilings)

    md = (job_dir / "compare.md").read_text()
    assert md.count("-task") >= TASKS  # one row per task
    with open(job_dir / "compare.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == TASKS and all(float(r["dram_Bps"]) > 0 and float(r["float32_flops"]) > 0 for r in table)
    assert (job_dir / "rooflines.png").stat().st_size > 10_000


def test_array_script_appends_out_from_the_task_ids_and_takes_the_command_from_args_or_env(tmp_path):
    """The sbatch script outside Slurm (plain bash): the command comes from its arguments, else
    GPUROOF_CMD; --out is <results>/<array job id>/<host>-task<i>."""
    script = SLURM / "gpuroof_array.sbatch"
    env = {**os.environ, "GPUROOF_RESULTS": str(tmp_path), "SLURM_ARRAY_JOB_ID": "41",
           "SLURM_JOB_ID": "44", "SLURM_ARRAY_TASK_ID": "3", "GPUROOF_CMD": "echo from-env"}
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == f"from-env --out {tmp_path}/41/{host}-task3"
    r = subprocess.run(["bash", str(script), "echo", "from args"], env=env, capture_output=True, text=True)
    assert r.stdout.splitlines()[-1] == f"from args --out {tmp_path}/41/{host}-task3"
    env.pop("GPUROOF_CMD")
    stub = tmp_path / "bin"  # a stand-in that prints its arguments: the default command is `gpuroof run`
    stub.mkdir()
    (stub / "gpuroof").write_text('#!/bin/sh\necho "stub gpuroof $*"\n')
    (stub / "gpuroof").chmod(0o755)
    r = subprocess.run(["bash", str(script)], env={**env, "PATH": f"{stub}{os.pathsep}{env['PATH']}"},
                       capture_output=True, text=True)
    assert r.stdout.splitlines()[-1] == f"stub gpuroof run --out {tmp_path}/41/{host}-task3"


def test_k8s_manifest_is_an_indexed_job_into_a_shared_volume_then_merge():
    text = (ROOT / "experiments" / "k8s" / "gpuroof-indexed-job.yaml").read_text()
    for needle in ("completionMode: Indexed", "exec gpuroof run", "JOB_COMPLETION_INDEX", "nvidia.com/gpu",
                   "gpuroof merge", "gpuroof compare", "ReadWriteMany"):
        assert needle in text, needle
    yaml = pytest.importorskip("yaml")
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Job", "Job"]
    assert docs[1]["spec"]["completions"] == docs[1]["spec"]["parallelism"]
    expected = docs[2]["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["value"]
    assert int(expected) == docs[1]["spec"]["completions"]
