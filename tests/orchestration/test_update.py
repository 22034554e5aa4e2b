"""``sbas-update``: which dates are new, and a stack with nothing new runs no stage."""

from __future__ import annotations

from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.states import State

from flows.stages import AcquireResult, acquire_stage, acquisition_record
from flows.update import new_dates, sbas_update

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
