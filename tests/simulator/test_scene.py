"""The synthetic scene: specification, truth, phase model."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import h5py
import numpy as np
import pytest

from insarflow.simulator.scene import (
    SceneSpec,
    default_demo_spec,
    has_unwrapping_error,
    make_truth,
    pair_noise,
    signal_phase,
    unwrapping_error_cycles,
    write_truth,
)

from .helpers import small_spec


def test_demo_spec_is_the_reference_study() -> None:
    spec = default_demo_spec()
    assert (spec.length, spec.width, len(spec.dates)) == (150, 200, 12)
    assert spec.dates[0] == "20241201" and spec.reference == "20241201"
    assert spec.dates[-1] == "20260101"  # every 36 days: 13 months
    assert (spec.relative_orbit, spec.flight_direction) == (142, "DESCENDING")
    assert spec.wavelength_m == 0.05546576
    south, north, west, east = spec.dem_bbox
    assert south < spec.center_lat < north and west < spec.center_lon < east


def test_spec_round_trips_through_json(tmp_path: Path) -> None:
    spec = small_spec(5, reference_date=None, seed=3)
    path = tmp_path / "scene.json"
    path.write_text(spec.to_json())
    assert SceneSpec.load(path) == spec
    assert SceneSpec.from_json(spec.to_json()).dates == spec.dates


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dates": ["20250101", "2025-01-13"]}, "dates: '2025-01-13' is not YYYYMMDD"),
        ({"dates": ["20250101"]}, "at least two different dates"),
        ({"dates": ["20250101", "20250113"], "reference_date": "20250125"}, "reference_date"),
        ({"dates": ["20250101", "20250113"], "width": 4}, "width: 4 must be >= 8"),
        ({"dates": ["20250101", "20250113"], "swaths": [4]}, "swaths: [4]"),
        ({"dates": ["20250101", "20250113"], "lenght": 40}, "unknown scene spec keys ['lenght']"),
    ],
)
def test_spec_errors_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        SceneSpec.from_dict(changes)
    assert message in str(err.value)


def test_truth_is_reproducible_and_depends_on_the_seed() -> None:
    a, b = make_truth(small_spec()), make_truth(small_spec())
    c = make_truth(small_spec(seed=8))
    for name in ("topography", "dem_error", "velocity", "speckle_phase", "lat", "lon"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    day = a.spec.dates[2]
    np.testing.assert_array_equal(a.atmosphere(day), b.atmosphere(day))
    assert not np.array_equal(a.atmosphere(day), c.atmosphere(day))
    assert not np.array_equal(a.topography, c.topography)


def test_adding_dates_keeps_what_existing_dates_and_pairs_look_like() -> None:
    short, long = make_truth(small_spec(3)), make_truth(small_spec(6))
    for day in short.spec.dates:
        np.testing.assert_array_equal(short.atmosphere(day), long.atmosphere(day))
        assert short.bperp(day) == long.bperp(day)
        np.testing.assert_array_equal(short.slc(day), long.slc(day))
    d1, d2 = short.spec.dates[:2]
    np.testing.assert_array_equal(pair_noise(short, d1, d2), pair_noise(long, d1, d2))


def test_demo_truth_has_the_advertised_signals() -> None:
    t = make_truth(default_demo_spec())
    land = t.coherent_mask
    assert t.velocity.min() == pytest.approx(-0.200, abs=3e-3)  # bowl
    assert np.ptp(t.velocity[land]) < 0.206  # bowl plus a few mm/yr ramp
    assert 0 < np.abs(t.dem_error).max() <= 6.0
    bperps = [t.bperp(d) for d in t.spec.dates]
    assert bperps[0] == 0.0 and max(map(abs, bperps)) <= 200.0
    height = t.topography + t.dem_error
    for day in t.spec.dates:
        delay = t.atmosphere(day)
        assert 0.003 < delay.std() < 0.015  # cm-scale
        # turbulent (unit-variance field x atmosphere_std_m) plus stratified (x height)
        stratified = t.stratified_coefficient(day) * (height - height.mean())
        assert (delay - stratified).std() == pytest.approx(t.spec.atmosphere_std_m, rel=1e-6)
    coefficients = [abs(t.stratified_coefficient(d)) for d in t.spec.dates]
    assert max(coefficients) > 1e-5  # > 1 cm per km of height on some date
    # the annual term: zero at the reference, largest at the bowl centre
    day = t.spec.dates[3]
    annual = t.displacement(day) - t.velocity * t.years_since_reference(day)
    centre = np.unravel_index(np.argmax(t.seasonal), t.shape)
    assert np.abs(annual).max() == pytest.approx(abs(annual[centre]))
    assert 0.001 < np.abs(annual).max() <= t.spec.seasonal_amplitude_m * 2
    np.testing.assert_array_equal(t.displacement(t.spec.reference), 0.0)
    early, late = t.spec.dates[0], t.spec.dates[-1]
    gamma_short = t.coherence(early, t.spec.dates[1])
    gamma_long = t.coherence(early, late)
    assert gamma_short[land].mean() > gamma_long[land].mean() > 0.25
    assert gamma_short[t.water].max() < 0.1 and t.water.any()
    # the river cuts off a corner large enough for MintPy's bridging (2,500 pixels)
    assert t.island.sum() > 2500 and not (t.island & t.water).any()
    inc = t.incidence_deg[0]
    assert inc[0] == pytest.approx(30.0) and inc[-1] == pytest.approx(46.0)


def test_radar_geometry_of_a_descending_track() -> None:
    t = make_truth(default_demo_spec())
    # rows follow the flight (south, slightly west), columns look right (west)
    assert t.lat[-1, 0] < t.lat[0, 0]
    assert t.lon[0, -1] < t.lon[0, 0]
    assert t.lat.min() < 34.3 < t.lat.max() and t.lon.min() < 117.225 < t.lon.max()
    assert t.los_azimuth_deg == pytest.approx(-102.2)
    # pixel spacing: about 14 m x 3 looks in azimuth
    az_step_m = abs(t.lat[1, 0] - t.lat[0, 0]) * 111_195 / np.cos(np.radians(12.2))
    assert az_step_m == pytest.approx(42, rel=0.05)


def test_phase_model_parts() -> None:
    spec = small_spec(6, unwrap_error_fraction=0.5)
    t = make_truth(spec)
    d = spec.dates
    np.testing.assert_allclose(signal_phase(t, d[0], d[0]), 0.0)
    np.testing.assert_allclose(signal_phase(t, d[1], d[3]), -signal_phase(t, d[3], d[1]))
    # -4 pi / lambda x (range change of date 2 - date 1)
    expected = -4 * np.pi / spec.wavelength_m * (t.range_change(d[2]) - t.range_change(d[1]))
    np.testing.assert_allclose(signal_phase(t, d[1], d[2]), expected)
    pairs = [(a, b) for i, a in enumerate(d) for b in d[i + 1 :]]
    flagged = [p for p in pairs if has_unwrapping_error(spec, *p)]
    assert 0 < len(flagged) < len(pairs)
    for p in pairs:
        cycles = unwrapping_error_cycles(spec, *p)
        assert cycles in ((1, -1) if p in flagged else (0,))
        land = ~t.water
        noise = np.angle(pair_noise(t, *p))
        assert np.sqrt(np.mean(noise[land] ** 2)) < 0.5


def test_truth_file(tmp_path: Path) -> None:
    spec = small_spec()
    t = make_truth(spec)
    path = write_truth(tmp_path / "simulator" / "truth.h5", t)
    with h5py.File(path) as f:
        np.testing.assert_allclose(f["velocity"][()], t.velocity, rtol=1e-6)
        assert f["mask"][()].astype(bool).tolist() == (~t.water).tolist()
        assert [d.decode() for d in f["dates"][()]] == list(spec.dates)
        assert f.attrs["reference_date"] == spec.reference
        assert f["bperp"][0] == 0.0
    first = path.read_bytes()
    write_truth(path, t)
    assert path.read_bytes() == first


def test_regular_dates() -> None:
    spec = SceneSpec.regular(date(2024, 12, 30), 3, 6)
    assert spec.dates == ("20241230", "20250105", "20250111")
