"""A local HTTP server for download tests: serves a folder, and misbehaves on request.

``FixtureServer(root)`` serves the files under ``root`` at ``http://127.0.0.1:PORT/<path>``
(a random free port), so a folder laid out like the upstream hosts
(``raw.githubusercontent.com/...``, ``huggingface.co/...``) works as an ``INQUIRE_BASE_URL``
mirror. Modes (set ``server.mode`` at any time; ``server.fail_times`` limits how many
responses misbehave before the server turns normal, ``None`` = all of them):

- ``"normal"``: answers ``Range: bytes=N-`` with 206 and the rest of the file.
- ``"drop"``: announces the full ``Content-Length``, sends half the body, closes the socket.
- ``"corrupt"``: sends the right number of bytes, but with every byte flipped.
- ``"ignore-range"``: answers every GET with 200 and the whole file.
- ``"error"``: answers 503 (a transient server error).

A file under a Hugging Face hub resolve path (``.../resolve/<40-hex commit>/<file>``, e.g.
``huggingface.co/datasets/<id>/resolve/<rev>/data/x.parquet`` of a mirror folder) is answered
with the headers ``huggingface_hub.hf_hub_download`` needs: ``X-Repo-Commit`` (the commit in
the path) and an ``ETag`` that is the file's sha256, as the hub sends for LFS files. So
``HF_ENDPOINT=<server.url>/huggingface.co`` makes the server a hub mirror.

Every request is logged in ``server.requests`` (method, path, Range header, status).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from inquire.errors import InputError, InquireError

MODES = ("normal", "drop", "corrupt", "ignore-range", "error")
_HUB_RESOLVE = re.compile(r"/resolve/([0-9a-f]{40})/")


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received."""

    method: str
    path: str
    range: str | None
    status: int


class FixtureServer:
    """A threaded HTTP server on 127.0.0.1 serving ``root``; use as a context manager."""

    def __init__(self, root: str | Path, mode: str = "normal", fail_times: int | None = None):
        if mode not in MODES:
            raise InputError(f"unknown server mode {mode!r}; choose one of {MODES}")
        self.root = Path(root).resolve()
        self.mode = mode
        self.fail_times = fail_times
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> FixtureServer:
        """Bind a free port on 127.0.0.1 and serve in a background thread."""
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (later requests are refused)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FixtureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise InquireError("the fixture server is not running; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    # helpers for tests
    def gets(self, path_suffix: str = "") -> list[RequestRecord]:
        """The GET requests whose path ends with ``path_suffix``."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith(path_suffix)]

    def _effective_mode(self) -> str:
        with self._lock:
            if self.mode == "normal":
                return "normal"
            if self.fail_times is None:
                return self.mode
            if self.fail_times > 0:
                self.fail_times -= 1
                return self.mode
            return "normal"

    def _log(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)


def _parse_range(header: str | None, size: int) -> int | None:
    """Start offset of ``bytes=N-`` (the only form the downloader sends), else None."""
    if not header or not header.startswith("bytes="):
        return None
    spec = header[6:].split(",")[0].strip()
    start, _, end = spec.partition("-")
    if not start.isdigit() or end not in ("", str(size - 1)):
        return None
    return int(start)


def _make_handler(server: FixtureServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so closing mid-body is a clean "drop".
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return

        def _file(self) -> Path | None:
            rel = unquote(urlsplit(self.path).path).lstrip("/")
            target = (server.root / rel).resolve()
            if server.root not in target.parents or not target.is_file():
                return None
            return target

        def _hub_headers(self, target: Path) -> None:
            match = _HUB_RESOLVE.search(urlsplit(self.path).path)
            if match:
                digest = hashlib.sha256(target.read_bytes()).hexdigest()
                self.send_header("X-Repo-Commit", match.group(1))
                self.send_header("ETag", f'"{digest}"')

        def do_HEAD(self) -> None:
            target = self._file()
            status = 200 if target else 404
            server._log(RequestRecord("HEAD", self.path, self.headers.get("Range"), status))
            self.send_response(status)
            if target:
                self.send_header("Content-Length", str(target.stat().st_size))
                self.send_header("Accept-Ranges", "bytes")
                self._hub_headers(target)
            self.end_headers()

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            target = self._file()
            if target is None:
                server._log(RequestRecord("GET", self.path, range_header, 404))
                self.send_error(404, "not found")
                return
            mode = server._effective_mode()
            if mode == "error":
                server._log(RequestRecord("GET", self.path, range_header, 503))
                self.send_error(503, "try again later")
                return
            data = target.read_bytes()
            start = None if mode == "ignore-range" else _parse_range(range_header, len(data))
            if start is not None and start >= len(data):
                server._log(RequestRecord("GET", self.path, range_header, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            status = 206 if start is not None else 200
            body = data[start or 0 :]
            if mode == "corrupt":
                body = bytes(b ^ 0xFF for b in body)
            server._log(RequestRecord("GET", self.path, range_header, status))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "none" if mode == "ignore-range" else "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self._hub_headers(target)
            self.end_headers()
            if mode == "drop":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler
