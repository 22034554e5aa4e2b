"""Kill the whole flow at seeded random points, rerun it, and lose nothing.

Each kill is a SIGKILL to the flow's process group at a point drawn from a seeded RNG:
during acquisition, while stackSentinel writes run files, in the middle of a topsStack
line (a line's command has started and not finished), in the middle of a MintPy step, or
while products are written. After the rerun:

- it completes;
- no topsStack line that had a valid completion marker at the kill executes again (its
  marker is unchanged and its log ``logs/<step>/<key>.log`` gained no command header);
- the products equal those of an uninterrupted run, value for value
  (:func:`tests.reliability.helpers.product_digest`);
- no temporary or half-written output is left.

Smoke (default): one stack killed three times in a row (mid-topsStack line, mid-MintPy,
mid-export), then run to completion. Full sweep (``INSARFLOW_RELIABILITY_FULL=1``):
``INSARFLOW_RELIABILITY_KILLS`` (default 10) independent stacks, each killed once at a
seeded point in one of the five phases and then run to completion.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from insarflow.config import StackConfig
from insarflow.tasks.sbas import mintpy_steps
from tests.reliability.conftest import ReferenceRun, ReferenceRunner
from tests.reliability.helpers import (
    FIGURES,
    DoneLines,
    FlowProcess,
    done_lines,
    leftovers,
    marker_count,
    product_digest,
    reexecuted,
    running_line_logs,
    stage_of,
    start_flow,
    tiny_config,
    wait_until,
    write_config,
)

pytestmark = [
    pytest.mark.e2e,
    # rioxarray's transform() goes through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:affine"),
]

PHASES = ("acquire", "stackSentinel", "topsstack", "mintpy", "export")
SMOKE_SEED = 2024
SMOKE_PHASES = ("topsstack", "mintpy", "export")
N_LINES = 57  # run-file lines of the tiny stack (checked against the reference run)


@dataclass(frozen=True)
class Kill:
    """Where a kill landed: the phase aimed at, the probe, and the stage observed after."""

    phase: str
    probe: str
    observed: str
    done: DoneLines


def kill_in(
    phase: str, flow: FlowProcess, config: StackConfig, rng: random.Random, n_lines: int
) -> Kill:
    """Wait for the probe of ``phase`` (drawn from ``rng``), SIGKILL the flow's group."""
    paths = config.paths
    delay = 0.0
    if phase == "acquire":
        probe = "first SAFE zip written"
        wait_until(lambda: any(paths.slc.glob("*")), flow, probe)
        delay = rng.uniform(0.0, 0.3)
    elif phase == "stackSentinel":
        probe = "stackSentinel.py has written a run file"
        run_files = paths.stack / "run_files"
        wait_until(lambda: run_files.is_dir() and any(run_files.iterdir()), flow, probe)
    elif phase == "topsstack":
        target = marker_count(paths.stack) + rng.randint(1, n_lines - 2)
        probe = f"{target} lines done and one running"
        wait_until(
            lambda: marker_count(paths.stack) >= target and bool(running_line_logs(paths.logs)),
            flow,
            probe,
        )
    elif phase == "mintpy":
        step = rng.choice(mintpy_steps()[:-1])
        running = paths.mintpy / ".insarflow" / f"{step}.running.json"
        delay = rng.uniform(0.0, 0.8)
        probe = f"MintPy step {step} running, +{delay:.2f} s"
        wait_until(running.is_file, flow, probe)
    elif phase == "export":
        what = rng.choice(("zarr", "geotiff", "figures"))
        products = paths.products
        if what == "zarr":
            probe = "zarr store being written"
            wait_until(lambda: any(products.glob("timeseries.zarr.tmp-*")), flow, probe)
        elif what == "geotiff":
            delay = rng.uniform(0.0, 0.2)
            probe = f"zarr store in place, +{delay:.2f} s"
            wait_until((products / "timeseries.zarr").is_dir, flow, probe)
        else:
            delay = rng.uniform(0.0, 0.5)
            probe = f"figures started, +{delay:.2f} s"
            wait_until((products / "figures").is_dir, flow, probe)
    else:  # pragma: no cover - PHASES lists every phase
        raise ValueError(phase)
    if delay:
        wait_until(_after(delay), flow, probe)
    flow.kill_group()
    FIGURES["kills"] += 1
    return Kill(phase, probe, stage_of(config), done_lines(config))


def _after(delay: float) -> Callable[[], bool]:
    until = time.monotonic() + delay
    return lambda: time.monotonic() >= until


def check_resumed(config: StackConfig, kills: list[Kill], reference: ReferenceRun) -> None:
    """What every completed rerun must satisfy."""
    for kill in kills:
        again = reexecuted(kill.done, config)
        assert again == [], f"lines done before the kill ({kill.probe}) ran again: {again}"
    assert leftovers(config) == []
    digest = product_digest(config.paths.root)
    differing = sorted(k for k in reference.digest if digest.get(k) != reference.digest[k])
    assert differing == [], f"products differ from the uninterrupted run in {differing}"
    assert digest.keys() == reference.digest.keys()
    FIGURES["kills survived"] += len(kills)


def test_three_kills_in_a_row_then_completion(
    tmp_path: Path, flow_env: dict[str, str], reference_runner: ReferenceRunner
) -> None:
    rng = random.Random(SMOKE_SEED)
    config = tiny_config(tmp_path / "work")
    config_path = write_config(config, tmp_path / "stack.yaml")
    kills: list[Kill] = []
    for run, phase in enumerate(SMOKE_PHASES, start=1):
        flow = start_flow(config_path, flow_env, tmp_path / f"run{run}.log")
        kill = kill_in(phase, flow, config, rng, N_LINES)
        assert kill.observed == {"export": "products"}.get(phase, phase), kill
        kills.append(kill)
    final = start_flow(config_path, flow_env, tmp_path / "final.log")
    assert final.wait() == 0, final.tail()
    FIGURES["reruns completed"] += 1
    reference_run = reference_runner.result()
    assert reference_run.n_lines == N_LINES
    check_resumed(config, kills, reference_run)
    # each kill found more lines done than the one before it, none lost on the way
    counts = [len(k.done.lines) for k in kills]
    assert counts == sorted(counts) and counts[-1] == reference_run.n_lines, counts


def _full_seeds() -> list[int]:
    return list(range(int(os.environ.get("INSARFLOW_RELIABILITY_KILLS", "10"))))


@pytest.mark.slow
@pytest.mark.parametrize("seed", _full_seeds())
def test_seeded_kill_then_rerun_completes(
    seed: int, tmp_path: Path, flow_env: dict[str, str], reference_run: ReferenceRun
) -> None:
    rng = random.Random(seed)
    phase = PHASES[seed % len(PHASES)]
    config = tiny_config(tmp_path / "work")
    config_path = write_config(config, tmp_path / "stack.yaml")
    flow = start_flow(config_path, flow_env, tmp_path / "killed.log")
    kill = kill_in(phase, flow, config, rng, reference_run.n_lines)
    FIGURES[f"kills in stage {kill.observed}"] += 1
    rerun = start_flow(config_path, flow_env, tmp_path / "rerun.log")
    assert rerun.wait() == 0, f"rerun after a kill ({kill}) failed:\n{rerun.tail()}"
    FIGURES["reruns completed"] += 1
    check_resumed(config, [kill], reference_run)
