"""The API reranker against a hostile or broken server: a body that never ends, a huge body,
redirects, a key echoed where a reason picks it up, credentials in the URL, odd types."""

from __future__ import annotations

import contextlib
import io
import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openai")

from PIL import Image

from inquire.errors import InputError
from inquire.rerank.api import MAX_REPLY_BYTES, APIReranker, APISetupError

KEY_ENV = "INQUIRE_TEST_API_KEY"
SECRET = "sk-test-SECRET-0123456789abcdef"

Handler = Callable[[BaseHTTPRequestHandler], None]


class _Server:
    """A loopback server whose every request is answered by ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.hits = 0
        self.stop = threading.Event()  # ends replies that would otherwise go on
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.hits += 1
                with contextlib.suppress(OSError):  # a client that gave up (endless replies)
                    handler(self)

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._srv.daemon_threads = True
        self._srv.handle_error = lambda *a: None  # type: ignore[method-assign]
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._srv.server_address[1]}/v1"

    def close(self) -> None:
        self.stop.set()
        self._srv.shutdown()
        self._srv.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], _Server]]:
    servers: list[_Server] = []

    def start(handler: Handler) -> _Server:
        servers.append(_Server(handler))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict | None = None):
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def _completion(top: Any) -> bytes:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "Yes"},
        "logprobs": {"content": [{"token": "Yes", "logprob": -0.1, "top_logprobs": top}]},
        "finish_reason": "length",
    }
    return json.dumps({"id": "x", "object": "chat.completion", "choices": [choice]}).encode()


def _image() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "JPEG")
    return buf.getvalue()


def _score(server: _Server, setup_error: bool = False, **kw: Any) -> tuple[float, APIReranker]:
    """One image scored; ``setup_error``: its failure is one that stops the run."""
    opts = {"api_key_env": KEY_ENV, "max_retries": 0, "timeout_s": 5.0, **kw}
    reranker = APIReranker("m", base_url=server.base_url, **opts)
    if setup_error:
        with pytest.raises(APISetupError) as err:
            reranker.score("q", [_image()])
        assert reranker.failures[0].reason in str(err.value)
        return math.nan, reranker
    return float(reranker.score("q", [_image()])[0]), reranker


def test_a_body_that_never_ends_times_out(serve) -> None:
    """httpx's read timeout is per read: a byte every 0.1 s must still end the attempt."""

    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(10**9))
        h.end_headers()
        for _ in range(300):  # 30 s, then the connection is closed short of its length
            if server.stop.wait(0.1):
                break
            h.wfile.write(b" ")
            h.wfile.flush()
        h.close_connection = True

    server = serve(drip)
    score, reranker = _score(server, timeout_s=1.0)
    assert np.isnan(score)
    assert "timed out" in reranker.failures[0].reason


@pytest.mark.parametrize("extra", [0, 1])
def test_reply_size_limit_at_its_boundary(serve, extra: int) -> None:
    """A valid completion padded to exactly MAX_REPLY_BYTES is read; one byte more is not."""
    body = _completion([{"token": "Yes", "logprob": -1.0}, {"token": "No", "logprob": -1.0}])
    padded = body + b" " * (MAX_REPLY_BYTES - len(body) + extra)
    server = serve(lambda h: _send(h, 200, padded))
    score, reranker = _score(server, max_retries=2)
    if extra == 0:
        assert score == 0.5 and not reranker.failures
    else:
        assert np.isnan(score)
        assert reranker.failures[0].reason.startswith(f"reply larger than {MAX_REPLY_BYTES}")
        assert server.hits == 1  # a reply that large is not asked for again


def test_redirects_are_not_followed(serve) -> None:
    elsewhere = serve(lambda h: _send(h, 200, _completion([{"token": "Yes", "logprob": 0.0}])))
    target = f"{elsewhere.base_url}/chat/completions"
    server = serve(lambda h: _send(h, 307, b"", {"Location": target}))
    score, reranker = _score(server, setup_error=True, max_retries=2)
    assert np.isnan(score) and elsewhere.hits == 0 and server.hits == 1
    reason = reranker.failures[0].reason
    assert reason.startswith("HTTP 307: redirected to") and target in reason
    assert "--base-url" in reason


@pytest.mark.parametrize("where", ["token", "logprob"])
def test_key_echoed_in_a_token_or_logprob_never_reaches_a_reason(serve, where: str) -> None:
    def echo(h: BaseHTTPRequestHandler) -> None:
        auth = h.headers["Authorization"]
        item = {"token": auth, "logprob": float("nan")}
        if where == "logprob":
            item = {"token": "Yes", "logprob": auth}
        _send(h, 200, _completion([item]))

    score, reranker = _score(serve(echo))
    reason = reranker.failures[0].reason
    assert np.isnan(score) and reason.startswith("malformed reply") and "<api key>" in reason
    assert SECRET[:8] not in reason


