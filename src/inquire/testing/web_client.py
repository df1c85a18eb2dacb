"""A test client that talks to a web app the way its own page does."""

from __future__ import annotations

from typing import Any


def page_client(app: Any, host: str = "127.0.0.1", **kwargs: Any) -> Any:
    """A ``fastapi.testclient.TestClient`` for ``app`` that names ``host`` in its Host header
    and sends the page's Origin and a CSRF token of the app with every request, as the
    browser page does (the apps refuse other hosts, and changes without both).

    ``kwargs`` go to ``TestClient`` (e.g. ``raise_server_exceptions=False``)."""
    from fastapi.testclient import TestClient

    from inquire.web.security import guard_of

    base = f"http://{host}"
    headers = {"origin": base, "x-csrf-token": guard_of(app).new_token()}
    headers.update(kwargs.pop("headers", None) or {})
    return TestClient(app, base_url=base, headers=headers, **kwargs)
