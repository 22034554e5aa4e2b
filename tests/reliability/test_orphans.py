"""SIGKILL the flow process alone (not its group) in the middle of a long topsStack line.

The kill/resume tests kill the whole process group, which takes every command down with
the flow. Here only the flow process dies, as when the OOM killer picks it: the commands it
started run in sessions of their own, so nothing but insarflow's reaper can end them. The
stack is the executor scenario's (real run files, the instrumented stand-in for the ISCE2
scripts) under the real Prefect engine and Dask, run by a flow process that holds the stack
lock as ``insarflow run`` does. After the kill:

- no process of the stack is left (none has its cwd in the stack directory, the long line's
  pid is gone, its heartbeat file stops growing);
- a rerun neither repeats a line that was done at the kill (its marker is unchanged and it
  left no record) nor loses one: every other line runs exactly once and the stack is done.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path

import psutil

from insarflow.tasks.topsstack.executor import is_line_done, marker_path
from tests.reliability.helpers import FlowProcess, start_process, wait_until
from tests.topsstack.test_executor import (
    AZIMUTH_LOOKS,
    BUDGET_MB,
    N_BURSTS,
    N_WORKERS,
    RANGE_LOOKS,
    THREADS,
    Stack,
    make_stack,
)

LONG = "10_fullBurst_resample:20250512"

# A flow process as `insarflow run` has it: the stack lock held around the topsStack flow.
FLOW = """
import json, sys
from pathlib import Path
from insarflow.flows.topsstack import topsstack_flow
from insarflow.tasks.lock import stack_lock
a = json.loads(sys.argv[1])
with stack_lock(Path(a["root"])):
    topsstack_flow(
        stack_dir=Path(a["stack_dir"]), log_dir=Path(a["log_dir"]),
        memory_budget_mb=a["budget_mb"], n_bursts=a["n_bursts"],
        range_looks=a["range_looks"], azimuth_looks=a["azimuth_looks"],
        n_workers=a["n_workers"], threads_per_worker=a["threads"],
        extra_path=[Path(a["bin_dir"])], env=a["env"],
    )
"""


def start_stack_flow(stack: Stack, env: dict[str, str], log: Path) -> FlowProcess:
    args = {
        "root": str(stack.root),
        "stack_dir": str(stack.stack_dir),
        "log_dir": str(stack.log_dir),
        "bin_dir": str(stack.bin_dir),
        "budget_mb": BUDGET_MB,
        "n_bursts": N_BURSTS,
        "range_looks": RANGE_LOOKS,
        "azimuth_looks": AZIMUTH_LOOKS,
        "n_workers": N_WORKERS,
        "threads": THREADS,
        "env": {"INSARFLOW_TEST_PLAN": str(stack.plan_file), "OMP_NUM_THREADS": "1"},
    }
    return start_process([sys.executable, "-c", FLOW, json.dumps(args)], env, log, stack.root)


def stack_processes(stack_dir: Path) -> list[psutil.Process]:
    """Running processes whose working directory is the stack (every line runs there)."""
    found, wanted = [], str(stack_dir.resolve())  # the kernel reports the resolved path
    for proc in psutil.process_iter(["cwd", "status"]):
        if proc.info["cwd"] == wanted and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def done_markers(stack: Stack) -> dict[str, str]:
    return {
        line.line_id: marker_path(line, stack.stack_dir).read_text()
        for line in stack.lines
        if is_line_done(line, stack.stack_dir)
    }


def test_flow_process_killed_alone_leaves_no_line_running_and_rerun_resumes(
    tmp_path: Path, fixtures_dir: Path, flow_env: dict[str, str]
) -> None:
    stack = make_stack(tmp_path / "stack", fixtures_dir)
    try:
        beat = tmp_path / "long-line.beat"
        stack.write_plan(sleeps={LONG: 600.0}, heartbeats={LONG: beat})
        flow = start_stack_flow(stack, flow_env, tmp_path / "killed.log")
        wait_until(lambda: beat.is_file() and beat.stat().st_size > 0, flow, f"{LONG} running")
        long_pid = int(beat.read_text().split()[0])
        assert long_pid in {p.pid for p in stack_processes(stack.stack_dir)}

        os.kill(flow.pid, signal.SIGKILL)  # the flow process alone, not its group
        flow.proc.wait()

        deadline = time.monotonic() + 30  # the reaper's SIGTERM, at worst its SIGKILL
        while stack_processes(stack.stack_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stack_processes(stack.stack_dir) == []
        n_beats = len(beat.read_text().split())
        time.sleep(0.3)
        assert len(beat.read_text().split()) == n_beats, "the killed line still writes"
        done = done_markers(stack)
        assert LONG not in done
        assert 0 < len(done) < len(stack.lines), len(done)

        stack.record_file.unlink(missing_ok=True)
        stack.write_plan(heartbeats={LONG: beat})
        rerun = start_stack_flow(stack, flow_env, tmp_path / "rerun.log")
        assert rerun.wait() == 0, rerun.tail()

        ran = Counter(r["line_id"] for r in stack.records())
        repeated = sorted(line_id for line_id, n in ran.items() if n > 1)
        assert repeated == [], f"lines ran more than once in the rerun: {repeated}"
        assert sorted(ran) == sorted(ln.line_id for ln in stack.lines if ln.line_id not in done)
        assert all(is_line_done(line, stack.stack_dir) for line in stack.lines)
        now = done_markers(stack)
        assert {k: now[k] for k in done} == done, "markers of lines done at the kill changed"
        beats = [int(pid) for pid in beat.read_text().split()]
        assert len(beats) > n_beats and long_pid not in beats[n_beats:]
    finally:  # a broken reaper must not leave the 600 s line behind
        for proc in stack_processes(stack.stack_dir):
            with suppress(psutil.Error):
                proc.kill()
