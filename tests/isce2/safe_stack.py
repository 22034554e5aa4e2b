"""A small real-format Sentinel-1 stack made from one real SAFE, for real-ISCE2 tests.

``../shared/fixtures/safe_pixels/`` holds one real S1B IW SLC (2021-04-01, relative orbit
168) whose measurement tiffs carry a constant pixel value. Further dates are copies shifted
by whole 12-day repeat cycles: every timestamp and name moves by the cycle, the absolute
orbit by 175 per cycle. Each date gets a precise-orbit file written from the annotation's
state vectors, offset across track by a few tens of metres (identical orbits would give a
zero baseline, for which ISCE2 writes ``Bperp (average): nan``), and a
``preview/map-overlay.kml`` from the manifest's footprint (stackSentinel reads it).
A GeoTIFF DEM over the area completes the inputs a user would bring.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from .known_deformation import FloatArray, GaussianBowl, Geolocation, PlantedSwath, swath_annotation

CYCLE_DAYS = 12
DAYS_PER_YEAR = 365.25
ORBITS_PER_CYCLE = 175  # Sentinel-1 repeat cycle

_ISO = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d+)?")
_COMPACT = re.compile(r"(\d{8})([tT])(\d{6})")
_SAFE_NAME = re.compile(
    r"^(?P<head>S1[AB]_IW_SLC__1S\w{2})_(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})_"
    r"(?P<orbit>\d{6})_(?P<take>[0-9A-F]{6})_(?P<uid>[0-9A-F]{4})$"
)


@dataclass(frozen=True)
class SafeStack:
    """What :func:`make_safe_stack` wrote."""

    slc_dir: Path
    orbit_dir: Path
    safes: list[Path]
    orbits: list[Path]
    dates: list[str]


def _shift_iso(match: re.Match[str], delta: timedelta) -> str:
    frac = match.group(3) or ""
    stamp = datetime.strptime(f"{match.group(1)}T{match.group(2)}", "%Y-%m-%dT%H:%M:%S") + delta
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + frac


def _shift_compact(match: re.Match[str], delta: timedelta) -> str:
    stamp = datetime.strptime(match.group(1) + match.group(3), "%Y%m%d%H%M%S") + delta
    return stamp.strftime("%Y%m%d") + match.group(2) + stamp.strftime("%H%M%S")


def _shift_text(text: str, cycles: int, orbit: int) -> str:
    """Every timestamp moved by ``cycles`` repeat cycles, the absolute orbit renumbered."""
    delta = timedelta(days=CYCLE_DAYS * cycles)
    new_orbit = orbit + ORBITS_PER_CYCLE * cycles
    text = _ISO.sub(lambda m: _shift_iso(m, delta), text)
    text = _COMPACT.sub(lambda m: _shift_compact(m, delta), text)
    text = text.replace(f"{orbit:06d}", f"{new_orbit:06d}")
    return re.sub(rf">\s*{orbit}\s*<", f">{new_orbit}<", text)


def _kml(footprint: str) -> str:
    """stackSentinel's ``preview/map-overlay.kml`` from the manifest's ``lat,lon`` footprint."""
    lonlat = " ".join(
        f"{float(lon):.6f},{float(lat):.6f}"
        for lat, lon in (pair.split(",") for pair in footprint.split())
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<kml xmlns:gx="http://www.google.com/kml/ext/2.2">\n'
        "  <Document><Folder><GroundOverlay>\n"
        f"    <gx:LatLonQuad><coordinates>{lonlat}</coordinates></gx:LatLonQuad>\n"
        "  </GroundOverlay></Folder></Document>\n</kml>\n"
    )


def _state_vectors(annotation: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    root = ET.fromstring(annotation)
    vectors = []
    for orbit in root.iterfind("generalAnnotation/orbitList/orbit"):
        pos = np.array([float(orbit.findtext(f"position/{c}") or "nan") for c in "xyz"])
        vel = np.array([float(orbit.findtext(f"velocity/{c}") or "nan") for c in "xyz"])
        vectors.append((orbit.findtext("time") or "", pos, vel))
    return vectors


def _orbit_file(
    orbit_dir: Path, mission: str, acquired: datetime, vectors, offset_m: float, orbit: int
) -> Path:
    """A POEORB file holding ``vectors`` moved ``offset_m`` along the orbit normal."""
    day = acquired.replace(hour=0, minute=0, second=0, microsecond=0)
    start = day - timedelta(hours=1, seconds=18)
    stop = day + timedelta(days=1, minutes=59, seconds=42)
    created = day + timedelta(days=20)
    name = (
        f"{mission}_OPER_AUX_POEORB_OPOD_{created:%Y%m%dT%H%M%S}_"
        f"V{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}.EOF"
    )
    osvs = []
    for time, pos, vel in vectors:
        normal = np.cross(pos, vel)
        moved = pos + offset_m * normal / np.linalg.norm(normal)
        osvs.append(
            "<OSV>"
            f"<TAI>TAI={time}</TAI><UTC>UTC={time}</UTC><UT1>UT1={time}</UT1>"
            f"<Absolute_Orbit>+{orbit}</Absolute_Orbit>"
            + "".join(f'<{c} unit="m">{v:.6f}</{c}>' for c, v in zip("XYZ", moved, strict=True))
            + "".join(f'<V{c} unit="m/s">{v:.6f}</V{c}>' for c, v in zip("XYZ", vel, strict=True))
            + "<Quality>NOMINAL</Quality></OSV>"
        )
    text = (
        '<?xml version="1.0" ?>\n<Earth_Explorer_File>\n'
        "<Earth_Explorer_Header><Fixed_Header>"
        f"<File_Name>{name.removesuffix('.EOF')}</File_Name>"
        "<File_Type>AUX_POEORB</File_Type>"
        f"<Validity_Period><Validity_Start>UTC={start:%Y-%m-%dT%H:%M:%S}</Validity_Start>"
        f"<Validity_Stop>UTC={stop:%Y-%m-%dT%H:%M:%S}</Validity_Stop></Validity_Period>"
        "</Fixed_Header></Earth_Explorer_Header>\n"
        f'<Data_Block type="xml"><List_of_OSVs count="{len(osvs)}">\n'
        + "\n".join(osvs)
        + "\n</List_of_OSVs></Data_Block>\n</Earth_Explorer_File>\n"
    )
    path = orbit_dir / name
    path.write_text(text)
    return path


def make_safe_stack(
    source_zip: Path,
    slc_dir: Path,
    orbit_dir: Path,
    *,
    dates: int = 3,
    offsets_m: tuple[float, ...] = (0.0, 25.0, -20.0),
    deformation: GaussianBowl | None = None,
    swath: int = 1,
    polarization: str = "vv",
) -> SafeStack:
    """``dates`` SAFE zips 12 days apart (the first is the source's date) and their orbits.

    With ``deformation``, the ``swath``/``polarization`` measurement tiff of each date
    carries it on coherent speckle (:mod:`tests.isce2.known_deformation`).
    """
    if len(offsets_m) < dates:
        raise ValueError(f"offsets_m gives {len(offsets_m)} orbit offsets for {dates} dates")
    slc_dir.mkdir(parents=True, exist_ok=True)
    orbit_dir.mkdir(parents=True, exist_ok=True)
    name = source_zip.name.removesuffix(".zip")
    match = _SAFE_NAME.match(name)
    if match is None:
        raise ValueError(f"{source_zip} is not an IW SLC SAFE zip name")
    mission = name[:3]
    orbit = int(match["orbit"])
    safes, orbits, date_list = [], [], []
    with zipfile.ZipFile(source_zip) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    planted = None
    if deformation is not None:
        annotation_text = swath_annotation(
            {info.filename: data for info, data in members}, swath, polarization
        )
        planted = PlantedSwath.build(annotation_text, deformation)
    tiff = re.compile(rf"/measurement/s1[ab]-iw{swath}-slc-{polarization}-[^/]+\.tiff$")
    for cycle in range(dates):
        new_name = _shift_text(name, cycle, orbit)
        uid = f"{(int(match['uid'], 16) + cycle) % 0x10000:04X}"
        new_name = new_name[: -len(match["uid"])] + uid
        out = slc_dir / f"{new_name}.zip"
        annotation = ""
        footprint = ""
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
            for info, data in members:
                member = _shift_text(info.filename, cycle, orbit).replace(
                    f"{_shift_text(name, cycle, orbit)}.SAFE", f"{new_name}.SAFE"
                )
                if member.endswith((".xml", ".safe")):
                    text = _shift_text(data.decode("utf-8"), cycle, orbit)
                    data = text.encode("utf-8")
                    if "/annotation/s1" in member and not annotation:
                        annotation = text
                    if member.endswith("manifest.safe"):
                        found = re.search(r"<gml:coordinates>([^<]+)</gml:coordinates>", text)
                        footprint = found.group(1) if found else ""
                if planted is not None and tiff.search(member):
                    data = planted.tiff(data, years=cycle * CYCLE_DAYS / DAYS_PER_YEAR)
                dst.writestr(member, data)
            if not footprint:
                raise ValueError(f"{source_zip}: manifest.safe has no footprint")
            dst.writestr(f"{new_name}.SAFE/preview/map-overlay.kml", _kml(footprint))
        acquired = datetime.strptime(new_name.split("_")[5], "%Y%m%dT%H%M%S")
        safes.append(out)
        date_list.append(acquired.strftime("%Y%m%d"))
        orbits.append(
            _orbit_file(
                orbit_dir,
                mission,
                acquired,
                _state_vectors(annotation),
                offsets_m[cycle],
                orbit + ORBITS_PER_CYCLE * cycle,
            )
        )
    return SafeStack(slc_dir, orbit_dir, safes, orbits, date_list)


def write_geotiff_dem(
    path: Path,
    snwe: tuple[float, float, float, float],
    heights_of: Callable[[FloatArray, FloatArray], FloatArray] | None = None,
    step: float = 1 / 3600,
) -> Path:
    """A DEM GeoTIFF (ellipsoidal heights) over ``snwe``: ``heights_of(lat, lon)`` at pixel
    centres, by default a smooth synthetic terrain at 1 arc-second."""
    import rasterio
    from rasterio.transform import from_origin

    south, north, west, east = snwe
    lat = north - (np.arange(round((north - south) / step)) + 0.5) * step
    lon = west + (np.arange(round((east - west) / step)) + 0.5) * step
    lon2, lat2 = np.meshgrid(lon, lat)
    if heights_of is None:
        heights = 800 + 300 * np.sin(lon2 * 40) * np.cos(lat2 * 30)
    else:
        heights = heights_of(lat2, lon2)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=lon.size,
        height=lat.size,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=from_origin(west, north, step, step),
    ) as dst:
        dst.write(heights.astype("float32"), 1)
    return path


def annotation_dem(path: Path, snwe: tuple[float, float, float, float], annotation: str) -> Path:
    """A DEM GeoTIFF (3 arc-seconds) of the annotation geolocation grid's own heights."""
    from scipy.interpolate import griddata

    geo = Geolocation.from_annotation(annotation)
    points = np.column_stack([geo.lon.ravel(), geo.lat.ravel()])

    def heights_of(lat: FloatArray, lon: FloatArray) -> FloatArray:
        linear = griddata(points, geo.height.ravel(), (lon, lat), method="linear")
        nearest = griddata(points, geo.height.ravel(), (lon, lat), method="nearest")
        return np.where(np.isfinite(linear), linear, nearest)

    return write_geotiff_dem(path, snwe, heights_of, step=3 / 3600)


def user_stack_config(
    root: Path,
    source_zip: Path,
    isce2_env_script: Path,
    *,
    name: str,
    dates: int,
    offsets_m: tuple[float, ...],
    deformation: GaussianBowl,
    polarization: str,
    bbox: tuple[float, float, float, float],
    dem_snwe: tuple[float, float, float, float],
    end: str,
    topsstack: dict[str, object],
    mintpy: dict[str, object] | None = None,
) -> Path:
    """A user's folders under ``root/user`` (SLC/, orbits/, a DEM from the IW1 annotation's
    heights) and ``root/config.yaml`` taking them through ``inputs.*`` with real ISCE2, no
    downloads (6 x 18 looks unless ``topsstack`` says otherwise; 2 workers, 16 GB)."""
    import yaml

    (root / "home").mkdir()
    user = root / "user"
    stack = make_safe_stack(
        source_zip,
        user / "SLC",
        user / "orbits",
        dates=dates,
        offsets_m=offsets_m,
        deformation=deformation,
        polarization=polarization,
    )
    with zipfile.ZipFile(stack.safes[0]) as safe:
        members = {n: safe.read(n) for n in safe.namelist() if n.endswith(".xml")}
    annotation_dem(user / "dem.tif", dem_snwe, swath_annotation(members, 1, polarization))
    config: dict[str, object] = {
        "name": name,
        "work_dir": str(root / "work"),
        "engine": "isce2",
        "area": {"bbox": list(bbox)},
        "acquisition": {
            "track": 168,
            "start": "2021-03-25",
            "end": end,
            "polarization": polarization,
            "platforms": ["S1B"],
        },
        "inputs": {
            "slc_dir": str(user / "SLC"),
            "orbit_dir": str(user / "orbits"),
            "dem": str(user / "dem.tif"),
            "download_missing": False,
        },
        "isce2": {"env_script": str(isce2_env_script)},
        "topsstack": {"coregistration": "geometry", "azimuth_looks": 6, "range_looks": 18}
        | topsstack,
        "compute": {"workers": 2, "memory_gb": 16},
        **({"mintpy": mintpy} if mintpy else {}),
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
