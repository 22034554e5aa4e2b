"""MintPy metadata from the real ISCE2 ``reference/IW1.xml``, checked against hand computations.

The expected numbers are computed here directly from the XML with ElementTree and
textbook formulas, using different numerics from the code under test (a piecewise
cubic Hermite spline through all state vectors instead of ISCE2's 4-point Hermite,
iterative instead of closed-form geodetic latitude, the meridional/normal radius
form of the directional radius of curvature).
"""

from __future__ import annotations

import math
import shutil
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import CubicHermiteSpline

from insarflow.tasks.isce_io import read_isce_raster
from insarflow.tasks.sbas_metadata import (
    MetadataError,
    find_meta_file,
    format_rsc,
    geometry_metadata,
    isce_stack_metadata,
    multilook_numbers,
    read_rsc,
    tops_metadata,
    write_data_rsc,
)

from .synthetic import SyntheticStack

A = 6378137.0
E2 = 0.0066943799901


def _value(elem: ET.Element, name: str) -> str:
    text = elem.findtext(f"property[@name='{name}']/value")
    assert text is not None, name
    return text.strip()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def hand_metadata(xml_path: Path, alooks: int, rlooks: int) -> dict[str, object]:
    """Every value MintPy derives from IW1.xml, computed step by step."""
    root = ET.parse(xml_path).getroot()
    instance = root.find("component[@name='instance']")
    assert instance is not None
    bursts = instance.find("component[@name='bursts']")
    assert bursts is not None
    b1 = bursts.find("component[@name='burst1']")
    b2 = bursts.find("component[@name='burst2']")
    assert b1 is not None and b2 is not None

    prf = float(_value(b1, "pulserepetitionfrequency"))
    wavelength = float(_value(b1, "radarwavelength"))
    starting_range = float(_value(b1, "startingrange"))
    range_pixel = float(_value(b1, "rangepixelsize"))
    ati = float(_value(b1, "azimuthtimeinterval"))
    start, stop = _time(_value(b1, "sensingstart")), _time(_value(b1, "sensingstop"))
    mid = start + timedelta(seconds=(stop - start).total_seconds() / 2)

    # State vectors of burst 1's orbit, interpolated at the burst's mid sensing time.
    svs = b1.findall("component[@name='orbit']/component[@name='state_vectors']/component")
    rows = sorted(
        (
            _time(_value(sv, "time")),
            [float(v) for v in _value(sv, "position").strip("[]").split(",")],
            [float(v) for v in _value(sv, "velocity").strip("[]").split(",")],
        )
        for sv in svs
    )
    t0 = rows[0][0]
    t = np.array([(r[0] - t0).total_seconds() for r in rows])
    spline = CubicHermiteSpline(t, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))
    tm = (mid - t0).total_seconds()
    x, y, z = spline(tm)
    vel = spline.derivative()(tm)
    speed = float(np.sqrt(vel @ vel))

    # Geodetic latitude/height by fixed-point iteration.
    p = math.hypot(x, y)
    lon = math.atan2(y, x)
    lat = math.atan2(z, p * (1 - E2))
    for _ in range(10):
        n = A / math.sqrt(1 - E2 * math.sin(lat) ** 2)
        height = p / math.cos(lat) - n
        lat = math.atan2(z, p * (1 - E2 * n / (n + height)))
    n = A / math.sqrt(1 - E2 * math.sin(lat) ** 2)
    height = p / math.cos(lat) - n

    # Heading: velocity in the local east/north frame, degrees clockwise from north.
    east = np.array([-math.sin(lon), math.cos(lon), 0.0])
    north = np.array(
        [-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat)]
    )
    heading = math.degrees(math.atan2(east @ vel, north @ vel))

    # Radius of curvature along the heading: 1/R = cos^2(h)/M + sin^2(h)/N.
    m_radius = A * (1 - E2) / (1 - E2 * math.sin(lat) ** 2) ** 1.5
    n_radius = A / math.sqrt(1 - E2 * math.sin(lat) ** 2)
    hdg = math.radians(heading)
    earth_radius = 1 / (math.cos(hdg) ** 2 / m_radius + math.sin(hdg) ** 2 / n_radius)

    az_pixel = speed * ati  # MintPy: satellite speed x azimuth time interval
    # Sentinel-1 IW1 resolutions (MintPy's sensor table): 2.7 m range, 22.5 m azimuth.
    ncorrlooks = rlooks * alooks / ((2.7 / range_pixel) * (22.5 / az_pixel))
    node = _time(_value(instance, "ascendingnodetime"))
    return {
        "PRF": prf,
        "WAVELENGTH": wavelength,
        "STARTING_RANGE": starting_range,
        "RANGE_PIXEL_SIZE": range_pixel * rlooks,
        "AZIMUTH_PIXEL_SIZE": az_pixel * alooks,
        "CENTER_LINE_UTC": float(mid.hour * 3600 + mid.minute * 60 + mid.second),
        "HEADING": heading,
        "EARTH_RADIUS": earth_radius,
        "HEIGHT": height,
        "ALOOKS": alooks,
        "RLOOKS": rlooks,
        "NCORRLOOKS": ncorrlooks,
        "ORBIT_DIRECTION": _value(b1, "passdirection"),
        "POLARIZATION": _value(b1, "polarization"),
        "relative_orbit": int(_value(b1, "tracknumber")),
        "beam_swath": int(_value(b1, "swathnumber")),
        "first_frame": int(0.2 * (_time(_value(b1, "burststartutc")) - node).total_seconds()),
        "last_frame": int(0.2 * (_time(_value(b2, "burststoputc")) - node).total_seconds()),
        "startUTC": _value(b1, "burststartutc"),
        "stopUTC": _value(b2, "burststoputc"),
        "PLATFORM": "sen",  # spacecraftname 'Sentinel-1' in MintPy's naming
    }


