"""Bursts of a Sentinel-1 SAFE that an area selects, read from the SAFE's annotation.

ISCE2's merge step crashes when the area covers a single burst of a swath, long after
the stack started. Which bursts ISCE2 keeps is known from the SAFE zips alone: its reader
(``Sentinel1.crop``) keeps every burst whose bounding box overlaps the area, the box being
the burst's corners (first and last line, near and far range) located at heights -500 m
and 9,000 m (``BurstSLC.getBbox``). The annotation's geolocation grid gives each corner at
terrain height, with its incidence angle; at a fixed slant range a point at height h lies
(h0 - h) / tan(incidence) further from the sensor than one at h0. These boxes agree with
ISCE2 2.6.5's to about 0.001 degrees of latitude.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from insarflow.tasks.search import AreaError

#: The heights ISCE2's ``BurstSLC.getBbox`` locates burst corners at (m).
BBOX_HEIGHTS_M = (-500.0, 9000.0)
_EARTH_RADIUS_M = 6_371_008.8
# Bursts of two slices of one acquisition that start this close are the same burst.
_SAME_BURST_S = 1.0

SNWE = tuple[float, float, float, float]


class SingleBurstError(AreaError):
    """The area covers a single burst of a swath; the message names the field and the fix."""


@dataclass(frozen=True)
class BurstBox:
    """One burst: its first line's time (POSIX seconds) and its ISCE2 bounding box."""

    start: float
    snwe: SNWE


def _seconds(text: str | None) -> float:
    if text is None:
        raise ValueError("annotation lacks an azimuthTime")
    return datetime.fromisoformat(text).timestamp()


def _annotation(safe_zip: Path, swath: int, polarization: str) -> ElementTree.Element | None:
    pattern = re.compile(rf"/annotation/s1[a-d]-iw{swath}-slc-{polarization.lower()}-[^/]+\.xml$")
    with zipfile.ZipFile(safe_zip) as zf:
        names = [n for n in zf.namelist() if pattern.search(n)]
        return ElementTree.fromstring(zf.read(names[0])) if names else None


def burst_boxes(annotation: ElementTree.Element) -> list[BurstBox]:
    """Every burst of one swath's annotation with the bounding box ISCE2 gives it."""
    lines_per_burst = int(annotation.findtext("swathTiming/linesPerBurst") or 0)
    dt = float(annotation.findtext("imageAnnotation/imageInformation/azimuthTimeInterval") or 0)
    starts = [
        _seconds(b.findtext("azimuthTime"))
        for b in annotation.iterfind("swathTiming/burstList/burst")
    ]
    rows: dict[int, list[list[float]]] = {}
    for p in annotation.iterfind("geolocationGrid/geolocationGridPointList/geolocationGridPoint"):
        rows.setdefault(int(p.findtext("line") or 0), []).append(
            [_seconds(p.findtext("azimuthTime"))]
            + [
                float(p.findtext(k) or "nan")
                for k in ("pixel", "latitude", "longitude", "height", "incidenceAngle")
            ]
        )
    # (lines, pixels, [time, pixel, lat, lon, height, incidence]), near range first
    grid = np.array([sorted(r, key=lambda v: v[1]) for _, r in sorted(rows.items())])
    t0 = grid[0, 0, 0]

    def at(col: int, when: float) -> np.ndarray:
        """lat, lon, height, incidence of grid column ``col`` at time ``when`` (the grid is
        smooth in time; a quadratic reaches the last burst's end, past the last grid line)."""
        t = grid[:, col, 0] - t0
        return np.array(
            [np.polyval(np.polyfit(t, grid[:, col, k], 2), when - t0) for k in range(2, 6)]
        )

    near, far = 0, grid.shape[1] - 1
    boxes = []
    for start in starts:
        lats, lons = [], []
        for when in (start, start + (lines_per_burst - 1) * dt):
            for col, inner in ((near, near + 1), (far, far - 1)):
                lat, lon, height, incidence = at(col, when)
                lat_in, lon_in = at(inner, when)[:2]
                # unit vector (north, east) pointing away from the sensor at this corner
                sign = 1.0 if col == far else -1.0
                north = sign * (lat - lat_in)
                east = sign * (lon - lon_in) * math.cos(math.radians(lat))
                norm = math.hypot(north, east)
                for h in BBOX_HEIGHTS_M:
                    shift = (h - height) / math.tan(math.radians(incidence)) / _EARTH_RADIUS_M
                    lats.append(lat + math.degrees(shift * north / norm))
                    lons.append(
                        lon + math.degrees(shift * east / norm / math.cos(math.radians(lat)))
                    )
        boxes.append(BurstBox(start, (min(lats), max(lats), min(lons), max(lons))))
    return boxes


