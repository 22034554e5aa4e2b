"""Inputs a user already has on disk: SAFE zips, orbit files, a DEM.

They are used in place and never moved, modified or deleted: the work directory gets
symbolic links to them (stackSentinel.py reads one SLC folder and one orbit folder, which
may then also hold what insarflow downloads), and an ISCE2 DEM gets a copy of its small
``.xml``/``.vrt`` sidecars pointing at the user's raster. A GeoTIFF DEM is converted into the
work directory.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path

from insarflow.tasks.dem import (
    SNWE,
    DemError,
    DemInfo,
    absolute_file_name,
    read_dem_info,
    write_isce_dem,
)
from insarflow.tasks.orbits import parse_orbit_name, parse_safe_name

_SAFE = re.compile(
    r"^(?P<platform>S1[A-D])_IW_SLC__1S\w{2}_(?P<start>\d{8})T\d{6}_\d{8}T\d{6}_"
    r"(?P<orbit>\d{6})_[0-9A-F]{6}_[0-9A-F]{4}$"
)
# Absolute orbit -> relative orbit (track): rel = (abs - offset) % 175 + 1.
_TRACK_OFFSET = {"S1A": 73, "S1B": 27, "S1C": 172}
_GEOTIFF_SUFFIXES = (".tif", ".tiff")


class InputsError(ValueError):
    """A configured input is missing or unusable; the message names the field and the fix."""


def relative_orbit(platform: str, absolute_orbit: int) -> int | None:
    """The track of an acquisition, from its platform and absolute orbit number."""
    offset = _TRACK_OFFSET.get(platform)
    return None if offset is None else (absolute_orbit - offset) % 175 + 1


def local_scenes(
    slc_dir: Path,
    *,
    track: int,
    start: date,
    end: date | None,
    platforms: Sequence[str],
    exclude_dates: Iterable[date] = (),
) -> dict[str, list[Path]]:
    """The IW SLC zips in ``slc_dir`` that belong to the stack, by date (YYYYMMDD)."""
    if not slc_dir.is_dir():
        raise InputsError(
            f"inputs.slc_dir: {slc_dir} is not a folder; give the folder holding the SAFE zips"
        )
    excluded = {d.strftime("%Y%m%d") for d in exclude_dates}
    by_date: dict[str, list[Path]] = {}
    for path in sorted(slc_dir.glob("*.zip")):
        match = _SAFE.match(path.name.removesuffix(".zip"))
        if match is None:
            continue
        acquired = datetime.strptime(match["start"], "%Y%m%d").date()
        if (
            match["platform"] not in platforms
            or relative_orbit(match["platform"], int(match["orbit"])) != track
            or acquired < start
            or (end is not None and acquired > end)
            or match["start"] in excluded
        ):
            continue
        by_date.setdefault(match["start"], []).append(path.absolute())
    return by_date


def link_into(files: Iterable[Path], folder: Path) -> list[Path]:
    """Symbolic links in ``folder`` to ``files`` (a file already there by that name is kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for source in files:
        link = folder / source.name
        if link.is_symlink() and link.resolve() != source.resolve():
            link.unlink()
        if not link.exists() and not link.is_symlink():
            link.symlink_to(source.absolute())
        links.append(link)
    return links


def covering_orbits(orbit_dir: Path, safes: Sequence[Path], margin_s: float = 60.0) -> list[Path]:
    """The orbit files in ``orbit_dir`` that cover at least one of ``safes``."""
    from datetime import timedelta

    if not orbit_dir.is_dir():
        raise InputsError(
            f"inputs.orbit_dir: {orbit_dir} is not a folder; give the folder holding the "
            "*.EOF orbit files"
        )
    scenes = [parse_safe_name(s) for s in safes]
    margin = timedelta(seconds=margin_s)
    found = []
    for path in sorted(orbit_dir.glob("*.EOF")):
        orbit = parse_orbit_name(path)
        if orbit is not None and any(orbit.covers(s, margin) for s in scenes):
            found.append(path.absolute())
    return found


def _check_covers(info: DemInfo, snwe: SNWE, source: Path) -> None:
    if not info.covers(snwe):
        s, n, w, e = info.snwe
        raise InputsError(
            f"inputs.dem: {source} spans S{s:.4f} N{n:.4f} W{w:.4f} E{e:.4f} but the area "
            f"(S N W E) {list(snwe)} is not inside it; give a DEM covering the area with a "
            "margin, or leave inputs.dem empty to have one made"
        )


def user_dem(dem: Path, dem_dir: Path, snwe: SNWE) -> Path:
    """The user's DEM as an ISCE2 DEM inside ``dem_dir``, checked to cover ``snwe``."""
    if not dem.is_file():
        raise InputsError(
            f"inputs.dem: {dem} does not exist; give an ISCE2 DEM (.dem.wgs84 with .xml and "
            ".vrt) or a GeoTIFF"
        )
    dem_dir.mkdir(parents=True, exist_ok=True)
    if dem.suffix.lower() in _GEOTIFF_SUFFIXES:
        return _converted_geotiff(dem, dem_dir, snwe)
    try:
        info = read_dem_info(dem)
    except DemError as exc:
        raise InputsError(
            f"inputs.dem: {dem} is not a usable ISCE2 DEM ({exc}); give the raster with its "
            ".xml beside it, or a GeoTIFF"
        ) from None
    _check_covers(info, snwe, dem)
    link = link_into([dem], dem_dir)[0]
    # ISCE2 reads the raster's name from the .xml: private copies, pointed at the raster.
    for suffix in (".xml", ".vrt"):
        side = dem.with_name(dem.name + suffix)
        if side.is_file():
            shutil.copyfile(side, link.with_name(link.name + suffix))
    absolute_file_name(link)
    return link


def _converted_geotiff(tif: Path, dem_dir: Path, snwe: SNWE) -> Path:
    """``tif`` written as an ISCE2 DEM (float32, pixel-centre origin); reused while newer."""
    import numpy as np
    import rasterio

    out = dem_dir / f"{tif.stem}.dem.wgs84"
    if out.is_file() and out.stat().st_mtime >= tif.stat().st_mtime:
        try:
            info = read_dem_info(out)
            _check_covers(info, snwe, tif)
            return out
        except DemError:
            pass
    try:
        with rasterio.open(tif) as src:
            if src.crs is None or src.crs.to_epsg() != 4326:
                raise InputsError(
                    f"inputs.dem: {tif} is in {src.crs or 'no CRS'}; ISCE2 needs WGS84 "
                    "lon/lat (EPSG:4326): reproject it, e.g. gdalwarp -t_srs EPSG:4326"
                )
            heights = src.read(1, masked=True).filled(0).astype(np.float32)
            t = src.transform
    except rasterio.errors.RasterioIOError as exc:
        raise InputsError(f"inputs.dem: {tif} cannot be read as a GeoTIFF ({exc})") from None
    # ISCE2's startingValue is the first pixel's centre; GDAL's origin is its corner.
    info = write_isce_dem(out, heights, lon0=t.c + t.a / 2, dlon=t.a, lat0=t.f + t.e / 2, dlat=t.e)
    _check_covers(info, snwe, tif)
    return out
