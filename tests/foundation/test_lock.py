"""Two runs of one stack at once are refused; a dead holder leaves no stale lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from insarflow.tasks.lock import StackLockedError, stack_lock

HOLD = """
import sys, time
from pathlib import Path
from insarflow.tasks.lock import stack_lock
with stack_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_run_is_refused_and_released_when_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StackLockedError, match=f'"pid": {holder.pid}'), stack_lock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
    # SIGKILLed holder: the kernel dropped the lock, a new run proceeds.
    with stack_lock(tmp_path) as lock:
        assert lock.exists()


HOLD_SLOT = """
import sys, time
from pathlib import Path
from insarflow.tasks.lock import stack_lock, stack_slot
with stack_slot("stale", Path(sys.argv[1])), stack_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_runs_slot_does_not_hold_up_the_rerun(
    tmp_path: Path, prefect_harness: None
) -> None:
    """A run killed outright keeps its concurrency slot until the lease expires; the rerun
    finds no live run holding the lock file and goes on at once."""
    import os
    import signal
    import time

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from insarflow.tasks.lock import stack_in_progress, stack_limit_name, stack_slot

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SLOT, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    assert stack_in_progress(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(stack_limit_name("stale"))
    assert limit.active_slots == 1  # the dead run's lease
    assert not stack_in_progress(tmp_path)
    started = time.monotonic()
    with stack_slot("stale", tmp_path, poll_s=0.2), stack_lock(tmp_path):
        waited = time.monotonic() - started
    assert waited < 60, "the rerun waited for the dead run's lease"
