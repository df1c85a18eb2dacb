"""Rerank with an OpenAI-compatible chat-completions API (OpenAI, vLLM, a local gateway).

Each image is sent as a base64 data URL with the prompt of the model's row in the reranking
protocol (:mod:`inquire.rerank.protocol`; under the default ``inquire-2024``, INQUIRE's
``Does this picture show exactly "{query}"?\\n`` + the yes/no instruction for GPT models and
its VILA prompt for VILA models), asking for one token with ``logprobs`` and ``top_logprobs``.
The score is P(Yes) / (P(Yes) + P(No)) over the first token's top tokens: under
``inquire-2024`` only the tokens ``Yes`` and ``No`` themselves count, under ``inquire-sum``
any case and surrounding spaces; when no "Yes" is among them the score is 0, when a "Yes" but
no "No" is, 1. Under ``inquire-2024`` a request the server refuses with HTTP 400 scores 0,
as INQUIRE scored its refused requests (logged, and not cached, so a rerun asks again).

Requests run concurrently (``concurrency`` at a time) and are retried (tenacity) with
exponential backoff, or the server's ``Retry-After``, on 408/409/425/429, 5xx, timeouts,
connection errors and malformed replies. A request that still
fails is a recorded failure: its score is NaN and it is listed in ``failures``; it is never
turned into a 0 and never cached. The API key is read from the environment
(``OPENAI_API_KEY`` or the variable named by ``api_key_env``) and is never logged or cached.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from inquire.errors import InputError
from inquire.rerank.base import ImageLike, image_bytes
from inquire.rerank.protocol import PROTOCOLS, Protocol, get_protocol

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: INQUIRE's GPT prompt (the default protocol's fallback API row); ``{query}`` is the query.
API_QUESTION = PROTOCOLS["inquire-2024"].api_prompt("gpt-4o").text
_RETRY_STATUS = {408, 409, 425, 429}


@dataclass(frozen=True)
class Failure:
    """A request that failed after all retries.

    ``index``: the candidate's position in the full candidate list. A direct ``score``
    call records the position within that call; :func:`~inquire.rerank.cache.score_candidates`
    (which scores a candidate list in chunks, skipping cached ones) rewrites it to the
    position in its ``image_ids`` and fills ``image_id``, as ``failures.csv`` of
    ``inquire eval rerank`` reports them.
    """

    query: str
    index: int
    reason: str
    image_id: Any = None


class _Retryable(Exception):
    """A failure worth retrying; ``retry_after``: the server's Retry-After, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _reason(exc: BaseException | None) -> str:
    """The failure reason recorded for a request that kept failing."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TransportError):
        return f"connection error ({type(exc).__name__})"
    return str(exc)


def score_from_top_logprobs(
    top: Sequence[dict[str, Any]], exact: bool = False
) -> tuple[float, float]:
    """``(score, P(Yes)+P(No))`` from one position's ``top_logprobs`` list.

    All-Yes (no "No" token listed) gives 1, no "Yes" listed gives 0. Tokens count as an
    answer whatever their case and surrounding spaces; ``exact`` counts only the tokens
    ``Yes`` and ``No`` themselves (how INQUIRE scored its released API outputs).
    """
    p_yes = p_no = 0.0
    for item in top:
        token = str(item.get("token", ""))
        word = {"Yes": "yes", "No": "no"}.get(token, "") if exact else token.strip().lower()
        p = math.exp(float(item["logprob"]))
        if word == "yes":
            p_yes += p
        elif word == "no":
            p_no += p
    if p_yes == 0.0:  # also when neither answer is listed
        return 0.0, p_no
    if p_no == 0.0:
        return 1.0, p_yes
    return p_yes / (p_yes + p_no), p_yes + p_no


class APIReranker:
    """A chat-completions model as a reranker: ``score(query, images) -> (n,) float64``."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = DEFAULT_KEY_ENV,
        concurrency: int = 8,
        top_logprobs: int = 20,
        logprobs: bool = True,
        temperature: float = 0.0,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        protocol: str | Protocol | None = None,
    ) -> None:
        if not model:
            raise InputError("API reranker needs a model name: api:<model>, e.g. api:gpt-4o")
        if concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {concurrency}")
        if not 0 <= top_logprobs <= 20:
            raise InputError(f"top_logprobs must be in 0..20 (the API's range), got {top_logprobs}")
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        parsed = urlparse(self.base_url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise InputError(
                f"--base-url {self.base_url!r} is not an http(s) URL; e.g. "
                f"http://127.0.0.1:8000/v1 for a local vLLM server"
            )
        self._api_key = os.environ.get(api_key_env, "")
        if not self._api_key and self.base_url == DEFAULT_BASE_URL:
            raise InputError(
                f"no API key: set the environment variable {api_key_env} (or name another one "
                f"with --api-key-env), or point --base-url at a server that needs none"
            )
        self.protocol_row = get_protocol(protocol)
        self.protocol = self.protocol_row.name  # part of the cache key (rerank.cache.reranker_key)
        self.prompt_row = self.protocol_row.api_prompt(model)
        self.reranker_id = f"api:{model}"
        # The server is part of the model's identity: one name can mean different weights.
        self.revision = f"{parsed.netloc}{parsed.path}"
        version = f"api-{self.prompt_row.name}-{self.prompt_row.version}"
        self.prompt_version = f"{version}-top{top_logprobs}" if logprobs else version
        self.concurrency = concurrency
        # images per score() call from the scoring loop: enough to keep every slot busy
        self.chunk_size = 4 * concurrency
        self.top_logprobs = top_logprobs
        self.logprobs = logprobs and top_logprobs > 0
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # Sampled answers (temperature > 0, or scored from the text alone) are not
        # deterministic and must never be cached as if they were.
        self.cacheable = self.logprobs and temperature == 0.0
        self.failures: list[Failure] = []
        # Requests refused with HTTP 400 that the protocol scores 0 (INQUIRE's rule).
        self.refusals: list[Failure] = []
        # Positions of the last score() call whose score must not be cached (refusals).
        self.last_uncached: frozenset[int] = frozenset()

    def __repr__(self) -> str:  # never shows the key
        return f"APIReranker({self.model!r}, base_url={self.base_url!r})"

    def prompt(self, query_text: str) -> str:
        """The text sent with each image."""
        return self.prompt_row.render(query_text)

    def _body(self, query_text: str, image: ImageLike) -> dict[str, Any]:
        data, mime = image_bytes(image)
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": self._content(query_text, url)}],
            "max_tokens": 1,
            "temperature": self.temperature,
        }
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        return body

    def _content(self, query_text: str, url: str) -> list[dict[str, Any]]:
        text = {"type": "text", "text": self.prompt(query_text)}
        image = {"type": "image_url", "image_url": {"url": url}}
        # A row whose prompt has an image placeholder sends the image where it stood: first.
        return [image, text] if self.prompt_row.image_placeholder else [text, image]

    def _parse(self, payload: Any) -> float:
        try:
            choice = payload["choices"][0]
            if self.logprobs:
                top = choice["logprobs"]["content"][0]["top_logprobs"]
                score, mass = score_from_top_logprobs(top, exact=self.protocol_row.api_exact_tokens)
                if mass < 0.5:
                    log.warning(
                        "%s: P(Yes)+P(No)=%.3g; the model is not answering yes/no",
                        self.reranker_id,
                        mass,
                    )
                return score
            text = str(choice["message"]["content"]).strip().lower()
            return 1.0 if text.startswith("yes") else 0.0
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise _Retryable(f"malformed reply ({type(exc).__name__}: {exc})") from None

    async def _one(self, client: Any, sem: asyncio.Semaphore, body: dict[str, Any]) -> float:
        """One request under the retry policy (tenacity): up to ``max_retries`` retries on
        429/408/409/425, 5xx, timeouts, connection errors and malformed replies, waiting
        ``backoff_s * 2**i`` seconds (or the server's ``Retry-After``), capped at
        ``max_backoff_s``, with jitter; other 4xx answers are not retried."""
        import httpx
        from tenacity import AsyncRetrying, RetryError, retry_if_exception_type
        from tenacity import stop_after_attempt as stop_after

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        retrying = AsyncRetrying(
            stop=stop_after(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
            sleep=self._sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    # The slot is held for the request only, not while waiting to retry.
                    async with sem:
                        resp = await client.post(
                            f"{self.base_url}/chat/completions", json=body, headers=headers
                        )
                    return self._answer(resp)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            return self._fail(f"{_reason(last)} after {self.max_retries + 1} attempts")
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, resp: Any) -> float:
        """The score in one HTTP answer; raises _Retryable, _Refused or _Failed."""
        if resp.status_code in _RETRY_STATUS or resp.status_code >= 500:
            retry_after = resp.headers.get("retry-after")
            seconds = None
            if retry_after and retry_after.replace(".", "", 1).isdigit():
                seconds = float(retry_after)
            raise _Retryable(f"HTTP {resp.status_code}", retry_after=seconds)
        if resp.status_code == 400 and self.protocol_row.api_refusal_scores_zero:
            raise _Refused(f"HTTP 400: {resp.text[:200]}")
        if resp.status_code >= 400:
            # 400/401/403/404 will not get better by retrying.
            return self._fail(f"HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            payload = resp.json()
        except ValueError:
            raise _Retryable("malformed JSON") from None
        return self._parse(payload)

    def _wait(self, state: Any) -> float:
        """Seconds before the next attempt: exponential backoff, or the server's
        ``Retry-After``, capped at ``max_backoff_s``; full jitter in [wait/2, wait] keeps
        many concurrent retries from arriving together."""
        exc = state.outcome.exception() if state.outcome is not None else None
        after = getattr(exc, "retry_after", None)
        base = after if after is not None else self.backoff_s * 2 ** (state.attempt_number - 1)
        return float(min(self.max_backoff_s, base) * (0.5 + random.random() / 2))

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def _fail(self, reason: str) -> float:
        raise _Failed(reason)

    async def _score_all(self, query_text: str, images: Sequence[ImageLike]) -> np.ndarray:
        import httpx

        sem = asyncio.Semaphore(self.concurrency)
        bodies = [self._body(query_text, im) for im in images]
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            results = await asyncio.gather(
                *(self._one(client, sem, b) for b in bodies), return_exceptions=True
            )
        out = np.full(len(images), np.nan, np.float64)
        uncached = set()
        for i, res in enumerate(results):
            if isinstance(res, _Refused):
                out[i] = 0.0
                uncached.add(i)
                self.refusals.append(Failure(query_text, i, str(res)))
                log.warning(
                    "%s: request refused for query %r (%s); scored 0 as the %s protocol does",
                    self.reranker_id,
                    query_text,
                    res,
                    self.protocol,
                )
            elif isinstance(res, _Failed):
                self.failures.append(Failure(query_text, i, str(res)))
                log.warning(
                    "%s: request failed for query %r: %s", self.reranker_id, query_text, res
                )
            elif isinstance(res, BaseException):
                raise res
            else:
                out[i] = float(res)
        self.last_uncached = frozenset(uncached)
        return out

    def score(self, query_text: str, images: Sequence[ImageLike]) -> np.ndarray:
        """``(n,) float64`` scores in [0, 1]; NaN for requests that kept failing."""
        self.last_uncached = frozenset()
        if not images:
            return np.empty(0, np.float64)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._score_all(query_text, images))
        # Called from inside an event loop (a notebook, the web app): run in a thread.
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["out"] = asyncio.run(self._score_all(query_text, images))
            except BaseException as exc:  # re-raised in the caller's thread
                box["err"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "err" in box:
            raise box["err"]
        return np.asarray(box["out"], np.float64)


class _Failed(Exception):
    pass


class _Refused(Exception):
    """HTTP 400 under a protocol that scores refusals 0."""
