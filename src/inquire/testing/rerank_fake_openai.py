"""A local fake OpenAI-compatible chat-completions server (127.0.0.1, random port, a thread).

It answers ``POST /v1/chat/completions`` with one token and ``top_logprobs``. P(Yes) is a
deterministic function of the image bytes and the prompt (:func:`fake_p_yes`), so tests can
check scores exactly. Replies can be scripted per request, in order: ``"ok"``, ``"429"``,
``"500"``, ``"malformed"`` (a body that is not JSON), ``"bad-shape"`` (JSON without
logprobs), ``"timeout"`` (answers after ``delay_s``, or at once when the server stops, so a
slow reply never outlives a test), ``"all-yes"`` (no "No" token listed),
``"no-yes"`` (no "Yes" token listed), ``"neither"`` (neither listed), ``"lowercase-yes"``
(the Yes token spelt ``yes``), ``"floor-yes"`` (Yes listed at log-probability -9999, no No:
the floor value some compatible servers report), ``"floor-both"`` (Yes at -9999, No at
-10000), ``"400"`` (a refused request, as for content the API will not
judge), ``"401"``, ``"401-echo"`` (a 401 whose message repeats the Authorization header it
got, as some gateways do). After the script runs out every reply is ``"ok"``.

A 429 carries ``Retry-After: <retry_after>`` (``"0"`` unless set: no wait asked);
``retry_after_ms``, when set, adds ``retry-after-ms`` to every 429 and 500 (the OpenAI
client's millisecond header, which keeps tests of many retries quick). Each recorded request
has its arrival time (``"at"``, ``time.monotonic()``).

    with FakeOpenAI() as server:
        server.script(["429", "ok"])
        reranker = APIReranker("fake-model", base_url=server.base_url)
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def fake_p_yes(image: bytes, prompt: str) -> float:
    """The fake model's P(Yes | Yes or No) for an image and prompt, in [0.05, 0.95]."""
    digest = hashlib.sha256(image + prompt.encode()).digest()
    return 0.05 + 0.9 * int.from_bytes(digest[:4], "big") / 2**32


def _image_and_prompt(body: dict[str, Any]) -> tuple[bytes, str]:
    content = body["messages"][0]["content"]
    text = next(c["text"] for c in content if c["type"] == "text")
    url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
    return base64.b64decode(url.split(",", 1)[1]), text


class FakeOpenAI:
    """The server; use as a context manager (or call :meth:`start` / :meth:`stop`)."""

    #: Fraction of the top-token mass the fake model puts on Yes + No.
    YES_NO_MASS = 0.9

    def __init__(
        self,
        delay_s: float = 2.0,
        latency_s: float = 0.0,
        retry_after: str = "0",
        retry_after_ms: int | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.latency_s = latency_s  # added to every reply (to observe concurrency)
        self.retry_after = retry_after
        self.retry_after_ms = retry_after_ms
        # {"body": ..., "headers": {lower-case name: value}, "reply": ..., "at": monotonic s}
        self.requests: list[dict[str, Any]] = []
        self._stopping = threading.Event()  # wakes slow replies when the server stops
        self._script: deque[str] = deque()
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests handled at once
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, for ``base_url=`` / ``--base-url``."""
        if self._server is None:
            raise RuntimeError("the fake server is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, replies: list[str]) -> None:
        """Queue replies for the next requests, in arrival order."""
        with self._lock:
            self._script.extend(replies)

    def _next_reply(self) -> str:
        with self._lock:
            return self._script.popleft() if self._script else "ok"

    def start(self) -> FakeOpenAI:
        """Start serving on a random free port in a daemon thread."""
        fake = self
        self._stopping.clear()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    self._post()
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def _post(self) -> None:
                at = time.monotonic()
                received = {k.lower(): v for k, v in self.headers.items()}
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                reply = fake._next_reply()
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, b'{"error": "request is not JSON"}')
                    return
                with fake._lock:
                    fake.requests.append(
                        {"body": body, "headers": received, "reply": reply, "at": at}
                    )
                if not self.path.endswith("/chat/completions"):
                    self._send(404, b'{"error": "not found"}')
                    return
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                if reply == "timeout":
                    fake._stopping.wait(fake.delay_s)
                    reply = "ok"
                if reply in {"429", "500", "401", "400"}:
                    headers = {"Retry-After": fake.retry_after} if reply == "429" else {}
                    if fake.retry_after_ms is not None and reply in {"429", "500"}:
                        headers["retry-after-ms"] = str(fake.retry_after_ms)
                    self._send(int(reply), b'{"error": {"message": "scripted"}}', headers)
                    return
                if reply == "401-echo":
                    sent = self.headers.get("Authorization", "")
                    message = {"error": {"message": f"invalid credentials: {sent}"}}
                    self._send(401, json.dumps(message).encode())
                    return
                if reply == "malformed":
                    self._send(200, b'{"choices": [ {"logprobs": ')
                    return
                if reply == "bad-shape":
                    self._send(200, json.dumps({"choices": [{"message": {}}]}).encode())
                    return
                image, prompt = _image_and_prompt(body)
                p_yes = fake_p_yes(image, prompt)
                mass = FakeOpenAI.YES_NO_MASS
                tokens = [
                    ("Yes", p_yes * mass),
                    ("No", (1 - p_yes) * mass),
                    (" maybe", (1 - mass) * 0.6),
                    ("Perhaps", (1 - mass) * 0.4),
                ]
                if reply == "all-yes":
                    tokens = [(t, p) for t, p in tokens if t != "No"]
                elif reply == "no-yes":
                    tokens = [(t, p) for t, p in tokens if t != "Yes"]
                elif reply == "neither":
                    tokens = [(t, p) for t, p in tokens if t not in ("Yes", "No")]
                elif reply == "lowercase-yes":
                    tokens = [("yes" if t == "Yes" else t, p) for t, p in tokens]
                floors = {"floor-yes": {"Yes": -9999.0}, "floor-both": {"Yes": -9999.0, "No": -1e4}}
                floor = floors.get(reply, {})
                if floor:  # the floored tokens are listed last, after the real ones
                    tokens = [(t, p) for t, p in tokens if t not in ("Yes", "No")]
                tokens.sort(key=lambda tp: -tp[1])
                n_top = int(body.get("top_logprobs", 0))
                top = [{"token": t, "logprob": math.log(p)} for t, p in tokens[:n_top]]
                top += [{"token": t, "logprob": lp} for t, lp in floor.items()]
                payload = {
                    "id": "fake",
                    "object": "chat.completion",
                    "model": body.get("model", ""),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": tokens[0][0]},
                            "logprobs": {
                                "content": [
                                    {
                                        "token": tokens[0][0],
                                        "logprob": math.log(tokens[0][1]),
                                        "top_logprobs": top,
                                    }
                                ]
                            }
                            if body.get("logprobs")
                            else None,
                            "finish_reason": "length",
                        }
                    ],
                }
                self._send(200, json.dumps(payload).encode())

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up (scripted timeouts) leaves a broken pipe; that is expected."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass
