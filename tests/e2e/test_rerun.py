"""A rerun of an unchanged, finished stack re-runs nothing: no topsStack line, no MintPy step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from insarflow.config import SimulatorConfig
from insarflow.flows.demo import demo_config
from insarflow.flows.sbas import sbas

pytestmark = [
    pytest.mark.e2e,
    # rasterio/rioxarray transforms go through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]


def _state(work: Path) -> dict[str, object]:
    markers = {
        p.stem: json.loads(p.read_text())["finished_at"]
        for p in (work / "stack" / ".insarflow" / "done").glob("*.json")
    }
    mintpy = {
        str(p.relative_to(work)): p.stat().st_mtime_ns for p in (work / "mintpy").rglob("*.h5")
    }
    return {"markers": markers, "mintpy": mintpy}


def test_rerun_of_a_finished_stack_runs_nothing(tmp_path: Path, prefect_harness: None) -> None:
    config = demo_config(tmp_path / "work", dates=6, seed=3)
    config.simulator = SimulatorConfig(seed=3, dates=6, length=40, width=50)
    sbas(config)
    first = _state(config.paths.root)
    assert len(first["markers"]) > 20 and len(first["mintpy"]) >= 5  # type: ignore[arg-type]
    sbas(config)
    assert _state(config.paths.root) == first
