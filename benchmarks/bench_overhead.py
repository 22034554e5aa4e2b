"""Per-line overhead of the topsStack executor (Prefect task on Dask) for a no-op line.

Executor path, exactly as in production: ``flows.topsstack.topsstack_flow`` parses a run file
``run_02_unpack_secondary_slc`` of ``n`` independent lines ``SentinelWrapper.py -c
configs/config_secondary_<date>``, and runs each line as a Prefect task on a local Dask cluster
(one worker, ``--slots`` threads, default 1) through ``tasks.shell.run_command``, with the
completion marker, log file and report the executor writes for every line. The line's program
is a no-op stand-in (``/bin/sh`` running ``date +%s.%N``, a few ms) that prints when it ran.

Figures for n = 100, 1,000 and 5,000 lines (smoke: 20, 50): amortised ms per line (span from
the first to the last line's timestamp / (n - 1) x slots), the median and p95 of the gap between
consecutive lines (with one slot: everything the executor, Prefect and Dask do per line), the
flow's whole wall time, and how the per-line cost grows from the smallest to the largest n.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402

FULL_SIZES = (100, 1000, 5000)
SMOKE_SIZES = (20, 50)
BUDGET_MB = 1_000_000  # memory never limits these lines
NOOP = "#!/bin/sh\nexec date +%s.%N\n"


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


def measure(root: Path, n: int, slots: int) -> dict[str, float]:
    stack = write_noop_stack(root, n)
    wall, report = bl.run_executor(stack, slots=slots, budget_mb=BUDGET_MB)
    times = line_times(stack)
    if len(report.ran) != n or len(times) != n:
        raise RuntimeError(f"{len(report.ran)} of {n} lines ran ({len(times)} logs)")
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    p95 = gaps[min(len(gaps) - 1, int(0.95 * len(gaps)))]
    return {
        "n": n,
        "wall_s": wall,
        "amortised_ms": (times[-1] - times[0]) / (n - 1) * slots * 1000,
        "median_ms": statistics.median(gaps) * 1000,
        "p95_ms": p95 * 1000,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20 and 50 lines")
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of lines to run")
    parser.add_argument("--slots", type=int, default=1, help="Dask worker threads (default 1)")
    bl.add_prefect_api_argument(parser)
    args = parser.parse_args(argv)
    sizes = args.sizes or (SMOKE_SIZES if args.smoke else FULL_SIZES)
    if min(sizes) < 2:
        parser.error("--sizes: every size must be at least 2 lines")

    bl.header("bench_overhead: per-line cost of the topsStack executor (Prefect + Dask)")
    print(
        f"   path: flows.topsstack.topsstack_flow (executor), 1 Dask worker x {args.slots} "
        "thread(s), no-op line = /bin/sh exec date"
    )
    results = []
    with bl.prefect_api(args.prefect_api):
        for n in sizes:
            with bl.scratch_dir(f"overhead-{n}") as root:
                t0 = time.perf_counter()
                results.append(measure(root, n, args.slots))
                print(f"   {n} lines done in {time.perf_counter() - t0:.1f} s", flush=True)
    print()
    bl.table(
        [
            [
                f"{r['n']:.0f}",
                f"{r['wall_s']:.1f}",
                f"{r['amortised_ms']:.1f}",
                f"{r['median_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
            ]
            for r in results
        ],
        ["lines", "flow wall s", "ms/line (amortised)", "median gap ms", "p95 gap ms"],
    )
    print()
    for r in results:
        n = int(r["n"])
        bl.figure(f"overhead.ms_per_line_{n}", f"{r['amortised_ms']:.1f}")
        bl.figure(f"overhead.median_ms_{n}", f"{r['median_ms']:.1f}")
        bl.figure(f"overhead.p95_ms_{n}", f"{r['p95_ms']:.1f}")
    first, last = results[0], results[-1]
    bl.figure(
        f"overhead.growth_{last['n']:.0f}_vs_{first['n']:.0f}",
        f"{last['amortised_ms'] / first['amortised_ms']:.2f}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
