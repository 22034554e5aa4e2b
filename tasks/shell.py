"""The one helper that runs every external tool.

List arguments only (never a shell), stdout and stderr merged and streamed line by
line into a per-step log file and the Prefect run logger, secrets redacted, and a
typed result (return code, duration, peak RSS, log tail) or a typed error.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

TAIL_LINES = 40
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


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a flow/task run, else a module logger."""
    try:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        try:
            return get_run_logger()
        except MissingContextError:
            pass
    except ImportError:  # pragma: no cover - prefect is a hard dependency
        pass
    return logging.getLogger("insarflow.shell")


def redact(text: str, secrets: Sequence[str]) -> str:
    """Replace every non-empty secret in ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def _watch_rss(pid: int, stop: threading.Event, peak: list[float]) -> None:
    """Sample the summed RSS of a process tree until ``stop`` is set."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
            rss = 0
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            peak[0] = max(peak[0], rss / 2**20)
        except psutil.Error:
            return
        stop.wait(0.2)


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
    """Run ``args``, streaming output into ``log_path`` (appended) and the run logger."""
    argv = [os.fspath(a) for a in args]
    if not argv:
        raise ValueError("run_command needs at least the program name")
    full_env = dict(os.environ if env is None else env)
    if extra_path:
        prefix = os.pathsep.join(str(p) for p in extra_path)
        full_env["PATH"] = prefix + os.pathsep + full_env.get("PATH", "")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger = _run_logger()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    peak = [0.0]
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
            )
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"program {argv[0]!r} not found on PATH (cwd {cwd or Path.cwd()})"
            ) from exc
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_rss, args=(proc.pid, stop, peak), daemon=True)
        watcher.start()
        timer = None
        if timeout_s is not None:
            timer = threading.Timer(timeout_s, proc.kill)
            timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = redact(raw.rstrip("\n"), secrets)
                log.write(line + "\n")
                log.flush()
                tail.append(line)
                logger.debug("%s", line)
                if on_line is not None:
                    on_line(line)
            returncode = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            stop.set()
            watcher.join(timeout=1)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        duration = time.monotonic() - start
        log.write(f"### rc={returncode} duration={duration:.2f}s peak_rss={peak[0]:.1f}MB\n")
    result = CommandResult(
        args=[redact(a, secrets) for a in argv],
        returncode=returncode,
        duration_s=duration,
        peak_rss_mb=peak[0],
        log_path=log_path,
        log_tail="\n".join(tail),
    )
    if check and returncode != 0:
        raise CommandError(result)
    return result
