"""The stack DEM in ISCE2's format: ellipsoidal heights, raw binary + ``.xml`` + ``.vrt``.

Default source: Copernicus GLO-30 via dem-stitcher (geoid removed, pixel-centre
registration as ISCE2 expects). Alternative: ISCE2's own ``dem.py -a stitch`` (SRTM,
needs an Earthdata login). Output is named like dem.py's,
``demLat_N32_N35_Lon_E115_E119.dem.wgs84``, covering the bbox plus a margin rounded out
to whole degrees; a valid DEM that already covers the area is reused.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from prefect import task
from prefect.cache_policies import NO_CACHE

from insarflow import atomic
from insarflow.tasks.credentials import Credentials, write_private_netrc
from insarflow.tasks.errors import PermanentError, retry_condition
from insarflow.tasks.shell import CommandError, run_command

log = logging.getLogger(__name__)

SNWE = tuple[float, float, float, float]
DemSource = Literal["copernicus", "isce2"]
DemDtype = Literal["float32", "int16"]

_ISCE_TYPES: dict[np.dtype[np.generic], tuple[str, str]] = {
    np.dtype("<f4"): ("FLOAT", "Float32"),
    np.dtype("<i2"): ("SHORT", "Int16"),
}
_FROM_ISCE: dict[str, np.dtype[np.generic]] = {"FLOAT": np.dtype("<f4"), "SHORT": np.dtype("<i2")}


class DemError(PermanentError):
    """The DEM cannot be made or is unusable; the message names the area/file and the fix."""


@dataclass(frozen=True)
class DemInfo:
    """Grid of an ISCE DEM: XML startingvalue (the geotransform origin) and spacing.

    As with ISCE2's own dem.py output and dem-stitcher's ``Point`` registration written
    through GDAL's ISCE driver, ``lon0``/``lat0`` equal the GDAL geotransform origin;
    ``dlat`` is negative (rows run north to south).
    """

    path: Path
    width: int
    length: int
    dtype: np.dtype[np.generic]
    lon0: float
    dlon: float
    lat0: float
    dlat: float

    @property
    def snwe(self) -> SNWE:
        """Extent of the raster (geotransform edges) as S N W E."""
        return (
            self.lat0 + self.length * self.dlat,
            self.lat0,
            self.lon0,
            self.lon0 + self.width * self.dlon,
        )

    def covers(self, snwe: SNWE) -> bool:
        """True when the raster spans ``snwe`` (within one pixel)."""
        s, n, w, e = self.snwe
        tol_lat, tol_lon = abs(self.dlat), abs(self.dlon)
        south, north, west, east = snwe
        return (
            s <= south + tol_lat
            and n >= north - tol_lat
            and w <= west + tol_lon
            and e >= east - tol_lon
        )


def dem_bounds(snwe: SNWE, margin_deg: float = 0.1) -> tuple[int, int, int, int]:
    """The bbox plus ``margin_deg`` rounded out to whole degrees, as integer S N W E."""
    south, north, west, east = snwe
    if not (-90 <= south < north <= 90 and -180 <= west < east <= 180):
        raise DemError(
            f"bbox {list(snwe)} is not S N W E with S < N and W < E inside [-90, 90] x "
            "[-180, 180]; check the order (S N W E, not W E S N)"
        )
    return (
        max(-90, math.floor(south - margin_deg)),
        min(90, math.ceil(north + margin_deg)),
        max(-180, math.floor(west - margin_deg)),
        min(180, math.ceil(east + margin_deg)),
    )


def _padded(snwe: SNWE, margin_deg: float) -> SNWE:
    south, north, west, east = snwe
    return (
        max(-90.0, south - margin_deg),
        min(90.0, north + margin_deg),
        max(-180.0, west - margin_deg),
        min(180.0, east + margin_deg),
    )


def dem_filename(bounds: tuple[int, int, int, int]) -> str:
    """dem.py's name for integer S N W E bounds, e.g. ``demLat_N32_N35_Lon_E115_E119.dem.wgs84``."""
    s, n, w, e = bounds

    def lat(v: int) -> str:
        return f"{'S' if v < 0 else 'N'}{abs(v):02d}"

    def lon(v: int) -> str:
        return f"{'W' if v < 0 else 'E'}{abs(v):03d}"

    return f"demLat_{lat(s)}_{lat(n)}_Lon_{lon(w)}_{lon(e)}.dem.wgs84"


# ------------------------------------------------------------------ ISCE files


def _prop(parent: ET.Element, name: str, value: object, doc: str) -> None:
    prop = ET.SubElement(parent, "property", name=name)
    ET.SubElement(prop, "value").text = str(value)
    ET.SubElement(prop, "doc").text = doc


