"""The topsStack executor on a real multi-process Dask cluster with worker resources.

A ``dask scheduler`` and two ``dask worker`` processes run on 127.0.0.1: worker
``gpu-worker`` advertises ``MEMORY_MB=4000,GPU=1``, worker ``cpu-worker`` only
``MEMORY_MB=4000``. The run files are the simulator's stackSentinel output for a small
stack; the programs they call are replaced by a stand-in that writes the line's outputs
and records which worker process started it (each worker runs with its name in
``$INSARFLOW_TEST_WORKER``, which the line's subprocess inherits), when, and the memory
reservation it was given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import stat
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from dask.utils import parse_bytes
from distributed import Client
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from insarflow.compute import task_runner_kwargs, workers_of
from insarflow.config import ComputeConfig, JobqueueConfig
from insarflow.engine import check_smallest_pieces
from insarflow.flows.stages import scene_spec_for
from insarflow.flows.topsstack import topsstack_flow
from insarflow.simulator.acquisition import make_synthetic_acquisitions
from insarflow.simulator.steps import install_simulator_bin
from insarflow.tasks.topsstack import multicore
from insarflow.tasks.topsstack.executor import ExecutionReport, line_memory_mb
from insarflow.tasks.topsstack.learned_memory import LearnedMemory
from insarflow.tasks.topsstack.resources import resource_class
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files
from insarflow.tasks.topsstack.stack_sentinel import build_stack_sentinel_args, run_stack_sentinel

from .conftest import MakeConfig, Process, Processes, clean_env, wait_until

WORKER_MB = 4000
WORKERS = {"gpu-worker": f"MEMORY_MB={WORKER_MB},GPU=1", "cpu-worker": f"MEMORY_MB={WORKER_MB}"}
# Three threads per worker: several lines could run at once on one worker, so only the
# MEMORY_MB reservations keep the heavy ones apart.
THREADS = 3
N_BURSTS = 2
DATES = 5

# Stand-in for the topsStack programs: writes the outputs the plan lists for its command
# line and appends one JSON record per run.
STAND_IN = """\
import json, os, sys, time
from pathlib import Path

plan = json.loads(Path(os.environ["INSARFLOW_TEST_PLAN"]).read_text())
key = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
spec = plan["lines"][key]
start = time.time()
time.sleep(spec["sleep"])
for output in spec["outputs"]:
    path = Path(output)
    if path.suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(spec["line_id"])
    else:
        path.mkdir(parents=True, exist_ok=True)
        (path / "done.txt").write_text(spec["line_id"])
record = {
    "line_id": spec["line_id"],
    "worker": os.environ.get("INSARFLOW_TEST_WORKER", "<none>"),
    "memory_mb": int(os.environ["INSARFLOW_LINE_MEMORY_MB"]),
    "start": start,
    "end": time.time(),
}
with open(plan["record_file"], "a", encoding="utf-8") as fh:
    fh.write(json.dumps(record) + "\\n")