def test_key_echoed_past_the_cut_of_a_long_message_is_not_half_kept(serve) -> None:
    """The message is redacted before it is cut, so the cut cannot split the key."""

    def echo(h: BaseHTTPRequestHandler) -> None:
        message = "x" * 190 + h.headers["Authorization"]
        _send(h, 401, json.dumps({"error": {"message": message}}).encode())

    _, reranker = _score(serve(echo), setup_error=True)
    reason = reranker.failures[0].reason
    assert reason.startswith("HTTP 401: xxx") and SECRET[:8] not in reason


def test_a_long_retry_after_is_named_in_the_reason(serve) -> None:
    server = serve(lambda h: _send(h, 429, b"{}", {"Retry-After": "99999"}))
    score, reranker = _score(server, max_retries=3)
    assert np.isnan(score) and server.hits == 1  # longer than the client waits: not retried
    assert "Retry-After: '99999'" in reranker.failures[0].reason


def test_a_token_that_is_not_a_string_is_malformed(serve) -> None:
    server = serve(lambda h: _send(h, 200, _completion([{"token": None, "logprob": -0.1}])))
    score, reranker = _score(server)
    assert np.isnan(score) and "malformed reply" in reranker.failures[0].reason


@pytest.mark.parametrize(
    "url", ["http://user:pw@127.0.0.1:8000/v1", "https://:sk-abc@api.example.org/v1"]
)
def test_credentials_in_base_url_are_refused(url: str) -> None:
    with pytest.raises(InputError, match="must not carry credentials") as err:
        APIReranker("m", base_url=url, api_key_env=KEY_ENV)
    assert "pw" not in str(err.value) and "sk-abc" not in str(err.value)


@pytest.mark.parametrize(
    ("statuses", "stops"),
    [
        ([401, 401, 401], True),  # a wrong key: every request gets the same answer
        ([404, 403, 401], True),
        ([401, 401, 200], False),  # one success: a flaky gateway, the run goes on
        ([401, 401, 500], False),  # a server error is not about the set-up
    ],
)
def test_a_call_whose_every_request_is_refused_for_its_set_up_stops(
    serve, statuses: list[int], stops: bool
) -> None:
    replies = iter(statuses)
    ok = _completion([{"token": "Yes", "logprob": -1.0}, {"token": "No", "logprob": -1.0}])

    def reply(h: BaseHTTPRequestHandler) -> None:
        status = next(replies)
        _send(h, status, ok if status == 200 else b'{"error": {"message": "no"}}')

    server = serve(reply)
    reranker = APIReranker(
        "m", base_url=server.base_url, api_key_env=KEY_ENV, max_retries=0, concurrency=1
    )
    images = [_image()] * 3
    if stops:
        with pytest.raises(APISetupError, match=f"all 3 requests failed.*\\${KEY_ENV}"):
            reranker.score("q", images)
    else:
        out = reranker.score("q", images)
        assert np.isnan(out).sum() == 3 - statuses.count(200)
    assert server.hits == 3 and len(reranker.failures) == 3 - statuses.count(200)


@pytest.mark.parametrize("bad", ["sk-abc\n", " sk-abc", "sk-ab c", "sk-é", "sk-\x7f"])
def test_a_key_with_whitespace_or_non_ascii_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """Such a key failed every request as a 'connection error' (retried), or crashed."""
    monkeypatch.setenv(KEY_ENV, bad)
    with pytest.raises(InputError, match=f"API key in \\${KEY_ENV} has a space") as err:
        APIReranker("m", base_url="http://127.0.0.1:9/v1", api_key_env=KEY_ENV)
    assert "sk-" not in str(err.value)


