"""Search against recorded CMR responses replayed by a local CMR stand-in (no internet)."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from insarflow.tasks.errors import ServiceUnreachable, retry_condition
from insarflow.tasks.search import (
    AreaError,
    EmptySearchError,
    Scene,
    SearchRefused,
    area_polygon,
    check_coverage,
    find_scenes,
    group_by_date,
    scenes_from_umm,
    search_scenes,
    search_scenes_task,
    summary_rows,
    summary_table,
)
from tests.acquisition.cmr_server import FakeCMR, load_records
from tests.acquisition.fault_server import FaultServer

pytestmark = [
    # asf_search's WKT repair calls shapely.ops.transform, deprecated in shapely 2.1.
    pytest.mark.filterwarnings(
        "ignore:The 'shapely.ops.transform\\(\\)' function is deprecated:DeprecationWarning"
    ),
]

# Inside every footprint of the recorded Fairbanks stack (track 94, frame 210, ascending).
AREA = (64.5, 65.3, -148.5, -146.0)
JAN_2021 = {"start": date(2021, 1, 1), "end": date(2021, 1, 31)}
STACK_GRANULES = [
    "S1B_IW_SLC__1SDV_20210102T032031_20210102T032058_024970_02F8C3_C081",
    "S1B_IW_SLC__1SDV_20210114T032030_20210114T032057_025145_02FE61_454A",
    "S1B_IW_SLC__1SDV_20210126T032030_20210126T032057_025320_0303F3_7BE5",
]


@pytest.fixture(scope="module")
def stack_records(fixtures_dir: Path) -> list[dict[str, Any]]:
    return load_records(fixtures_dir / "asf_search" / "Fairbanks_S1_stack.yml")


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def _cmr_kwargs(cmr: FakeCMR) -> dict[str, Any]:
    return {"session": cmr.session(), "cmr_host": cmr.host}


def next_slice(record: dict[str, Any], dlat: float, dt_s: int) -> dict[str, Any]:
    """A copy of a real record moved ``dlat`` north and ``dt_s`` later: the next slice."""
    rec = copy.deepcopy(record)
    umm = rec["umm"]
    old = umm["GranuleUR"].removesuffix("-SLC")
    parts = old.split("_")
    for i in (5, 6):
        t = datetime.strptime(parts[i], "%Y%m%dT%H%M%S") + timedelta(seconds=dt_s)
        parts[i] = t.strftime("%Y%m%dT%H%M%S")
    new = "_".join(parts)
    text = yaml.safe_dump(rec).replace(old, new)
    rec = yaml.safe_load(text)
    umm = rec["umm"]
    rng = umm["TemporalExtent"]["RangeDateTime"]
    for key in ("BeginningDateTime", "EndingDateTime"):
        t = datetime.fromisoformat(rng[key].replace("Z", "+00:00")) + timedelta(seconds=dt_s)
        rng[key] = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    points = umm["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"][0]
    for p in points["Boundary"]["Points"]:
        p["Latitude"] += dlat
    return rec


def test_search_parses_recorded_stack(
    server: FaultServer, stack_records: list[dict[str, Any]]
) -> None:
    cmr = FakeCMR(server, stack_records)
    scenes = find_scenes(AREA, track=94, frame=210, **JAN_2021, **_cmr_kwargs(cmr))

    assert [s.granule for s in scenes] == STACK_GRANULES
    first = scenes[0]
    assert first.url == (
        "https://datapool.asf.alaska.edu/SLC/SB/"
        "S1B_IW_SLC__1SDV_20210102T032031_20210102T032058_024970_02F8C3_C081.zip"
    )
    assert first.size == 4193723581
    assert first.md5 == "6dd7f6a56ed98ba7037dfeb833217d5b"
    assert (first.track, first.frame, first.flight_direction) == (94, 210, "ASCENDING")
    assert first.polarization == "VV+VH"
    assert first.date == "20210102"
    assert first.start.isoformat() == "2021-01-02T03:20:31.092706+00:00"
    assert first.footprint.contains(area_polygon(AREA))
    # The query CMR saw carries each criterion.
    posted = {v for q in cmr.queries for k, v in q if k == "attribute[]"}
    assert {"int,PATH_NUMBER,94", "int,FRAME_NUMBER,210", "string,POLARIZATION,VV+VH"} <= posted


def test_umm_parsing_matches_asf_search_properties(
    stack_records: list[dict[str, Any]], fixtures_dir: Path
) -> None:
    """Scenes built by asf_search's own UMM parsing agree with the recorded properties."""
    recorded = yaml.safe_load((fixtures_dir / "asf_search" / "Fairbanks_S1_stack.yml").read_text())
    for scene, expected in zip(scenes_from_umm(stack_records), recorded, strict=True):
        props = expected["properties"]
        assert scene.granule == props["sceneName"]
        assert scene.url == props["url"]
        assert scene.size == props["bytes"]
        assert scene.md5 == props["md5sum"]
        assert scene.track == props["pathNumber"]
        assert scene.frame == props["frameNumber"]