"""


@dataclass
class Cluster:
    address: str
    scheduler: Process
    workers: dict[str, Process]


@contextlib.contextmanager
def dask_cluster(
    processes: Processes, root: Path, workers: dict[str, str], threads: int
) -> Iterator[Cluster]:
    """A scheduler and ``workers`` (name -> resources), started as processes and stopped by
    PID."""
    scheduler_file = root / "scheduler.json"
    env = clean_env(PREFECT_HOME=str(root / "prefect-home"))
    dask = [sys.executable, "-m", "dask"]
    scheduler_args = ["--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    scheduler = processes.start(
        "dask-scheduler",
        [*dask, "scheduler", *scheduler_args, "--scheduler-file", str(scheduler_file)],
        env,
    )
    wait_until(scheduler_file.is_file, timeout_s=60, what="dask scheduler", process=scheduler)
    address = json.loads(scheduler_file.read_text())["address"]
    worker_args = ["--nthreads", str(threads), "--host", "127.0.0.1", "--no-nanny"]
    started = {
        name: processes.start(
            name,
            [
                *dask,
                "worker",
                address,
                *("--name", name, "--resources", resources, *worker_args),
                *("--no-dashboard", "--local-directory", str(root / name)),
            ],
            {**env, "INSARFLOW_TEST_WORKER": name},
        )
        for name, resources in workers.items()
    }
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(len(workers), timeout=90)
        yield Cluster(address, scheduler, started)
    finally:
        for worker in started.values():
            processes.stop(worker)
        processes.stop(scheduler)


@pytest.fixture(scope="module")
def cluster(processes: Processes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with dask_cluster(processes, tmp_path_factory.mktemp("dask"), WORKERS, THREADS) as started:
        with Client(started.address, timeout=60) as client:
            advertised = {
                info["name"]: info["resources"]
                for info in client.scheduler_info(n_workers=-1)["workers"].values()
            }
        assert advertised == {
            "gpu-worker": {"MEMORY_MB": WORKER_MB, "GPU": 1},
            "cpu-worker": {"MEMORY_MB": WORKER_MB},
        }
        yield started


@dataclass
class Run:
    lines: list[RunLine]
    report: ExecutionReport
    records: list[dict[str, Any]]
    flow_run_id: UUID | None


def write_run_files(config_root: Path, make_config: MakeConfig) -> list[RunLine]:
    """The simulator's stackSentinel run files of a small stack (nothing executed)."""
    config = make_config(config_root, DATES)
    config.topsstack.use_gpu = True
    paths = config.paths
    make_synthetic_acquisitions(paths.slc, paths.orbits, paths.dem, scene_spec_for(config))
    ts = config.topsstack
    args = build_stack_sentinel_args(
        slc_dir=paths.slc,
        work_dir=paths.stack,
        orbit_dir=paths.orbits,
        aux_dir=paths.aux,
        dem_path=next(paths.dem.glob("*.dem.wgs84")),
        swaths=ts.swaths,
        bbox=config.area.snwe(),
        connections=1,
        azimuth_looks=ts.azimuth_looks,
        range_looks=ts.range_looks,
        filter_strength=ts.filter_strength,
        coregistration=ts.coregistration,
        polarization=config.acquisition.polarization,
        use_gpu=True,
    )
    paths.aux.mkdir(parents=True, exist_ok=True)
    run_stack_sentinel(
        args,
        stack_dir=paths.stack,
        log_path=paths.logs / "stackSentinel.log",
        extra_path=[install_simulator_bin(paths.stack / "simulator" / "bin")],
    )
    return parse_run_files(paths.stack)


def run_stand_ins(
    address: str,
    root: Path,
    make_config: MakeConfig,
    *,
    n_bursts: int,
    use_gpu: bool,
    sleep_s: Callable[[RunLine], float],
) -> Run:
    """The simulator's run files of a small stack, their programs replaced by the stand-in
    (each line sleeping ``sleep_s(line)``), through the executor on the cluster at
    ``address``."""
    lines = write_run_files(root / "work", make_config)
    stack_dir = root / "work" / "stack"
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for program in {Path(line.command[0]).name for line in lines}:
        script = bin_dir / program
        script.write_text(f"#!{sys.executable}\n{STAND_IN}")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    record_file = root / "records.jsonl"
    plan = {
        "record_file": str(record_file),
        "lines": {
            " ".join([Path(line.command[0]).name, *line.command[1:]]): {
                "line_id": line.line_id,
                "sleep": sleep_s(line),
                "outputs": [str(p) for p in line.outputs],
            }
            for line in lines
        },
    }
    plan_file = root / "plan.json"
    plan_file.write_text(json.dumps(plan))
    state = topsstack_flow(
        stack_dir=stack_dir,
        log_dir=root / "logs",
        memory_budget_mb=2 * WORKER_MB,
        n_bursts=n_bursts,
        range_looks=9,
        azimuth_looks=3,
        use_gpu=use_gpu,
        extra_path=[bin_dir],
        env={"INSARFLOW_TEST_PLAN": str(plan_file)},
        scheduler_address=address,
        learn_memory=False,  # the reservations below are checked against the model's estimates
        return_state=True,
    )
    records = [json.loads(x) for x in record_file.read_text().splitlines()]
    return Run(lines, state.result(), records, state.state_details.flow_run_id)


@pytest.fixture(scope="module")
def run(
    cluster: Cluster,
    prefect_harness: None,
    make_config: MakeConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    return run_stand_ins(
        cluster.address,
        tmp_path_factory.mktemp("distributed"),
        make_config,
        n_bursts=N_BURSTS,
        use_gpu=True,
        # the GPU lines take longest, so other lines are ready while they run
        sleep_s=lambda line: 0.5 if resource_class(line.step, True) == "gpu" else 0.25,
    )


def test_every_line_ran_once_on_a_worker_process(run: Run, cluster: Cluster) -> None:
    ids = [line.line_id for line in run.lines]
    assert len(ids) == 45  # 1 + 4 x 4 secondary steps + 1 + (5 + 6) merges + 4 x 4 pair steps
    assert sorted(run.report.ran) == sorted(ids)
    assert not run.report.failures
    assert sorted(r["line_id"] for r in run.records) == sorted(ids)
    workers = {r["worker"] for r in run.records}
    assert workers == set(WORKERS), "both workers (and only they) ran lines"
    for process in cluster.workers.values():
        process.check_alive()


def test_task_runs_of_the_lines_land_in_the_flows_api(run: Run) -> None:
    """Workers run only the plain line function; the task runs are the flow process's."""
    expected = sorted(line.label for line in run.lines)
    task_runs: list[Any] = []

    def recorded() -> bool:
        # The API records task runs from their state events, a moment after the flow returns
        # (newer Prefect releases): wait for the last ones instead of reading once.
        nonlocal task_runs
        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.flow_run_id])),
                limit=200,
            )
        return len(task_runs) >= len(expected) and all(
            t.state_name == "Completed" for t in task_runs
        )

    with contextlib.suppress(TimeoutError):  # the asserts below say what is missing
        wait_until(recorded, timeout_s=30, what="the lines' task runs")
    assert sorted(t.name for t in task_runs) == expected
    assert {t.state_name for t in task_runs} == {"Completed"}