def test_a_printable_ascii_key_is_sent_as_it_is(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "".join(chr(c) for c in range(0x21, 0x7F))  # every printable ASCII character
    monkeypatch.setenv(KEY_ENV, key)
    seen: list[str] = []

    def reply(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.headers["Authorization"])
        _send(h, 200, _completion([{"token": "Yes", "logprob": -1.0}]))

    score, _ = _score(serve(reply))
    assert score == 1.0 and seen == [f"Bearer {key}"]


@pytest.mark.parametrize(("n", "n_ok", "stops"), [(8, 0, True), (7, 0, False), (8, 1, False)])
def test_a_call_whose_every_request_is_refused_stops(serve, n: int, n_ok: int, stops: bool) -> None:
    """INQUIRE scores the odd refused (HTTP 400) image 0; a server refusing a whole batch of
    8 or more is not set up for the task, and all zeros would be a random ranking."""
    replies = iter([200] * n_ok + [400] * n)
    ok = _completion([{"token": "Yes", "logprob": -1.0}, {"token": "No", "logprob": -1.0}])

    def reply(h: BaseHTTPRequestHandler) -> None:
        status = next(replies)
        message = b'{"error": {"message": "this model does not take image input"}}'
        _send(h, status, ok if status == 200 else message)

    server = serve(reply)
    reranker = APIReranker(
        "m", base_url=server.base_url, api_key_env=KEY_ENV, max_retries=0, concurrency=1
    )
    images = [_image()] * (n if stops else n + n_ok)
    if stops:
        with pytest.raises(APISetupError, match=r"all 8 requests were refused.*image input"):
            reranker.score("q", images)
    else:
        out = reranker.score("q", images)
        assert (out == 0).sum() == n and len(reranker.refusals) == n


def test_no_server_listening_stops_the_run() -> None:
    """Connection refused for a whole call (after the client's retries): the server is not up,
    and going on would wait out every image's retries."""
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago, now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reranker = APIReranker(
        "m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=KEY_ENV, max_retries=0
    )
    with pytest.raises(APISetupError, match=r"all 2 requests failed.*ConnectError.*server is up"):
        reranker.score("q", [_image(), _image()])


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=9)


@pytest.mark.parametrize("extra", [0, 1])
def test_a_compressed_reply_is_limited_by_what_it_decompresses_to(serve, extra: int) -> None:
    """A gzip reply is counted after decompression: exactly MAX_REPLY_BYTES decoded is read,
    one byte more is not (its compressed size is a few KiB either way)."""
    body = _completion([{"token": "Yes", "logprob": -1.0}, {"token": "No", "logprob": -1.0}])
    padded = _gzip(body + b" " * (MAX_REPLY_BYTES - len(body) + extra))
    assert len(padded) < 64 * 1024
    asked: list[str | None] = []

    def reply(h: BaseHTTPRequestHandler) -> None:
        asked.append(h.headers.get("Accept-Encoding"))
        _send(h, 200, padded, {"Content-Encoding": "gzip"})

    server = serve(reply)
    score, reranker = _score(server, max_retries=2)
    assert asked[0] == "gzip, deflate"
    if extra == 0:
        assert score == 0.5 and not reranker.failures
    else:
        assert np.isnan(score)
        assert reranker.failures[0].reason.startswith(f"reply larger than {MAX_REPLY_BYTES}")
        assert server.hits == 1


def test_a_gzip_bomb_is_not_decompressed_whole(serve) -> None:
    """A gigabyte of zeros compressed to ~1 MB: refused after reading past the limit, without
    the memory the whole body would take."""
    import resource
    import zlib

    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    bomb = b"".join(comp.compress(block) for _ in range(1024)) + comp.flush()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    server = serve(lambda h: _send(h, 200, bomb, {"Content-Encoding": "gzip"}))
    score, reranker = _score(server)
    assert np.isnan(score)
    assert reranker.failures[0].reason.startswith(f"reply larger than {MAX_REPLY_BYTES}")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 * 1024  # far below the 1 GiB the body decompresses to


@pytest.mark.parametrize("wrapped", [True, False])
def test_deflate_replies_are_read_zlib_wrapped_or_raw(serve, wrapped: bool) -> None:
    import zlib

    body = _completion([{"token": "Yes", "logprob": -1.0}, {"token": "No", "logprob": -2.0}])
    comp = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    data = comp.compress(body) + comp.flush()
    server = serve(lambda h: _send(h, 200, data, {"Content-Encoding": "deflate"}))
    score, reranker = _score(server)
    assert not reranker.failures
    assert score == pytest.approx(1 / (1 + math.exp(-1.0)))


