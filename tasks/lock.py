"""One run per stack at a time: an exclusive lock file in the work directory.

``flock`` is released by the kernel when the holder dies, so a killed run never
leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


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
