"""Stand-in for the topsStack scripts in executor tests (ISCE2 cannot be installed here).

Installed under the real script names (``SentinelWrapper.py``, ``subsetReference.py`` ...)
in a bin directory put on PATH. It finds what to do for its command line in the JSON plan
named by ``$INSARFLOW_TEST_PLAN``: which line it is, how long to sleep, which outputs to
write, and whether to fail. Each attempt appends one JSON record (line id, start, end,
memory reservation from ``$INSARFLOW_LINE_MEMORY_MB``, outcome) to the plan's record file.

A line with ``allocate_mb`` holds that many MB of written memory while it sleeps (a peak RSS
to measure). A line with a ``heartbeat`` file appends its pid to it every 20 ms while it
sleeps (so a test can tell whether it still runs). Failure modes, per line: ``fail_once`` (fail only
while its state file is absent, then create it) or ``fail_if_exists`` (fail while that flag
file exists), with ``fail_rc`` and ``fail_message``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def command_key(argv: list[str]) -> str:
    """How a plan names a command: the script's base name, then its arguments."""
    return " ".join([Path(argv[0]).name, *argv[1:]])


def _append(record_file: Path, record: dict[str, Any]) -> None:
    with record_file.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _touch(path: Path, line_id: str) -> None:
    if path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{line_id.replace(':', '__')}.done").write_text(line_id + "\n")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A baseline file as average_baseline writes it (the executor checks its Bperp).
        bperp = (
            "swath: IW1\nBperp (average): 42.0\n" if path.parent.parent.name == "baselines" else ""
        )
        path.write_text(bperp + line_id + "\n")


def _beat(path: Path, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.02)


def _should_fail(spec: dict[str, Any]) -> bool:
    if spec.get("fail_if_exists"):
        return Path(spec["fail_if_exists"]).exists()
    if spec.get("fail_once"):
        state = Path(spec["fail_once"])
        if state.exists():
            return False
        state.touch()
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    plan = json.loads(Path(os.environ["INSARFLOW_TEST_PLAN"]).read_text())
    key = command_key(argv)
    spec = plan["lines"].get(key)
    if spec is None:
        print(f"instrumented_line: no plan for {key!r}", flush=True)
        return 2
    start = time.time()
    print(f"running {spec['line_id']}", flush=True)
    ballast = b"\x01" * (int(spec.get("allocate_mb", 0)) * 2**20)  # pages written: resident
    if spec.get("heartbeat"):
        _beat(Path(spec["heartbeat"]), spec.get("sleep", 0.05))
    else:
        time.sleep(spec.get("sleep", 0.05))
    del ballast
    failing = _should_fail(spec)
    if not failing:
        for output in spec["outputs"]:
            _touch(Path(output), spec["line_id"])
    _append(
        Path(plan["record_file"]),
        {
            "line_id": spec["line_id"],
            "start": start,
            "end": time.time(),
            "memory_mb": int(os.environ.get("INSARFLOW_LINE_MEMORY_MB", "0")),
            "outcome": "failed" if failing else "ok",
        },
    )
    if failing:
        print(spec.get("fail_message", "failing on purpose"), flush=True)
        return int(spec.get("fail_rc", 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
