"""Adding one date to a processed stack vs processing the whole stack again.

A 30-date stack (3 connections, 3 swaths x 9 bursts, NESD; smoke: 2 dates, 1 swath x 2
bursts, geometry coregistration) is processed by the DAG executor
(``insarflow.flows.topsstack.topsstack_flow``) with the sleeping stand-ins and cost model of
``bench_scheduling`` (``benchlib``; not the simulator's real steps).
Then one acquisition is added: the old run files are archived
(``insarflow.tasks.topsstack.stack_sentinel.prepare_stack_dir``) and the simulator's
``stackSentinel.py`` runs again; ``coreg_secondarys/`` exists, so it writes update-mode run files
(the new date and the last 2 x num_overlap_connections coregistered dates), and the executor runs
them in the same stack directory, skipping lines whose completion markers are still valid. For
comparison the 31-date stack is processed from scratch in a fresh directory.

Figures: lines in the run files, lines executed, lines skipped, and wall time of the update vs
the full 31-date run.

The MintPy and products stages (``--part mintpy``) are measured on synthetic topsStack outputs
of N + 1 dates (``tests/sbas/synthetic.py``, real ISCE2 file formats, 3 connections; the real
reference XML comes from the fixtures, ``../shared/fixtures`` or ``INSARFLOW_FIXTURES``): the
stages run on the first N dates, then the last date's interferograms arrive and the stages
run again (the update: MintPy's stack file appended, the zarr store extended), against both
stages on all N + 1 dates in a fresh work directory (the full run). N is 30 and 60
(``--mintpy-dates``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

REPO = Path(__file__).resolve().parent.parent

FULL = bl.StackSpec(n_dates=30, connections=3, swaths=(1, 2, 3), bursts_per_swath=9)
# Geometry coregistration re-processes only num_connections dates, so 2 dates can be updated.
SMOKE = bl.StackSpec(
    n_dates=2, connections=1, swaths=(1,), bursts_per_swath=2, coregistration="geometry"
)


def execute(
    stack: bl.BenchStack, scale: float, slots: int, budget_mb: int, divisor: float
) -> tuple[int, Any, float]:
    """Plan the stack's current run files with the cost model and run the executor."""
    from insarflow.tasks.topsstack.runfiles import parse_run_files

    lines = parse_run_files(stack.stack_dir)
    n_bursts = stack.spec.n_bursts
    bl.write_plan(
        stack,
        lines,
        bl.durations(lines, n_bursts, scale),
        bl.memory_mb(lines, n_bursts),
        divisor,
    )
    stack.record_file.unlink(missing_ok=True)
    wall, report = bl.run_executor(stack, slots=slots, budget_mb=budget_mb)
    return len(lines), report, wall


def _stack_config(work_dir: Path) -> Any:
    """The stage settings of a stack in ``work_dir``: MintPy on one process, no figures."""
    from datetime import date

    from insarflow.config import (
        AcquisitionConfig,
        AreaConfig,
        ComputeConfig,
        MintpyConfig,
        StackConfig,
    )

    return StackConfig(
        name="bench",
        work_dir=work_dir,
        engine="simulator",
        area=AreaConfig(bbox=(57.5, 57.7, 14.8, 15.0)),
        acquisition=AcquisitionConfig(track=1, start=date(2021, 4, 1)),
        mintpy=MintpyConfig(max_memory_gb=2.0, plot=False),
        compute=ComputeConfig(workers=1, threads_per_worker=1, memory_gb=4.0),
    )


def _stages(config: Any) -> tuple[float, float]:
    """Wall seconds of the MintPy stage and of the products stage."""
    from insarflow.flows.stages import products_stage, sbas_stage

    t0 = time.perf_counter()
    sbas_stage(config)
    t1 = time.perf_counter()
    products_stage(config, None, None)
    return t1 - t0, time.perf_counter() - t1


def _step_seconds(config: Any) -> dict[str, float]:
    """Seconds of each MintPy step in the latest MintPy stage of the stack's run history."""
    from insarflow.flows.stages import history_file
    from insarflow.tasks.report import read_history

    records = [r for r in read_history(history_file(config)) if r.stage == "mintpy"]
    latest = [r for r in records if r.run_id == records[-1].run_id]
    return {s.name: s.duration_s for r in latest for s in r.steps}


