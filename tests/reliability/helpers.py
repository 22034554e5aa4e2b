"""Helpers of the reliability tests: tiny stacks, flow subprocesses, kills, digests, figures.

A whole flow runs as ``insarflow run CONFIG`` in its own session (process group), so a
``SIGKILL`` to the group takes down the flow, its Dask threads and every topsStack or
MintPy child at once, as an OOM killer or a pulled plug would. The subprocesses talk to
the test session's Prefect server (``prefect_harness``), so their logs, artifacts and
parameters can be read back through the Prefect client.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import psutil

from insarflow.atomic import TMP_MARK
from insarflow.config import SimulatorConfig, StackConfig, TopsStackConfig, dump_config
from insarflow.flows.demo import demo_config
from insarflow.tasks.topsstack.executor import is_line_done, log_path_for, marker_path
from insarflow.tasks.topsstack.runfiles import RunFileError, parse_run_files

INSARFLOW = Path(sys.executable).with_name("insarflow")
#: Set to 1 for the full sweep (>= 10 kills, more fault schedules, more configs).
FULL_ENV = "INSARFLOW_RELIABILITY_FULL"

#: Figures gathered by the suite, printed in the terminal summary.
FIGURES: Counter[str] = Counter()

_COMMAND_HEADER = re.compile(r"^### \S+ \$ ", re.MULTILINE)
_COMMAND_FOOTER = re.compile(r"^### rc=", re.MULTILINE)


# ----------------------------------------------------------------------------- configs


def tiny_config(work_dir: Path, *, name: str = "reliability") -> StackConfig:
    """The demo stack shrunk to 5 dates of 40 x 50 pixels, one swath, 2 connections."""
    config = demo_config(work_dir, dates=5, seed=3)
    config.name = name
    config.simulator = SimulatorConfig(seed=3, dates=5, length=40, width=50)
    config.topsstack = TopsStackConfig(
        swaths=[1], coregistration="geometry", connections=2, filter_strength=0.6
    )
    config.mintpy.plot = False  # MintPy's own figures take a minute; the demo's test has them
    return config


def write_config(config: StackConfig, path: Path) -> Path:
    """The configuration as YAML at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(config), encoding="utf-8")
    return path


def subprocess_env(api_url: str, prefect_home: Path, **extra: str) -> dict[str, str]:
    """Environment of a flow subprocess: this session's Prefect server, no display."""
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(prefect_home),
        MPLBACKEND="Agg",
        COLUMNS="200",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# ---------------------------------------------------------------------- flow processes


@dataclass
class FlowProcess:
    """One ``insarflow run`` (or ``python -c``) subprocess in its own process group."""

    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-n:])

    def wait(self, timeout_s: float = 900) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"flow did not finish in {timeout_s} s:\n{self.tail()}") from None

    def kill_group(self) -> None:
        """SIGKILL the whole process group (flow, Dask threads, line and MintPy children)."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def start_process(args: list[str], env: Mapping[str, str], log: Path, cwd: Path) -> FlowProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    FIGURES["flow processes started"] += 1
    return FlowProcess(proc, log)


def start_flow(config_path: Path, env: Mapping[str, str], log: Path) -> FlowProcess:
    """``insarflow run CONFIG`` in a new session."""
    return start_process([str(INSARFLOW), "run", str(config_path)], env, log, config_path.parent)


def wait_until(
    condition: Callable[[], bool], flow: FlowProcess, what: str, timeout_s: float = 600
) -> None:
    """Poll ``condition`` every 10 ms; fail if the flow ends (or time runs out) first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if not flow.running():
            raise AssertionError(f"the flow ended before {what}:\n{flow.tail()}")
        if time.monotonic() > deadline:
            flow.kill_group()
            raise AssertionError(f"timed out waiting for {what}:\n{flow.tail()}")
        time.sleep(0.01)


# ------------------------------------------------------------------ what a stack holds


def command_headers(log: Path) -> int:
    """How many commands a line log records (run_command writes one ``### <time> $`` each)."""
    if not log.is_file():
        return 0
    return len(_COMMAND_HEADER.findall(log.read_text(encoding="utf-8", errors="replace")))


def running_line_logs(logs_dir: Path) -> list[Path]:
    """topsStack line logs whose last command has started but not finished."""
    running = []
    for log in logs_dir.glob("*/*.log"):
        if log.parent.name == "mintpy":
            continue
        text = log.read_text(encoding="utf-8", errors="replace")
        starts = [m.start() for m in _COMMAND_HEADER.finditer(text)]
        ends = [m.start() for m in _COMMAND_FOOTER.finditer(text)]
        if starts and (not ends or starts[-1] > ends[-1]):
            running.append(log)
    return running