def test_dates_group_slices_and_coverage_needs_their_union(
    server: FaultServer, stack_records: list[dict[str, Any]]
) -> None:
    # 2 Jan gets its next slice (north); the other dates only have the southern one.
    extra = next_slice(stack_records[0], dlat=1.5, dt_s=25)
    cmr = FakeCMR(server, [*stack_records, extra])
    area = (65.0, 66.5, -148.0, -146.0)  # reaches into the northern slice
    result = search_scenes(area, track=94, **JAN_2021, **_cmr_kwargs(cmr))

    assert list(result.dates) == ["20210102"]
    jan2 = result.dates["20210102"]
    assert [s.granule for s in jan2] == [
        STACK_GRANULES[0],
        "S1B_IW_SLC__1SDV_20210102T032056_20210102T032123_024970_02F8C3_C081",
    ]
    assert set(result.excluded) == {"20210114", "20210126"}
    for reason in result.excluded.values():
        assert "cover 53.3% of the area" in reason
        assert "slice is missing" in reason
    rows = summary_rows(result)
    assert [(r["date"], r["status"], r["scenes"]) for r in rows] == [
        ("20210102", "kept", "2"),
        ("20210114", "excluded", "-"),
        ("20210126", "excluded", "-"),
    ]
    assert summary_table(result).row_count == 3


def test_group_by_date_orders_by_time() -> None:
    def scene(name: str, start: datetime) -> Scene:
        return Scene(
            name,
            "u",
            1,
            None,
            start,
            start,
            start.strftime("%Y%m%d"),
            "POLYGON((0 0,1 0,1 1,0 1,0 0))",
            1,
            None,
            "ASCENDING",
            "VV",
            "S1A",
        )

    t0 = datetime(2024, 1, 1, 10)
    groups = group_by_date(
        [
            scene("b", t0 + timedelta(seconds=25)),
            scene("c", t0 + timedelta(days=12)),
            scene("a", t0),
        ]
    )
    assert {d: [s.granule for s in ss] for d, ss in groups.items()} == {
        "20240101": ["a", "b"],
        "20240113": ["c"],
    }


def test_excluded_dates_from_configuration_are_reported(
    server: FaultServer, stack_records: list[dict[str, Any]]
) -> None:
    cmr = FakeCMR(server, stack_records)
    result = search_scenes(
        AREA, track=94, exclude_dates=["20210114"], **JAN_2021, **_cmr_kwargs(cmr)
    )
    assert list(result.dates) == ["20210102", "20210126"]
    assert result.excluded == {"20210114": "excluded by configuration (exclude_dates)"}


def test_wrong_track_says_to_change_the_track(
    server: FaultServer, stack_records: list[dict[str, Any]]
) -> None:
    cmr = FakeCMR(server, stack_records)
    with pytest.raises(EmptySearchError) as err:
        find_scenes(AREA, track=95, **JAN_2021, **_cmr_kwargs(cmr))
    message = str(err.value)
    assert "track 95" in message
    assert "without the track filter: 3 scene(s)" in message
    assert "without the date range filter: 0 scene(s)" in message
    assert "tracks over this area in these dates: track 94 ASCENDING frame 210" in message
    assert message.endswith("widen or fix: track")


def test_wrong_dates_say_to_widen_the_dates(
    server: FaultServer, stack_records: list[dict[str, Any]]
) -> None:
    cmr = FakeCMR(server, stack_records)
    with pytest.raises(EmptySearchError) as err:
        find_scenes(
            AREA,
            track=94,
            start=date(2022, 1, 1),
            end=date(2022, 2, 1),
            flight_direction="ASCENDING",
            **_cmr_kwargs(cmr),
        )
    message = str(err.value)
    assert "without the date range filter: 3 scene(s)" in message
    assert "without the direction filter: 0 scene(s)" in message
    assert message.endswith("widen or fix: date range")


def test_allow_empty_returns_nothing(
    server: FaultServer, stack_records: list[dict[str, Any]]
) -> None:
    cmr = FakeCMR(server, stack_records)
    result = search_scenes(
        AREA,
        track=94,
        start=date(2022, 1, 1),
        end=date(2022, 2, 1),
        allow_empty=True,
        **_cmr_kwargs(cmr),
    )
    assert result.dates == {} and result.excluded == {}
    past_end = search_scenes(
        AREA, track=94, start=date(2021, 2, 1), end=date(2021, 1, 31), allow_empty=True
    )
    assert past_end.dates == {}
    with pytest.raises(EmptySearchError, match="is after end"):
        find_scenes(AREA, track=94, start=date(2021, 2, 1), end=date(2021, 1, 31))


def test_polarization_channel_maps_to_products(
    server: FaultServer, stack_records: list[dict[str, Any]]
) -> None:
    cmr = FakeCMR(server, stack_records)
    scenes = find_scenes(AREA, track=94, polarization="vh", **JAN_2021, **_cmr_kwargs(cmr))
    assert len(scenes) == 3
    posted = {v for q in cmr.queries for k, v in q if k == "attribute[]" and "POLARIZATION" in v}
    assert posted == {"string,POLARIZATION,VV+VH"}
    with pytest.raises(EmptySearchError, match="widen or fix: polarization"):
        find_scenes(AREA, track=94, polarization="hh", **JAN_2021, **_cmr_kwargs(cmr))


