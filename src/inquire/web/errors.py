"""The one way the web apps answer an error.

Three kinds of error, one shape each place:

- a request that does not fit a route's typed parameters (wrong type, out of bounds, an
  unknown field): **422**, message from :func:`~inquire.web.security.validation_message`
  (each bad parameter, what was expected, the value sent, shortened);
- a library error (:class:`~inquire.errors.InquireError`): the status of
  :func:`~inquire.web.security.error_status` (unknown name 404, refused image its own
  status, other input errors 400);
- an HTTP error raised by a route or by routing itself (no such route 404, method 405).

JSON routes (``/api/``, ``/images/``, ``/files/``, ``/verify``) answer
``{"error": message, "detail": message}`` (the request guard's refusals have the same
shape); pages answer with an error page when the app has one. Every message goes through
:func:`~inquire.web.security.public_message`, so no server path reaches a client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from inquire.errors import InquireError
from inquire.web.security import error_status, public_message, validation_message

#: Paths answered in JSON; anything else gets the app's error page, when it has one.
JSON_PREFIXES = ("/api/", "/images/", "/files/", "/verify")

#: Characters of an error message sent to a client; a longer one (a library message that
#: repeats a long value) is cut, so no request makes the server echo kilobytes back.
MAX_MESSAGE = 2000

#: ``page(request, status, message)``: an error page of the app (HTML).
ErrorPage = Callable[[Request, int, str], Response]


def error_response(
    request: Request,
    status: int,
    message: str,
    page: ErrorPage | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The answer to a failed request: ``{"error", "detail"}`` JSON, or ``page`` for a page
    route; server paths in ``message`` are replaced and a long one is cut
    (:data:`MAX_MESSAGE`)."""
    message = public_message(message)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 30] + f"... ({len(message):,} characters in all)"
    if page is not None and not request.url.path.startswith(JSON_PREFIXES):
        response = page(request, status, message)
        response.headers.update(headers or {})  # a 405 page names the allowed methods too
        return response
    return JSONResponse({"error": message, "detail": message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, page: ErrorPage | None = None) -> None:
    """Answer validation, library and HTTP errors on ``app`` with :func:`error_response`."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 422, validation_message(list(exc.errors())), page)

    @app.exception_handler(InquireError)
    async def _library(request: Request, exc: InquireError) -> Response:
        return error_response(request, error_status(exc), str(exc), page)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code in (204, 304):  # no body allowed
            return Response(status_code=exc.status_code, headers=exc.headers)
        return error_response(request, exc.status_code, str(exc.detail), page, exc.headers)


def invalid_parameter(where: str, name: str, message: str, value: Any) -> RequestValidationError:
    """A :class:`RequestValidationError` for a bound only known at run time (a configured
    limit), worded as FastAPI's own: ``raise invalid_parameter("query", "k", ...)``."""
    return RequestValidationError(
        [{"type": "value_error", "loc": (where, name), "msg": message, "input": value}]
    )
