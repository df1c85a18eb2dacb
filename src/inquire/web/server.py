"""Running the app with uvicorn: in the foreground (``inquire serve``) or in a background
thread on a free loopback port (tests, the load benchmark)."""

from __future__ import annotations

import logging
import socket
import threading
import time
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


def serve(app: Any, host: str = LOOPBACK, port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (blocks)."""
    import uvicorn

    if not 0 < port < 65536:
        raise InputError(f"port {port} is out of range; use 1..65535")
    uvicorn.run(app, host=host, port=port, log_level=log_level)


class BackgroundServer:
    """``with BackgroundServer(app) as srv: httpx.get(srv.url + "/")`` -- uvicorn in a thread on
    a free loopback port, stopped and joined on exit."""

    def __init__(
        self, app: Any, host: str = LOOPBACK, port: int | None = None, timeout_s: float = 20.0
    ) -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", access_log=False, lifespan="on"
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
