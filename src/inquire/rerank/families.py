"""Vision-language model families: one row per family holds everything the family needs.

A row of :data:`FAMILIES` says how to load a model of the family (transformers model and
processor classes, padding side, whether the answer is a decoder step), the precision of
INQUIRE's runs, and the family's prompt under each reranking protocol (:class:`VLMPrompt`:
prompt text, which tokens are "Yes" and "No", how the image is decoded). Adding a family is
adding a row here (docs/architecture.md, "Add a VLM family"); :mod:`inquire.rerank.vlm` runs
it and :mod:`inquire.rerank.protocol` reads its prompts.

The ``inquire-2024`` prompts are INQUIRE's ``get_lmm_prompt`` strings character for
character (no space after "?" where upstream concatenates string literals; "answer" as the
34B assistant role; the query in quotes for the 34B prompt), with its Yes/No token choice.
The ``inquire-sum`` prompts put INQUIRE's question in the family's own chat format and sum
every single-token spelling of yes/no.

This module is data only: it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inquire.errors import UnknownNameError

# Protocol names (rows of inquire.rerank.protocol.PROTOCOLS) a family can have a prompt for.
INQUIRE_2024 = "inquire-2024"
INQUIRE_SUM = "inquire-sum"


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
class VLMFamily:
    """One family of vision-language models: how to load it, run one step, and prompt it.

    ``encoder_decoder``: the answer is the first decoder step from ``decoder_start_token_id``
    (BLIP-2 / InstructBLIP with FLAN-T5), and ``generate`` runs on the language model (whose
    generation config therefore holds the sampling settings). ``nest_images``: the processor
    wants one list of images per text. ``upstream_precision``: the weights' precision in
    INQUIRE's runs (its lmm_utils loads LLaVA, LLaVA-NeXT and PaliGemma in float16 and
    BLIP-2 / InstructBLIP in float32); ``precision="auto"`` uses it on a GPU.
    ``prompts``: protocol name -> the family's :class:`VLMPrompt` under that protocol (a
    protocol without an entry refuses the family, naming the protocols that have one).
    """

    name: str
    model_class: str
    example: str
    processor_class: str = "AutoProcessor"
    encoder_decoder: bool = False
    logits_to_keep: bool = True
    nest_images: bool = False
    padding_side: str = "left"
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    upstream_precision: str = "fp32"
    prompts: Mapping[str, VLMPrompt] = field(default_factory=dict)


ANSWER = 'Answer the question with either "Yes" or "No" and nothing else.'
# INQUIRE's question, in the inquire-sum prompts and (with the query quoted) its API prompt.
QUESTION = "Does this picture show {query}? " + ANSWER

_BLIP = "Does this picture show {query}?" + ANSWER + "\nAnswer: "
_SUM_YES = ("Yes", " Yes", "yes", " yes")
_SUM_NO = ("No", " No", "no", " no")


def _sum(template: str, question: str = QUESTION) -> VLMPrompt:
    """An inquire-sum prompt: ``template`` (with ``{image}`` and ``{question}``) around
    ``question``, every yes/no spelling summed."""
    return VLMPrompt(template.replace("{question}", question), _SUM_YES, _SUM_NO)


FAMILIES: dict[str, VLMFamily] = {
    f.name: f
    for f in (
        VLMFamily(
            name="blip2",
            model_class="Blip2ForConditionalGeneration",
            example="Salesforce/blip2-flan-t5-xxl",
            encoder_decoder=True,
            logits_to_keep=False,
            padding_side="right",
            prompts={
                # RGB conversion; "Yes"/"No" ids are input_ids[0] (T5 appends </s>)
                INQUIRE_2024: VLMPrompt(
                    _BLIP, ("Yes",), ("No",), token_index=0, convert_rgb=True, decode="pil"
                ),
                INQUIRE_SUM: _sum("Question: {question} Answer:"),
            },
        ),
        VLMFamily(
            name="instructblip",
            model_class="InstructBlipForConditionalGeneration",
            example="Salesforce/instructblip-flan-t5-xxl",
            encoder_decoder=True,
            logits_to_keep=False,
            padding_side="right",
            prompts={
                INQUIRE_2024: VLMPrompt(
                    _BLIP, ("Yes",), ("No",), token_index=0, convert_rgb=True, decode="pil"
                ),
                INQUIRE_SUM: _sum("{question}"),
            },
        ),
        VLMFamily(
            name="llava-1.5",
            model_class="LlavaForConditionalGeneration",
            example="llava-hf/llava-1.5-13b-hf",
            upstream_precision="fp16",
            prompts={
                # Llama / Mistral tokenizers put <s> first: input_ids[1]
                INQUIRE_2024: VLMPrompt(
                    "USER: <image>\nDoes this picture show {query}?" + ANSWER + "\nASSISTANT:",
                    ("Yes",),
                    ("No",),
                    token_index=1,
                    decode="pil",
                ),
                INQUIRE_SUM: _sum("USER: {image}\n{question} ASSISTANT:"),
            },
        ),
        VLMFamily(
            name="llava-1.6-mistral",
            model_class="LlavaNextForConditionalGeneration",
            example="llava-hf/llava-v1.6-mistral-7b-hf",
            upstream_precision="fp16",
            prompts={
                INQUIRE_2024: VLMPrompt(
                    "[INST] <image>\nDoes this picture show {query}?" + ANSWER + " [/INST]",
                    ("Yes",),
                    ("No",),
                    token_index=1,
                    decode="pil",
                ),
                INQUIRE_SUM: _sum("[INST] {image}\n{question} [/INST]"),
            },
        ),
        VLMFamily(
            name="llava-1.6-34b",
            model_class="LlavaNextForConditionalGeneration",
            example="llava-hf/llava-v1.6-34b-hf",
            upstream_precision="fp16",
            prompts={
                INQUIRE_2024: VLMPrompt(
                    "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n"
                    '<image>\nDoes this picture show "{query}"?Answer the question with either '
                    '"Yes" or "No".<|im_end|><|im_start|>answer\n',
                    (" Yes",),
                    (" No",),
                    token_index=1,
                    decode="pil",
                ),
                INQUIRE_SUM: _sum(
                    "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n"
                    "{image}\n{question}<|im_end|><|im_start|>assistant\n"
                ),
            },
        ),
        VLMFamily(
            name="paligemma",
            model_class="PaliGemmaForConditionalGeneration",
            example="google/paligemma-3b-mix-448",
            upstream_precision="fp16",
            prompts={
                # The processor puts the image tokens and <bos> before the text and "\n"
                # after it.
                INQUIRE_2024: VLMPrompt(
                    "Q: Does this picture show {query}? Respond with yes or no.\nA:",
                    ("yes",),
                    ("no",),
                    token_index=-1,
                    processor_prefix="{image}",
                    decode="pil",
                ),
                INQUIRE_SUM: _sum(
                    "{image}{question}",
                    "Q: Does this picture show {query}? Respond with yes or no.\nA:",
                ),
            },
        ),
        VLMFamily(
            name="idefics3",
            model_class="Idefics3ForConditionalGeneration",
            example="HuggingFaceTB/SmolVLM-Instruct",
            nest_images=True,
            prompts={
                INQUIRE_SUM: _sum(
                    "<|im_start|>User:{image}{question}<end_of_utterance>\nAssistant:"
                ),
            },
        ),
        VLMFamily(
            name="qwen2-vl",
            model_class="Qwen2VLForConditionalGeneration",
            example="Qwen/Qwen2-VL-2B-Instruct",
            prompts={
                INQUIRE_SUM: _sum(
                    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|>{image}<|vision_end|>{question}"
                    "<|im_end|>\n<|im_start|>assistant\n"
                ),
            },
        ),
    )
}


def get_family(name: str) -> VLMFamily:
    """The family row ``name``; :class:`UnknownNameError` (with close names) else."""
    if name not in FAMILIES:
        raise UnknownNameError("VLM family", name, FAMILIES)
    return FAMILIES[name]


__all__ = [
    "ANSWER",
    "FAMILIES",
    "INQUIRE_2024",
    "INQUIRE_SUM",
    "QUESTION",
    "VLMFamily",
    "VLMPrompt",
    "get_family",
]
