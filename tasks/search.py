"""Sentinel-1 IW SLC search (ASF/CMR via asf_search), grouped by date and checked for coverage.

A date is kept only when the union of its slices' footprints covers the area; other
dates are listed in ``SearchResult.excluded`` with the reason, never dropped silently.
An empty search raises :class:`EmptySearchError` saying which criterion to widen.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asf_search
from prefect import task
from prefect.cache_policies import NO_CACHE
from shapely import wkt as shapely_wkt
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from insarflow.tasks.errors import PermanentError, retry_condition, unreachable_service

log = logging.getLogger(__name__)

SNWE = tuple[float, float, float, float]

# Uncovered share of the area tolerated for floating-point slop between adjacent slices.
COVERAGE_TOLERANCE = 1e-6

_PLATFORMS = {
    "S1A": "SENTINEL-1A",
    "S1B": "SENTINEL-1B",
    "S1C": "SENTINEL-1C",
    "S1D": "SENTINEL-1D",
}
# A polarization channel -> the SLC product polarizations that contain it.
_CHANNELS = {
    "VV": ["VV", "VV+VH"],
    "VH": ["VV+VH"],
    "HH": ["HH", "HH+HV"],
    "HV": ["HH+HV"],
}


class EmptySearchError(PermanentError):
    """The search found nothing usable; the message says which criterion to widen."""


class SearchRefused(PermanentError):
    """The search service answered the query with a 4xx status."""


class AreaError(ValueError, PermanentError):
    """The search area is malformed; the message names the value and the fix."""


@dataclass(frozen=True)
class Scene:
    """One Sentinel-1 SLC granule (a slice of an acquisition); ``size`` is in bytes."""

    granule: str
    url: str
    size: int | None
    md5: str | None
    start: datetime
    stop: datetime
    date: str
    footprint_wkt: str
    track: int
    frame: int | None
    flight_direction: str
    polarization: str
    platform: str

    @property
    def footprint(self) -> BaseGeometry:
        """The footprint as a shapely geometry (lon/lat)."""
        return shapely_wkt.loads(self.footprint_wkt)


@dataclass
class SearchResult:
    """Dates kept (YYYYMMDD -> slices sorted by time) and dates excluded with the reason."""

    dates: dict[str, list[Scene]]
    excluded: dict[str, str] = field(default_factory=dict)
    criteria: str = ""

    @property
    def scenes(self) -> list[Scene]:
        """All kept scenes, in date order."""
        return [s for d in sorted(self.dates) for s in self.dates[d]]


# ------------------------------------------------------------------ parsing


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def scene_from_product(product: asf_search.ASFProduct) -> Scene:
    """A Scene from an asf_search product (parsed from a CMR UMM granule record)."""
    p = product.properties
    # The UMM record keeps sub-second times that asf_search's properties round off.
    extent = product.umm.get("TemporalExtent", {}).get("RangeDateTime", {})
    start = _parse_time(extent.get("BeginningDateTime") or p["startTime"])
    stop = _parse_time(extent.get("EndingDateTime") or p["stopTime"])
    md5 = p.get("md5sum")
    return Scene(
        granule=p["sceneName"],
        url=p["url"],
        size=_int_or_none(p.get("bytes")),
        md5=md5 if md5 not in (None, "", "None", "NA") else None,
        start=start,
        stop=stop,
        date=start.strftime("%Y%m%d"),
        footprint_wkt=shape(product.geometry).wkt,
        track=int(p["pathNumber"]),
        frame=_int_or_none(p.get("frameNumber")),
        flight_direction=str(p.get("flightDirection") or ""),
        polarization=str(p.get("polarization") or ""),
        platform=str(p.get("platform") or ""),
    )


def scenes_from_umm(records: Iterable[dict[str, Any]]) -> list[Scene]:
    """Scenes from raw CMR UMM granule records (``{"meta": ..., "umm": ...}``)."""
    from asf_search.search.search_generator import as_ASFProduct

    session = asf_search.ASFSession()
    return [scene_from_product(as_ASFProduct(rec, session=session)) for rec in records]


# ------------------------------------------------------------------ the area


def area_polygon(area_snwe: SNWE | None, wkt: str | None = None) -> BaseGeometry:
    """The area as a shapely polygon (lon/lat) from a WKT or an S N W E bbox."""
    if wkt:
        try:
            geom = shapely_wkt.loads(wkt)
        except Exception as exc:
            raise AreaError(
                f"area WKT {wkt[:80]!r} does not parse ({exc}); give e.g. "
                "'POLYGON((W S, E S, E N, W N, W S))' in lon lat degrees"
            ) from None
        if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise AreaError(f"area WKT must be a non-empty POLYGON, got {geom.geom_type}")
        return geom
    if area_snwe is None:
        raise AreaError("no area given: pass a bbox (S N W E) or a WKT polygon")
    south, north, west, east = (float(v) for v in area_snwe)
    if not (-90 <= south < north <= 90):
        raise AreaError(
            f"bbox {list(area_snwe)} is not S N W E with -90 <= S < N <= 90; "
            "check the order (S N W E, not W E S N)"
        )
    if not (-180 <= west < east <= 180):
        raise AreaError(
            f"bbox {list(area_snwe)} needs -180 <= W < E <= 180 (S N W E order); "
            "areas crossing the antimeridian are not supported"
        )
    return box(west, south, east, north)


def _product_polarizations(polarization: str | None) -> list[str] | None:
    """ASF product polarizations for a channel ('vv') or a product value ('VV+VH')."""
    if not polarization:
        return None
    pol = polarization.upper()
    if pol in _CHANNELS:
        return _CHANNELS[pol]
    return [pol]


# ------------------------------------------------------------------ searching


def _options(
    area: BaseGeometry | None,
    *,
    track: int | None,
    frame: int | None,
    start: date | None,
    end: date | None,
    polarizations: list[str] | None,
    flight_direction: str | None,
    platforms: Sequence[str],
    session: asf_search.ASFSession,
    cmr_host: str | None,
) -> dict[str, Any]:
    """Keyword arguments for asf_search.search for the given criteria (None = unset)."""
    opts: dict[str, Any] = {
        "platform": [_PLATFORMS.get(p.upper(), p) for p in platforms],
        "processingLevel": "SLC",
        "beamMode": "IW",
        "session": session,
    }
    if cmr_host:
        opts["host"] = cmr_host
    if area is not None:
        opts["intersectsWith"] = area.wkt
    if track is not None:
        opts["relativeOrbit"] = track
    if frame is not None:
        opts["frame"] = frame
    if start is not None:
        opts["start"] = datetime.combine(start, time.min, tzinfo=UTC)
    if end is not None:
        opts["end"] = datetime.combine(end, time.min, tzinfo=UTC) + timedelta(days=1, seconds=-1)
    if polarizations:
        opts["polarization"] = polarizations
    if flight_direction:
        opts["flightDirection"] = flight_direction.upper()
    return opts


def _describe(
    area: BaseGeometry,
    track: int,
    frame: int | None,
    start: date,
    end: date,
    polarization: str | None,
    flight_direction: str | None,
) -> str:
    minx, miny, maxx, maxy = area.bounds
    parts = [
        f"area S{miny:.3f} N{maxy:.3f} W{minx:.3f} E{maxx:.3f}",
        f"track {track}",
        f"dates {start}..{end}",
    ]
    if frame is not None:
        parts.append(f"frame {frame}")
    if polarization:
        parts.append(f"polarization {polarization}")
    if flight_direction:
        parts.append(f"direction {flight_direction.upper()}")
    return ", ".join(parts)


def _diagnose(criteria: dict[str, Any], base: dict[str, Any], search: Callable[..., Any]) -> str:
    """Counts with each criterion dropped in turn, and what the area offers instead."""
    count: Callable[..., int] = asf_search.search_count
    lines: list[str] = []
    widen: list[str] = []
    for name, keys in criteria.items():
        relaxed = {k: v for k, v in base.items() if k not in keys}
        try:
            n = count(opts=asf_search.ASFSearchOptions(**relaxed))
        except Exception as exc:  # diagnostics must not hide the real outcome
            lines.append(f"  without the {name} filter: (count failed: {type(exc).__name__})")
            continue
        lines.append(f"  without the {name} filter: {n} scene(s)")
        if n:
            widen.append(name)
    if "track" in widen:
        relaxed = {
            k: v for k, v in base.items() if k not in ("relativeOrbit", "frame", "flightDirection")
        }
        try:
            found = search(opts=asf_search.ASFSearchOptions(**relaxed), maxResults=250)
            offers = sorted(
                {
                    (
                        int(p.properties["pathNumber"]),
                        str(p.properties.get("flightDirection")),
                        _int_or_none(p.properties.get("frameNumber")),
                    )
                    for p in found
                }
            )
            shown = ", ".join(f"track {t} {d} frame {f}" for t, d, f in offers[:12])
            lines.append(f"  tracks over this area in these dates: {shown}")
        except Exception as exc:
            lines.append(f"  (listing tracks failed: {type(exc).__name__})")
    if widen:
        advice = "widen or fix: " + ", ".join(widen)
    else:
        advice = "no single criterion explains it: widen several (dates and area first)"
    return "\n".join([*lines, advice])


def search_refused(exc: Exception, cmr_host: str | None) -> SearchRefused:
    """The search service's 4xx answer in plain words: which service, what to check."""
    from asf_search.constants import INTERNAL

    host = cmr_host or INTERNAL.CMR_HOST
    found = re.match(r"HTTP (\d{3})", str(exc))
    status = int(found.group(1)) if found else 0
    if status in (401, 403):
        check = (
            "the search needs no login, so this machine or a proxy on its way is being refused: "
            "check HTTPS_PROXY and the network's policy for that host"
        )
    elif status == 404:
        check = "the search address does not exist there: check any proxy or mirror in between"
    else:
        check = "check the area, dates and track in the configuration"
    return SearchRefused(
        f"the ASF search service ({host}) refused the query with HTTP {status or '4xx'}; "
        f"{check} ({exc})"
    )


