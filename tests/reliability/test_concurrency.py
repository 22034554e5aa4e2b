"""Two runs of one stack at once: the second is refused at once, the first is not disturbed.

The second run is started while the reference run holds ``<work>/.insarflow.lock``
(see ``reference_run`` in conftest), on a Prefect API of its own: runs sharing an API
queue on the stack's concurrency slot instead (tests/orchestration/test_stack_concurrency.py),
and the lock file is the guard behind it. A killed run's lock is released by the kernel:
every rerun in ``test_kill_resume`` takes the lock of the run it replaces.
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import ReferenceRun
from tests.reliability.helpers import FIGURES, command_headers

pytestmark = pytest.mark.e2e


def test_second_run_is_refused_naming_the_holder(reference_run: ReferenceRun) -> None:
    out = reference_run.second_output
    assert reference_run.second_returncode == 3, out
    assert "REFUSED StackLockedError" in out, out
    assert f'"pid": {reference_run.pid}' in out, "the refusal does not name the holder"
    assert "is being processed by another run" in out and "wait for it to finish" in out
    # refused while the first run was still working: it did not wait for the lock
    assert reference_run.first_running_when_second_ended
    # and it started no stage
    assert "Beginning subflow run" not in out
    FIGURES["concurrent runs refused"] += 1


def test_first_run_completes_and_no_line_ran_twice(reference_run: ReferenceRun) -> None:
    assert reference_run.returncode == 0
    logs = reference_run.config.paths.logs
    line_logs = [p for p in logs.glob("*/*.log") if p.parent.name != "mintpy"]
    assert len(line_logs) == reference_run.n_lines
    assert {p.name: command_headers(p) for p in line_logs if command_headers(p) != 1} == {}