# Interpolation schemes differ (degree-7 vs piecewise cubic Hermite): < 1 mm in
# position and height, 2e-6 deg in heading; 1.5 s of orbit moves them far more.
TOLERANCE = {
    "AZIMUTH_PIXEL_SIZE": 1e-6,  # relative
    "NCORRLOOKS": 1e-6,  # relative
    "HEADING": 1e-5,  # degrees
    "EARTH_RADIUS": 1e-2,  # m
    "HEIGHT": 1e-2,  # m
}


def assert_matches(actual: dict[str, str], expected: dict[str, object]) -> None:
    for key, want in expected.items():
        assert key in actual, f"{key} missing"
        got = actual[key]
        if isinstance(want, float) and key in TOLERANCE:
            tol = TOLERANCE[key]
            if key in ("AZIMUTH_PIXEL_SIZE", "NCORRLOOKS"):
                assert float(got) == pytest.approx(want, rel=tol), key
            else:
                assert float(got) == pytest.approx(want, abs=tol), key
        elif isinstance(want, float):
            assert float(got) == want, key
        else:
            assert got == str(want), key


def test_tops_metadata_from_real_xml_matches_hand_computation(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    products = fixtures_dir / "isce2_products"
    xml = products / "reference" / "IW1.xml"
    # The fixture holds the sidecars only; MintPy looks for the rasters themselves.
    geom = tmp_path / "geom_reference"
    shutil.copytree(products / "merged" / "geom_reference", geom)
    for sidecar in geom.glob("*.rdr*.xml"):
        if not sidecar.name.endswith(".aux.xml"):
            sidecar.with_suffix("").touch()
    alooks, rlooks = multilook_numbers(geom)
    # hgt.rdr.full.xml 2842 x 21632 vs hgt.rdr.xml 947 x 2403 -> 3 azimuth, 9 range looks
    assert (alooks, rlooks) == (3, 9)

    meta = dict(tops_metadata(xml))
    # the multilook scaling and standard names, as in MintPy's extract_isce_metadata
    meta["ALOOKS"], meta["RLOOKS"] = alooks, rlooks
    meta["NCORRLOOKS"] = (
        rlooks
        * alooks
        / (
            (float(meta["rangeResolution"]) / float(meta["rangePixelSize"]))  # type: ignore[arg-type]
            * (float(meta["azimuthResolution"]) / float(meta["azimuthPixelSize"]))  # type: ignore[arg-type]
        )
    )
    meta["rangePixelSize"] = float(meta["rangePixelSize"]) * rlooks  # type: ignore[arg-type]
    meta["azimuthPixelSize"] = float(meta["azimuthPixelSize"]) * alooks  # type: ignore[arg-type]
    from mintpy.utils import readfile

    standard = readfile.standardize_metadata({k: str(v) for k, v in meta.items()})
    assert_matches(standard, hand_metadata(xml, alooks, rlooks))


def test_data_rsc_for_stack_matches_hand_computation(stack: SyntheticStack) -> None:
    meta_file = find_meta_file(stack.stack_dir)
    rsc = write_data_rsc(meta_file, stack.stack_dir / "merged" / "geom_reference")
    assert rsc == stack.stack_dir / "reference" / "data.rsc"
    assert rsc.stat().st_mtime >= meta_file.stat().st_mtime  # MintPy reuses it only then
    meta = read_rsc(rsc)
    assert_matches(meta, hand_metadata(meta_file, *stack.looks))

    geom = stack.stack_dir / "merged" / "geom_reference"
    lat = read_isce_raster(geom / "lat.rdr", band=1)
    lon = read_isce_raster(geom / "lon.rdr", band=1)
    inc = read_isce_raster(geom / "los.rdr", band=1)
    # no zero rows: corners two rows in from the top and bottom
    assert float(meta["LAT_REF1"]) == lat[2, 0]
    assert float(meta["LAT_REF2"]) == lat[2, -1]
    assert float(meta["LAT_REF3"]) == lat[-3, 0]
    assert float(meta["LON_REF4"]) == lon[-3, -1]
    assert float(meta["CENTER_INCIDENCE_ANGLE"]) == pytest.approx(float(inc[20, 30]))
    assert (meta["LENGTH"], meta["WIDTH"], meta["FILE_LENGTH"]) == ("40", "60", "40")
    assert (meta["PROCESSOR"], meta["ANTENNA_SIDE"]) == ("isce", "-1")


def test_geometry_metadata_equals_mintpys_own(stack: SyntheticStack) -> None:
    """Our geometry part against MintPy's pure-Python extract_geometry_metadata."""
    from mintpy.utils import isce_utils

    geom = stack.stack_dir / "merged" / "geom_reference"
    tops = tops_metadata(find_meta_file(stack.stack_dir))
    ours = geometry_metadata(geom, tops)
    theirs = isce_utils.extract_geometry_metadata(str(geom), dict(tops))
    assert {k: str(v) for k, v in ours.items()} == {k: str(v) for k, v in theirs.items()}


def test_rsc_text_equals_mintpys_writer(stack: SyntheticStack, tmp_path: Path) -> None:
    from mintpy.utils import writefile

    meta = isce_stack_metadata(
        find_meta_file(stack.stack_dir), stack.stack_dir / "merged" / "geom_reference"
    )
    out = tmp_path / "mintpy.rsc"
    writefile.write_roipac_rsc(dict(meta), str(out))
    assert format_rsc(meta) == out.read_text(encoding="utf-8")


def test_data_rsc_is_refreshed_when_the_xml_is_newer(stack: SyntheticStack) -> None:
    meta_file = find_meta_file(stack.stack_dir)
    geom = stack.stack_dir / "merged" / "geom_reference"
    rsc = write_data_rsc(meta_file, geom)
    old = rsc.stat().st_mtime_ns - 10**9
    import os

    os.utime(rsc, ns=(old, old))
    write_data_rsc(meta_file, geom)
    assert rsc.stat().st_mtime_ns >= meta_file.stat().st_mtime_ns


def test_missing_xml_names_the_topsstack_step(tmp_path: Path) -> None:
    (tmp_path / "reference").mkdir()
    with pytest.raises(MetadataError, match=r"no reference/IW\*\.xml .*run_01"):
        find_meta_file(tmp_path)


def test_xml_without_a_property_is_named(stack: SyntheticStack) -> None:
    xml = find_meta_file(stack.stack_dir)
    text = xml.read_text(encoding="utf-8")
    xml.write_text(text.replace('name="radarwavelength"', 'name="wavelength_x"'), encoding="utf-8")
    with pytest.raises(
        MetadataError, match=r"IW1\.xml: burst1: property 'radarwavelength' missing"
    ):
        tops_metadata(xml)


def test_looks_from_full_resolution_vrt_when_no_xml(fixtures_dir: Path, tmp_path: Path) -> None:
    geom = tmp_path / "geom_reference"
    shutil.copytree(fixtures_dir / "isce2_products" / "merged" / "geom_reference", geom)
    for sidecar in geom.glob("*.rdr.xml"):
        sidecar.with_suffix("").touch()
    for full_xml in geom.glob("*.rdr.full.xml"):
        full_xml.unlink()
    assert multilook_numbers(geom) == (3, 9)  # from hgt.rdr.full.vrt: 21632 x 2842
    for full_vrt in geom.glob("*.rdr.full.vrt"):
        full_vrt.unlink()
    assert multilook_numbers(geom) == (1, 1)  # MintPy's default: no looks known