def test_gpu_lines_ran_only_on_the_gpu_worker(run: Run) -> None:
    gpu_ids = {ln.line_id for ln in run.lines if resource_class(ln.step, True) == "gpu"}
    assert len(gpu_ids) == DATES  # topo of the reference + geo2rdr of each secondary
    placed = {r["line_id"]: r["worker"] for r in run.records}
    assert {placed[i] for i in gpu_ids} == {"gpu-worker"}
    # GPU=1: no two GPU lines at once
    spans = sorted((r["start"], r["end"]) for r in run.records if r["line_id"] in gpu_ids)
    assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))


def test_memory_reservations_are_respected_per_worker(run: Run) -> None:
    by_id = {ln.line_id: ln for ln in run.lines}
    for record in run.records:
        estimate = line_memory_mb(
            by_id[record["line_id"]], n_bursts=N_BURSTS, range_looks=9, azimuth_looks=3
        )
        assert record["memory_mb"] == min(estimate, WORKER_MB), record["line_id"]
    peaks: dict[str, tuple[int, int]] = {}
    events: defaultdict[str, list[tuple[float, int, int]]] = defaultdict(list)
    for r in run.records:
        events[r["worker"]] += [(r["start"], 1, r["memory_mb"]), (r["end"], 0, -r["memory_mb"])]
    for worker, worker_events in events.items():
        total = running = peak_mb = peak_count = 0
        for _, is_start, delta in sorted(worker_events):  # an end sorts before a start
            total += delta
            running += 1 if is_start else -1
            peak_mb, peak_count = max(peak_mb, total), max(peak_count, running)
        peaks[worker] = (peak_mb, peak_count)
    assert all(peak_mb <= WORKER_MB for peak_mb, _ in peaks.values()), peaks
    # Lines did share a worker, so the reservations (not the thread count) kept the sum down.
    assert max(count for _, count in peaks.values()) >= 2, peaks
    heavy = [r for r in run.records if r["memory_mb"] > WORKER_MB / 2]
    assert len(heavy) > 10


