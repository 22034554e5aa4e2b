"""End to end on the simulator: topsStack DAG -> real MintPy -> zarr, figures, report.

Tolerance: the scene has 1 mm of atmospheric delay per date and decorrelation noise;
12 dates over 132 days give a velocity noise of about 3-4 mm/yr for independent
delays (sqrt(2) x 1 mm / sqrt(sum (t - mean t)^2) with sum ~ 0.13 yr^2). MintPy's map
is relative to one reference pixel whose own noise shifts every pixel: that offset is
removed before the RMSE (and bounded separately).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from flows.config import SimulatorConfig
from flows.demo import demo_config, run_demo

pytestmark = [
    pytest.mark.e2e,
    # rioxarray's transform() goes through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:affine"),
]

RMSE_TOLERANCE_MM_YR = 6.0
OFFSET_TOLERANCE_MM_YR = 15.0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None):  # type: ignore[no-untyped-def]
    workdir = tmp_path_factory.mktemp("demo")
    config = demo_config(workdir, dates=12, seed=7)
    config.simulator = SimulatorConfig(seed=7, dates=12, length=80, width=100)
    return config, run_demo(config)


def test_velocity_recovered_within_tolerance(demo_run) -> None:  # type: ignore[no-untyped-def]
    _, outcome = demo_run
    err = outcome.error
    assert err.pixels > 0.4 * 80 * 100
    assert err.rmse_mm_yr < RMSE_TOLERANCE_MM_YR, err
    assert abs(err.bias_mm_yr) < OFFSET_TOLERANCE_MM_YR, err


def test_time_series_dates_and_zarr(demo_run) -> None:  # type: ignore[no-untyped-def]
    config, outcome = demo_run
    result = outcome.result
    with h5py.File(config.paths.stack / "simulator" / "truth.h5", "r") as f:
        true_dates = [d.decode() for d in f["dates"][()]]
    assert result.timeseries is not None
    with h5py.File(result.timeseries, "r") as f:
        assert [d.decode() for d in f["date"][()]] == true_dates
        assert f["timeseries"].shape == (12, 80, 100)
    assert result.zarr is not None
    ds = xr.open_zarr(result.zarr)
    assert [
        np.datetime_as_string(t, unit="D").replace("-", "") for t in ds.time.values
    ] == true_dates
    assert ds.timeseries.dims == ("time", "y", "x")
    assert ds.rio.crs is not None and ds.rio.crs.to_epsg() == 4326
    velocity = ds.velocity.values
    assert np.isfinite(velocity).mean() > 0.3
    # subsidence bowl of -30 mm/yr: the most negative velocities are near that
    assert np.nanpercentile(velocity, 1) < -0.015


def test_products_and_report(demo_run) -> None:  # type: ignore[no-untyped-def]
    config, outcome = demo_run
    result = outcome.result
    assert len(result.figures) == 4
    for png in result.figures:
        assert png.stat().st_size > 10_000
    assert result.report_md is not None and result.report_html is not None
    report = result.report_md.read_text()
    assert "synthetic" in report.lower()
    assert {p.name for p in result.geotiff} == {
        "velocity.tif",
        "velocity_std.tif",
        "mask.tif",
        "temporal_coherence.tif",
        "avg_spatial_coherence.tif",
    }
    summary = outcome.summary()
    assert str(result.zarr) in summary and "RMSE" in summary
    # exported velocities are masked by MintPy's reliable-pixel mask, unmasked kept apart
    ds = xr.open_zarr(result.zarr)
    unreliable = ds["mask"].values == 0
    assert unreliable.any() and np.isnan(ds["velocity"].values[unreliable]).all()
    assert np.isfinite(ds["velocity_unmasked"].values[unreliable]).any()
    assert ds["velocity"].attrs["units"] == "m year-1"
    # the report: quality, parameters, MintPy step timings, the error against the truth
    for heading in ("## Parameters", "## Quality", "### Reference point", "### Closure phase"):
        assert heading in report, heading
    assert "| `unwrapPhase` |" in report  # triplet counts of the phase as loaded
    assert "| mintpy: invert_network | 1 |" in report
    assert f"| {outcome.error.rmse_mm_yr / 1000:.5f} m year-1 |" in report
    # MintPy's own figures, as a full smallbaselineApp.py run leaves them
    pic = config.paths.mintpy / "pic"
    assert {"velocity.png", "geo_velocity.png", "network.pdf"} <= {p.name for p in pic.iterdir()}


def test_rerun_skips_every_topsstack_line(demo_run) -> None:  # type: ignore[no-untyped-def]
    """A second run of a finished stack executes no topsStack line again."""
    from flows.sbas import sbas

    config, _ = demo_run
    logs = sorted(Path(config.paths.logs).rglob("*.log"))
    before = {p: p.stat().st_size for p in logs if "mintpy" not in p.parts}
    sbas(config, until="topsstack")
    after = {p: p.stat().st_size for p in before}
    changed = [p for p in before if after[p] != before[p] and p.name != "stackSentinel.log"]
    assert changed == []


def test_rerun_report_shows_both_runs(demo_run) -> None:  # type: ignore[no-untyped-def]
    """After the rerun above, the report keeps the first run's figures beside the rerun's."""
    import re

    from flows.stages import products_stage

    config, _ = demo_run
    md = products_stage(config, None, None).report_md.read_text()
    runs = re.split(r"^### Run \d+ ", md, flags=re.M)
    assert len(runs) == 3, "expected the first run and the rerun"
    first, rerun = runs[1], runs[2].split("## Quality", 1)[0]
    totals = [re.search(r"^\| \*\*total\*\* \| (\d+) \| (\d+) \|", t, re.M) for t in runs[1:]]
    assert totals[0] and totals[1]
    assert int(totals[0][1]) > 0  # the first run ran the lines
    assert int(totals[1][1]) == 0 and int(totals[1][2]) > 0  # the rerun found them done
    assert "mintpy: invert_network" in first and "mintpy" not in rerun
