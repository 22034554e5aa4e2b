"""A single-node SLURM on 127.0.0.1, started from nothing and stopped by PID.

``munged``, ``slurmctld`` and ``slurmd`` (Debian packages ``munge`` and ``slurm-wlm``) run in the
foreground as children of this process, with every file they use under one root directory
(``slurm.conf`` and ``gres.conf``, state, logs) but munge's key and socket and slurmd's
spool, in a short directory under ``/tmp`` of their own (a socket path has at most 107
bytes). Nothing under ``/etc`` or ``/run`` is touched, so a machine's own SLURM (if any) is
left alone; commands find this one through ``SLURM_CONF`` (:meth:`SingleNodeSlurm.env`).

The node declares ``CPUS`` cores, ``MEMORY_MB`` of memory and ``GPUS`` GPUs whatever the
machine has (``SlurmdParameters=config_overrides``), so that job sizes and the limits SLURM
enforces are the same on every machine; the GPUs are plain files (nothing here uses a GPU, the
tests check what SLURM hands out). slurmd starts jobs as other users only when run as root,
hence :func:`unavailable` asks for root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")
CPUS = 4
MEMORY_MB = 8000
GPUS = 2
PARTITION = "debug"


def unavailable() -> str | None:
    """Why no SLURM can be started here (None: it can)."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        return (
            f"{', '.join(missing)} not found: install the Debian packages slurm-wlm and munge "
            "(apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        return "a single-node SLURM needs root (slurmd starts jobs as their user)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SingleNodeSlurm:
    """A running single-node SLURM (see :func:`single_node_slurm`)."""

    root: Path
    node: str
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def job_output(self) -> Path:
        """Where jobs submitted from :meth:`env` write their output (``sbatch`` runs here)."""
        return self.root / "jobs"

    def env(self) -> dict[str, str]:
        """Environment variables that point SLURM commands at this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str) -> str:
        """A SLURM command's output (raises with its error output when it fails)."""
        done = subprocess.run(
            args,
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def jobs(self) -> dict[str, str]:
        """Job id -> state of the jobs SLURM still knows."""
        out = self.run("squeue", "--noheader", "--format=%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for name in ("slurmctld", "slurmd", "munged"):
            path = self.root / "log" / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {path}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def _start(self, name: str, args: list[str]) -> None:
        out = (self.root / "log" / f"{name}.out").open("ab")
        with out:
            self.daemons[name] = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env()},
                cwd=self.root,
                # in this process's group: killing a test run's group (a CI timeout) ends them
            )

    def _wait_until(self, condition: str, check: object, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name, popen in self.daemons.items():
                if popen.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with code {popen.returncode}\n{self.log_tail()}"
                    )
            if callable(check) and check():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{condition} after {timeout_s:.0f} s\n{self.log_tail()}")
            time.sleep(0.2)

    def _node_idle(self) -> bool:
        try:
            out = self.run("sinfo", "--noheader", "--format=%T")
        except RuntimeError:
            return False
        return out.strip() == "idle"

    def stop(self) -> None:
        """Cancel every job, then stop the daemons (and job steps they left) by PID."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", f"--partition={PARTITION}")
                deadline = time.monotonic() + 20
                while self.jobs() and time.monotonic() < deadline:
                    time.sleep(0.2)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass  # the daemons are stopped below in any case
        # slurmstepd (one per job) detaches from slurmd: found by the SLURM_CONF it inherited
        steps = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "slurmstepd"]
        leftovers = [p for p in steps if _environ(p).get("SLURM_CONF") == str(self.conf)]
        leftovers += [c for p in leftovers for c in _children(p)]
        for name in ("slurmd", "slurmctld", "munged"):
            popen = self.daemons.pop(name, None)
            if popen is None or popen.poll() is not None:
                continue
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(20)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(20)
        for process in leftovers:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(leftovers, timeout=20)


def _environ(process: psutil.Process) -> dict[str, str]:
    try:
        return process.environ()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return {}


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _write_config(root: Path, node: str, short: Path) -> None:
    munge = short / "munge"
    ctld_port, d_port = _free_port(), _free_port()
    gpu_files = [root / "gpus" / f"gpu{i}" for i in range(GPUS)]
    for path in gpu_files:
        path.parent.mkdir(exist_ok=True)
        path.touch()
    settings = {
        "ClusterName": "insarflow-test",
        "SlurmctldHost": f"{node}(127.0.0.1)",
        "SlurmctldPort": ctld_port,
        "SlurmdPort": d_port,
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "AuthInfo": f"socket={munge / 'munge.socket'}",
        "CredType": "cred/munge",
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": short / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "log" / "slurmctld.log",
        "SlurmdLogFile": root / "log" / "slurmd.log",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "MpiDefault": "none",
        "MailProg": "/bin/true",
        "SchedulerType": "sched/backfill",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "DefMemPerCPU": 500,
        "ReturnToService": 2,
        # seconds between SIGTERM and SIGKILL when a job is cancelled or runs out of time
        "KillWait": 5,
        "SlurmdParameters": "config_overrides",
        "GresTypes": "gpu",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines += [
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={MEMORY_MB} "
        f"Gres=gpu:{GPUS} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    (root / "slurm.conf").write_text("\n".join(lines) + "\n")
    files = ",".join(str(p) for p in gpu_files)
    (root / "gres.conf").write_text(f"AutoDetect=off\nNodeName={node} Name=gpu File={files}\n")


@contextmanager
def single_node_slurm(root: Path, *, timeout_s: float = 60) -> Iterator[SingleNodeSlurm]:
    """Start munged, slurmctld and slurmd with everything under ``root``; yield once the node
    is idle; stop them all by PID on exit, whatever happened."""
    for sub in ("state", "log", "jobs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # munged's socket and slurmd's spool (its step sockets) must fit a Unix socket address
    # (107 bytes): a short directory of their own rather than under ``root`` (under
    # pytest-xdist and a benchmark's scratch directory the paths reached 108 and 112)
    short = Path(tempfile.mkdtemp(prefix="insarflow-slurm-", dir="/tmp"))
    munge = short / "munge"
    for sub in (munge, short / "spool"):
        sub.mkdir(mode=0o700)
    node = socket.gethostname().split(".")[0]
    _write_config(root, node, short)
    slurm = SingleNodeSlurm(root, node)
    try:
        subprocess.run(
            ["mungekey", "--create", "--keyfile", str(munge / "munge.key")],
            check=True,
            capture_output=True,
        )
        slurm._start(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={munge / 'munge.socket'}",
                f"--key-file={munge / 'munge.key'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
                f"--log-file={root / 'log' / 'munged.log'}",
            ],
        )
        socket_path = munge / "munge.socket"
        slurm._wait_until("no munge socket", socket_path.exists, timeout_s)
        slurm._start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(slurm.conf)])
        slurm._start("slurmd", ["slurmd", "-D", "-f", str(slurm.conf)])
        slurm._wait_until("the SLURM node is not idle", slurm._node_idle, timeout_s)
        yield slurm
    finally:
        slurm.stop()
        shutil.rmtree(short, ignore_errors=True)
