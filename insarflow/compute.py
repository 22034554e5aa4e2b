"""The Dask cluster a run uses, from ``compute`` in the configuration.

Workers advertise resources that tasks reserve: ``MEMORY_MB`` (each topsStack line
reserves its estimate, so the running sum stays under the budget) and ``GPU``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from insarflow.config import ComputeConfig


def worker_resources(memory_mb: int, gpus: int) -> dict[str, float]:
    """Resources one worker advertises."""
    resources: dict[str, float] = {"MEMORY_MB": float(memory_mb)}
    if gpus:
        resources["GPU"] = float(gpus)
    return resources


def _resources_arg(resources: dict[str, float]) -> str:
    return ",".join(f"{k}={int(v)}" for k, v in resources.items())


def task_runner_kwargs(compute: ComputeConfig) -> dict[str, Any]:
    """Keyword arguments for ``prefect_dask.DaskTaskRunner`` (also usable for inspection/tests)."""
    if compute.scheduler_address:
        return {"address": compute.scheduler_address}
    if compute.jobqueue is not None:
        jq = compute.jobqueue
        per_worker = worker_resources(int(jq.memory_gb * 1024 * 0.9), jq.gpus_per_job)
        cluster_class = {
            "slurm": "dask_jobqueue.SLURMCluster",
            "pbs": "dask_jobqueue.PBSCluster",
        }[jq.kind]
        kwargs: dict[str, Any] = {
            "cores": jq.cores,
            "processes": 1,
            "memory": f"{jq.memory_gb}GB",
            "walltime": jq.walltime,
            "n_workers": jq.jobs,
            "worker_extra_args": ["--resources", _resources_arg(per_worker)],
        }
        if jq.queue:
            kwargs["queue"] = jq.queue
        if jq.account:
            kwargs["account"] = jq.account
        if jq.gpus_per_job and jq.kind == "slurm":
            kwargs["job_extra_directives"] = [f"--gres=gpu:{jq.gpus_per_job}"]
        return {"cluster_class": cluster_class, "cluster_kwargs": kwargs}
    per_worker_mb = int(compute.memory_gb * 1024 / compute.workers)
    return {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {
            "n_workers": compute.workers,
            "threads_per_worker": compute.threads_per_worker,
            "processes": True,
            "resources": worker_resources(per_worker_mb, compute.gpus),
            "host": "127.0.0.1",  # scheduler and workers: this machine only
            "dashboard_address": "127.0.0.1:0",  # any free port
        },
    }


def make_task_runner(
    *,
    memory_budget_mb: int,
    n_workers: int,
    threads_per_worker: int,
    use_gpu: bool = False,
    scheduler_address: str | None = None,
    cluster: dict[str, Any] | None = None,
    scratch_dir: Path | None = None,
) -> DaskTaskRunner:
    """A runner on an existing scheduler, or on a local cluster sharing the memory budget
    (its scratch space in ``scratch_dir``, default Dask's temporary directory).

    Local workers are threads of one process: each line is an external program, so worker
    threads only wait on subprocesses, and one process starts fast and pickles nothing.
    """
    if cluster:  # e.g. a dask-jobqueue cluster spec (task_runner_kwargs)
        return DaskTaskRunner(**cluster)
    if scheduler_address:
        return DaskTaskRunner(address=scheduler_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": n_workers,
            "threads_per_worker": threads_per_worker,
            "processes": False,
            "resources": worker_resources(memory_budget_mb // n_workers, 1 if use_gpu else 0),
            "dashboard_address": "127.0.0.1:0",  # any free port, this machine only
            **({"local_directory": str(scratch_dir)} if scratch_dir else {}),
        },
    )


def worker_capacity(runner: TaskRunner[Any]) -> dict[str, float] | None:
    """The largest amount of each resource one Dask worker advertises (None: not Dask/unknown)."""
    if not isinstance(runner, DaskTaskRunner):
        return None
    workers = runner.client.scheduler_info(n_workers=-1).get("workers", {})
    if not workers:
        return None
    capacity: dict[str, float] = {}
    for info in workers.values():
        for name, amount in (info.get("resources") or {}).items():
            capacity[name] = max(capacity.get(name, 0.0), float(amount))
    return capacity


def check_capacity(
    capacity: dict[str, float] | None, runner: TaskRunner[Any], use_gpu: bool
) -> bool:
    """Whether to annotate Dask resources; raises when workers cannot run what is asked."""
    if capacity is None and isinstance(runner, DaskTaskRunner):
        get_run_logger().warning(
            "no Dask worker has joined yet: lines reserve MEMORY_MB (and GPU) assuming the "
            "workers that join advertise them"
        )
        return True
    if capacity is None:
        get_run_logger().warning(
            "task runner %s is not Dask: the memory budget is not enforced",
            type(runner).__name__,
        )
        return False
    if "MEMORY_MB" not in capacity:
        raise ValueError(
            "the Dask workers advertise no MEMORY_MB resource, so the memory budget cannot be "
            "enforced; start them with `--resources MEMORY_MB=<megabytes>`"
        )
    if use_gpu and "GPU" not in capacity:
        raise ValueError(
            "use_gpu is set but no Dask worker advertises a GPU resource; start GPU workers "
            "with `--resources GPU=1` or set use_gpu to false"
        )
    return True
