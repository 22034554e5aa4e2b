"""The topsStack flow: the run files of a stack directory executed as a dependency graph.

The machinery (cluster, submission as lines become ready, retries) is in
:mod:`insarflow.engine` and :mod:`insarflow.compute`; this flow only composes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from insarflow.compute import local_cluster_spec, open_client, planned_workers
from insarflow.engine import execute_stack
from insarflow.tasks.topsstack.dag import build_dag
from insarflow.tasks.topsstack.executor import (
    ExecutionReport,
    StackFailed,
    render_report,
)
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files
from insarflow.tasks.topsstack.swath_pieces import split_by_swath

REPORT_KEY = "topsstack-report"


def publish_report(report: ExecutionReport, lines: Sequence[RunLine]) -> None:
    """Write the markdown artifact ``topsstack-report``."""
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=render_report(report, lines),
        description="topsStack lines per step, retries, failures and the critical path",
    )


@flow(name="topsstack")
def topsstack_flow(
    stack_dir: Path,
    log_dir: Path,
    memory_budget_mb: int,
    n_bursts: int,
    range_looks: int,
    azimuth_looks: int,
    n_workers: int = 2,
    threads_per_worker: int = 2,
    use_gpu: bool = False,
    gpus: int = 0,
    extra_path: list[Path] | None = None,
    env: dict[str, str] | None = None,
    scheduler_address: str | None = None,
    cluster: dict[str, Any] | None = None,
    learn_memory: bool = True,
    real_isce2: bool = False,
    split_swaths: bool = False,
) -> ExecutionReport:
    """Execute the run files of ``stack_dir`` as a dependency graph on a Dask cluster: an
    existing scheduler, a ``cluster`` spec (``compute.task_runner_kwargs``), or a local one of
    ``n_workers`` x ``threads_per_worker`` sharing the budget and this machine's ``gpus``.
    ``learn_memory``: refine memory estimates from the lines that ran (compute.learn_memory).
    ``real_isce2``: the lines are real ISCE2's (snaphu lines may unwrap in tiles, its Python
    needs the ``snaphu`` package; a line too big even in its smallest piece stops the stage).
    ``split_swaths``: lines that loop over swaths run as one task per swath (real ISCE2 only:
    the pieces run through ISCE2's own Python, :mod:`~insarflow.tasks.topsstack.swath_pieces`)."""
    lines = parse_run_files(stack_dir)
    dag = build_dag(lines)
    if split_swaths:
        lines, dag = split_by_swath(lines, dag)
    local = not (scheduler_address or cluster)
    spec = (
        {"address": scheduler_address}
        if scheduler_address
        else cluster
        or local_cluster_spec(
            memory_mb=memory_budget_mb,
            workers=n_workers,
            threads_per_worker=threads_per_worker,
            gpus=gpus,
        )
    )
    with open_client(spec, scratch_dir=stack_dir / "dask-scratch") as client:
        try:
            report = execute_stack(
                lines,
                dag,
                client=client,
                stack_dir=stack_dir,
                log_dir=log_dir,
                memory_budget_mb=memory_budget_mb,
                n_bursts=n_bursts,
                range_looks=range_looks,
                azimuth_looks=azimuth_looks,
                use_gpu=use_gpu,
                gpu_ids=range(gpus) if local else None,
                planned=planned_workers(spec),
                extra_path=extra_path or (),
                env=env,
                learn_memory=learn_memory,
                real_isce2=real_isce2,
            )
        except StackFailed as exc:
            publish_report(exc.report, lines)
            raise
    publish_report(report, lines)
    return report
