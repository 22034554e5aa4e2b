"""Progress lines of a long stage and the Prefect progress artifact that mirrors them."""

from __future__ import annotations

import logging

import pytest
from prefect import flow

from insarflow.tasks.progress import StageProgress, format_duration


def test_format_duration() -> None:
    assert format_duration(None) == "?"
    assert format_duration(0) == "0:00"
    assert format_duration(92.4) == "1:32"
    assert format_duration(3 * 3600 + 62) == "3:01:02"


def test_a_line_per_finished_group_and_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="insarflow.progress")
    progress = StageProgress("topsstack", {"run_01_a": 1, "run_02_b": 3}, interval_s=3600)
    progress.advance("run_02_b")
    assert caplog.messages == []  # neither a group nor the stage is complete
    progress.advance("run_01_a")
    progress.advance("run_02_b")
    progress.advance("run_02_b")
    first, last = caplog.messages
    assert first.startswith("topsstack: 2 of 4 lines done (run_01_a 1/1), elapsed 0:00, ETA ")
    assert last.startswith("topsstack: 4 of 4 lines done (run_02_b 3/3), elapsed 0:00, ETA 0:00")


def test_skipped_lines_are_counted_not_announced(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="insarflow.progress")
    progress = StageProgress("topsstack", {"run_01_a": 2, "run_02_b": 1}, interval_s=3600)
    progress.advance("run_01_a", skipped=True)
    progress.advance("run_01_a", skipped=True)
    assert caplog.messages == []
    assert progress.eta_s() is None  # nothing ran yet: no rate to extrapolate from
    progress.advance("run_02_b")
    [line] = caplog.messages
    assert line.startswith("topsstack: 3 of 3 lines done (run_02_b 1/1), 2 skipped, elapsed ")


def test_the_artifact_follows_the_lines(prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    @flow
    def keyed() -> None:
        progress = StageProgress(
            "mintpy",
            {"load_data": 1, "invert_network": 1},
            unit="steps",
            artifact_key="mintpy-progress-test",
        )
        progress.advance("load_data")
        progress.advance("invert_network")

    keyed()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mintpy-progress-test"]))
        )
    assert [a.data for a in artifacts] == [100.0]
    assert artifacts[0].description is not None
    assert artifacts[0].description.startswith("mintpy: 2 of 2 steps done (invert_network 1/1)")
