"""``sbas-update``: which dates are new, and a stack with nothing new runs no stage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter,
    ArtifactCollectionFilterKey,
    FlowFilter,
    FlowFilterName,
)
from prefect.states import State

from insarflow.flows.sbas import sbas
from insarflow.flows.stages import AcquireResult, acquire_stage, acquisition_record
from insarflow.flows.update import new_dates, sbas_update

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
