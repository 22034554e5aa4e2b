"""The topsStack engine: run-file lines as Prefect tasks on Dask, submitted as they become ready.

A line is submitted as soon as all its upstream lines succeeded (so pair P unwraps while
other dates still resample), inside ``dask.annotate(resources={"MEMORY_MB": estimate})`` so
Dask keeps the sum of the reservations of running lines under what each worker advertises.
Lines are submitted when ready rather than all at once because a retry after an out-of-memory
kill is a new submission with a bigger reservation, and a line already bound (``wait_for``) to
a failed attempt could never run.
"""

from __future__ import annotations

import queue
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
from prefect import get_run_logger
from prefect.client.schemas.objects import TaskRunResult
from prefect.context import EngineContext, FlowRunContext, SettingsContext, serialize_context
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_engine import run_task_sync
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture

from insarflow.compute import check_capacity, worker_capacity
from insarflow.tasks.progress import StageProgress
from insarflow.tasks.progress import log as progress_log
from insarflow.tasks.topsstack.executor import (
    ENV_MEMORY_MB,
    ExecutionReport,
    LineFailed,
    LineResult,
    StackFailed,
    StackScheduler,
    Submission,
    is_line_done,
    limited_classes_in_force,
    line_task_options,
    log_path_for,
    plan_scheduler,
    run_line_task,
)
from insarflow.tasks.topsstack.runfiles import RunLine

PROGRESS_KEY = "topsstack-progress"


def _run_file(line: RunLine) -> str:
    return f"run_{line.step_number:02d}_{line.step}"


class _SharedSettingsContext(SettingsContext):
    """The flow's settings, handed by reference to Dask worker threads of this same process.

    A Prefect task submitted to a DaskTaskRunner carries the whole settings model serialized,
    and the worker validates it back into a new model: ~80 ms of CPU per task here, most of
    the per-line cost (benchmarks/README.md). Workers that are threads of the flow's own
    process (``inproc://`` addresses) can share the flow's settings object instead.
    """

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        return {"profile": self.profile, "settings": self.settings}


# What EngineContext.serialize sends to a worker (the rest stays with the flow's engine).
_ENGINE_CONTEXT_SENT = frozenset(
    {"flow_run", "flow", "parameters", "log_prints", "start_time", "input_keyset"}
    | {"persist_result", "result_store"}
)


class _SharedEngineContext(EngineContext):
    """The flow run's context by reference, for the same reason (its result store's block
    is dumped with its JSON schema for every task otherwise)."""

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        fields = (self.model_fields_set & _ENGINE_CONTEXT_SENT) | {"result_store"}
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


def _workers_in_this_process(runner: TaskRunner[Any]) -> bool:
    if not isinstance(runner, DaskTaskRunner):
        return False
    workers = runner.client.scheduler_info(n_workers=-1).get("workers", {})
    return bool(workers) and all(str(addr).startswith("inproc://") for addr in workers)


@contextmanager
def _contexts_by_reference(in_process: bool) -> Iterator[None]:
    """While lines are submitted: share the flow's contexts with in-process workers."""
    settings, flow_run = SettingsContext.get(), FlowRunContext.get()
    if settings is None or flow_run is None or not in_process:
        yield
        return
    # A shallow copy: the same run, parameters and bookkeeping objects as the engine's.
    shared_run = _SharedEngineContext.model_construct(
        _fields_set=set(flow_run.model_fields_set), **dict(flow_run)
    )
    with (
        _SharedSettingsContext(profile=settings.profile, settings=settings.settings),
        shared_run,
    ):
        yield


# Task runs submitted to in-process workers, by Dask key: Dask pickles every submitted call
# (the client) and unpickles it (the scheduler) even when both live in this process, and a
# Prefect task with its parameters and run context is a large object graph. Only the key
# travels; the worker thread looks the call up here.
_IN_PROCESS_CALLS: dict[str, dict[str, Any]] = {}


def _run_in_process(key: str) -> State[Any] | None:
    return run_task_sync(**_IN_PROCESS_CALLS[key])


