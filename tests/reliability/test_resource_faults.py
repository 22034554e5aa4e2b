"""Starved of memory or disk: retried where it helps, a clear error where it does not.

- A topsStack line SIGKILLed on its first attempt (what the kernel's OOM killer does) is
  retried once, through the real executor flow on a simulator stack, with 1.5 x the
  memory reservation, and the stack completes.
- Disk space: a pre-flight check refuses work that cannot fit, naming the path, the free
  and the needed bytes (:mod:`insarflow.tasks.diskspace`). A disk that fills during the run (a tiny
  tmpfs when this runs as root, otherwise a simulated ENOSPC) fails the line or the export
  with a clear error, and leaves finished outputs alone: completion markers stay valid, the
  previous zarr store stays readable and unchanged, and a rerun with space finishes the job
  without redoing finished lines.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import xarray as xr

from insarflow.tasks.diskspace import InsufficientDiskSpaceError, check_free_space, free_bytes
from insarflow.tasks.download import DownloadItem, bytes_still_needed, download_files
from insarflow.tasks.export import export_zarr
from insarflow.tasks.topsstack.executor import (
    StackFailed,
    is_line_done,
    log_path_for,
    marker_path,
)
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files
from tests.products.synthetic import build_mintpy_dir
from tests.reliability.helpers import FIGURES, command_headers
from tests.simulator.helpers import SimStack, run_stack, small_stack

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:affine")

UNWRAP_MB = 2000 + 300 * 2  # the unwrap estimate for 2 bursts (insarflow.tasks.topsstack.resources)

WRAPPER = """\
#!{python}
# Stand-in in front of the simulator's SentinelWrapper.py for one chosen line.
import os, signal, sys
from pathlib import Path

if any(a.endswith({target!r}) for a in sys.argv[1:]) and {condition}:
{action}
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""

SIGKILL_ONCE = """\
    Path({state!r}).write_text("killed once")
    print("allocating the unwrapping buffers", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""

DISK_FULL = """\
    print("OSError: [Errno 28] No space left on device: 'merged/interferograms'", flush=True)
    sys.exit(1)
"""


def wrap_line(bin_dir: Path, sim: SimStack, target: str, condition: str, action: str) -> Path:
    """A ``SentinelWrapper.py`` that runs ``action`` for the line whose config ends in
    ``target`` while ``condition`` holds, and hands every other call to the simulator."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "SentinelWrapper.py"
    script.write_text(
        WRAPPER.format(
            python=sys.executable,
            target=target,
            condition=condition,
            action=action,
            real=str(sim.bin / "SentinelWrapper.py"),
        )
    )
    script.chmod(0o755)
    return bin_dir