def find_scenes(
    area_snwe: SNWE | None = None,
    *,
    wkt: str | None = None,
    track: int,
    start: date,
    end: date,
    frame: int | None = None,
    polarization: str | None = "vv",
    flight_direction: str | None = None,
    platforms: Sequence[str] = ("S1A", "S1B", "S1C"),
    allow_empty: bool = False,
    session: asf_search.ASFSession | None = None,
    cmr_host: str | None = None,
) -> list[Scene]:
    """Query ASF for IW SLC scenes matching the criteria; raise EmptySearchError on none."""
    if start > end:
        if allow_empty:  # e.g. an update whose next date lies past the configured end
            return []
        raise EmptySearchError(f"start {start} is after end {end}: swap them")
    area = area_polygon(area_snwe, wkt)
    polarizations = _product_polarizations(polarization)
    # asf_search would otherwise post failed queries to ASF's error-reporting service.
    asf_search.REPORT_ERRORS = False
    session = session or asf_search.ASFSession()
    base = _options(
        area,
        track=track,
        frame=frame,
        start=start,
        end=end,
        polarizations=polarizations,
        flight_direction=flight_direction,
        platforms=platforms,
        session=session,
        cmr_host=cmr_host,
    )
    search: Callable[..., Any] = asf_search.search
    try:
        products = search(opts=asf_search.ASFSearchOptions(**base))
    except Exception as exc:
        if unreachable := unreachable_service(exc, "the ASF search service"):
            raise unreachable from None
        # 408 and 429 say "later", not "no": they stay retryable.
        if isinstance(exc, asf_search.ASFSearch4xxError) and not re.match(
            r"HTTP (408|429)\b", str(exc)
        ):
            raise search_refused(exc, cmr_host) from None
        raise
    seen: set[str] = set()
    scenes: list[Scene] = []
    for product in products:
        scene = scene_from_product(product)
        if scene.granule not in seen:
            seen.add(scene.granule)
            scenes.append(scene)
    scenes.sort(key=lambda s: s.start)
    described = _describe(area, track, frame, start, end, polarization, flight_direction)
    log.info("search (%s): %d scene(s)", described, len(scenes))
    if scenes or allow_empty:
        return scenes
    criteria = {
        "date range": ("start", "end"),
        "track": ("relativeOrbit",),
        "area": ("intersectsWith",),
    }
    if frame is not None:
        criteria["frame"] = ("frame",)
    if polarizations:
        criteria["polarization"] = ("polarization",)
    if flight_direction:
        criteria["direction"] = ("flightDirection",)
    raise EmptySearchError(
        f"no Sentinel-1 IW SLC scenes for {described}.{_bbox_order_hint(area_snwe)}\n"
        f"{_diagnose(criteria, base, search)}"
    )


