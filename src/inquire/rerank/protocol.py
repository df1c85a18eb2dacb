"""Reranking protocols: how a yes/no question becomes a score, one row per protocol.

A protocol fixes everything about a VLM or API reranker that changes its numbers: the prompt
per model family, which tokens count as "Yes" and "No", how the first answer token's
distribution is read, how the image is prepared and how an API reply is parsed.

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

from collections.abc import Mapping
from dataclasses import dataclass, field

from inquire.errors import InputError, UnknownNameError


@dataclass(frozen=True)
class VLMPrompt:
    """The prompt and answer tokens of one model family under one protocol.

    ``text``: the prompt; ``{query}`` is the query text, ``{image}`` the processor's image
    token. ``processor_prefix`` is prepended before the text goes to the processor (where the
    processor would otherwise insert the same tokens itself and warn; the token ids are
    identical). Answer tokens: with ``token_index`` None every spelling in ``yes`` / ``no``
    that encodes to one token counts (probabilities summed); with an index, the single id
    ``tokenizer(yes[0]).input_ids[token_index]`` (and likewise for no), exactly as INQUIRE
    picked them (special tokens included). ``convert_rgb``: ``image.convert('RGB')`` before
    the processor; ``decode``: ``"inquire"`` (EXIF orientation, transparency over white, RGB,
    as the embedding models see images) or ``"pil"`` (``PIL.Image.open`` as is, as INQUIRE
    fed its models).
    """

    text: str
    yes: tuple[str, ...]
    no: tuple[str, ...]
    token_index: int | None = None
    processor_prefix: str = ""
    convert_rgb: bool = False
    decode: str = "inquire"
    version: str = "1"

    def render(self, query: str, image_token: str = "") -> str:
        """The prompt for ``query`` (the image token replaced before the query is inserted,
        so a query's own braces are never interpreted)."""
        return self.text.replace("{image}", image_token).replace("{query}", query)


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
    vlm: Mapping[str, VLMPrompt]
    api: tuple[APIPrompt, ...]
    api_exact_tokens: bool  # only the tokens "Yes" / "No" count (else case/space-insensitive)
    api_refusal_scores_zero: bool  # HTTP 400 -> 0 (else a recorded failure)

    def vlm_prompt(self, family: str) -> VLMPrompt:
        """The row of ``family``; families this protocol does not cover are refused."""
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


# --- inquire-2024: INQUIRE's get_lmm_prompt strings, character for character ---------------
# (no space after "?" where upstream concatenates string literals; "answer" as the 34B
# assistant role; the query in quotes for the 34B and the GPT prompts)

_ANSWER = 'Answer the question with either "Yes" or "No" and nothing else.'
_BLIP = "Does this picture show {query}?" + _ANSWER + "\nAnswer: "

UPSTREAM_VLM: dict[str, VLMPrompt] = {
    # BLIP models: RGB conversion; "Yes"/"No" ids are input_ids[0] (T5 appends </s>)
    "blip2": VLMPrompt(_BLIP, ("Yes",), ("No",), token_index=0, convert_rgb=True, decode="pil"),
    "instructblip": VLMPrompt(
        _BLIP, ("Yes",), ("No",), token_index=0, convert_rgb=True, decode="pil"
    ),
    # Llama / Mistral tokenizers put <s> first: input_ids[1]
    "llava-1.5": VLMPrompt(
        "USER: <image>\nDoes this picture show {query}?" + _ANSWER + "\nASSISTANT:",
        ("Yes",),
        ("No",),
        token_index=1,
        decode="pil",
    ),
    "llava-1.6-mistral": VLMPrompt(
        "[INST] <image>\nDoes this picture show {query}?" + _ANSWER + " [/INST]",
        ("Yes",),
        ("No",),
        token_index=1,
        decode="pil",
    ),
    "llava-1.6-34b": VLMPrompt(
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n"
        'Does this picture show "{query}"?Answer the question with either "Yes" or "No".'
        "<|im_end|><|im_start|>answer\n",
        (" Yes",),
        (" No",),
        token_index=1,
        decode="pil",
    ),
    # The processor puts the image tokens and <bos> before the text and "\n" after it.
    "paligemma": VLMPrompt(
        "Q: Does this picture show {query}? Respond with yes or no.\nA:",
        ("yes",),
        ("no",),
        token_index=-1,
        processor_prefix="{image}",
        decode="pil",
    ),
}

UPSTREAM_API: tuple[APIPrompt, ...] = (
    APIPrompt(
        "vila",
        "<image>\n Does this picture show {query}?\n" + _ANSWER,
        models=("Efficient-Large-Model/VILA", "VILA"),
        image_placeholder="<image>\n",
    ),
    APIPrompt("openai-gpt", 'Does this picture show exactly "{query}"?\n' + _ANSWER),
)

# --- inquire-sum: the family's chat format with INQUIRE's question ------------------------

_SUM_YES = ("Yes", " Yes", "yes", " yes")
_SUM_NO = ("No", " No", "no", " no")

QUESTION = "Does this picture show {query}? " + _ANSWER

#: family -> (template with {image} and {question}, question); {query} in the question.
_SUM_TEMPLATES: dict[str, tuple[str, str]] = {
    "blip2": ("Question: {question} Answer:", QUESTION),
    "instructblip": ("{question}", QUESTION),
    "llava-1.5": ("USER: {image}\n{question} ASSISTANT:", QUESTION),
    "llava-1.6-mistral": ("[INST] {image}\n{question} [/INST]", QUESTION),
    "llava-1.6-34b": (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{image}\n"
        "{question}<|im_end|><|im_start|>assistant\n",
        QUESTION,
    ),
    # the processor adds <bos> after the image tokens and "\n" after the prefix
    "paligemma": (
        "{image}{question}",
        "Q: Does this picture show {query}? Respond with yes or no.\nA:",
    ),
    "idefics3": ("<|im_start|>User:{image}{question}<end_of_utterance>\nAssistant:", QUESTION),
    "qwen2-vl": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|>{image}<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n",
        QUESTION,
    ),
}

SUM_VLM: dict[str, VLMPrompt] = {
    fam: VLMPrompt(template.replace("{question}", question), _SUM_YES, _SUM_NO)
    for fam, (template, question) in _SUM_TEMPLATES.items()
}

SUM_API: tuple[APIPrompt, ...] = (
    APIPrompt("api", 'Does this picture show exactly "{query}"? ' + _ANSWER),
)

DEFAULT_PROTOCOL = "inquire-2024"

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "inquire-2024",
            "INQUIRE's prompts and token choice; first step of generate at temperature 0.5 "
            "with sampling filters, float32",
            FirstStep(temperature=0.5, sampling_filters=True, dtype="float32"),
            UPSTREAM_VLM,
            UPSTREAM_API,
            api_exact_tokens=True,
            api_refusal_scores_zero=True,
        ),
        Protocol(
            "inquire-sum",
            "family chat formats; all yes/no spellings summed at temperature 1, float64",
            FirstStep(),
            SUM_VLM,
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