def _coordinate(
    parent: ET.Element, name: str, doc: str, start: float, delta: float, size: int
) -> None:
    comp = ET.SubElement(parent, "component", name=name)
    ET.SubElement(comp, "factorymodule").text = "isceobj.Image"
    ET.SubElement(comp, "factoryname").text = "createCoordinate"
    ET.SubElement(comp, "doc").text = doc
    _prop(comp, "delta", repr(delta), "Coordinate quantization.")
    _prop(comp, "endingvalue", repr(start + size * delta), "Ending value of the coordinate.")
    _prop(comp, "family", "imagecoordinate", "Instance family name")
    _prop(comp, "name", "imagecoordinate_name", "Instance name")
    _prop(comp, "size", size, "Coordinate size.")
    _prop(comp, "startingvalue", repr(start), "Starting value of the coordinate.")


def _dem_xml(
    path: Path,
    width: int,
    length: int,
    isce_type: str,
    lon0: float,
    dlon: float,
    lat0: float,
    dlat: float,
) -> ET.Element:
    """The ``imageFile`` XML ISCE2 writes for a DEM image (family demimage, WGS84)."""
    root = ET.Element("imageFile")
    _prop(root, "access_mode", "read", "Image access mode.")
    _prop(root, "byte_order", "l", "Endianness of the image.")
    _coordinate(root, "coordinate1", "First coordinate of a 2D image (width).", lon0, dlon, width)
    _coordinate(
        root, "coordinate2", "Second coordinate of a 2D image (length).", lat0, dlat, length
    )
    _prop(root, "data_type", isce_type, "Image data type.")
    _prop(root, "extra_file_name", f"{path}.vrt", "For example name of vrt metadata.")
    _prop(root, "family", "demimage", "Instance family name")
    _prop(root, "file_name", str(path), "Name of the image file.")
    _prop(root, "image_type", "dem", "Image type used for displaying.")
    _prop(root, "length", length, "Image length")
    _prop(root, "name", "demimage_name", "Instance name")
    _prop(root, "number_bands", 1, "Number of image bands.")
    _prop(root, "reference", "WGS84", "Geodetic datum")
    _prop(root, "scheme", "BIP", "Interleaving scheme of the image.")
    _prop(root, "width", width, "Image width")
    _prop(root, "xmax", repr(lon0 + width * dlon), "Maximum range value")
    _prop(root, "xmin", repr(lon0), "Minimum range value")
    ET.indent(root, space="    ")
    return root


def _dem_vrt(
    path: Path,
    width: int,
    length: int,
    gdal_type: str,
    itemsize: int,
    lon0: float,
    dlon: float,
    lat0: float,
    dlat: float,
) -> ET.Element:
    """The VRT ISCE2 renders beside a geocoded image (SRS and GeoTransform from its XML)."""
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(length))
    ET.SubElement(root, "SRS").text = "EPSG:4326"
    ET.SubElement(root, "GeoTransform").text = f"{lon0!r}, {dlon!r}, 0.0, {lat0!r}, 0.0, {dlat!r}"
    band = ET.SubElement(
        root, "VRTRasterBand", dataType=gdal_type, band="1", subClass="VRTRawRasterBand"
    )
    ET.SubElement(band, "SourceFilename", relativeToVRT="1").text = path.name
    ET.SubElement(band, "ByteOrder").text = "LSB"
    ET.SubElement(band, "ImageOffset").text = "0"
    ET.SubElement(band, "PixelOffset").text = str(itemsize)
    ET.SubElement(band, "LineOffset").text = str(width * itemsize)
    ET.indent(root, space="    ")
    return root


def write_isce_dem(
    path: Path,
    heights: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    *,
    lon0: float,
    dlon: float,
    lat0: float,
    dlat: float,
    dtype: DemDtype = "float32",
) -> DemInfo:
    """Write a DEM (rows north to south) with ISCE2's ``.xml`` and ``.vrt``; raw file last.

    ``lon0``/``lat0`` are the geotransform origin, written as the XML startingvalue.
    """
    arr = np.asarray(heights)
    if arr.ndim != 2:
        raise DemError(f"{path}: DEM must be 2-D, got shape {arr.shape}")
    if dlat >= 0 or dlon <= 0:
        raise DemError(f"{path}: expected dlon > 0 and dlat < 0, got {dlon}, {dlat}")
    out_dtype = np.dtype("<f4") if dtype == "float32" else np.dtype("<i2")
    isce_type, gdal_type = _ISCE_TYPES[out_dtype]
    data = np.nan_to_num(arr.astype(np.float64), nan=0.0)
    if out_dtype.kind == "i":
        data = np.clip(np.rint(data), -32768, 32767)
    length, width = data.shape
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    xml = _dem_xml(path, width, length, isce_type, lon0, dlon, lat0, dlat)
    vrt = _dem_vrt(path, width, length, gdal_type, out_dtype.itemsize, lon0, dlon, lat0, dlat)
    with atomic.replacing(path) as tmp:  # the raster last: it is what marks the DEM complete
        data.astype(out_dtype).tofile(tmp)
        for element, suffix in ((xml, ".xml"), (vrt, ".vrt")):
            atomic.write_text(
                path.with_name(path.name + suffix), ET.tostring(element, encoding="unicode")
            )
    return DemInfo(path, width, length, out_dtype, lon0, dlon, lat0, dlat)


