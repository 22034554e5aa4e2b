"""The simulator stack with ``compute.jobqueue`` on a real single-node SLURM (``slurm`` fixture).

One run of the whole flow (acquire -> products) puts every topsStack line into one of two
SLURM worker jobs (the cluster adapts from none as lines queue) and MintPy's parallel steps
into jobs of the same specification; the same
stack run on the local cluster gives the same products, byte for byte. Two more stacks each
lose a worker job while it runs lines, one cancelled (``scancel``), one killed by SLURM for
its walltime: those lines run again in another job, finished ones do not, the report names
the lost worker, and a new job replaces it. A specification SLURM refuses is
reported before anything runs, naming the field and SLURM's words.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import h5py
import pytest
import xarray as xr
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from insarflow.compute import task_runner_kwargs
from insarflow.config import ComputeConfig, ConfigError, JobqueueConfig, StackConfig
from insarflow.flows.sbas import SbasResult, sbas
from insarflow.flows.topsstack import topsstack_flow
from insarflow.tasks.topsstack.executor import ExecutionReport, render_report
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files
from tests.orchestration.conftest import tiny_stack_config, wait_until
from tests.orchestration.test_distributed import write_run_files
from tests.support.slurm import MEMORY_MB, SingleNodeSlurm

pytestmark = [
    pytest.mark.slow,
    # rasterio/rioxarray transforms go through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

DATES = 3
JOB_MEMORY_GB = 2
# what a worker advertises: 90 % of its job's memory
WORKER_MB = int(JOB_MEMORY_GB * 1024 * 0.9)


def slurm_compute(**changes: Any) -> ComputeConfig:
    """Two worker jobs of 2 cores, 2 GB and one GPU each (the test node has 4 cores, 2 GPUs)."""
    spec = {
        "kind": "slurm",
        "cores": 2,
        "memory_gb": JOB_MEMORY_GB,
        "walltime": "00:10:00",
        "jobs": 2,
        "min_jobs": 2,
        "gpus_per_job": 1,
        **changes,
    }
    return ComputeConfig(jobqueue=JobqueueConfig.model_validate(spec))


def stack_config(work_dir: Path, compute: ComputeConfig) -> StackConfig:
    config = tiny_stack_config(work_dir, DATES)
    config.topsstack.use_gpu = True
    config.compute = compute
    return StackConfig.model_validate(config.model_dump())


def line_logs(log_dir: Path) -> dict[str, str]:
    """Line id -> its log, for every topsStack line log under ``log_dir``."""
    logs = {}
    for path in log_dir.rglob("*.log"):
        text = path.read_text(errors="replace")
        match = re.match(r"### line (\S+) ", text)
        if match:
            logs[match.group(1)] = text
    return logs


def job_ids(text: str) -> list[str]:
    return re.findall(r"SLURM_JOB_ID=(\S+)", text)


def data_hashes(work: Path) -> dict[str, str]:
    """SHA-256 of the products' data: topsStack's merged rasters, MintPy's time series and
    velocity arrays, the zarr store's variables (sidecars and attributes name paths and the
    configuration, so they differ between work directories by design)."""
    out = {
        str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((work / "stack" / "merged").rglob("*"))
        if p.is_file() and p.suffix not in {".xml", ".vrt", ".rsc"}
    }
    for name, dataset in (("timeseries.h5", "timeseries"), ("velocity.h5", "velocity")):
        with h5py.File(work / "mintpy" / name, "r") as h5:
            out[f"mintpy/{name}:{dataset}"] = hashlib.sha256(h5[dataset][()].tobytes()).hexdigest()
    with xr.open_zarr(work / "products" / "timeseries.zarr") as ds:
        for var in sorted(ds.data_vars):
            out[f"zarr:{var}"] = hashlib.sha256(ds[var].values.tobytes()).hexdigest()
    return out


@dataclass
class Run:
    config: StackConfig
    result: SbasResult
    flow_run_id: Any


@pytest.fixture(scope="module")
def slurm_run(
    slurm: SingleNodeSlurm, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    # no job until lines queue: the cluster adapts from 0 to 2 jobs by itself
    compute = slurm_compute(min_jobs=0)
    config = stack_config(tmp_path_factory.mktemp("on-slurm") / "work", compute)
    state = sbas(config, return_state=True)
    return Run(config, state.result(), state.state_details.flow_run_id)


@pytest.fixture(scope="module")
def local_run(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Run:
    compute = ComputeConfig(workers=2, threads_per_worker=1, memory_gb=4.0, gpus=1)
    config = stack_config(tmp_path_factory.mktemp("local") / "work", compute)
    state = sbas(config, return_state=True)
    return Run(config, state.result(), state.state_details.flow_run_id)


def worker_jobs(config: StackConfig) -> list[str]:
    """Ids of the worker jobs whose output went to the run's ``logs/jobs``, oldest first."""
    ids = {p.stem.rsplit("-", 1)[1] for p in (config.paths.logs / "jobs").glob("dask-worker-*")}
    return sorted(ids, key=int)


