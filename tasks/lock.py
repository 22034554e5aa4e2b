"""One run per stack at a time.

:func:`stack_slot` holds the stack's Prefect global concurrency limit (one slot), so a
second run of the same stack waits for the first, whichever deployment started it, while
different stacks run side by side. :func:`stack_lock` is the last guard: an exclusive lock
file in the work directory that refuses a second run outright (e.g. one on another Prefect
API). ``flock`` is released by the kernel when the holder dies, so a killed run never
leaves a stale lock behind; a killed run's slot is freed when its lease expires.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

#: Slots held by this run: a subflow (``sbas`` inside ``sbas-update``) passes through.
_held: ContextVar[frozenset[str]] = ContextVar("insarflow_stack_slots", default=frozenset())


class StackLockedError(RuntimeError):
    """Another run holds the stack's lock."""


@contextmanager
def stack_lock(work_dir: Path) -> Iterator[Path]:
    """Hold ``work_dir/.insarflow.lock`` for the duration; refuse if another run has it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / ".insarflow.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text(encoding="utf-8").strip() or "unknown"
            raise StackLockedError(
                f"stack {work_dir} is being processed by another run ({holder}); wait for it "
                f"to finish (two runs of one stack would interleave topsStack lines)"
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
        yield path
    finally:
        os.close(fd)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run's logger (shown in the UI), or this module's outside a run."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return log


def stack_limit_name(stack: str) -> str:
    """The global concurrency limit that serializes the runs of stack ``stack``."""
    return f"insarflow-stack-{stack}"


@contextmanager
def stack_slot(stack: str) -> Iterator[str]:
    """Hold the one slot of stack ``stack`` for the duration, waiting while another run has it.

    The limit is created on first use (limit 1); an operator may deactivate or resize it in
    the UI. Re-entrant within one run.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = stack_limit_name(stack)
    if name in _held.get():
        yield name
        return
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
            busy = limit.active and limit.active_slots >= limit.limit
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it a moment ago
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
            busy = False
    if busy:
        _run_logger().warning(
            "stack %s is being processed by another run; waiting for it to finish "
            "(concurrency limit %s)",
            stack,
            name,
        )
    # The lease is renewed while the run lives; a renewal hiccup must not kill a long
    # topsStack run (the lock file still guards the stack).
    with concurrency(name, occupy=1, strict=True, raise_on_lease_renewal_failure=False):
        token = _held.set(_held.get() | {name})
        try:
            yield name
        finally:
            _held.reset(token)
