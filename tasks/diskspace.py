"""Free disk space: a pre-flight check before work starts, and clear errors when a disk fills.

A stack needs tens of GB (SAFE zips, coregistered bursts, interferograms); finding out
after hours of processing that the disk is full is the expensive way. ``check_free_space``
compares an estimate with what the file system offers before anything is written. Where
the need cannot be predicted, :func:`disk_full_error` turns the bare
``OSError(28, 'No space left on device')`` of a failed write into a message that names
the output, the file system and its free space.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import TypeGuard

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class InsufficientDiskSpaceError(OSError):
    """Not enough free space: ``path``, ``free_bytes`` and ``needed_bytes`` say where, how much."""

    def __init__(self, message: str, *, path: Path, free: int, needed: int | None) -> None:
        super().__init__(errno.ENOSPC, message)
        self.path = path
        self.free_bytes = free
        self.needed_bytes = needed

    def __str__(self) -> str:
        return str(self.strerror)


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a work directory may not exist yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes available to this user on the file system that holds (or will hold) ``path``."""
    return shutil.disk_usage(_existing(path)).free


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human-readable size (GiB, MiB, ...)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_free_space(path: Path, needed_bytes: int, *, what: str = "this run") -> int:
    """Raise :class:`InsufficientDiskSpaceError` unless ``needed_bytes`` are free at ``path``.

    Returns the free bytes. ``what`` names the work in the message.
    """
    if needed_bytes < 0:
        raise ValueError(f"needed_bytes must be >= 0, got {needed_bytes}")
    free = free_bytes(path)
    if free < needed_bytes:
        raise InsufficientDiskSpaceError(
            f"not enough disk space for {what} at {path}: {free} bytes "
            f"({format_bytes(free)}) free on {_existing(path)}, {needed_bytes} bytes "
            f"({format_bytes(needed_bytes)}) needed; free {format_bytes(needed_bytes - free)} "
            "there or point work_dir at a larger file system",
            path=Path(path),
            free=free,
            needed=needed_bytes,
        )
    return free


def is_disk_full(exc: BaseException) -> TypeGuard[OSError]:
    """True for an ``OSError`` meaning no space left (ENOSPC) or quota exceeded (EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def disk_full_error(exc: OSError, target: Path, *, kept: str = "") -> InsufficientDiskSpaceError:
    """The clear version of a disk-full ``exc`` raised while writing ``target``.

    ``kept`` says what was left intact (e.g. "the previous store is unchanged").
    """
    free = free_bytes(target)
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    after = f"; {kept}" if kept else ""
    return InsufficientDiskSpaceError(
        f"no space left on the device while writing {target}{where}: {free} bytes "
        f"({format_bytes(free)}) free on {_existing(target)}{after}. Free space there "
        "(or point work_dir at a larger file system) and run again",
        path=Path(target),
        free=free,
        needed=None,
    )
