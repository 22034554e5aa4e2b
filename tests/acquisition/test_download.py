"""Downloads against a local fault-injecting HTTP server: every case ends verified or clear."""

from __future__ import annotations

import hashlib
import io
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from insarflow.tasks.download import (
    DownloadError,
    DownloadFailures,
    DownloadItem,
    DownloadProgress,
    HTTPStatusDownloadError,
    IntegrityError,
    download_files,
    is_complete,
    rich_progress,
    safe_url,
)
from tests.acquisition.fault_server import (
    FaultServer,
    corrupt,
    drop_after,
    ignore_range,
    status,
    truncate,
)

SIZE = 300_000
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "chunk_size": 16_384}


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(20250406).randbytes(SIZE)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def _item(url: str, dest: Path, data: bytes, *, md5: bool = True) -> DownloadItem:
    return DownloadItem(
        url=url, dest=dest, size=len(data), md5=hashlib.md5(data).hexdigest() if md5 else None
    )


def _no_partials(directory: Path) -> bool:
    return not list(directory.glob("*.part"))


def test_download_verifies_and_renames(server: FaultServer, data: bytes, tmp_path: Path) -> None:
    url = server.add_file("a.zip", data)
    item = _item(url, tmp_path / "a.zip", data)
    assert download_files([item], **FAST) == [item.dest]
    assert item.dest.read_bytes() == data
    assert _no_partials(tmp_path)
    assert is_complete(item)


def test_complete_file_is_skipped_without_a_request(
    server: FaultServer, data: bytes, tmp_path: Path
) -> None:
    url = server.add_file("a.zip", data)
    item = _item(url, tmp_path / "a.zip", data)
    download_files([item], **FAST)
    before = len(server.requests())
    assert download_files([item], **FAST) == [item.dest]
    assert len(server.requests()) == before


def test_wrong_existing_file_is_replaced(server: FaultServer, data: bytes, tmp_path: Path) -> None:
    url = server.add_file("a.zip", data)
    item = _item(url, tmp_path / "a.zip", data)
    item.dest.write_bytes(b"x" * SIZE)  # right size, wrong content
    download_files([item], **FAST)
    assert item.dest.read_bytes() == data


def test_drop_mid_body_resumes_with_only_the_remaining_bytes(
    server: FaultServer, data: bytes, tmp_path: Path
) -> None:
    url = server.add_file("a.zip", data, faults=[drop_after(100_000)])
    item = _item(url, tmp_path / "a.zip", data)
    download_files([item], **FAST)
    assert item.dest.read_bytes() == data
    first, second = server.requests("a.zip")
    assert first.range is None and first.body_bytes == 100_000
    assert second.status == 206 and second.range == "bytes=100000-"
    assert server.bytes_sent("a.zip") == SIZE  # nothing transferred twice


