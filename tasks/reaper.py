"""Ending the process trees of external commands, also when the flow process dies.

Every command of :func:`insarflow.tasks.shell.run_command` leads a session (and process group)
of its own, so a signal aimed at the flow's group does not reach it implicitly: ending it is always
explicit, through :func:`end_trees` (SIGTERM to the group and to every descendant found
under the command, since a descendant may have made a group of its own; ``TERM_GRACE_S``;
then SIGKILL).

A flow process killed outright (SIGKILL, the OOM killer) runs no handler, so one *reaper*
process per flow process (this file run as a script, in a session of its own) ends what
is left: the flow tells it the pid of each command as it starts and ends, over a pipe whose
write end only the flow holds. When the flow process is gone the kernel closes that end; the
reaper reads EOF and ends every tree still registered. EOF rather than
``prctl(PR_SET_PDEATHSIG)``: the death signal fires when the *thread* that forked exits
(Prefect and Dask run tasks in worker threads) and reaches only the direct child, whereas
EOF comes when the whole process is gone. Cost per command: two short pipe writes; the
reaper's interpreter starts once per flow process.

Ctrl-C reaches the terminal's foreground group only, so no longer the commands: importing
this module in the main thread replaces Python's default SIGINT handler with one that ends
every running command's tree and then raises ``KeyboardInterrupt`` as before.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Collection
from contextlib import suppress
from pathlib import Path
from types import FrameType

import psutil

#: Seconds between SIGTERM and SIGKILL when a command's tree is ended.
TERM_GRACE_S = 5.0


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie; never reaps (the caller may still want the exit status)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_alive(pgid: int) -> bool:
    """Whether the process group ``pgid`` still has a member."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_groups(pgids: Collection[int], sig: signal.Signals) -> None:
    for pgid in pgids:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def end_trees(pids: Collection[int], grace_s: float | None = None) -> None:
    """End each command ``pid`` (a process group leader) with its group and descendants.

    SIGTERM first, up to ``grace_s`` (default ``TERM_GRACE_S``) for everything found to
    exit, then SIGKILL. Nothing is reaped here: a caller that is the parent still gets the
    exit status.
    """
    grace = TERM_GRACE_S if grace_s is None else grace_s
    procs: list[psutil.Process] = []
    for pid in pids:
        with suppress(psutil.Error):
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]  # before they are reparented
    _signal_groups(pids, signal.SIGTERM)
    for proc in procs:
        with suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)  # psutil refuses a pid reused meanwhile
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    for proc in reversed(procs):  # deepest first: the command, which holds the lock, last
        if _alive(proc):
            with suppress(psutil.Error):
                proc.kill()
    _signal_groups(pids, signal.SIGKILL)


class Reaper:
    """The flow process's side of the reaper: started on first use, told of every command."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None
        self._watched: set[int] = set()

    def watch(self, pid: int) -> None:
        with self._guard:
            self._watched.add(pid)
            self._send(f"+{pid}\n")

    def unwatch(self, pid: int) -> None:
        with self._guard:
            self._watched.discard(pid)
            self._send(f"-{pid}\n")

    def end_all(self) -> None:
        """End the tree of every command this process is running."""
        with self._guard:
            pids = list(self._watched)
        end_trees(pids)

    def forget(self) -> None:
        """In a forked child: the pipe belongs to the parent; this process starts its own."""
        if self._fd is not None:
            os.close(self._fd)
        self._guard = threading.Lock()
        self._fd, self._pid, self._watched = None, None, set()

    def _send(self, message: str) -> None:
        if self._fd is None:
            self._start()
        assert self._fd is not None
        try:
            os.write(self._fd, message.encode())
        except BrokenPipeError:  # the reaper was killed: start another, tell it everything
            os.close(self._fd)
            if self._pid is not None:
                with suppress(ChildProcessError):
                    os.waitpid(self._pid, os.WNOHANG)
            self._start()

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()  # both close-on-exec: no command inherits the write end
        try:
            self._pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-P", str(Path(__file__).resolve())],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read_fd, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                ],
                setsid=True,  # a kill of the flow's group must not take the reaper with it
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._fd = write_fd
        if self._watched:
            os.write(write_fd, "".join(f"+{pid}\n" for pid in self._watched).encode())


REAPER = Reaper()
os.register_at_fork(after_in_child=REAPER.forget)


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C: the commands, in sessions of their own, no longer get it from the terminal."""
    threading.Thread(target=REAPER.end_all, name="insarflow-interrupt", daemon=True).start()
    signal.default_int_handler(signum, frame)


# Handlers live in the main thread; a handler the program installed itself is left alone.
if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
):
    signal.signal(signal.SIGINT, _on_interrupt)


def _serve() -> None:
    """The reaper process: track the watched commands until EOF, then end their trees."""
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # keep nothing the flow left inheritable
    watched: dict[int, psutil.Process] = {}
    for raw in sys.stdin.buffer:
        line = raw.strip()
        pid = int(line[1:] or 0)
        if line.startswith(b"+"):
            with suppress(psutil.Error):  # identity taken now: a pid reused later is spared
                watched[pid] = psutil.Process(pid)
        elif line.startswith(b"-"):
            watched.pop(pid, None)
    # EOF: the flow process is gone (or done).
    left = [pid for pid, proc in watched.items() if proc.is_running() or group_alive(pid)]
    if left:
        end_trees(left)


if __name__ == "__main__":
    _serve()
