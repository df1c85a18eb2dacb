"""What makes the web apps safe to expose: response headers, a request guard and its errors.

Every app (``inquire serve`` and ``inquire collection serve``) installs :func:`secure`, which
adds two ASGI middlewares (and :class:`HeadAsGet`: HEAD is answered wherever GET is):

- :class:`SecurityHeaders`: a strict Content-Security-Policy (same origin only, no inline
  script, no framing), ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
  same-origin`` on every response. (``same-origin``, not ``no-referrer``: under
  ``no-referrer`` browsers send ``Origin: null`` on the page's own POST / PUT requests, which
  the Origin check below would refuse.)
- :class:`GuardMiddleware` over a :class:`RequestGuard`:

  1. every request must carry a ``Host`` that names this server: a loopback name
     (``localhost``, ``127.0.0.0/8``, ``::1``), the address it is bound to, or a name
     allowed with ``allowed_hosts`` (``--allow-host``); anything else is 400 -- a page
     on another site whose name was re-bound to this machine (DNS rebinding) gets nothing;
  2. a state-changing request (any method but GET / HEAD / OPTIONS) must come from the page
     itself: an ``Origin`` equal to ``scheme://Host`` and an ``X-CSRF-Token`` header holding
     a token the server signed (rendered in each page's ``<meta name="csrf-token">``);
     otherwise 403;
  3. a request line and headers over ``max_header_bytes`` together are 431; a
     ``multipart/form-data`` body sent to a route that takes no form or upload is 415, before
     any of it is read;
  4. a body larger than ``max_body_bytes`` (``max_upload_bytes`` for multipart uploads) is
     413, before or while it is read; a body not complete ``body_timeout_s`` after the app
     first reads it is 408.

HTML pages (they carry a CSRF token) are sent with ``Cache-Control: no-store``.

Tokens are ``nonce.signature`` with an HMAC-SHA256 signature under a key made when the app
is built, so every page gets its own token and no server-side table grows; a restarted server
refuses old pages' tokens (reloading the page gives a new one).

Request-line and header time-outs, and the connection limit, belong to the HTTP server:
see :class:`inquire.web.server.ServerLimits`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inquire.web.config import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_UPLOAD_BYTES,
)

log = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"

# Same-origin only: no CDN, no inline script, no framing.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]

_WILDCARD = {"0.0.0.0", "::", ""}
_PORT = re.compile(r"^[0-9]{1,5}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}\.[0-9a-f]{64}$")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str) -> bool:
    """Log a warning when ``host`` is not a loopback address; returns whether it warned."""
    if is_loopback(host):
        return False
    log.warning(
        "serving on %s: the page has no login, so anyone who can reach this address can see "
        "the results and images and mark results; bind to 127.0.0.1 unless that is intended",
        host or "all interfaces",
    )
    return True


def split_host(value: str) -> tuple[str, str | None] | None:
    """``Host`` header -> ``(lower-case name without brackets, port or None)``, or None if
    the value is not a host[:port]."""
    value = value.strip().lower()
    if not value or len(value) > 255:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not (rest.startswith(":") and _PORT.match(rest[1:])):
            return None
        return name, rest[1:] or None
    name, sep, port = value.rpartition(":")
    if not sep:
        name, port = value, ""
    elif not _PORT.match(port):
        return None
    if not name or any(c in name for c in "/\\@ ?#[]"):
        return None
    return name, port or None


class RequestGuard:
    """Which hosts may be named, the CSRF key, and the body limits of one app.

    - ``host``: the address the server binds to (names it, unless it is a wildcard such as
      ``0.0.0.0``, where this machine's host name and its addresses are allowed instead);
    - ``allowed_hosts``: further names or addresses clients use to reach the server (a
      reverse proxy's public name, a LAN address);
    - ``max_body_bytes`` / ``max_upload_bytes``: the largest request body (bytes) accepted
      for ordinary and for ``multipart/form-data`` requests;
    - ``body_timeout_s``: how long (seconds) the server waits for each part of a body;
    - ``max_header_bytes``: the largest request target plus headers (bytes).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        allowed_hosts: Sequence[str] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        from inquire.errors import InputError

        if (
            max_body_bytes < 1
            or max_upload_bytes < 1
            or not body_timeout_s > 0
            or max_header_bytes < 1
        ):
            raise InputError(
                f"request limits must be positive, got max_body_bytes={max_body_bytes}, "
                f"max_upload_bytes={max_upload_bytes}, body_timeout_s={body_timeout_s}, "
                f"max_header_bytes={max_header_bytes}"
            )
        self.max_header_bytes = int(max_header_bytes)
        self.host = host
        self.max_body_bytes = int(max_body_bytes)
        self.max_upload_bytes = int(max_upload_bytes)
        self.body_timeout_s = float(body_timeout_s)
        names = {"localhost", "127.0.0.1", "::1"}
        for h in [host, *allowed_hosts]:
            parsed = split_host(h) if h.strip() not in _WILDCARD else None
            if h.strip() in _WILDCARD:
                names |= set(_this_machine())
            elif parsed is None:
                raise InputError(
                    f"allowed host {h!r} is not a host name or address; give e.g. "
                    f"'photos.example.org' or '192.168.1.20' (no scheme, no path)"
                )
            else:
                names.add(parsed[0])
        self.allowed: frozenset[str] = frozenset(names)
        self._key = secrets.token_bytes(32)

    # -- hosts ---------------------------------------------------------------------------------
    def host_allowed(self, value: str) -> bool:
        """Whether a ``Host`` header value names this server."""
        parsed = split_host(value)
        if parsed is None:
            return False
        name = parsed[0]
        return name in self.allowed or is_loopback(name)

    def refusal(
        self, method: str, scheme: str, headers: Mapping[str, str]
    ) -> tuple[int, str] | None:
        """``(status, message)`` if a request with these headers must be refused (foreign
        Host; a state-changing method without this page's Origin and a valid CSRF token),
        else None. ``headers``: lower-case names (a Starlette ``Headers`` works too)."""
        host = headers.get("host") or ""
        if not self.host_allowed(host):
            return (
                400,
                f"Host {host[:100]!r} does not name this server; open the page at the address "
                "the server was started on, or start it with --allow-host NAME",
            )
        method = method.upper()
        if method in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        page = f"{scheme}://{host.strip().lower()}"
        if origin is None or origin.strip().lower() != page:
            shown = origin[:100] if origin is not None else None
            return (
                403,
                f"{method} refused: Origin {shown!r} is not this page's origin {page!r}; "
                "send changes from the page itself",
            )
        if not self.token_ok(headers.get(CSRF_HEADER)):
            return (
                403,
                f"{method} refused: the X-CSRF-Token header is missing or not a token of this "
                'server; reload the page to get a fresh one (see its <meta name="csrf-token">)',
            )
        return None

    # -- CSRF tokens ---------------------------------------------------------------------------
    def new_token(self) -> str:
        """A fresh token for one page: ``nonce.hex(HMAC-SHA256(key, nonce))``."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def token_ok(self, token: str | None) -> bool:
        """Whether ``token`` was made by :meth:`new_token` of this guard."""
        if not token or not _TOKEN.match(token):
            return False
        nonce, sig = token.split(".")
        return hmac.compare_digest(sig, self._sign(nonce))

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode("ascii"), hashlib.sha256).hexdigest()


def _this_machine() -> Iterable[str]:
    """Names and addresses of this machine, for a server bound to every interface."""
    out = set()
    for name in {socket.gethostname(), socket.getfqdn()}:
        if not name:
            continue
        out.add(name.lower())
        try:
            for info in socket.getaddrinfo(name, None):
                out.add(str(info[4][0]).lower())
        except OSError:
            continue
    return out


def guard_of(app: Any) -> RequestGuard:
    """The :class:`RequestGuard` of a FastAPI / Starlette app (a loopback-only default is
    made and kept if the app was built without :func:`secure`)."""
    guard = getattr(app.state, "web_guard", None)
    if guard is None:
        guard = app.state.web_guard = RequestGuard()
    return guard  # type: ignore[no-any-return]


def check_request(request: Request) -> None:
    """FastAPI dependency: the guard's host / origin / token rules for one route, so a router
    stays safe even inside an app built without :func:`secure`. Raises HTTPException."""
    from fastapi import HTTPException

    refusal = guard_of(request.app).refusal(request.method, request.url.scheme, request.headers)
    if refusal is not None:
        raise HTTPException(*refusal)


def csrf_token(request: Request) -> str:
    """A new CSRF token for the page answering ``request`` (a Starlette ``Request``)."""
    return guard_of(request.app).new_token()


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.lower().startswith(b"text/html") and b"cache-control" not in present:
                    # a page carries a CSRF token: no cache may keep or replay it
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadAsGet:
    """ASGI middleware answering ``HEAD`` as the app answers ``GET``, without the body
    (RFC 9110: a server supports HEAD wherever it supports GET). FastAPI routes take only
    the methods they name, so without this ``curl -I`` or a link checker gets 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _http_error(status: int, message: str) -> Exception:
    """An HTTPException the app's handlers turn into a JSON error (raised inside ``receive``,
    where FastAPI re-raises HTTPExceptions unchanged)."""
    from starlette.exceptions import HTTPException

    return HTTPException(status, message)


class GuardMiddleware:
    """ASGI middleware enforcing a :class:`RequestGuard` (see the module docstring)."""

    def __init__(self, app: ASGIApp, guard: RequestGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        try:
            limit = self._check(scope, headers)
        except _Refused as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_error(send, exc.status, str(exc))
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, self._limited(receive, limit), send_tracking)
        except _Refused as exc:  # the body broke a limit where no handler caught it
            if started:
                raise
            await _send_error(send, exc.status, str(exc))

    def _check(self, scope: Scope, headers: dict[str, str]) -> int:
        """Refuse a request that fails the host / origin / token rules; return its body limit."""
        g = self.guard
        refusal = g.refusal(
            str(scope.get("method", "GET")) if scope["type"] == "http" else "GET",
            str(scope.get("scheme", "http")),
            headers,
        )
        if refusal is not None:
            raise _Refused(*refusal)
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
        if size > g.max_header_bytes:
            raise _Refused(
                431,
                f"request headers of {size:,} bytes are larger than {g.max_header_bytes:,} "
                "bytes; send fewer or shorter headers (cookies) and a shorter URL",
            )
        ctype = headers.get("content-type", "").lower()
        multipart = ctype.startswith("multipart/")
        if multipart and not _takes_form(scope):
            raise _Refused(
                415,
                f"{str(scope.get('path', ''))[:100]!r} takes no upload or form; send JSON "
                "(content-type application/json)",
            )
        limit = g.max_upload_bytes if multipart else g.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise _Refused(400, f"Content-Length {length[:40]!r} is not a whole number")
            if int(length) > limit:
                raise _Refused(413, _too_large(limit))
        return limit

    def _limited(self, receive: Receive, limit: int) -> Receive:
        """``receive`` that counts body bytes against ``limit`` and gives the whole body
        ``body_timeout_s`` seconds from the first read (a body trickling in byte by byte is
        cut off as surely as one that stops)."""
        timeout = self.guard.body_timeout_s
        seen = 0
        done = False
        deadline: float | None = None

        async def wrapped() -> Message:
            nonlocal seen, done, deadline
            if done:  # after the body only a disconnect can come: wait for it as long as needed
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + timeout
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                raise _http_error(
                    408, f"the request body did not arrive within {timeout:g} s (it stalled)"
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _http_error(413, _too_large(limit))
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        return wrapped


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _form_routes(app: Any) -> list[tuple[str, re.Pattern[str]]]:
    """``(METHOD, path pattern)`` of the app's operations that read a form or an upload, from
    its OpenAPI schema (kept on ``app.state``); a route left out of the schema takes none."""
    state = getattr(app, "state", None)
    found = getattr(state, "web_form_routes", None) if state is not None else None
    if found is not None:
        return found  # type: ignore[no-any-return]
    found = []
    try:
        paths = app.openapi().get("paths", {})
    except Exception as exc:  # no schema: no route takes a form
        log.warning("no OpenAPI schema to find upload routes (%s)", type(exc).__name__)
        paths = {}
    for template, ops in paths.items():
        for method, op in ops.items():
            content = (op.get("requestBody") or {}).get("content", {})
            if any(t in content for t in _FORM_TYPES):
                pattern = re.sub(
                    r"\\\{([^}:]+)(:path)?\\\}",
                    lambda m: ".+" if m.group(2) else "[^/]+",
                    re.escape(template),
                )
                found.append((method.upper(), re.compile(pattern + "$")))
    if state is not None:
        state.web_form_routes = found
    return found


def _takes_form(scope: Scope) -> bool:
    """Whether the route ``scope`` goes to reads a form or an upload (FastAPI ``Form`` /
    ``File`` parameters), decided before any of the body is read."""
    method, path = str(scope.get("method", "")).upper(), str(scope.get("path", ""))
    return any(m == method and p.match(path) for m, p in _form_routes(scope.get("app")))


def _too_large(limit: int) -> str:
    return f"request body larger than {limit:,} bytes; send less (images: a smaller file)"


async def _send_error(send: Send, status: int, message: str) -> None:
    import json

    body = json.dumps({"detail": message, "error": message}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"connection", b"close"),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- errors of request validation -------------------------------------------------------------
def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_message(errors: Sequence[dict[str, Any]]) -> str:
    """One line naming each bad field, what was wrong and the value sent (shortened)."""
    parts = []
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ())]
        where = f"{loc[0]} field {'.'.join(loc[1:])!r}" if len(loc) > 1 else ".".join(loc)
        whole_body = loc == ["body"]  # the value is the whole body: not repeated
        got = f" (got {_short(e['input'])})" if "input" in e and not whole_body else ""
        parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}{got}")
    more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def secure(app: Any, guard: RequestGuard | None = None) -> RequestGuard:
    """Install :class:`HeadAsGet`, :class:`SecurityHeaders` and :class:`GuardMiddleware`
    (outermost) on ``app``
    and keep the guard as ``app.state.web_guard``. Returns the guard."""
    guard = guard or RequestGuard()
    app.state.web_guard = guard
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(GuardMiddleware, guard=guard)  # added last = runs first
    return guard