def _bbox_order_hint(area_snwe: SNWE | None) -> str:
    """When the bbox read the other way round (W E S N) is a valid area too, say so: both
    readings pass validation, and only the search shows the area is not the intended one."""
    if area_snwe is None:
        return ""
    south, north, west, east = area_snwe
    if not all(-90 <= v <= 90 for v in (west, east)):
        return ""
    return (
        f"\nthe bbox is read as S N W E: latitude {south:g} to {north:g}, longitude {west:g} "
        f"to {east:g}; if you meant latitude {west:g} to {east:g} and longitude {south:g} to "
        f"{north:g}, write area.bbox: [{west:g}, {east:g}, {south:g}, {north:g}]"
    )


def group_by_date(scenes: Iterable[Scene]) -> dict[str, list[Scene]]:
    """Scenes keyed by acquisition date (YYYYMMDD); slices of one date sorted by time."""
    groups: dict[str, list[Scene]] = {}
    for scene in scenes:
        groups.setdefault(scene.date, []).append(scene)
    return {d: sorted(groups[d], key=lambda s: s.start) for d in sorted(groups)}


def coverage_problem(scenes: Sequence[Scene], area: BaseGeometry) -> str | None:
    """Why one date's footprints fail to cover ``area``, or None when they cover it."""
    union = unary_union([s.footprint for s in scenes])
    missing = area.difference(union)
    share = missing.area / area.area if area.area else 0.0
    if share <= COVERAGE_TOLERANCE:
        return None
    minx, miny, maxx, maxy = missing.bounds
    return (
        f"its {len(scenes)} slice(s) cover {100 * (1 - share):.1f}% of the area; uncovered "
        f"part spans lat {miny:.3f}..{maxy:.3f}, lon {minx:.3f}..{maxx:.3f} "
        "(a slice is missing from the archive, or the area reaches past this track)"
    )


