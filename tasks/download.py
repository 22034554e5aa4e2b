"""Bounded-parallel, resumable, verified HTTP downloads (SLC zips and the like).

Each file streams into ``<dest>.part``, resumes with ``Range`` after a drop, is checked
(size, MD5 when known) and only then renamed into place, so ``dest`` existing means
complete. Transient failures (dropped connections, timeouts, 5xx, 429) are retried with
exponential backoff and jitter; 401/403/404 fail at once with a message saying why.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from insarflow import atomic
from insarflow.tasks.credentials import Credentials, EarthdataAuth
from insarflow.tasks.diskspace import check_free_space
from insarflow.tasks.errors import PermanentError, unreachable_service
from insarflow.tasks.progress import (
    create_progress_artifact,
    format_duration,
    update_progress_artifact,
)
from insarflow.tasks.progress import log as progress_log

if TYPE_CHECKING:
    from rich.console import Console

    from insarflow.tasks.search import Scene

log = logging.getLogger("insarflow.download")

MAX_RETRY_AFTER_S = 600.0


# ---------------------------------------------------------------------- errors


class DownloadError(RuntimeError):
    """A download failed; the message names the URL (never a credential) and the cause."""

    def __init__(self, message: str, *, url: str = "", dest: Path | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.dest = dest


class HTTPStatusDownloadError(DownloadError, PermanentError):
    """The server refused the file for good (401, 403, 404, other 4xx)."""

    def __init__(self, message: str, *, status: int, url: str, dest: Path | None) -> None:
        super().__init__(message, url=url, dest=dest)
        self.status = status


class IntegrityError(DownloadError, PermanentError):
    """The file arrived complete twice but did not match its expected size or MD5."""


class DownloadFailures(DownloadError):
    """Some downloads of a batch failed; ``failures`` pairs each item with its error."""

    def __init__(self, failures: list[tuple[DownloadItem, BaseException]], total: int) -> None:
        lines = [f"- {safe_url(item.url)} -> {item.dest}: {exc}" for item, exc in failures]
        super().__init__(f"{len(failures)} of {total} downloads failed:\n" + "\n".join(lines))
        self.failures = failures


class _TransientError(Exception):
    """A failure worth retrying; ``retry_after`` is the server's requested delay."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# ----------------------------------------------------------------------- model


@dataclass(frozen=True)
class DownloadItem:
    """One file to fetch: where from, where to, and what it must look like."""

    url: str
    dest: Path
    size: int | None = None
    md5: str | None = None


@dataclass(frozen=True)
class DownloadProgress:
    """A progress report: this file's bytes and the whole batch's rate and ETA."""

    item: DownloadItem
    file_bytes: int
    file_total: int | None
    done_bytes: int
    total_bytes: int | None
    bytes_per_s: float
    eta_s: float | None
    finished: bool = False


ProgressCallback = Callable[[DownloadProgress], None]


