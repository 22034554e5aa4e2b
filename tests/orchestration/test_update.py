"""``sbas-update``: which dates are new, and a stack with nothing new runs no stage."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter,
    ArtifactCollectionFilterKey,
    FlowFilter,
    FlowFilterName,
)
from prefect.states import State

from insarflow.config import ConfigError
from insarflow.flows.sbas import sbas
from insarflow.flows.stages import AcquireResult, acquire_stage, acquisition_record
from insarflow.flows.update import new_dates, sbas_update
from insarflow.plan import disconnected_dates

from .conftest import MakeConfig

STAGE_FLOWS = ["sbas", "acquire", "topsstack-stage", "sbas-mintpy", "products"]
FIVE_DATES = ["20241201", "20241213", "20241225", "20250106", "20250118"]


def test_new_dates_of_a_simulator_stack(make_config: MakeConfig, tmp_path: Path) -> None:
    five, seven = make_config(tmp_path, 5), make_config(tmp_path, 7)
    assert new_dates(five, []) == FIVE_DATES
    assert new_dates(five, FIVE_DATES) == []
    assert new_dates(five, FIVE_DATES[:3]) == FIVE_DATES[3:]
    assert new_dates(seven, FIVE_DATES) == ["20250130", "20250211"]
    # a processed date the configuration no longer has is not "new"
    assert new_dates(five, [*FIVE_DATES, "20250130"]) == []


def test_disconnected_dates() -> None:
    processed = ["20250101", "20250113", "20250125"]
    assert disconnected_dates(processed, ["20250206", "20250301"], 3, 30) == []
    # 23 days from 20250206 to 20250301: with at most 20-day interferograms the chain breaks
    assert disconnected_dates(processed, ["20250206", "20250301", "20250313"], 3, 20) == [
        "20250301",
        "20250313",
    ]
    assert disconnected_dates(processed, ["20250301"], 3, None) == []


def _stage_run_counts() -> dict[str, int]:
    with get_client(sync_client=True) as client:
        return {
            name: len(
                client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
            )
            for name in STAGE_FLOWS
        }


def _snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_nothing_new_finishes_at_once_without_running_a_stage(
    prefect_harness: None, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(tmp_path / "work", 5)
    acquire_stage(config)  # what sbas-update reads: the record of the processed dates
    record = AcquireResult.load(acquisition_record(config))
    assert record is not None and record.dates == FIVE_DATES
    before, runs_before = _snapshot(config.paths.root), _stage_run_counts()
    assert runs_before["acquire"] >= 1

    state = sbas_update(config, return_state=True)

    assert isinstance(state, State)
    assert state.is_completed() and state.name == "Nothing new"
    assert _stage_run_counts() == runs_before
    assert _snapshot(config.paths.root) == before


def test_update_with_disconnected_dates_stops_before_processing(
    prefect_harness: None, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(tmp_path / "work", 5)
    acquire_stage(config)
    before, runs_before = _snapshot(config.paths.root), _stage_run_counts()
    grown = make_config(tmp_path / "work", 7)
    # 12 days between dates; MintPy told to keep no interferogram longer than 10 days
    grown.mintpy.extra["mintpy.network.tempBaseMax"] = "10"

    with pytest.raises(ConfigError) as raised:
        sbas_update(grown)

    assert str(raised.value) == (
        "1 problem(s) in update of stack tiny:\n  mintpy.extra.mintpy.network.tempBaseMax: "
        "new date(s) 20250130, 20250211 do not connect to the processed network "
        "(20241201..20250118): MintPy keeps interferograms of at most 10 days and the longest "
        "gap is 12 days (20250130 to 20250211); raise mintpy.network.tempBaseMax in mintpy.extra "
        "to at least 12, or add acquisitions between 20250130 and 20250211 (remove them from "
        "acquisition.exclude_dates)"
    )
    assert _stage_run_counts() == runs_before
    assert _snapshot(config.paths.root) == before


def _line_runs(log_dir: Path) -> dict[str, int]:
    """How often each topsStack line ran: line log headers per ``<step>/<key>.log``."""
    return {
        f"{log.parent.name}/{log.stem}": log.read_text().count("### line ")
        for log in log_dir.glob("*/*.log")
    }


# rioxarray's transform() goes through affine's deprecated matmul path.
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:affine")
def test_update_says_what_it_added(
    prefect_harness: None, make_config: MakeConfig, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    sbas(make_config(work, 4))
    before = _line_runs(work / "logs")
    grown = make_config(work, 5)

    state = sbas_update(grown, return_state=True)

    assert isinstance(state, State) and state.is_completed(), state
    after = _line_runs(work / "logs")
    ran = sum(n - before.get(line, 0) for line, n in after.items())
    assert ran > 0
    # connections 2: the new date pairs with the two before it
    assert state.message == (
        f"added 1 date(s): 20250118; {ran} topsStack line(s) run; 2 new interferogram(s)"
    )
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(
                key=ArtifactCollectionFilterKey(any_=["update-tiny"])
            )
        )
    [latest] = artifact
    assert latest.flow_run_id == state.state_details.flow_run_id
    text = str(latest.data)
    assert "## New dates\n\n- 20250118\n" in text
    assert "- 20241225_20250118\n- 20250106_20250118\n" in text
    assert f"| **total** | **{ran}** |" in text
    rows = dict(re.findall(r"^\| (\d\d_\w+) \| (\d+) \|$", text, flags=re.M))
    assert "10_unwrap" in rows
    assert sum(map(int, rows.values())) == ran
    # MintPy: the 2 new interferograms were appended, the whole network inverted again.
    assert "- appended 2 interferogram(s) to ifgramStack.h5 (" in text
    assert "- whole network inverted again (7 interferograms, 5 dates)" in text

    # The update's results equal a full run of the 5 dates.
    full = tmp_path / "full"
    sbas(make_config(full, 5))
    for name, dataset in (("timeseries.h5", "timeseries"), ("velocity.h5", "velocity")):
        with h5py.File(work / "mintpy" / name) as got, h5py.File(full / "mintpy" / name) as want:
            assert dict(got.attrs)["REF_Y"] == dict(want.attrs)["REF_Y"]
            np.testing.assert_allclose(got[dataset][()], want[dataset][()], rtol=0, atol=1e-6)
    with (
        h5py.File(work / "mintpy" / "inputs" / "ifgramStack.h5") as got,
        h5py.File(full / "mintpy" / "inputs" / "ifgramStack.h5") as want,
    ):
        np.testing.assert_array_equal(got["unwrapPhase"][()], want["unwrapPhase"][()])
    got_ds = xr.open_zarr(work / "products" / "timeseries.zarr")
    want_ds = xr.open_zarr(full / "products" / "timeseries.zarr")
    np.testing.assert_array_equal(got_ds["time"].values, want_ds["time"].values)
    for var in ("velocity", "timeseries"):
        np.testing.assert_allclose(got_ds[var].values, want_ds[var].values, atol=1e-6)
