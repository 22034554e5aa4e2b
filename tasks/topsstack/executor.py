"""Run topsStack run-file lines: one line at a time, logged, idempotent, failures classified.

Every line of a run file (``SentinelWrapper.py -c configs/config_<step>_<key>`` or a direct
script call) runs through :func:`run_line`: it skips when a completion marker says the same
command and config already produced valid outputs, otherwise it runs the command through
:func:`insarflow.tasks.shell.run_command`, checks the outputs and only then writes the marker.

:class:`StackScheduler` holds the pure scheduling policy used by the topsStack flow: which
lines are ready, how much memory each reserves, whether a failure is retried (OOM: once with
1.5x the reservation; transient crash: once as is) or stops the run, and the final report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from insarflow import atomic
from insarflow.tasks.orbits import orbit_in_use
from insarflow.tasks.shell import CommandResult, run_command
from insarflow.tasks.topsstack import steps
from insarflow.tasks.topsstack.dag import critical_path, topological_order
from insarflow.tasks.topsstack.learned_memory import LearnedMemory
from insarflow.tasks.topsstack.multicore import Launch, without_processes
from insarflow.tasks.topsstack.resources import (
    LIMITED_CLASSES,
    ResourceClass,
    estimate_memory_mb,
    resource_class,
)
from insarflow.tasks.topsstack.runfiles import RunLine

FailureKind = Literal["oom", "transient", "fatal"]
LineStatus = Literal["ran", "skipped"]

MARKER_DIR = Path(".insarflow") / "done"
#: Environment variable telling a line how many MB of memory it was granted; its log warns
#: when the line's peak RSS exceeds it.
ENV_MEMORY_MB = "INSARFLOW_LINE_MEMORY_MB"
#: Environment variables worth recording in every line log (SLURM_JOB_ID: the batch job of
#: the worker that ran it).
LOGGED_ENV = ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", ENV_MEMORY_MB, "SLURM_JOB_ID")
OOM_GROWTH = 1.5

_OOM_RETURN_CODES = frozenset({137, -9})
_OOM_PATTERNS = ("Out of memory", "MemoryError", "std::bad_alloc", "Cannot allocate memory")
_TRANSIENT_RETURN_CODES = frozenset({-11, 139, -7, 135})
_TRANSIENT_PATTERNS = (
    "Bus error",
    "Segmentation fault",
    "Input/output error",
    "I/O error",
    "Resource temporarily unavailable",
)


# --------------------------------------------------------------------------- results, errors


@dataclass(frozen=True)
class LineResult:
    """What one run-file line did in this execution (a skipped line did nothing)."""

    line_id: str
    label: str
    step: str
    key: str
    status: LineStatus
    returncode: int
    duration_s: float
    peak_rss_mb: float
    log_path: Path | None
    finished_at: str
    launched: str = ""  # how it ran when not as written (multicore.Launch.note)


class LineFailed(RuntimeError):
    """A run-file line failed; ``kind`` says whether a retry can help."""

    def __init__(
        self,
        line_id: str,
        kind: FailureKind,
        log_path: Path,
        log_tail: str,
        *,
        returncode: int | None = None,
        detail: str = "",
    ) -> None:
        self.line_id = line_id
        self.kind: FailureKind = kind
        self.log_path = log_path
        self.log_tail = log_tail
        self.returncode = returncode
        self.detail = detail
        super().__init__(self._message())

    def __reduce__(self) -> tuple[Any, ...]:
        # Failed task states travel between Dask workers and the flow by pickle.
        return (
            self.__class__,
            (self.line_id, self.kind, self.log_path, self.log_tail),
            {"returncode": self.returncode, "detail": self.detail},
        )

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.returncode = state.get("returncode")
        self.detail = state.get("detail", "")
        self.args = (self._message(),)

    def _message(self) -> str:
        rc = "" if self.returncode is None else f" (return code {self.returncode})"
        if self.detail:
            what = f"line {self.line_id} failed{rc}: {self.detail}"
        elif self.kind == "oom":
            what = (
                f"line {self.line_id} ran out of memory{rc}: reduce parallelism or raise "
                "the memory budget (memory_budget_mb) / take more looks"
            )
        elif self.kind == "transient":
            what = (
                f"line {self.line_id} crashed{rc} with an error that is usually transient "
                "(storage or node trouble); if it persists, check free disk space and the "
                "file system under the stack directory"
            )
        else:
            what = f"line {self.line_id} failed{rc}; check its log"
        return f"{what}\nfull log: {self.log_path}\n--- last lines ---\n{self.log_tail}"


def classify_failure(result: CommandResult) -> FailureKind:
    """Say whether a failed command ran out of memory, crashed transiently, or failed for good."""
    tail = result.log_tail
    if result.returncode in _OOM_RETURN_CODES or any(p in tail for p in _OOM_PATTERNS):
        return "oom"
    if result.returncode in _TRANSIENT_RETURN_CODES or any(p in tail for p in _TRANSIENT_PATTERNS):
        return "transient"
    return "fatal"


# --------------------------------------------------------------------------- markers


def line_fingerprint(
    line: RunLine, *, with_processes: bool = False, as_launched: bool = False
) -> str:
    """sha256 of the line's command and of its config file's content (when it has one), its
    ``numProcess`` aside (:func:`~insarflow.tasks.topsstack.multicore.without_processes`).
    A swath piece counts as its whole line's command and its swath, not the launcher's path
    (a checkout or environment moved elsewhere leaves its finished pieces done).
    ``with_processes`` / ``as_launched``: the ``numProcess`` line included / a piece's own
    command, as markers of earlier versions have them."""
    command = line.command
    if line.whole is not None and not as_launched:
        command = (*line.whole.command, f"swath {line.swath}")
    digest = hashlib.sha256()
    for arg in command:
        digest.update(arg.encode())
        digest.update(b"\0")
    if line.config_path is not None:
        digest.update(b"\0config\0")
        try:
            config = Path(line.config_path).read_bytes()
            digest.update(config if with_processes else without_processes(config))
        except FileNotFoundError:
            digest.update(b"<missing>")
    return digest.hexdigest()


def orbits_read(line: RunLine) -> list[str]:
    """The orbit file each scene of ``line``'s unpacking (``Sentinel1_TOPS``) reads from its
    ``orbitdir``; empty for other lines. Kept in the completion marker: a precise orbit that
    arrives for a scene unpacked with a restituted one makes the line, and so what needs it,
    run again (the config names the folder, not the file, so its fingerprint cannot tell)."""
    return [
        orbit_in_use(safe, Path(fn.params["orbitdir"]))
        for fn in line.functions
        if fn.name == "Sentinel1_TOPS" and fn.params.get("orbitdir")
        for safe in fn.params.get("dirname", "").split()
    ]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text.replace(":", "__"))


def marker_path(line: RunLine, stack_dir: Path) -> Path:
    """Where the completion marker of ``line`` lives.

    Named by step and key, not by ``line_id``: stackSentinel renumbers the run files in
    update mode (no ``unpack_topo_reference``), and a finished line must stay finished.
    """
    return stack_dir / MARKER_DIR / f"{_safe_name(line.label)}.json"


def log_path_for(line: RunLine, log_dir: Path) -> Path:
    """``log_dir/<step>/<key>.log``."""
    return log_dir / _safe_name(line.step) / f"{_safe_name(line.key)}.log"


def missing_outputs(line: RunLine, stack_dir: Path) -> list[Path]:
    """Outputs of ``line`` that are absent or empty (a directory must hold at least one entry)."""
    missing = []
    for output in line.outputs:
        path = output if output.is_absolute() else stack_dir / output
        if path.is_dir():
            if next(path.iterdir(), None) is None:
                missing.append(path)
        elif not path.is_file() or path.stat().st_size == 0:
            missing.append(path)
    return missing


def output_problem(line: RunLine, stack_dir: Path) -> str | None:
    """What is wrong with outputs that exist but cannot be used downstream, or None.

    Asks the step's registry entry (:attr:`insarflow.tasks.topsstack.steps.Step.output_check`).
    """
    check = steps.get(line.step).output_check
    if check is None:
        return None
    return check([p if p.is_absolute() else stack_dir / p for p in line.outputs])


def is_line_done(line: RunLine, stack_dir: Path) -> bool:
    """True when a marker with the current fingerprint and the orbits the line reads now
    (:func:`orbits_read`) exists and the outputs still check out; a swath piece also when its
    whole line is done (finished before lines were split)."""
    if line.whole is not None and is_line_done(line.whole, stack_dir):
        return True
    try:
        marker = json.loads(marker_path(line, stack_dir).read_text())
    except (FileNotFoundError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("fingerprint") not in (
        line_fingerprint(line),
        line_fingerprint(line, with_processes=True),  # markers of earlier versions
        line_fingerprint(line, with_processes=True, as_launched=True),
    ):
        return False
    if "orbits" in marker and marker["orbits"] != orbits_read(line):
        return False  # markers of earlier versions did not record them
    return not missing_outputs(line, stack_dir)


def write_marker(line: RunLine, stack_dir: Path, result: CommandResult) -> Path:
    """Write the completion marker of ``line`` atomically (temp file, then rename)."""
    path = marker_path(line, stack_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "line_id": line.line_id,
        "fingerprint": line_fingerprint(line),
        "orbits": orbits_read(line),
        "returncode": result.returncode,
        "duration_s": round(result.duration_s, 3),
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic.write_text(path, json.dumps(record, indent=1) + "\n")
    return path


# --------------------------------------------------------------------------- one line


def skipped_result(line: RunLine) -> LineResult:
    """The result of a line that was already done."""
    return LineResult(
        line_id=line.line_id,
        label=line.label,
        step=line.step,
        key=line.key,
        status="skipped",
        returncode=0,
        duration_s=0.0,
        peak_rss_mb=0.0,
        log_path=None,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _write_log_header(
    log_path: Path, line: RunLine, env: Mapping[str, str], extra_path: Sequence[Path]
) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    shown = " ".join(f"{name}={env.get(name, '<unset>')}" for name in LOGGED_ENV)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"### line {line.line_id} ({line.run_file})\n")
        if line.config_path is not None:
            log.write(f"### config: {line.config_path}\n")
        log.write(f"### env: {shown}\n")
        if extra_path:
            log.write(f"### PATH additions: {os.pathsep.join(map(str, extra_path))}\n")


def _note_memory_overrun(
    log_path: Path, line: RunLine, reserved_mb: str | None, peak_rss_mb: float
) -> None:
    """Say in the line's log when it used more memory than it reserved (the estimate of its
    step is too low: concurrent lines may then exceed the budget)."""
    if reserved_mb is None or not reserved_mb.isdigit() or peak_rss_mb <= int(reserved_mb):
        return
    with log_path.open("a", encoding="utf-8") as log:
        log.write(
            f"### warning: peak RSS {peak_rss_mb:.0f} MB exceeded the {reserved_mb} MB reserved "
            f"for {line.line_id} ({ENV_MEMORY_MB}); raise compute.memory_gb headroom or take "
            "more looks\n"
        )


def run_line(
    line: RunLine,
    *,
    stack_dir: Path,
    log_dir: Path,
    extra_path: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    force: bool = False,
    launch: Launch | None = None,
) -> LineResult:
    """Run one run-file line in ``stack_dir`` unless it is already done.

    ``env`` holds variables set on top of the current environment; ``force`` reruns a done
    line (used when an upstream line re-ran, so its inputs changed); ``launch``: the command
    to run instead of the line's own, for the cores and memory it was granted
    (:mod:`~insarflow.tasks.topsstack.multicore`). Raises :class:`LineFailed`.
    """
    if not force and is_line_done(line, stack_dir):
        return skipped_result(line)
    # A stale marker must not survive a run that gets killed halfway; nor may the marker of
    # the whole line a piece belongs to, which would count the piece done.
    marker_path(line, stack_dir).unlink(missing_ok=True)
    if line.whole is not None:
        marker_path(line.whole, stack_dir).unlink(missing_ok=True)
    full_env = {**os.environ, **(env or {})}
    log_path = log_path_for(line, log_dir)
    _write_log_header(log_path, line, full_env, extra_path)
    if launch is not None:
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"### launched: {launch.note}\n")
    try:
        result = run_command(
            launch.command if launch is not None else line.command,
            log_path=log_path,
            cwd=stack_dir,
            env=full_env,
            extra_path=extra_path,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LineFailed(
            line.line_id,
            "fatal",
            log_path,
            "",
            detail=f"{exc}; put the ISCE2 topsStack scripts on PATH (extra_path)",
        ) from exc
    _note_memory_overrun(log_path, line, full_env.get(ENV_MEMORY_MB), result.peak_rss_mb)
    if result.returncode != 0:
        raise LineFailed(
            line.line_id,
            classify_failure(result),
            log_path,
            result.log_tail,
            returncode=result.returncode,
        )
    missing = missing_outputs(line, stack_dir)
    if missing:
        raise LineFailed(
            line.line_id,
            "fatal",
            log_path,
            result.log_tail,
            returncode=0,
            detail="exited 0 but these outputs are missing or empty: "
            + ", ".join(map(str, missing)),
        )
    problem = output_problem(line, stack_dir)
    if problem:
        raise LineFailed(
            line.line_id, "fatal", log_path, result.log_tail, returncode=0, detail=problem
        )
    write_marker(line, stack_dir, result)
    return LineResult(
        line_id=line.line_id,
        label=line.label,
        step=line.step,
        key=line.key,
        status="ran",
        returncode=0,
        duration_s=result.duration_s,
        peak_rss_mb=result.peak_rss_mb,
        log_path=log_path,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        launched=launch.note if launch is not None else "",
    )


def line_task_options(line: RunLine, attempt: int = 1) -> dict[str, Any]:
    """``with_options`` arguments for one line: run name = line label (``-retryN`` after)."""
    name = line.label if attempt == 1 else f"{line.label}-retry{attempt - 1}"
    return {"task_run_name": name}


def class_limits_in_force() -> dict[ResourceClass, int]:
    """Slots of each class (``gpu``, ``memory-heavy``) the Prefect API holds an active tag
    concurrency limit for (deployments/setup.py creates them).

    The engine holds slots of these limits for the lines of those classes (its task runs
    carry no tags: Prefect asks the API for a slot of every tag of every task run).
    """
    in_force: dict[ResourceClass, int] = {}
    with get_client(sync_client=True) as client:
        for klass in sorted(LIMITED_CLASSES):
            try:
                limit = client.read_global_concurrency_limit_by_name(f"tag:{klass}")
            except ObjectNotFound:
                continue
            if limit.active:
                in_force[klass] = limit.limit
    return in_force


#: Global concurrency limit whose slots are GB of memory: each running line occupies its
#: reservation, rounded up to whole GB, so the concurrent runs of all stacks that one Prefect
#: server serves stay under it (``deployments/setup.py --memory-gb`` sizes it).
MEMORY_LIMIT = "insarflow-memory-gb"


def memory_limit_in_force() -> int | None:
    """Slots (GB) of the active :data:`MEMORY_LIMIT`, or None when there is none."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(MEMORY_LIMIT)
        except ObjectNotFound:
            return None
    return limit.limit if limit.active else None


