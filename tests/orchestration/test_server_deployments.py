"""The deployments on a real Prefect server, executed by a real process worker.

A ``prefect server`` (own PREFECT_HOME and sqlite database) and a ``prefect worker`` for
the ``insarflow-process`` pool run as subprocesses. The repository's ``prefect.yaml`` is
deployed as is; runs are triggered through the API and run the simulator on a tiny
stack: ``sbas-adhoc`` processes 5 dates, ``sbas-update`` then finds nothing new, and
after the configuration gains 2 dates it adds them, executing only the topsStack lines
that the new dates make necessary.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import xarray as xr
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from insarflow.config import StackConfig
from insarflow.deployments.setup import MEMORY_LIMIT, WORK_POOL
from insarflow.plan import expected_dates
from insarflow.tasks.topsstack.dag import build_dag, descendants
from insarflow.tasks.topsstack.executor import MARKER_DIR
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files
from tests.conftest import REPO_ROOT

from .conftest import MakeConfig, Process, Processes, Server, wait_until

pytestmark = [
    pytest.mark.slow,
    # rioxarray's transform() goes through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:affine"),
]

RUN_TIMEOUT_S = 600
STAGE_FLOWS = ["sbas", "acquire", "topsstack-stage", "sbas-mintpy", "products"]


@pytest.fixture(scope="module", autouse=True)
def _api(server: Server) -> Iterator[None]:
    """Point this process's Prefect client at the server (over any test harness).

    Module-scoped and autouse, so it is set up before the other module fixtures use the API.
    """
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        yield


@pytest.fixture(scope="module")
def deployed(server: Server) -> tuple[list[str], list[str]]:
    """``deployments.setup`` twice, then ``prefect deploy --all``; the two setup outputs."""
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "insarflow.deployments.setup",
                "--gpus",
                "1",
                "--memory-gb",
                "16",
            ],
            cwd=REPO_ROOT,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    # as the README does it: the checkout's path is baked into the pull step
    server.cli("deploy", "--all", env={**server.env, "INSARFLOW_HOME": str(REPO_ROOT)})
    return outputs[0], outputs[1]


@pytest.fixture(scope="module")
def worker(server: Server, deployed: object, processes: Processes) -> Process:
    """A process worker polling the pool every second (no INSARFLOW_HOME of its own)."""
    env = {**server.env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    process = processes.start(
        "prefect-worker",
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL],
        env,
    )

    def registered() -> bool:
        with get_client(sync_client=True) as client:
            return bool(client.read_workers_for_work_pool(WORK_POOL))

    wait_until(registered, timeout_s=120, what="prefect worker", process=process)
    return process


def trigger(name: str, parameters: dict[str, Any], worker: Process) -> FlowRun:
    """Run deployment ``name`` through the API and wait until the run is final."""
    run = run_deployment(name, parameters=parameters, timeout=RUN_TIMEOUT_S, poll_interval=2)
    assert isinstance(run, FlowRun)
    assert run.state is not None and run.state.is_final(), (
        f"{name}: {run.state}; worker log {worker.log}:\n{worker.tail()}"
    )
    return run


def stage_run_counts() -> dict[str, int]:
    with get_client(sync_client=True) as client:
        return {
            name: len(
                client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
            )
            for name in STAGE_FLOWS
        }


def line_runs(log_dir: Path) -> dict[str, int]:
    """How often each topsStack line ran: line log headers per ``<step>/<key>.log``."""
    runs = {}
    for log in log_dir.glob("*/*.log"):
        count = log.read_text().count("### line ")
        if count:
            runs[f"{log.parent.name}-{log.stem}"] = count
    return runs


def files(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def mintpy_dates(mintpy_dir: Path) -> list[str]:
    with h5py.File(mintpy_dir / "timeseries.h5", "r") as f:
        return [d.decode() if isinstance(d, bytes) else str(d) for d in f["date"][()]]


def zarr_dates(store: Path) -> list[str]:
    with xr.open_zarr(store) as ds:
        return [np.datetime_as_string(t, unit="D").replace("-", "") for t in ds.time.values]


# ------------------------------------------------------------------------------ the runs


@dataclass
class Stack:
    config: StackConfig
    adhoc: FlowRun
    adhoc_zarr_dates: list[str]
    nothing_new: FlowRun
    nothing_new_stage_runs: tuple[dict[str, int], dict[str, int]]
    nothing_new_files: tuple[dict[Path, tuple[int, int]], dict[Path, tuple[int, int]]]
    adhoc_lines: list[RunLine]
    adhoc_line_runs: dict[str, int]
    adhoc_markers: dict[str, str]
    updated: FlowRun
    updated_config: StackConfig


def markers(stack_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (stack_dir / MARKER_DIR).glob("*.json")}


@pytest.fixture(scope="module")
def stack(
    worker: Process, make_config: MakeConfig, tmp_path_factory: pytest.TempPathFactory
) -> Stack:
    root = tmp_path_factory.mktemp("deployed-stack")
    config = make_config(root / "work", 5)
    adhoc = trigger("sbas/sbas-adhoc", {"config": config.model_dump(mode="json")}, worker)
    assert adhoc.state is not None and adhoc.state.is_completed(), adhoc.state
    adhoc_zarr_dates = zarr_dates(config.paths.products / "timeseries.zarr")

    paths = config.paths
    files_before, runs_before = files(paths.root), stage_run_counts()
    nothing_new = trigger(
        "sbas-update/sbas-update", {"config": config.model_dump(mode="json")}, worker
    )
    nothing_new_files = (files_before, files(paths.root))
    nothing_new_runs = (runs_before, stage_run_counts())

    adhoc_lines = parse_run_files(paths.stack)
    adhoc_line_runs, adhoc_markers = line_runs(paths.logs), markers(paths.stack)
    grown = make_config(root / "work", 7)
    updated = trigger("sbas-update/sbas-update", {"config": grown.model_dump(mode="json")}, worker)
    return Stack(
        config,
        adhoc,
        adhoc_zarr_dates,
        nothing_new,
        nothing_new_runs,
        nothing_new_files,
        adhoc_lines,
        adhoc_line_runs,
        adhoc_markers,
        updated,
        grown,
    )


# ------------------------------------------------------------------------------ the tests


def test_setup_is_idempotent_against_the_server(deployed: tuple[list[str], list[str]]) -> None:
    first, second = deployed
    assert f"work pool {WORK_POOL}: created" in first
    assert f"work pool {WORK_POOL}: exists" in second
    assert [x for x in first if "work pool" not in x] == [
        "tag limit gpu: 1",
        "tag limit memory-heavy: 2",
        f"global limit {MEMORY_LIMIT}: 16 (created)",
    ]
    assert f"global limit {MEMORY_LIMIT}: 16" in second
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(WORK_POOL).type == "process"
        assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == 1
        assert client.read_global_concurrency_limit_by_name(MEMORY_LIMIT).limit == 16


def test_prefect_yaml_deploys_both_deployments(deployed: object) -> None:
    with get_client(sync_client=True) as client:
        adhoc = client.read_deployment_by_name("sbas/sbas-adhoc")
        update = client.read_deployment_by_name("sbas-update/sbas-update")
    for dep in (adhoc, update):
        assert dep.work_pool_name == WORK_POOL
        # one run per stack comes from each stack's own limit, not the deployment's
        assert dep.global_concurrency_limit is None
        assert dep.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
        ]
    assert adhoc.entrypoint == "flows/sbas.py:sbas" and not adhoc.schedules
    assert update.entrypoint == "flows/update.py:sbas_update"
    assert update.parameters["config"]["name"] == "track142-monitoring"
    # both take the same configuration form
    adhoc_form, update_form = adhoc.parameter_openapi_schema, update.parameter_openapi_schema
    assert adhoc_form["definitions"] == update_form["definitions"]
    assert adhoc_form["required"] == update_form["required"] == ["config"]
    (schedule,) = update.schedules
    assert getattr(schedule.schedule, "cron", None) == "0 5 * * *"


def test_adhoc_run_completes_and_writes_the_zarr_store(stack: Stack) -> None:
    paths = stack.config.paths
    assert stack.adhoc.state is not None and stack.adhoc.state.is_completed()
    dates, _ = expected_dates(stack.config)
    assert len(dates) == 5
    assert stack.adhoc_zarr_dates == dates
    assert (paths.products / "report.html").is_file()
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=STAGE_FLOWS[1:]))
        )
    assert {r.state_name for r in children} == {"Completed"}


def test_update_with_nothing_new_runs_no_stage(stack: Stack) -> None:
    state = stack.nothing_new.state
    assert state is not None
    assert state.is_completed() and state.name == "Nothing new"
    before, after = stack.nothing_new_stage_runs
    assert after == before
    assert stack.nothing_new_files[1] == stack.nothing_new_files[0]


def test_update_with_new_dates_runs_only_what_they_need(stack: Stack) -> None:
    state = stack.updated.state
    assert state is not None and state.is_completed(), state
    assert state.message is not None
    assert state.message.startswith("added 2 date(s): 20250130, 20250211; ")
    paths = stack.updated_config.paths
    # stackSentinel ran in update mode; the first run files were archived, not deleted
    (archived,) = (paths.stack / "archive").glob("*/run_files")
    assert sorted(p.name for p in archived.iterdir()) == sorted(
        {line.run_file.name for line in stack.adhoc_lines}
    )

    lines = parse_run_files(paths.stack)
    new = {"20250130", "20250211"}
    fresh = {ln.line_id for ln in lines if new & set(re.findall(r"\d{8}", ln.key))}
    needed = set(fresh)
    dag = build_dag(lines)
    for line_id in fresh:
        needed |= descendants(dag, line_id)  # e.g. the stack's common valid region
    labels = {ln.line_id: ln.label for ln in lines}
    after = line_runs(paths.logs)
    ran = {label for label, n in after.items() if n != stack.adhoc_line_runs.get(label, 0)}
    assert ran == {labels[i] for i in needed}
    assert all(after[labels[i]] == 1 for i in fresh)
    # Previously finished lines that stackSentinel listed again were skipped: their
    # completion markers are untouched.
    relisted = {labels[i] for i in labels} - {labels[i] for i in needed}
    assert {"unpack_secondary_slc-20250118", "generate_burst_igram-20250106_20250118"} <= relisted
    now = markers(paths.stack)
    for name, text in stack.adhoc_markers.items():
        if name.removesuffix(".json") not in ran:
            assert now[name] == text, name
    assert len(relisted) >= 8

    dates, _ = expected_dates(stack.updated_config)
    assert dates[-2:] == sorted(new)
    assert mintpy_dates(paths.mintpy) == dates
    assert zarr_dates(paths.products / "timeseries.zarr") == dates