def check_coverage(
    groups: dict[str, list[Scene]],
    area: BaseGeometry,
    exclude_dates: Iterable[str] = (),
) -> SearchResult:
    """Split dates into kept (footprints cover the area) and excluded (with the reason)."""
    skip = set(exclude_dates)
    kept: dict[str, list[Scene]] = {}
    excluded: dict[str, str] = {}
    for day, scenes in groups.items():
        if day in skip:
            excluded[day] = "excluded by configuration (exclude_dates)"
            continue
        tracks = {s.track for s in scenes}
        if len(tracks) > 1:
            excluded[day] = f"slices from several tracks {sorted(tracks)}"
            continue
        problem = coverage_problem(scenes, area)
        if problem is None:
            kept[day] = scenes
        else:
            excluded[day] = problem
    return SearchResult(dates=kept, excluded=excluded)


def search_scenes(
    area_snwe: SNWE | None = None,
    *,
    wkt: str | None = None,
    track: int,
    start: date,
    end: date,
    frame: int | None = None,
    polarization: str | None = "vv",
    flight_direction: str | None = None,
    platforms: Sequence[str] = ("S1A", "S1B", "S1C"),
    exclude_dates: Sequence[str] = (),
    allow_empty: bool = False,
    session: asf_search.ASFSession | None = None,
    cmr_host: str | None = None,
) -> SearchResult:
    """Search, group by date and keep the dates whose slices cover the area."""
    area = area_polygon(area_snwe, wkt)
    scenes = find_scenes(
        area_snwe,
        wkt=wkt,
        track=track,
        start=start,
        end=end,
        frame=frame,
        polarization=polarization,
        flight_direction=flight_direction,
        platforms=platforms,
        allow_empty=allow_empty,
        session=session,
        cmr_host=cmr_host,
    )
    result = check_coverage(group_by_date(scenes), area, exclude_dates)
    result.criteria = _describe(area, track, frame, start, end, polarization, flight_direction)
    logger = log
    for day, reason in result.excluded.items():
        logger.warning("date %s excluded: %s", day, reason)
    if not result.dates and not allow_empty:
        raise EmptySearchError(
            f"scenes were found on {len(all_dates(result))} date(s) but none is usable "
            f"({result.criteria}):\n"
            + "\n".join(f"  {d}: {r}" for d, r in sorted(result.excluded.items()))
            + "\nshrink the area to what one track covers, or drop the frame filter so "
            "neighbouring slices are included"
        )
    return result


