"""Synthetic SAFE zips, orbit files and DEM in the real formats."""

from __future__ import annotations

import re
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from shapely.geometry import Point, Polygon

from insarflow.simulator.acquisition import (
    SCENE_FILE,
    absolute_orbit,
    dem_name,
    make_synthetic_acquisitions,
)
from insarflow.simulator.scene import SceneSpec, default_demo_spec, make_truth
from insarflow.simulator.stack_sentinel import read_kml_quad
from insarflow.tasks.isce_io import is_complete, read_isce_info, read_isce_raster

from .helpers import small_spec

SAFE_RE = re.compile(
    r"^(S1[ABC])_IW_SLC__1SDV_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{6})_([0-9A-F]{6})_([0-9A-F]{4})\.zip$"
)
ORBIT_RE = re.compile(r"^S1A_OPER_AUX_POEORB_OPOD_\d{8}T\d{6}_V(\d{8}T\d{6})_(\d{8}T\d{6})\.EOF$")


def test_files_look_like_the_real_ones(tmp_path: Path) -> None:
    spec = small_spec(3)
    zips = make_synthetic_acquisitions(
        tmp_path / "SLC", tmp_path / "orbits", tmp_path / "dem", spec
    )
    assert [z.name.split("_")[5][:8] for z in zips] == list(spec.dates)
    for z in zips:
        m = SAFE_RE.match(z.name)
        assert m, z.name
        start = datetime.strptime(m.group(2), "%Y%m%dT%H%M%S")
        assert (datetime.strptime(m.group(3), "%Y%m%dT%H%M%S") - start).seconds == 27
        orbit = int(m.group(4))
        assert (orbit - 73) % 175 + 1 == spec.relative_orbit  # S1A track numbering
        assert orbit == absolute_orbit(spec, start.strftime("%Y%m%d"))
        with zipfile.ZipFile(z) as zf:
            folder = z.name.removesuffix(".zip") + ".SAFE"
            names = set(zf.namelist())
            assert {f"{folder}/manifest.safe", f"{folder}/preview/map-overlay.kml"} <= names
            manifest = zf.read(f"{folder}/manifest.safe").decode()
            assert f'<safe:relativeOrbitNumber type="start">{spec.relative_orbit}<' in manifest
            assert "<s1:pass>DESCENDING</s1:pass>" in manifest
        footprint = Polygon(read_kml_quad(str(z)))
        assert footprint.contains(Point(spec.center_lon, spec.center_lat))
        assert footprint.contains(
            Polygon([(116.5, 34.0), (117.95, 34.0), (117.95, 34.6), (116.5, 34.6)])
        )

    orbits = sorted((tmp_path / "orbits").iterdir())
    assert len(orbits) == 3
    for path, z in zip(orbits, zips, strict=True):
        m = ORBIT_RE.match(path.name)
        assert m, path.name
        start = datetime.strptime(SAFE_RE.match(z.name).group(2), "%Y%m%dT%H%M%S")  # type: ignore[union-attr]
        assert datetime.strptime(m.group(1), "%Y%m%dT%H%M%S") < start
        assert datetime.strptime(m.group(2), "%Y%m%dT%H%M%S") > start
        text = path.read_text()
        assert "<File_Type>AUX_POEORB</File_Type>" in text and text.count("<OSV>") >= 10

    assert SceneSpec.load(tmp_path / "SLC" / SCENE_FILE) == spec


def test_dem_is_a_georeferenced_isce_raster(tmp_path: Path) -> None:
    spec = small_spec()
    make_synthetic_acquisitions(tmp_path / "SLC", tmp_path / "orbits", tmp_path / "dem", spec)
    dem = tmp_path / "dem" / "demLat_N34_N35_Lon_E116_E118.dem.wgs84"
    assert dem_name(spec) == dem.name
    assert is_complete(dem)
    info = read_isce_info(dem)
    assert (info.length, info.width, str(info.dtype)) == (121, 241, "int16")
    with rasterio.open(f"{dem}.vrt") as ds:
        assert ds.crs.to_epsg() == 4326
        west, north = ds.transform.c, ds.transform.f
        assert (west, north) == pytest.approx((116.0 - 1 / 240, 35.0 + 1 / 240))
        heights = ds.read(1)
    # the DEM samples the scene topography: compare at the scene centre
    truth = make_truth(spec)
    row, col = ds.index(spec.center_lon, spec.center_lat)
    centre = truth.topography[spec.length // 2, spec.width // 2]
    assert abs(int(heights[row, col]) - centre) < 40
    np.testing.assert_array_equal(read_isce_raster(dem, 1), heights)


def test_idempotent(tmp_path: Path) -> None:
    spec = small_spec(2)
    dirs = (tmp_path / "SLC", tmp_path / "orbits", tmp_path / "dem")
    make_synthetic_acquisitions(*dirs, spec)
    before = {p: p.stat().st_mtime_ns for d in dirs for p in d.iterdir()}
    make_synthetic_acquisitions(*dirs, spec)
    after = {p: p.stat().st_mtime_ns for d in dirs for p in d.iterdir()}
    assert before == after


def test_demo_dem_name() -> None:
    assert dem_name(default_demo_spec()) == "demLat_N34_N35_Lon_E116_E118.dem.wgs84"
    far = default_demo_spec(center_lat=64.8, center_lon=-147.7)
    assert dem_name(far) == "demLat_N64_N65_Lon_W148_W147.dem.wgs84"
