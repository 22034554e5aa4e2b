"""One run per stack at a time, different stacks side by side, on a real Prefect server.

Flows run in their own processes against a ``prefect server`` on 127.0.0.1 (see
``slot_runner``): the acquire stage of an ad-hoc run waits at a gate until the test opens
it, so "both inside at once" and "the second waits for the first" are observed, not timed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from insarflow.config import StackConfig, dump_config
from insarflow.tasks.lock import stack_limit_name
from tests.conftest import REPO_ROOT

from .conftest import MakeConfig, Process, Processes, Server, wait_until

pytestmark = pytest.mark.slow

WAIT_S = 300


@pytest.fixture(scope="module", autouse=True)
def _api(server: Server) -> Iterator[None]:
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        yield


def _config(make_config: MakeConfig, root: Path, name: str) -> Path:
    config: StackConfig = make_config(root / name, 4).model_copy(update={"name": name})
    path = root / f"{name}.yaml"
    path.write_text(dump_config(config))
    return path


def _start(
    processes: Processes, server: Server, kind: str, config: Path, gate: Path, tag: str
) -> Process:
    args = [sys.executable, "-m", "tests.orchestration.slot_runner", kind, config, gate]
    env = {**server.env, "PYTHONPATH": str(REPO_ROOT)}
    return processes.start(f"{tag}-{kind}-{config.stem}", args, env)


def _events(gate: Path) -> list[str]:
    path = gate / "events"
    return path.read_text().splitlines() if path.exists() else []


def _finish(process: Process) -> str:
    rc = process.popen.wait(WAIT_S)
    assert rc == 0, f"{process.name} exited {rc}:\n{process.tail()}"
    return process.log.read_text()


def test_two_stacks_run_side_by_side(
    server: Server, processes: Processes, make_config: MakeConfig, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    runs = [
        _start(processes, server, "sbas", _config(make_config, tmp_path, name), gate, "pair")
        for name in ("alpha", "beta")
    ]

    # both are inside their stack's slot at the same time
    wait_until(
        lambda: {"enter alpha", "enter beta"} <= set(_events(gate)),
        timeout_s=WAIT_S,
        what="both stacks inside their slots",
        process=runs[0],
    )
    (gate / "open").touch()
    for run in runs:
        assert "STATE: Completed" in _finish(run)
    assert sorted(_events(gate)[:2]) == ["enter alpha", "enter beta"]
    with get_client(sync_client=True) as client:
        for name in ("alpha", "beta"):
            limit = client.read_global_concurrency_limit_by_name(stack_limit_name(name))
            assert (limit.limit, limit.active_slots) == (1, 0)


def test_an_update_waits_for_the_running_adhoc_run_of_its_stack(
    server: Server, processes: Processes, make_config: MakeConfig, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    config = _config(make_config, tmp_path, "gamma")
    adhoc = _start(processes, server, "sbas", config, gate, "same")
    wait_until(
        lambda: "enter gamma" in _events(gate),
        timeout_s=WAIT_S,
        what="the ad-hoc run inside its slot",
        process=adhoc,
    )
    update = _start(processes, server, "update", config, gate, "same")
    wait_until(
        lambda: "is being processed by another run; waiting" in update.log.read_text(),
        timeout_s=WAIT_S,
        what="the update waiting for the stack's slot",
        process=update,
    )
    (gate / "open").touch()
    assert "STATE: Completed" in _finish(adhoc)
    # It looked for new dates only after the ad-hoc run had acquired them all: had it run
    # beside it, it would have found 4 new dates and been refused by the stack's lock file.
    assert "STATE: Nothing new" in _finish(update)
    assert _events(gate) == ["enter gamma", "leave gamma"]
