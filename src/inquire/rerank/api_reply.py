"""Reading an API reply within limits: at most ``MAX_REPLY_BYTES`` of decoded body (gzip
and deflate decompressed here, so a small compressed body cannot expand without bound), the
whole body within the attempt's ``timeout_s``, and a count of the HTTP attempts each request
made (the client's retries included). Hooks for the ``httpx`` client the ``openai`` client
runs on."""

from __future__ import annotations

import contextvars
import functools
import importlib
import json
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

#: The largest reply body read (a one-token chat completion with 20 top tokens is a few KiB);
#: a larger one is not read further and the attempt fails, so a hostile or broken server
#: cannot fill the memory.
MAX_REPLY_BYTES = 4 * 1024 * 1024

# HTTP requests sent for the request being scored in this asyncio task (the client's retries
# included), counted by an httpx event hook; each request runs in its own task and context.
ATTEMPTS: contextvars.ContextVar[list[int]] = contextvars.ContextVar("inquire_api_attempts")


async def ask_encoding(request: Any) -> None:
    """httpx request hook: ask only for the compressions decoded here within the limit."""
    request.headers["Accept-Encoding"] = ACCEPT_ENCODING


async def count_attempt(request: Any) -> None:
    counter = ATTEMPTS.get(None)
    if counter is not None:
        counter[0] += 1


class ReplyTooLarge(Exception):
    """A reply body over MAX_REPLY_BYTES (counted after decompression)."""


class ReplyEncoding(Exception):
    """A reply compressed in a way that was not asked for."""


#: The reply encodings asked for (``Accept-Encoding``) and decoded here, within the size
#: limit: a compressed reply is counted by what it decompresses to (a few KiB of gzip can
#: expand to gigabytes). The value is the ``zlib`` window for the format.
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 0}
ACCEPT_ENCODING = "gzip, deflate"


