"""A local HTTP file server (127.0.0.1, random port) that injects network faults.

Serves byte strings with Range support and applies queued :class:`Fault` s, one per
request: drop the connection mid-body, answer a status (503, 429 + Retry-After, 401...),
send a short but self-consistent body, flip a byte, or ignore ``Range``. It records every
request, counts the body bytes it sent and the most requests in flight at once
(``max_active``), so tests (and benchmarks) can check what a client really did.
Custom endpoints can be added with :meth:`FaultServer.route`.

    with FaultServer() as server:
        url = server.add_file("a.zip", data, faults=[drop_after(1000), status(503)])
        ...
        assert server.bytes_sent("a.zip") == len(data)
"""

from __future__ import annotations

import base64
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

FaultKind = Literal["drop", "status", "truncate", "corrupt", "ignore_range"]


@dataclass(frozen=True)
class Fault:
    """What to do to one request instead of serving it normally."""

    kind: FaultKind
    after_bytes: int = 0
    status: int = 503
    headers: tuple[tuple[str, str], ...] = ()
    offset: int = 0


def drop_after(n: int) -> Fault:
    """Send the full headers and ``n`` body bytes, then close the connection."""
    return Fault("drop", after_bytes=n)


def status(code: int, **headers: str) -> Fault:
    """Answer ``code`` with ``headers`` (underscores become dashes) and a short body."""
    return Fault(
        "status", status=code, headers=tuple((k.replace("_", "-"), v) for k, v in headers.items())
    )


def truncate(n: int) -> Fault:
    """Serve only ``n`` bytes with a matching Content-Length (a short, consistent body)."""
    return Fault("truncate", after_bytes=n)


def corrupt(offset: int) -> Fault:
    """Serve the file with the byte at absolute ``offset`` flipped."""
    return Fault("corrupt", offset=offset)


def ignore_range() -> Fault:
    """Serve 200 with the whole file even when Range was asked for."""
    return Fault("ignore_range")


@dataclass(frozen=True)
class Request:
    """A request as a route handler sees it (header names lower-case)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def form(self) -> list[tuple[str, str]]:
        """The body parsed as application/x-www-form-urlencoded (repeated keys kept)."""
        return parse_qsl(self.body.decode(), keep_blank_values=True)


@dataclass(frozen=True)
class Reply:
    """A route handler's answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered: what was asked, what it sent."""

    method: str
    path: str
    headers: dict[str, str]
    status: int
    body_bytes: int

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


Route = Callable[[Request], Reply]


@dataclass
class _File:
    data: bytes
    faults: deque[Fault]
    always: list[Fault]
    auth: str | None = None


class FaultServer:
    """Threaded HTTP server on 127.0.0.1 serving files with injected faults."""

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}
        self._routes: dict[str, Route] = {}
        self._records: list[RequestRecord] = []
        self._sent: dict[str, int] = {}
        self._active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FaultServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name.lstrip('/')}"

    # -- configuration
    def add_file(
        self,
        name: str,
        data: bytes,
        *,
        faults: Iterable[Fault] = (),
        always: Iterable[Fault] = (),
        basic_auth: tuple[str, str] | None = None,
    ) -> str:
        """Serve ``data`` at ``/name``; ``faults`` apply to successive requests, ``always`` to all.

        With ``basic_auth`` every request without that username/password gets 401.
        """
        token = None
        if basic_auth is not None:
            token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
        with self._lock:
            self._files[name.lstrip("/")] = _File(data, deque(faults), list(always), token)
        return self.url(name)

    def add_faults(self, name: str, *faults: Fault) -> None:
        """Queue more one-shot faults for ``name``."""
        with self._lock:
            self._files[name.lstrip("/")].faults.extend(faults)

    def route(self, path: str, handler: Route) -> str:
        """Answer every method on ``path`` with ``handler``; returns its URL."""
        with self._lock:
            self._routes["/" + path.lstrip("/")] = handler
        return self.url(path)

    # -- observations
    def _settle(self) -> None:
        """Wait (briefly) for handlers still running: a client can hold the reply before the
        handler has recorded it. Call with the lock held."""
        self._idle.wait_for(lambda: self._active == 0, timeout=5)

    def requests(self, name: str | None = None) -> list[RequestRecord]:
        """Requests answered so far (for ``/name`` only when given)."""
        with self._lock:
            self._settle()
            records = list(self._records)
        if name is None:
            return records
        return [r for r in records if r.path == "/" + name.lstrip("/")]

    def bytes_sent(self, name: str) -> int:
        """Body bytes written to clients for ``/name``."""
        with self._lock:
            self._settle()
            return self._sent.get("/" + name.lstrip("/"), 0)

    # -- internals used by the handler
    def _enter(self) -> None:
        with self._lock:
            self._active += 1
            self.max_active = max(self.max_active, self._active)

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1
            self._idle.notify_all()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            self._sent[record.path] = self._sent.get(record.path, 0) + record.body_bytes

    def _lookup(self, path: str) -> tuple[Route | None, _File | None, Fault | None, list[Fault]]:
        with self._lock:
            if path in self._routes:
                return self._routes[path], None, None, []
            entry = self._files.get(path.lstrip("/"))
            if entry is None:
                return None, None, None, []
            fault = entry.faults.popleft() if entry.faults else None
            return None, entry, fault, list(entry.always)


