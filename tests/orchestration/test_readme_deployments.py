"""README's "Deployments" commands, run as written against a real Prefect server.

The test takes the shell block from README.md's "Deployments" section and runs it with
bash, substituting only a free port for 4200, the test's virtual environment for
``.venv/bin/``, and a tiny simulator stack for ``mystack.yaml`` (PREFECT_HOME is a temporary
folder; the environment is otherwise this one, less any Prefect setting, with the venv not
on PATH, as on a machine where it was never activated). The block starts ``prefect server``
on 127.0.0.1, sets up the pool and limits, deploys ``prefect.yaml``, starts a process
worker and runs ``sbas-adhoc`` (5 dates) and then ``sbas-update``, which finds nothing new.
The stack's file then gains 2 dates and the README's ``sbas-update`` line runs again: it
adds them, executing only the topsStack lines the new dates make necessary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from insarflow.config import StackConfig, dump_config
from insarflow.deployments.setup import MEMORY_LIMIT, WORK_POOL
from insarflow.plan import expected_dates
from insarflow.tasks.topsstack.dag import build_dag, descendants
from insarflow.tasks.topsstack.executor import MARKER_DIR
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files
from tests.conftest import REPO_ROOT

from .conftest import MakeConfig, Process, Processes, clean_env, free_port

pytestmark = [
    pytest.mark.slow,
    # The block runs two whole stacks' worth of flows in one fixture: 7-9 min on 2 cores
    # that other jobs also load, over the suite's 10-minute default for a hung test.
    pytest.mark.timeout(1200),
    # rioxarray's transform() goes through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:affine"),
]

SCRIPT_TIMEOUT_S = 900
STAGE_FLOWS = ["sbas", "acquire", "topsstack-stage", "sbas-mintpy", "products"]
README_PORT, README_VENV, README_CONFIG = "4200", ".venv/bin/", "mystack.yaml"


def readme_block(readme: str) -> list[str]:
    """The lines of the first ``bash`` block of README's "Deployments" section."""
    section = readme.split("\n## Deployments\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert found, "README's Deployments section has no ```bash block"
    return found.group(1).splitlines()


def substituted(lines: list[str], port: int, config: Path) -> str:
    """The block with only the test's port, virtual environment and configuration."""
    text = "\n".join(lines) + "\n"
    venv_bin = Path(sys.executable).parent
    for old, new in (
        (README_PORT, str(port)),
        (README_VENV, f"{venv_bin}/"),
        (README_CONFIG, str(config)),
    ):
        assert old in text, f"README's Deployments block no longer contains {old!r}"
        text = text.replace(old, new)
    return text


@dataclass
class Readme:
    """The test's copy of README's commands and where they run."""

    lines: list[str]
    port: int
    config: Path  # stands for mystack.yaml
    env: dict[str, str]
    processes: Processes

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def run(self, name: str, lines: list[str]) -> Process:
        """Run ``lines`` with ``bash -e`` from the repository root; fail with its log unless
        it exits 0. Background commands (server, worker) keep running until teardown."""
        script = self.config.parent / f"{name}.sh"
        script.write_text(substituted(lines, self.port, self.config))
        process = self.processes.start(
            name, ["bash", "-e", "-x", script], self.env, cwd=REPO_ROOT, own_session=True
        )
        try:
            code = process.popen.wait(SCRIPT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running after {SCRIPT_TIMEOUT_S} s:\n{process.tail(120)}")
        assert code == 0, f"{name} exited with {code}; log {process.log}:\n{process.tail(120)}"
        return process


@pytest.fixture(scope="module")
def readme(processes: Processes, tmp_path_factory: pytest.TempPathFactory) -> Readme:
    venv_bin = Path(sys.executable).parent.resolve()
    path = [p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != venv_bin]
    env = clean_env(
        PREFECT_HOME=str(tmp_path_factory.mktemp("prefect-home")),
        PATH=os.pathsep.join(path),
        MPLBACKEND="Agg",
        # Not the commands, the test's surroundings: no usage reports leave the machine; no
        # scheduler service, so the daily sbas-update of prefect.yaml's real stack never
        # starts; the worker looks for runs every second rather than every 10.
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    env.pop("INSARFLOW_HOME", None)
    lines = readme_block((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    config = tmp_path_factory.mktemp("operator") / "mystack.yaml"
    return Readme(lines, free_port(), config, env, processes)


@pytest.fixture(scope="module", autouse=True)
def _api(readme: Readme) -> Iterator[None]:
    """Point this process's Prefect client at the README's server (over any test harness).

    Module-scoped and autouse, so it is set up before the other module fixtures use the API.
    """
    with temporary_settings(updates={PREFECT_API_URL: readme.url}):
        yield


def deployment_runs(name: str) -> list[FlowRun]:
    """Flow runs of deployment ``name``, oldest first."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )


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
    script: Process  # README's block, run
    script_lines: list[str]  # README's block, as written
    adhoc: FlowRun
    adhoc_zarr_dates: list[str]
    nothing_new: FlowRun
    stage_runs: dict[str, int]  # after the block
    files_before_update: dict[Path, tuple[int, int]]
    files_after_block: dict[Path, tuple[int, int]]
    adhoc_lines: list[RunLine]
    adhoc_line_runs: dict[str, int]
    adhoc_markers: dict[str, str]


def markers(stack_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (stack_dir / MARKER_DIR).glob("*.json")}


def modified_before(root: Path, time_s: float) -> dict[Path, tuple[int, int]]:
    """Files under ``root`` last modified before ``time_s`` (all, if none changed since)."""
    return {p: v for p, v in files(root).items() if v[1] < time_s * 1e9}


@pytest.fixture(scope="module")
def stack(readme: Readme, make_config: MakeConfig) -> Stack:
    config = make_config(readme.config.parent / "work", 5)
    readme.config.write_text(dump_config(config))
    script = readme.run("readme-deployments", readme.lines)

    (adhoc,) = deployment_runs("sbas-adhoc")
    (nothing_new,) = deployment_runs("sbas-update")
    assert nothing_new.start_time is not None
    paths = config.paths
    return Stack(
        config,
        script,
        readme.lines,
        adhoc,
        zarr_dates(paths.products / "timeseries.zarr"),
        nothing_new,
        stage_run_counts(),
        modified_before(paths.root, nothing_new.start_time.timestamp()),
        files(paths.root),
        parse_run_files(paths.stack),
        line_runs(paths.logs),
        markers(paths.stack),
    )


@dataclass
class Grown:
    config: StackConfig
    updated: FlowRun


@pytest.fixture(scope="module")
def grown(stack: Stack, readme: Readme, make_config: MakeConfig) -> Grown:
    """The stack's file gains 2 dates; README's ``export`` and ``sbas-update`` lines again."""
    config = make_config(readme.config.parent / "work", 7)
    readme.config.write_text(dump_config(config))
    again = [
        line
        for line in readme.lines
        if line.startswith("export PREFECT_API_URL=") or "sbas-update/sbas-update" in line
    ]
    assert len(again) == 2, again
    readme.run("readme-update-again", again)
    updated = deployment_runs("sbas-update")[-1]
    return Grown(config, updated)


# ------------------------------------------------------------------------------ the tests


def test_setup_created_the_pool_and_the_limits_it_was_given(stack: Stack) -> None:
    (setup_line,) = [ln for ln in stack.script_lines if "insarflow.deployments.setup" in ln]
    memory_gb, gpus = (
        int(re.findall(rf"{opt} (\d+)", setup_line)[0]) for opt in ("--memory-gb", "--gpus")
    )
    log = stack.script.log.read_text()
    assert f"work pool {WORK_POOL}: created" in log
    assert f"global limit {MEMORY_LIMIT}: {memory_gb} (created)" in log
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(WORK_POOL).type == "process"
        assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == gpus
        assert client.read_global_concurrency_limit_by_name(MEMORY_LIMIT).limit == memory_gb


def test_prefect_yaml_deploys_both_deployments(stack: Stack) -> None:
    with get_client(sync_client=True) as client:
        adhoc = client.read_deployment_by_name("sbas/sbas-adhoc")
        update = client.read_deployment_by_name("sbas-update/sbas-update")
    for dep in (adhoc, update):
        assert dep.work_pool_name == WORK_POOL
        # one run per stack comes from each stack's own limit, not the deployment's
        assert dep.global_concurrency_limit is None
        # INSARFLOW_HOME=$PWD, run from the repository root
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


def test_runs_got_the_operators_configuration(stack: Stack) -> None:
    # work_dir as `insarflow run mystack.yaml` reads it: absolute, from where it ran
    expected = {**stack.config.model_dump(mode="json"), "work_dir": str(stack.config.paths.root)}
    assert stack.adhoc.parameters == {"config": expected}
    assert stack.nothing_new.parameters == {"config": expected}


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
    # the stage flows ran once each, for the ad-hoc run
    assert stack.stage_runs == dict.fromkeys(STAGE_FLOWS, 1)
    assert stack.files_after_block == stack.files_before_update


def test_update_with_new_dates_runs_only_what_they_need(stack: Stack, grown: Grown) -> None:
    state = grown.updated.state
    assert state is not None and state.is_completed(), state
    assert state.message is not None
    assert state.message.startswith("added 2 date(s): 20250130, 20250211; ")
    paths = grown.config.paths
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

    dates, _ = expected_dates(grown.config)
    assert dates[-2:] == sorted(new)
    assert mintpy_dates(paths.mintpy) == dates
    assert zarr_dates(paths.products / "timeseries.zarr") == dates
