"""The memory model learned from the stack, on the real Prefect engine and a real Dask cluster.

The stand-in lines of ``test_executor.py`` hold a known amount of written memory; one worker
thread runs them one after another, so every line of a step after its first is reserved from
what the earlier ones measured.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from insarflow.tasks.topsstack.executor import line_memory_mb, log_path_for, marker_path
from insarflow.tasks.topsstack.learned_memory import (
    FLOOR_MB,
    LEARNED_FILE,
    MARGIN,
    LearnedMemory,
)

from .test_executor import AZIMUTH_LOOKS, N_BURSTS, RANGE_LOOKS, Stack, make_stack

STEP = "fullBurst_resample"
KEY = "20210413"  # a date
ALLOCATE_MB = 300


def model_mb(stack: Stack, line_id: str) -> int:
    return line_memory_mb(
        stack.line(line_id), n_bursts=N_BURSTS, range_looks=RANGE_LOOKS, azimuth_looks=AZIMUTH_LOOKS
    )


def peak_rss_mb(stack: Stack, line_id: str) -> float:
    log = log_path_for(stack.line(line_id), stack.log_dir).read_text()
    return float(re.findall(r"peak_rss=([0-9.]+)MB", log)[-1])


def test_estimates_never_fall_below_what_was_measured(tmp_path: Path) -> None:
    learned = LearnedMemory()
    assert learned.estimate_mb(STEP, "date", 2000, key=KEY) == 2000  # nothing learned: the model
    assert learned.observe(STEP, "date", 2000, 400.0, key=KEY)
    assert not learned.observe(
        STEP, "date", 2000, 300.0, key=KEY
    )  # a smaller ratio changes nothing
    assert learned.estimate_mb(STEP, "date", 2000, key="20210425") == math.ceil(
        400 * MARGIN
    )  # any date
    assert learned.estimate_mb(STEP, "date", 4000, key=KEY) == math.ceil(
        800 * MARGIN
    )  # scales like it
    assert learned.estimate_mb(STEP, "pair", 2000, key=KEY) == 2000  # another key kind: not learned
    assert learned.observe("unwrap", "pair", 2000, 5000.0, key=KEY)  # above the model: it grows
    assert learned.estimate_mb("unwrap", "pair", 2000, key=KEY) == 7500
    assert not learned.observe("unwrap", "pair", 2000, 0.0, key=KEY)  # nothing measured
    assert learned.observe("tiny", "date", 2000, 1.0, key=KEY)
    assert learned.estimate_mb("tiny", "date", 2000, key=KEY) == FLOOR_MB
    # geometry layers are different rasters: one layer teaches its own reruns, not the others
    assert learned.observe("merge_reference_secondary_slc", "layer", 300, 225.0, key="lat")
    assert learned.estimate_mb("merge_reference_secondary_slc", "layer", 300, key="lat") == 338
    assert learned.estimate_mb("merge_reference_secondary_slc", "layer", 300, key="hgt") == 300
    learned.save(tmp_path)
    assert LearnedMemory.load(tmp_path) == learned
    (tmp_path / LEARNED_FILE).write_text("{not json")
    assert LearnedMemory.load(tmp_path) == LearnedMemory()  # unreadable: start over


@pytest.fixture(scope="module")
def stack(
    prefect_harness: None, fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Stack:
    stack = make_stack(tmp_path_factory.mktemp("learned"), fixtures_dir)
    step = [ln.line_id for ln in stack.lines if ln.step == STEP]
    # held 4 s: the 0.5 s RSS sampler of a loaded machine sees it
    stack.write_plan(sleeps=dict.fromkeys(step, 4.0), allocate_mb=dict.fromkeys(step, ALLOCATE_MB))
    stack.run(workers=1, threads=1, learn_memory=True)
    return stack


def step_lines(stack: Stack) -> list[str]:
    return [ln.line_id for ln in stack.lines if ln.step == STEP]


def test_later_lines_of_a_step_are_reserved_from_the_earlier_ones(stack: Stack) -> None:
    records = {r["line_id"]: r for r in stack.records()}
    first, *later = sorted(step_lines(stack), key=lambda i: records[i]["start"])
    assert later
    assert records[first]["memory_mb"] == model_mb(stack, first)  # nothing learned yet
    measured = [peak_rss_mb(stack, first)]
    assert measured[0] > 0  # sampled every 0.5 s: up to the allocation, on a busy machine less
    for line_id in later:
        reserved = records[line_id]["memory_mb"]
        assert reserved >= MARGIN * max(measured)  # never below what was measured
        assert reserved < model_mb(stack, line_id)  # the model's constant was far above it
        measured.append(peak_rss_mb(stack, line_id))


def test_a_rerun_starts_from_what_the_stack_learned(stack: Stack) -> None:
    learned = LearnedMemory.load(stack.stack_dir)
    first = step_lines(stack)[0]
    line = stack.line(first)
    expected = learned.estimate_mb(STEP, line.key_kind, model_mb(stack, first), key=line.key)
    assert expected < model_mb(stack, first)
    marker_path(stack.line(first), stack.stack_dir).unlink()
    stack.run(workers=1, threads=1, learn_memory=True)
    record = next(r for r in stack.records() if r["line_id"] == first)
    assert record["memory_mb"] == expected


def test_the_memory_benchmark_replays_a_run(stack: Stack) -> None:
    bench = Path(__file__).parents[2] / "benchmarks" / "bench_memory.py"
    done = subprocess.run(
        [sys.executable, str(bench), str(stack.root)], capture_output=True, text=True, check=True
    )
    figures = dict(re.findall(r"^FIGURE (\S+): (\S+)", done.stdout, re.MULTILINE))
    # the lines that held memory long enough for a peak to be sampled, at least
    assert len(step_lines(stack)) <= int(figures["memory.lines"]) <= len(stack.lines)
    assert f"{STEP} (date)" in done.stdout  # its row in the table
    # Replayed from the same peaks, the learned estimates are those the run reserved.
    assert float(figures["memory.learned_over_peak_median"]) > 0