def _overlaps(box: SNWE, area: SNWE) -> bool:
    """ISCE2's test (``Sentinel1.crop``): strict overlap in latitude and in longitude."""
    return not (box[2] >= area[3] or box[3] <= area[2] or box[1] <= area[0] or box[0] >= area[1])


def bursts_in_area(
    safe_zips: Iterable[Path], swaths: Sequence[int], polarization: str, area: SNWE
) -> dict[int, int]:
    """How many bursts of each swath ISCE2 keeps for ``area`` (S N W E) from the SAFE zips of
    one acquisition (slices joined); a swath without an annotation in that polarization is
    left out."""
    counts: dict[int, int] = {}
    zips = list(safe_zips)
    for swath in swaths:
        starts: list[float] = []
        found = False
        for safe in zips:
            annotation = _annotation(safe, swath, polarization)
            if annotation is None:
                continue
            found = True
            for box in burst_boxes(annotation):
                fresh = all(abs(box.start - s) > _SAME_BURST_S for s in starts)
                if fresh and _overlaps(box.snwe, area):
                    starts.append(box.start)
        if found:
            counts[swath] = len(starts)
    return counts


def stack_burst_count(
    safe_zips: Iterable[Path], swaths: Sequence[int], polarization: str, area: SNWE
) -> int | None:
    """The bursts ISCE2 keeps over all ``swaths`` of one acquisition's SAFE zips (the stack's
    reference date); None when the zips cannot be read or select nothing."""
    try:
        return sum(bursts_in_area(safe_zips, swaths, polarization, area).values()) or None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def check_bbox_bursts(
    bursts_per_swath: Mapping[int, int], *, field: str = "area.bbox", value: object = None
) -> None:
    """Refuse an area that covers exactly one burst of a swath (ISCE2's merge crashes)."""
    single = sorted(swath for swath, count in bursts_per_swath.items() if count == 1)
    if single:
        names = ", ".join(f"IW{s}" for s in single)
        given = f" {value}" if value is not None else ""
        raise SingleBurstError(
            f"{field}{given} covers a single burst of swath {names}: ISCE2's merge step "
            f"crashes on a single-burst swath; enlarge {field} along the track (north-south) "
            f"to at least 2 bursts, or remove {', '.join(map(str, single))} from "
            "topsstack.swaths"
        )


def check_area_bursts(
    safe_zips: Iterable[Path],
    swaths: Sequence[int],
    polarization: str,
    area: SNWE,
    *,
    field: str = "area.bbox",
) -> dict[int, int]:
    """:func:`bursts_in_area` then :func:`check_bbox_bursts`; the counts when they pass."""
    counts = bursts_in_area(safe_zips, swaths, polarization, area)
    check_bbox_bursts(counts, field=field, value=list(area))
    return counts


def reference_scenes(safe_zips: Iterable[Path], reference_date: str | None) -> list[Path]:
    """The SAFE zips of the stack's reference date (YYYYMMDD; None: the first date), whose
    bursts are the ones the stack is merged on."""
    from insarflow.tasks.orbits import parse_safe_name

    by_date: dict[str, list[Path]] = {}
    for safe in safe_zips:
        by_date.setdefault(parse_safe_name(safe).date, []).append(safe)
    if not by_date:
        return []
    return sorted(by_date.get(reference_date or min(by_date), []))