@pytest.mark.parametrize(
    ("encoding", "body", "reason"),
    [
        ("br", b"\x1b\x00", "a reply compressed as 'br'"),
        ("gzip", b"not gzip at all", "a gzip body that does not decode"),
        ("gzip", b"", None),
        ("gzip", None, "a gzip body that ends early"),
        ("gzip", "trailing", "bytes after the end of a gzip body"),
    ],
)
def test_a_reply_in_an_encoding_not_asked_for_or_broken_fails_with_a_reason(
    serve, encoding: str, body: Any, reason: str | None
) -> None:
    full = _gzip(_completion([{"token": "Yes", "logprob": -1.0}]))
    if body is None:
        body = full[: len(full) // 2]
    elif body == "trailing":
        body = full + b"junk"
    server = serve(lambda h: _send(h, 200, body, {"Content-Encoding": encoding}))
    score, reranker = _score(server)
    assert np.isnan(score)
    if reason is None:  # an empty body: no JSON, reported as malformed
        assert reranker.failures[0].reason.startswith("malformed reply")
    else:
        assert reranker.failures[0].reason.startswith(reason), reranker.failures[0].reason


@pytest.mark.parametrize(
    ("status", "encoding", "body", "retried"),
    [
        (401, "br", b"\x1b\x00", False),  # a wrong key: its status, not the encoding
        (500, "br", b"\x1b\x00", True),  # a server error is still asked again
        (500, "gzip", b"not gzip at all", True),
        (503, "gzip", "bomb", True),
    ],
)
def test_an_error_reply_in_an_odd_encoding_still_reports_its_status(
    serve, status: int, encoding: str, body: Any, retried: bool
) -> None:
    """The body of an error reply only feeds the reason: an encoding not asked for, one that
    does not decode or one over the limit must not hide the status (nor stop the retries)."""
    if body == "bomb":
        body = _gzip(b'{"error": {"message": "busy"}}' + b" " * (2 * MAX_REPLY_BYTES))
    server = serve(lambda h: _send(h, status, body, {"Content-Encoding": encoding}))
    # a wrong key stops the run, as it does with a plain body
    score, reranker = _score(server, setup_error=status == 401, max_retries=2)
    assert np.isnan(score)
    assert reranker.failures[0].reason.startswith(f"HTTP {status}:"), reranker.failures[0]
    if encoding == "br":
        assert "(a body compressed as 'br', not read)" in reranker.failures[0].reason
    assert server.hits == (3 if retried else 1)


def test_bytes_after_the_end_of_a_gzip_body_are_not_kept(serve) -> None:
    """A small gzip body followed by an endless stream of bytes: refused at the first bytes
    past its end, not kept (undecoded, so uncounted) until the timeout."""
    full = _gzip(_completion([{"token": "Yes", "logprob": -1.0}]))

    def reply(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(10**12))
        h.end_headers()
        h.wfile.write(full)
        junk = b"\0" * 65536
        while not server.stop.is_set():
            h.wfile.write(junk)
        h.close_connection = True

    server = serve(reply)
    score, reranker = _score(server, timeout_s=30.0)
    assert np.isnan(score)
    assert reranker.failures[0].reason.startswith("bytes after the end of a gzip body")


def _raw_stored_deflate(data: bytes, pad: int) -> bytes:
    """Raw deflate: one stored block (its header byte's padding bits set to ``pad``), then an
    empty final block."""
    n = len(data)
    head = bytes([pad << 3]) + n.to_bytes(2, "little") + (n ^ 0xFFFF).to_bytes(2, "little")
    return head + data + b"\x01\x00\x00\xff\xff"


@pytest.mark.parametrize("chunk", [1, 1 << 20])
def test_raw_deflate_whose_first_byte_looks_like_a_zlib_header_is_read(serve, chunk: int) -> None:
    """A raw stream starting 0x08 (a stored block with a padding bit set) has the first
    nibble of a zlib header, but not its check: it is read as raw, byte by byte too."""
    import zlib

    body = _completion([{"token": "Yes", "logprob": -1.0}, {"token": "No", "logprob": -2.0}])
    data = _raw_stored_deflate(body, 1)
    assert data[0] & 0x0F == 8 and zlib.decompress(data, -zlib.MAX_WBITS) == body

    def reply(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Encoding", "deflate")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(data), chunk):
            part = data[i : i + chunk]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            h.wfile.flush()
        h.wfile.write(b"0\r\n\r\n")

    score, reranker = _score(serve(reply))
    assert not reranker.failures, reranker.failures
    assert score == pytest.approx(1 / (1 + math.exp(-1.0)))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("GZIP", None),
        (" gzip ", None),
        ("x-gzip", None),
        ("gzip, gzip", "a reply compressed as 'gzip, gzip'"),  # twice: not decoded twice
        ("identity, gzip", "a reply compressed as 'identity, gzip'"),
    ],
)
def test_content_encoding_spellings(serve, header: str, reason: str | None) -> None:
    body = _gzip(_completion([{"token": "Yes", "logprob": -1.0}, {"token": "No", "logprob": -1.0}]))
    server = serve(lambda h: _send(h, 200, body, {"Content-Encoding": header}))
    score, reranker = _score(server)
    if reason is None:
        assert score == 0.5 and not reranker.failures
    else:
        assert np.isnan(score) and reranker.failures[0].reason.startswith(reason)


def test_concatenated_gzip_members_are_refused_not_half_read(serve) -> None:
    """RFC 1952 allows several members; a reply is one (httpx reads only the first). The
    second is reported, not silently dropped."""
    body = _completion([{"token": "Yes", "logprob": -1.0}])
    data = _gzip(body[:10]) + _gzip(body[10:])
    server = serve(lambda h: _send(h, 200, data, {"Content-Encoding": "gzip"}))
    score, reranker = _score(server)
    assert np.isnan(score)
    assert reranker.failures[0].reason.startswith("bytes after the end of a gzip body")
