"""Rerank with an OpenAI-compatible chat-completions API (OpenAI, vLLM, a local gateway).

Each image is sent as a base64 data URL with the prompt of the model's row in the reranking
protocol (:mod:`inquire.rerank.protocol`; under the default ``inquire-2024``, INQUIRE's
``Does this picture show exactly "{query}"?\\n`` + the yes/no instruction for GPT models and
its VILA prompt for VILA models), asking for one token with ``logprobs`` and ``top_logprobs``.
The score is P(Yes) / (P(Yes) + P(No)) over the first token's top tokens: under
``inquire-2024`` only the tokens ``Yes`` and ``No`` themselves count, under ``inquire-sum``
any case and surrounding spaces. Which tokens are *listed* decides, as in INQUIRE's
``convert_gpt_response_to_preds``: no "Yes" listed scores 0, a "Yes" but no "No" scores 1,
whatever their log-probabilities; when both are listed the ratio is computed in log space
(:func:`score_from_top_logprobs`), so floor values such as -9999 do not underflow. Under
``inquire-2024`` a request the server refuses with HTTP 400 scores 0, as INQUIRE scored its
refused requests (logged, counted in ``refusals``, and not cached, so a rerun asks again).

Requests go through the official ``openai`` client (``AsyncOpenAI``; ``base_url`` for any
compatible server), ``concurrency`` at a time, each attempt limited to ``timeout_s``
seconds. The client retries 408/409/429, 5xx, timeouts and connection errors up to
``max_retries`` times, waiting the server's ``Retry-After`` (or ``retry-after-ms``) when it is
at most 120 s, else exponential backoff with jitter (0.5 s doubling, at most 8 s); a server
that asks for a longer wait is not retried. A malformed reply (not JSON, no logprobs) is asked
again here, within the same budget of ``max_retries + 1`` attempts per request. A request
that still fails is a recorded failure: its score is NaN and it is listed in ``failures``
with the reason; it is never turned into a 0 and never cached. A reply body is read within
``timeout_s`` in all and up to ``MAX_REPLY_BYTES``; redirects are not followed (the failure
names the new address). When every request of a call fails with 401/403/404, a redirect or
a refused connection, or (8 or more) is refused with HTTP 400, the server is not set up for
this and :class:`APISetupError` stops the run rather than send every image to the same
answer. The API key is read from the environment (``OPENAI_API_KEY`` or the variable named
by ``api_key_env``) and is never logged, cached or shown in a failure reason
(wherever a server echoes it); without a key no ``Authorization`` header is sent, and a
``base_url`` carrying credentials is refused.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import importlib.util
import json
import logging
import math
import os
import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from inquire.errors import InputError
from inquire.rerank.api_reply import (
    ATTEMPTS,
    MAX_REPLY_BYTES,
    ReplyEncoding,
    ReplyTooLarge,
    ask_encoding,
    bound_body,
    count_attempt,
)
from inquire.rerank.base import ImageLike, image_bytes
from inquire.rerank.protocol import PROTOCOLS, Protocol, get_protocol

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: INQUIRE's GPT prompt (the default protocol's fallback API row); ``{query}`` is the query.
API_QUESTION = PROTOCOLS["inquire-2024"].api_prompt("gpt-4o").text
# Waits before asking again after a malformed reply: the client's own backoff policy
# (0.5 s doubling, at most 8 s, minus up to 25 % jitter), which covers HTTP errors only.
_MALFORMED_WAIT_S = 0.5
_MALFORMED_MAX_WAIT_S = 8.0
#: The longest failure reason kept (a server chooses much of its text).
_MAX_REASON_CHARS = 300


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


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def score_from_top_logprobs(
    top: Sequence[dict[str, Any]], exact: bool = False
) -> tuple[float, float]:
    """``(score, P(Yes)+P(No))`` from one position's ``top_logprobs`` list.

    Tokens count as an answer whatever their case and surrounding spaces; ``exact`` counts
    only the tokens ``Yes`` and ``No`` themselves (how INQUIRE scored its API outputs).
    Whether a token is *listed* decides, as in INQUIRE's ``convert_gpt_response_to_preds``:
    no "Yes" listed gives 0 and a "Yes" without a "No" gives 1, whatever the log-probabilities
    (a "Yes" listed at -9999 scores 1). With both listed the score is
    p_yes / (p_yes + p_no) = 1 / (1 + exp(lse_no - lse_yes)), where lse_* is the log of the
    summed probabilities of that answer's tokens (log-sum-exp): the same number INQUIRE
    computes whenever its exp-then-divide is finite, and a number where both probabilities
    underflow to 0 and INQUIRE's division gives NaN (docs/fidelity.md); equal log-probabilities,
    -inf included, give 0.5. The second value, the plain sum of probabilities, is only used to
    warn about models that are not answering yes/no. Raises ValueError for a log-probability
    that is NaN or +inf (not a log-probability).
    """
    yes: list[float] = []
    no: list[float] = []
    for item in top:
        token = str(item.get("token", ""))
        word = {"Yes": "yes", "No": "no"}.get(token, "") if exact else token.strip().lower()
        logprob = float(item["logprob"])
        if math.isnan(logprob) or logprob == math.inf:
            raise ValueError(f"log-probability {logprob} of token {token!r}")
        if word == "yes":
            yes.append(logprob)
        elif word == "no":
            no.append(logprob)
    mass = math.fsum(math.exp(lp) for lp in yes + no)
    if not yes:  # also when neither answer is listed
        return 0.0, mass
    if not no:
        return 1.0, mass
    lse_yes, lse_no = _logsumexp(yes), _logsumexp(no)
    if lse_yes == lse_no:  # equal evidence, both -inf included (their difference is NaN)
        return 0.5, mass
    diff = lse_no - lse_yes
    # the logistic function written so that exp never overflows
    score = 1.0 / (1.0 + math.exp(diff)) if diff <= 0 else math.exp(-diff) / (1.0 + math.exp(-diff))
    return score, mass


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
        protocol: str | Protocol | None = None,
    ) -> None:
        if not model:
            raise InputError("API reranker needs a model name: api:<model>, e.g. api:gpt-4o")
        if concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {concurrency}")
        if not 0 <= top_logprobs <= 20:
            raise InputError(f"top_logprobs must be in 0..20 (the API's range), got {top_logprobs}")
        if not timeout_s > 0:
            raise InputError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        if max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {max_retries}")
        if importlib.util.find_spec("openai") is None:
            raise InputError("api: rerankers need the openai package: pip install 'inquire[api]'")
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        parsed = urlparse(self.base_url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise InputError(
                f"--base-url {self.base_url!r} is not an http(s) URL; e.g. "
                f"http://127.0.0.1:8000/v1 for a local vLLM server"
            )
        if parsed.username is not None or parsed.password is not None:
            raise InputError(
                "--base-url must not carry credentials (user:password@): they would be "
                "recorded with the results and the cache; put the key in the environment "
                f"variable {api_key_env} instead"
            )
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env, "")
        bad = [i for i, c in enumerate(self._api_key) if not "!" <= c <= "~"]
        if bad:  # would fail every request in the HTTP library, or crash it; never shown
            raise InputError(
                f"the API key in ${api_key_env} has a space, line break or non-ASCII character "
                f"(at position {bad[0]} of {len(self._api_key)}); a key is one word of "
                f"printable ASCII: set the variable again without it"
            )
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

    def _parse(self, completion: Any) -> float:
        """The score in one chat completion (the client's typed object, built without
        validation, so a reply of the wrong shape surfaces here); raises _Malformed."""
        try:
            choice = completion.choices[0]
            if self.logprobs:
                top = choice.logprobs.content[0].top_logprobs
                items = [{"token": t.token, "logprob": t.logprob} for t in top]
                # a token must be a string and a log-probability a number (the client has
                # already turned numeric strings such as "-0.5" and booleans into floats)
                for item in items:
                    lp = item["logprob"]
                    if not isinstance(item["token"], str):
                        raise TypeError(f"token {item['token']!r} is not a string")
                    if isinstance(lp, bool) or not isinstance(lp, int | float):
                        raise TypeError(f"log-probability {lp!r} is not a number")
                score, mass = score_from_top_logprobs(
                    items, exact=self.protocol_row.api_exact_tokens
                )
                if mass < 0.5:
                    log.warning(
                        "%s: P(Yes)+P(No)=%.3g; the model is not answering yes/no",
                        self.reranker_id,
                        mass,
                    )
                return score
            text = str(choice.message.content).strip().lower()
            return 1.0 if text.startswith("yes") else 0.0
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise _Malformed(f"malformed reply ({type(exc).__name__}: {exc})") from None

    async def _one(self, client: Any, sem: asyncio.Semaphore, body: dict[str, Any]) -> float:
        """One request: the client retries HTTP errors, timeouts and connection errors; a
        malformed reply is asked again here; all within ``max_retries + 1`` attempts.
        Returns the score or raises _Refused / _Failed."""
        import openai

        attempts = [0]  # HTTP requests sent for this one, counted by count_attempt
        ATTEMPTS.set(attempts)
        budget = self.max_retries + 1
        extra = {} if self._api_key else {"extra_headers": {"Authorization": openai.Omit()}}
        malformed = 0
        while True:
            left = budget - attempts[0] - 1  # retries the client may still take
            call = client if attempts[0] == 0 else client.with_options(max_retries=left)
            try:
                async with sem:
                    completion = await call.chat.completions.create(**body, **extra)
                return self._parse(completion)
            except (_Malformed, json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                reason = str(exc) if isinstance(exc, _Malformed) else f"malformed reply ({exc})"
                if attempts[0] >= budget:
                    raise _Failed(f"{reason}{_after(attempts[0])}") from None
            except openai.APITimeoutError:
                raise _Failed(
                    f"timed out: no answer within timeout_s={self.timeout_s:g} s"
                    f"{_after(attempts[0])}; raise timeout_s for a slow server"
                ) from None
            except ReplyEncoding as exc:
                raise _Failed(f"{str(exc)[:200]}{_after(attempts[0])}") from None
            except ReplyTooLarge:
                raise _Failed(
                    f"reply larger than {MAX_REPLY_BYTES} bytes, not a chat completion"
                    f"{_after(attempts[0])}"
                ) from None
            except openai.APIConnectionError as exc:
                cause = type(exc.__cause__ or exc).__name__
                raise _Failed(f"connection error ({cause}){_after(attempts[0])}") from None
            except openai.APIStatusError as exc:
                # the client's message is "Error code: <status> - <body>"; the status is ours
                # redacted before any cut, which could split the key
                message = self._redact(str(exc.message))
                detail = re.sub(r"^Error code: \d+( - )?", "", message)[:200]
                status = exc.status_code
                if status == 400 and self.protocol_row.api_refusal_scores_zero:
                    raise _Refused(f"HTTP 400: {detail}") from None
                headers = exc.response.headers
                if 300 <= status < 400:
                    where = self._redact(headers.get("location", ""))[:200]
                    detail = (
                        f"redirected to {where!r}, not followed "
                        f"(the request carries the API key and the image); point --base-url "
                        f"at the server itself"
                    )
                elif "retry-after" in headers and status in {429, 503}:
                    wait = self._redact(headers["retry-after"])[:40]
                    detail = f"{detail} (the server asked to wait Retry-After: {wait!r})".strip()
                raise _Failed(f"HTTP {status}: {detail}{_after(attempts[0])}") from None
            malformed += 1
            wait = min(_MALFORMED_MAX_WAIT_S, _MALFORMED_WAIT_S * 2 ** (malformed - 1))
            await asyncio.sleep(wait * (1 - 0.25 * random.random()))

    def _redact(self, text: str) -> str:
        """``text`` without the API key (a server may echo what it was sent)."""
        return text.replace(self._api_key, "<api key>") if self._api_key else text

    def _client(self) -> Any:
        import openai

        http_client = openai.DefaultAsyncHttpxClient(
            event_hooks={
                "request": [ask_encoding, count_attempt],
                "response": [functools.partial(bound_body, timeout_s=self.timeout_s)],
            },
            # A redirect would re-send the image (and, to the same host, the key) to where
            # the server points; it is reported as a failure that names the new address.
            follow_redirects=False,
        )
        return openai.AsyncOpenAI(
            # With no key a placeholder satisfies the client; _one then omits the header.
            api_key=self._api_key or "no-key",
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
            http_client=http_client,
        )

    async def _score_all(self, query_text: str, images: Sequence[ImageLike]) -> np.ndarray:
        sem = asyncio.Semaphore(self.concurrency)
        bodies = [self._body(query_text, im) for im in images]
        async with self._client() as client:
            results = await asyncio.gather(
                *(self._one(client, sem, b) for b in bodies), return_exceptions=True
            )
        out = np.full(len(images), np.nan, np.float64)
        uncached = set()
        first_failure, first_refusal = len(self.failures), len(self.refusals)
        for i, res in enumerate(results):
            if isinstance(res, _Failed | _Refused):
                # A server chooses much of a reason's text: it may echo the key anywhere
                # (a message, a token, a header), or be long.
                res = type(res)(self._redact(str(res))[:_MAX_REASON_CHARS])
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
        self._stop_if_misconfigured(self.failures[first_failure:], len(images))
        self._stop_if_all_refused(self.refusals[first_refusal:], len(images))
        return out

    def _stop_if_all_refused(self, refused: list[Failure], n: int) -> None:
        """Raise when every request of a call of at least _MIN_ALL_REFUSED was refused: INQUIRE
        scored the odd refused image 0, but a server that refuses every image is not set up
        for this (a model without image input, or one that does not take logprobs), and
        scoring them all 0 would report a random order as a result."""
        if n < _MIN_ALL_REFUSED or len(refused) < n:
            return
        raise APISetupError(
            f"{self.reranker_id} at {self.base_url}: all {n} requests were refused, e.g. "
            f"{refused[0].reason}; the server or model does not take these requests (an "
            f"image, logprobs, top_logprobs={self.top_logprobs}?); scoring them all 0 "
            f"would rank at random"
        )

    def _stop_if_misconfigured(self, failed: list[Failure], n: int) -> None:
        """Raise when every request of a score() call failed with a status that is about the
        set-up, not the request: a wrong key (401/403), model or path (404), a redirect, or
        no server listening (connection refused, after the client's retries).
        Going on would send every remaining image (thousands in a benchmark) to the same
        answer, each logged; one success in the call and the run goes on as before."""
        if len(failed) < n or not all(_SETUP_STATUS.match(f.reason) for f in failed):
            return
        raise APISetupError(
            f"{self.reranker_id} at {self.base_url}: all {n} requests failed, e.g. "
            f"{failed[0].reason}; check that the server is up, the key in "
            f"${self.api_key_env}, the model name and --base-url (an OpenAI-compatible "
            f"server's ends in /v1)"
        )

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


class APISetupError(InputError):
    """Every request of a call failed with 401/403/404 or a redirect: the key, model name or
    base URL is wrong, so the run stops instead of sending every image to the same answer."""


#: The fewest requests in one call that, all refused, stop the run (a query's last few
#: uncached candidates may all be images the API will not judge).
_MIN_ALL_REFUSED = 8
_SETUP_STATUS = re.compile(r"HTTP (401|403|404|30[1278]):|connection error \(ConnectError\)")


def _after(attempts: int) -> str:
    return f" after {attempts} attempts" if attempts > 1 else ""


class _Failed(Exception):
    """A request that failed for good; the message is the recorded reason."""


class _Malformed(Exception):
    """A reply that is not a chat completion with the expected logprobs."""


class _Refused(Exception):
    """HTTP 400 under a protocol that scores refusals 0."""