# --------------------------------------------------------------------------- graph helpers


def downstream_depth(dag: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Length of the longest chain of lines below each line (1 for a leaf): a priority."""
    children: dict[str, set[str]] = {line_id: set() for line_id in dag}
    for line_id, upstream in dag.items():
        for up in upstream:
            children.setdefault(up, set()).add(line_id)
    depth: dict[str, int] = {}

    def visit(line_id: str) -> int:
        if line_id not in depth:
            depth[line_id] = 1 + max((visit(c) for c in children[line_id]), default=0)
        return depth[line_id]

    for line_id in children:
        visit(line_id)
    return depth


# --------------------------------------------------------------------------- scheduling policy


def line_memory_mb(line: RunLine, *, n_bursts: int, range_looks: int, azimuth_looks: int) -> int:
    """Memory (MB) to reserve for ``line`` (a swath piece: its share of the bursts)."""
    bursts = max(1, math.ceil(n_bursts / line.of_swaths))
    return estimate_memory_mb(line.step, line.key_kind, bursts, range_looks, azimuth_looks)


def oom_retry_memory_mb(memory_mb: int, cap_mb: int | None) -> int:
    """Reservation for the retry of a line that ran out of memory: 1.5x, capped to a worker."""
    grown = math.ceil(memory_mb * OOM_GROWTH)
    return grown if cap_mb is None else max(memory_mb, min(grown, cap_mb))


@dataclass(frozen=True)
class Submission:
    """One attempt of one line, as the flow should submit it."""

    line: RunLine
    attempt: int
    memory_mb: int
    resource_class: ResourceClass
    priority: int
    force: bool

    def dask_resources(self, *, gpu: bool, slots: int | None = None) -> dict[str, float]:
        """Dask worker resources this attempt holds while it runs (``slots``: line slots of
        its worker, where workers advertise ``SLOTS``)."""
        resources: dict[str, float] = {"MEMORY_MB": float(self.memory_mb)}
        if gpu and self.resource_class == "gpu":
            resources["GPU"] = 1.0
        if slots:
            resources["SLOTS"] = float(slots)
        return resources


@dataclass(frozen=True)
class AttemptRecord:
    """The outcome of one attempt of one line."""

    line_id: str
    attempt: int
    memory_mb: int
    outcome: Literal["ran", "skipped", "oom", "transient", "fatal"]
    duration_s: float
    detail: str = ""  # what went wrong, for a failed attempt


@dataclass(frozen=True)
class ExecutionReport:
    """What an execution of the stack did."""

    results: Mapping[str, LineResult]
    attempts: tuple[AttemptRecord, ...]
    failures: tuple[LineFailed, ...]
    not_started: tuple[str, ...]
    critical_path: tuple[str, ...]
    critical_path_s: float
    wall_s: float

    @property
    def ran(self) -> list[str]:
        return [k for k, r in self.results.items() if r.status == "ran"]

    @property
    def skipped(self) -> list[str]:
        return [k for k, r in self.results.items() if r.status == "skipped"]

    @property
    def retries(self) -> int:
        return sum(1 for a in self.attempts if a.attempt > 1)


class StackFailed(RuntimeError):
    """A line failed for good; the stack stopped after the lines already running finished."""

    def __init__(self, report: ExecutionReport) -> None:
        self.report = report
        parts = [
            f"topsStack execution stopped: {len(report.failures)} line(s) failed, "
            f"{len(report.results)} finished, {len(report.not_started)} not started. "
            "Fix the cause and run again: finished lines are skipped."
        ]
        parts.extend(str(failure) for failure in report.failures)
        super().__init__("\n\n".join(parts))


@dataclass
class StackScheduler:
    """Which lines to submit next, with what reservation, and what to do after each attempt.

    Pure bookkeeping: the flow submits what :meth:`next_submissions` returns and reports every
    finished attempt back through :meth:`succeeded` or :meth:`failed`.
    """

    lines: Sequence[RunLine]
    dag: Mapping[str, frozenset[str]]
    memory_mb: Mapping[str, int]
    classes: Mapping[str, ResourceClass]
    worker_memory_mb: int | None = None
    # Refines ``memory_mb`` (the model's estimates) from the lines that ran; None: fixed.
    learned: LearnedMemory | None = None
    started_at: float = field(default_factory=time.monotonic)
    # Called with each line that finished (ran or skipped as done), e.g. to show progress.
    on_finished: Callable[[RunLine, LineResult], None] | None = None

    def __post_init__(self) -> None:
        by_id = {line.line_id: line for line in self.lines}
        if by_id.keys() != self.dag.keys():
            extra = sorted(by_id.keys() ^ self.dag.keys())
            raise ValueError(
                f"the lines and the dependency graph disagree on {extra[:6]}; "
                "build the graph from the same lines with build_dag"
            )
        self._order = [by_id[i] for i in topological_order(self.dag)]
        self._priority = downstream_depth(self.dag)
        self._pending: list[RunLine] = list(self._order)
        self._running: dict[str, Submission] = {}
        self._results: dict[str, LineResult] = {}
        self._attempts: list[AttemptRecord] = []
        self._retries: dict[tuple[str, FailureKind], int] = {}
        self._failures: list[LineFailed] = []
        self.learned_changed = False  # since the owner last saved ``learned``

    @property
    def stopped(self) -> bool:
        """True once a line failed for good: nothing new is submitted."""
        return bool(self._failures)

    @property
    def finished(self) -> bool:
        """True when nothing runs and nothing more will be submitted."""
        return not self._running and (self.stopped or not self._pending)

    def running(self) -> list[Submission]:
        return list(self._running.values())

    def result(self, line_id: str) -> LineResult | None:
        return self._results.get(line_id)

    def _capped(self, memory_mb: int) -> int:
        cap = self.worker_memory_mb
        return memory_mb if cap is None else max(1, min(memory_mb, cap))

    def next_submissions(
        self, is_done: Callable[[RunLine], bool] | None = None
    ) -> list[Submission]:
        """Lines whose upstream lines all succeeded, in topological order; marks them running.

        A ready line for which ``is_done`` holds, and none of whose upstream lines re-ran, is
        recorded as skipped instead (so resuming a stack submits no task for finished lines).
        """
        submissions: list[Submission] = []
        progress = True
        while progress and not self.stopped:
            progress = False
            for line in [ln for ln in self._pending if self._ready(ln)]:
                self._pending.remove(line)
                sub = Submission(
                    line=line,
                    attempt=1,
                    memory_mb=self._capped(self._estimate_mb(line)),
                    resource_class=self.classes[line.line_id],
                    priority=self._priority[line.line_id],
                    force=any(self._results[up].status == "ran" for up in self.dag[line.line_id]),
                )
                self._running[line.line_id] = sub
                if not sub.force and is_done is not None and is_done(line):
                    self.succeeded(line.line_id, skipped_result(line))
                    progress = True
                else:
                    submissions.append(sub)
        return submissions

    def refreshed(self, sub: Submission) -> Submission:
        """``sub`` (a first attempt still waiting to start) with the reservation learned since
        it became ready; a retry keeps its own."""
        if self.learned is None or sub.attempt > 1:
            return sub
        memory_mb = self._capped(self._estimate_mb(sub.line))
        if memory_mb == sub.memory_mb:
            return sub
        self._running[sub.line.line_id] = sub = replace(sub, memory_mb=memory_mb)
        return sub

    def _estimate_mb(self, line: RunLine) -> int:
        model_mb = self.memory_mb[line.line_id]
        if self.learned is None:
            return model_mb
        return self.learned.estimate_mb(line.step, line.key_kind, model_mb, key=line.key)

    def _ready(self, line: RunLine) -> bool:
        return all(up in self._results for up in self.dag[line.line_id])

    def succeeded(self, line_id: str, result: LineResult) -> None:
        sub = self._running.pop(line_id)
        self._results[line_id] = result
        # a line launched otherwise (tiles, processes) says nothing of the step's model
        if self.learned is not None and result.status == "ran" and not result.launched:
            line = sub.line
            model_mb = self.memory_mb[line_id]
            if self.learned.observe(
                line.step, line.key_kind, model_mb, result.peak_rss_mb, key=line.key
            ):
                self.learned_changed = True
        self._attempts.append(
            AttemptRecord(line_id, sub.attempt, sub.memory_mb, result.status, result.duration_s)
        )
        if self.on_finished is not None:
            self.on_finished(sub.line, result)

    def failed(self, line_id: str, error: LineFailed, duration_s: float = 0.0) -> Submission | None:
        """Record a failed attempt; return the retry to submit, or None (the run stops)."""
        sub = self._running.pop(line_id)
        self._attempts.append(
            AttemptRecord(
                line_id,
                sub.attempt,
                sub.memory_mb,
                error.kind,
                duration_s,
                detail=str(error).splitlines()[0],
            )
        )
        retry: Submission | None = None
        if error.kind != "fatal" and not self._retries.get((line_id, error.kind)):
            self._retries[(line_id, error.kind)] = 1
            memory_mb = sub.memory_mb
            if error.kind == "oom":
                memory_mb = oom_retry_memory_mb(memory_mb, self.worker_memory_mb)
            retry = Submission(
                line=sub.line,
                attempt=sub.attempt + 1,
                memory_mb=memory_mb,
                resource_class=sub.resource_class,
                priority=sub.priority,
                force=sub.force,
            )
        if retry is None:
            self._failures.append(error)
            return None
        self._running[line_id] = retry
        return retry

    def report(self) -> ExecutionReport:
        durations = {k: r.duration_s if (r := self._results.get(k)) else 0.0 for k in self.dag}
        path, total = critical_path(self.dag, durations)
        return ExecutionReport(
            results=dict(self._results),
            attempts=tuple(self._attempts),
            failures=tuple(self._failures),
            not_started=tuple(line.line_id for line in self._pending),
            critical_path=tuple(path),
            critical_path_s=total,
            wall_s=time.monotonic() - self.started_at,
        )


def plan_scheduler(
    lines: Sequence[RunLine],
    dag: Mapping[str, frozenset[str]],
    *,
    n_bursts: int,
    range_looks: int,
    azimuth_looks: int,
    use_gpu: bool,
    worker_memory_mb: int | None,
    learned: LearnedMemory | None = None,
) -> StackScheduler:
    """A :class:`StackScheduler` with each line's memory estimate and resource class."""
    return StackScheduler(
        lines=lines,
        dag=dag,
        memory_mb={
            line.line_id: line_memory_mb(
                line, n_bursts=n_bursts, range_looks=range_looks, azimuth_looks=azimuth_looks
            )
            for line in lines
        },
        classes={line.line_id: resource_class(line.step, use_gpu) for line in lines},
        worker_memory_mb=worker_memory_mb,
        learned=learned,
    )


# --------------------------------------------------------------------------- report


def render_report(report: ExecutionReport, lines: Sequence[RunLine]) -> str:
    """Markdown summary: per-step counts and durations, retries, failures, critical path."""
    steps: dict[tuple[int, str], list[RunLine]] = {}
    for line in lines:
        steps.setdefault((line.step_number, line.step), []).append(line)
    retried: dict[str, int] = {}
    for attempt in report.attempts:
        if attempt.attempt > 1:
            retried[attempt.line_id] = retried.get(attempt.line_id, 0) + 1
    failed = {f.line_id for f in report.failures}
    out = [
        "# topsStack execution",
        "",
        f"{len(report.ran)} ran, {len(report.skipped)} skipped, {len(failed)} failed, "
        f"{len(report.not_started)} not started, {report.retries} retries; "
        f"wall time {report.wall_s:.1f} s.",
        "",
        "| step | lines | ran | skipped | failed | retries | total s | longest s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (number, step), members in sorted(steps.items()):
        results = [report.results[m.line_id] for m in members if m.line_id in report.results]
        ran = [r for r in results if r.status == "ran"]
        ids = [m.line_id for m in members]
        out.append(
            f"| {number:02d} {step} | {len(members)} | {len(ran)} "
            f"| {len(results) - len(ran)} | {sum(i in failed for i in ids)} "
            f"| {sum(retried.get(i, 0) for i in ids)} "
            f"| {sum(r.duration_s for r in ran):.1f} "
            f"| {max((r.duration_s for r in ran), default=0.0):.1f} |"
        )
    out += ["", f"## Critical path ({report.critical_path_s:.1f} s)", ""]
    out += [
        f"{i}. `{line_id}` ({report.results[line_id].duration_s:.1f} s)"
        if line_id in report.results
        else f"{i}. `{line_id}`"
        for i, line_id in enumerate(report.critical_path, 1)
    ]
    failed_attempts = [a for a in report.attempts if a.outcome in ("oom", "transient", "fatal")]
    if failed_attempts:
        out += ["", "## Failed attempts", ""]
        out += [
            f"- `{a.line_id}` attempt {a.attempt} ({a.outcome}): {a.detail}"
            for a in failed_attempts
        ]
    if report.failures:
        out += ["", "## Failures", ""]
        for failure in report.failures:
            out += [
                f"- `{failure.line_id}` ({failure.kind}), log `{failure.log_path}`",
                "",
                "```",
                failure.log_tail,
                "```",
            ]
    return "\n".join(out) + "\n"
