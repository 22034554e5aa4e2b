"""Fixtures for the orchestration tests: tiny simulator stacks and background processes.

Every process a test starts (Prefect server and worker, Dask scheduler and workers) is
started through :class:`Processes`, which stops it by PID, children first, at teardown.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
import psutil
import pytest

from insarflow.config import (
    AcquisitionConfig,
    AreaConfig,
    ComputeConfig,
    MintpyConfig,
    SimulatorConfig,
    StackConfig,
    TopsStackConfig,
)
from tests.conftest import REPO_ROOT

STACK_START = date(2024, 12, 1)
INTERVAL_DAYS = 12

MakeConfig = Callable[[Path, int], StackConfig]


def tiny_stack_config(work_dir: Path, dates: int) -> StackConfig:
    """A stack small enough for tests: 40 x 50 pixels, one swath, two connections."""
    return StackConfig(
        name="tiny",
        work_dir=work_dir,
        engine="simulator",
        area=AreaConfig(bbox=(34.00, 34.60, 116.50, 117.95)),
        acquisition=AcquisitionConfig(track=142, start=STACK_START, end=date(2025, 12, 31)),
        topsstack=TopsStackConfig(swaths=[1], coregistration="geometry", connections=2),
        # The synthetic coherence is below MintPy's default 0.85 for the reference point.
        # MintPy's own figures take a minute per run; the demo's test checks them.
        mintpy=MintpyConfig(
            max_memory_gb=1.0, plot=False, extra={"mintpy.reference.minCoherence": "0.5"}
        ),
        compute=ComputeConfig(workers=2, threads_per_worker=1, memory_gb=4.0),
        simulator=SimulatorConfig(
            seed=3, dates=dates, interval_days=INTERVAL_DAYS, length=40, width=50
        ),
    )


@pytest.fixture(scope="session")
def make_config() -> MakeConfig:
    """``make_config(work_dir, dates)``: the tiny simulator stack configuration."""
    return tiny_stack_config


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any Prefect setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(extra)
    return env


@dataclass
class Process:
    """A background process started by a test, with its combined output in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.popen.returncode}; log {self.log}:\n"
                + self.tail()
            )


@dataclass
class Processes:
    """Start background processes; stop them (newest first) by PID."""

    log_dir: Path
    started: list[Process] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: Sequence[str | os.PathLike[str]],
        env: Mapping[str, str],
        cwd: Path | None = None,
        own_session: bool = False,
    ) -> Process:
        """Start ``args`` (output to ``<name>.log``); in a session of its own when
        ``own_session``, so that :meth:`stop` also finds what a shell script left running in
        the background after it ended."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [os.fspath(a) for a in args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=cwd or self.log_dir,
                start_new_session=own_session,
            )
        process = Process(name, popen, log)
        self.started.append(process)
        return process

    def stop(self, process: Process, timeout_s: float = 20.0) -> None:
        """SIGTERM the process, then what it left behind (its children, and processes of
        its session it started in the background); SIGKILL what outlives that."""
        session = [p for p in psutil.process_iter() if _session_of(p) == process.popen.pid]
        children = [c for p in session for c in _children(p)]
        if process.popen.poll() is None:
            children += _children(psutil.Process(process.popen.pid))
            process.popen.terminate()
            try:
                process.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout_s)
        leftovers = {p.pid: p for p in [*session, *children] if p.pid != process.popen.pid}
        for child in leftovers.values():
            try:
                child.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(list(leftovers.values()), timeout=timeout_s)
        for child in alive:
            child.kill()
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)


def _session_of(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """Background processes for one test module, all stopped at its end."""
    group = Processes(tmp_path_factory.mktemp("process-logs"))
    try:
        yield group
    finally:
        group.stop_all()


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, what: str, process: Process | None = None
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` (and the process log)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None:
            process.check_alive()
        if time.monotonic() > deadline:
            detail = f"; log {process.log}:\n{process.tail()}" if process else ""
            raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s{detail}")
        time.sleep(0.25)


@dataclass
class Server:
    url: str
    env: dict[str, str]  # for CLI subprocesses: this server, prompts off
    process: Process

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run ``python -m prefect ARGS`` from the repository root; return its output."""
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=REPO_ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def server(processes: Processes, tmp_path_factory: pytest.TempPathFactory) -> Server:
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = clean_env(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        MPLBACKEND="Agg",
    )
    env.pop("INSARFLOW_HOME", None)
    address = ["--host", "127.0.0.1", "--port", str(port)]
    process = processes.start(
        "prefect-server",
        # No scheduler service: the daily sbas-update schedule must not start real runs.
        [sys.executable, "-m", "prefect", "server", "start", *address, "--no-scheduler"],
        env,
    )

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout_s=120, what="prefect server", process=process)
    return Server(url, env, process)