def mintpy_update(root: Path, n_dates: int, length: int, width: int) -> dict[str, float]:
    """Update vs full run of the MintPy and products stages for one date added to n_dates."""
    sys.path.insert(0, str(REPO))
    from tests.sbas.synthetic import make_topsstack

    fixtures = Path(os.environ.get("INSARFLOW_FIXTURES", REPO.parent / "shared" / "fixtures"))
    incremental = root / f"update-{n_dates}"
    stack = make_topsstack(
        incremental, fixtures, n_dates=n_dates + 1, connections=3, length=length, width=width
    )
    ifgs = stack.stack_dir / "merged" / "interferograms"
    held = root / f"held-{n_dates}"
    held.mkdir()
    new = [p for p in stack.pairs if p.endswith(stack.dates[-1])]
    for pair in new:
        (ifgs / pair).rename(held / pair)
    config = _stack_config(incremental)
    _stages(config)  # the processed stack
    for pair in new:  # the update: the new date's interferograms arrive
        (held / pair).rename(ifgs / pair)
    update = _stages(config)
    update_steps = _step_seconds(config)
    full_dir = root / f"full-{n_dates}"
    full_dir.mkdir()
    shutil.copytree(stack.stack_dir, full_dir / "stack")
    full_config = _stack_config(full_dir)
    full = _stages(full_config)
    full_steps = _step_seconds(full_config)
    print(f"\n   MintPy steps, {n_dates} + 1 dates (update / full run, seconds of each process):")
    bl.table(
        [
            [step, bl.fmt_s(update_steps.get(step, 0.0)), bl.fmt_s(seconds)]
            for step, seconds in full_steps.items()
        ],
        ["step", "update", "full run"],
    )
    return {
        "mintpy_s": update[0],
        "products_s": update[1],
        "full_mintpy_s": full[0],
        "full_products_s": full[1],
        "pairs": len(stack.pairs),
    }


