"""DEM staging with a synthetic GLO-30 tile injected at dem-stitcher's tile listing (offline)."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from insarflow.tasks.credentials import Credentials
from insarflow.tasks.dem import (
    DemError,
    dem_bounds,
    dem_filename,
    find_dem,
    prepare_dem,
    read_dem_info,
    write_isce_dem,
)

pytestmark = [
    # rasterio.windows and dem-stitcher still use Affine's `*`; affine 2.4 flags it.
    pytest.mark.filterwarnings(
        "ignore:Use `@` matmul instead of `\\*` mul operator:PendingDeprecationWarning"
    ),
]

RES = 0.01  # degrees; a coarse stand-in for GLO-30's 1 arcsecond
GEOID_M = 20.0
AREA = (32.3, 33.6, 115.4, 116.7)  # S N W E -> DEM bounds 32 34 115 117


def _tile_heights() -> np.ndarray:
    rows, cols = np.mgrid[0:200, 0:200]
    return (100.0 + rows * 1.0 + cols * 0.5).astype("float32")


@pytest.fixture
def glo30(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """One Point-registered tile over 32-34N 115-117E and a constant geoid, served locally."""
    import dem_stitcher.datasets as datasets

    src = tmp_path / "src"
    src.mkdir()
    tile = src / "Copernicus_DSM_COG_10_N32_00_E115_00_DEM.tif"
    with rasterio.open(
        tile,
        "w",
        driver="GTiff",
        width=200,
        height=200,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=Affine(RES, 0, 115 - RES / 2, 0, -RES, 34 + RES / 2),
        nodata=np.nan,
    ) as ds:
        ds.write(_tile_heights(), 1)
        ds.update_tags(AREA_OR_POINT="Point")
    geoid = src / "geoid.tif"
    with rasterio.open(
        geoid,
        "w",
        driver="GTiff",
        width=40,
        height=24,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=Affine(0.25, 0, 110, 0, -0.25, 36),
    ) as ds:
        ds.write(np.full((24, 40), GEOID_M, "float32"), 1)

    original = datasets.get_global_dem_tile_extents

    def tile_listing(dataset: str) -> gpd.GeoDataFrame:
        if dataset != "glo_30":
            return original(dataset)  # packaged tile index, read locally
        return gpd.GeoDataFrame(
            {"tile_id": [tile.stem], "url": [str(tile)], "dem_name": ["glo_30"]},
            geometry=[box(115 - RES / 2, 32 - RES / 2, 117 - RES / 2, 34 + RES / 2)],
            crs="EPSG:4326",
        )

    monkeypatch.setattr(datasets, "get_global_dem_tile_extents", tile_listing)
    yield geoid


def _xml_props(path: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    root = ET.parse(f"{path}.xml").getroot()
    props = {p.get("name") or "": p.findtext("value") or "" for p in root.findall("property")}
    comps = {
        c.get("name") or "": {
            p.get("name") or "": p.findtext("value") or "" for p in c.findall("property")
        }
        for c in root.findall("component")
    }
    return props, comps


def test_names_follow_dem_py() -> None:
    assert dem_bounds((34.0, 34.6, 116.5, 117.95)) == (33, 35, 116, 119)
    assert dem_filename((32, 35, 115, 119)) == "demLat_N32_N35_Lon_E115_E119.dem.wgs84"
    assert dem_filename((-1, 1, -92, -90)) == "demLat_S01_N01_Lon_W092_W090.dem.wgs84"
    with pytest.raises(DemError, match="S N W E, not W E S N"):
        dem_bounds((116.5, 117.95, 34.0, 34.6))


def test_copernicus_dem_round_trips_through_isce_sidecars(glo30: Path, tmp_path: Path) -> None:
    dem_dir = tmp_path / "dem"
    path = prepare_dem(AREA, dem_dir, geoid_path=glo30)

    assert path == (dem_dir / "demLat_N32_N34_Lon_E115_E117.dem.wgs84").resolve()
    heights = np.fromfile(path, dtype="<f4").reshape(200, 200)
    # Ellipsoidal heights: the tile's orthometric heights plus the geoid.
    np.testing.assert_allclose(heights, _tile_heights() + GEOID_M, atol=1e-3)

    props, comps = _xml_props(path)
    assert props["family"] == "demimage" and props["reference"] == "WGS84"
    assert props["data_type"] == "FLOAT" and props["scheme"] == "BIP"
    assert (props["width"], props["length"]) == ("200", "200")
    assert props["file_name"] == str(path)
    lon = comps["coordinate1"]
    lat = comps["coordinate2"]
    assert float(lon["startingvalue"]) == pytest.approx(115 - RES / 2)
    assert float(lon["delta"]) == pytest.approx(RES)
    assert float(lat["startingvalue"]) == pytest.approx(34 + RES / 2)
    assert float(lat["delta"]) == pytest.approx(-RES)
    assert lon["size"] == "200" and lat["size"] == "200"

    # GDAL reads both sidecars to the same grid and values.
    for opened in (f"{path}.vrt", str(path)):
        with rasterio.open(opened) as ds:
            assert ds.driver == ("VRT" if opened.endswith(".vrt") else "ISCE")
            assert ds.transform.almost_equals(Affine(RES, 0, 115 - RES / 2, 0, -RES, 34 + RES / 2))
            np.testing.assert_array_equal(ds.read(1), heights)

    info = read_dem_info(path)
    assert info.covers((32.0, 34.0, 115.0, 117.0))
    assert not info.covers((31.5, 34.0, 115.0, 117.0))


def test_existing_covering_dem_is_reused(
    glo30: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dem_dir = tmp_path / "dem"
    first = prepare_dem(AREA, dem_dir, geoid_path=glo30)
    mtime = first.stat().st_mtime_ns

    import dem_stitcher

    def no_stitching(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("stitched again")

    monkeypatch.setattr(dem_stitcher, "stitch_dem", no_stitching)
    assert prepare_dem((32.5, 33.5, 115.5, 116.5), dem_dir, geoid_path=glo30) == first
    assert first.stat().st_mtime_ns == mtime


def test_incomplete_dem_is_not_reused(glo30: Path, tmp_path: Path) -> None:
    dem_dir = tmp_path / "dem"
    path = prepare_dem(AREA, dem_dir, geoid_path=glo30)
    with path.open("r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(DemError, match="1000 bytes but its XML declares 160000"):
        read_dem_info(path)
    assert find_dem(dem_dir, AREA) is None
    assert prepare_dem(AREA, dem_dir, geoid_path=glo30) == path
    assert path.stat().st_size == 200 * 200 * 4


def test_area_without_tiles_is_a_clear_error(glo30: Path, tmp_path: Path) -> None:
    with pytest.raises(DemError, match=r"no tiles over S-45 N-43 W-31 E-29"):
        prepare_dem((-44.5, -43.5, -30.5, -29.5), tmp_path / "dem", geoid_path=glo30)
    assert not list((tmp_path / "dem").glob("*.dem.wgs84"))


def test_int16_dem_and_missing_sidecar(tmp_path: Path) -> None:
    heights = np.array([[1.4, -2.6], [np.nan, 40000.0]])
    info = write_isce_dem(
        tmp_path / "x.dem.wgs84", heights, lon0=10.0, dlon=0.5, lat0=5.0, dlat=-0.5, dtype="int16"
    )
    raw = np.fromfile(info.path, dtype="<i2").reshape(2, 2)
    assert raw.tolist() == [[1, -3], [0, 32767]]
    assert _xml_props(info.path)[0]["data_type"] == "SHORT"
    assert info.snwe == (4.0, 5.0, 10.0, 11.0)
    Path(f"{info.path}.xml").unlink()
    with pytest.raises(DemError, match=r"sidecar .* is missing"):
        read_dem_info(info.path)


FAKE_DEM_PY = """\
#!{python}
# Stand-in for ISCE2's dem.py: records what it was given, writes the DEM it would.
import json, os, stat, sys
from pathlib import Path
import numpy as np
from insarflow.tasks.dem import write_isce_dem

