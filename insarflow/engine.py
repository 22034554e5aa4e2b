"""The topsStack engine: admission in the flow process, then each line's command on Dask.

One place decides when a line may start, :class:`Admission`: the memory budget, the line
slots (Dask worker threads), the GPUs (each GPU line gets a GPU id of its own), the tag
concurrency limits the Prefect API holds for ``gpu`` and ``memory-heavy`` and its global
limit ``insarflow-memory-gb`` (each line occupies its reservation in whole GB; the stage holds
those slots on the API across lines, :mod:`insarflow.server_slots`). Ready lines wait
for admission here, highest priority first; an admitted line becomes a Prefect task run in a
thread of the flow process (public API: a task submitted to a ``ThreadPoolTaskRunner``), which
sends the plain function :func:`~insarflow.tasks.topsstack.executor.run_line` to Dask and
waits for it. So no Dask worker thread ever waits on a slot, and workers never talk to a
Prefect API.

Lines are admitted when ready rather than all at once because a retry after an out-of-memory
kill needs a bigger reservation, and a line already bound to a failed attempt could never run.
"""

from __future__ import annotations

import copy
import math
import queue
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from distributed import Client, KilledWorker
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from insarflow.compute import Worker, check_capacity, cores_per_line, workers_of
from insarflow.server_slots import IDLE_HOLD_S, Hold, ServerSlots
from insarflow.tasks.progress import StageProgress
from insarflow.tasks.progress import log as progress_log
from insarflow.tasks.topsstack import multicore
from insarflow.tasks.topsstack.executor import (
    ENV_MEMORY_MB,
    MEMORY_LIMIT,
    ExecutionReport,
    LineFailed,
    LineResult,
    StackFailed,
    Submission,
    class_limits_in_force,
    is_line_done,
    line_memory_mb,
    line_task_options,
    log_path_for,
    memory_limit_in_force,
    plan_scheduler,
    run_line,
)
from insarflow.tasks.topsstack.learned_memory import LearnedMemory
from insarflow.tasks.topsstack.resources import ResourceClass
from insarflow.tasks.topsstack.runfiles import RunLine

PROGRESS_KEY = "topsstack-progress"


def _flow_run_id() -> UUID | None:
    """The flow run the stage belongs to (the holder of its API slots), if any."""
    return UUID(flow_run.id) if flow_run.id else None


def _run_file(line: RunLine) -> str:
    return f"run_{line.step_number:02d}_{line.step}"


@dataclass(frozen=True)
class Grant:
    """What an admitted attempt holds until it finishes."""

    sub: Submission
    gpu_id: int | None  # CUDA device handed to the line (None: no GPU, or ids not known)
    holds_gpu: bool
    server: Mapping[str, int]  # slots of the Prefect API's limits it occupies, by limit name
    slots: int = 1  # line slots (their cores) it holds: more for topo and snaphu tiles