def test_every_line_ran_in_a_slurm_job(slurm_run: Run) -> None:
    lines = parse_run_files(slurm_run.config.paths.stack)
    logs = line_logs(slurm_run.config.paths.logs)
    assert sorted(logs) == sorted(line.line_id for line in lines)
    used = {line_id: job_ids(text) for line_id, text in logs.items()}
    assert all(len(ids) == 1 for ids in used.values()), used  # each ran once, in a job
    topsstack_jobs = {ids[0] for ids in used.values()}
    assert len(topsstack_jobs) == 2, "the cluster grew from no job to both, and both ran lines"
    assert topsstack_jobs <= set(worker_jobs(slurm_run.config))


def test_job_directives_and_worker_resources_agree(slurm_run: Run, slurm: SingleNodeSlurm) -> None:
    """Each worker job asked SLURM for the job's memory, cores, walltime and GPU, and its
    worker advertises 90 % of that memory, the GPU and its cores (SLOTS); no line reserved
    more than that."""
    logs = line_logs(slurm_run.config.paths.logs)
    for job in sorted({job_ids(text)[0] for text in logs.values()}):
        script = slurm.run("scontrol", "write", "batch_script", job, "-")
        assert "#SBATCH --mem=2G" in script
        assert "#SBATCH --gres=gpu:1" in script
        assert "#SBATCH --cpus-per-task=2" in script
        assert "#SBATCH -t 00:10:00" in script
        assert f"--resources MEMORY_MB={WORKER_MB},GPU=1,SLOTS=2" in script
        assert f"\n{sys.executable} -m distributed.cli.dask_worker " in script
        job = slurm.run("scontrol", "show", "job", job)
        for granted in ("MinMemoryNode=2G", "NumCPUs=2", "TimeLimit=00:10:00", "gres:gpu:1"):
            assert granted in job, (granted, job)
    reserved = [int(m) for text in logs.values() for m in re.findall(r"MEMORY_MB=(\d+)", text)]
    assert reserved and max(reserved) <= WORKER_MB


def test_task_runs_of_the_lines_land_in_the_flows_api(slurm_run: Run) -> None:
    labels = sorted(line.label for line in parse_run_files(slurm_run.config.paths.stack))
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(limit=200)
        topsstack = [
            r
            for r in children
            if r.parameters.get("stack_dir") == str(slurm_run.config.paths.stack)
        ]
        assert len(topsstack) == 1, [r.parameters for r in children]
        runs: list[Any] = []

        def recorded() -> bool:
            nonlocal runs
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[topsstack[0].id])),
                limit=200,
            )
            return len(runs) >= len(labels)

        wait_until(recorded, timeout_s=30, what="the lines' task runs")
    assert sorted(t.name for t in runs) == labels
    assert {t.state_name for t in runs} == {"Completed"}


def test_mintpy_ran_its_parallel_steps_in_slurm_jobs(slurm_run: Run) -> None:
    logs = slurm_run.config.paths.logs
    line_jobs = {job_ids(text)[0] for text in line_logs(logs).values()}
    mintpy_jobs = set(worker_jobs(slurm_run.config)) - line_jobs
    assert len(mintpy_jobs) >= 2, "MintPy started its own worker jobs"
    invert = (logs / "mintpy" / "invert_network.log").read_text()
    assert "#SBATCH --mem=2G" in invert and "scale Dask cluster to 2 workers" in invert


def test_products_are_identical_to_a_local_run(slurm_run: Run, local_run: Run) -> None:
    on_slurm = data_hashes(slurm_run.config.paths.root)
    local = data_hashes(local_run.config.paths.root)
    assert len(on_slurm) > 30
    assert on_slurm == local


# ------------------------------------------------------------------------ a job is lost

SLOW_STEP = "fullBurst_resample"  # one line per secondary date, all ready at once
SLOW_S = 6.0
# Put first on PATH: sleeps in the lines of SLOW_STEP (recording which job runs them), and on
# while the hold file exists, then becomes the simulator's own SentinelWrapper.py.
SLOW_WRAPPER = """\
import json, os, sys, time
from pathlib import Path

config = Path(sys.argv[sys.argv.index("-c") + 1]).name
if config.startswith("config_{step}_"):
    with open(os.environ["INSARFLOW_TEST_STARTED"], "a", encoding="utf-8") as out:
        out.write(json.dumps({{"config": config, "job": os.environ["SLURM_JOB_ID"]}}) + "\\n")
    time.sleep({seconds})
    while os.path.exists(os.environ["INSARFLOW_TEST_HOLD"]):
        time.sleep(0.2)
real = Path(os.environ["INSARFLOW_TEST_SIMULATOR_BIN"]) / "SentinelWrapper.py"
os.execv(str(real), [str(real), *sys.argv[1:]])
"""


