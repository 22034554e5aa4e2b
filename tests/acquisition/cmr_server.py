"""Replay recorded CMR UMM granule records through a local stand-in for the CMR search API.

asf_search posts its query (form fields such as ``attribute[]``, ``shortName``,
``temporal``, ``bounding_box``/``polygon``, ``page_size``) to
``https://<host>/search/granules.umm_json``. This server answers that endpoint on
127.0.0.1 from the recorded records, applying the same filters CMR would, so a search
runs through asf_search's real request, paging and UMM parsing code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import asf_search
import requests
import yaml
from requests.adapters import HTTPAdapter
from shapely.geometry import Polygon, box

from tests.acquisition.fault_server import FaultServer, Reply, Request

GRANULE_PATH = "/search/granules.umm_json"


def load_records(path: Path) -> list[dict[str, Any]]:
    """The CMR items (``meta`` + ``umm``) of a recorded asf_search fixture file."""
    data = yaml.safe_load(path.read_text())
    items = data if isinstance(data, list) else [data]
    return [{"meta": item["meta"], "umm": item["umm"]} for item in items]


def _attribute(record: dict[str, Any], name: str) -> list[str]:
    for attr in record["umm"].get("AdditionalAttributes", []):
        if attr["Name"] == name:
            return [str(v) for v in attr.get("Values", [])]
    return []


def _footprint(record: dict[str, Any]) -> Polygon:
    geometry = record["umm"]["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]
    points = geometry["GPolygons"][0]["Boundary"]["Points"]
    return Polygon([(p["Longitude"], p["Latitude"]) for p in points])


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _matches(record: dict[str, Any], form: list[tuple[str, str]]) -> bool:
    """True when ``record`` passes every CMR filter in the posted form."""
    short_names = {v for k, v in form if k == "shortName"}
    if short_names and record["umm"]["CollectionReference"]["ShortName"] not in short_names:
        return False
    for key, value in form:
        if key == "attribute[]":
            kind, name, *wanted = value.split(",")
            have = _attribute(record, name)
            if kind == "int":
                if not any(int(float(h)) == int(wanted[0]) for h in have):
                    return False
            elif wanted[0] not in have:
                return False
        elif key == "temporal":
            start, end = [*value.split(","), "", ""][:2]
            extent = record["umm"]["TemporalExtent"]["RangeDateTime"]
            begin, stop = _time(extent["BeginningDateTime"]), _time(extent["EndingDateTime"])
            if start and stop < _time(start):
                return False
            if end and begin > _time(end):
                return False
        elif key == "bounding_box":
            w, s, e, n = (float(v) for v in value.split(","))
            if not _footprint(record).intersects(box(w, s, e, n)):
                return False
        elif key == "polygon":
            coords = [float(v) for v in value.split(",")]
            shape = Polygon(list(zip(coords[0::2], coords[1::2], strict=True)))
            if not _footprint(record).intersects(shape):
                return False
    return True


class FakeCMR:
    """A FaultServer route that answers asf_search granule queries from recorded records."""

    def __init__(self, server: FaultServer, records: Iterable[dict[str, Any]]) -> None:
        self.server = server
        self.records = list(records)
        self.queries: list[list[tuple[str, str]]] = []
        server.route(GRANULE_PATH, self._answer)

    @property
    def host(self) -> str:
        """What to pass as asf_search's ``host`` / insarflow's ``cmr_host``."""
        return f"127.0.0.1:{self.server.port}"

    def _answer(self, request: Request) -> Reply:
        form = request.form()
        self.queries.append(form)
        hits = [r for r in self.records if _matches(r, form)]
        page_size = int(dict(form).get("page_size", "250"))
        body = json.dumps({"hits": len(hits), "took": 1, "items": hits[:page_size]}).encode()
        return Reply(200, {"Content-Type": "application/json"}, body)

    def session(self) -> asf_search.ASFSession:
        """An ASFSession whose https requests to this server travel as plain http."""
        session = asf_search.ASFSession()
        session.mount(f"https://{self.host}", _PlainHTTPAdapter())
        return session


class _PlainHTTPAdapter(HTTPAdapter):
    """asf_search always builds https:// URLs; the local server speaks plain http."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        assert request.url is not None
        request.url = request.url.replace("https://", "http://", 1)
        return super().send(request, *args, **kwargs)