def test_line_killed_like_the_oom_killer_is_retried_with_more_memory(
    tmp_path: Path, prefect_harness: None
) -> None:
    sim = small_stack(tmp_path / "sim")
    pair = next(line for line in parse_run_files(sim.stack) if line.step == "unwrap").key
    state = tmp_path / "killed.state"
    wrapper = wrap_line(
        tmp_path / "wrap",
        sim,
        f"config_igram_unw_{pair}",
        f"not Path({str(state)!r}).exists()",
        SIGKILL_ONCE.format(state=str(state)),
    )
    report = run_stack(sim, tmp_path / "logs", [wrapper])
    line_id = next(k for k in report.results if k.endswith(f"unwrap:{pair}"))
    attempts = [
        (a.attempt, a.outcome, a.memory_mb) for a in report.attempts if a.line_id == line_id
    ]
    assert attempts == [(1, "oom", UNWRAP_MB), (2, "ran", UNWRAP_MB * 3 // 2)], attempts
    assert report.retries == 1 and not report.failures and not report.not_started
    log = log_path_for(report_line(sim, line_id), tmp_path / "logs").read_text()
    assert "### rc=-9" in log and "### rc=0" in log
    assert f"INSARFLOW_LINE_MEMORY_MB={UNWRAP_MB} " in log
    assert f"INSARFLOW_LINE_MEMORY_MB={UNWRAP_MB * 3 // 2} " in log
    assert all(is_line_done(line, sim.stack) for line in parse_run_files(sim.stack))
    FIGURES["OOM kills retried"] += 1


def report_line(sim: SimStack, line_id: str) -> RunLine:
    return next(line for line in parse_run_files(sim.stack) if line.line_id == line_id)


# --------------------------------------------------------------------------- disk space


def test_preflight_names_path_free_and_needed_bytes(tmp_path: Path) -> None:
    work = tmp_path / "not" / "created" / "yet"
    free = free_bytes(work)
    assert check_free_space(work, 1024) == free
    needed = free + 5 * 2**30
    with pytest.raises(InsufficientDiskSpaceError) as info:
        check_free_space(work, needed, what="stack track142")
    message = str(info.value)
    assert f"at {work}:" in message and "stack track142" in message
    assert f"{needed} bytes" in message and "bytes (" in message
    assert f"free on {tmp_path}" in message and "point work_dir at a larger file system" in message
    assert info.value.errno == errno.ENOSPC and info.value.needed_bytes == needed
    assert not work.exists()  # a check writes nothing


def test_downloads_that_cannot_fit_are_refused_before_any_request(tmp_path: Path) -> None:
    slc = tmp_path / "SLC"
    slc.mkdir()
    huge = free_bytes(slc) + 2**30
    partial = slc / "S1A_B.zip.part"
    partial.write_bytes(b"x" * 1000)  # a resumed download needs only what is missing
    # Port 9 on loopback: nothing listens, so any request would fail differently.
    items = [
        DownloadItem(url="http://127.0.0.1:9/a.zip", dest=slc / "S1A_A.zip", size=huge),
        DownloadItem(url="http://127.0.0.1:9/b.zip", dest=slc / "S1A_B.zip", size=5000),
    ]
    assert bytes_still_needed(items) == huge + 4000
    with pytest.raises(InsufficientDiskSpaceError) as info:
        download_files(items, max_parallel=2)
    message = str(info.value)
    assert "the downloads" in message and f"{huge + 4000} bytes" in message
    assert sorted(p.name for p in slc.iterdir()) == ["S1A_B.zip.part"]
    assert partial.read_bytes() == b"x" * 1000
    FIGURES["disk-full refused before work"] += 1


def test_fresh_isce2_stack_too_big_for_the_disk_is_refused_before_stacksentinel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    import zipfile

    from insarflow.config import StackConfig
    from insarflow.flows.stages import AcquireResult, topsstack_stage
    from insarflow.plan import plan_stack
    from tests.support.fake_isce2 import fake_isce2

    # ISCE2 cannot exist here: a stand-in whose stackSentinel.py records being started.
    env_sh = fake_isce2(tmp_path / "isce2")
    started = tmp_path / "stackSentinel-started"
    stub = tmp_path / "isce2" / "share" / "isce2" / "topsStack" / "stackSentinel.py"
    stub.write_text(f"#!/bin/sh\ntouch {started}\n")
    stub.chmod(0o755)
    config = StackConfig.model_validate(
        {
            "name": "big",
            "work_dir": str(tmp_path / "work"),
            "isce2": {"env_script": str(env_sh)},
            "area": {"bbox": [31.0, 31.5, 120.0, 121.0]},
            "acquisition": {"track": 142, "start": "2020-01-01", "end": "2021-01-01"},
        }
    )
    first = datetime.date(2020, 1, 1)
    dates = [(first + datetime.timedelta(days=12 * i)).strftime("%Y%m%d") for i in range(30)]
    safes = []
    for date in dates:
        safe = config.paths.slc / f"S1A_IW_SLC__1SDV_{date}T000000_{date}T000030_0.zip"
        safe.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(safe, "w") as zf:
            zf.writestr("manifest.safe", "")
        safes.append(safe)
    needed = plan_stack(config, dates).processing_bytes
    if needed <= free_bytes(tmp_path):  # ~1 TB: only a very large disk holds it
        pytest.skip(f"{free_bytes(tmp_path)} bytes free: the stack would fit")
    acquired = AcquireResult(dates=dates, safe_files=safes, dem=tmp_path / "dem.wgs84")
    with pytest.raises(InsufficientDiskSpaceError) as info:
        topsstack_stage(config, acquired)
    assert "topsStack processing" in str(info.value) and f"{needed} bytes" in str(info.value)
    assert not started.exists() and not (config.paths.stack / "run_files").exists()
    FIGURES["disk-full refused before work"] += 1


def test_the_disk_need_of_a_fresh_stack_counts_the_bursts_its_area_covers(
    tmp_path: Path,
    fixtures_dir: Path,
    tmpfs: Callable[[str], TinyFs | None],
    prefect_harness: None,
) -> None:
    from insarflow.config import StackConfig
    from insarflow.flows.stages import AcquireResult, topsstack_stage
    from insarflow.plan import plan_stack
    from tests.acquisition.test_bursts import PIXELS, TWO_BURSTS, _config

    fs = tmpfs("1m")
    if fs is None:
        pytest.skip("needs a 1 MiB tmpfs (root) to make the disk check refuse")
    data = _config(tmp_path, fixtures_dir, TWO_BURSTS)
    data["work_dir"] = str(fs.path / "work")
    config = StackConfig.model_validate(data)
    dates = ["20210401"]
    acquired = AcquireResult(
        dates=dates, safe_files=[fixtures_dir / PIXELS], dem=tmp_path / "dem.wgs84"
    )
    with pytest.raises(InsufficientDiskSpaceError) as info:
        topsstack_stage(config, acquired)
    # the area keeps 2 bursts of IW1: the need is theirs, not a whole 9-burst swath's
    needed = plan_stack(config, dates, bursts=2).processing_bytes
    assert f"{needed} bytes" in str(info.value)
    assert 0 < needed * 4 < plan_stack(config, dates).processing_bytes


@dataclass
class TinyFs:
    """A tmpfs mounted for one test."""

    path: Path

    def resize(self, size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(self.path)], check=True, timeout=30
        )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], TinyFs | None]]:
    """Mounts a tmpfs of a given size under tmp_path; None where that is not allowed."""
    mounted: list[Path] = []

    def mount(size: str) -> TinyFs | None:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            return None
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            return None
        mounted.append(where)
        return TinyFs(where)

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def test_disk_full_during_topsstack_keeps_finished_lines(
    tmp_path: Path, tmpfs: Callable[[str], TinyFs | None], prefect_harness: None
) -> None:
    fs = tmpfs("1m")
    root = fs.path if fs else tmp_path / "sim"
    sim = small_stack(root / "sim")
    extra: list[Path] = []
    if fs is None:  # no tmpfs here: one line reports a full disk until space is "freed"
        flag = tmp_path / "disk-full"
        flag.touch()
        pair = next(line for line in parse_run_files(sim.stack) if line.step == "unwrap").key
        extra = [
            wrap_line(
                tmp_path / "wrap",
                sim,
                f"config_igram_unw_{pair}",
                f"Path({str(flag)!r}).exists()",
                DISK_FULL,
            )
        ]
    logs = tmp_path / "logs"
    with pytest.raises(StackFailed) as info:
        run_stack(sim, logs, extra)
    message = str(info.value)
    assert "No space left on device" in message and "full log:" in message
    failed = {f.line_id for f in info.value.report.failures}
    lines = parse_run_files(sim.stack)
    done = {line.line_id: line for line in lines if is_line_done(line, sim.stack)}
    assert done and failed and not failed & done.keys()
    assert len(done) < len(lines)
    for line_id in failed:  # a failed line leaves no marker to be mistaken for done
        line = next(ln for ln in lines if ln.line_id == line_id)
        assert not marker_path(line, sim.stack).exists()
    markers = {k: marker_path(ln, sim.stack).read_text() for k, ln in done.items()}
    assert all(json.loads(m)["line_id"] == k for k, m in markers.items())
    commands = {k: command_headers(log_path_for(ln, logs)) for k, ln in done.items()}
    # space is freed; the rerun finishes without touching the finished lines
    if fs is not None:
        fs.resize("64m")
    else:
        flag.unlink()
    report = run_stack(sim, logs, extra)
    assert not report.failures and set(report.skipped) >= done.keys()
    assert {k: marker_path(ln, sim.stack).read_text() for k, ln in done.items()} == markers
    assert {k: command_headers(log_path_for(ln, logs)) for k, ln in done.items()} == commands
    assert all(is_line_done(line, sim.stack) for line in lines)
    FIGURES["disk-full failures survived" + (" (tmpfs)" if fs else " (simulated)")] += 1