@contextmanager
def _annotations(sub: Submission, *, enabled: bool, use_gpu: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    with dask.annotate(resources=sub.dask_resources(gpu=use_gpu), priority=sub.priority):
        yield


def _submit_task(
    runner: TaskRunner[Any],
    task: Any,
    parameters: dict[str, Any],
    *,
    upstream: Sequence[PrefectFuture[LineResult]],
    in_process: bool,
) -> PrefectFuture[LineResult]:
    """Submit ``task`` once its ``upstream`` futures are all done (the flow only submits ready
    lines); on Dask under a fresh key rather than a hash of the task.

    ``DaskTaskRunner.submit`` names the Dask task by pickling and hashing the task object and
    its parameters, several ms per line; every line attempt is distinct anyway. For workers in
    this process the call itself stays here too (``_IN_PROCESS_CALLS``).
    """
    if not isinstance(runner, DaskTaskRunner):
        return runner.submit(task, parameters=parameters, wait_for=list(upstream))
    key = f"{task.name}-{uuid.uuid4().hex}"
    if not in_process:
        future = runner.client.submit(
            task,
            key=key,
            parameters=parameters,
            wait_for=[f.wrapped_future for f in upstream if isinstance(f, PrefectDaskFuture)],
            return_type="state",
        )
        return PrefectDaskFuture[LineResult](wrapped_future=future, task_run_id=future.task_run_id)
    task_run_id = uuid.uuid4()
    no_inputs: dict[str, set[Any]] = {name: set() for name in parameters}  # no futures inside
    # Upstream lines are known complete; as plain task-run references Prefect records them as
    # the run's ``wait_for`` inputs without resolving each one's result again (a hop through
    # Prefect's event-loop thread per upstream line). They only need to be a non-empty
    # ``wait_for`` for the engine to add the ``dependencies`` entry of that name.
    waited = [TaskRunResult(id=f.task_run_id) for f in upstream]
    _IN_PROCESS_CALLS[key] = {
        "task": task,
        "task_run_id": task_run_id,
        "parameters": parameters,
        "wait_for": waited or None,
        "return_type": "state",
        "dependencies": {**no_inputs, "wait_for": set(waited)} if waited else no_inputs,
        "context": serialize_context(
            asset_ctx_kwargs={
                "task": task,
                "task_run_id": task_run_id,
                "task_inputs": no_inputs,
                "copy_to_child_ctx": True,
            }
        ),
    }
    future = runner.client.submit(_run_in_process, key, key=key, pure=False)
    future.add_done_callback(lambda _: _IN_PROCESS_CALLS.pop(key, None))
    return PrefectDaskFuture[LineResult](wrapped_future=future, task_run_id=task_run_id)


def _as_failure(sub: Submission, outcome: object, log_dir: Path) -> LineFailed:
    if isinstance(outcome, LineFailed):
        return outcome
    return LineFailed(
        sub.line.line_id,
        "fatal",
        log_path_for(sub.line, log_dir),
        "",
        detail=f"the task did not finish normally: {outcome!r}",
    )


def execute_stack(
    lines: Sequence[RunLine],
    dag: Mapping[str, frozenset[str]],
    *,
    stack_dir: Path,
    log_dir: Path,
    memory_budget_mb: int,
    n_bursts: int,
    range_looks: int,
    azimuth_looks: int,
    use_gpu: bool = False,
    extra_path: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    task_runner: TaskRunner[Any] | None = None,
) -> ExecutionReport:
    """Run every line as a task once its upstream lines succeeded; call inside a flow.

    ``task_runner`` defaults to the current flow's. Raises :class:`StackFailed` after the lines
    already running finish when a line fails for good (retries: see ``StackScheduler``).
    """
    context = FlowRunContext.get()
    runner = task_runner or (context.task_runner if context else None)
    if runner is None:
        raise RuntimeError("execute_stack submits tasks: call it inside a flow")
    capacity = worker_capacity(runner)
    annotate = check_capacity(capacity, runner, use_gpu)
    worker_mb = capacity.get("MEMORY_MB") if capacity else None
    scheduler: StackScheduler = plan_scheduler(
        lines,
        dag,
        n_bursts=n_bursts,
        range_looks=range_looks,
        azimuth_looks=azimuth_looks,
        use_gpu=use_gpu,
        worker_memory_mb=int(min(worker_mb or memory_budget_mb, memory_budget_mb)),
    )
    progress = StageProgress(
        "topsstack", Counter(_run_file(line) for line in lines), artifact_key=PROGRESS_KEY
    )
    scheduler.on_finished = lambda line, result: progress.advance(
        _run_file(line), skipped=result.status == "skipped"
    )
    tagged = limited_classes_in_force()
    get_run_logger().info(
        "tag concurrency limits in force for: %s",
        ", ".join(sorted(tagged)) or "no class (gpu and memory-heavy lines go untagged)",
    )
    futures: dict[str, PrefectFuture[LineResult]] = {}
    done: queue.Queue[tuple[Submission, PrefectFuture[LineResult]]] = queue.Queue()

    def submit(sub: Submission) -> None:
        line_env = {**(env or {}), ENV_MEMORY_MB: str(sub.memory_mb)}
        task = run_line_task.with_options(
            **line_task_options(sub.line, sub.resource_class, sub.attempt, tagged=tagged)
        )
        with _annotations(sub, enabled=annotate, use_gpu=use_gpu):
            future = _submit_task(
                runner,
                task,
                parameters={
                    "line": sub.line,
                    "stack_dir": stack_dir,
                    "log_dir": log_dir,
                    "extra_path": list(extra_path),
                    "env": line_env,
                    "force": sub.force,
                },
                # upstream lines skipped as done have no future
                upstream=[futures[up] for up in sorted(dag[sub.line.line_id]) if up in futures],
                in_process=in_process,
            )
        futures[sub.line.line_id] = future

        def notify(f: PrefectFuture[LineResult], s: Submission = sub) -> None:
            done.put((s, f))

        future.add_done_callback(notify)

    in_process = _workers_in_this_process(runner)
    with _contexts_by_reference(in_process):
        while True:
            for sub in scheduler.next_submissions(is_done=lambda ln: is_line_done(ln, stack_dir)):
                submit(sub)
            if scheduler.finished:
                break
            sub, future = done.get()
            try:
                outcome: object = future.result(raise_on_failure=False)
            except Exception as exc:  # the Dask side failed (worker lost, cancelled)
                outcome = exc
            if isinstance(outcome, LineResult):
                scheduler.succeeded(sub.line.line_id, outcome)
                continue
            failure = _as_failure(sub, outcome, log_dir)
            retry = scheduler.failed(sub.line.line_id, failure)
            if retry is not None:
                get_run_logger().warning(
                    "%s failed (%s); retrying with %d MB",
                    sub.line.label,
                    failure.kind,
                    retry.memory_mb,
                )
                submit(retry)
    report = scheduler.report()
    if report.skipped:
        progress_log.info(
            "topsstack: %d of %d lines skipped: already done (completion marker matches the "
            "line and its config file)",
            len(report.skipped),
            len(lines),
        )
    if report.failures:
        raise StackFailed(report)
    return report
