"""The end-to-end checks reject what a broken pipeline would produce."""

from __future__ import annotations

import numpy as np
import pytest

from insarflow.simulator.scene import default_demo_spec, make_truth

from .metrics import island_cycles, velocity_metrics

REF_YX = (20, 30)


@pytest.fixture(scope="module")
def truth_velocity() -> tuple[np.ndarray, np.ndarray]:
    truth = make_truth(default_demo_spec())
    return truth.velocity, truth.coherent_mask


def _recovered(true: np.ndarray, scale: float, noise_m_yr: float = 0.0) -> np.ndarray:
    """``true`` x ``scale`` relative to the reference pixel, plus an offset and noise."""
    rng = np.random.default_rng(0)
    rel = scale * (true - true[REF_YX])
    return rel + 0.002 + noise_m_yr * rng.standard_normal(true.shape)


def test_an_honest_map_passes(truth_velocity: tuple[np.ndarray, np.ndarray]) -> None:
    true, mask = truth_velocity
    m = velocity_metrics(_recovered(true, 1.0, noise_m_yr=0.002), true, mask, REF_YX)
    assert m.failures() == []
    assert m.offset == pytest.approx(0.002, abs=2e-4)
    assert m.slope == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(
    ("name", "scale", "failing"),
    [
        ("flat", 0.0, ("RMSE", "slope", "sign")),
        ("sign-flipped", -1.0, ("RMSE", "slope", "sign")),
        # right sign at the centre: only the RMSE and slope checks can see the scaling
        ("0.5x", 0.5, ("RMSE", "slope")),
        ("1.3x", 1.3, ("RMSE", "slope")),
    ],
)
def test_broken_maps_fail(
    truth_velocity: tuple[np.ndarray, np.ndarray],
    name: str,
    scale: float,
    failing: tuple[str, ...],
) -> None:
    true, mask = truth_velocity
    failures = velocity_metrics(_recovered(true, scale), true, mask, REF_YX).failures()
    assert [f.split()[0] for f in failures] == list(failing), (name, failures)


def test_island_cycles_find_a_planted_jump() -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(-20, 20, (3, 30, 40))
    island = np.zeros((30, 40), dtype=bool)
    island[20:, 25:] = True
    phase = true + 0.3 * rng.standard_normal(true.shape) + np.array([5.0, -3.0, 0.0])[:, None, None]
    assert island_cycles(phase, true, island, ~island).tolist() == [0, 0, 0]
    phase[1][island] += 2 * np.pi
    phase[2][island] -= 4 * np.pi
    assert island_cycles(phase, true, island, ~island).tolist() == [0, 1, -2]