@dataclass
class LostJob:
    config: StackConfig
    lines: list[RunLine]
    report: ExecutionReport
    lost: str  # the worker job SLURM ended mid-stage
    killed: set[str]  # lines that were running in it
    logs: dict[str, str]
    job_log: str  # what the lost job wrote (its worker's log, SLURM's last words)


def lose_a_job(
    slurm: SingleNodeSlurm, root: Path, lose: Callable[[str], None], *, hold: bool
) -> LostJob:
    """The topsStack stage of a small stack on two worker jobs; once a line of SLOW_STEP has
    run a moment, ``lose`` is called (in a thread) with its job to end that job. With ``hold``
    the lines of SLOW_STEP wait until ``lose`` has returned, so they are running whenever the
    job ends."""
    config = stack_config(root / "work", slurm_compute())
    lines = write_run_files(root / "work", lambda work_dir, _dates: config)
    paths = config.paths
    wrapper_bin = root / "slow-bin"
    wrapper_bin.mkdir()
    wrapper = wrapper_bin / "SentinelWrapper.py"
    wrapper.write_text(
        f"#!{sys.executable}\n" + SLOW_WRAPPER.format(step=SLOW_STEP, seconds=SLOW_S)
    )
    wrapper.chmod(0o755)
    simulator_bin = paths.stack / "simulator" / "bin"
    started = root / "started.jsonl"
    started.touch()
    held = root / "hold"
    if hold:
        held.touch()
    lost: list[str] = []
    errors: list[BaseException] = []

    def records() -> list[dict[str, str]]:
        return [json.loads(x) for x in started.read_text().splitlines()]

    def lose_a_busy_job() -> None:
        try:
            wait_until(lambda: bool(records()), timeout_s=240, what=f"a {SLOW_STEP} line")
            time.sleep(1.0)  # the job is in the middle of its lines
            job = records()[0]["job"]
            lose(job)
            lost.append(job)
        except BaseException as exc:  # raised in the test once the stage has ended
            errors.append(exc)
        finally:
            held.unlink(missing_ok=True)

    loser = threading.Thread(target=lose_a_busy_job, daemon=True)
    loser.start()
    # SLURMCluster forgets a lost job, and submits its replacement, after this timeout (15 s)
    timeout = dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"})
    with timeout:
        report = topsstack_flow(
            stack_dir=paths.stack,
            log_dir=paths.logs,
            memory_budget_mb=2 * WORKER_MB,
            n_bursts=2,
            range_looks=config.topsstack.range_looks,
            azimuth_looks=config.topsstack.azimuth_looks,
            use_gpu=True,
            extra_path=[wrapper_bin, simulator_bin],
            env={
                "INSARFLOW_TEST_STARTED": str(started),
                "INSARFLOW_TEST_HOLD": str(held),
                "INSARFLOW_TEST_SIMULATOR_BIN": str(simulator_bin),
            },
            cluster=task_runner_kwargs(config.compute, log_dir=paths.logs / "jobs"),
        )
    loser.join(timeout=10)
    if errors:
        raise errors[0]
    assert lost, "no job was lost"
    by_config = {line.config_path.name: line.line_id for line in lines if line.config_path}
    killed = {by_config[r["config"]] for r in records() if r["job"] == lost[0]}
    job_log = "".join(
        p.read_text(errors="replace")
        for p in sorted((paths.logs / "jobs").glob(f"dask-worker-{lost[0]}.*"))
    )
    return LostJob(config, lines, report, lost[0], killed, line_logs(paths.logs), job_log)


def check_lines_of_the_lost_job_ran_again_elsewhere_and_only_they(lost_job: LostJob) -> None:
    """Nothing lost, nothing run twice but the lines the lost job was running, each again in
    another job; the report names the job's worker for each of them."""
    report = lost_job.report
    assert lost_job.killed, "the lost job was running lines"
    assert not report.failures
    # nothing lost: every line ran (exactly one result each)
    assert sorted(report.ran) == sorted(line.line_id for line in lost_job.lines)
    retried = {a.line_id for a in report.attempts if a.attempt > 1}
    assert retried == lost_job.killed
    for line_id, text in lost_job.logs.items():
        jobs = job_ids(text)
        if line_id in lost_job.killed:
            assert jobs[0] == lost_job.lost and jobs[1] != lost_job.lost, jobs
        else:
            assert len(jobs) == 1, (line_id, jobs)  # finished lines did not run again
    failed = [a for a in report.attempts if a.outcome == "transient"]
    assert {a.line_id for a in failed} == lost_job.killed
    # the worker as its job logged it at start
    name = re.search(r"Worker name:\s+(\S+)", lost_job.job_log)
    address = re.search(r"Start worker at:\s+(\S+)", lost_job.job_log)
    assert name and address, lost_job.job_log
    worker = f"its Dask worker {name[1]} ({address[1]}) was lost while it ran"
    assert all(a.detail.endswith(worker) for a in failed), [a.detail for a in failed]
    markdown = render_report(report, lost_job.lines)
    assert "## Failed attempts" in markdown
    for line_id in lost_job.killed:
        assert f"- `{line_id}` attempt 1 (transient): line {line_id} failed: {worker}" in markdown


