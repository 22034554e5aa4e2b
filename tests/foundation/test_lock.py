"""Two runs of one stack at once are refused; a dead holder leaves no stale lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasks.lock import StackLockedError, stack_lock

HOLD = """
import sys, time
from pathlib import Path
from tasks.lock import stack_lock
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