@dataclass
class Admission:
    """Decides which waiting attempts start now; pure bookkeeping, called from one thread.

    ``gpu_ids``: the GPU ids to hand out (a local cluster: 0..n-1), or None when Dask places
    GPU lines on remote workers (``gpu_slots`` of them at once, no id chosen here).
    ``class_limits``: slots per resource class from the Prefect API's tag limits;
    ``server_memory_gb``: slots of its ``insarflow-memory-gb`` limit (None: no such limit).
    A line occupies one slot of ``tag:<its class>`` and its reservation in whole GB of the
    memory limit; it starts only when the stage holds those slots on the API
    (:meth:`hold`, see :mod:`insarflow.server_slots`) and no other line uses them. A line
    that can use more cores may hold several line slots (:meth:`try_admit`); the slots are
    counted over the whole cluster, not per host.
    """

    memory_mb: int
    slots: int
    gpu_ids: Sequence[int] | None = None
    gpu_slots: int = 0
    class_limits: Mapping[ResourceClass, int] = field(default_factory=dict)
    use_gpu: bool = False
    server_memory_gb: int | None = None

    def __post_init__(self) -> None:
        self._free_gpus = list(self.gpu_ids or ())
        self._gpus_in_use = 0
        self._memory_in_use = 0
        self._running: Counter[ResourceClass] = Counter()
        self._count = 0
        self._slots_in_use = 0
        self._held: Counter[str] = Counter()  # API slots the stage holds, by limit name
        self._server_in_use: Counter[str] = Counter()  # ... of them used by running lines

    @property
    def running(self) -> int:
        return self._count

    @property
    def free_slots(self) -> int:
        return self.slots - self._slots_in_use

    def _gpu_capacity(self) -> int:
        return len(self.gpu_ids) if self.gpu_ids is not None else self.gpu_slots

    def blocker(self, sub: Submission) -> str | None:
        """Why ``sub`` can never start, even with nothing else running (None: it can)."""
        limit = self.class_limits.get(sub.resource_class)
        if limit is not None and limit < 1:
            return (
                f"the tag concurrency limit tag:{sub.resource_class} has {limit} slots; raise "
                "it (python -m insarflow.deployments.setup) or delete it"
            )
        if self.server_memory_gb is not None and self.server_memory_gb < 1:
            return (
                f"the global concurrency limit {MEMORY_LIMIT} has {self.server_memory_gb} "
                "slots; raise it (python -m insarflow.deployments.setup --memory-gb) or delete it"
            )
        if self._needs_gpu(sub) and self._gpu_capacity() < 1:
            return "it needs a GPU and none is available: set compute.gpus"
        return None

    def _needs_gpu(self, sub: Submission) -> bool:
        return self.use_gpu and sub.resource_class == "gpu"

    def server_needs(self, sub: Submission) -> dict[str, int]:
        """Slots of the API's limits ``sub`` occupies while it runs, by limit name."""
        needs: dict[str, int] = {}
        if sub.resource_class in self.class_limits:
            needs[f"tag:{sub.resource_class}"] = 1
        if self.server_memory_gb is not None:
            # a line bigger than the whole limit takes all of it (more could never be granted)
            needs[MEMORY_LIMIT] = min(math.ceil(sub.memory_mb / 1024), self.server_memory_gb)
        return needs

    def limit_names(self) -> list[str]:
        """The API's limits lines of this stage occupy."""
        names = [f"tag:{klass}" for klass in sorted(self.class_limits)]
        return names + ([MEMORY_LIMIT] if self.server_memory_gb is not None else [])

    def fits_here(self, sub: Submission) -> bool:
        """Whether memory, a slot, a GPU and the limits' sizes let ``sub`` start now, whatever
        the stage holds on the API."""
        if self._slots_in_use >= self.slots:
            return False
        if self._count and self._memory_in_use + sub.memory_mb > self.memory_mb:
            return False  # a line bigger than the budget may still run alone
        limit = self.class_limits.get(sub.resource_class)
        if limit is not None and self._running[sub.resource_class] >= limit:
            return False
        if self.server_memory_gb is not None and (
            self._server_in_use[MEMORY_LIMIT] + self.server_needs(sub)[MEMORY_LIMIT]
            > self.server_memory_gb
        ):
            return False
        return not self._needs_gpu(sub) or self._gpus_in_use < self._gpu_capacity()

    def shortfall(self, sub: Submission) -> dict[str, int]:
        """API slots the stage must hold in addition for ``sub`` to start, by limit name."""
        return {
            name: need - free
            for name, need in self.server_needs(sub).items()
            if (free := self._held[name] - self._server_in_use[name]) < need
        }

    def wanted(self, waiting: Sequence[Submission]) -> dict[str, tuple[int, int]]:
        """API slots to ask for, by limit name: (all, least). All: what the ``waiting`` lines
        that would start here now (in this order) need together, so one request per limit
        serves them; least: what the first of them needs."""
        trial = copy.deepcopy(self)
        trial._held = Counter(dict.fromkeys(self.limit_names(), math.inf))  # pretend all held
        least: dict[str, int] = {}
        for sub in waiting:
            if trial.try_admit(sub) is not None:
                for name, amount in self.shortfall(sub).items():
                    least.setdefault(name, amount)
        totals = {f"tag:{klass}": limit for klass, limit in self.class_limits.items()}
        if self.server_memory_gb is not None:
            totals[MEMORY_LIMIT] = self.server_memory_gb
        return {
            name: (
                min(trial._server_in_use[name] - self._held[name], totals[name] - self._held[name]),
                minimum,
            )
            for name, minimum in least.items()
        }

    def hold(self, name: str, amount: int) -> None:
        """The stage now holds ``amount`` more slots of ``name`` (negative: gave them back)."""
        self._held[name] += amount

    def surplus(self, name: str) -> int:
        """Slots of ``name`` the stage holds that no running line uses."""
        return self._held[name] - self._server_in_use[name]

    def try_admit(self, sub: Submission, slots: int = 1) -> Grant | None:
        """Admit ``sub`` if it fits here and the stage holds its API slots; else None. It gets
        up to ``slots`` line slots, as many as are free (at least one)."""
        if not self.fits_here(sub) or self.shortfall(sub):
            return None
        slots = max(1, min(slots, self.free_slots))
        gpu_id: int | None = None
        holds_gpu = self._needs_gpu(sub)
        if holds_gpu:
            if self.gpu_ids is not None:
                gpu_id = self._free_gpus.pop(0)
            self._gpus_in_use += 1
        server = self.server_needs(sub)
        self._count += 1
        self._slots_in_use += slots
        self._memory_in_use += sub.memory_mb
        self._running[sub.resource_class] += 1
        self._server_in_use.update(server)
        return Grant(sub, gpu_id, holds_gpu, server, slots)

    def release(self, grant: Grant) -> None:
        self._count -= 1
        self._slots_in_use -= grant.slots
        self._memory_in_use -= grant.sub.memory_mb
        self._running[grant.sub.resource_class] -= 1
        self._server_in_use.subtract(grant.server)
        if grant.holds_gpu:
            self._gpus_in_use -= 1
        if grant.gpu_id is not None:
            self._free_gpus.append(grant.gpu_id)
            self._free_gpus.sort()


