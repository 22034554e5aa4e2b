"""Lines per minute of the simulator stack in SLURM worker jobs vs local clusters of the same size.

A single-node SLURM runs on 127.0.0.1 for the benchmark (``tests/support/slurm.py``: root and
the Debian packages slurm-wlm and munge; without them the script says so and exits). The
simulator's ``stackSentinel.py`` writes the run files of a stack (12 dates, 2 connections,
1 swath x 3 bursts, geometry coregistration; smoke: 3 dates, 1 swath x 2 bursts) and the
simulator's own steps run each line (real files, not the sleeping stand-ins of the other
benchmarks). The same stack runs four times, each in a fresh directory, through the
topsStack flow (``insarflow.flows.topsstack.topsstack_flow``): ``compute.jobqueue`` SLURM with
1 and 2 worker jobs (2 cores, 2 GB each, ``min_jobs`` = ``jobs``), and the local cluster with 1
and 2 workers of 2 threads and the same ``MEMORY_MB``. The wall time is the flow call's:
SLURM's includes submitting the jobs and their workers joining, the local one starting its
workers.

Figures: lines per minute of each run, and SLURM over local for each size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

FULL = bl.StackSpec(
    n_dates=12, connections=2, swaths=(1,), bursts_per_swath=3, coregistration="geometry"
)
SMOKE = bl.StackSpec(
    n_dates=3, connections=1, swaths=(1,), bursts_per_swath=2, coregistration="geometry"
)
CORES = 2
JOB_MEMORY_GB = 2


def execute(root: Path, spec: bl.StackSpec, jobs: int, on_slurm: bool) -> tuple[int, float]:
    """Lines run and wall time of one execution of a fresh copy of the stack."""
    from insarflow.compute import memory_budget_mb, task_runner_kwargs
    from insarflow.config import ComputeConfig, JobqueueConfig
    from insarflow.flows.topsstack import topsstack_flow
    from insarflow.simulator.steps import install_simulator_bin

    bl.write_acquisitions(root, spec)
    bl.run_stack_sentinel(root, spec, "-n", " ".join(map(str, spec.swaths)))
    simulator_bin = install_simulator_bin(root / "bin")
    compute = ComputeConfig(
        jobqueue=JobqueueConfig(
            kind="slurm",
            cores=CORES,
            memory_gb=JOB_MEMORY_GB,
            walltime="01:00:00",
            jobs=jobs,
            min_jobs=jobs,
        )
    )
    budget_mb = memory_budget_mb(compute)  # the same MEMORY_MB per worker in both cases
    start = time.perf_counter()
    report = topsstack_flow(
        stack_dir=root / "stack",
        log_dir=root / "logs",
        memory_budget_mb=budget_mb,
        n_bursts=spec.n_bursts,
        range_looks=bl.RANGE_LOOKS,
        azimuth_looks=bl.AZIMUTH_LOOKS,
        n_workers=jobs,
        threads_per_worker=CORES,
        extra_path=[simulator_bin],
        cluster=task_runner_kwargs(compute, log_dir=root / "jobs") if on_slurm else None,
    )
    wall = time.perf_counter() - start
    return len(report.ran), wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="3 dates, 1 swath x 2 bursts")
    bl.add_prefect_api_argument(parser)
    args = parser.parse_args(argv)
    spec = SMOKE if args.smoke else FULL

    from tests.support.slurm import single_node_slurm, unavailable

    bl.header("bench_slurm: the simulator stack in SLURM worker jobs vs a local cluster")
    reason = unavailable()
    if reason:
        print(f"   no SLURM here: {reason}")
        return 0
    print(
        f"   stack: {spec.describe()}; the simulator's steps; workers of {CORES} threads and "
        f"{JOB_MEMORY_GB} GB",
        flush=True,
    )
    rows: list[list[Any]] = []
    rates: dict[tuple[str, int], float] = {}
    with (
        bl.scratch_dir("slurm") as root,
        bl.prefect_api(args.prefect_api),
        single_node_slurm(root / "slurm") as slurm,
    ):
        saved = {key: os.environ.get(key) for key in slurm.env()}
        os.environ.update(slurm.env())
        try:
            for jobs in (1, 2):
                for where in ("local", "slurm"):
                    lines, wall = execute(root / f"{where}-{jobs}", spec, jobs, where == "slurm")
                    rates[(where, jobs)] = lines / wall * 60
                    rows.append([f"{where}, {jobs} worker(s)", lines, bl.fmt_s(wall)])
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    print()
    bl.table(
        [[*row, f"{rates[(row[0].split(',')[0], int(row[0].split()[1]))]:.1f}"] for row in rows],
        ["execution", "lines", "wall", "lines/min"],
    )
    print()
    for (where, jobs), rate in sorted(rates.items()):
        bl.figure(f"slurm.{where}_{jobs}_lines_per_min", f"{rate:.1f}")
    for jobs in (1, 2):
        bl.figure(
            f"slurm.slurm_over_local_{jobs}",
            f"{rates[('slurm', jobs)] / rates[('local', jobs)]:.2f}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
