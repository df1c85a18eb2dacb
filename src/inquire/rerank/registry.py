"""The reranker registry: reranker ids ``kind:rest`` -> rerankers, one row per kind.

=========  =============================================  ===================================
kind       id                                             what it is
=========  =============================================  ===================================
clip       ``clip:<embedding model id>``                  cosine similarity, embedding registry
vlm        ``vlm:<family>/<hub id or local folder>``      local transformers VLM, P(Yes)
api        ``api:<model>`` (+ ``base_url``)               OpenAI-compatible chat API, P(Yes)
cached     ``cached:<name>``                              scores imported into the cache only
=========  =============================================  ===================================

Loaders import their libraries only when called. ``vlm``, ``api`` and ``cached`` rerankers
follow a reranking protocol (``RerankOptions.protocol``; default ``inquire-2024``, see
:mod:`inquire.rerank.protocol`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from inquire.errors import InputError, UnknownNameError
from inquire.rerank.base import Reranker
from inquire.rerank.protocol import DEFAULT_PROTOCOL, get_protocol


@dataclass(frozen=True)
class RerankOptions:
    """Options a loader may use; each kind reads only the fields it needs."""

    device: str = "cpu"
    # "auto": a VLM's precision in INQUIRE's runs on a GPU (see rerank.vlm.resolve_precision),
    # float32 for everything else.
    precision: str = "auto"
    batch_size: int = 8
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    top_logprobs: int = 20
    temperature: float = 0.0
    timeout_s: float = 60.0
    max_retries: int = 4
    revision: str | None = None
    protocol: str = DEFAULT_PROTOCOL


def _clip(rest: str, o: RerankOptions) -> Reranker:
    from inquire.rerank.clip import load_clip_reranker

    precision = "fp32" if o.precision == "auto" else o.precision
    return load_clip_reranker(rest, device=o.device, precision=precision, batch_size=o.batch_size)


def _vlm(rest: str, o: RerankOptions) -> Reranker:
    from inquire.rerank.vlm import load_vlm_reranker

    return load_vlm_reranker(
        rest,
        device=o.device,
        precision=o.precision,
        batch_size=o.batch_size,
        revision=o.revision,
        protocol=o.protocol,
    )


def _api(rest: str, o: RerankOptions) -> Reranker:
    from inquire.rerank.api import APIReranker

    return APIReranker(
        rest,
        base_url=o.base_url,
        api_key_env=o.api_key_env,
        concurrency=o.concurrency,
        top_logprobs=o.top_logprobs,
        temperature=o.temperature,
        timeout_s=o.timeout_s,
        max_retries=o.max_retries,
        protocol=o.protocol,
    )


def _cached(rest: str, o: RerankOptions) -> Reranker:
    from inquire.rerank.cache import CachedReranker

    return CachedReranker(rest, protocol=o.protocol)


@dataclass(frozen=True)
class RerankerKind:
    """One row of the registry: a kind of reranker and how to load it."""

    name: str
    loader: Callable[[str, RerankOptions], Reranker]
    example: str
    help: str


KINDS: dict[str, RerankerKind] = {
    k.name: k
    for k in (
        RerankerKind("clip", _clip, "clip:open_clip:ViT-B-32/openai", "CLIP cosine similarity"),
        RerankerKind(
            "vlm",
            _vlm,
            "vlm:llava-1.5/llava-hf/llava-1.5-7b-hf",
            "local VLM, P(Yes)/(P(Yes)+P(No))",
        ),
        RerankerKind("api", _api, "api:gpt-4o", "OpenAI-compatible chat API, P(Yes) from logprobs"),
        RerankerKind("cached", _cached, "cached:llava-34b", "scores imported with --trust-pickle"),
    )
}


def parse_reranker_id(reranker_id: str) -> tuple[RerankerKind, str]:
    """``'kind:rest'`` -> (kind row, rest); unknown kinds fail with the valid ones."""
    kind, sep, rest = reranker_id.partition(":")
    if not sep:
        raise UnknownNameError("reranker", reranker_id, [f"{k}:..." for k in KINDS])
    if kind not in KINDS:
        raise UnknownNameError("reranker kind", kind, KINDS)
    if not rest:
        raise InputError(
            f"reranker id {reranker_id!r} names no model after '{kind}:'; e.g. "
            f"{KINDS[kind].example}"
        )
    return KINDS[kind], rest


def load_reranker(reranker_id: str, options: RerankOptions | None = None, **kw: Any) -> Reranker:
    """Load the reranker ``reranker_id``; ``kw`` override fields of ``options``."""
    kind, rest = parse_reranker_id(reranker_id)
    valid = {f.name for f in fields(RerankOptions)}
    unknown = sorted(set(kw) - valid)
    if unknown:
        raise InputError(f"unknown reranker option(s) {unknown}; valid: {sorted(valid)}")
    opts = options or RerankOptions()
    if "protocol" in kw and kw["protocol"] is None:
        kw = {k: v for k, v in kw.items() if k != "protocol"}
    if kw:
        opts = RerankOptions(**{**opts.__dict__, **kw})
    get_protocol(opts.protocol)  # an unknown protocol fails here, naming the valid ones
    return kind.loader(rest, opts)
