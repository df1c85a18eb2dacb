"""Reranking protocols: how a yes/no question becomes a score, one row per protocol.

A protocol fixes everything about a VLM or API reranker that changes its numbers: the prompt
per model family, which tokens count as "Yes" and "No", how the first answer token's
distribution is read, how the image is prepared and how an API reply is parsed. The
per-family parts (prompt, answer tokens, image decoding) live in each family's row of
:data:`inquire.rerank.families.FAMILIES`, keyed by protocol name; the rest is here.

==============  ==========================================================================
protocol        what
==============  ==========================================================================
inquire-2024    INQUIRE's own protocol (the default): upstream's prompt per model family
                character for character, one Yes and one No token id chosen as upstream
                does, the first step of ``generate(do_sample=True, temperature=0.5,
                renormalize_logits=True)`` (temperature, then the sampling filters of the
                model's generation config, e.g. top-k 50, then log-softmax) read as
                p_yes / (p_yes + p_no) in float32; API replies scored from the exact tokens
                ``Yes`` / ``No`` of the first ``top_logprobs``; a refused request
                (HTTP 400) scores 0.
inquire-sum     each family's own chat format with INQUIRE's question, every single-token
                spelling of yes/no summed (``Yes``, `` Yes``, ``yes``, `` yes``), the
                temperature-1 next-token distribution without sampling filters, in float64
                log space; API tokens compared ignoring case and spaces; HTTP 400 is a
                recorded failure.
==============  ==========================================================================

Every score-cache key carries the protocol name, so scores of one protocol never stand in
for the other's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inquire.errors import InputError, UnknownNameError
from inquire.rerank.families import (
    ANSWER,
    FAMILIES,
    INQUIRE_2024,
    INQUIRE_SUM,
    VLMPrompt,
    get_family,
)


@dataclass(frozen=True)
class APIPrompt:
    """The prompt of an API model row and how its reply is read.

    ``models``: name prefixes (case-insensitive) of the models the row is for; the row with
    ``models=()`` is the fallback. ``image_placeholder``: text in ``text`` that stands for the
    image in the model's own prompt format; it is removed from the text sent and the image is
    sent as the first content part instead.
    """

    name: str
    text: str
    models: tuple[str, ...] = ()
    image_placeholder: str = ""
    version: str = "1"

    def render(self, query: str) -> str:
        """The text sent with the image."""
        return self.text.replace(self.image_placeholder, "", 1).replace("{query}", query)


@dataclass(frozen=True)
class FirstStep:
    """How the first answer token's distribution is read.

    ``temperature`` divides the logits; ``sampling_filters``: apply the sampling filters of
    the model's generation config as ``generate(do_sample=True)`` does (repetition penalty,
    top-k, default 50, and top-p), then renormalise (log-softmax). ``dtype``: ``float32``
    (probabilities exponentiated and divided, as INQUIRE) or ``float64`` (log space).
    """

    temperature: float = 1.0
    sampling_filters: bool = False
    dtype: str = "float64"


@dataclass(frozen=True)
class Protocol:
    """One reranking protocol (a row of :data:`PROTOCOLS`)."""

    name: str
    help: str
    first_step: FirstStep
    api: tuple[APIPrompt, ...]
    api_exact_tokens: bool  # only the tokens "Yes" / "No" count (else case/space-insensitive)
    api_refusal_scores_zero: bool  # HTTP 400 -> 0 (else a recorded failure)

    @property
    def vlm(self) -> dict[str, VLMPrompt]:
        """``{family: prompt}`` of the VLM families with a prompt under this protocol (read
        from the family rows, :data:`inquire.rerank.families.FAMILIES`)."""
        return {n: f.prompts[self.name] for n, f in FAMILIES.items() if self.name in f.prompts}

    def vlm_prompt(self, family: str) -> VLMPrompt:
        """The prompt of ``family``; families this protocol does not cover are refused."""
        get_family(family)  # an unknown family fails naming the known ones
        if family not in self.vlm:
            covering = [p.name for p in PROTOCOLS.values() if family in p.vlm]
            raise InputError(
                f"the {self.name!r} protocol has no prompt for the VLM family {family!r} (it "
                f"covers {', '.join(sorted(self.vlm))}); use --protocol "
                f"{' or '.join(covering) or 'another protocol'}"
            )
        return self.vlm[family]

    def api_prompt(self, model: str) -> APIPrompt:
        """The API row whose model prefixes match ``model`` (else the fallback row)."""
        low = model.lower()
        for row in self.api:
            if any(low.startswith(p.lower()) or f"/{p.lower()}" in low for p in row.models):
                return row
        return next(r for r in self.api if not r.models)


# --- the API rows; each VLM family's prompts are in its row of inquire.rerank.families ------
# (INQUIRE's strings character for character under inquire-2024)

UPSTREAM_API: tuple[APIPrompt, ...] = (
    APIPrompt(
        "vila",
        "<image>\n Does this picture show {query}?\n" + ANSWER,
        models=("Efficient-Large-Model/VILA", "VILA"),
        image_placeholder="<image>\n",
    ),
    APIPrompt("openai-gpt", 'Does this picture show exactly "{query}"?\n' + ANSWER),
)

SUM_API: tuple[APIPrompt, ...] = (
    APIPrompt("api", 'Does this picture show exactly "{query}"? ' + ANSWER),
)

DEFAULT_PROTOCOL = INQUIRE_2024

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            INQUIRE_2024,
            "INQUIRE's prompts and token choice; first step of generate at temperature 0.5 "
            "with sampling filters, float32",
            FirstStep(temperature=0.5, sampling_filters=True, dtype="float32"),
            UPSTREAM_API,
            api_exact_tokens=True,
            api_refusal_scores_zero=True,
        ),
        Protocol(
            INQUIRE_SUM,
            "family chat formats; all yes/no spellings summed at temperature 1, float64",
            FirstStep(),
            SUM_API,
            api_exact_tokens=False,
            api_refusal_scores_zero=False,
        ),
    )
}


def get_protocol(name: str | Protocol | None = None) -> Protocol:
    """The protocol row ``name`` (default :data:`DEFAULT_PROTOCOL`)."""
    if isinstance(name, Protocol):
        return name
    key = name or DEFAULT_PROTOCOL
    if key not in PROTOCOLS:
        raise UnknownNameError("rerank protocol", key, PROTOCOLS)
    return PROTOCOLS[key]


# --- the models INQUIRE evaluated -----------------------------------------------------------


@dataclass(frozen=True)
class UpstreamModel:
    """A model of INQUIRE's rerank table: its upstream name, how to run it here, and the
    name of its released score cache (``cache/<sanitised name>--cache.npy``)."""

    upstream: str
    reranker: str  # our reranker id, e.g. vlm:llava-1.5/llava-hf/llava-1.5-13b-hf
    family: str  # VLM family or API prompt row
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cache_file(self) -> str:
        """The file name INQUIRE's ModelWrapperWithCache saves this model's outputs to."""
        sanitized = self.upstream.replace(":", "__").replace("/", "--")
        suffix = "--nosystem-cache.npy" if self.upstream.startswith("openai") else "--cache.npy"
        return sanitized + suffix

    def prompt(self, query: str) -> str:
        """The full prompt INQUIRE keyed this model's outputs by."""
        proto = PROTOCOLS[DEFAULT_PROTOCOL]
        if self.family in proto.vlm:
            return proto.vlm[self.family].render(query)
        row = next(r for r in proto.api if r.name == self.family)
        return row.text.replace("{query}", query)


