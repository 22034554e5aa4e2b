"""The products stage on a real Prefect engine: configuration to zarr, figures and report."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from insarflow.config import AcquisitionConfig, AreaConfig, ExportConfig, StackConfig
from insarflow.tasks import export, report

from .synthetic import SyntheticMintpy

pytestmark = [
    # rioxarray's transform() goes through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:affine"),
]


def _config(work_dir: Path, **export_options: object) -> StackConfig:
    return StackConfig(
        name="syn",
        work_dir=work_dir,
        engine="simulator",
        area=AreaConfig(bbox=(34.0, 34.6, 116.5, 117.95)),
        acquisition=AcquisitionConfig(track=142, start=date(2024, 12, 1), end=date(2025, 3, 1)),
        export=ExportConfig(formats=["zarr"], **export_options),  # type: ignore[arg-type]
    )


def test_chunk_size_points_and_history_reach_the_products(
    prefect_harness: None, synthetic_mintpy: SyntheticMintpy
) -> None:
    from insarflow.flows.stages import history_file, products_stage

    s = synthetic_mintpy
    products = export.locate_products(s.mintpy_dir)
    grid = export.read_grid(products)
    lat, lon = grid.y_centres(), grid.x_centres()
    masked = next(tuple(int(i) for i in rc) for rc in np.argwhere(~s.mask) if rc[0] > 0)
    points = [
        (float(lat[10]), float(lon[30])),
        (float(lat[masked[0]]), float(lon[masked[1]])),
        (34.3, 117.0),  # inside the area, outside the scene
    ]
    config = _config(s.mintpy_dir.parent, chunk_size=16, points=points)
    # a first run that did the work, and a rerun that found it done
    for run_id, started, step in (
        ("first", "2026-11-30T10:00:00+00:00", report.StepSummary("unwrap", run=30, duration_s=90)),
        ("second", "2026-11-30T11:00:00+00:00", report.StepSummary("unwrap", skipped=30)),
    ):
        report.append_stage_record(
            history_file(config), report.StageRecord(run_id, "topsstack", started, [step])
        )

    result = products_stage(config, None, None)

    ds = xr.open_zarr(result.outputs["zarr"])
    assert ds["velocity"].encoding["chunks"] == (16, 16)
    assert ds["timeseries"].encoding["chunks"] == (len(s.dates), 16, 16)
    md = result.report_md.read_text()
    assert "### Run 1 (started 2026-11-30T10:00:00+00:00, flow run `first`)" in md
    assert "### Run 2 (started 2026-11-30T11:00:00+00:00, flow run `second`)" in md
    assert "| unwrap | 30 | 0 | 0 | 0 | 0:01:30 |" in md
    assert "| unwrap | 0 | 30 | 0 | 0 | 0:00:00 |" in md
    warnings = md.split("## Warnings", 1)[1].split("## Inputs", 1)[0]
    assert f"export.points: P2 ({points[1][0]}, {points[1][1]}) falls on a pixel" in warnings
    assert "export.points: P3 (34.3, 117.0) lies outside the geocoded scene" in warnings
    assert "(mintpy.reference.minCoherence)" in warnings  # the reference point's coherence
    assert "| topsstack.connections | 3 |" in md
    assert "### Unwrapping errors" in md and "### Closure phase" in md
    assert result.figures[0].name == "velocity_map.png"


def test_default_chunk_size_differs(
    prefect_harness: None, synthetic_mintpy: SyntheticMintpy
) -> None:
    """The chunks of the first test come from export.chunk_size, not from a default."""
    from insarflow.flows.stages import products_stage

    config = _config(synthetic_mintpy.mintpy_dir.parent, figures=False)
    result = products_stage(config, None, None)
    ds = xr.open_zarr(result.outputs["zarr"])
    assert ds["velocity"].encoding["chunks"] == (40, 50)  # 256 capped at the grid
