"""acquisition.* fields observed through the acquire stage, against the loopback stand-ins for
the ASF search (CMR) and the SLC download server: the search it sends, the downloads it runs."""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acquisition.cmr_server import FakeCMR, _PlainHTTPAdapter, load_records
from tests.acquisition.fault_server import FaultServer, Reply, Request
from tests.isce2.safe_stack import write_geotiff_dem

pytestmark = [
    # asf_search's WKT repair calls shapely.ops.transform, deprecated in shapely 2.1.
    pytest.mark.filterwarnings(
        "ignore:The 'shapely.ops.transform\\(\\)' function is deprecated:DeprecationWarning"
    ),
    # rasterio's transforms go through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

BBOX = [64.8, 64.9, -147.6, -147.4]  # inside the recorded Fairbanks stack (track 94, frame 210)
GATE_S = 2.0


class GatedFiles:
    """Serves the SLC zips; each request waits (up to GATE_S) until all of them are in flight,
    so a client that allows them all at once has them all at once."""

    def __init__(self, server: FaultServer, files: dict[str, bytes]) -> None:
        self.files = files
        self.in_flight = 0
        self.cond = threading.Condition()
        for name in files:
            server.route(name, self.answer)

    def answer(self, request: Request) -> Reply:
        with self.cond:
            self.in_flight += 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.in_flight >= len(self.files), timeout=GATE_S)
        data = self.files[request.path.lstrip("/")]
        with self.cond:
            self.in_flight -= 1
        return Reply(200, {"Content-Type": "application/zip"}, data)


def _attribute(record: dict[str, Any], name: str, value: str) -> None:
    for attr in record["umm"]["AdditionalAttributes"]:
        if attr["Name"] == name:
            attr["Values"] = [value]


@pytest.fixture
def loopback(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FaultServer, FakeCMR]]:
    """The recorded stack served from 127.0.0.1: search answers, and zips at its URLs."""
    import asf_search
    from asf_search.ASFSearchOptions import config as search_defaults

    recorded = load_records(fixtures_dir / "asf_search" / "Fairbanks_S1_stack.yml")
    with FaultServer() as server:
        records, files = [], {}
        for i, original in enumerate(recorded):
            record = copy.deepcopy(original)
            name = f"{record['umm']['GranuleUR'].removesuffix('-SLC')}.zip"
            data = bytes([i]) * 50_000
            files[name] = data
            record["umm"]["RelatedUrls"][0]["URL"] = server.url(name)
            _attribute(record, "BYTES", str(len(data)))
            _attribute(record, "MD5SUM", hashlib.md5(data).hexdigest())
            records.append(record)
        cmr = FakeCMR(server, records)
        GatedFiles(server, files)

        class LoopbackSession(asf_search.ASFSession):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.mount(f"https://{cmr.host}", _PlainHTTPAdapter())

        monkeypatch.setattr(asf_search, "ASFSession", LoopbackSession)
        monkeypatch.setitem(search_defaults.config, "host", cmr.host)
        monkeypatch.setenv("EARTHDATA_USERNAME", "user")
        monkeypatch.setenv("EARTHDATA_PASSWORD", "password")
        yield server, cmr


def _config(tmp_path: Path, fixtures_dir: Path, acquisition: dict[str, Any]) -> Any:
    from insarflow.config import StackConfig

    orbits = tmp_path / "user-orbits"
    orbits.mkdir()
    eof = next((fixtures_dir / "orbits").glob("*POEORB*.EOF")).read_bytes()
    for day in ("20210101", "20210113", "20210125"):  # each covers the next day's pass
        nxt = f"{day[:6]}{int(day[6:]) + 2:02d}"
        name = f"S1B_OPER_AUX_POEORB_OPOD_20210201T000000_V{day}T225942_{nxt}T005942.EOF"
        (orbits / name).write_bytes(eof)
    dem = write_geotiff_dem(tmp_path / "dem.tif", (64.7, 65.0, -147.7, -147.3), step=1 / 1200)
    return StackConfig.model_validate(
        {
            "name": "fairbanks",
            "work_dir": str(tmp_path / "work"),
            "area": {"bbox": BBOX},
            "acquisition": {
                "track": 94,
                "start": "2021-01-01",
                "end": "2021-01-31",
                "platforms": ["S1B"],
                **acquisition,
            },
            "inputs": {"orbit_dir": str(orbits), "dem": str(dem)},
        }
    )


def test_acquisition_fields_reach_the_search_and_the_downloads(
    tmp_path: Path,
    fixtures_dir: Path,
    loopback: tuple[FaultServer, FakeCMR],
    prefect_harness: None,
) -> None:
    from insarflow.flows.stages import acquire_stage

    server, cmr = loopback
    config = _config(
        tmp_path,
        fixtures_dir,
        {"frame": 210, "flight_direction": "ASCENDING", "max_parallel_downloads": 2},
    )
    result = acquire_stage(config)
    assert result.dates == ["20210102", "20210114", "20210126"]
    assert all(p.is_file() for p in result.safe_files)
    attributes = {v for query in cmr.queries for k, v in query if k == "attribute[]"}
    assert "int,FRAME_NUMBER,210" in attributes
    assert "string,ASCENDING_DESCENDING,ASCENDING" in attributes
    # three zips, each held until all three are asked for or GATE_S passes: two at a time
    assert server.max_active == 2


def test_all_downloads_at_once_when_allowed(
    tmp_path: Path,
    fixtures_dir: Path,
    loopback: tuple[FaultServer, FakeCMR],
    prefect_harness: None,
) -> None:
    """The counterpart: with room for all three, the server sees all three at once."""
    from insarflow.flows.stages import acquire_stage

    server, cmr = loopback
    acquire_stage(_config(tmp_path, fixtures_dir, {"max_parallel_downloads": 3}))
    assert server.max_active == 3
    attributes = {v.split(",")[1] for query in cmr.queries for k, v in query if k == "attribute[]"}
    assert not attributes & {"FRAME_NUMBER", "ASCENDING_DESCENDING"}  # unset: not searched on
