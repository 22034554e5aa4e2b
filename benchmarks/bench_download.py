"""Parallel download throughput against a per-connection throttle, and bytes lost to a kill.

A local HTTP server on 127.0.0.1 serves files with ``Range`` support and sends at most
``--rate-mbs`` MB/s on each connection (like a remote archive's per-stream limit); it counts
every body byte it writes. ``insarflow.tasks.download.download_files`` fetches 4 files of
``--file-mb`` MB (smoke: 0.5 MB) once with ``max_parallel=1`` (a single stream) and once with
``max_parallel=4``.

Resume after a kill: a child process downloads one file; when its ``.part`` holds half of the
file it gets SIGKILL; a second child finishes the download. Re-transferred bytes = bytes the
server sent in total - file size: what the kill cost beyond the data already on disk (at most
the writer's buffer, one ``chunk_size`` of 1 MiB, plus what was in flight in socket buffers).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

PIECE = 16 * 1024  # bytes per write; the throttle sleeps between pieces
CHUNK_SIZE = 1 << 20  # download_files' default chunk_size


class ThrottledServer:
    """Threaded HTTP server on 127.0.0.1 with a per-connection byte rate and a sent-bytes count."""

    def __init__(self, rate_bytes_s: float) -> None:
        self.rate = rate_bytes_s
        self.files: dict[str, bytes] = {}
        self.sent: dict[str, int] = {}
        self.ranges: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> ThrottledServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def _count(self, name: str, n: int) -> None:
        with self.lock:
            self.sent[name] = self.sent.get(name, 0) + n

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                with server.lock:
                    server.ranges.append((name, wanted))
                start, status = 0, 200
                if wanted and wanted.startswith("bytes=") and wanted[6:].split("-")[0].isdigit():
                    start, status = int(wanted[6:].split("-")[0]), 206
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(status)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                t0 = time.monotonic()
                sent = 0
                try:
                    for offset in range(start, len(data), PIECE):
                        piece = data[offset : offset + PIECE]
                        self.wfile.write(piece)
                        sent += len(piece)
                        server._count(name, len(piece))
                        ahead = sent / server.rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler


def payload(size: int, seed: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"\0" * (size % 32)


def throughput(server: ThrottledServer, root: Path, names: list[str], parallel: int) -> float:
    from insarflow.tasks.download import DownloadItem, download_files

    dest = root / f"parallel-{parallel}"
    items = [DownloadItem(server.url(n), dest / n, size=len(server.files[n])) for n in names]
    t0 = time.perf_counter()
    download_files(items, max_parallel=parallel, log_interval_s=3600)
    seconds = time.perf_counter() - t0
    total = sum(len(server.files[n]) for n in names)
    return total / seconds / 1e6


def child_download(url: str, dest: Path, size: int, md5: str) -> int:
    """Run in the child process: download one file (the parent may kill it)."""
    from insarflow.tasks.download import DownloadItem, download_files

    download_files([DownloadItem(url, dest, size=size, md5=md5)], max_parallel=1)
    return 0


def killed_download(server: ThrottledServer, root: Path, name: str) -> dict[str, int]:
    """Kill a downloading child at half the file, finish with a second child."""
    data = server.files[name]
    dest = root / "resume" / name
    part = dest.with_name(dest.name + ".part")
    argv = [
        sys.executable, __file__, "--child-download", server.url(name), str(dest),
        str(len(data)), hashlib.md5(data).hexdigest(),
    ]  # fmt: skip
    # Popen rather than run_command: the point is to SIGKILL the child mid-file.
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    at_kill = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            at_kill = part.stat().st_size if part.exists() else 0
            if at_kill >= len(data) // 2:
                break
            time.sleep(0.01)
        if child.poll() is not None:
            raise RuntimeError(f"the download finished or failed (rc {child.returncode}) first")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    sent_before = server.sent.get(name, 0)
    on_disk = part.stat().st_size if part.exists() else 0
    from insarflow.tasks.shell import run_command

    run_command(argv, log_path=root / "resume.log")
    if dest.read_bytes() != data:
        raise RuntimeError(f"{dest} differs from the served file after the resume")
    resumed_at = [r for n, r in server.ranges if n == name][-1]
    return {
        "size": len(data),
        "sent_before_kill": sent_before,
        "on_disk_after_kill": on_disk,
        "sent_total": server.sent.get(name, 0),
        "resume_offset": int(resumed_at[6:].split("-")[0]) if resumed_at else 0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="0.5 MB files, 2 MB for the kill")
    parser.add_argument("--rate-mbs", type=float, default=2.0, help="MB/s per connection")
    parser.add_argument("--file-mb", type=float, default=None, help="size of each file (8)")
    parser.add_argument("--child-download", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_download:
        url, dest, size, md5 = args.child_download
        return child_download(url, Path(dest), int(size), md5)
    file_mb = args.file_mb or (0.5 if args.smoke else 8.0)
    kill_mb = 4 * file_mb if not args.smoke else 2.0
    size = int(file_mb * 1e6)

    bl.header("bench_download: parallel downloads vs one stream, resume after SIGKILL")
    with bl.scratch_dir("download") as root, ThrottledServer(args.rate_mbs * 1e6) as server:
        names = [f"S1_{i}.zip" for i in range(4)]
        for i, name in enumerate(names):
            server.files[name] = payload(size, i)
        server.files["kill.zip"] = payload(int(kill_mb * 1e6), 99)
        print(
            f"   server: 127.0.0.1, {args.rate_mbs:g} MB/s per connection; "
            f"4 files x {file_mb:g} MB; kill test on {kill_mb:g} MB",
            flush=True,
        )
        single = throughput(server, root, names, 1)
        parallel = throughput(server, root, names, 4)
        kill = killed_download(server, root, "kill.zip")
    retransferred = kill["sent_total"] - kill["size"]
    print()
    bl.table(
        [
            ["one stream (max_parallel=1)", f"{single:.2f}", "1.00x"],
            ["max_parallel=4", f"{parallel:.2f}", bl.ratio(parallel, single)],
        ],
        ["downloads", "MB/s", "vs one stream"],
    )
    print()
    bl.table(
        [
            ["file size", f"{kill['size']}"],
            ["sent before the kill", f"{kill['sent_before_kill']}"],
            ["in .part after the kill", f"{kill['on_disk_after_kill']}"],
            ["resumed from byte (Range)", f"{kill['resume_offset']}"],
            ["sent in total", f"{kill['sent_total']}"],
            ["re-transferred", f"{retransferred} ({retransferred / CHUNK_SIZE:.2f} chunks)"],
        ],
        ["kill mid-file, then resume", "bytes"],
    )
    print()
    bl.figure("download.single_stream_mb_per_s", f"{single:.2f}")
    bl.figure("download.parallel4_mb_per_s", f"{parallel:.2f}")
    bl.figure("download.parallel_speedup", f"{parallel / single:.2f}")
    bl.figure("download.part_bytes_after_kill", str(kill["on_disk_after_kill"]))
    bl.figure("download.resume_offset", str(kill["resume_offset"]))
    bl.figure("download.retransferred_bytes", f"{retransferred}")
    bl.figure("download.retransferred_chunks", f"{retransferred / CHUNK_SIZE:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
