"""PNG figures of a MintPy run."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib import image as mpimg

from insarflow.tasks import export, figures

from .synthetic import SyntheticMintpy


def _assert_real_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 200, path
    # a blank or single-colour canvas has (almost) no variance
    assert float(pixels[..., :3].std()) > 0.05, path
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50, path


def test_make_figures_writes_four_real_pngs(
    synthetic_mintpy: SyntheticMintpy, tmp_path: Path
) -> None:
    paths = figures.make_figures(synthetic_mintpy.mintpy_dir, tmp_path / "figures")
    assert [p.name for p in paths] == [
        "velocity_map.png",
        "network.png",
        "timeseries_points.png",
        "temporal_coherence_histogram.png",
    ]
    for path in paths:
        _assert_real_png(path)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in paths)


def test_network_figure_is_left_out_without_ifgram_stack(
    synthetic_mintpy: SyntheticMintpy, tmp_path: Path
) -> None:
    (synthetic_mintpy.mintpy_dir / "inputs" / "ifgramStack.h5").unlink()
    paths = figures.make_figures(synthetic_mintpy.mintpy_dir, tmp_path)
    assert "network.png" not in [p.name for p in paths]
    assert len(paths) == 3


def test_points_are_the_largest_velocities_and_spread_out(
    synthetic_mintpy: SyntheticMintpy,
) -> None:
    velocity, mask = synthetic_mintpy.velocity, synthetic_mintpy.mask
    points = figures.select_points(velocity, mask, n_points=4, min_separation=4)
    assert len(points) == 4
    valid = np.where(mask & np.isfinite(velocity), np.abs(velocity), -np.inf)
    assert points[0] == np.unravel_index(np.argmax(valid), valid.shape)
    for i, a in enumerate(points):
        assert mask[a] and np.isfinite(velocity[a])
        for b in points[i + 1 :]:
            assert max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 4
    magnitudes = [abs(float(velocity[p])) for p in points]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_points_skip_unreliable_pixels() -> None:
    velocity = np.array([[10.0, 1.0], [np.nan, -5.0]])
    mask = np.array([[False, True], [True, True]])
    assert figures.select_points(velocity, mask, 5, 1) == [(1, 1), (0, 1)]


def test_automatic_points_are_coherent_and_certain(synthetic_mintpy: SyntheticMintpy) -> None:
    """A masked-in pixel of large |velocity| but poor coherence or a large uncertainty is
    noise: the points are the largest velocities among coherent, low-uncertainty pixels."""
    s = synthetic_mintpy
    geo = s.geo_dir
    # the largest |velocity| of the scene, on reliable pixels that are barely coherent
    # or very uncertain
    noisy, uncertain = (20, 30), (12, 40)
    with h5py.File(geo / "geo_velocity.h5", "a") as f:
        f["velocity"][noisy] = 0.09
        f["velocity"][uncertain] = -0.09
        f["velocityStd"][uncertain] = 0.05
    with h5py.File(geo / "geo_temporalCoherence.h5", "a") as f:
        f["temporalCoherence"][noisy] = 0.71
    assert s.mask[noisy] and s.mask[uncertain]

    choice = figures.choose_points(export.locate_products(s.mintpy_dir))
    assert len(choice.points) == 4 and choice.warnings == []
    chosen = {(p.row, p.col) for p in choice.points}
    assert noisy not in chosen and uncertain not in chosen
    reliable = s.mask & np.isfinite(s.velocity)
    tcoh_median = np.median(s.temporal_coherence[reliable])
    std_median = np.median(s.velocity_std[reliable])
    for p in choice.points:
        assert p.reliable and p.name.startswith("P")
        assert s.temporal_coherence[p.row, p.col] >= tcoh_median
        assert s.velocity_std[p.row, p.col] <= std_median


def test_user_points_are_used_and_problems_named(synthetic_mintpy: SyntheticMintpy) -> None:
    s = synthetic_mintpy
    products = export.locate_products(s.mintpy_dir)
    grid = export.read_grid(products)
    lat, lon = grid.y_centres(), grid.x_centres()
    masked_rc = tuple(int(i) for i in np.argwhere(~s.mask & np.isfinite(s.velocity))[0])
    user = [
        (float(lat[10]), float(lon[30])),
        (float(lat[masked_rc[0]]), float(lon[masked_rc[1]])),
        (34.9, 116.51),  # north of the scene
    ]
    choice = figures.choose_points(products, user)
    assert [(p.name, p.row, p.col, p.reliable) for p in choice.points] == [
        ("P1", 10, 30, True),
        ("P2", *masked_rc, False),
    ]
    assert len(choice.warnings) == 2
    assert choice.warnings[0].startswith(
        f"export.points: P2 ({user[1][0]}, {user[1][1]}) falls on a pixel MintPy masks"
    )
    assert choice.warnings[1].startswith(
        "export.points: P3 (34.9, 116.51) lies outside the geocoded scene"
    )


def test_velocity_map_geometry_colour_bar_and_title(synthetic_mintpy: SyntheticMintpy) -> None:
    products = export.locate_products(synthetic_mintpy.mintpy_dir)
    fig = figures.velocity_map_figure(products)
    ax = fig.axes[0]
    mid_lat = 34.6 - 40 * 0.0008 / 2
    # a degree of longitude is cos(lat) shorter than one of latitude
    assert ax.get_aspect() == pytest.approx(1 / np.cos(np.radians(mid_lat)))
    # colours saturate at +-the 98th percentile of |velocity|: only the subsidence bowl
    # goes beyond it, so only the low end of the colour bar has an arrow
    assert ax.images[0].colorbar.extend == "min"
    title = ax.get_title()
    assert "2024-12-01 to 2025-02-23" in title  # the first and last of the 8 dates
    ref_y = synthetic_mintpy.ref_yx[0]
    grid = export.read_grid(products)
    assert f"reference 2024-12-01, ({grid.y_centres()[ref_y]:.4f}, " in title
    ts_title = figures.timeseries_figure(products, []).axes[0].get_title()
    assert "2024-12-01 to 2025-02-23, reference 2024-12-01" in ts_title


def test_colour_bar_extend_follows_the_clipped_values() -> None:
    values = np.array([-1.0, 0.0, 2.0])
    assert figures._extend(values, -1.0, 2.0) == "neither"
    assert figures._extend(values, -0.5, 2.0) == "min"
    assert figures._extend(values, -1.0, 1.0) == "max"
    assert figures._extend(values, -0.5, 1.0) == "both"


def test_reference_point_and_threshold_come_from_mintpy(
    synthetic_mintpy: SyntheticMintpy,
) -> None:
    products = export.locate_products(synthetic_mintpy.mintpy_dir)
    grid = export.read_grid(products)
    assert figures.reference_yx(products, grid) == synthetic_mintpy.ref_yx
    # smallbaselineApp.cfg says "auto", which MintPy resolves to 0.7
    assert figures.min_temporal_coherence(synthetic_mintpy.mintpy_dir) == pytest.approx(0.7)


def test_plot_command_draws_export_points(
    synthetic_mintpy: SyntheticMintpy, tmp_path: Path
) -> None:
    """`insarflow plot` uses export.points like the products stage: a point outside the
    geocoded scene is named."""
    from typer.testing import CliRunner

    from insarflow.cli import app

    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: s\nwork_dir: {synthetic_mintpy.mintpy_dir.parent}\nengine: simulator\n"
        "area: {bbox: [34.0, 34.6, 116.5, 117.95]}\n"
        "acquisition: {track: 142, start: 2025-04-06, end: 2025-05-12}\n"
        "export: {points: [[34.01, 117.9]]}\n"
    )
    result = CliRunner().invoke(app, ["plot", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "timeseries_points.png" in result.output
    assert "export.points: P1 (34.01, 117.9) lies outside the geocoded scene" in result.output
