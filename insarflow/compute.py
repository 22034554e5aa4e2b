"""The Dask cluster a run uses, from ``compute`` in the configuration.

Dask only runs plain functions here (a topsStack line's command); what may start when is
decided in the flow process (:mod:`insarflow.engine`). Workers advertise ``MEMORY_MB`` (a
line is placed on a worker with room for its estimate), where lines need one ``GPU``, and
on a cluster of several hosts ``SLOTS`` (their threads: a line using the cores of several
slots holds them all on the worker that runs it, not some on another host).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
from distributed import Client

from insarflow.config import ComputeConfig, JobqueueConfig


def worker_resources(memory_mb: int, gpus: int, slots: int | None = None) -> dict[str, float]:
    """Resources one worker advertises."""
    resources: dict[str, float] = {"MEMORY_MB": float(memory_mb)}
    if gpus:
        resources["GPU"] = float(gpus)
    if slots:
        resources["SLOTS"] = float(slots)
    return resources


JOBQUEUE_CLASSES = {"slurm": "dask_jobqueue.SLURMCluster", "pbs": "dask_jobqueue.PBSCluster"}


def _resources_arg(resources: dict[str, float]) -> str:
    return ",".join(f"{k}={int(v)}" for k, v in resources.items())


def local_cluster_spec(
    *, memory_mb: int, workers: int, threads_per_worker: int, gpus: int = 0
) -> dict[str, Any]:
    """The local cluster: ``workers`` thread workers sharing ``memory_mb`` in one process.

    Threads, not processes: each line is an external program, so a worker thread only waits
    on a subprocess, and one process starts fast and pickles nothing. Every worker advertises
    the machine's ``gpus``; the flow hands each GPU id to one line at a time.
    """
    return {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {
            "n_workers": workers,
            "threads_per_worker": threads_per_worker,
            "processes": False,
            "resources": worker_resources(memory_mb // workers, gpus),
            "dashboard_address": "127.0.0.1:0",  # any free port, this machine only
        },
    }


def task_runner_kwargs(compute: ComputeConfig, *, log_dir: Path | None = None) -> dict[str, Any]:
    """The cluster of ``compute``: ``{"address": ...}`` of an existing scheduler, or
    ``{"cluster_class": ..., "cluster_kwargs": ...}`` to start one (see :func:`open_client`);
    batch jobs write their output under ``log_dir``."""
    if compute.scheduler_address:
        return {"address": compute.scheduler_address}
    if compute.jobqueue is not None:
        return jobqueue_spec(compute.jobqueue, log_dir=log_dir)
    return local_cluster_spec(
        memory_mb=int(compute.memory_gb * 1024),
        workers=compute.workers,
        threads_per_worker=compute.threads_per_worker,
        gpus=compute.gpus,
    )


def memory_budget_mb(compute: ComputeConfig) -> int:
    """MB that concurrently running lines may reserve together: ``compute.memory_gb``, or for
    a jobqueue cluster the ``MEMORY_MB`` its jobs advertise together."""
    if compute.jobqueue is not None:
        jq = compute.jobqueue
        return jq.jobs * int(jobqueue_spec(jq)["workers"]["resources"]["MEMORY_MB"])
    return int(compute.memory_gb * 1024)


def jobqueue_spec(jq: JobqueueConfig, *, log_dir: Path | None = None) -> dict[str, Any]:
    """A dask-jobqueue cluster of one worker per job, ``jq.cores`` threads (lines at once) each.

    A worker advertises 90 % of its job's memory as ``MEMORY_MB`` (the rest is the worker's
    own), its ``cores`` as ``SLOTS``, and ``GPU`` when the job asks for GPUs (``--gres=gpu:N``
    on SLURM). The cluster adapts between ``min_jobs`` and ``jobs`` (``"adapt"``);
    ``"workers"`` is what it has at most, for planning before any job has started. A worker
    lost with its job (cancelled, out of walltime, node failure) fails the lines it ran
    (``allowed_failures=0``), so the engine, not Dask, retries them and its report says so.
    """
    per_worker = worker_resources(int(jq.memory_gb * 1024 * 0.9), jq.gpus_per_job, jq.cores)
    kwargs: dict[str, Any] = {
        "cores": jq.cores,
        "processes": 1,
        "memory": f"{jq.memory_gb}GB",
        "walltime": jq.walltime,
        "worker_extra_args": ["--resources", _resources_arg(per_worker)],
        # the flow's own interpreter: a job imports insarflow from the same environment, which
        # must be at the same path on the compute nodes
        "python": sys.executable,
        # any free port for the dashboard: several flows may run on one login node
        "scheduler_options": {"allowed_failures": 0, "dashboard_address": ":0"},
    }
    if log_dir is not None:
        kwargs["log_directory"] = str(log_dir)
    if jq.queue:
        kwargs["queue"] = jq.queue
    if jq.account:
        kwargs["account"] = jq.account
    if jq.gpus_per_job and jq.kind == "slurm":
        kwargs["job_extra_directives"] = [f"--gres=gpu:{jq.gpus_per_job}"]
    return {
        "cluster_class": JOBQUEUE_CLASSES[jq.kind],
        "cluster_kwargs": kwargs,
        "adapt": {"minimum_jobs": jq.min_jobs, "maximum_jobs": jq.jobs},
        # Adapt sizes the cluster by the expected run time of queued work; a line of a step
        # not timed yet counts as a minute, not Dask's 0.5 s (which keeps one job until lines
        # of each step have finished), so jobs are asked for as soon as lines queue.
        "dask_config": {"distributed.scheduler.unknown-task-duration": "60s"},
        "workers": {"count": jq.jobs, "nthreads": jq.cores, "resources": per_worker},
    }


def jobqueue_dask_env(spec: dict[str, Any]) -> dict[str, str]:
    """Environment variables that make a jobqueue ``spec``'s job settings dask-jobqueue's
    defaults for its kind (``jobqueue.slurm`` ...): MintPy, in a process of its own, opens
    its cluster from them (``mintpy.compute.cluster: slurm``), so its jobs are sized, queued,
    charged and logged like the topsStack workers. Dask reads each value as a Python literal."""
    kind = next(k for k, v in JOBQUEUE_CLASSES.items() if v == spec["cluster_class"])
    settings = {**spec["cluster_kwargs"], "scheduler_options": {"dashboard_address": ":0"}}
    return {
        f"DASK_JOBQUEUE__{kind.upper()}__{key.upper()}": repr(value)
        for key, value in settings.items()
    }


def jobqueue_issues(jq: JobqueueConfig) -> list[tuple[str, object, str]]:
    """(field, value, message) for each part of ``jq`` that SLURM rejects, found by
    ``sbatch --test-only`` with the job script dask-jobqueue writes (nothing is queued). SLURM
    only says which request cannot be met (e.g. "Requested node configuration is not
    available"), so on a refusal the script is tested again with one setting at a time set to
    its smallest value; the setting whose change makes SLURM accept is named. PBS has no such
    test, and without ``sbatch`` on PATH there is nothing to ask: both give no issues."""
    sbatch = shutil.which("sbatch")
    if jq.kind != "slurm" or sbatch is None:
        return []

    def refusal(**changes: Any) -> str | None:
        spec = jobqueue_spec(jq.model_copy(update=changes))
        kwargs = {k: v for k, v in spec["cluster_kwargs"].items() if k != "scheduler_options"}
        job_cls = importlib.import_module("dask_jobqueue").SLURMCluster.job_cls
        script = job_cls(scheduler="tcp://127.0.0.1:8786", name="insarflow", **kwargs).job_script()
        done = subprocess.run(
            [sbatch, "--test-only"],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        return None if done.returncode == 0 else "; ".join(said)

    words = refusal()
    if words is None:
        return []
    smallest: dict[str, dict[str, Any]] = {
        "queue": {"queue": None},
        "account": {"account": None},
        "memory_gb": {"memory_gb": 0.1},
        "cores": {"cores": 1},
        "gpus_per_job": {"gpus_per_job": 0},
        "walltime": {"walltime": "00:01:00"},
    }
    culprits = [
        name
        for name, change in smallest.items()
        if getattr(jq, name) != change[name] and refusal(**change) is None
    ]
    if not culprits:  # no single setting: several at once, or the cluster itself
        return [
            (
                "compute.jobqueue",
                jq.model_dump(exclude_none=True),
                f"SLURM refuses the worker job (sbatch --test-only: {words}); compare queue, "
                "account, cores, memory_gb, gpus_per_job and walltime with what the cluster "
                "has (sinfo, scontrol show partition)",
            )
        ]
    return [
        (
            f"compute.jobqueue.{name}",
            getattr(jq, name),
            f"{getattr(jq, name)!r} is refused by SLURM for the worker job (sbatch "
            f"--test-only: {words}); give a {name} the cluster has (sinfo and scontrol show "
            "partition list the partitions, their nodes' CPUs, memory and GPUs, and their "
            "time limits)",
        )
        for name in culprits
    ]


@contextmanager
def open_client(spec: dict[str, Any], *, scratch_dir: Path | None = None) -> Iterator[Client]:
    """A Dask client on the cluster of ``spec`` (:func:`task_runner_kwargs`); a cluster it
    starts (scratch space in ``scratch_dir`` when local) is closed again on exit."""
    if "address" in spec:
        with Client(spec["address"]) as client:
            yield client
        return
    module, _, name = spec["cluster_class"].rpartition(".")
    kwargs = dict(spec["cluster_kwargs"])
    if scratch_dir is not None and spec["cluster_class"] == "distributed.LocalCluster":
        kwargs["local_directory"] = str(scratch_dir)
    with dask.config.set(spec.get("dask_config", {})):  # read when the scheduler starts
        cluster = getattr(importlib.import_module(module), name)(**kwargs)
    with cluster, Client(cluster) as client:
        if "adapt" in spec:
            cluster.adapt(**spec["adapt"])
        yield client


def planned_workers(spec: dict[str, Any]) -> list[Worker] | None:
    """The workers a cluster ``spec`` will have at most, before they start (None: those that
    joined are all there will be)."""
    planned = spec.get("workers")
    if planned is None:
        return None
    resources = {k: float(v) for k, v in planned["resources"].items()}
    return [
        Worker(
            name=f"job {i + 1}",
            host=f"job {i + 1}",
            nthreads=planned["nthreads"],
            resources=resources,
        )
        for i in range(planned["count"])
    ]


@dataclass(frozen=True)
class Worker:
    """One Dask worker as the scheduler sees it."""

    name: str
    host: str
    nthreads: int
    resources: dict[str, float]


def workers_of(client: Client) -> list[Worker]:
    """The workers that joined the scheduler of ``client``."""
    info = client.scheduler_info(n_workers=-1).get("workers", {})
    return [
        Worker(
            name=str(w.get("name", address)),
            host=str(w.get("host", address)),
            nthreads=int(w.get("nthreads", 1)),
            resources={k: float(v) for k, v in (w.get("resources") or {}).items()},
        )
        for address, w in info.items()
    ]


def cores_per_line(client: Client) -> int:
    """Cores one line may use: each worker thread runs one line at a time, so a host's cores
    are shared by the threads of all its workers (the smallest share over hosts)."""
    cpus = client.run(os.cpu_count)  # by worker address
    threads: dict[str, int] = {}
    host_cpus: dict[str, int] = {}
    for address, info in client.scheduler_info(n_workers=-1).get("workers", {}).items():
        host = str(info.get("host", address))
        threads[host] = threads.get(host, 0) + int(info.get("nthreads", 1))
        host_cpus[host] = int(cpus.get(address) or 1)
    return max(1, min((host_cpus[h] // threads[h] for h in threads), default=1))


def check_capacity(workers: list[Worker], use_gpu: bool) -> None:
    """Raise when the workers cannot run what is asked (naming the worker option to set)."""
    if not workers:
        raise ValueError(
            "no Dask worker has joined the scheduler: start workers with "
            "`dask worker <scheduler address> --resources MEMORY_MB=<megabytes>`"
        )
    missing = [w.name for w in workers if "MEMORY_MB" not in w.resources]
    if missing:
        raise ValueError(
            f"Dask worker(s) {', '.join(missing)} advertise no MEMORY_MB resource, so the "
            "memory budget cannot be enforced; start them with "
            "`--resources MEMORY_MB=<megabytes>`"
        )
    if use_gpu and not any(w.resources.get("GPU") for w in workers):
        raise ValueError(
            "topsstack.use_gpu is set but no Dask worker advertises a GPU resource; start GPU "
            "workers with `--resources MEMORY_MB=<megabytes>,GPU=<gpus>` or set "
            "topsstack.use_gpu to false"
        )
