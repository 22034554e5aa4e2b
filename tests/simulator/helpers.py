"""Helpers of the simulator tests: build a small synthetic stack and run its lines."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from insarflow.simulator.acquisition import dem_name, make_synthetic_acquisitions
from insarflow.simulator.scene import SceneSpec
from insarflow.simulator.steps import install_simulator_bin, run_script
from insarflow.tasks.shell import CommandResult, run_command
from insarflow.tasks.topsstack.executor import ExecutionReport


def small_spec(count: int = 4, **overrides: Any) -> SceneSpec:
    """A quick scene: ``count`` dates, 24 x 30 pixels, two bursts per swath, coarse DEM."""
    values: dict[str, Any] = {
        "length": 24,
        "width": 30,
        "bursts_per_swath": 2,
        "dem_spacing_arcsec": 30.0,
        "seed": 7,
        "unwrap_error_fraction": 0.3,
    }
    values.update(overrides)
    return SceneSpec.regular(date(2025, 1, 1), count, 12, **values)


@dataclass(frozen=True)
class SimStack:
    """Work directory layout of a simulated stack (as the project lays it out)."""

    root: Path
    spec: SceneSpec
    bin: Path

    @property
    def stack(self) -> Path:
        return self.root / "stack"

    @property
    def dem(self) -> Path:
        return self.root / "dem" / dem_name(self.spec)

    def stack_sentinel_args(self, *extra: str) -> list[str]:
        return [
            "-s", str(self.root / "SLC"),
            "-w", str(self.stack),
            "-o", str(self.root / "orbits"),
            "-a", str(self.root / "aux"),
            "-d", str(self.dem),
            *extra,
        ]  # fmt: skip


def prepare(root: Path, spec: SceneSpec) -> SimStack:
    """Synthetic SLCs/orbits/DEM, the stand-in scripts, and empty stack/aux directories."""
    make_synthetic_acquisitions(root / "SLC", root / "orbits", root / "dem", spec)
    sim = SimStack(root, spec, install_simulator_bin(root / "bin"))
    sim.stack.mkdir(parents=True, exist_ok=True)
    (root / "aux").mkdir(exist_ok=True)
    return sim


def run_file_lines(stack: Path) -> Iterator[tuple[str, list[str]]]:
    """(run file name, argv) of every command line, in run-file order."""
    for run_file in sorted((stack / "run_files").iterdir()):
        for line in run_file.read_text().splitlines():
            text = line.strip().removesuffix("&").strip()
            if text and text != "wait":
                yield run_file.name, shlex.split(text)


def stack_sentinel_subprocess(sim: SimStack, *extra: str, check: bool = True) -> CommandResult:
    return run_command(
        ["stackSentinel.py", *sim.stack_sentinel_args(*extra)],
        log_path=sim.root / "logs" / "stackSentinel.log",
        cwd=sim.stack,
        extra_path=[sim.bin],
        check=check,
    )


def stack_sentinel_in_process(sim: SimStack, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    with monkeypatch.context() as m:
        m.chdir(sim.stack)
        return run_script("stackSentinel.py", sim.stack_sentinel_args(*extra))


def execute_subprocess(sim: SimStack) -> list[CommandResult]:
    """Every line through the project's command runner, with the stand-ins on PATH."""
    results = []
    for name, argv in run_file_lines(sim.stack):
        results.append(
            run_command(
                argv,
                log_path=sim.root / "logs" / f"{name}.log",
                cwd=sim.stack,
                extra_path=[sim.bin],
            )
        )
    return results


def execute_in_process(sim: SimStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line run inside this process (same code as the stand-in scripts)."""
    with monkeypatch.context() as m:
        m.chdir(sim.stack)
        for name, argv in run_file_lines(sim.stack):
            rc = run_script(Path(argv[0]).name, argv[1:])
            assert rc == 0, f"{name}: {shlex.join(argv)} failed"


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (relative path -> digest)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def small_stack(root: Path) -> SimStack:
    """3 dates, one swath of 2 bursts, geometry coregistration: 27 run-file lines."""
    sim = prepare(root, small_spec(3))
    stack_sentinel_subprocess(sim, "-C", "geometry", "-c", "1", "-n", "1")
    return sim


def run_stack(sim: SimStack, logs: Path, extra: list[Path]) -> ExecutionReport:
    """The topsStack flow on ``sim`` (one worker of 2 threads, the model's memory estimates),
    with ``extra`` before the stand-ins on PATH."""
    from insarflow.flows.topsstack import topsstack_flow

    return topsstack_flow(
        stack_dir=sim.stack,
        log_dir=logs,
        memory_budget_mb=8000,
        n_bursts=2,
        range_looks=9,
        azimuth_looks=3,
        n_workers=1,
        threads_per_worker=2,
        extra_path=[*extra, sim.bin],
        learn_memory=False,  # the retry's reservation is checked against the model's estimate
    )
