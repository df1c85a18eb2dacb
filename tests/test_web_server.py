"""The background web server (inquire.web.server)."""

from __future__ import annotations

import pytest


# uvicorn ends its thread with SystemExit when it cannot bind; that is the case under test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_web_server_on_a_busy_port_says_how_to_fix_it() -> None:
    import socket

    from fastapi import FastAPI

    from inquire.errors import InputError
    from inquire.web.server import BackgroundServer

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match="another --port"):
            BackgroundServer(FastAPI(), port=port, timeout_s=120).start()