def safe_url(url: str) -> str:
    """The URL without user info or query string (signed URLs carry tokens there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def items_for_scenes(scenes: Sequence[Scene], slc_dir: Path) -> list[DownloadItem]:
    """Download items for search results, saved under ``slc_dir`` with their zip names."""
    return [
        DownloadItem(url=s.url, dest=slc_dir / f"{s.granule}.zip", size=s.size, md5=s.md5)
        for s in scenes
    ]


# -------------------------------------------------------------------- progress


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def describe_download(p: DownloadProgress, files: tuple[int, int] | None = None) -> str:
    """``download: 3 of 24 files, 1.2 GB of 4.5 GB at 35.1 MB/s, ETA 1:34``."""
    from rich.filesize import decimal

    total = decimal(p.total_bytes) if p.total_bytes is not None else "?"
    counted = "" if files is None else f"{files[0]} of {files[1]} files, "
    return (
        f"download: {counted}{decimal(p.done_bytes)} of {total} at "
        f"{decimal(int(p.bytes_per_s))}/s, ETA {format_duration(p.eta_s)}"
    )


class _Tracker:
    """Thread-safe byte accounting for a batch: logs rate/ETA and feeds callbacks."""

    def __init__(
        self,
        items: Sequence[DownloadItem],
        callback: ProgressCallback | None,
        log_interval_s: float,
    ) -> None:
        self._lock = threading.Lock()
        self._callback = callback
        self._log_interval = log_interval_s
        self._file_bytes: dict[Path, int] = {item.dest: 0 for item in items}
        sizes = [item.size for item in items]
        self.total: int | None = (
            None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)
        )
        self._transferred = 0
        self._start = time.monotonic()
        self._last_log = self._start
        self._artifact: UUID | None = None
        self._published = -1.0
        self._description: str | None = None
        self._sizes = {item.dest: item.size for item in items}
        self._artifact = create_progress_artifact(f"Downloading {len(items)} file(s)")

    def set_file(
        self, item: DownloadItem, nbytes: int, *, transferred: int = 0, finished: bool = False
    ) -> None:
        """Record that ``item`` now has ``nbytes`` on disk (``transferred`` of them new)."""
        with self._lock:
            self._file_bytes[item.dest] = nbytes
            self._transferred += transferred
            done = sum(self._file_bytes.values())
            elapsed = max(time.monotonic() - self._start, 1e-6)
            rate = self._transferred / elapsed
            eta = (self.total - done) / rate if self.total is not None and rate > 0 else None
            report = DownloadProgress(
                item=item,
                file_bytes=nbytes,
                file_total=item.size,
                done_bytes=done,
                total_bytes=self.total,
                bytes_per_s=rate,
                eta_s=max(eta, 0.0) if eta is not None else None,
                finished=finished,
            )
            now = time.monotonic()
            due = finished or now - self._last_log >= self._log_interval
            if due:
                self._last_log = now
        if self._callback is not None:
            self._callback(report)
        if due:
            self._log(report)

    def _log(self, p: DownloadProgress) -> None:
        self._description = describe_download(
            p,
            files=(
                sum(self._file_bytes[d] == n for d, n in self._sizes.items()),
                len(self._sizes),
            ),
        )
        progress_log.info(self._description)

    def publish(self) -> None:
        """Update the Prefect progress artifact (call from the task's own thread)."""
        if self._artifact is None or not self.total:
            return
        with self._lock:
            percent = min(100.0, 100.0 * sum(self._file_bytes.values()) / self.total)
        if percent != self._published:
            update_progress_artifact(self._artifact, percent, self._description)
            self._published = percent


@contextlib.contextmanager
def rich_progress(console: Console | None = None) -> Iterator[ProgressCallback]:
    """A rich progress bar (one row per file) for the CLI; yields the callback to pass in."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        rows: dict[Path, TaskID] = {}
        lock = threading.Lock()

        def callback(p: DownloadProgress) -> None:
            with lock:
                if p.item.dest not in rows:
                    rows[p.item.dest] = bar.add_task(p.item.dest.name, total=p.file_total)
                bar.update(rows[p.item.dest], completed=p.file_bytes, total=p.file_total)

        yield callback


# ------------------------------------------------------------------ verifying


def _md5(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(dest: Path) -> Path:
    """Hidden sidecar recording a verified file's size, mtime and MD5 (skips re-hashing)."""
    return dest.with_name(f".{dest.name}.verified")


def _write_marker(dest: Path, md5: str) -> None:
    st = dest.stat()
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}
    atomic.write_text(_marker(dest), json.dumps(record))


def _problem(path: Path, item: DownloadItem) -> str | None:
    """What is wrong with ``path`` as a copy of ``item`` (size, then MD5), or None."""
    size = path.stat().st_size
    if item.size is not None and size != item.size:
        return f"size {size} bytes, expected {item.size}"
    if item.md5 is not None:
        got = _md5(path)
        if got.lower() != item.md5.lower():
            return f"MD5 {got}, expected {item.md5.lower()}"
    return None


def is_complete(item: DownloadItem) -> bool:
    """True when ``item.dest`` exists with the expected size and MD5 (cached in a sidecar)."""
    dest = item.dest
    if not dest.is_file():
        return False
    st = dest.stat()
    if item.size is not None and st.st_size != item.size:
        return False
    if item.md5 is None:
        return True
    try:
        mark = json.loads(_marker(dest).read_text())
        if (
            mark["size"] == st.st_size
            and mark["mtime_ns"] == st.st_mtime_ns
            and str(mark["md5"]).lower() == item.md5.lower()
        ):
            return True
    except (OSError, ValueError, KeyError):
        pass
    if _md5(dest).lower() != item.md5.lower():
        return False
    _write_marker(dest, item.md5.lower())
    return True


