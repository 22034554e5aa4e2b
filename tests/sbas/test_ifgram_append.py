"""Appending an update's interferograms to ifgramStack.h5 equals a fresh load of all pairs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from insarflow.tasks.ifgram_append import append_ifgram_stack
from insarflow.tasks.sbas import prepare_mintpy_metadata, run_mintpy_step, write_smallbaseline_cfg

from .synthetic import make_topsstack


def _load(stack_dir: Path, work: Path, logs: Path, env: dict[str, str], *steps: str) -> Path:
    prepare_mintpy_metadata(stack_dir, log_dir=logs, env=env)
    cfg = write_smallbaseline_cfg(work / "smallbaselineApp.cfg", stack_dir=stack_dir, plot=False)
    for step in ("load_data", *steps):
        run_mintpy_step(step, cfg, work, logs, env=env)
    return work / "inputs" / "ifgramStack.h5"


def _content(path: Path) -> dict[str, Any]:
    """Every dataset (values, dtype, attributes but the write time) and the root attributes."""
    with h5py.File(path, "r") as f:
        out: dict[str, Any] = {"/": dict(sorted(f.attrs.items()))}
        for name, ds in f.items():
            attrs = {k: v for k, v in ds.attrs.items() if k != "MODIFICATION_TIME"}
            out[name] = (ds.dtype, ds[()], attrs)
    return out


def _assert_same(appended: Path, fresh: Path) -> None:
    got, want = _content(appended), _content(fresh)
    assert sorted(got) == sorted(want)
    assert got.pop("/") == want.pop("/")
    for name, (dtype, data, attrs) in want.items():
        assert got[name][0] == dtype, name
        np.testing.assert_array_equal(got[name][1], data, err_msg=name)
        assert got[name][2] == attrs, name


@pytest.fixture
def grown(tmp_path: Path, fixtures_dir: Path) -> tuple[Path, list[str], Path]:
    """A 7-date stack whose last date's interferograms wait in ``held/`` (not yet processed)."""
    stack = make_topsstack(tmp_path, fixtures_dir, n_dates=7, connections=3)
    last = stack.dates[-1]
    held = tmp_path / "held"
    held.mkdir()
    new = [p for p in stack.pairs if p.endswith(last)]
    for pair in new:
        shutil.move(stack.stack_dir / "merged" / "interferograms" / pair, held / pair)
    return stack.stack_dir, new, held


def test_appended_stack_equals_a_fresh_load(
    grown: tuple[Path, list[str], Path], tmp_path: Path, no_isce_env: dict[str, str]
) -> None:
    stack_dir, new, held = grown
    work, logs = tmp_path / "mintpy", tmp_path / "logs"
    # The earlier run went on: modify_network and reference_point change the stack file.
    stack_file = _load(stack_dir, work, logs, no_isce_env, "modify_network", "reference_point")
    with h5py.File(stack_file, "r") as f:
        assert "REF_Y" in f.attrs and f["unwrapPhase"].shape[0] == 12
    for pair in new:  # the update: the new date's interferograms arrive
        shutil.move(held / pair, stack_dir / "merged" / "interferograms" / pair)
    prepare_mintpy_metadata(stack_dir, log_dir=logs, env=no_isce_env)

    result = append_ifgram_stack(work, logs / "mintpy" / "append.log")

    assert result is not None
    assert result.added == tuple(new) and result.total == 15
    # The 3 new pairs sort among the last dates' pairs: from the first new one on (the 12th
    # of 15) every slice is written.
    assert result.rewritten == 4
    fresh = _load(stack_dir, tmp_path / "fresh", tmp_path / "fresh-logs", no_isce_env)
    _assert_same(stack_file, fresh)
    # MintPy's load_data finds every pair and leaves the appended file alone.
    before = stack_file.stat().st_mtime_ns
    run_mintpy_step("load_data", work / "smallbaselineApp.cfg", work, logs, env=no_isce_env)
    assert "no need to re-load" in (logs / "mintpy" / "load_data.log").read_text()
    assert stack_file.stat().st_mtime_ns == before
    # Nothing new: nothing to do.
    assert append_ifgram_stack(work, logs / "mintpy" / "append.log") is None


def test_a_removed_pair_or_a_killed_append_means_a_fresh_load(
    grown: tuple[Path, list[str], Path], tmp_path: Path, no_isce_env: dict[str, str]
) -> None:
    stack_dir, _, held = grown
    work, logs = tmp_path / "mintpy", tmp_path / "logs"
    stack_file = _load(stack_dir, work, logs, no_isce_env)
    ifgs = stack_dir / "merged" / "interferograms"
    first = sorted(p.name for p in ifgs.iterdir())[0]
    shutil.move(ifgs / first, held / first)

    assert append_ifgram_stack(work, logs / "append.log") is None  # a pair is gone
    # MintPy's update mode would keep the file with the pair: it loads afresh instead
    assert not stack_file.exists()
    run_mintpy_step("load_data", work / "smallbaselineApp.cfg", work, logs, env=no_isce_env)
    fresh = _load(stack_dir, tmp_path / "fresh", tmp_path / "fresh-logs", no_isce_env)
    _assert_same(stack_file, fresh)
    with h5py.File(stack_file, "r") as f:
        assert len(f["date"]) == 11

    (work / ".insarflow").mkdir(exist_ok=True)
    (work / ".insarflow" / "append_ifgrams.running").write_text(str(stack_file))
    assert append_ifgram_stack(work, logs / "append.log") is None
    assert not stack_file.exists()  # MintPy's load_data writes it afresh


def test_a_reprocessed_interferogram_is_reloaded(
    grown: tuple[Path, list[str], Path], tmp_path: Path, no_isce_env: dict[str, str]
) -> None:
    stack_dir, _, _ = grown
    work, logs = tmp_path / "mintpy", tmp_path / "logs"
    stack_file = _load(stack_dir, work, logs, no_isce_env)
    ifgs = stack_dir / "merged" / "interferograms"
    first = sorted(p.name for p in ifgs.iterdir())[0]
    cor = ifgs / first / "filt_fine.cor"  # reprocessed (e.g. with a precise orbit)
    data = np.fromfile(cor, dtype=np.float32)
    (data * 0.5).astype(np.float32).tofile(cor)

    result = append_ifgram_stack(work, logs / "append.log")

    assert result is not None and result.added == () and result.rewritten == 1
    fresh = _load(stack_dir, tmp_path / "fresh", tmp_path / "fresh-logs", no_isce_env)
    _assert_same(stack_file, fresh)