def _parse_range(value: str | None, total: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single ``bytes=`` range, or None when absent/unparsable."""
    if not value or not value.startswith("bytes="):
        return None
    first, _, last = value[len("bytes=") :].partition("-")
    if not first.isdigit():
        return None
    start = int(first)
    end = int(last) if last.isdigit() else total - 1
    return start, min(end, total - 1)


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            return

        def _headers(self) -> dict[str, str]:
            return {k.lower(): v for k, v in self.headers.items()}

        def _send(
            self,
            status_code: int,
            headers: dict[str, str],
            body: bytes,
            *,
            body_limit: int | None = None,
            close: bool = False,
        ) -> int:
            self.send_response(status_code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            payload = body if body_limit is None else body[:body_limit]
            sent = 0
            if self.command != "HEAD":
                try:
                    self.wfile.write(payload)
                    self.wfile.flush()
                    sent = len(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            if close:
                self.close_connection = True
            return sent

        def _handle(self) -> None:
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            route, entry, fault, always = server._lookup(path)
            headers = self._headers()
            if route is not None:
                request = Request(
                    method=self.command,
                    path=path,
                    query=dict(parse_qsl(urlsplit(self.path).query)),
                    headers=headers,
                    body=body,
                )
                reply = route(request)
                reply_headers = {"Content-Length": str(len(reply.body)), **reply.headers}
                sent = self._send(reply.status, reply_headers, reply.body)
                server._record(RequestRecord(self.command, path, headers, reply.status, sent))
                return
            if entry is None:
                sent = self._send(404, {"Content-Length": "9"}, b"not found")
                server._record(RequestRecord(self.command, path, headers, 404, sent))
                return
            if entry.auth is not None and headers.get("authorization") != f"Basic {entry.auth}":
                sent = self._send(
                    401, {"Content-Length": "12", "WWW-Authenticate": "Basic"}, b"unauthorized"
                )
                server._record(RequestRecord(self.command, path, headers, 401, sent))
                return
            faults = [f for f in (fault, *always) if f is not None]
            kinds = {f.kind for f in faults}
            status_fault = next((f for f in faults if f.kind == "status"), None)
            if status_fault is not None:
                msg = f"injected {status_fault.status}".encode()
                reply_headers = {"Content-Length": str(len(msg)), **dict(status_fault.headers)}
                sent = self._send(status_fault.status, reply_headers, msg)
                server._record(
                    RequestRecord(self.command, path, headers, status_fault.status, sent)
                )
                return
            data = bytearray(entry.data)
            for f in faults:
                if f.kind == "corrupt" and f.offset < len(data):
                    data[f.offset] ^= 0xFF
            total = len(data)
            wanted = None if "ignore_range" in kinds else _parse_range(headers.get("range"), total)
            if wanted is not None and wanted[0] >= total:
                sent = self._send(
                    416, {"Content-Range": f"bytes */{total}", "Content-Length": "0"}, b""
                )
                server._record(RequestRecord(self.command, path, headers, 416, sent))
                return
            if wanted is None:
                code, start, end = 200, 0, total - 1
            else:
                code, (start, end) = 206, wanted
            body = bytes(data[start : end + 1])
            reply_headers = {"Accept-Ranges": "bytes", "Content-Type": "application/zip"}
            if code == 206:
                reply_headers["Content-Range"] = f"bytes {start}-{end}/{total}"
            truncate_fault = next((f for f in faults if f.kind == "truncate"), None)
            drop_fault = next((f for f in faults if f.kind == "drop"), None)
            if truncate_fault is not None:
                body = body[: truncate_fault.after_bytes]
                if code == 206:
                    reply_headers["Content-Range"] = (
                        f"bytes {start}-{start + len(body) - 1}/{total}"
                    )
            reply_headers["Content-Length"] = str(len(body))
            if drop_fault is not None:
                sent = self._send(
                    code, reply_headers, body, body_limit=drop_fault.after_bytes, close=True
                )
            else:
                sent = self._send(code, reply_headers, body)
            server._record(RequestRecord(self.command, path, headers, code, sent))

        def _guarded(self) -> None:
            server._enter()
            try:
                self._handle()
            finally:
                server._leave()

        def do_GET(self) -> None:
            self._guarded()

        def do_HEAD(self) -> None:
            self._guarded()

        def do_POST(self) -> None:
            self._guarded()

    return Handler