def read_dem_info(path: Path) -> DemInfo:
    """Grid and type from ``<path>.xml``; raise DemError when missing, malformed or incomplete."""
    xml_path = path.with_name(path.name + ".xml")
    try:
        root = ET.parse(xml_path).getroot()
        props = {
            p.get("name"): (p.findtext("value") or "").strip() for p in root.findall("property")
        }
        coords = {}
        for comp in root.findall("component"):
            cprops = {
                p.get("name"): (p.findtext("value") or "").strip() for p in comp.findall("property")
            }
            coords[(comp.get("name") or "").lower()] = cprops
        dtype = _FROM_ISCE[props["data_type"].upper()]
        info = DemInfo(
            path=path,
            width=int(props["width"]),
            length=int(props["length"]),
            dtype=dtype,
            lon0=float(coords["coordinate1"]["startingvalue"]),
            dlon=float(coords["coordinate1"]["delta"]),
            lat0=float(coords["coordinate2"]["startingvalue"]),
            dlat=float(coords["coordinate2"]["delta"]),
        )
    except FileNotFoundError:
        raise DemError(f"DEM sidecar {xml_path} is missing") from None
    except (ET.ParseError, KeyError, ValueError) as exc:
        raise DemError(f"DEM sidecar {xml_path} is malformed ({exc!r}); delete the DEM") from None
    expected = info.width * info.length * info.dtype.itemsize
    size = path.stat().st_size if path.is_file() else -1
    if size != expected:
        raise DemError(
            f"DEM {path} has {size} bytes but its XML declares {expected}; it is incomplete"
        )
    return info


def find_dem(dem_dir: Path, snwe: SNWE) -> DemInfo | None:
    """A valid DEM in ``dem_dir`` covering ``snwe``, or None."""
    if not dem_dir.is_dir():
        return None
    for path in sorted(dem_dir.glob("*.dem.wgs84")):
        try:
            info = read_dem_info(path)
        except DemError as exc:
            log.info("not reusing %s: %s", path.name, exc)
            continue
        if info.covers(snwe):
            return info
    return None


# ------------------------------------------------------------------ producing


def stitch_copernicus_dem(
    bounds: tuple[int, int, int, int],
    dem_dir: Path,
    *,
    dtype: DemDtype = "float32",
    geoid_path: Path | None = None,
    resolution_deg: float | None = None,
    n_threads: int = 4,
) -> DemInfo:
    """GLO-30 over integer S N W E ``bounds`` via dem-stitcher, written as an ISCE DEM."""
    from dem_stitcher import stitch_dem
    from dem_stitcher.exceptions import NoDEMCoverage

    s, n, w, e = bounds
    try:
        heights, profile = stitch_dem(
            [w, s, e, n],
            dem_name="glo_30",
            dst_ellipsoidal_height=True,
            dst_area_or_point="Point",
            dst_resolution=resolution_deg,
            # 0 here makes dem-stitcher fill gaps (open sea) with the geoid height.
            merge_nodata_value=0,
            geoid_path=str(geoid_path) if geoid_path else None,
            n_threads_downloading=n_threads,
            n_threads_reproj=n_threads,
        )
    except NoDEMCoverage:
        raise DemError(
            f"Copernicus GLO-30 has no tiles over S{s} N{n} W{w} E{e}; check the bbox "
            "(S N W E order) or use dem_source: isce2"
        ) from None
    t = profile["transform"]
    path = dem_dir / dem_filename(bounds)
    info = write_isce_dem(path, heights, lon0=t.c, dlon=t.a, lat0=t.f, dlat=t.e, dtype=dtype)
    log.info(
        "DEM %s: %d x %d samples, S%.4f N%.4f W%.4f E%.4f",
        path.name,
        info.width,
        info.length,
        *info.snwe,
    )
    return info