# A quoted absolute path ('/home/x', "C:\\data", '~/photos') inside an error message; a
# lone '/' (a message naming the separator) tells nothing and stays.
_QUOTED_PATH = re.compile(r"""(['"])(?:/(?!\1)|~|[A-Za-z]:[\\/]|\\\\)[^'"]*\1""")
# An unquoted absolute path, alone or after a prefix such as "precomputed:" or "file:".
_BARE_PATH = re.compile(r"""(?<![\w.~/-])(/[^\s'"<>(),;]+)""")


def _server_path(text: str) -> bool:
    """Whether an unquoted ``/a/b...`` is a path on this machine (its first folder exists:
    ``/home``, ``/tmp``, ``/srv``, ...), not a URL path such as ``/verify/api``."""
    first = text.lstrip("/").split("/", 1)[0]
    return bool(first) and os.path.isdir("/" + first)


def error_status(exc: Exception) -> int:
    """The one mapping of library errors to HTTP statuses: an unknown name (collection,
    search, run, ...) is 404, an error that carries its own ``status`` (refused image
    requests) that one, any other :class:`~inquire.errors.InquireError` 400."""
    from inquire.errors import UnknownNameError

    if isinstance(getattr(exc, "status", None), int):
        return int(getattr(exc, "status"))  # noqa: B009 - typed by the check above
    if isinstance(exc, UnknownNameError):
        return 404
    return 400


def public_message(message: str) -> str:
    """``message`` with every quoted absolute path replaced by ``'<server path>'`` and every
    unquoted one (``precomputed:/srv/x.parquet``) by ``<server path>``, so an error sent to a
    client never tells where the server keeps its files."""
    message = _QUOTED_PATH.sub("'<server path>'", message)
    return _BARE_PATH.sub(
        lambda m: "<server path>" if _server_path(m.group(1)) else m.group(1), message
    )
