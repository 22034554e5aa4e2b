"""The one helper that runs every external tool.

List arguments only (never a shell), stdout and stderr merged and streamed line by
line into a per-step log file and the Prefect run logger, secrets redacted, and a
typed result (return code, duration, peak RSS, log tail) or a typed error.

Each command runs in a session of its own and never outlives its call: on timeout, on an
exception in the calling thread and, through the reaper, on the death of this process,
its whole tree is ended (:mod:`insarflow.tasks.reaper`). It inherits the stack locks this process
holds (:func:`insarflow.tasks.lock.inherited_locks`), so a stack stays locked while it runs.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from insarflow.tasks.lock import inherited_locks
from insarflow.tasks.reaper import REAPER, end_trees, group_alive

TAIL_LINES = 40
logger = logging.getLogger(__name__)
_REDACTED = "********"


@dataclass(frozen=True)
class CommandResult:
    """What one external command did."""

    args: list[str]
    returncode: int
    duration_s: float
    peak_rss_mb: float
    log_path: Path
    log_tail: str = field(repr=False)


class CommandError(RuntimeError):
    """A command exited non-zero; the message names it, its rc, its log and the log tail."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        super().__init__(
            f"command {result.args[0]!r} failed with return code {result.returncode} "
            f"after {result.duration_s:.1f} s; full log: {result.log_path}\n"
            f"--- last lines ---\n{result.log_tail}"
        )


def redact(text: str, secrets: Sequence[str]) -> str:
    """Replace every non-empty secret in ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


class _TreeRssSampler:
    """One daemon thread that samples the summed RSS of every running command's tree.

    Shared by all commands of the process: a thread (and a full ``/proc`` scan) per
    running line cost the flow process more CPU than the lines' bookkeeping itself.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self._interval_s = interval_s
        self._peaks_mb: dict[int, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def register(self, pid: int) -> None:
        with self._lock:
            self._peaks_mb[pid] = 0.0
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="insarflow-rss-sampler", daemon=True
                )
                self._thread.start()

    def unregister(self, pid: int) -> float:
        with self._lock:
            return self._peaks_mb.pop(pid, 0.0)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval_s)
            with self._lock:
                roots = list(self._peaks_mb)
            if roots:
                self._sample(roots)

    def _sample(self, roots: list[int]) -> None:
        procs: dict[int, psutil.Process] = {}
        children: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["ppid"]):
            procs[proc.pid] = proc
            children.setdefault(proc.info["ppid"], []).append(proc.pid)
        for root in roots:
            rss, todo = 0, [root]
            while todo:
                pid = todo.pop()
                try:
                    rss += procs[pid].memory_info().rss
                except (KeyError, psutil.Error):
                    continue
                todo.extend(children.get(pid, ()))
            with self._lock:
                if root in self._peaks_mb:
                    self._peaks_mb[root] = max(self._peaks_mb[root], rss / 2**20)


_SAMPLER = _TreeRssSampler()


def _maxrss_mb(usage: resource.struct_rusage) -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return (usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024) / 2**20


def _wait_with_peak_rss(proc: subprocess.Popen[str], sampled_mb: float) -> tuple[int, float]:
    """Reap ``proc``; return its exit code and peak RSS in MB.

    The kernel's high-water mark from ``wait4`` is exact but starts from this process's own
    at the spawn (exec carries it over), so it counts only when it is above ours; below
    that, the sampled tree figure stands (short lines may show 0).
    """
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # already reaped (SIGCHLD ignored): no kernel figure
        return proc.wait(), sampled_mb
    proc.returncode = os.waitstatus_to_exitcode(status)
    child_mb = _maxrss_mb(usage)
    ours_mb = _maxrss_mb(resource.getrusage(resource.RUSAGE_SELF))
    return proc.returncode, max(sampled_mb, child_mb if child_mb > ours_mb else 0.0)


def run_command(
    args: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    extra_path: Sequence[Path] = (),
    secrets: Sequence[str] = (),
    check: bool = True,
    timeout_s: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> CommandResult:
    """Run ``args``, streaming output into ``log_path`` (appended) and the run log."""
    argv = [os.fspath(a) for a in args]
    if not argv:
        raise ValueError("run_command needs at least the program name")
    full_env = dict(os.environ if env is None else env)
    if extra_path:
        prefix = os.pathsep.join(str(p) for p in extra_path)
        full_env["PATH"] = prefix + os.pathsep + full_env.get("PATH", "")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    start = time.monotonic()
    shown = redact(" ".join(argv), secrets)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"### {datetime.now(UTC).isoformat(timespec='seconds')} $ {shown}\n")
        log.write(f"### cwd: {cwd or Path.cwd()}\n")
        if extra_path:
            log.write(f"### PATH prepended: {os.pathsep.join(map(str, extra_path))}\n")
        log.flush()
        logger.info("running %s", shown)
        try:
            with inherited_locks() as lock_fds:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=full_env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                    errors="replace",
                    bufsize=1,
                    start_new_session=True,
                    pass_fds=lock_fds,
                )
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"program {argv[0]!r} not found on PATH (cwd {cwd or Path.cwd()})"
            ) from exc
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            end_trees([proc.pid])

        timer = None if timeout_s is None else threading.Timer(timeout_s, expire)
        try:
            REAPER.watch(proc.pid)
            _SAMPLER.register(proc.pid)
            if timer is not None:
                timer.daemon = True
                timer.start()
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = redact(raw.rstrip("\n"), secrets)
                log.write(line + "\n")
                log.flush()
                tail.append(line)
                logger.debug("%s", line)
                if on_line is not None:
                    on_line(line)
            returncode, peak_rss_mb = _wait_with_peak_rss(proc, _SAMPLER.unregister(proc.pid))
        finally:
            if timer is not None:
                timer.cancel()
            _SAMPLER.unregister(proc.pid)
            if proc.returncode is None:  # this thread was interrupted: end the tree, reap
                end_trees([proc.pid])
                proc.wait()
            elif group_alive(proc.pid):  # the command left processes behind
                end_trees([proc.pid])
            REAPER.unwatch(proc.pid)
            if proc.stdout is not None:
                proc.stdout.close()
        if timed_out.is_set():
            log.write(f"### timed out after {timeout_s} s: its process tree was ended\n")
        duration = time.monotonic() - start
        log.write(f"### rc={returncode} duration={duration:.2f}s peak_rss={peak_rss_mb:.1f}MB\n")
    result = CommandResult(
        args=[redact(a, secrets) for a in argv],
        returncode=returncode,
        duration_s=duration,
        peak_rss_mb=peak_rss_mb,
        log_path=log_path,
        log_tail="\n".join(tail),
    )
    if check and returncode != 0:
        raise CommandError(result)
    return result