# ------------------------------------------------------------------- fetching


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_error(status: int, item: DownloadItem) -> HTTPStatusDownloadError:
    url = safe_url(item.url)
    if status == 401:
        why = (
            "authentication failed: check the Earthdata username/password "
            "(~/.netrc, EARTHDATA_USERNAME/EARTHDATA_PASSWORD or the Secret block)"
        )
    elif status == 403:
        why = (
            "access forbidden: the account may lack access to this data; log in at "
            "https://urs.earthdata.nasa.gov and accept the ASF data use agreement"
        )
    elif status in (404, 410):
        why = "not found: the product is gone or the URL is wrong; search again"
    else:
        why = "the server refused the request"
    return HTTPStatusDownloadError(
        f"HTTP {status} for {url}: {why}", status=status, url=url, dest=item.dest
    )


def _fetch(
    client: httpx.Client,
    item: DownloadItem,
    part: Path,
    chunk_size: int,
    tracker: _Tracker,
) -> None:
    """One attempt: continue ``part`` from its current size until the body ends."""
    offset = part.stat().st_size if part.exists() else 0
    if item.size is not None and offset > item.size:
        part.unlink()
        offset = 0
    if item.size is not None and offset == item.size and offset > 0:
        return  # complete, awaiting verification
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with client.stream("GET", item.url, headers=headers) as resp:
        status = resp.status_code
        if status == 416 and offset:
            match = re.search(r"/(\d+)", resp.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return
            part.unlink(missing_ok=True)
            raise _TransientError(f"HTTP 416 resuming at byte {offset}; starting over")
        if status == 429 or status == 408 or status >= 500:
            raise _TransientError(
                f"HTTP {status}", retry_after=_retry_after(resp.headers.get("Retry-After"))
            )
        if status >= 300:
            raise _status_error(status, item)
        expected: int | None = item.size
        if status == 206:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _TransientError(
                    f"partial response does not start at byte {offset}; starting over"
                )
            if expected is None and match.group(3) != "*":
                expected = int(match.group(3))
        else:
            if offset:
                log.info(
                    "%s ignored the Range request; restarting %s from byte 0",
                    safe_url(item.url),
                    item.dest.name,
                )
                offset = 0
            length = resp.headers.get("Content-Length")
            if expected is None and length and length.isdigit():
                expected = int(length)
        written = offset
        tracker.set_file(item, written)
        encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
        # Raw reads hand over every byte received before a drop (a re-chunking iterator
        # would hold back a partial chunk), so a resume continues exactly where data ended.
        chunks = resp.iter_bytes() if encoded else resp.iter_raw()
        with part.open("ab" if offset else "wb", buffering=chunk_size) as fh:
            try:
                for chunk in chunks:
                    fh.write(chunk)
                    written += len(chunk)
                    tracker.set_file(item, written, transferred=len(chunk))
            finally:
                fh.flush()
                os.fsync(fh.fileno())
    if expected is not None and written < expected:
        raise _TransientError(f"body ended after {written} of {expected} bytes")
    if expected is not None and written > expected:
        part.unlink()
        raise _TransientError(f"received {written} bytes, more than the expected {expected}")


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _TransientError | httpx.TransportError) and (
        unreachable_service(exc, "") is None
    )


