"""Bursts an area selects, from real SAFE annotation; a single-burst swath refused early.

The expected boxes were recorded from ISCE2 2.6.5 itself (``Sentinel1.parse()`` on the
fixture zips, then ``BurstSLC.getBbox()`` of each burst); the fixture README records that
ISCE2 keeps 2 bursts of IW1 of ``safe_pixels`` for S N W E 46.95 47.05 11.6 11.9.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from insarflow.tasks.bursts import (
    SingleBurstError,
    _annotation,
    burst_boxes,
    bursts_in_area,
    check_bbox_bursts,
    stack_burst_count,
)
from tests.support.fake_isce2 import fake_isce2

PIXELS = "safe_pixels/S1B_IW_SLC__1SDV_20210401T052622_20210401T052650_026269_032297_EFA4.zip"
SAFE = "safe/S1A_IW_SLC__1SDV_20250406T022008_20250406T022035_058630_07421F_93A7.zip"
#: Burst boxes (S N W E) of ISCE2 2.6.5's BurstSLC.getBbox(): first and last burst, count.
ISCE2_BOXES = [
    (
        PIXELS,
        1,
        "vv",
        (46.8991, 47.2562, 11.0903, 12.4882),
        (45.5776, 45.9339, 10.7442, 12.1073),
        9,
    ),
    (PIXELS, 2, "vh", (47.1478, 47.4951, 10.0029, 11.4211), (45.6602, 46.0074, 9.6441, 11.023), 10),
    (
        SAFE,
        1,
        "vv",
        (51.0852, 51.4521, -129.703, -128.1229),
        (52.4029, 52.7714, -130.1435, -128.5147),
        9,
    ),
    (
        SAFE,
        3,
        "vv",
        (51.3179, 51.6373, -127.2289, -125.8322),
        (52.6376, 52.957, -127.5936, -126.1542),
        9,
    ),
]
TWO_BURSTS = (46.95, 47.05, 11.6, 11.9)  # ISCE2 keeps bursts 1 and 2 of IW1
ONE_BURST = (47.15, 47.2, 11.6, 11.9)  # only burst 1 reaches north of 47.091


@pytest.mark.parametrize(("zip_name", "swath", "pol", "first", "last", "count"), ISCE2_BOXES)
def test_burst_boxes_match_isce2(
    fixtures_dir: Path,
    zip_name: str,
    swath: int,
    pol: str,
    first: tuple[float, ...],
    last: tuple[float, ...],
    count: int,
) -> None:
    annotation = _annotation(fixtures_dir / zip_name, swath, pol)
    assert annotation is not None
    boxes = burst_boxes(annotation)
    assert len(boxes) == count
    for mine, isce2 in ((boxes[0].snwe, first), (boxes[-1].snwe, last)):
        assert mine[:2] == pytest.approx(isce2[:2], abs=0.002)  # latitude: ~200 m
        assert mine[2:] == pytest.approx(isce2[2:], abs=0.006)  # longitude: ~450 m


def test_bursts_in_area_count_like_isce2(fixtures_dir: Path) -> None:
    zips = [fixtures_dir / PIXELS]
    assert bursts_in_area(zips, [1, 2, 3], "vv", TWO_BURSTS) == {1: 2}  # VV: IW1 only
    assert bursts_in_area(zips, [1, 2, 3], "vv", ONE_BURST) == {1: 1}
    # VH has IW1 and IW2; ISCE2 keeps bursts 1-3 of IW2 here (their boxes reach 47.15 and 11.3)
    assert bursts_in_area(zips, [1, 2], "vh", (47.15, 47.2, 11.3, 11.5)) == {1: 1, 2: 3}
    # a second slice of the same acquisition repeats its bursts: counted once
    assert bursts_in_area(zips * 2, [1], "vv", TWO_BURSTS) == {1: 2}
    assert bursts_in_area(zips, [1], "vv", (10.0, 11.0, 11.6, 11.9)) == {1: 0}
    # the stack's bursts over its swaths (the engine's memory estimates); None: unknown
    assert stack_burst_count(zips, [1, 2], "vh", (47.15, 47.2, 11.3, 11.5)) == 4
    assert stack_burst_count(zips, [1], "vv", (10.0, 11.0, 11.6, 11.9)) is None
    assert stack_burst_count([fixtures_dir / "README.md"], [1], "vv", TWO_BURSTS) is None


def test_single_burst_message_names_field_value_and_fix() -> None:
    check_bbox_bursts({1: 2, 2: 5, 3: 0})
    with pytest.raises(SingleBurstError) as info:
        check_bbox_bursts({1: 3, 2: 1, 3: 1}, value=[47.15, 47.2, 11.6, 11.9])
    assert str(info.value) == (
        "area.bbox [47.15, 47.2, 11.6, 11.9] covers a single burst of swath IW2, IW3: ISCE2's "
        "merge step crashes on a single-burst swath; enlarge area.bbox along the track "
        "(north-south) to at least 2 bursts, or remove 2, 3 from topsstack.swaths"
    )


def _config(tmp_path: Path, fixtures_dir: Path, bbox: tuple[float, ...]) -> dict[str, object]:
    slc = tmp_path / "SLC"
    slc.mkdir(exist_ok=True)
    link = slc / Path(PIXELS).name
    if not link.exists():
        link.symlink_to(fixtures_dir / PIXELS)
    return {
        "name": "alps",
        "work_dir": str(tmp_path / "work"),
        "isce2": {"env_script": str(fake_isce2(tmp_path / "isce2"))},
        "area": {"bbox": list(bbox)},
        "acquisition": {"track": 168, "start": "2021-03-01", "end": "2021-05-01"},
        "inputs": {"slc_dir": str(slc), "download_missing": False},
        "topsstack": {"swaths": [1]},
    }


def _insarflow(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "insarflow"
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "COLUMNS": "300",
            "PATH": str(exe.parent),
            "HOME": str(Path.home()),
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        },
    )


def test_validate_refuses_a_single_burst_bbox_before_any_work(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    """`insarflow validate` on SAFE zips already on disk names area.bbox and the fix."""
    outputs = {}
    for name, bbox in (("one", ONE_BURST), ("two", TWO_BURSTS)):
        cfg = tmp_path / name / "stack.yaml"
        cfg.parent.mkdir()
        cfg.write_text(yaml.safe_dump(_config(cfg.parent, fixtures_dir, bbox)))
        outputs[name] = _insarflow("validate", str(cfg))
        assert not (cfg.parent / "work" / "stack").exists()
    one, two = outputs["one"], outputs["two"]
    assert one.returncode == 2
    assert "covers a single burst of swath IW1" in one.stdout + one.stderr
    assert "remove 1 from topsstack.swaths" in one.stdout + one.stderr
    # the two-burst area is refused only for its single date (no time series), not its bursts
    assert "single burst" not in two.stdout + two.stderr
    assert "1 acquisition date(s)" in two.stdout + two.stderr


def test_plan_counts_the_bursts_of_the_safe_zips_on_disk(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    from insarflow.config import StackConfig
    from insarflow.plan import plan_stack

    data = _config(tmp_path, fixtures_dir, TWO_BURSTS)
    data["acquisition"]["end"] = "2021-06-01"  # type: ignore[index]
    slc = tmp_path / "SLC"
    for day in ("20210413", "20210425", "20210507"):  # the same scene again: a 4-date stack
        (slc / Path(PIXELS).name.replace("20210401", day)).symlink_to(fixtures_dir / PIXELS)
    cfg = tmp_path / "stack.yaml"
    cfg.write_text(yaml.safe_dump(data))
    done = _insarflow("plan", str(cfg))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 dates 20210401..20210507" in done.stdout and ", 2 bursts" in done.stdout
    config = StackConfig.model_validate(data)
    dates = ["20210401", "20210413", "20210425", "20210507"]
    disk_gb = plan_stack(config, dates, bursts=2).disk_gb
    assert disk_gb < plan_stack(config, dates).disk_gb  # the 9-burst default
    assert f"estimated disk: ~{disk_gb:.1f} GB" in done.stdout


def test_topsstack_stage_refuses_a_single_burst_bbox_before_stacksentinel(
    tmp_path: Path, fixtures_dir: Path, prefect_harness: None
) -> None:
    """Downloaded SAFE zips: the stage checks the reference date's bursts before
    stackSentinel.py starts (a stand-in records being started)."""
    from insarflow.config import StackConfig
    from insarflow.flows.stages import AcquireResult, topsstack_stage

    data = _config(tmp_path, fixtures_dir, ONE_BURST)
    data["inputs"] = {}
    config = StackConfig.model_validate(data)
    started = tmp_path / "stackSentinel-started"
    stub = tmp_path / "isce2" / "share" / "isce2" / "topsStack" / "stackSentinel.py"
    stub.write_text(f"#!/bin/sh\ntouch {started}\n")
    acquired = AcquireResult(
        dates=["20210401"], safe_files=[fixtures_dir / PIXELS], dem=tmp_path / "dem.wgs84"
    )
    with pytest.raises(SingleBurstError) as info:
        topsstack_stage(config, acquired)
    assert str(info.value).startswith(
        "area.bbox [47.15, 47.2, 11.6, 11.9] covers a single burst of swath IW1"
    )
    assert not started.exists() and not (config.paths.stack / "run_files").exists()
