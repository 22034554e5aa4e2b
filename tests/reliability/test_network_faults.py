"""Downloads and searches under seeded random fault schedules; permanent refusals fail fast.

The schedules compose the single faults that ``tests/acquisition`` checks one by one: each
file gets a random sequence of dropped connections, 5xx bursts, 429 with Retry-After,
stalled responses (no byte before the client's read timeout), truncated bodies, a flipped
byte and a server that ignores ``Range``. Every file must arrive complete and verified,
and every fault must cost exactly the one extra request it forces (no more, no less).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from pydantic import SecretStr

from insarflow.tasks.credentials import Credentials, EarthdataAuth
from insarflow.tasks.download import (
    DownloadFailures,
    DownloadItem,
    HTTPStatusDownloadError,
    download_files,
)
from insarflow.tasks.search import search_scenes_task
from tests.acquisition.cmr_server import GRANULE_PATH, FakeCMR, load_records
from tests.acquisition.fault_server import (
    Fault,
    FaultServer,
    Reply,
    Request,
    corrupt,
    drop_after,
    ignore_range,
    status,
    truncate,
)
from tests.reliability.helpers import FIGURES

pytestmark = [
    # asf_search's WKT repair calls shapely.ops.transform, deprecated in shapely 2.1.
    pytest.mark.filterwarnings(
        "ignore:The 'shapely.ops.transform\\(\\)' function is deprecated:DeprecationWarning"
    ),
]

READ_TIMEOUT_S = 2.0
STALL_S = 4.0


@dataclass(frozen=True)
class Stall:
    """Hold a request this long before answering (past the client's read timeout)."""

    seconds: float = STALL_S


Action = Fault | Stall


class ScheduledFaultServer(FaultServer):
    """A :class:`FaultServer` whose per-file schedule may also stall requests.

    Counts every request it receives per file at arrival (a stalled request is answered,
    and recorded by the base class, only after its client gave up).
    """

    def __init__(self) -> None:
        super().__init__()
        self._schedule: dict[str, deque[Action]] = {}
        self.arrivals: Counter[str] = Counter()

    def schedule(self, name: str, data: bytes, actions: list[Action]) -> str:
        self._schedule[name] = deque(actions)
        return self.add_file(name, data)

    def remaining(self, name: str) -> int:
        with self._lock:
            return len(self._schedule.get(name, ()))

    def _lookup(self, path: str) -> Any:
        route, entry, _, always = super()._lookup(path)
        name = path.lstrip("/")
        with self._lock:
            self.arrivals[name] += 1
            queue = self._schedule.get(name)
            action = queue.popleft() if queue else None
        if isinstance(action, Stall):
            time.sleep(action.seconds)
            return route, entry, None, always
        return route, entry, action, always


@pytest.fixture
def server() -> Iterator[ScheduledFaultServer]:
    srv = ScheduledFaultServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def random_schedule(rng: random.Random, size: int, budget: int = 5) -> list[Action]:
    """Up to ``budget`` failing requests for one file (the client gives up after 6).

    ``offset`` follows how many bytes the client holds, so drops and truncations always
    cut the body short; a flipped byte only comes first (nothing held yet; the corrupt
    copy ends the first round and the rest falls in the fresh second one) and a server
    ignoring ``Range`` only last, after something was held.
    """
    actions: list[Action] = []
    offset = 0
    if rng.random() < 0.15:
        actions.append(corrupt(rng.randrange(size)))
    failing: list[Action] = []
    for _ in range(rng.choice((0, 1, 2, 2, 3))):
        kind = rng.choice(("drop", "5xx", "5xx-burst", "429", "stall", "truncate"))
        remaining = size - offset
        if kind == "drop":
            cut = rng.randrange(remaining // 2)
            failing.append(drop_after(cut))
            offset += cut
        elif kind == "truncate":
            cut = rng.randrange(remaining // 2)
            failing.append(truncate(cut))
            offset += cut
        elif kind == "5xx":
            failing.append(status(rng.choice((500, 502, 503, 504))))
        elif kind == "5xx-burst":
            failing += [status(503)] * rng.randint(2, 3)
        elif kind == "429":
            failing.append(status(429, Retry_After=rng.choice(("0", "0", "1"))))
        else:
            failing.append(Stall())
    if len(failing) > budget:
        failing = [a for a in failing if not (isinstance(a, Fault) and a.status == 503)]
        failing = failing[:budget]
        offset = sum(a.after_bytes for a in failing if isinstance(a, Fault))
    actions += failing
    if offset and rng.random() < 0.3:
        actions.append(ignore_range())
    return actions


def forced_requests(actions: list[Action]) -> int:
    """Requests a schedule forces beyond the one a clean download needs."""
    return sum(not (isinstance(a, Fault) and a.kind == "ignore_range") for a in actions)


def fault_kind(action: Action) -> str:
    if isinstance(action, Stall):
        return "stall"
    if action.kind == "status":
        return f"HTTP {action.status}"
    return action.kind


def run_download_sweep(server: ScheduledFaultServer, tmp: Path, seed: int, files: int) -> int:
    """Download ``files`` random files under random schedules; returns faults injected."""
    rng = random.Random(seed)
    items: list[DownloadItem] = []
    plans: dict[str, tuple[bytes, list[Action]]] = {}
    for i in range(files):
        data = rng.randbytes(rng.randint(20_000, 200_000))
        name = f"S1A_IW_SLC__seed{seed}_{i:03d}.zip"
        actions = random_schedule(rng, len(data))
        plans[name] = (data, actions)
        url = server.schedule(name, data, actions)
        items.append(
            DownloadItem(url, tmp / name, size=len(data), md5=hashlib.md5(data).hexdigest())
        )
    paths = download_files(
        items,
        max_parallel=4,
        timeout_s=READ_TIMEOUT_S,
        max_attempts=6,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )
    injected = 0
    for path, (name, (data, actions)) in zip(paths, plans.items(), strict=True):
        assert path.read_bytes() == data, name
        assert server.remaining(name) == 0, f"{name}: faults left unused"
        assert server.arrivals[name] == 1 + forced_requests(actions), (name, actions)
        injected += len(actions)
        for action in actions:
            FIGURES[f"download faults: {fault_kind(action)}"] += 1
    assert sorted(p.name for p in tmp.iterdir() if not p.name.startswith(".")) == sorted(plans)
    FIGURES["files downloaded under faults"] += files
    FIGURES["network faults injected"] += injected
    return injected


def test_downloads_complete_and_verify_under_a_seeded_fault_schedule(
    server: ScheduledFaultServer, tmp_path: Path
) -> None:
    injected = run_download_sweep(server, tmp_path, seed=7, files=24)
    assert injected >= 24  # the schedule really exercised the client


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 110))
def test_download_fault_sweep(server: ScheduledFaultServer, tmp_path: Path, seed: int) -> None:
    run_download_sweep(server, tmp_path, seed=seed, files=40)


def test_permanent_refusals_fail_fast_with_a_clear_message(
    server: ScheduledFaultServer, tmp_path: Path
) -> None:
    good = b"fine" * 5000
    wrong = Credentials(
        service="earthdata", username="someone", password=SecretStr("Wr0ng-pa55"), source="test"
    )
    auth = EarthdataAuth(wrong, auth_hosts=("127.0.0.1",), require_https=False)
    items = [
        DownloadItem(server.add_file("good.zip", good), tmp_path / "good.zip", size=len(good)),
        DownloadItem(
            server.add_file("login.zip", good, basic_auth=("someone", "right")),
            tmp_path / "login.zip",
        ),
        DownloadItem(
            server.add_file("forbidden.zip", good, always=[status(403)]),
            tmp_path / "forbidden.zip",
        ),
        DownloadItem(server.url("gone.zip"), tmp_path / "gone.zip"),
    ]
    with pytest.raises(DownloadFailures) as info:
        download_files(items, auth=auth, max_attempts=6, backoff_initial_s=5.0)
    failures = {item.dest.name: exc for item, exc in info.value.failures}
    assert sorted(failures) == ["forbidden.zip", "gone.zip", "login.zip"]
    expected = {
        "login.zip": (401, "authentication failed: check the Earthdata username/password"),
        "forbidden.zip": (403, "accept the ASF data use agreement"),
        "gone.zip": (404, "not found: the product is gone or the URL is wrong; search again"),
    }
    for name, (code, hint) in expected.items():
        exc = failures[name]
        assert isinstance(exc, HTTPStatusDownloadError) and exc.status == code
        assert f"HTTP {code} for {server.url(name)}" in str(exc) and hint in str(exc)
        assert server.arrivals[name] == 1, f"{name} was retried"
        assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.part").exists()
        FIGURES["permanent refusals failing fast"] += 1
    assert (tmp_path / "good.zip").read_bytes() == good
    assert "Wr0ng-pa55" not in str(info.value)


# --------------------------------------------------------------------------- searches

AREA = (64.5, 65.3, -148.5, -146.0)  # inside the recorded Fairbanks stack (track 94)
JAN_START, JAN_END = date(2021, 1, 1), date(2021, 1, 31)


@dataclass
class FaultyCMR:
    """Faults in front of the CMR stand-in: 5xx, 429, truncated JSON, stalls past the timeout."""

    cmr: FakeCMR
    actions: deque[str]
    stall_s: float
    lock: threading.Lock

    def answer(self, request: Request) -> Reply:
        with self.lock:
            action = self.actions.popleft() if self.actions else None
        if action == "stall":
            time.sleep(self.stall_s)
        if action in ("500", "503"):
            body = json.dumps({"errors": [f"injected {action}"]}).encode()
            return Reply(int(action), {"Content-Type": "application/json"}, body)
        if action == "429":
            body = json.dumps({"errors": ["too many requests"]}).encode()
            return Reply(429, {"Retry-After": "0", "Content-Type": "application/json"}, body)
        reply = self.cmr._answer(request)
        if action == "truncate":
            return Reply(reply.status, reply.headers, reply.body[: len(reply.body) // 2])
        return reply


def random_search_faults(rng: random.Random) -> list[str]:
    """Faults for one search, within its retry budget.

    asf_search retries a 5xx twice by itself; insarflow's search task retries any other
    failure twice. So: 5xx bursts of at most two, and at most two other faults.
    """
    actions: list[str] = []
    for _ in range(rng.randint(1, 2)):
        kind = rng.choice(("5xx", "429", "truncate", "stall"))
        if kind == "5xx":
            actions += [rng.choice(("500", "503"))] * rng.randint(1, 2)
        else:
            actions.append(kind)
    return actions


@pytest.fixture(scope="module")
def stack_records(fixtures_dir: Path) -> list[dict[str, Any]]:
    return load_records(fixtures_dir / "asf_search" / "Fairbanks_S1_stack.yml")


def run_search_sweep(
    stack_records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, seed: int, searches: int
) -> int:
    import importlib

    import asf_search.constants.INTERNAL as asf_internal
    from tenacity import wait_none

    search_generator = importlib.import_module("asf_search.search.search_generator")

    # asf_search waits 3-10 s between its 5xx retries and 30 s for CMR; keep the same
    # retry logic, without the waiting.
    monkeypatch.setattr(search_generator.get_page.retry, "wait", wait_none())
    monkeypatch.setattr(asf_internal, "CMR_TIMEOUT", READ_TIMEOUT_S)
    rng = random.Random(seed)
    task = search_scenes_task.with_options(retry_delay_seconds=0)
    injected = 0
    with FaultServer() as srv:
        cmr = FakeCMR(srv, stack_records)
        for _ in range(searches):
            actions = random_search_faults(rng)
            faulty = FaultyCMR(cmr, deque(actions), STALL_S, threading.Lock())
            srv.route(GRANULE_PATH, faulty.answer)

            @flow(name="search-under-faults")
            def search() -> list[str]:
                result = task(
                    AREA,
                    track=94,
                    start=JAN_START,
                    end=JAN_END,
                    session=cmr.session(),
                    cmr_host=cmr.host,
                )
                return [s.granule for s in result.scenes]

            granules = search()
            assert len(granules) == 3, granules
            assert not faulty.actions, f"faults left unused: {faulty.actions}"
            injected += len(actions)
            for action in actions:
                FIGURES[f"search faults: {action}"] += 1
    FIGURES["searches under faults"] += searches
    FIGURES["network faults injected"] += injected
    return injected


def test_searches_complete_under_seeded_faults(
    stack_records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    assert run_search_sweep(stack_records, monkeypatch, seed=3, searches=5) >= 5


@pytest.mark.slow
def test_search_fault_sweep(
    stack_records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    run_search_sweep(stack_records, monkeypatch, seed=11, searches=20)