def marker_count(stack_dir: Path) -> int:
    done = stack_dir / ".insarflow" / "done"
    return sum(1 for _ in done.glob("*.json")) if done.is_dir() else 0


@dataclass(frozen=True)
class DoneLines:
    """topsStack lines with a valid completion marker: label -> (marker text, log commands)."""

    lines: Mapping[str, tuple[str, int]]
    total: int


def done_lines(config: StackConfig) -> DoneLines:
    """Every line :func:`is_line_done` accepts, with its marker content and log command count."""
    paths = config.paths
    try:
        lines = parse_run_files(paths.stack)
    except RunFileError:
        return DoneLines({}, 0)
    done = {
        line.label: (
            marker_path(line, paths.stack).read_text(),
            command_headers(log_path_for(line, paths.logs)),
        )
        for line in lines
        if is_line_done(line, paths.stack)
    }
    return DoneLines(done, len(lines))


def reexecuted(before: DoneLines, config: StackConfig) -> list[str]:
    """Lines done in ``before`` whose marker changed or whose log gained a command since."""
    paths = config.paths
    lines = {line.label: line for line in parse_run_files(paths.stack)}
    changed = []
    for label, (marker, commands) in before.lines.items():
        line = lines.get(label)
        if line is None:
            changed.append(f"{label}: no longer in the run files")
            continue
        now_marker = marker_path(line, paths.stack).read_text()
        now_commands = command_headers(log_path_for(line, paths.logs))
        if now_marker != marker or now_commands != commands:
            changed.append(f"{label}: commands {commands} -> {now_commands}")
    return changed


def stage_of(config: StackConfig) -> str:
    """Which stage a stopped run was in, from what its work directory holds."""
    paths = config.paths
    if not (paths.root / "acquisition.json").is_file():
        return "acquire"
    if not (paths.stack / ".insarflow" / "run_files.done.json").is_file():
        return "stackSentinel"
    done = done_lines(config)
    if len(done.lines) < done.total:
        return "topsstack"
    if not (paths.mintpy / "geo" / "geo_velocity.h5").is_file():
        return "mintpy"
    if not (paths.products / "report.html").is_file():
        return "products"
    return "finished"


def leftovers(config: StackConfig) -> list[Path]:
    """Temporary or half-written outputs a finished run must not leave behind."""
    paths = config.paths
    # atomic writes anywhere in the work dir (insarflow.atomic), downloads in progress
    found = [p for p in paths.root.rglob(f"*{TMP_MARK}*") if p.parent.name != "prefect"]
    found += [p for p in paths.slc.glob("*") if p.name.endswith(".part")]
    found += list(paths.products.glob("*.old"))
    found += list((paths.mintpy / ".insarflow").glob("*.running.json"))
    return found


# --------------------------------------------------------------------------- digests


def _digest(array: np.ndarray) -> str:
    data = np.ascontiguousarray(array)
    head = f"{data.dtype.str}{data.shape}".encode()
    return hashlib.sha256(head + data.tobytes()).hexdigest()


def product_digest(work_dir: Path) -> dict[str, str]:
    """sha256 of the values that must be reproducible, per dataset/variable.

    MintPy's ``velocity.h5`` velocity and ``timeseries.h5`` time series, every data
    variable and coordinate of the zarr store, and the velocity GeoTIFF's pixels. Attributes
    are left out: they hold creation times, paths and input mtimes.
    """
    import rasterio
    import xarray as xr

    out: dict[str, str] = {}
    mintpy = work_dir / "mintpy"
    with h5py.File(mintpy / "velocity.h5", "r") as f:
        out["velocity.h5:velocity"] = _digest(f["velocity"][()])
    with h5py.File(mintpy / "timeseries.h5", "r") as f:
        out["timeseries.h5:timeseries"] = _digest(f["timeseries"][()])
    with xr.open_zarr(work_dir / "products" / "timeseries.zarr") as ds:
        for name in sorted(map(str, ds.variables)):
            out[f"zarr:{name}"] = _digest(ds[name].values)
    with rasterio.open(work_dir / "products" / "velocity.tif") as src:
        out["velocity.tif"] = _digest(src.read(1))
    return out


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file below ``root``."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ process sampling


@dataclass
class CommandLineSampler:
    """Samples every process's command line (``ps -eo args``) in a background thread."""

    interval_s: float = 0.1
    samples: int = 0
    seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = proc.info.get("cmdline")
                if cmdline:
                    self.seen.add(" ".join(cmdline))
            self.samples += 1
            self._stop.wait(self.interval_s)

    @contextmanager
    def running(self) -> Iterator[CommandLineSampler]:
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=5)