def test_503_then_200(
    server: FaultServer, data: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.add_file("a.zip", data, faults=[status(503)])
    item = _item(url, tmp_path / "a.zip", data)
    with caplog.at_level(logging.WARNING, logger="insarflow.download"):
        download_files([item], **FAST)
    assert item.dest.read_bytes() == data
    assert [r.status for r in server.requests("a.zip")] == [503, 200]
    assert "attempt 1 failed (HTTP 503)" in caplog.text


def test_429_honours_retry_after(
    server: FaultServer, data: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.add_file("a.zip", data, faults=[status(429, Retry_After="1")])
    item = _item(url, tmp_path / "a.zip", data)
    with caplog.at_level(logging.WARNING, logger="insarflow.download"):
        download_files([item], **FAST)
    assert item.dest.read_bytes() == data
    assert "HTTP 429); retrying in 1.0 s (Retry-After)" in caplog.text


def test_truncated_body_is_completed_by_resuming(
    server: FaultServer, data: bytes, tmp_path: Path
) -> None:
    url = server.add_file("a.zip", data, faults=[truncate(50_000)])
    item = _item(url, tmp_path / "a.zip", data)
    download_files([item], **FAST)
    assert item.dest.read_bytes() == data
    assert [r.range for r in server.requests("a.zip")] == [None, "bytes=50000-"]


def test_corrupt_byte_is_redownloaded_once(
    server: FaultServer, data: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.add_file("a.zip", data, faults=[corrupt(1234)])
    item = _item(url, tmp_path / "a.zip", data)
    with caplog.at_level(logging.WARNING, logger="insarflow.download"):
        download_files([item], **FAST)
    assert item.dest.read_bytes() == data
    assert [r.range for r in server.requests("a.zip")] == [None, None]  # fresh second copy
    assert "arrived corrupt (MD5" in caplog.text


def test_persistent_corruption_fails_clearly_and_leaves_nothing(
    server: FaultServer, data: bytes, tmp_path: Path
) -> None:
    url = server.add_file("a.zip", data, always=[corrupt(1234)])
    item = _item(url, tmp_path / "a.zip", data)
    with pytest.raises(IntegrityError) as err:
        download_files([item], **FAST)
    message = str(err.value)
    assert url in message and "MD5" in message and "again after a fresh download" in message
    assert not item.dest.exists()
    assert _no_partials(tmp_path)
    assert len(server.requests("a.zip")) == 2


@pytest.mark.parametrize(
    ("code", "phrase"),
    [(401, "authentication failed"), (403, "access forbidden"), (404, "product is gone")],
)
def test_client_errors_are_not_retried(
    server: FaultServer, data: bytes, tmp_path: Path, code: int, phrase: str
) -> None:
    url = server.add_file("a.zip", data, always=[status(code)])
    item = _item(url, tmp_path / "a.zip", data)
    with pytest.raises(HTTPStatusDownloadError) as err:
        download_files([item], **FAST)
    assert err.value.status == code
    assert f"HTTP {code} for {url}" in str(err.value) and phrase in str(err.value)
    assert len(server.requests("a.zip")) == 1
    assert not item.dest.exists()


def test_server_ignoring_range_restarts_from_zero(
    server: FaultServer, data: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.add_file("a.zip", data, faults=[drop_after(100_000)], always=[ignore_range()])
    item = _item(url, tmp_path / "a.zip", data)
    with caplog.at_level(logging.INFO, logger="insarflow.download"):
        download_files([item], **FAST)
    assert item.dest.read_bytes() == data
    second = server.requests("a.zip")[1]
    assert second.range == "bytes=100000-" and second.status == 200
    assert "ignored the Range request; restarting a.zip from byte 0" in caplog.text


def test_gives_up_after_max_attempts_keeping_a_resumable_prefix(
    server: FaultServer, data: bytes, tmp_path: Path
) -> None:
    url = server.add_file("a.zip", data, always=[drop_after(1000)])
    item = _item(url, tmp_path / "a.zip", data)
    with pytest.raises(DownloadError, match="giving up after 3 attempts") as err:
        download_files([item], max_attempts=3, **FAST)
    assert url in str(err.value)
    assert not item.dest.exists()
    part = tmp_path / "a.zip.part"
    assert part.read_bytes() == data[:3000]


def test_oversized_stale_part_starts_over(server: FaultServer, data: bytes, tmp_path: Path) -> None:
    url = server.add_file("a.zip", data)
    item = _item(url, tmp_path / "a.zip", data)
    (tmp_path / "a.zip.part").write_bytes(b"y" * (SIZE + 10))
    download_files([item], **FAST)
    assert item.dest.read_bytes() == data
    assert server.requests("a.zip")[0].range is None


def test_without_size_or_md5_the_body_length_decides(
    server: FaultServer, data: bytes, tmp_path: Path
) -> None:
    url = server.add_file("a.zip", data, faults=[drop_after(70_000)])
    item = DownloadItem(url=url, dest=tmp_path / "a.zip")
    download_files([item], **FAST)
    assert item.dest.read_bytes() == data


def test_batch_is_bounded_and_reports_every_failure(
    server: FaultServer, data: bytes, tmp_path: Path
) -> None:
    items = [
        _item(server.add_file(f"f{i}.zip", data), tmp_path / f"f{i}.zip", data) for i in range(5)
    ]
    missing = _item(server.url("gone.zip"), tmp_path / "gone.zip", data)
    with pytest.raises(DownloadFailures) as err:
        download_files([*items, missing], max_parallel=2, **FAST)
    assert server.max_active <= 2
    assert str(err.value).startswith("1 of 6 downloads failed:")
    assert "HTTP 404 for " + server.url("gone.zip") in str(err.value)
    assert [f.dest for f, _ in err.value.failures] == [missing.dest]
    assert all(i.dest.read_bytes() == data for i in items)


def test_progress_reports_bytes_rate_and_completion(
    server: FaultServer, data: bytes, tmp_path: Path
) -> None:
    items = [
        _item(server.add_file(f"f{i}.zip", data), tmp_path / f"f{i}.zip", data) for i in range(2)
    ]
    events: list[DownloadProgress] = []
    download_files(items, progress=events.append, max_parallel=2, **FAST)
    finished = [e for e in events if e.finished]
    assert sorted(e.item.dest.name for e in finished) == ["f0.zip", "f1.zip"]
    last = events[-1]
    assert last.done_bytes == last.total_bytes == 2 * SIZE
    assert last.bytes_per_s > 0 and last.eta_s == 0.0


def test_rich_progress_renders_files(server: FaultServer, data: bytes, tmp_path: Path) -> None:
    item = _item(server.add_file("a.zip", data), tmp_path / "a.zip", data)
    out = io.StringIO()
    with rich_progress(Console(file=out, width=100, force_terminal=False)) as callback:
        download_files([item], progress=callback, **FAST)
    assert "a.zip" in out.getvalue()


def test_basic_auth_reaches_the_server(server: FaultServer, data: bytes, tmp_path: Path) -> None:
    url = server.add_file("a.zip", data, basic_auth=("user", "pw"))
    item = _item(url, tmp_path / "a.zip", data)
    download_files([item], auth=httpx.BasicAuth("user", "pw"), **FAST)
    assert item.dest.read_bytes() == data


def test_duplicate_destinations_are_rejected(tmp_path: Path) -> None:
    item = DownloadItem("http://127.0.0.1:9/a", tmp_path / "a.zip")
    with pytest.raises(ValueError, match="same file"):
        download_files([item, item])


def test_safe_url_strips_userinfo_and_query() -> None:
    url = "https://user:secret@host.example:8443/path/f.zip?X-Amz-Signature=abc"
    assert safe_url(url) == "https://host.example:8443/path/f.zip"


def test_task_wrapper_runs_in_a_flow(
    prefect_harness: None, server: FaultServer, data: bytes, tmp_path: Path
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from insarflow.tasks.download import download_files_task

    item = _item(server.add_file("a.zip", data), tmp_path / "a.zip", data)

    @flow
    def fetch() -> tuple[list[Path], Any]:
        from prefect.runtime import flow_run

        return download_files_task([item], max_parallel=1), flow_run.id

    paths, run_id = fetch()
    assert paths == [item.dest]
    assert item.dest.read_bytes() == data
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    progress = [a for a in artifacts if a.type == "progress"]
    assert [a.data for a in progress] == [100.0]
