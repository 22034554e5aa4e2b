"""Memory estimates against measured peaks, per topsStack step, before and after learning.

Reads a finished run's work directory (``stack/run_files``, the lines' logs under ``logs/`` and
their completion markers; the pieces of lines split by swath too): each line's reservation
(``INSARFLOW_LINE_MEMORY_MB`` in its log header: the model's estimate when the run did not
learn, ``compute.learn_memory: false`` as bench_split runs it; a note says when it did), its
measured peak RSS and when it finished. Then replays
:class:`~insarflow.tasks.topsstack.learned_memory.LearnedMemory` in that order: each line is
reserved from what the lines of its step that finished before it taught (the first line of a
step keeps the model's estimate), exactly as the engine does.

Printed per step: lines, peak RSS (largest), estimate / peak before learning (the model) and
after (learned; lines after the first only), and the sum of all reservations before vs after.
A ratio below 1 is a line reserved below what it used.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

from insarflow.tasks.topsstack.dag import build_dag
from insarflow.tasks.topsstack.executor import ENV_MEMORY_MB, log_path_for, marker_path
from insarflow.tasks.topsstack.learned_memory import LEARNED_FILE, LearnedMemory
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files
from insarflow.tasks.topsstack.swath_pieces import split_by_swath


@dataclass(frozen=True)
class Measured:
    line: RunLine
    reserved_mb: int
    peak_mb: float
    finished_at: str


def measured_lines(work_dir: Path) -> list[Measured]:
    """The lines of ``work_dir`` that ran, in the order they finished."""
    stack_dir, log_dir = work_dir / "stack", work_dir / "logs"
    out: list[Measured] = []
    lines = parse_run_files(stack_dir)
    pieces = [ln for ln in split_by_swath(lines, build_dag(lines))[0] if ln.swath is not None]
    for line in [*lines, *pieces]:  # whole lines, and the swath pieces of a split run
        marker, log = marker_path(line, stack_dir), log_path_for(line, log_dir)
        if not (marker.is_file() and log.is_file()):
            continue
        done = json.loads(marker.read_text())
        reserved = re.search(rf"\b{ENV_MEMORY_MB}=(\d+)", log.read_text())
        if reserved is None or not done.get("peak_rss_mb"):
            continue
        out.append(
            Measured(line, int(reserved.group(1)), float(done["peak_rss_mb"]), done["finished_at"])
        )
    return sorted(out, key=lambda m: m.finished_at)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path, help="work directory of a finished run")
    args = parser.parse_args(argv)
    lines = measured_lines(args.work_dir)
    if not lines:
        parser.error(f"no finished line with a measured peak under {args.work_dir}")
    bl.header("bench_memory: topsStack memory estimate / measured peak, before and after learning")
    print(f"   {args.work_dir}: {len(lines)} lines with a measured peak")
    if (args.work_dir / "stack" / LEARNED_FILE).is_file():
        print(
            "   note: this run learned (compute.learn_memory), so a line's reservation after "
            "the first of its step was already learned: 'model / peak' is what it reserved"
        )
    learned = LearnedMemory()
    after: dict[str, list[float]] = {}
    before: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}
    total_before = total_after = 0
    for m in lines:
        step = f"{m.line.step_number:02d} {m.line.step} ({m.line.key_kind})"
        estimate = learned.estimate_mb(m.line.step, m.line.key_kind, m.reserved_mb, key=m.line.key)
        before.setdefault(step, []).append(m.reserved_mb / m.peak_mb)
        if step in peaks:  # a line after the first of its step
            after.setdefault(step, []).append(estimate / m.peak_mb)
        peaks[step] = max(peaks.get(step, 0.0), m.peak_mb)
        total_before += m.reserved_mb
        total_after += estimate
        learned.observe(m.line.step, m.line.key_kind, m.reserved_mb, m.peak_mb, key=m.line.key)

    def span(ratios: list[float]) -> str:
        return f"{min(ratios):.1f}-{max(ratios):.1f}" if ratios else "-"

    print()
    bl.table(
        [
            [
                step,
                str(len(before[step])),
                f"{peaks[step]:.0f}",
                span(before[step]),
                span(after.get(step, [])),
            ]
            for step in sorted(before)
        ],
        ["step (key kind)", "lines", "peak MB", "model / peak", "learned / peak"],
    )
    print()
    every_after = [r for ratios in after.values() for r in ratios]
    bl.figure("memory.lines", str(len(lines)))
    bl.figure(
        "memory.model_over_peak_median", f"{_median([r for v in before.values() for r in v]):.2f}"
    )
    bl.figure("memory.learned_over_peak_min", f"{min(every_after):.2f}" if every_after else "-")
    bl.figure(
        "memory.learned_over_peak_median", f"{_median(every_after):.2f}" if every_after else "-"
    )
    bl.figure("memory.reserved_sum_ratio", f"{total_after / total_before:.2f}")
    return 0


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


if __name__ == "__main__":
    sys.exit(main())
