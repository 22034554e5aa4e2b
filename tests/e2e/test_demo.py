"""End to end on the simulator: topsStack DAG (snaphu unwrapping) -> real MintPy -> zarr.

The demo scene carries cm-scale turbulent delays (5 mm std), a stratified delay (2 cm per
km of height, std over dates), DEM errors, an annual term and planted 2 pi unwrapping
errors between snaphu's connected components. Nothing in the pipeline sees the truth:
MintPy corrects the unwrapping errors (bridging) and the DEM error and fits a linear
velocity. 12 dates over 13 months leave a velocity noise of about
sigma / sqrt(sum (t - mean t)^2) = 5 mm / 1.18 yr, 4 mm/yr, spatially correlated like the
atmosphere; the -200 mm/yr bowl makes the true field's std 39 mm/yr, so the RMSE check
(<= 0.25 x std) and the slope check (0.9..1.1) hold with room (a linear fit of the exact
range changes of eight seeds gives RMSE 0.07-0.12 x std, slopes 1.00-1.08). The checks are in
``metrics.py``; ``test_metrics.py`` shows each failing on flat, flipped and scaled maps.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from insarflow.flows.demo import demo_config, run_demo
from insarflow.simulator.scene import (
    SceneSpec,
    SceneTruth,
    make_truth,
    signal_phase,
    unwrapping_error_cycles,
)

from .metrics import island_cycles, velocity_metrics

pytestmark = [
    pytest.mark.e2e,
    # rioxarray's transform() goes through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:affine"),
]

LENGTH, WIDTH = 150, 200  # the demo's scene


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None):  # type: ignore[no-untyped-def]
    workdir = tmp_path_factory.mktemp("demo")
    config = demo_config(workdir, seed=7)  # the CLI's default is 42: a second scene
    return config, run_demo(config)


def _truth(config) -> SceneTruth:  # type: ignore[no-untyped-def]
    return make_truth(SceneSpec.load(config.paths.stack / "simulator" / "scene.json"))


def test_velocity_meets_the_end_to_end_checks(demo_run) -> None:  # type: ignore[no-untyped-def]
    config, _ = demo_run
    truth = _truth(config)
    mintpy = config.paths.mintpy
    with h5py.File(mintpy / "velocity.h5", "r") as f:
        recovered = f["velocity"][()].astype("f8")
        ref_yx = (int(f.attrs["REF_Y"]), int(f.attrs["REF_X"]))
    with h5py.File(mintpy / "maskTempCoh.h5", "r") as f:
        coherent = f["mask"][()].astype(bool) & truth.coherent_mask
    m = velocity_metrics(recovered, truth.velocity, coherent, ref_yx)
    assert m.pixels > 0.6 * LENGTH * WIDTH, m
    assert m.failures() == [], m
    # the island the river cuts off is recovered as well as the rest
    island = velocity_metrics(recovered, truth.velocity, coherent & truth.island, ref_yx)
    assert abs(island.offset - m.offset) < 0.25 * m.true_std, (island, m)


def test_planted_unwrapping_errors_are_corrected_by_bridging(demo_run) -> None:  # type: ignore[no-untyped-def]
    config, _ = demo_run
    assert config.mintpy.unwrap_error == "bridging"
    truth = _truth(config)
    with h5py.File(config.paths.mintpy / "inputs" / "ifgramStack.h5", "r") as f:
        pairs = [(a.decode(), b.decode()) for a, b in f["date"][()]]
        before = f["unwrapPhase"][()]
        after = f["unwrapPhase_bridging"][()]
    true_phase = np.stack([signal_phase(truth, d1, d2) for d1, d2 in pairs])
    mainland = truth.coherent_mask & ~truth.island
    planted = [unwrapping_error_cycles(truth.spec, d1, d2) for d1, d2 in pairs]
    found = island_cycles(before, true_phase, truth.island, mainland)
    assert sum(map(abs, planted)) >= 2
    assert found.tolist() == planted  # the errors reach MintPy through snaphu's components
    assert island_cycles(after, true_phase, truth.island, mainland).tolist() == [0] * len(pairs)


def test_time_series_dates_and_zarr(demo_run) -> None:  # type: ignore[no-untyped-def]
    config, outcome = demo_run
    result = outcome.result
    with h5py.File(config.paths.stack / "simulator" / "truth.h5", "r") as f:
        true_dates = [d.decode() for d in f["dates"][()]]
    assert result.timeseries is not None
    with h5py.File(result.timeseries, "r") as f:
        assert [d.decode() for d in f["date"][()]] == true_dates
        assert f["timeseries"].shape == (12, LENGTH, WIDTH)
    assert result.zarr is not None
    ds = xr.open_zarr(result.zarr)
    assert [
        np.datetime_as_string(t, unit="D").replace("-", "") for t in ds.time.values
    ] == true_dates
    assert ds.timeseries.dims == ("time", "y", "x")
    assert ds.rio.crs is not None and ds.rio.crs.to_epsg() == 4326
    velocity = ds.velocity.values
    assert np.isfinite(velocity).mean() > 0.3
    # subsidence bowl of -200 mm/yr: the most negative velocities are near that
    assert np.nanpercentile(velocity, 1) < -0.1


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
    from insarflow.flows.sbas import sbas

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

    from insarflow.flows.stages import products_stage

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