def slots_to_offer(
    sub: Submission,
    waiting: Sequence[Submission],
    slots_wanted: Mapping[str, int],
    free_slots: int,
) -> int:
    """Line slots to offer ``sub`` (it gets at least one if any is free): what it can use, within
    the free slots no other waiting line has a claim to first. Claims: lines of longer
    downstream chains, and of as long ones that can use more cores too (they share).
    Single-core lines of no longer chains wait (topo goes before a secondary date's
    unpacking: the steps after need both)."""
    wanted = slots_wanted[sub.line.line_id]
    if wanted <= 1:
        return 1
    claims = sum(
        1
        for w in waiting
        if w is not sub
        and (
            w.priority > sub.priority
            or (w.priority == sub.priority and slots_wanted[w.line.line_id] > 1)
        )
    )
    return min(wanted, max(1, free_slots - claims))


@dataclass(frozen=True)
class LineDone:
    """An attempt's task run finished."""

    grant: Grant
    future: PrefectFuture[LineResult]


# Retries are the engine's business (an OOM retry needs a bigger reservation), and the
# completion markers replace Prefect's result cache.
@task(name="topsstack-line", cache_policy=NO_CACHE, persist_result=False)
def line_task(line: RunLine, dispatch: Callable[[], LineResult]) -> LineResult:
    """One line as a Prefect task run: its body sends the line's command to Dask and waits.

    Name it with :func:`~insarflow.tasks.topsstack.executor.line_task_options`. Untagged:
    the stage holds the API's slots for it (a tag would cost a slot request per run).
    """
    return dispatch()


def _as_failure(sub: Submission, outcome: object, log_dir: Path) -> LineFailed:
    if isinstance(outcome, LineFailed):
        return outcome
    if isinstance(outcome, KilledWorker):
        # its worker went away mid-line (a batch job cancelled or out of walltime, a node
        # lost): the line itself did nothing wrong, so it may run again on another worker
        worker = outcome.last_worker
        return LineFailed(
            sub.line.line_id,
            "transient",
            log_path_for(sub.line, log_dir),
            "",
            detail=f"its Dask worker {worker.name} ({worker.address}) was lost while it ran",
        )
    return LineFailed(
        sub.line.line_id,
        "fatal",
        log_path_for(sub.line, log_dir),
        "",
        detail=f"the task did not finish normally: {outcome!r}",
    )


