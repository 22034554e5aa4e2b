"""A flow runs on the real Prefect engine with no server configured."""

from __future__ import annotations

from prefect import flow, task
from prefect.states import Completed


@task
def double(x: int) -> int:
    return 2 * x


@flow
def tiny(n: int) -> int:
    futures = double.map(list(range(n)))
    return sum(f.result() for f in futures)


def test_tiny_flow_runs_under_the_harness(prefect_harness: None) -> None:
    state = tiny(4, return_state=True)
    assert isinstance(state, type(Completed()))
    assert state.is_completed()
    assert state.result() == 12