def stitch_isce2_dem(
    bounds: tuple[int, int, int, int],
    dem_dir: Path,
    *,
    credentials: Credentials | None = None,
    log_path: Path | None = None,
    extra_path: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> DemInfo:
    """Run ISCE2's ``dem.py -a stitch -b S N W E -r -s 1 -c`` in ``dem_dir``.

    ``env`` is ISCE2's environment (:func:`insarflow.tasks.isce2_env.probe_isce2`); default: ours.

    dem.py reads the Earthdata login only from ``~/.netrc``; given ``credentials`` it gets a
    private HOME holding a mode-600 .netrc for this one run (never a command-line argument).
    """
    s, n, w, e = bounds
    dem_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or dem_dir / "dem.py.log"
    args = ["dem.py", "-a", "stitch", "-b", str(s), str(n), str(w), str(e), "-r", "-s", "1", "-c"]
    env = dict(os.environ if env is None else env)
    secrets = credentials.secrets() if credentials else []
    with tempfile.TemporaryDirectory(prefix="insarflow-home-") as home:
        if credentials is not None:
            write_private_netrc(Path(home), [credentials])
            env["HOME"] = home
        try:
            run_command(
                args,
                log_path=log_path,
                cwd=dem_dir,
                env=env,
                extra_path=extra_path,
                secrets=secrets,
            )
        except FileNotFoundError:
            raise DemError(
                "dem.py (ISCE2) is not on PATH: install ISCE2 (conda-forge `isce2`) or use "
                "dem_source: copernicus"
            ) from None
        except CommandError as exc:
            raise DemError(f"ISCE2 dem.py failed for S{s} N{n} W{w} E{e}: {exc}") from None
    path = dem_dir / dem_filename(bounds)
    if not path.is_file():
        raise DemError(f"dem.py finished but {path} is missing; see {log_path}")
    info = read_dem_info(path)
    absolute_file_name(path)
    return info


def absolute_file_name(path: Path) -> None:
    """Point the XML's file_name at the absolute raster path (ISCE2 resolves it from cwd)."""
    xml_path = path.with_name(path.name + ".xml")
    tree = ET.parse(xml_path)
    for prop in tree.getroot().findall("property"):
        if prop.get("name") == "file_name":
            value = prop.find("value")
            if value is not None and value.text != str(path.resolve()):
                value.text = str(path.resolve())
                atomic.write_text(xml_path, ET.tostring(tree.getroot(), encoding="unicode"))
            return


def prepare_dem(
    snwe: SNWE,
    dem_dir: Path,
    *,
    source: DemSource = "copernicus",
    margin_deg: float = 0.1,
    credentials: Credentials | None = None,
    dtype: DemDtype = "float32",
    geoid_path: Path | None = None,
    log_path: Path | None = None,
    extra_path: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> Path:
    """The DEM for the bbox plus margin: reuse a valid covering one, else make it."""
    bounds = dem_bounds(snwe, margin_deg)
    wanted = _padded(snwe, margin_deg)
    existing = find_dem(dem_dir, wanted)
    if existing is not None:
        absolute_file_name(existing.path)
        log.info("reusing DEM %s (covers %s)", existing.path.name, list(wanted))
        return existing.path
    if source == "copernicus":
        info = stitch_copernicus_dem(bounds, dem_dir, dtype=dtype, geoid_path=geoid_path)
    elif source == "isce2":
        info = stitch_isce2_dem(
            bounds,
            dem_dir,
            credentials=credentials,
            log_path=log_path,
            extra_path=extra_path,
            env=env,
        )
    else:
        raise DemError(f"dem source {source!r} is unknown; use 'copernicus' or 'isce2'")
    if not info.covers(wanted):
        raise DemError(
            f"the new DEM {info.path} spans S{info.snwe[0]:.4f} N{info.snwe[1]:.4f} "
            f"W{info.snwe[2]:.4f} E{info.snwe[3]:.4f} but S N W E {list(wanted)} is needed"
        )
    return info.path


@task(
    name="prepare-dem",
    tags=["network"],
    retries=2,
    retry_delay_seconds=[30, 120],
    retry_condition_fn=retry_condition,
    cache_policy=NO_CACHE,
)
def prepare_dem_task(
    snwe: SNWE,
    dem_dir: Path,
    *,
    source: DemSource = "copernicus",
    margin_deg: float = 0.1,
    credentials: Credentials | None = None,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Prefect task: :func:`prepare_dem`."""
    return prepare_dem(
        snwe,
        dem_dir,
        source=source,
        margin_deg=margin_deg,
        credentials=credentials,
        log_path=log_path,
        env=env,
    )