def check_smallest_pieces(
    lines: Sequence[RunLine],
    workers: Sequence[Worker],
    learned: LearnedMemory,
    *,
    memory_budget_mb: int,
    n_bursts: int,
    range_looks: int,
    azimuth_looks: int,
    real_isce2: bool,
) -> None:
    """Raise, before any line runs, when some line cannot run in the memory a line can get
    (the largest worker's MEMORY_MB, within the budget) even in its smallest piece (snaphu's
    finest tiles; any other line as a whole), naming the lines, their need and the budget.
    Without ``real_isce2`` (the simulator, whose lines need far less than the model of real
    ISCE2's) the same message is a warning and those lines run with what there is."""
    largest = max(workers, key=lambda w: w.resources.get("MEMORY_MB", 0.0))
    available_mb = int(min(largest.resources.get("MEMORY_MB", 0.0), memory_budget_mb))
    over = []
    for line in lines:
        estimate_mb = learned.estimate_mb(
            line.step,
            line.key_kind,
            line_memory_mb(
                line, n_bursts=n_bursts, range_looks=range_looks, azimuth_looks=azimuth_looks
            ),
            key=line.key,
        )
        need_mb = multicore.smallest_piece_mb(
            line,
            estimate_mb,
            n_bursts=n_bursts,
            looks=range_looks * azimuth_looks,
            unwrap_in_tiles=real_isce2,
        )
        if need_mb > available_mb:
            over.append(f"{line.line_id} needs {need_mb} MB")
    if over:
        where = (
            f"the largest Dask worker, {largest.name}, advertises MEMORY_MB="
            f"{int(largest.resources.get('MEMORY_MB', 0.0))}"
            if available_mb < memory_budget_mb
            else f"the memory budget is {memory_budget_mb} MB"
        )
        message = (
            f"{len(over)} line(s) cannot run in the memory a line can get ({where}): "
            + "; ".join(over[:10])
            + ("; ..." if len(over) > 10 else "")
            + ". Raise compute.memory_gb (local cluster, with fewer compute.workers), give a "
            "worker more MEMORY_MB (remote: `dask worker --resources MEMORY_MB=...`), or use "
            "more looks (topsstack.range_looks, topsstack.azimuth_looks)"
        )
        if real_isce2:
            raise ValueError(message)
        get_run_logger().warning("%s", message)


