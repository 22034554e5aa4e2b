"""One run per stack at a time.

:func:`stack_slot` holds the stack's Prefect global concurrency limit (one slot), so a
second run of the same stack waits for the first, whichever deployment started it, while
different stacks run side by side. :func:`stack_lock` is the last guard: an exclusive lock
file in the work directory that refuses a second run outright (e.g. one on another Prefect
API). ``flock`` is released by the kernel when the holder dies, so a killed run never
leaves a stale lock behind; a killed run's slot is freed when its lease expires.

The lock belongs to the open file, and every external command
inherits a duplicate of it (:func:`insarflow.tasks.shell.run_command`): a run killed outright keeps
its stack locked until the reaper (:mod:`insarflow.tasks.reaper`) has ended the commands it started,
so a rerun never runs a line beside a leftover of the same line.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

from insarflow.tasks.reaper import TERM_GRACE_S

log = logging.getLogger(__name__)

#: Slots held by this run: a subflow (``sbas`` inside ``sbas-update``) passes through.
_held_slots: ContextVar[frozenset[str]] = ContextVar("insarflow_stack_slots", default=frozenset())

#: How long a new run waits for the commands of a dead holder to be ended.
ORPHAN_WAIT_S = TERM_GRACE_S + 10.0

_held: set[int] = set()  # lock fds of this process
_held_guard = threading.Lock()


class StackLockedError(RuntimeError):
    """Another run holds the stack's lock."""


@contextmanager
def inherited_locks() -> Iterator[tuple[int, ...]]:
    """Duplicates of every stack lock this process holds, for a child to inherit (``pass_fds``).

    Duplicates, because a lock released by another thread meanwhile must not close an fd
    that a starting child is about to inherit.
    """
    with _held_guard:
        fds = tuple(os.dup(fd) for fd in _held)
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _holder_gone(holder: str) -> bool:
    """Whether the run named in the lock file was on this host and has exited."""
    try:
        info = json.loads(holder)
        if info["host"] != socket.gethostname():
            return False
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, OSError):
        return False
    return False


def _lock_when_orphans_end(fd: int) -> bool:
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        return True
    return False


@contextmanager
def stack_lock(work_dir: Path) -> Iterator[Path]:
    """Hold ``work_dir/.insarflow.lock`` for the duration; refuse if another run has it.

    When the run named in the lock has died, its commands still hold the lock while they
    are being ended: wait up to ``ORPHAN_WAIT_S`` for them.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / ".insarflow.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text(encoding="utf-8").strip() or "unknown"
            if not _holder_gone(holder):
                raise StackLockedError(
                    f"stack {work_dir} is being processed by another run ({holder}); wait for "
                    f"it to finish (two runs of one stack would interleave topsStack lines)"
                ) from None
            if not _lock_when_orphans_end(fd):
                raise StackLockedError(
                    f"stack {work_dir}: the run that held it ({holder}) has ended, but "
                    f"commands it started still hold {path} after {ORPHAN_WAIT_S:.0f} s; "
                    f"end them (`fuser -v {path}` lists them), then rerun"
                ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            ).encode(),
        )
        with _held_guard:
            _held.add(fd)
        yield path
    finally:
        with _held_guard:
            _held.discard(fd)
            os.close(fd)


def stack_limit_name(stack: str) -> str:
    """The global concurrency limit that serializes the runs of stack ``stack``."""
    return f"insarflow-stack-{stack}"


def stack_in_progress(work_dir: Path) -> bool:
    """Whether a live run holds ``work_dir``'s lock file (a dead holder's orphans do not count)."""
    path = work_dir / ".insarflow.lock"
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text(encoding="utf-8").strip() or "unknown"
        return not _holder_gone(holder)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _take_slot(name: str, stack: str, work_dir: Path, poll_s: float, held: ExitStack) -> bool:
    """Enter the slot of limit ``name`` into ``held``; False when it is held by a dead run.

    Acquisition is tried for ``poll_s`` at a time, re-checking in between whether the holder
    is still alive: a run killed outright keeps its lease, and a server without the lease
    reaper (an ephemeral one) never frees it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    warned = False
    with get_client(sync_client=True) as client:
        while True:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with suppress(ObjectAlreadyExists):  # another run created it a moment ago
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1)
                    )
                continue
            taken = limit.active and limit.active_slots >= limit.limit
            if taken and not stack_in_progress(work_dir):
                return False
            try:
                # The lease is renewed while the run lives; a renewal hiccup must not kill a
                # long topsStack run (the lock file still guards the stack).
                held.enter_context(
                    concurrency(
                        name,
                        occupy=1,
                        timeout_seconds=poll_s,
                        strict=True,
                        raise_on_lease_renewal_failure=False,
                    )
                )
                return True
            except TimeoutError:
                if not warned:
                    log.warning(
                        "stack %s is being processed by another run; waiting for it to finish "
                        "(concurrency limit %s)",
                        stack,
                        name,
                    )
                    warned = True


@contextmanager
def stack_slot(stack: str, work_dir: Path, poll_s: float = 2.0) -> Iterator[str]:
    """Hold the one slot of stack ``stack`` for the duration, waiting while another run has it.

    The limit is created on first use (limit 1); an operator may deactivate or resize it in
    the UI. Re-entrant within one run. A run killed outright keeps its slot until its lease
    expires (never, on an ephemeral server); while the slot is taken but no live run holds
    the stack's lock file, this run goes on under the lock file alone.
    """
    name = stack_limit_name(stack)
    if name in _held_slots.get():
        yield name
        return
    with ExitStack() as held:
        if not _take_slot(name, stack, work_dir, poll_s, held):
            log.warning(
                "stack %s: concurrency limit %s is still held by a run that died (until its "
                "lease expires); going on under the work directory's lock file",
                stack,
                name,
            )
        token = _held_slots.set(_held_slots.get() | {name})
        try:
            yield name
        finally:
            _held_slots.reset(token)