def test_a_line_bigger_than_every_worker_stops_the_stage_naming_its_need_and_the_worker(
    run: Run, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The same two worker processes, asked for a stack of 20 bursts: before any line runs, the
    stage stops naming the lines whose smallest piece exceeds the largest worker's MEMORY_MB,
    their need and the worker; snaphu lines count in their finest tiles. With the simulator's
    lines (not real ISCE2's) the same words are a warning."""
    many_bursts = 20

    @flow
    def check(real_isce2: bool = True) -> None:
        with Client(cluster.address, timeout=60) as client:
            check_smallest_pieces(
                run.lines,
                workers_of(client),
                LearnedMemory(),  # nothing learned: the model's estimates
                memory_budget_mb=10**6,
                n_bursts=many_bursts,
                range_looks=9,
                azimuth_looks=3,
                real_isce2=real_isce2,
            )

    with pytest.raises(ValueError) as caught:
        check()
    message = str(caught.value)
    caplog.clear()
    caplog.set_level(logging.WARNING)
    check(real_isce2=False)
    warnings = [
        r.getMessage() for r in caplog.records if "cannot run in the memory" in r.getMessage()
    ]
    assert len(warnings) == 1 and "filter_coherence" in warnings[0]
    over = [
        line
        for line in run.lines
        if multicore.smallest_piece_mb(
            line,
            line_memory_mb(line, n_bursts=many_bursts, range_looks=9, azimuth_looks=3),
            n_bursts=many_bursts,
            looks=27,
            unwrap_in_tiles=True,
        )
        > WORKER_MB
    ]
    assert over, "the check needs lines bigger than a worker"
    need = line_memory_mb(over[0], n_bursts=many_bursts, range_looks=9, azimuth_looks=3)
    assert f"{over[0].line_id} needs {need} MB" in message
    assert f"advertises MEMORY_MB={WORKER_MB}" in message
    assert "gpu-worker" in message or "cpu-worker" in message
    assert "compute.memory_gb" in message and "MEMORY_MB=" in message
    # lines within a worker's memory are not named
    fitting = [line for line in run.lines if line not in over]
    assert not any(f"{line.line_id} needs" in message for line in fitting)
    # nor are snaphu lines, whose finest tiles fit where one piece would not
    unwrap = [line for line in run.lines if line.step == "unwrap"]
    assert unwrap and all(
        line_memory_mb(line, n_bursts=many_bursts, range_looks=9, azimuth_looks=3) > WORKER_MB
        for line in unwrap
    )
    assert not any(f"{line.line_id} needs" in message for line in unwrap)


def test_a_line_of_several_slots_holds_them_all_on_its_worker(
    processes: Processes, prefect_harness: None, make_config: MakeConfig, tmp_path: Path
) -> None:
    """Workers on hosts of their own advertise SLOTS (what a jobqueue job does: its cores).
    The topo line, which could use 8 cores, gets the 2 slots of one worker and holds both
    there: no other line shares its worker while it runs, and the other worker runs lines
    meanwhile."""
    (tmp_path / "dask").mkdir()
    workers = dict.fromkeys(("host-a", "host-b"), f"MEMORY_MB={WORKER_MB},SLOTS=2")
    with dask_cluster(processes, tmp_path / "dask", workers, threads=2) as cluster:
        run = run_stand_ins(
            cluster.address,
            tmp_path,
            make_config,
            n_bursts=8,
            use_gpu=False,
            sleep_s=lambda line: 3.0 if line.step == multicore.TOPO_STEP else 0.25,
        )
    (topo,) = [r for r in run.records if f"_{multicore.TOPO_STEP}:" in r["line_id"]]
    log_path = run.report.results[topo["line_id"]].log_path
    assert log_path is not None and "topo in 2 processes" in log_path.read_text()
    beside = [r for r in run.records if r["start"] < topo["end"] and r["end"] > topo["start"]]
    beside.remove(topo)
    assert beside, "no line ran beside topo: it held more slots than its worker's"
    assert {r["worker"] for r in beside} == set(workers) - {topo["worker"]}, (topo, beside)


def test_slurm_spec_advertises_memory_and_gpu_resources() -> None:
    from dask_jobqueue.slurm import SLURMJob

    compute = ComputeConfig(
        jobqueue=JobqueueConfig(
            kind="slurm",
            queue="gpu",
            account="insar",
            cores=8,
            memory_gb=32,
            walltime="02:00:00",
            jobs=3,
            gpus_per_job=1,
        )
    )
    kwargs = task_runner_kwargs(compute)
    assert kwargs["cluster_class"] == "dask_jobqueue.SLURMCluster"
    spec = kwargs["cluster_kwargs"]
    assert spec["worker_extra_args"] == ["--resources", "MEMORY_MB=29491,GPU=1,SLOTS=8"]
    assert spec["job_extra_directives"] == ["--gres=gpu:1"]
    assert (spec["processes"], parse_bytes(spec["memory"])) == (1, 32e9)
    assert kwargs["adapt"] == {"minimum_jobs": 1, "maximum_jobs": 3}
    # The same arguments render a job script (no cluster, nothing submitted).
    job_args = {k: v for k, v in spec.items() if k != "scheduler_options"}
    script = SLURMJob(scheduler="tcp://127.0.0.1:8786", name="insarflow", **job_args).job_script()
    assert "--resources MEMORY_MB=29491,GPU=1,SLOTS=8" in script
    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH -p gpu" in script and "#SBATCH -A insar" in script
    assert "#SBATCH -t 02:00:00" in script


def test_pbs_spec_advertises_no_gpu_and_local_workers_no_slots() -> None:
    pbs = task_runner_kwargs(
        ComputeConfig(jobqueue=JobqueueConfig(kind="pbs", memory_gb=10, gpus_per_job=0))
    )
    assert pbs["cluster_class"] == "dask_jobqueue.PBSCluster"
    assert pbs["cluster_kwargs"]["worker_extra_args"] == ["--resources", "MEMORY_MB=9216,SLOTS=8"]
    assert "job_extra_directives" not in pbs["cluster_kwargs"]
    local = task_runner_kwargs(ComputeConfig(workers=2, memory_gb=8.0, gpus=1))
    assert local["cluster_kwargs"]["resources"] == {"MEMORY_MB": 4096.0, "GPU": 1.0}
    remote = task_runner_kwargs(ComputeConfig(scheduler_address="tcp://10.0.0.5:8786"))
    assert remote == {"address": "tcp://10.0.0.5:8786"}
