"""Fixtures of the reliability suite.

``reference_run`` is one uninterrupted ``insarflow run`` of the tiny simulator stack. It
does three jobs at once, because a whole-flow run is the expensive part of this suite:
it is the uninterrupted baseline the killed runs are compared with, it runs with planted
Earthdata credentials while every process's command line is sampled, and while it holds
the stack lock a second run of the same stack is started (and must be refused). It runs
in a background thread started by the first test that asks for it (the kill-and-resume
test, ordered first), so the two whole-flow workloads share the machine's cores.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from insarflow.config import StackConfig
from tests.reliability.helpers import (
    FIGURES,
    FULL_ENV,
    CommandLineSampler,
    done_lines,
    product_digest,
    start_flow,
    subprocess_env,
    tiny_config,
    wait_until,
    write_config,
)

# A second run of the same stack, reporting how it was refused.
LOCK_PROBE = """
import sys
from pathlib import Path
from insarflow.config import load_config
from insarflow.flows.sbas import sbas
from insarflow.tasks.lock import StackLockedError
try:
    sbas(load_config(Path(sys.argv[1])))
except StackLockedError as exc:
    print("REFUSED", type(exc).__name__, exc, flush=True)
    sys.exit(3)
print("NOT REFUSED", flush=True)
"""


def full_sweep(config: pytest.Config) -> bool:
    """The full sweep runs with INSARFLOW_RELIABILITY_FULL=1 or when ``-m slow`` selects it."""
    markexpr = str(config.getoption("markexpr", "") or "")
    return os.environ.get(FULL_ENV) == "1" or bool(re.search(r"(?<!not )\bslow\b", markexpr))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = [i for i, item in enumerate(items) if item.nodeid.startswith("tests/reliability/")]
    # The kill-and-resume test goes first, so the reference run (a background thread it
    # starts) overlaps it instead of running alone.
    ours = sorted((items[i] for i in here), key=lambda item: "test_kill_resume" not in item.nodeid)
    for i, item in zip(here, ours, strict=True):
        items[i] = item
    if full_sweep(config):
        return
    skip = pytest.mark.skip(reason=f"full reliability sweep: set {FULL_ENV}=1 or use -m slow")
    for item in ours:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for name, value in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{name}: {value}")


@dataclass(frozen=True)
class PlantedSecret:
    """Earthdata credentials planted in the environment and a private netrc."""

    username: str
    password: str
    home: Path

    @property
    def basic_token(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def leaks(self, text: str) -> bool:
        return self.password in text or self.basic_token in text

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "EARTHDATA_USERNAME": self.username,
            "EARTHDATA_PASSWORD": self.password,
            "ESA_USERNAME": self.username,
            "ESA_PASSWORD": self.password,
        }


@pytest.fixture(scope="session")
def planted_secret(tmp_path_factory: pytest.TempPathFactory) -> PlantedSecret:
    home = tmp_path_factory.mktemp("secret-home")
    secret = PlantedSecret("reliability-user", f"Pw-{secrets.token_hex(12)}", home)
    netrc = home / ".netrc"
    netrc.write_text(
        f"machine urs.earthdata.nasa.gov login {secret.username} password {secret.password}\n"
    )
    netrc.chmod(0o600)
    return secret


@pytest.fixture(scope="session")
def api_url(prefect_harness: None) -> str:
    """The Prefect API of this session's harness server (flow subprocesses report to it)."""
    import prefect.settings

    url = prefect.settings.PREFECT_API_URL.value()
    assert url, "prefect_test_harness set no API URL"
    return str(url)


@pytest.fixture(scope="session")
def flow_env(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of flow subprocesses (shared Prefect home and matplotlib cache)."""
    root = tmp_path_factory.mktemp("flow-env")
    return subprocess_env(api_url, root / "prefect-home", MPLCONFIGDIR=str(root / "mpl"))


@dataclass(frozen=True)
class ReferenceRun:
    """The uninterrupted run and what was observed while it ran."""

    config: StackConfig
    config_path: Path
    returncode: int
    output: str
    pid: int
    digest: dict[str, str]
    n_lines: int
    second_returncode: int
    second_output: str
    first_running_when_second_ended: bool
    sampler: CommandLineSampler


class ReferenceRunner:
    """The reference run in a background thread: it overlaps the first tests of the suite."""

    def __init__(self, run: Callable[[], ReferenceRun]) -> None:
        self._result: ReferenceRun | None = None
        self._error: BaseException | None = None

        def target() -> None:
            try:
                self._result = run()
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=target, name="reference-run", daemon=True)
        self._thread.start()

    def result(self) -> ReferenceRun:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@pytest.fixture(scope="session")
def reference_runner(
    tmp_path_factory: pytest.TempPathFactory,
    flow_env: dict[str, str],
    planted_secret: PlantedSecret,
) -> ReferenceRunner:
    root = tmp_path_factory.mktemp("reference")
    return ReferenceRunner(lambda: _reference(root, flow_env, planted_secret))


@pytest.fixture(scope="session")
def reference_run(reference_runner: ReferenceRunner) -> ReferenceRun:
    return reference_runner.result()


def _reference(root: Path, flow_env: dict[str, str], planted_secret: PlantedSecret) -> ReferenceRun:
    config = tiny_config(root / "work")
    config_path = write_config(config, root / "stack.yaml")
    env = {**flow_env, **planted_secret.env()}
    sampler = CommandLineSampler()
    lock = config.paths.root / ".insarflow.lock"
    with sampler.running():
        flow = start_flow(config_path, env, root / "run.log")

        def holds_lock() -> bool:
            try:
                return json.loads(lock.read_text())["pid"] == flow.pid
            except (OSError, ValueError, KeyError, TypeError):
                return False

        wait_until(holds_lock, flow, "the first run holds the stack lock")
        # Sharing the first run's Prefect API, the second would wait for the stack's
        # concurrency slot (tests/orchestration/test_stack_concurrency.py); on an API of its
        # own it meets the last guard, the work directory's lock file.
        probe_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        probe_env["PREFECT_HOME"] = str(root / "probe-prefect")
        probe_env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
        second = subprocess.run(
            [sys.executable, "-c", LOCK_PROBE, str(config_path)],
            env=probe_env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        first_running = flow.running()
        returncode = flow.wait()
    FIGURES["uninterrupted runs"] += 1
    output = flow.output()
    assert returncode == 0, f"the reference run failed:\n{flow.tail()}"
    return ReferenceRun(
        config=config,
        config_path=config_path,
        returncode=returncode,
        output=output,
        pid=flow.pid,
        digest=product_digest(config.paths.root),
        n_lines=done_lines(config).total,
        second_returncode=second.returncode,
        second_output=second.stdout + second.stderr,
        first_running_when_second_ended=first_running,
        sampler=sampler,
    )
