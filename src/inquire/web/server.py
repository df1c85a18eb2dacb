"""Running the app with uvicorn: in the foreground (``inquire serve``, ``inquire collection
serve``) or in a background thread on a free loopback port (tests, the load benchmark).

Both run under :class:`ServerLimits`: at most ``max_connections`` open connections (more
get 503), at most ``max_connections_per_client`` from one client address (more are answered
503 and closed at once, so one client holding idle sockets cannot lock others out), idle
connections closed early once three quarters of the connections are open, a request line
and headers that must arrive within ``header_timeout_s`` of the connection opening or of the
previous response (else the connection is closed, so slow clients cannot hold connections
open), at most ``max_header_bytes`` of headers, and idle keep-alive connections closed after
``keep_alive_s``. Behind a reverse proxy every client has the proxy's address: raise
``max_connections_per_client`` there. Body size and body time-outs are the app's
(:mod:`inquire.web.security`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from inquire.errors import InputError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerLimits:
    """Connection-level limits of the HTTP server (counts, bytes, seconds)."""

    max_connections: int = 128
    max_connections_per_client: int = 32
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5
    max_header_bytes: int = 16 * 1024
    backlog: int = 256

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments of ``uvicorn.Config`` that apply these limits."""
        if (
            self.max_connections < 1
            or self.max_connections_per_client < 1
            or not self.header_timeout_s > 0
            or self.keep_alive_s < 1
        ):
            raise InputError(f"server limits must be positive, got {self}")
        return {
            "http": _header_timeout_protocol(
                self.header_timeout_s, self.max_connections_per_client, self.max_connections
            ),
            "limit_concurrency": self.max_connections,
            "timeout_keep_alive": self.keep_alive_s,
            "h11_max_incomplete_event_size": self.max_header_bytes,
            "backlog": self.backlog,
            "server_header": False,
        }


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 58\r\nconnection: close\r\n\r\n"
    b"too many open connections from your address; close some\r\n"
)
SHED_IDLE_AFTER_S = 1.0  # an idle connection older than this may be closed when busy


def _header_timeout_protocol(
    timeout_s: float, per_client: int = 32, max_connections: int = 128
) -> type:
    """uvicorn's h11 protocol, closing a connection whose next request line and headers have
    not fully arrived ``timeout_s`` seconds after it opened or after its last response;
    answering 503 and closing a client's connection beyond ``per_client`` open ones; and,
    once three quarters of ``max_connections`` are open, closing connections idle (between
    requests, or opened without a request) for over :data:`SHED_IDLE_AFTER_S`, oldest first."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_by_client: dict[str, int] = {}
    shed_at = max(1, max_connections * 3 // 4)

    class HeaderTimeoutH11(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _client_key: str | None = None
        _idle_since: float | None = None

        def _idle(self) -> bool:
            return (
                self.conn.their_state is h11.IDLE
                and (self.cycle is None or self.cycle.response_complete)
                and not self.transport.is_closing()
            )

        def _shed_idle(self) -> None:
            conns = self.server_state.connections
            if len(conns) < shed_at:
                return
            now = self.loop.time()
            idle = [
                c
                for c in conns
                if isinstance(c, HeaderTimeoutH11)
                and c is not self
                and c._idle_since is not None
                and now - c._idle_since > SHED_IDLE_AFTER_S
                and c._idle()
            ]
            idle.sort(key=lambda c: c._idle_since or 0.0)
            for c in idle[: len(conns) - shed_at + 1]:
                c.transport.close()

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(timeout_s, self._head_timeout)

        def _head_timeout(self) -> None:
            self._head_timer = None
            # IDLE: the client has not sent a whole request head yet (a request being
            # served, or its body arriving, is the app's business).
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            key = str(self.client[0]) if self.client else ""
            if open_by_client.get(key, 0) >= per_client:
                transport.write(_BUSY)
                transport.close()
                return
            open_by_client[key] = open_by_client.get(key, 0) + 1
            self._client_key = key
            self._idle_since = self.loop.time()
            self._shed_idle()
            self._arm()

        def handle_events(self) -> None:
            self._idle_since = None
            super().handle_events()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._idle_since = self.loop.time()
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            key = self._client_key
            if key is not None:
                self._client_key = None
                left = open_by_client.get(key, 1) - 1
                if left > 0:
                    open_by_client[key] = left
                else:
                    open_by_client.pop(key, None)
            super().connection_lost(exc)

    return HeaderTimeoutH11


def serve(
    app: Any,
    host: str = LOOPBACK,
    port: int = 8000,
    log_level: str = "info",
    limits: ServerLimits | None = None,
) -> None:
    """Serve ``app`` until interrupted (blocks); warns when ``host`` is not loopback."""
    import uvicorn

    from inquire.web.security import warn_if_exposed

    if not 0 < port < 65536:
        raise InputError(f"port {port} is out of range; use 1..65535")
    warn_if_exposed(host)
    opts = (limits or ServerLimits()).uvicorn_options()
    uvicorn.run(app, host=host, port=port, log_level=log_level, **opts)


class BackgroundServer:
    """``with BackgroundServer(app) as srv: httpx.get(srv.url + "/")`` -- uvicorn in a thread on
    a free loopback port, stopped and joined on exit."""

    def __init__(
        self,
        app: Any,
        host: str = LOOPBACK,
        port: int | None = None,
        timeout_s: float = 120.0,
        limits: ServerLimits | None = None,
    ) -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            **(limits or ServerLimits()).uvicorn_options(),
        )
        self.server = uvicorn.Server(config)
        self.timeout_s = timeout_s
        self._thread = threading.Thread(target=self.server.run, name="inquire-web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise InputError(
                    f"the web server could not start on {self.url}: the port is probably in "
                    f"use or the address is not this machine's; pick another --port or --host"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise InputError(
                    f"the web server did not start on {self.url} within {self.timeout_s:.0f} s; "
                    f"check that nothing else holds the port, or pass a larger timeout_s"
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=self.timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