def _zlib_header(head: bytes) -> bool:
    """Whether ``head`` (two bytes at least) starts with a zlib header (RFC 1950: deflate, a
    window of at most 32 KiB, no preset dictionary, the check bits right); a raw deflate
    stream's first byte alone can look like one."""
    cmf, flg = head[0], head[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and not flg & 0x20 and (cmf << 8 | flg) % 31 == 0


@functools.cache
def _bounded_body_type(httpx_module: str) -> type:
    """The reply body stream type for the HTTP library the openai client runs on (``httpx``,
    or ``httpx2`` in recent releases), named by the module of a response it returned."""
    httpx = importlib.import_module(httpx_module)

    class _BoundedBody(httpx.AsyncByteStream):  # type: ignore[name-defined]
        """A reply body stream that stops at ``max_bytes`` of decoded body and at
        ``timeout_s`` in all, decompressing ``encoding`` (a key of ``ENCODINGS``) itself.

        httpx's read timeout bounds each read, not the whole body, so a server that sends a
        byte every few seconds would otherwise keep an attempt open for ever; and httpx
        decodes a compressed body without a limit.

        ``lenient`` (the body of an error reply, which only feeds the failure's reason): a
        body over the limit, undecodable or with bytes after its end is cut there instead of
        failing the attempt, so the status still reaches the error handling (and a server
        error is still retried)."""

        def __init__(
            self,
            stream: Any,
            request: Any,
            timeout_s: float,
            max_bytes: int,
            encoding: str | None = None,
            lenient: bool = False,
        ) -> None:
            self._stream, self._request = stream, request
            self._timeout_s, self._max_bytes = timeout_s, max_bytes
            self._deadline = time.monotonic() + timeout_s
            self._encoding = encoding
            self._lenient = lenient
            self._decoder: Any = None
            self._head = b""  # a "deflate" body's first byte, held until the second comes
            self._trailing = False  # bytes came after the end of the compressed body

        def _decode(self, chunk: bytes, room: int) -> bytes:
            """At most ``room`` bytes decoded from ``chunk`` (more pending means too large)."""
            if self._decoder is None:
                wbits = ENCODINGS[self._encoding or ""]
                if wbits == 0:  # "deflate": zlib-wrapped as the RFC says, or raw as some send
                    chunk, self._head = self._head + chunk, b""
                    if len(chunk) < 2:  # the zlib header is two bytes: wait for both
                        self._head = chunk
                        return b""
                    wbits = zlib.MAX_WBITS if _zlib_header(chunk) else -zlib.MAX_WBITS
                self._decoder = zlib.decompressobj(wbits)
            if self._decoder.eof:
                # Past the end nothing is decoded, so nothing would be counted: bytes there
                # would pile up in the decoder's unused_data until the timeout.
                self._trailing = True
                return b""
            out = bytes(self._decoder.decompress(chunk, room))
            if self._decoder.unconsumed_tail:
                out += b"\0"  # output was cut at ``room``: the body is over the limit
            self._trailing = bool(self._decoder.unused_data)
            return out

        async def __aiter__(self) -> AsyncIterator[bytes]:
            size = 0
            async for raw in self._stream:
                if time.monotonic() > self._deadline:
                    raise httpx.ReadTimeout(
                        f"reply body not complete within {self._timeout_s:g} s",
                        request=self._request,
                    )
                try:
                    chunk = (
                        raw
                        if self._encoding is None
                        else self._decode(raw, self._max_bytes - size + 1)
                    )
                except zlib.error as exc:
                    if self._lenient:
                        return
                    raise ReplyEncoding(
                        f"a {self._encoding} body that does not decode ({exc})"
                    ) from None
                if size + len(chunk) > self._max_bytes:
                    if self._lenient:
                        yield chunk[: self._max_bytes - size]
                        return
                    raise ReplyTooLarge(f"reply body over {self._max_bytes} bytes")
                size += len(chunk)
                if chunk:
                    yield chunk
                if self._trailing:
                    if self._lenient:
                        return
                    raise ReplyEncoding(f"bytes after the end of a {self._encoding} body")
            ended = not self._head and (self._decoder is None or self._decoder.eof)
            if self._encoding is not None and not self._lenient and not ended:
                raise ReplyEncoding(f"a {self._encoding} body that ends early")

        async def aclose(self) -> None:
            await self._stream.aclose()

    return _BoundedBody


@functools.cache
def _refused_body_type(httpx_module: str) -> type:
    """A reply body stream that refuses a compression that was not asked for, reading none
    of it (the connection is closed with the response). The body of an error reply is
    replaced by a note instead, so its status still reaches the error handling."""
    httpx = importlib.import_module(httpx_module)

    class _RefusedBody(httpx.AsyncByteStream):  # type: ignore[name-defined]
        def __init__(self, stream: Any, encoding: str, lenient: bool) -> None:
            self._stream, self._encoding, self._lenient = stream, encoding, lenient

        async def __aiter__(self) -> AsyncIterator[bytes]:
            if self._lenient:  # in the shape of an API error, so the reason shows it
                note = f"(a body compressed as {self._encoding!r}, not read)"
                yield json.dumps({"error": {"message": note}}).encode()
                return
            raise ReplyEncoding(
                f"a reply compressed as {self._encoding!r}, not one of {ACCEPT_ENCODING}"
            )

        async def aclose(self) -> None:
            await self._stream.aclose()

    return _RefusedBody


async def bound_body(response: Any, timeout_s: float) -> None:
    """httpx response hook: the body is read within ``timeout_s`` in all and up to
    MAX_REPLY_BYTES decoded; a compression not asked for is refused unread. The body of an
    error reply (any status but 2xx) is cut, not failed, where it is too large or does not
    decode: it only feeds the reason, which must still name the status."""
    library = type(response).__module__.split(".")[0]
    encoding = response.headers.get("content-encoding", "").strip().lower()
    lenient = not 200 <= response.status_code < 300
    if encoding in ("", "identity"):
        decode = None
    elif encoding in ENCODINGS:
        decode = encoding  # decoded here, within the limit; httpx must not decode again
        del response.headers["content-encoding"]
    else:
        # Read nothing of it: the status and headers still reach the error handling.
        response.stream = _refused_body_type(library)(response.stream, encoding[:40], lenient)
        return
    response.stream = _bounded_body_type(library)(
        response.stream, response.request, timeout_s, MAX_REPLY_BYTES, decode, lenient
    )