netrc = Path(os.environ["HOME"]) / ".netrc"
Path("dem_py_call.json").write_text(json.dumps({{
    "argv": sys.argv[1:],
    "netrc_mode": oct(stat.S_IMODE(netrc.stat().st_mode)) if netrc.exists() else None,
    "netrc_has_login": netrc.exists() and "login earth-user" in netrc.read_text(),
}}))
s, n, w, e = (int(v) for v in sys.argv[sys.argv.index("-b") + 1:][:4])
name = f"demLat_N{{s:02d}}_N{{n:02d}}_Lon_E{{w:03d}}_E{{e:03d}}.dem.wgs84"
step = 1 / 3600
write_isce_dem(Path(name), np.zeros((10, 10)), lon0=w - step / 2, dlon=(e - w) / 10,
               lat0=n + step / 2, dlat=-(n - s) / 10, dtype="int16")
xml = Path(name + ".xml")
xml.write_text(xml.read_text().replace(str(Path(name).resolve()), name))
print("dem.py: stitched", name)
"""


def test_isce2_dem_py_gets_credentials_through_a_private_netrc(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "dem.py"
    script.write_text(FAKE_DEM_PY.format(python=sys.executable))
    script.chmod(0o755)
    creds = Credentials(
        service="earthdata", username="earth-user", password="pa55-word!", source="test"
    )
    dem_dir = tmp_path / "dem"
    path = prepare_dem(
        AREA,
        dem_dir,
        source="isce2",
        credentials=creds,
        extra_path=[bin_dir],
        log_path=tmp_path / "logs" / "dem.log",
    )

    call = json.loads((dem_dir / "dem_py_call.json").read_text())
    assert call["argv"] == ["-a", "stitch", "-b", "32", "34", "115", "117", "-r", "-s", "1", "-c"]
    assert call["netrc_mode"] == "0o600" and call["netrc_has_login"] is True
    assert path.name == "demLat_N32_N34_Lon_E115_E117.dem.wgs84"
    assert _xml_props(path)[0]["file_name"] == str(path.resolve())
    log = (tmp_path / "logs" / "dem.log").read_text()
    assert "dem.py: stitched" in log and "pa55-word!" not in log


def test_isce2_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DemError, match=r"install ISCE2 .* or use dem_source: copernicus"):
        prepare_dem(AREA, tmp_path / "dem", source="isce2")
