"""insarflow.atomic: every atomic write of the project goes through it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from insarflow import atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError, match="boom"), atomic.replacing(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_directory_replaces_a_directory(tmp_path: Path) -> None:
    store = tmp_path / "store.zarr"
    (store / "a").mkdir(parents=True)
    with atomic.replacing(store) as tmp:
        (tmp / "b").mkdir(parents=True)
    assert [p.name for p in store.iterdir()] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_skip_unchanged_keeps_the_file_and_its_time(tmp_path: Path) -> None:
    path = tmp_path / "data.rsc"
    assert atomic.write_bytes(path, b"x", skip_unchanged=True)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert not atomic.write_bytes(path, b"x", skip_unchanged=True)
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert atomic.write_text(path, "y", skip_unchanged=True)
    assert path.read_text() == "y"
