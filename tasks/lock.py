"""One run per stack at a time: an exclusive lock file in the work directory.

``flock`` is released by the kernel when the holder dies, so a killed run never
leaves a stale lock behind. The lock belongs to the open file, and every external command
inherits a duplicate of it (:func:`tasks.shell.run_command`): a run killed outright keeps
its stack locked until the reaper (:mod:`tasks.reaper`) has ended the commands it started,
so a rerun never runs a line beside a leftover of the same line.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from tasks.reaper import TERM_GRACE_S

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
