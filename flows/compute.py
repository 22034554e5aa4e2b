"""The Dask cluster a run uses, from ``compute`` in the configuration.

Workers advertise resources that tasks reserve: ``MEMORY_MB`` (each topsStack line
reserves its estimate, so the running sum stays under the budget) and ``GPU``.
"""

from __future__ import annotations

from typing import Any

from flows.config import ComputeConfig


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
