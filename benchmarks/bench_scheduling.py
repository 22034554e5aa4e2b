"""Wall time of a topsStack stack: sequential run files vs run-file barriers vs the DAG executor.

The stack: 30 dates, 3 connections, 3 swaths x 9 bursts, NESD coregistration (smoke: 2 dates,
1 swath x 2 bursts, geometry coregistration). Its run files and configs are written by the
simulator's ``stackSentinel.py``; every line's ISCE2 script is replaced by a stand-in that
allocates the line's memory estimate / ``--memory-divisor`` and sleeps for the line's modelled
duration (cost model in ``benchlib``: MinSAR-like ``base + per_burst x bursts`` seconds, scaled
so that all lines together take ``--work-s`` seconds).

Ways to execute the same lines:

(a) sequential: ``bash run_01_...``, ``bash run_02_...`` ... (the tutorial workflow);
(b) barriers: each run file as ``stackSentinel.py --num_proc N`` writes it (N lines with ``&``,
    then ``wait``), run files one after another;
(c) insarflow: ``insarflow.flows.topsstack.topsstack_flow``, every line a Prefect task on a
    local Dask cluster (one worker, N threads, ``MEMORY_MB = --budget-mb``), submitted as soon
    as the lines it needs are done;
(d) a diagnostic: (c)'s scheduling policy (``StackScheduler``: same DAG, memory estimates and
    priorities; ``run_line``) on a plain pool of N threads, without Prefect or Dask. (c) - (d)
    is what the orchestration costs per line (see ``bench_overhead``).

Reported: wall times, (a)/(c), (b)/(c), and (c) against the lower bound max(critical path,
total work / N) computed from the line durations measured in (c) (``run_command`` time of each
line, process start-up included); a memory-aware bound adds sum(memory x duration) / budget.
Memory safety: the peak summed reservation of lines running at one instant (from the
stand-ins' start/end records) against the budget, and the time-weighted mean reservation /
budget. For (a) and (b) the reservation is the line's estimate, which nothing enforces there.

Defaults: N = 4, a budget of N x 12,000 MB (every line's estimate fits N times; the largest,
snaphu, is 10,100 MB) and 300 s of work (lines of 0.47 s on average). Shorter lines or more
slots on a 2-core machine measure CPU contention rather than scheduling: every line costs
about 60 ms of CPU in the stand-in's start-up and allocation and 60-80 ms in the orchestration
(the flow process and the local Prefect API recording its task run), which here share the two
cores with the lines. ``--budget-mb`` below N x 10,100 MB shows the executor holding a tight
budget (snaphu lines run fewer at a time) where the barriers would go above it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

FULL = bl.StackSpec(n_dates=30, connections=3, swaths=(1, 2, 3), bursts_per_swath=9)
SMOKE = bl.StackSpec(
    n_dates=2, connections=1, swaths=(1,), bursts_per_swath=2, coregistration="geometry"
)


def dispatch_latency(
    records: Sequence[Mapping[str, Any]], dag: Mapping[str, frozenset[str]]
) -> list[float]:
    """For each line with upstream lines: its start minus the end of the last one it needs."""
    by_id = {r["line_id"]: r for r in records}
    out = []
    for line_id, upstream in dag.items():
        if line_id in by_id and upstream and all(u in by_id for u in upstream):
            out.append(by_id[line_id]["start"] - max(by_id[u]["end"] for u in upstream))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny stack, a few seconds")
    parser.add_argument("--slots", type=int, default=4, help="N: parallel lines (default 4)")
    parser.add_argument(
        "--budget-mb",
        type=int,
        default=None,
        help="memory budget (real-scale MB) of the executor's Dask worker "
        f"(default N x {bl.SLOT_MB} MB)",
    )
    parser.add_argument(
        "--work-s",
        type=float,
        default=None,
        help="sum of all line durations in seconds (default 300; smoke 0.5)",
    )
    parser.add_argument(
        "--memory-divisor",
        type=float,
        default=100.0,
        help="each stand-in allocates estimate / divisor MB (default 100)",
    )
    bl.add_prefect_api_argument(parser)
    args = parser.parse_args(argv)
    spec = SMOKE if args.smoke else FULL
    work_target = args.work_s if args.work_s is not None else (0.5 if args.smoke else 300.0)
    n = args.slots
    if args.budget_mb is None:
        args.budget_mb = n * bl.SLOT_MB

    from insarflow.tasks.topsstack.dag import build_dag, critical_path
    from insarflow.tasks.topsstack.runfiles import parse_run_files

    bl.header("bench_scheduling: sequential vs run-file barriers vs DAG executor")
    with bl.scratch_dir("scheduling") as root:
        t0 = time.perf_counter()
        stack = bl.make_stack(root, spec)
        lines = parse_run_files(stack.stack_dir)
        dag = build_dag(lines)
        real = bl.durations(lines, spec.n_bursts, 1.0)
        scale = work_target / sum(real.values())
        sleeps = {k: v * scale for k, v in real.items()}
        mem = bl.memory_mb(lines, spec.n_bursts)
        bl.write_plan(stack, lines, sleeps, mem, args.memory_divisor)
        print(
            f"   stack: {spec.describe()}: {len(lines)} lines in "
            f"{len(bl.run_files(stack))} run files (generated in {time.perf_counter() - t0:.1f} s)"
        )
        print(
            f"   cost model: {sum(real.values()) / 3600:.1f} h of real work scaled by "
            f"{scale:.2e} to {work_target:.0f} s of sleeps; N = {n} slots; budget "
            f"{args.budget_mb} MB (stand-ins allocate 1/{args.memory_divisor:g} of estimates)"
        )

        bl.reset_run(stack)
        wall_a = bl.run_bash_files(stack, bl.run_files(stack), "sequential")
        occ_a = bl.occupancy(bl.read_records(stack))

        bl.reset_run(stack)
        wall_b = bl.run_bash_files(stack, bl.barrier_scripts(stack, lines, n), "barriers")
        occ_b = bl.occupancy(bl.read_records(stack))

        bl.reset_run(stack)
        wall_d = bl.run_plain_dag(stack, lines, dag, slots=n, budget_mb=args.budget_mb)
        occ_d = bl.occupancy(bl.read_records(stack))

        bl.reset_run(stack)
        with bl.prefect_api(args.prefect_api):
            wall_c, report = bl.run_executor(stack, slots=n, budget_mb=args.budget_mb)
        records_c = bl.read_records(stack)
        occ_c = bl.occupancy(records_c)
        if len(report.ran) != len(lines) or occ_c.lines != len(lines):
            raise RuntimeError(
                f"the executor ran {len(report.ran)} of {len(lines)} lines "
                f"({occ_c.lines} records); see {stack.log_dir}"
            )

        measured = {k: r.duration_s for k, r in report.results.items()}
        work = sum(measured.values())
        _, cp = critical_path(dag, measured)
        mem_time = sum(measured[k] * mem[k] for k in measured)
        bound = max(cp, work / n)
        bound_mem = max(bound, mem_time / args.budget_mb)
        _, cp_model = critical_path(dag, sleeps)
        latency = dispatch_latency(records_c, dag)

    print()
    bl.table(
        [
            ["(a) sequential bash run_XX", bl.fmt_s(wall_a), bl.ratio(wall_a, wall_c)],
            [f"(b) run-file barriers, {n} at a time", bl.fmt_s(wall_b), bl.ratio(wall_b, wall_c)],
            [f"(c) DAG executor, Prefect + Dask, {n} slots", bl.fmt_s(wall_c), "1.00x"],
            ["    lines' own span in (c)", bl.fmt_s(occ_c.span_s), bl.ratio(occ_c.span_s, wall_c)],
            [f"(d) (c)'s policy on {n} plain threads", bl.fmt_s(wall_d), bl.ratio(wall_d, wall_c)],
            ["lower bound max(CP, work/N)", bl.fmt_s(bound), bl.ratio(bound, wall_c)],
            ["  + memory: sum(mem x t) / budget", bl.fmt_s(bound_mem), bl.ratio(bound_mem, wall_c)],
        ],
        ["execution", "wall", "vs (c)"],
    )
    print(
        f"   measured in (c): total work {work:.2f} s (model {sum(sleeps.values()):.2f} s; the "
        f"rest is process start-up), critical path {cp:.2f} s (model {cp_model:.2f} s), "
        f"work/N {work / n:.2f} s, memory x time / budget {mem_time / args.budget_mb:.2f} s"
    )
    if latency:
        lat = sorted(latency)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(
            f"   start delay in (c) (line start - end of the last line it needs; waiting for a "
            f"free slot included): median {statistics.median(lat) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms"
        )
    print()
    bl.table(
        [
            [
                name,
                f"{occ.peak_mb}",
                f"{occ.peak_mb / args.budget_mb:.2f}",
                f"{occ.peak_lines}",
                f"{occ.mean_mb / args.budget_mb:.2f}",
            ]
            for name, occ in (
                ("(a) sequential", occ_a),
                ("(b) barriers", occ_b),
                ("(c) DAG executor", occ_c),
                ("(d) DAG, plain threads", occ_d),
            )
        ],
        ["memory (estimates, real MB)", "peak MB", "peak/budget", "peak lines", "mean/budget"],
    )
    print()
    bl.figure("scheduling.sequential_s", f"{wall_a:.2f}")
    bl.figure("scheduling.barriers_s", f"{wall_b:.2f}")
    bl.figure("scheduling.dag_s", f"{wall_c:.2f}")
    bl.figure("scheduling.dag_plain_threads_s", f"{wall_d:.2f}")
    bl.figure("scheduling.a_over_c", f"{wall_a / wall_c:.2f}")
    bl.figure("scheduling.b_over_c", f"{wall_b / wall_c:.2f}")
    bl.figure("scheduling.c_over_lower_bound", f"{wall_c / bound:.2f}")
    bl.figure("scheduling.c_over_memory_bound", f"{wall_c / bound_mem:.2f}")
    bl.figure("scheduling.d_over_lower_bound", f"{wall_d / bound:.2f}")
    bl.figure("scheduling.b_over_d", f"{wall_b / wall_d:.2f}")
    bl.figure(
        "scheduling.dag_peak_reservation",
        f"{occ_c.peak_mb} MB of {args.budget_mb} MB "
        f"({'never above' if occ_c.peak_mb <= args.budget_mb else 'ABOVE'} the budget)",
    )
    bl.figure("scheduling.dag_utilisation", f"{occ_c.mean_mb / args.budget_mb:.2f}")
    bl.figure("scheduling.barriers_peak_estimate", f"{occ_b.peak_mb} MB")
    return 0 if max(occ_c.peak_mb, occ_d.peak_mb) <= args.budget_mb else 1


if __name__ == "__main__":
    sys.exit(main())