UPSTREAM_MODELS: tuple[UpstreamModel, ...] = (
    UpstreamModel(
        "Salesforce/blip2-flan-t5-xxl", "vlm:blip2/Salesforce/blip2-flan-t5-xxl", "blip2"
    ),
    UpstreamModel(
        "Salesforce/instructblip-flan-t5-xxl",
        "vlm:instructblip/Salesforce/instructblip-flan-t5-xxl",
        "instructblip",
    ),
    UpstreamModel(
        "google/paligemma-3b-mix-448", "vlm:paligemma/google/paligemma-3b-mix-448", "paligemma"
    ),
    UpstreamModel(
        "llava-hf/llava-1.5-13b-hf", "vlm:llava-1.5/llava-hf/llava-1.5-13b-hf", "llava-1.5"
    ),
    UpstreamModel(
        "llava-hf/llava-v1.6-mistral-7b-hf",
        "vlm:llava-1.6-mistral/llava-hf/llava-v1.6-mistral-7b-hf",
        "llava-1.6-mistral",
    ),
    UpstreamModel(
        "llava-hf/llava-v1.6-34b-hf",
        "vlm:llava-1.6-34b/llava-hf/llava-v1.6-34b-hf",
        "llava-1.6-34b",
    ),
    UpstreamModel(
        "Efficient-Large-Model/VILA1.5-13B", "api:Efficient-Large-Model/VILA1.5-13B", "vila"
    ),
    UpstreamModel(
        "Efficient-Large-Model/VILA1.5-40b", "api:Efficient-Large-Model/VILA1.5-40b", "vila"
    ),
    UpstreamModel(
        "openai-gpt4turbo20240409",
        "api:gpt-4-turbo-2024-04-09",
        "openai-gpt",
        aliases=("gpt-4-turbo-2024-04-09",),
    ),
    UpstreamModel(
        "openai-gpt4o20240806",
        "api:gpt-4o-2024-08-06",
        "openai-gpt",
        aliases=("gpt-4o-2024-08-06",),
    ),
)


def upstream_model(name: str) -> UpstreamModel:
    """The row of an upstream model name, alias or released cache file name."""
    for row in UPSTREAM_MODELS:
        if name in (row.upstream, row.cache_file, row.reranker, *row.aliases):
            return row
    raise UnknownNameError(
        "INQUIRE model",
        name,
        [r.upstream for r in UPSTREAM_MODELS] + [r.cache_file for r in UPSTREAM_MODELS],
    )
