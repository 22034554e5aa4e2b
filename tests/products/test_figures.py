"""PNG figures of a MintPy run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from tasks import export, figures

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


def test_reference_point_and_threshold_come_from_mintpy(
    synthetic_mintpy: SyntheticMintpy,
) -> None:
    products = export.locate_products(synthetic_mintpy.mintpy_dir)
    grid = export.read_grid(products)
    assert figures.reference_yx(products, grid) == synthetic_mintpy.ref_yx
    # smallbaselineApp.cfg says "auto", which MintPy resolves to 0.7
    assert figures.min_temporal_coherence(synthetic_mintpy.mintpy_dir) == pytest.approx(0.7)