def test_wkt_area_is_used_for_search_and_coverage(
    server: FaultServer, stack_records: list[dict[str, Any]]
) -> None:
    cmr = FakeCMR(server, stack_records)
    wkt = "POLYGON((-148 64.6, -146 64.6, -147 65.2, -148 64.6))"
    result = search_scenes(None, wkt=wkt, track=94, **JAN_2021, **_cmr_kwargs(cmr))
    assert len(result.dates) == 3
    assert any(k == "polygon" for q in cmr.queries for k, _ in q)


def test_bad_area_names_value_and_fix() -> None:
    with pytest.raises(AreaError, match=r"S N W E, not W E S N"):
        area_polygon((116.5, 117.95, 34.0, 34.6))  # W E S N by mistake
    with pytest.raises(AreaError, match="does not parse"):
        area_polygon(None, "POLYGON((1 2")
    with pytest.raises(AreaError, match="no area given"):
        area_polygon(None)


def test_coverage_rejects_mixed_tracks() -> None:
    base = datetime(2024, 1, 1)
    footprint = "POLYGON((0 0,2 0,2 2,0 2,0 0))"
    scenes = [
        Scene("a", "u", 1, None, base, base, "20240101", footprint, 1, None, "A", "VV", "S1A"),
        Scene("b", "u", 1, None, base, base, "20240101", footprint, 2, None, "A", "VV", "S1A"),
    ]
    result = check_coverage(group_by_date(scenes), area_polygon((0.5, 1.5, 0.5, 1.5)))
    assert result.dates == {}
    assert result.excluded == {"20240101": "slices from several tracks [1, 2]"}


def test_unresolvable_search_host_fails_at_once_in_plain_words() -> None:
    # ".invalid" never resolves (RFC 2606): a permanent failure, reported without retrying.
    with pytest.raises(ServiceUnreachable) as err:
        find_scenes(AREA, track=94, **JAN_2021, cmr_host="cmr.earthdata.invalid")
    message = str(err.value)
    assert message.startswith(
        "cannot reach the ASF search service (cmr.earthdata.invalid): the host name does not "
        "resolve. Check that this machine is online"
    )
    assert "HTTPSConnectionPool" not in message
    assert not retry_condition(search_scenes_task, _Run(1), _Failed(err.value))


def test_transient_failures_announce_the_retry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="insarflow.tasks.errors")
    exc = ConnectionResetError("connection reset by peer")
    assert retry_condition(search_scenes_task, _Run(1), _Failed(exc))
    assert (
        "search-scenes failed (ConnectionResetError: connection reset by peer); retrying in "
        "10 s (attempt 2 of 3)"
    ) in caplog.text
    assert retry_condition(search_scenes_task, _Run(2), _Failed(exc))
    assert "retrying in 60 s (attempt 3 of 3)" in caplog.text


def test_empty_search_shows_how_the_bbox_was_read(
    server: FaultServer, stack_records: list[dict[str, Any]]
) -> None:
    # W E S N for Fairbanks would be out of range; a box valid both ways gets the hint.
    cmr = FakeCMR(server, stack_records)
    with pytest.raises(EmptySearchError) as err:
        find_scenes((13.0, 14.0, 42.0, 43.0), track=94, **JAN_2021, **_cmr_kwargs(cmr))
    assert (
        "the bbox is read as S N W E: latitude 13 to 14, longitude 42 to 43; if you meant "
        "latitude 42 to 43 and longitude 13 to 14, write area.bbox: [42, 43, 13, 14]"
    ) in str(err.value)


@dataclass
class _Run:
    run_count: int


@dataclass
class _Failed:
    data: BaseException


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (401, "the search needs no login"),
        (403, "check HTTPS_PROXY"),
        (404, "the search address does not exist there"),
        (400, "check the area, dates and track"),
    ],
)
def test_refused_search_names_the_service_and_what_to_check(
    server: FaultServer, code: int, advice: str
) -> None:
    """A 4xx from the search service fails at once, in plain words, without retries."""
    from tests.acquisition.cmr_server import GRANULE_PATH
    from tests.acquisition.fault_server import Reply

    def refuse(request: object) -> Reply:
        return Reply(
            status=code,
            headers={"Content-Type": "application/json"},
            body=json.dumps({"errors": ["refused"]}).encode(),
        )

    cmr = FakeCMR(server, [])
    server.route(GRANULE_PATH, refuse)  # replaces the stand-in's answers
    with pytest.raises(SearchRefused) as err:
        find_scenes(AREA, track=94, **JAN_2021, **_cmr_kwargs(cmr))
    message = str(err.value)
    assert (
        f"the ASF search service (127.0.0.1:{server.port}) refused the query with HTTP {code}"
        in message
    )
    assert advice in message
    assert len(server.requests()) == 1
