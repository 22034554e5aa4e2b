"""The one subprocess helper."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from insarflow.tasks import reaper
from insarflow.tasks.lock import stack_lock
from insarflow.tasks.shell import CommandError, run_command

# A command that ignores SIGTERM and starts a child in a session of its own (also deaf to
# SIGTERM); both append their pid to the heartbeat file every 20 ms until killed (or, should
# a broken helper leave them behind, for two minutes).
TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
beat, depth = sys.argv[1], int(sys.argv[2])
if depth:
    child = subprocess.Popen([sys.executable, __file__, beat, str(depth - 1)],
                             start_new_session=True)
    print("tree", os.getpid(), child.pid, flush=True)
end = time.monotonic() + 120
while time.monotonic() < end:
    with open(beat, "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(0.02)
"""

# A flow process: holds the stack lock, runs the tree in a worker thread, prints its pids.
FLOW = """
import sys, threading
from pathlib import Path
from insarflow.tasks.lock import stack_lock
from insarflow.tasks.shell import run_command
work, tree, beat = map(Path, sys.argv[1:4])
with stack_lock(work):
    args = [sys.executable, str(tree), str(beat), "1"]
    worker = threading.Thread(target=run_command, args=(args,),
                              kwargs={"log_path": work / "tree.log", "on_line": print})
    worker.start()
    worker.join()
"""

# Ctrl-C in a flow process: SIGINT to its group. The main thread outlives the interrupt,
# so only the SIGINT handler (not the reaper, on exit) can end the command's tree.
INTERRUPTED = """
import signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as an interactive start has it
from pathlib import Path
from insarflow.tasks.shell import run_command
work_dir, tree, beat = map(Path, sys.argv[1:4])
returned = threading.Event()


def work():
    args = [sys.executable, str(tree), str(beat), "1"]
    run_command(args, log_path=work_dir / "tree.log", on_line=print, check=False)
    returned.set()


worker = threading.Thread(target=work, daemon=True)
worker.start()
try:
    worker.join()
except KeyboardInterrupt:
    print("interrupted, command returned:", returned.wait(30), flush=True)
    time.sleep(60)
"""


