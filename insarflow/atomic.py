"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Everything is written to ``<name>.tmp-<hex>`` beside its destination and renamed into place,
so a killed process leaves at most a temporary that a rerun ignores or removes. The files are
not fsynced: the protection is against a process dying (what resume relies on), not against
the machine losing power.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp-"


def temp_path(final: Path) -> Path:
    """A fresh temporary path beside ``final`` (same directory, so the rename is atomic)."""
    return final.with_name(f"{final.name}{TMP_MARK}{uuid.uuid4().hex}")


def old_path(final: Path) -> Path:
    """Where a directory being replaced waits until its successor is in place."""
    return final.with_name(f"{final.name}.old")


def remove(path: Path) -> None:
    """Delete a file, link or directory tree; nothing when absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def swap_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``. A file is replaced in one step; a directory (which
    ``os.replace`` cannot overwrite) is moved aside to :func:`old_path` first, then deleted."""
    if not (tmp.is_dir() and final.is_dir()):
        tmp.replace(final)
        return
    old = old_path(final)
    final.rename(old)
    tmp.rename(final)
    remove(old)


@contextlib.contextmanager
def replacing(final: Path) -> Iterator[Path]:
    """Yield a temporary path for a library to write (a file or a directory); when the block
    ends without error it replaces ``final``, otherwise it is deleted."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    try:
        swap_into_place(tmp, final)
    finally:
        remove(tmp)  # only left when the rename itself failed


def write_bytes(path: Path, data: bytes, *, skip_unchanged: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically; with ``skip_unchanged``, a file that already
    holds exactly ``data`` is left alone (its modification time too) and False returned."""
    if skip_unchanged and path.is_file() and path.read_bytes() == data:
        return False
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return True


def write_text(path: Path, text: str, *, skip_unchanged: bool = False) -> bool:
    """UTF-8 text version of :func:`write_bytes`."""
    return write_bytes(path, text.encode("utf-8"), skip_unchanged=skip_unchanged)
