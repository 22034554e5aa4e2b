"""Per-line overhead of the topsStack executor (Prefect task, command on Dask) for a no-op line.

Executor path, exactly as in production: ``insarflow.flows.topsstack.topsstack_flow`` parses a
run file ``run_02_unpack_secondary_slc`` of ``n`` independent lines ``SentinelWrapper.py -c
configs/config_secondary_<date>``, and runs each line as a Prefect task in the flow process
whose command runs on a local Dask cluster (one worker, ``--slots`` threads, default 1)
through ``insarflow.tasks.shell.run_command``, with the completion marker, log file and
report the executor writes for every line. The line's program is a no-op stand-in
(``/bin/sh`` running ``date +%s.%N``, a few ms) that prints when it ran.

Figures for n = 100, 1,000 and 5,000 lines (smoke: 20, 50): amortised ms per line (span from
the first to the last line's timestamp / (n - 1) x slots), the median and p95 of the gap between
consecutive lines (with one slot: everything the executor, Prefect and Dask do per line), the
flow's whole wall time, and how the per-line cost grows from the smallest to the largest n.

For reference, to split the cost: the same no-op function submitted n times straight to a
Dask client of the same shape (Dask alone), and a no-op ``@task`` submitted n times in a flow on
Prefect's ``ThreadPoolTaskRunner`` (Prefect alone: what every line's task run costs); for n up
to ``--reference-max`` (1,000; smoke: 20).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

FULL_SIZES = (100, 1000, 5000)
SMOKE_SIZES = (20, 50)
BUDGET_MB = 1_000_000  # memory never limits these lines
NOOP = "#!/bin/sh\nexec date +%s.%N\n"
EXECUTOR, DASK_PLAIN, PREFECT_THREADS = "executor", "Dask alone", "Prefect task, thread pool"
FIGURE_PREFIX = {
    EXECUTOR: "overhead",
    DASK_PLAIN: "overhead.dask_plain",
    PREFECT_THREADS: "overhead.threads_task",
}


def write_noop_stack(root: Path, n: int) -> bl.BenchStack:
    """A stack dir with one run file of ``n`` independent no-op lines."""
    stack = bl.BenchStack(root, bl.StackSpec(n, 1, (1,), 1))
    run_dir = stack.stack_dir / "run_files"
    run_dir.mkdir(parents=True)
    (stack.stack_dir / "configs").mkdir()
    first = date(2000, 1, 1)
    keys = [(first + timedelta(days=i)).strftime("%Y%m%d") for i in range(n)]
    config_dir = stack.stack_dir / "configs"
    (run_dir / "run_02_unpack_secondary_slc").write_text(
        "".join(f"SentinelWrapper.py -c {config_dir}/config_secondary_{k}\n" for k in keys)
    )
    stack.bin_dir.mkdir()
    tool = stack.bin_dir / "SentinelWrapper.py"
    tool.write_text(NOOP)
    tool.chmod(0o755)
    return stack


def line_times(stack: bl.BenchStack) -> list[float]:
    """The timestamp each line printed (from its log file), sorted."""
    out = []
    for log in (stack.log_dir / "executor").rglob("*.log"):
        stamps = [x for x in log.read_text().splitlines() if x and not x.startswith("#")]
        out.append(float(stamps[-1]))
    return sorted(out)


@dataclass(frozen=True)
class Result:
    """Per-line figures of one path at one size."""

    path: str
    n: int
    wall_s: float
    amortised_ms: float
    median_ms: float
    p95_ms: float


def summarise(path: str, n: int, wall: float, times: list[float], slots: int) -> Result:
    """Figures from the sorted times at which the lines ran."""
    if len(times) != n:
        raise RuntimeError(f"{path}: {len(times)} of {n} lines ran")
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return Result(
        path=path,
        n=n,
        wall_s=wall,
        amortised_ms=(times[-1] - times[0]) / (n - 1) * slots * 1000,
        median_ms=statistics.median(gaps) * 1000,
        p95_ms=gaps[min(len(gaps) - 1, int(0.95 * len(gaps)))] * 1000,
    )


def measure_executor(root: Path, n: int, slots: int) -> Result:
    stack = write_noop_stack(root, n)
    wall, report = bl.run_executor(stack, slots=slots, budget_mb=BUDGET_MB)
    if len(report.ran) != n:
        raise RuntimeError(f"the executor ran {len(report.ran)} of {n} lines")
    return summarise(EXECUTOR, n, wall, line_times(stack), slots)


def measure_prefect_threads(n: int, slots: int) -> Result:
    """``n`` no-op Prefect tasks submitted at once in a flow on a ``ThreadPoolTaskRunner``."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(cache_policy=NO_CACHE, persist_result=False)
    def noop(i: int) -> float:
        return time.time()

    @flow(name="bench-overhead-bare", task_runner=ThreadPoolTaskRunner(max_workers=slots))
    def bare(n: int) -> list[float]:
        futures = [noop.submit(i) for i in range(n)]
        return sorted(f.result() for f in futures)

    t0 = time.perf_counter()
    times = bare(n)
    return summarise(PREFECT_THREADS, n, time.perf_counter() - t0, times, slots)