class _Wait:
    """Exponential backoff with jitter, or the server's Retry-After when it sends one."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._backoff = wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(min(retry_after, MAX_RETRY_AFTER_S))
        return float(self._backoff(state))


def bytes_still_needed(items: Sequence[DownloadItem]) -> int:
    """Bytes the batch will still write: known sizes less what complete or partial files hold."""
    needed = 0
    for item in items:
        if item.size is None or is_complete(item):
            continue
        part = item.dest.with_name(item.dest.name + ".part")
        needed += item.size - (part.stat().st_size if part.is_file() else 0)
    return max(needed, 0)


def download_file(
    item: DownloadItem,
    *,
    client: httpx.Client,
    chunk_size: int = 1 << 20,
    max_attempts: int = 6,
    backoff_initial_s: float = 2.0,
    backoff_max_s: float = 120.0,
    tracker: _Tracker | None = None,
) -> Path:
    """Fetch one item into place (skipping it when already complete) and return its path."""
    tracker = tracker or _Tracker([item], None, log_interval_s=30.0)
    part = item.dest.with_name(item.dest.name + ".part")
    logger = log
    if is_complete(item):
        part.unlink(missing_ok=True)
        tracker.set_file(item, item.dest.stat().st_size, finished=True)
        logger.info("%s already complete; skipped", item.dest.name)
        return item.dest
    item.dest.parent.mkdir(parents=True, exist_ok=True)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        hint = " (Retry-After)" if getattr(exc, "retry_after", None) is not None else ""
        logger.warning(
            "%s: attempt %d failed (%s); retrying in %.1f s%s",
            item.dest.name,
            state.attempt_number,
            exc,
            wait,
            hint,
        )

    problem: str | None = None
    for round_ in (1, 2):
        retrying = Retrying(
            stop=stop_after_attempt(max_attempts),
            wait=_Wait(backoff_initial_s, backoff_max_s),
            retry=retry_if_exception(_is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    _fetch(client, item, part, chunk_size, tracker)
        except (_TransientError, httpx.TransportError) as exc:
            if unreachable := unreachable_service(exc, "the download server"):
                raise unreachable from None
            raise DownloadError(
                f"{safe_url(item.url)}: giving up after {max_attempts} attempts: "
                f"{type(exc).__name__}: {exc}; the partial file {part} is kept for resuming",
                url=safe_url(item.url),
                dest=item.dest,
            ) from None
        except httpx.HTTPError as exc:
            raise DownloadError(
                f"{safe_url(item.url)}: {type(exc).__name__}: {exc}",
                url=safe_url(item.url),
                dest=item.dest,
            ) from None
        problem = _problem(part, item)
        if problem is None:
            break
        part.unlink()
        tracker.set_file(item, 0)
        if round_ == 1:
            logger.warning(
                "%s arrived corrupt (%s); deleted it and downloading again", item.dest.name, problem
            )
    if problem is not None:
        raise IntegrityError(
            f"{safe_url(item.url)}: {problem} again after a fresh download; the server copy or "
            f"the expected checksum is wrong. Nothing was written to {item.dest}",
            url=safe_url(item.url),
            dest=item.dest,
        )
    part.replace(item.dest)
    if item.md5 is not None:
        _write_marker(item.dest, item.md5.lower())
    tracker.set_file(item, item.dest.stat().st_size, finished=True)
    logger.info("%s complete (%s)", item.dest.name, _format_bytes(item.dest.stat().st_size))
    return item.dest


def download_files(
    items: Sequence[DownloadItem],
    *,
    max_parallel: int = 4,
    auth: httpx.Auth | None = None,
    chunk_size: int = 1 << 20,
    progress: ProgressCallback | None = None,
    timeout_s: float = 60.0,
    max_attempts: int = 6,
    backoff_initial_s: float = 2.0,
    backoff_max_s: float = 120.0,
    log_interval_s: float = 10.0,
) -> list[Path]:
    """Download ``items`` with at most ``max_parallel`` at once; return paths in input order.

    Every item is attempted; failures are raised together afterwards as DownloadFailures.
    """
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
    dests = [item.dest.resolve() for item in items]
    dupes = sorted({str(d) for d in dests if dests.count(d) > 1})
    if dupes:
        raise ValueError(f"several download items write to the same file: {', '.join(dupes)}")
    if not items:
        return []
    # Before any request: a full disk found after hours of downloading is the costly way.
    check_free_space(items[0].dest.parent, bytes_still_needed(items), what="the downloads")
    tracker = _Tracker(items, progress, log_interval_s)
    follow = not getattr(auth, "handles_redirects", False)
    client = httpx.Client(
        auth=auth,
        follow_redirects=follow,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=max_parallel + 2),
        headers={"Accept-Encoding": "identity", "User-Agent": "insarflow"},
    )
    results: list[Path | None] = [None] * len(items)
    failures: list[tuple[DownloadItem, BaseException]] = []
    with client, ThreadPoolExecutor(max_workers=max_parallel) as pool:
        futures = [
            pool.submit(
                # in the caller's context, so the records land in its Prefect run's log
                contextvars.copy_context().run,
                download_file,
                item,
                client=client,
                chunk_size=chunk_size,
                max_attempts=max_attempts,
                backoff_initial_s=backoff_initial_s,
                backoff_max_s=backoff_max_s,
                tracker=tracker,
            )
            for item in items
        ]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=log_interval_s)
            tracker.publish()
        for i, (item, future) in enumerate(zip(items, futures, strict=True)):
            try:
                results[i] = future.result()
            except Exception as exc:
                failures.append((item, exc))
    if failures:
        if len(failures) == 1 and len(items) == 1:
            raise failures[0][1]
        raise DownloadFailures(failures, len(items))
    return [p for p in results if p is not None]


@task(name="download-files", tags=["network"], retries=0, cache_policy=NO_CACHE)
def download_files_task(
    items: list[DownloadItem],
    *,
    max_parallel: int = 4,
    credentials: Credentials | None = None,
) -> list[Path]:
    """Prefect task: download ``items`` with Earthdata auth when credentials are given."""
    auth = EarthdataAuth(credentials) if credentials is not None else None
    return download_files(items, max_parallel=max_parallel, auth=auth)