def check_a_new_job_replaced_the_lost_one(lost_job: LostJob) -> None:
    """min_jobs is 2: the cluster asks SLURM for another worker once one is gone."""
    # the retried line alone outlasts the (lowered) lost-worker timeout, so the flow was still
    # running when the replacement was submitted
    submitted = worker_jobs(lost_job.config)
    assert len(submitted) == 3, submitted
    assert lost_job.lost in submitted[:2]
    used = {job for text in lost_job.logs.values() for job in job_ids(text)}
    assert used <= set(submitted)


@pytest.fixture(scope="module")
def cancelled_job(
    slurm: SingleNodeSlurm, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> LostJob:
    def cancel(job: str) -> None:
        slurm.run("scancel", job)

    return lose_a_job(slurm, tmp_path_factory.mktemp("cancelled-job"), cancel, hold=False)


def test_lines_of_a_cancelled_job_run_again_elsewhere_and_only_they(
    cancelled_job: LostJob,
) -> None:
    check_lines_of_the_lost_job_ran_again_elsewhere_and_only_they(cancelled_job)


def test_a_new_job_replaces_the_cancelled_one(cancelled_job: LostJob) -> None:
    check_a_new_job_replaced_the_lost_one(cancelled_job)


@pytest.fixture(scope="module")
def timed_out_job(
    slurm: SingleNodeSlurm, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> LostJob:
    """A worker job killed by SLURM for its walltime while it runs lines: SLURM counts time
    limits in minutes, so the busy job's limit is lowered to one minute and SLURM ends it once
    it has run that long (slurmctld looks every 30 s)."""

    def time_out(job: str) -> None:
        slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=1")
        # gone from the queue: its processes, the held lines among them, have ended
        wait_until(lambda: job not in slurm.jobs(), timeout_s=150, what=f"job {job} ended")

    return lose_a_job(slurm, tmp_path_factory.mktemp("timed-out-job"), time_out, hold=True)


def test_slurm_ended_the_job_for_its_walltime(
    timed_out_job: LostJob, slurm: SingleNodeSlurm
) -> None:
    job = timed_out_job.lost
    state = slurm.run("scontrol", "show", "job", job)
    assert "JobState=TIMEOUT Reason=TimeLimit" in state, state
    assert (
        f"Time limit exhausted for JobId={job}"
        in (slurm.root / "log" / "slurmctld.log").read_text()
    )
    assert f"*** JOB {job} ON {slurm.node} CANCELLED AT " in timed_out_job.job_log
    assert " DUE TO TIME LIMIT ***" in timed_out_job.job_log


def test_lines_of_a_job_out_of_walltime_run_again_elsewhere_and_only_they(
    timed_out_job: LostJob,
) -> None:
    check_lines_of_the_lost_job_ran_again_elsewhere_and_only_they(timed_out_job)


def test_a_new_job_replaces_the_one_out_of_walltime(timed_out_job: LostJob) -> None:
    check_a_new_job_replaced_the_lost_one(timed_out_job)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"queue": "no-such-partition"}, "queue", "Invalid partition name specified"),
        (
            {"memory_gb": 2 * MEMORY_MB / 1024},
            "memory_gb",
            "Requested node configuration is not available",
        ),
    ],
)
def test_a_job_slurm_refuses_is_reported_before_any_line_runs(
    slurm: SingleNodeSlurm,
    prefect_harness: None,
    tmp_path: Path,
    changes: dict[str, Any],
    field: str,
    words: str,
) -> None:
    config = stack_config(tmp_path / "work", slurm_compute(**changes))
    with pytest.raises(ConfigError) as caught:
        sbas(config)
    message = str(caught.value)
    assert f"compute.jobqueue.{field}" in message
    assert "(sbatch --test-only: " in message and f"{words})" in message, message
    assert [i.field for i in caught.value.issues] == [f"compute.jobqueue.{field}"]
    assert not config.paths.stack.exists(), "nothing ran"
    assert slurm.jobs() == {}