def execute_stack(
    lines: Sequence[RunLine],
    dag: Mapping[str, frozenset[str]],
    *,
    client: Client,
    stack_dir: Path,
    log_dir: Path,
    memory_budget_mb: int,
    n_bursts: int,
    range_looks: int,
    azimuth_looks: int,
    use_gpu: bool = False,
    gpu_ids: Sequence[int] | None = None,
    extra_path: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    learn_memory: bool = True,
    planned: Sequence[Worker] | None = None,
    real_isce2: bool = False,
) -> ExecutionReport:
    """Run every line on the Dask cluster of ``client`` once its upstream lines succeeded and
    :class:`Admission` lets it start; call inside a flow.

    ``gpu_ids``: GPU ids of this machine to hand to GPU lines (a local cluster); None leaves
    GPU placement to the workers' ``GPU`` resources. ``learn_memory``: refine the memory
    estimates from the peak RSS of the lines that ran, kept in the stack directory
    (:mod:`~insarflow.tasks.topsstack.learned_memory`). ``planned``: the workers an adaptive
    cluster will have at most (:func:`~insarflow.compute.planned_workers`); slots and checks
    go by them instead of the workers joined so far. ``real_isce2``: the lines are real ISCE2's:
    snaphu lines may run in tiles with the cores and memory they get
    (:mod:`~insarflow.tasks.topsstack.multicore`; topo always runs in processes for its cores),
    and a line too big even in its smallest piece stops the stage (:func:`check_smallest_pieces`).
    Raises :class:`StackFailed` after the lines already running finish when a line fails for
    good (retries: see ``StackScheduler``).
    """
    logger = get_run_logger()
    workers = list(planned) if planned else workers_of(client)
    check_capacity(workers, use_gpu)
    worker_mb = int(min(max(w.resources["MEMORY_MB"] for w in workers), memory_budget_mb))
    learned = LearnedMemory.load(stack_dir) if learn_memory else LearnedMemory()
    check_smallest_pieces(
        lines,
        workers,
        learned,
        memory_budget_mb=memory_budget_mb,
        n_bursts=n_bursts,
        range_looks=range_looks,
        azimuth_looks=azimuth_looks,
        real_isce2=real_isce2,
    )
    scheduler = plan_scheduler(
        lines,
        dag,
        n_bursts=n_bursts,
        range_looks=range_looks,
        azimuth_looks=azimuth_looks,
        use_gpu=use_gpu,
        worker_memory_mb=worker_mb,
        learned=learned if learn_memory else None,
    )
    progress = StageProgress(
        "topsstack", Counter(_run_file(line) for line in lines), artifact_key=PROGRESS_KEY
    )
    scheduler.on_finished = lambda line, result: progress.advance(
        _run_file(line), skipped=result.status == "skipped"
    )
    limits = class_limits_in_force()
    server_memory_gb = memory_limit_in_force()
    logger.info(
        "concurrency limits in force: %s",
        ", ".join(
            [f"tag:{k}={v}" for k, v in sorted(limits.items())]
            + ([f"{MEMORY_LIMIT}={server_memory_gb}"] if server_memory_gb is not None else [])
        )
        or "none (gpu and memory-heavy lines go untagged)",
    )
    slots = sum(w.nthreads for w in workers)
    admission = Admission(
        memory_mb=memory_budget_mb,
        slots=slots,
        gpu_ids=gpu_ids,
        gpu_slots=int(sum(w.resources.get("GPU", 0.0) for w in workers)),
        class_limits=limits,
        use_gpu=use_gpu,
        server_memory_gb=server_memory_gb,
    )
    base_env = dict(env or {})
    # An explicit OMP_NUM_THREADS in env wins; otherwise a line uses the cores of its slots.
    explicit_threads = "OMP_NUM_THREADS" in base_env
    slot_cores = cores_per_line(client)
    # Workers that advertise SLOTS (a jobqueue cluster's jobs, on hosts of their own): a line
    # holds its slots on its worker, so it gets no more than the largest worker has.
    advertised = [w.resources.get("SLOTS", 0.0) for w in workers]
    worker_slots = int(max(advertised)) if all(advertised) else None
    slots_wanted: dict[str, int] = {}  # by line id, asked once the line is ready
    futures: dict[str, PrefectFuture[LineResult]] = {}
    # a line that finished, or a hold of API slots granted or refused
    events: queue.Queue[object] = queue.Queue()
    server = ServerSlots(events, _flow_run_id())
    waiting: list[Submission] = []
    idle_since: dict[str, float] = {}  # when the stage's slots of a limit became idle

    def dispatcher(grant: Grant) -> Callable[[], LineResult]:
        sub = grant.sub
        cores = grant.slots * slot_cores
        line_env = {**base_env, ENV_MEMORY_MB: str(sub.memory_mb)}
        line_env.setdefault("OMP_NUM_THREADS", str(cores))
        if grant.gpu_id is not None:
            line_env["CUDA_VISIBLE_DEVICES"] = str(grant.gpu_id)
        resources = sub.dask_resources(
            gpu=grant.holds_gpu and grant.gpu_id is None,
            slots=grant.slots if worker_slots else None,
        )

        def dispatch() -> LineResult:
            try:
                how = multicore.launch(
                    sub.line,
                    cores=cores,
                    memory_mb=sub.memory_mb,
                    unwrap_in_tiles=real_isce2,
                )
            except ValueError as exc:
                raise LineFailed(
                    sub.line.line_id, "fatal", log_path_for(sub.line, log_dir), "", detail=str(exc)
                ) from exc
            if how is not None and not explicit_threads:
                line_env.update(how.env)
            future = client.submit(
                run_line,
                sub.line,
                stack_dir=stack_dir,
                log_dir=log_dir,
                extra_path=list(extra_path),
                env=line_env,
                force=sub.force,
                launch=how,
                key=f"{sub.line.label}-{uuid.uuid4().hex}",
                pure=False,
                resources=resources,
                priority=sub.priority,
            )
            result: LineResult = future.result()
            return result

        return dispatch

    def start(runner: ThreadPoolTaskRunner[LineResult], grant: Grant) -> None:
        sub = grant.sub
        task_ = line_task.with_options(**line_task_options(sub.line, sub.attempt))
        future = runner.submit(
            task_,
            parameters={"line": sub.line, "dispatch": dispatcher(grant)},
            # upstream lines skipped as done have no future
            wait_for=[futures[up] for up in sorted(dag[sub.line.line_id]) if up in futures],
        )
        futures[sub.line.line_id] = future

        def notify(f: PrefectFuture[LineResult], g: Grant = grant) -> None:
            events.put(LineDone(g, f))

        future.add_done_callback(notify)

    def admit(runner: ThreadPoolTaskRunner[LineResult]) -> None:
        waiting[:] = [scheduler.refreshed(sub) for sub in waiting]  # what was learned meanwhile
        waiting.sort(key=lambda s: -s.priority)  # stable: topological order within a priority
        held_back = False  # a line that would start here lacks API slots
        for sub in waiting:
            if sub.line.line_id not in slots_wanted:
                cores = multicore.cores_wanted(
                    sub.line, n_bursts=n_bursts, unwrap_in_tiles=real_isce2
                )
                wanted = max(1, math.ceil(cores / slot_cores))
                slots_wanted[sub.line.line_id] = min(wanted, worker_slots or wanted)
        for sub in list(waiting):
            grant = admission.try_admit(
                sub, slots_to_offer(sub, waiting, slots_wanted, admission.free_slots)
            )
            if grant is not None:
                waiting.remove(sub)
                start(runner, grant)
            elif admission.fits_here(sub):
                held_back = True
        if held_back:
            for name, (amount, minimum) in admission.wanted(waiting).items():
                if not server.pending(name):
                    server.request(name, amount, minimum)
        # Keep what waiting lines will use (a finished line hands its slots on), and for a
        # moment what none needs now (the lines its end makes ready usually do); give back the rest.
        needed = {name for sub in waiting for name in admission.server_needs(sub)}
        now = time.monotonic()
        for name in admission.limit_names():
            if name in needed or admission.surplus(name) == 0:
                idle_since.pop(name, None)
            elif now - idle_since.setdefault(name, now) >= IDLE_HOLD_S:
                admission.hold(name, -server.release_surplus(name, admission.surplus(name)))
                idle_since.pop(name, None)
        if waiting and not admission.running and not server.any_pending:
            why = admission.blocker(waiting[0])
            raise RuntimeError(f"line {waiting[0].line.line_id} cannot start: {why}")

    def on_line_done(grant: Grant, future: PrefectFuture[LineResult]) -> None:
        admission.release(grant)
        sub = grant.sub
        try:
            outcome: object = future.result(raise_on_failure=False)
        except Exception as exc:  # the Dask side failed (worker lost, cancelled)
            outcome = exc
        if isinstance(outcome, LineResult):
            scheduler.succeeded(sub.line.line_id, outcome)
            if scheduler.learned_changed:  # kept at once: a rerun after a kill starts from it
                learned.save(stack_dir)
                scheduler.learned_changed = False
            return
        failure = _as_failure(sub, outcome, log_dir)
        retry = scheduler.failed(sub.line.line_id, failure)
        if retry is not None:
            logger.warning(
                "%s failed (%s); retrying with %d MB",
                sub.line.label,
                failure.kind,
                retry.memory_mb,
            )
            waiting.append(retry)

    runner: ThreadPoolTaskRunner[LineResult] = ThreadPoolTaskRunner(max_workers=slots)
    try:
        with runner:
            while True:
                waiting += scheduler.next_submissions(
                    is_done=lambda ln: is_line_done(ln, stack_dir)
                )
                admit(runner)
                if scheduler.finished:
                    break
                try:
                    event = events.get(timeout=IDLE_HOLD_S if idle_since else None)
                except queue.Empty:
                    continue  # time to give back slots held idle
                if isinstance(event, Hold):
                    if event.error is not None:
                        raise RuntimeError(
                            f"the Prefect API refused {event.amount} slot(s) of the concurrency "
                            f"limit {event.name}: {event.error}"
                        ) from event.error
                    server.granted(event)
                    admission.hold(event.name, event.amount)
                elif isinstance(event, LineDone):
                    on_line_done(event.grant, event.future)
    finally:
        server.close()
    if admission.limit_names():
        logger.info(
            "concurrency limits: %d hold(s) of slots asked of the Prefect API for %d line(s)",
            server.requests,
            len(lines),
        )
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