def store_values(store: Path) -> dict[str, bytes]:
    with xr.open_zarr(store) as ds:
        return {str(k): ds[k].values.tobytes() for k in ds.variables}


def test_disk_full_during_export_keeps_the_previous_store(
    tmp_path: Path, tmpfs: Callable[[str], TinyFs | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    mintpy_dir = build_mintpy_dir(tmp_path).mintpy_dir
    fs = tmpfs("8m")
    products = fs.path if fs else tmp_path / "products"
    store = export_zarr(mintpy_dir, products / "timeseries.zarr", provenance={"run": "1"})
    before = store_values(store)
    if fs is not None:  # leave room for half a store
        size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        (products / "filler").write_bytes(b"\0" * (free_bytes(products) - size // 2))
    else:
        to_zarr = xr.Dataset.to_zarr

        def fill_up(self: xr.Dataset, target: Path, **kwargs: object) -> object:
            to_zarr(self, target, **kwargs)  # type: ignore[call-overload]
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(xr.Dataset, "to_zarr", fill_up)
    with pytest.raises(InsufficientDiskSpaceError) as info:
        # force: a whole new store (the same data otherwise only gets its attributes rewritten
        # in a hard-linked copy, which needs no room)
        export_zarr(mintpy_dir, store, provenance={"run": "2"}, force=True)
    message = str(info.value)
    assert f"while writing {store}" in message and f"{store} is unchanged" in message
    assert "bytes (" in message and "free on" in message and "run again" in message
    assert info.value.errno == errno.ENOSPC
    assert store_values(store) == before
    assert sorted(p.name for p in products.iterdir() if p.name != "filler") == ["timeseries.zarr"]
    FIGURES["disk-full failures survived" + (" (tmpfs)" if fs else " (simulated)")] += 1