def measure_dask_plain(n: int, slots: int) -> Result:
    """``n`` no-op functions submitted at once to a local Dask cluster of the same shape."""
    from distributed import Client, LocalCluster

    def noop(i: int) -> float:
        return time.time()

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=slots, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        t0 = time.perf_counter()
        futures = client.map(noop, range(n), pure=False)
        times = sorted(client.gather(futures))
        wall = time.perf_counter() - t0
    return summarise(DASK_PLAIN, n, wall, times, slots)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20 and 50 lines")
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of lines to run")
    parser.add_argument("--slots", type=int, default=1, help="Dask worker threads (default 1)")
    parser.add_argument(
        "--reference-max",
        type=int,
        default=None,
        help="run the bare-task reference paths for sizes up to this (default 1000; smoke 20)",
    )
    bl.add_prefect_api_argument(parser)
    args = parser.parse_args(argv)
    sizes = args.sizes or (SMOKE_SIZES if args.smoke else FULL_SIZES)
    if min(sizes) < 2:
        parser.error("--sizes: every size must be at least 2 lines")

    bl.header("bench_overhead: per-line cost of the topsStack executor (Prefect + Dask)")
    print(
        f"   executor: insarflow.flows.topsstack.topsstack_flow, "
        f"1 Dask worker x {args.slots} thread(s), "
        "no-op line = /bin/sh exec date, run through run_line/run_command"
    )
    print(
        "   references: a no-op function submitted n times to a Dask client (same cluster "
        "shape), and a no-op @task submitted n times in a flow on a ThreadPoolTaskRunner"
    )
    results: list[Result] = []
    with bl.prefect_api(args.prefect_api):
        for n in sizes:
            t0 = time.perf_counter()
            with bl.scratch_dir(f"overhead-{n}") as root:
                results.append(measure_executor(root, n, args.slots))
            if n <= (args.reference_max or (20 if args.smoke else 1000)):
                results.append(measure_dask_plain(n, args.slots))
                results.append(measure_prefect_threads(n, args.slots))
            print(f"   {n} lines done in {time.perf_counter() - t0:.1f} s", flush=True)
    print()
    bl.table(
        [
            [
                r.path,
                str(r.n),
                f"{r.wall_s:.1f}",
                f"{r.amortised_ms:.1f}",
                f"{r.median_ms:.1f}",
                f"{r.p95_ms:.1f}",
            ]
            for r in results
        ],
        ["path", "lines", "flow wall s", "ms/line (amortised)", "median gap ms", "p95 gap ms"],
    )
    print()
    executor = [r for r in results if r.path == EXECUTOR]
    for r in results:
        prefix = FIGURE_PREFIX[r.path]
        bl.figure(f"{prefix}.ms_per_line_{r.n}", f"{r.amortised_ms:.1f}")
        bl.figure(f"{prefix}.median_ms_{r.n}", f"{r.median_ms:.1f}")
        bl.figure(f"{prefix}.p95_ms_{r.n}", f"{r.p95_ms:.1f}")
    first, last = executor[0], executor[-1]
    bl.figure(
        f"overhead.growth_{last.n}_vs_{first.n}",
        f"{last.amortised_ms / first.amortised_ms:.2f}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