def all_dates(result: SearchResult) -> list[str]:
    """All dates seen by a search, kept or excluded."""
    return sorted({*result.dates, *result.excluded})


# ------------------------------------------------------------------ reporting


def summary_rows(result: SearchResult) -> list[dict[str, str]]:
    """One row per date (kept or excluded) for a table: date, status, scenes, size, detail."""
    rows: list[dict[str, str]] = []
    for day in all_dates(result):
        if day in result.dates:
            scenes = result.dates[day]
            size = sum(s.size or 0 for s in scenes) / 2**30
            rows.append(
                {
                    "date": day,
                    "status": "kept",
                    "scenes": str(len(scenes)),
                    "size_gib": f"{size:.2f}",
                    "detail": " ".join(s.granule for s in scenes),
                }
            )
        else:
            rows.append(
                {
                    "date": day,
                    "status": "excluded",
                    "scenes": "-",
                    "size_gib": "-",
                    "detail": result.excluded[day],
                }
            )
    return rows


def summary_table(result: SearchResult) -> Any:
    """A rich Table of :func:`summary_rows` for the CLI."""
    from rich.table import Table

    table = Table(title=f"Sentinel-1 search: {result.criteria}" if result.criteria else None)
    for column in ("date", "status", "scenes", "size_gib", "detail"):
        table.add_column(column, overflow="fold")
    for row in summary_rows(result):
        style = None if row["status"] == "kept" else "yellow"
        table.add_row(*row.values(), style=style)
    return table


def publish_search_artifact(result: SearchResult, key: str = "scene-search") -> None:
    """A Prefect table artifact of the search summary (call inside a flow or task run)."""
    from prefect.artifacts import create_table_artifact

    kept = len(result.dates)
    create_table_artifact(
        table=summary_rows(result),
        key=key,
        description=f"{kept} date(s) kept, {len(result.excluded)} excluded. {result.criteria}",
    )


@task(
    name="search-scenes",
    tags=["network"],
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=retry_condition,
    cache_policy=NO_CACHE,
)
def search_scenes_task(
    area_snwe: SNWE | None = None,
    *,
    wkt: str | None = None,
    track: int,
    start: date,
    end: date,
    frame: int | None = None,
    polarization: str | None = "vv",
    flight_direction: str | None = None,
    platforms: Sequence[str] = ("S1A", "S1B", "S1C"),
    exclude_dates: Sequence[str] = (),
    session: asf_search.ASFSession | None = None,
    cmr_host: str | None = None,
) -> SearchResult:
    """Prefect task: :func:`search_scenes` plus a table artifact of the result."""
    result = search_scenes(
        area_snwe,
        wkt=wkt,
        track=track,
        start=start,
        end=end,
        frame=frame,
        polarization=polarization,
        flight_direction=flight_direction,
        platforms=platforms,
        exclude_dates=exclude_dates,
        session=session,
        cmr_host=cmr_host,
    )
    publish_search_artifact(result)
    return result


__all__ = [
    "AreaError",
    "EmptySearchError",
    "Scene",
    "SearchResult",
    "area_polygon",
    "check_coverage",
    "coverage_problem",
    "find_scenes",
    "group_by_date",
    "publish_search_artifact",
    "scene_from_product",
    "scenes_from_umm",
    "search_scenes",
    "search_scenes_task",
    "summary_rows",
    "summary_table",
]
