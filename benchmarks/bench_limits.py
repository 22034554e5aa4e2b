"""The topsStack stage against a real Prefect server, with and without insarflow's limits.

One ``prefect server start`` subprocess (a free 127.0.0.1 port, its own database) serves both
runs of the same stack (``bench_scheduling``'s 635 lines, N = 4 slots, 300 s of modelled work;
smoke: its 2-date stack), executed by ``insarflow.flows.topsstack.topsstack_flow`` on a local
Dask cluster:

1. without limits: the server holds no concurrency limit (lines go untagged);
2. with limits: after ``python -m insarflow.deployments.setup`` (a subprocess, as an operator
   runs it) has created the tag limits ``gpu`` and ``memory-heavy`` and the global limit
   ``insarflow-memory-gb``: each ``memory-heavy`` line occupies a slot of its tag's limit and
   every line its reservation in GB of the global limit, held on the server by the stage
   (:mod:`insarflow.server_slots`).

The limits are sized so that they do not restrict this run (``--memory-heavy`` = N,
``--memory-gb`` = N slots of whole GB, since each line occupies its reservation rounded up to
whole GB): the ratio is what holding them costs, not the concurrency they
take away. ``--memory-heavy 2`` shows a limit at work. Reported: both wall times, their ratio,
the mean number of lines running at once, and the peak number of ``memory-heavy`` lines
running at once against the limit.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl
from bench_scheduling import FULL, SMOKE


def mean_running(records: Sequence[Mapping[str, Any]]) -> float:
    """Time-weighted mean number of lines running at once over the lines' span."""
    span = max(r["end"] for r in records) - min(r["start"] for r in records)
    return sum(r["end"] - r["start"] for r in records) / span if span > 0 else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny stack, seconds")
    parser.add_argument("--slots", type=int, default=4, help="N: parallel lines (default 4)")
    parser.add_argument(
        "--work-s",
        type=float,
        default=None,
        help="sum of all line durations in seconds (default 300; smoke 0.5)",
    )
    parser.add_argument(
        "--memory-heavy",
        type=int,
        default=None,
        help="the setup's --memory-heavy (default N: the limit does not restrict the run)",
    )
    args = parser.parse_args(argv)
    spec = SMOKE if args.smoke else FULL
    work_target = args.work_s if args.work_s is not None else (0.5 if args.smoke else 300.0)
    n = args.slots
    budget_mb = n * bl.SLOT_MB
    heavy = args.memory_heavy if args.memory_heavy is not None else n
    setup_args = ["--gpus", "1", "--memory-heavy", str(heavy)]
    # each running line occupies its reservation rounded up to whole GB
    setup_args += ["--memory-gb", str(n * math.ceil(bl.SLOT_MB / 1024))]

    from insarflow.tasks.topsstack.resources import resource_class
    from insarflow.tasks.topsstack.runfiles import parse_run_files

    bl.header("bench_limits: topsStack stage on a Prefect server, with vs without limits")
    with bl.scratch_dir("limits") as root:
        stack = bl.make_stack(root, spec)
        lines = parse_run_files(stack.stack_dir)
        real = bl.durations(lines, spec.n_bursts, 1.0)
        scale = work_target / sum(real.values())
        bl.write_plan(
            stack,
            lines,
            {k: v * scale for k, v in real.items()},
            bl.memory_mb(lines, spec.n_bursts),
            100.0,
        )
        heavy_ids = {ln.line_id for ln in lines if resource_class(ln.step, False) == "memory-heavy"}
        print(
            f"   stack: {spec.describe()}: {len(lines)} lines ({len(heavy_ids)} memory-heavy), "
            f"{work_target:.0f} s of modelled work; N = {n} slots, budget {budget_mb} MB"
        )
        walls: dict[str, float] = {}
        running: dict[str, float] = {}
        peak_heavy: dict[str, int] = {}
        t0 = time.perf_counter()
        with bl.prefect_server(root) as env:
            print(f"   prefect server started in {time.perf_counter() - t0:.1f} s")
            for mode in ("without limits", "with limits"):
                if mode == "with limits":
                    done = subprocess.run(
                        [sys.executable, "-m", "insarflow.deployments.setup", *setup_args],
                        env={**env, "PYTHONPATH": str(bl.REPO_ROOT)},
                        cwd=bl.REPO_ROOT,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    print(f"   insarflow.deployments.setup {' '.join(setup_args)}:")
                    for out in done.stdout.splitlines():
                        print(f"     {out}")
                bl.reset_run(stack)
                walls[mode], report = bl.run_executor(stack, slots=n, budget_mb=budget_mb)
                records = bl.read_records(stack)
                if len(report.ran) != len(lines) or len(records) != len(lines):
                    raise RuntimeError(f"{mode}: {len(report.ran)} of {len(lines)} lines ran")
                running[mode] = mean_running(records)
                peak_heavy[mode] = bl.occupancy(
                    [r for r in records if r["line_id"] in heavy_ids]
                ).peak_lines

    print()
    bl.table(
        [
            [mode, bl.fmt_s(walls[mode]), f"{running[mode]:.2f}", str(peak_heavy[mode])]
            for mode in walls
        ],
        ["topsStack stage", "wall", "mean lines running", "peak memory-heavy lines"],
    )
    print()
    ratio = walls["with limits"] / walls["without limits"]
    bl.figure("limits.without_s", f"{walls['without limits']:.2f}")
    bl.figure("limits.with_s", f"{walls['with limits']:.2f}")
    bl.figure("limits.ratio", f"{ratio:.2f}")
    bl.figure("limits.mean_running_without", f"{running['without limits']:.2f}")
    bl.figure("limits.mean_running_with", f"{running['with limits']:.2f}")
    bl.figure(
        "limits.peak_memory_heavy",
        f"{peak_heavy['with limits']} of {heavy}"
        f" ({'never above' if peak_heavy['with limits'] <= heavy else 'ABOVE'} the limit)",
    )
    return 0 if peak_heavy["with limits"] <= heavy else 1


if __name__ == "__main__":
    sys.exit(main())