def main_mintpy(sizes: Sequence[int], length: int, width: int) -> None:
    bl.header("bench_update: MintPy and products stages, one date added vs a full run")
    rows, results = [], {}
    with bl.scratch_dir("update-mintpy") as root:
        for n in sizes:
            r = results[n] = mintpy_update(root, n, length, width)
            both = r["mintpy_s"] + r["products_s"]
            full = r["full_mintpy_s"] + r["full_products_s"]
            rows.append(
                [
                    f"{n} + 1 dates, {int(r['pairs'])} pairs, {length} x {width} px",
                    f"{bl.fmt_s(r['mintpy_s'])} / {bl.fmt_s(r['full_mintpy_s'])}",
                    bl.ratio(r["mintpy_s"], r["full_mintpy_s"]),
                    f"{bl.fmt_s(r['products_s'])} / {bl.fmt_s(r['full_products_s'])}",
                    bl.ratio(r["products_s"], r["full_products_s"]),
                    bl.ratio(both, full),
                ]
            )
    print()
    bl.table(
        rows,
        ["stack", "MintPy update / full", "ratio", "products update / full", "ratio", "both"],
    )
    print()
    for n, r in results.items():
        bl.figure(f"update.mintpy_ratio_{n}", f"{r['mintpy_s'] / r['full_mintpy_s']:.3f}")
        bl.figure(f"update.products_ratio_{n}", f"{r['products_s'] / r['full_products_s']:.3f}")
        both = (r["mintpy_s"] + r["products_s"]) / (r["full_mintpy_s"] + r["full_products_s"])
        bl.figure(f"update.stages_ratio_{n}", f"{both:.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="2 (+1) dates, 1 swath x 2 bursts, geometry"
    )
    parser.add_argument("--slots", type=int, default=4, help="executor slots (default 4)")
    parser.add_argument(
        "--budget-mb", type=int, default=None, help=f"memory budget (default N x {bl.SLOT_MB})"
    )
    parser.add_argument(
        "--work-s",
        type=float,
        default=None,
        help="sum of the line durations of the initial stack in seconds (default 300; smoke 0.3)",
    )
    parser.add_argument("--memory-divisor", type=float, default=100.0)
    parser.add_argument(
        "--part",
        choices=("all", "topsstack", "mintpy"),
        default="all",
        help="topsstack: the run-file lines; mintpy: the MintPy and products stages",
    )
    parser.add_argument(
        "--mintpy-dates",
        type=lambda text: [int(n) for n in text.split(",")],
        default=None,
        help="stack sizes N (N + 1 after the update) for --part mintpy (default 30,60; smoke 4)",
    )
    bl.add_prefect_api_argument(parser)
    args = parser.parse_args(argv)
    if args.part in ("all", "mintpy"):
        sizes = args.mintpy_dates or ([4] if args.smoke else [30, 60])
        with bl.prefect_api(args.prefect_api):
            main_mintpy(sizes, *((20, 30) if args.smoke else (150, 200)))
        if args.part == "mintpy":
            return 0
    spec = SMOKE if args.smoke else FULL
    work_target = args.work_s if args.work_s is not None else (0.3 if args.smoke else 300.0)
    if args.budget_mb is None:
        args.budget_mb = args.slots * bl.SLOT_MB
    grown = dataclasses.replace(spec, n_dates=spec.n_dates + 1)
    run = {"slots": args.slots, "budget_mb": args.budget_mb, "divisor": args.memory_divisor}

    from insarflow.tasks.topsstack.runfiles import parse_run_files
    from insarflow.tasks.topsstack.stack_sentinel import prepare_stack_dir

    bl.header("bench_update: add one date to a processed stack vs a full run")
    with bl.scratch_dir("update") as root, bl.prefect_api(args.prefect_api):
        stack = bl.make_stack(root / "incremental", spec)
        lines = parse_run_files(stack.stack_dir)
        scale = work_target / sum(bl.durations(lines, spec.n_bursts, 1.0).values())
        print(
            f"   stack: {spec.describe()}; +1 date; cost model scaled by {scale:.2e}; "
            f"{args.slots} slots, budget {args.budget_mb} MB; stand-ins sleep (no real steps)",
            flush=True,
        )
        n_initial, initial, wall_initial = execute(stack, scale, **run)

        bl.write_acquisitions(stack.root, grown)
        prepare_stack_dir(stack.stack_dir)
        t0 = time.perf_counter()
        bl.run_stack_sentinel(stack.root, grown)
        sentinel_s = time.perf_counter() - t0
        if not (stack.stack_dir / "coreg_secondarys").is_dir():
            raise RuntimeError("coreg_secondarys/ is missing: stackSentinel did not update")
        n_update, update, wall_update = execute(bl.BenchStack(stack.root, grown), scale, **run)

        fresh = bl.make_stack(root / "full", grown)
        n_full, full, wall_full = execute(fresh, scale, **run)

    print()
    bl.table(
        [
            [
                f"initial {spec.n_dates}-date run",
                n_initial,
                len(initial.ran),
                len(initial.skipped),
                bl.fmt_s(wall_initial),
                "",
            ],
            [
                f"update: +1 date ({grown.n_dates} dates)",
                n_update,
                len(update.ran),
                len(update.skipped),
                bl.fmt_s(wall_update),
                bl.ratio(wall_update, wall_full),
            ],
            [
                f"full run, {grown.n_dates} dates from scratch",
                n_full,
                len(full.ran),
                len(full.skipped),
                bl.fmt_s(wall_full),
                "1.00x",
            ],
        ],
        ["execution", "lines", "ran", "skipped", "wall", "vs full"],
    )
    print(f"   update-mode stackSentinel.py took {sentinel_s:.1f} s")
    skipped = Counter(update.results[k].step for k in update.skipped)
    if skipped:
        print(
            "   skipped in the update (completion marker and outputs still valid): "
            + ", ".join(f"{step} {count}" for step, count in sorted(skipped.items()))
        )
    print()
    bl.figure("update.lines_in_update_run_files", str(n_update))
    bl.figure("update.lines_executed", str(len(update.ran)))
    bl.figure("update.lines_full_run", str(len(full.ran)))
    bl.figure("update.lines_ratio", f"{len(update.ran) / len(full.ran):.3f}")
    bl.figure("update.wall_s", f"{wall_update:.2f}")
    bl.figure("update.full_wall_s", f"{wall_full:.2f}")
    bl.figure("update.wall_ratio", f"{wall_update / wall_full:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
