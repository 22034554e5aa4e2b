"""Shared pieces of the benchmark scripts: a synthetic topsStack stack whose lines sleep.

Run files come from the simulator's ``stackSentinel.py`` (the real file shapes, numbering and
configs). Every ISCE2 script those lines call (``SentinelWrapper.py``, ``subsetReference.py``,
``invertMisreg.py``, ``extractCommonValidRegion.py``) is replaced, on PATH, by a small stand-in
that looks its own command line up in a plan file, allocates and touches the line's scaled
memory estimate, sleeps for the line's modelled duration, creates the outputs the executor
checks, and appends a ``{line_id, start, end, memory_mb}`` record.

Cost model (seconds of real topsStack work on one node, ``base + per_burst x bursts``; the
bench scales the total down, see :func:`durations`). The figures are of the order MinSAR and
the topsStack tutorials report for a 3-swath frame (a few minutes per date per step, topo and
full-burst geo2rdr the longest per-date steps, snaphu the longest per-pair step); the ratios
between steps matter here, not their absolute values.

==============================  ======  ===========
step                            base s  per burst s
==============================  ======  ===========
unpack_topo_reference           60      60
unpack_secondary_slc            30      4
average_baseline                10      1
extract_burst_overlaps          30      4
overlap_geo2rdr                 20      6
overlap_resample                15      3
pairs_misreg                    20      2
timeseries_misreg               10      0
fullBurst_geo2rdr               30      25
fullBurst_resample              30      15
extract_stack_valid_region      60      2
merge_reference_secondary_slc   30      5   (geometry layer: 40 s flat)
generate_burst_igram            20      8
merge_burst_igram               20      6
filter_coherence                60      8
unwrap                          120     20
==============================  ======  ===========

Memory of a line is the project's own estimate (``insarflow.tasks.topsstack.resources``), in
real MB; the stand-in allocates ``estimate / memory_divisor`` MB of it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

# Quiet, deterministic logging for every benchmark; set before Prefect or Dask is imported.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from insarflow.tasks.topsstack.resources import estimate_memory_mb  # noqa: E402
from insarflow.tasks.topsstack.runfiles import RunLine  # noqa: E402

PLAN_ENV = "INSARFLOW_BENCH_PLAN"
# Default memory budget per slot of the executor benchmarks: above the largest line estimate
# (snaphu, 10,100 MB), so that memory does not limit N lines at once unless asked to.
SLOT_MB = 12_000
TOOLS = (
    "SentinelWrapper.py",
    "subsetReference.py",
    "invertMisreg.py",
    "extractCommonValidRegion.py",
)
RANGE_LOOKS, AZIMUTH_LOOKS = 9, 3

#: step -> (base seconds, seconds per burst), real scale (see the module table).
COST_MODEL: Mapping[str, tuple[float, float]] = {
    "unpack_topo_reference": (60, 60),
    "unpack_secondary_slc": (30, 4),
    "average_baseline": (10, 1),
    "extract_burst_overlaps": (30, 4),
    "overlap_geo2rdr": (20, 6),
    "overlap_resample": (15, 3),
    "pairs_misreg": (20, 2),
    "timeseries_misreg": (10, 0),
    "fullBurst_geo2rdr": (30, 25),
    "fullBurst_resample": (30, 15),
    "extract_stack_valid_region": (60, 2),
    "merge_reference_secondary_slc": (30, 5),
    "generate_burst_igram": (20, 8),
    "merge_burst_igram": (20, 6),
    "filter_coherence": (60, 8),
    "unwrap": (120, 20),
}
GEOMETRY_LAYER_MERGE_S = 40.0

_STANDIN = '''\
"""Benchmark stand-in for an ISCE2 topsStack script: allocate, sleep, write outputs, record."""
import json, os, sys, time

start = time.time()
with open(os.environ["{plan_env}"]) as fh:
    plan = json.load(fh)
key = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
spec = plan["lines"].get(key)
if spec is None:
    print("bench stand-in: no plan for " + repr(key), flush=True)
    sys.exit(2)
reserved = int(os.environ.get("INSARFLOW_LINE_MEMORY_MB") or spec["memory_mb"])
block = bytearray(spec["alloc_bytes"])  # zero-filled, so every page is written
block[::4096] = b"\\x01" * len(range(0, len(block), 4096))
time.sleep(max(0.0, spec["sleep"] - (time.time() - start)))
for out in spec["outputs"]:
    if os.path.isdir(out) or not os.path.splitext(out)[1]:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "bench.done"), "w") as fh:
            fh.write(spec["line_id"] + "\\n")
    else:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as fh:
            fh.write(spec["line_id"] + "\\n")
record = {{"line_id": spec["line_id"], "start": start, "end": time.time(), "memory_mb": reserved}}
fd = os.open(plan["record_file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (json.dumps(record) + "\\n").encode())
os.close(fd)
del block
'''


# --------------------------------------------------------------------------- machine, output


def machine() -> str:
    """'N cores, M GiB, <cpu>' of this machine."""
    import psutil

    mem = psutil.virtual_memory().total / 2**30
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), Path("/proc/cpuinfo").open() as fh:
        cpu = next(x for x in fh if x.startswith("model name")).split(":", 1)[1].strip()
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, {cpu}, Python {platform.python_version()}"


def header(title: str) -> None:
    """Print the title, date and machine of a benchmark."""
    print(f"== {title}")
    print(f"   {datetime.now(UTC).isoformat(timespec='seconds')} on {machine()}")


def table(rows: Sequence[Sequence[object]], head: Sequence[str]) -> None:
    """Print a plain text table (columns right-aligned except the first)."""
    cells = [[str(c) for c in head], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("   " + "  ".join(parts))
        if n == 0:
            print("   " + "  ".join("-" * w for w in widths))


def figure(name: str, value: str) -> None:
    """One result line, ``FIGURE <name>: <value>`` (what the smoke test looks for)."""
    print(f"FIGURE {name}: {value}", flush=True)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory removed afterwards (on error too)."""
    path = Path(tempfile.mkdtemp(prefix=f"insarflow-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def prefect_api(mode: str) -> Iterator[None]:
    """``temporary``: a throwaway Prefect API (own database); ``current``: the configured one."""
    if mode == "current":
        yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@contextlib.contextmanager
def prefect_server(root: Path) -> Iterator[dict[str, str]]:
    """A ``prefect server start`` subprocess on a free 127.0.0.1 port, its home under ``root``;
    this process's Prefect client talks to it while the context is open. Yields the environment
    for subprocesses that must use it (no other Prefect setting of this one is passed on)."""
    import socket
    import subprocess

    import httpx
    import psutil
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(root / "prefect-home"),
        PREFECT_API_URL=url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    log = root / "prefect-server.log"
    address = ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", *address, "--no-scheduler"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start; log:\n{log.read_text()}")
            time.sleep(0.25)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield env
    finally:
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(server.pid).children(recursive=True)
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
        for child in psutil.wait_procs(children, timeout=10)[1]:
            child.kill()


def add_prefect_api_argument(parser: Any) -> None:
    parser.add_argument(
        "--prefect-api",
        choices=("temporary", "current"),
        default="temporary",
        help="temporary: start a throwaway Prefect API with its own database (default); "
        "current: use the API configured in the environment",
    )


# --------------------------------------------------------------------------- synthetic stack


@dataclass(frozen=True)
class StackSpec:
    """Shape of the synthetic stack: dates, connections and bursts."""

    n_dates: int
    connections: int
    swaths: tuple[int, ...]
    bursts_per_swath: int
    overlap_connections: int = 3
    coregistration: str = "NESD"

    @property
    def n_bursts(self) -> int:
        return len(self.swaths) * self.bursts_per_swath

    def describe(self) -> str:
        return (
            f"{self.n_dates} dates, {self.connections} connections, {len(self.swaths)} swaths "
            f"x {self.bursts_per_swath} bursts, {self.coregistration}"
        )


@dataclass(frozen=True)
class BenchStack:
    """A work directory with SLC/orbits/dem/aux/stack and the stand-ins in ``bin``."""

    root: Path
    spec: StackSpec

    @property
    def stack_dir(self) -> Path:
        return self.root / "stack"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def plan_file(self) -> Path:
        return self.root / "plan.json"

    @property
    def record_file(self) -> Path:
        return self.root / "records.jsonl"


def _scene(spec: StackSpec, n_dates: int) -> Any:
    from insarflow.simulator.scene import SceneSpec

    return SceneSpec.regular(
        date(2024, 1, 1),
        n_dates,
        12,
        length=max(16, 2 * spec.bursts_per_swath),
        width=16,
        swaths=spec.swaths,
        bursts_per_swath=spec.bursts_per_swath,
        dem_spacing_arcsec=30.0,
    )


def write_acquisitions(root: Path, spec: StackSpec, n_dates: int | None = None) -> None:
    """Synthetic SAFE zips, orbits and DEM for the first ``n_dates`` dates (default: all)."""
    from insarflow.simulator.acquisition import make_synthetic_acquisitions

    scene = _scene(spec, n_dates or spec.n_dates)
    make_synthetic_acquisitions(root / "SLC", root / "orbits", root / "dem", scene)


def run_stack_sentinel(root: Path, spec: StackSpec, *extra: str) -> None:
    """Write run files and configs with the simulator's stackSentinel.py (cwd = stack dir)."""
    from insarflow.simulator.acquisition import dem_name
    from insarflow.simulator.stack_sentinel import main

    stack = root / "stack"
    stack.mkdir(parents=True, exist_ok=True)
    (root / "aux").mkdir(exist_ok=True)
    dem = root / "dem" / dem_name(_scene(spec, 2))
    args = [
        "-s", str(root / "SLC"), "-w", str(stack), "-o", str(root / "orbits"),
        "-a", str(root / "aux"), "-d", str(dem), "-C", spec.coregistration,
        "-c", str(spec.connections), "-O", str(spec.overlap_connections), *extra,
    ]  # fmt: skip
    cwd = Path.cwd()
    os.chdir(stack)
    try:
        with contextlib.redirect_stdout(None):
            rc = main(args)
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise RuntimeError(f"simulator stackSentinel.py failed with status {rc} in {stack}")


def install_standins(bin_dir: Path) -> Path:
    """Write the stand-in under each ISCE2 script name into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    text = f"#!{sys.executable} -IS\n" + _STANDIN.format(plan_env=PLAN_ENV)
    for tool in TOOLS:
        path = bin_dir / tool
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def make_stack(root: Path, spec: StackSpec) -> BenchStack:
    """Acquisitions, run files and stand-ins for ``spec`` under ``root``."""
    write_acquisitions(root, spec)
    run_stack_sentinel(root, spec)
    install_standins(root / "bin")
    return BenchStack(root, spec)


# --------------------------------------------------------------------------- cost model, plan


def model_seconds(line: RunLine, n_bursts: int) -> float:
    """Real-scale duration of ``line`` from :data:`COST_MODEL`."""
    if line.step == "merge_reference_secondary_slc" and line.key_kind == "layer":
        return GEOMETRY_LAYER_MERGE_S
    base, per_burst = COST_MODEL[line.step]
    return base + per_burst * n_bursts


def durations(lines: Sequence[RunLine], n_bursts: int, scale: float) -> dict[str, float]:
    """Benchmark seconds of each line: model seconds x ``scale``."""
    return {ln.line_id: model_seconds(ln, n_bursts) * scale for ln in lines}


def memory_mb(lines: Sequence[RunLine], n_bursts: int) -> dict[str, int]:
    """The project's memory estimate (real MB) of each line."""
    return {
        ln.line_id: estimate_memory_mb(ln.step, ln.key_kind, n_bursts, RANGE_LOOKS, AZIMUTH_LOOKS)
        for ln in lines
    }


def command_key(argv: Sequence[str]) -> str:
    """How the stand-in finds its line: script base name, then the arguments."""
    return " ".join([Path(argv[0]).name, *argv[1:]])


def write_plan(
    stack: BenchStack,
    lines: Sequence[RunLine],
    sleep_s: Mapping[str, float],
    mem_mb: Mapping[str, int],
    memory_divisor: float,
) -> None:
    """The plan the stand-ins read (one entry per line, keyed by command line)."""
    plan = {
        "record_file": str(stack.record_file),
        "lines": {
            command_key(ln.command): {
                "line_id": ln.line_id,
                "sleep": round(sleep_s[ln.line_id], 4),
                "memory_mb": mem_mb[ln.line_id],
                "alloc_bytes": int(mem_mb[ln.line_id] / memory_divisor * 2**20),
                "outputs": [str(p) for p in ln.outputs],
            }
            for ln in lines
        },
    }
    stack.plan_file.write_text(json.dumps(plan))


def read_records(stack: BenchStack) -> list[dict[str, Any]]:
    if not stack.record_file.exists():
        return []
    return [json.loads(x) for x in stack.record_file.read_text().splitlines() if x.strip()]


def reset_run(stack: BenchStack) -> None:
    """Forget the previous execution: records, completion markers, logs."""
    stack.record_file.unlink(missing_ok=True)
    shutil.rmtree(stack.stack_dir / ".insarflow", ignore_errors=True)
    shutil.rmtree(stack.log_dir, ignore_errors=True)


def standin_env(stack: BenchStack) -> dict[str, str]:
    return {PLAN_ENV: str(stack.plan_file)}


# --------------------------------------------------------------------------- modes


def run_bash_files(stack: BenchStack, scripts: Sequence[Path], tag: str) -> float:
    """``bash <script>`` for each script in order (cwd = stack dir); returns the wall time."""
    from insarflow.tasks.shell import run_command

    env = {**os.environ, **standin_env(stack)}
    start = time.perf_counter()
    for script in scripts:
        run_command(
            ["bash", str(script)],
            log_path=stack.log_dir / tag / f"{script.name}.log",
            cwd=stack.stack_dir,
            env=env,
            extra_path=[stack.bin_dir],
        )
    return time.perf_counter() - start


def run_files(stack: BenchStack) -> list[Path]:
    return sorted((stack.stack_dir / "run_files").glob("run_*"))


def barrier_scripts(stack: BenchStack, lines: Sequence[RunLine], n: int) -> list[Path]:
    """Run files as ``stackSentinel.py --num_proc n`` writes them: n lines with ``&``, ``wait``.

    stackSentinel leaves out the ``wait`` after the last group; it is kept here so that the
    next run file starts only when this one is finished, which is how a run file is meant to
    be used.
    """
    import shlex

    out_dir = stack.root / f"run_files_num_proc_{n}"
    out_dir.mkdir(exist_ok=True)
    by_file: dict[Path, list[RunLine]] = {}
    for ln in lines:
        by_file.setdefault(ln.run_file, []).append(ln)
    scripts = []
    for run_file in sorted(by_file):
        text = []
        group = by_file[run_file]
        for i in range(0, len(group), n):
            text += [shlex.join(ln.command) + " &" for ln in group[i : i + n]]
            text.append("wait")
        path = out_dir / run_file.name
        path.write_text("\n".join(text) + "\n")
        scripts.append(path)
    return scripts


def run_executor(
    stack: BenchStack,
    *,
    slots: int,
    budget_mb: int,
) -> tuple[float, Any]:
    """The project's topsStack flow on a local Dask cluster with ``slots`` worker threads.

    One worker with ``slots`` threads advertises ``MEMORY_MB = budget_mb``. Returns the wall
    time of the flow call and its ExecutionReport.
    """
    from insarflow.flows.topsstack import topsstack_flow

    start = time.perf_counter()
    report = topsstack_flow(
        stack_dir=stack.stack_dir,
        log_dir=stack.log_dir / "executor",
        memory_budget_mb=budget_mb,
        n_bursts=stack.spec.n_bursts,
        range_looks=RANGE_LOOKS,
        azimuth_looks=AZIMUTH_LOOKS,
        n_workers=1,
        threads_per_worker=slots,
        extra_path=[stack.bin_dir],
        env=standin_env(stack),
        # the stand-ins only sleep: their reservations are the model's (what real lines need)
        learn_memory=False,
    )
    return time.perf_counter() - start, report


def run_plain_dag(
    stack: BenchStack,
    lines: Sequence[RunLine],
    dag: Mapping[str, frozenset[str]],
    *,
    slots: int,
    budget_mb: int,
) -> float:
    """The executor's policy without Prefect or Dask: the same ``StackScheduler`` (DAG, memory
    estimates, priorities) and ``run_line``, on a plain pool of ``slots`` threads.

    Ready lines start in priority order while a slot is free and their reservation fits in
    what the running lines leave of ``budget_mb``; like a Dask worker's queue of
    resource-constrained tasks, the first line that does not fit waits and holds back the
    ones behind it. Returns the wall time.
    """
    import heapq
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from insarflow.tasks.topsstack.executor import (
        ENV_MEMORY_MB,
        LineResult,
        Submission,
        plan_scheduler,
    )
    from insarflow.tasks.topsstack.executor import run_line as run_one

    start = time.perf_counter()
    scheduler = plan_scheduler(
        lines,
        dag,
        n_bursts=stack.spec.n_bursts,
        range_looks=RANGE_LOOKS,
        azimuth_looks=AZIMUTH_LOOKS,
        use_gpu=False,
        worker_memory_mb=budget_mb,
    )
    queue: list[tuple[int, int, Submission]] = []
    running: dict[Future[LineResult], Submission] = {}
    reserved = 0
    order = 0
    log_dir = stack.log_dir / "plain"
    with ThreadPoolExecutor(max_workers=slots) as pool:
        while True:
            for sub in scheduler.next_submissions():
                heapq.heappush(queue, (-sub.priority, order, sub))
                order += 1
            while queue and len(running) < slots and reserved + queue[0][2].memory_mb <= budget_mb:
                sub = heapq.heappop(queue)[2]
                env = {**standin_env(stack), ENV_MEMORY_MB: str(sub.memory_mb)}
                future = pool.submit(
                    run_one,
                    sub.line,
                    stack_dir=stack.stack_dir,
                    log_dir=log_dir,
                    extra_path=[stack.bin_dir],
                    env=env,
                    force=sub.force,
                )
                running[future] = sub
                reserved += sub.memory_mb
            if scheduler.finished:
                break
            if not running:
                raise RuntimeError("no line can start: a reservation exceeds the budget")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                sub = running.pop(future)
                reserved -= sub.memory_mb
                scheduler.succeeded(sub.line.line_id, future.result())
    return time.perf_counter() - start


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class Occupancy:
    """What the start/end records of one execution say."""

    lines: int
    span_s: float
    peak_mb: int
    peak_lines: int
    mean_mb: float


def occupancy(records: Sequence[Mapping[str, Any]]) -> Occupancy:
    """Peak summed reservation and peak count of lines running at one instant, mean reservation."""
    if not records:
        return Occupancy(0, 0.0, 0, 0, 0.0)
    events = sorted(
        [(r["start"], 1, int(r["memory_mb"])) for r in records]
        + [(r["end"], 0, -int(r["memory_mb"])) for r in records]
    )  # at equal times an end (0) sorts before a start (1)
    total = running = peak = peak_lines = 0
    area = 0.0
    last = events[0][0]
    for t, is_start, delta in events:
        area += total * (t - last)
        last = t
        total += delta
        running += 1 if is_start else -1
        peak, peak_lines = max(peak, total), max(peak_lines, running)
    span = events[-1][0] - events[0][0]
    return Occupancy(len(records), span, peak, peak_lines, area / span if span > 0 else 0.0)


def fmt_s(value: float) -> str:
    return f"{value:.2f} s"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)