def test_streams_output_into_log_and_returns_result(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "step" / "key.log"
    seen: list[str] = []
    result = run_command(
        [sys.executable, "-c", "import sys; print('hello'); print('err', file=sys.stderr)"],
        log_path=log,
        cwd=tmp_path,
        on_line=seen.append,
    )
    assert result.returncode == 0
    assert sorted(seen) == ["err", "hello"]
    text = log.read_text()
    assert "hello" in text and "err" in text
    assert "rc=0" in text
    assert result.peak_rss_mb >= 0


def test_failure_raises_with_tail_and_log_path(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    with pytest.raises(CommandError) as info:
        run_command(
            [sys.executable, "-c", "print('Out of memory'); raise SystemExit(3)"], log_path=log
        )
    assert info.value.result.returncode == 3
    assert "Out of memory" in str(info.value)
    assert str(log) in str(info.value)


def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55"
    log = tmp_path / "x.log"
    with pytest.raises(CommandError) as info:
        run_command(
            [sys.executable, "-c", f"print('token={secret}'); raise SystemExit(1)", secret],
            log_path=log,
            secrets=[secret],
        )
    assert secret not in log.read_text()
    assert secret not in str(info.value)
    assert secret not in " ".join(info.value.result.args)


def test_extra_path_is_prepended(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool.py"
    tool.write_text(f"#!{sys.executable}\nprint('from the shim')\n")
    tool.chmod(0o755)
    result = run_command(["mytool.py"], log_path=tmp_path / "t.log", extra_path=[bindir])
    assert "from the shim" in result.log_tail


def test_missing_program_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        run_command(["no-such-program"], log_path=tmp_path / "t.log")


def test_timeout_kills(tmp_path: Path) -> None:
    result = run_command(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        log_path=tmp_path / "t.log",
        timeout_s=0.5,
        check=False,
    )
    assert result.returncode != 0
    assert result.duration_s < 30


def test_peak_rss_is_measured_for_the_command_not_this_process(tmp_path: Path) -> None:
    # 300 MB touched and held for a while (the sampler sees it; above this process's own
    # high-water mark the kernel's figure counts too); a bare interpreter reports far less,
    # not this test process's RSS, which exec carries over into the child's rusage.
    code = (
        "import time\nb = bytearray(300 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\n"
        "time.sleep(1.5)\nprint('done')"
    )
    result = run_command([sys.executable, "-c", code], log_path=tmp_path / "x.log")
    small = run_command([sys.executable, "-c", "print('done')"], log_path=tmp_path / "y.log")
    assert result.peak_rss_mb > 290, result.peak_rss_mb
    assert small.peak_rss_mb < 100, small.peak_rss_mb
    assert f"peak_rss={result.peak_rss_mb:.1f}MB" in (tmp_path / "x.log").read_text()


@pytest.fixture
def tree_script(tmp_path: Path) -> Path:
    path = tmp_path / "tree.py"
    path.write_text(TREE)
    return path


def _tree_pids(line: str) -> list[int]:
    word, *pids = line.split()
    assert word == "tree", line
    return [int(p) for p in pids]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], within_s: float = 15.0) -> list[int]:
    """The pids still running after up to ``within_s`` (the kernel ends a killed process
    asynchronously, and its reaping by init takes a moment)."""
    deadline = time.monotonic() + within_s
    while (alive := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _beat_grows(beat: Path) -> bool:
    before = beat.stat().st_size
    time.sleep(0.3)
    return beat.stat().st_size > before


def test_command_runs_in_a_session_of_its_own(tmp_path: Path) -> None:
    code = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"
    result = run_command([sys.executable, "-c", code], log_path=tmp_path / "s.log")
    pid, pgid, sid = map(int, result.log_tail.split())
    assert pgid == pid and sid == pid
    assert sid != os.getsid(0)


def test_timeout_ends_the_whole_tree(
    tmp_path: Path, tree_script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reaper, "TERM_GRACE_S", 0.5)
    beat = tmp_path / "beat"
    result = run_command(
        [sys.executable, str(tree_script), str(beat), "1"],
        log_path=tmp_path / "t.log",
        timeout_s=3,
        check=False,
    )
    # Both ignored SIGTERM: SIGKILL after the grace period, the child in its own session too.
    assert result.returncode == -signal.SIGKILL
    pids = _tree_pids(result.log_tail.splitlines()[0])
    assert _wait_gone(pids) == []
    assert "### timed out after 3 s" in (tmp_path / "t.log").read_text()


def test_exception_in_the_calling_thread_ends_the_whole_tree(
    tmp_path: Path, tree_script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reaper, "TERM_GRACE_S", 0.5)
    seen: list[str] = []

    def interrupt(line: str) -> None:
        seen.append(line)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_command(
            [sys.executable, str(tree_script), str(tmp_path / "beat"), "1"],
            log_path=tmp_path / "t.log",
            on_line=interrupt,
        )
    pids = _tree_pids(seen[0])
    assert _wait_gone(pids) == []


def test_killed_flow_process_leaves_no_command_and_keeps_the_lock_until_then(
    tmp_path: Path, tree_script: Path
) -> None:
    work, beat = tmp_path / "work", tmp_path / "beat"
    flow = subprocess.Popen(
        [sys.executable, "-c", FLOW, str(work), str(tree_script), str(beat)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert flow.stdout is not None
        pids = _tree_pids(flow.stdout.readline())
        while not beat.is_file():
            time.sleep(0.02)
        os.kill(flow.pid, signal.SIGKILL)  # the flow process alone, not its group
        flow.wait()
        # Its commands ignore SIGTERM: for TERM_GRACE_S they run on, and hold the lock.
        with (work / ".insarflow.lock").open() as probe, pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert all(_running(p) for p in pids)
        # A new run waits for them to be ended instead of running beside them.
        with stack_lock(work):
            assert not _running(pids[0])
            assert _wait_gone(pids, within_s=2) == []
        assert not _beat_grows(beat)
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()
        if flow.stdout is not None:
            flow.stdout.close()


def test_ctrl_c_ends_the_commands_of_the_flow_process(tmp_path: Path, tree_script: Path) -> None:
    beat = tmp_path / "beat"
    flow = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(tmp_path), str(tree_script), str(beat)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert flow.stdout is not None
        pids = _tree_pids(flow.stdout.readline())
        while not beat.is_file():
            time.sleep(0.02)
        os.killpg(flow.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert flow.stdout.readline().strip() == "interrupted, command returned: True"
        assert flow.poll() is None
        assert _wait_gone(pids) == []
    finally:
        flow.kill()
        flow.wait()
        if flow.stdout is not None:
            flow.stdout.close()
