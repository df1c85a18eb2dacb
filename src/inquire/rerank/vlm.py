"""Vision-language model rerankers (transformers): score = P(Yes) / (P(Yes) + P(No)).

The score is read from the next-token distribution after the prompt, in one forward pass per
batch of images: no sampling and no generate loop. Every supported family is one row of
:data:`FAMILIES` (loader class, prompt template in the family's chat format, yes/no token
variants); adding a family is adding a row.

Reranker ids: ``vlm:<family>/<hub model id or local folder>``, e.g.
``vlm:llava-1.5/llava-hf/llava-1.5-7b-hf`` or ``vlm:paligemma/./my-checkpoint``.

Why there is no shared-prefix key/value cache: in every family's chat format the image comes
before the question (``USER: <image>\\n{question} ASSISTANT:``), so everything after the image
attends to the image and differs per image. The only text shared by all rows of a batch is the
few template tokens before the image (e.g. ``USER: ``), which costs less to recompute than to
copy as past key/values into every row. What *is* shared: the prompt is built once per query,
all rows of a batch carry the same prompt (so fixed-size-image families need no padding at
all), and only the last position's logits are computed where the model supports
``logits_to_keep``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inquire.errors import InputError, UnknownNameError
from inquire.rerank.base import ImageLike, load_image

log = logging.getLogger(__name__)

#: The question INQUIRE asks every open VLM; ``{query}`` is the query text.
QUESTION = (
    'Does this picture show {query}? Answer the question with either "Yes" or "No" and '
    "nothing else."
)
_YES = ("Yes", " Yes", "yes", " yes")
_NO = ("No", " No", "no", " no")


@dataclass(frozen=True)
class VLMFamily:
    """How to load and prompt one family of vision-language models.

    ``template`` is the full prompt in the family's chat format; ``{image}`` is replaced by the
    processor's image token and ``{question}`` by :data:`QUESTION` (or ``question``) filled
    with the query. ``yes``/``no`` are text variants whose single-token encodings count as the
    answer (variants that are not one token in a model's vocabulary are skipped).
    ``prompt_version`` is part of every cache key: bump it when the template changes.
    """

    name: str
    model_class: str
    template: str
    example: str
    question: str = QUESTION
    processor_class: str = "AutoProcessor"
    yes: tuple[str, ...] = _YES
    no: tuple[str, ...] = _NO
    encoder_decoder: bool = False
    logits_to_keep: bool = True
    nest_images: bool = False  # the processor wants one list of images per text
    padding_side: str = "left"
    prompt_version: str = "1"
    processor_kwargs: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, VLMFamily] = {
    f.name: f
    for f in (
        VLMFamily(
            name="blip2",
            model_class="Blip2ForConditionalGeneration",
            # The processor inserts the query-token placeholders itself.
            template="Question: {question} Answer:",
            example="Salesforce/blip2-flan-t5-xxl",
            encoder_decoder=True,
            logits_to_keep=False,
            padding_side="right",
        ),
        VLMFamily(
            name="instructblip",
            model_class="InstructBlipForConditionalGeneration",
            template="{question}",
            example="Salesforce/instructblip-flan-t5-xxl",
            encoder_decoder=True,
            logits_to_keep=False,
            padding_side="right",
        ),
        VLMFamily(
            name="llava-1.5",
            model_class="LlavaForConditionalGeneration",
            template="USER: {image}\n{question} ASSISTANT:",
            example="llava-hf/llava-1.5-7b-hf",
        ),
        VLMFamily(
            name="llava-1.6-mistral",
            model_class="LlavaNextForConditionalGeneration",
            template="[INST] {image}\n{question} [/INST]",
            example="llava-hf/llava-v1.6-mistral-7b-hf",
        ),
        VLMFamily(
            name="llava-1.6-34b",
            model_class="LlavaNextForConditionalGeneration",
            template=(
                "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{image}\n"
                "{question}<|im_end|><|im_start|>assistant\n"
            ),
            example="llava-hf/llava-v1.6-34b-hf",
        ),
        VLMFamily(
            name="paligemma",
            model_class="PaliGemmaForConditionalGeneration",
            # The processor adds <bos> after the image tokens and "\n" after the prefix.
            template="{image}{question}",
            question="Q: Does this picture show {query}? Respond with yes or no.\nA:",
            example="google/paligemma-3b-mix-448",
        ),
        VLMFamily(
            name="idefics3",
            model_class="Idefics3ForConditionalGeneration",
            template="<|im_start|>User:{image}{question}<end_of_utterance>\nAssistant:",
            example="HuggingFaceTB/SmolVLM-Instruct",
            nest_images=True,
        ),
        VLMFamily(
            name="qwen2-vl",
            model_class="Qwen2VLForConditionalGeneration",
            template=(
                "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|>{image}<|vision_end|>{question}<|im_end|>\n"
                "<|im_start|>assistant\n"
            ),
            example="Qwen/Qwen2-VL-2B-Instruct",
        ),
    )
}


def parse_vlm_id(spec: str) -> tuple[VLMFamily, str]:
    """``'<family>/<model>'`` -> (family row, model path or hub id)."""
    family, sep, model = spec.partition("/")
    if family not in FAMILIES:
        raise UnknownNameError("VLM family", family, FAMILIES)
    if not sep or not model:
        raise InputError(
            f"VLM reranker {spec!r} names no model: use vlm:{family}/<hub id or local folder>, "
            f"e.g. vlm:{family}/{FAMILIES[family].example}"
        )
    return FAMILIES[family], model


def local_fingerprint(folder: Path) -> str:
    """A revision for a local checkpoint: a digest of its config and weight files.

    Small files are hashed whole; large weight files by size plus their first and last MiB
    (hashing tens of GB on every load would cost minutes).
    """
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix not in {".json", ".safetensors", ".bin", ".model"}:
            continue
        size = path.stat().st_size
        h.update(f"{path.name}:{size}\n".encode())
        with open(path, "rb") as fh:
            if size <= 64 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read())
    return "local-" + h.hexdigest()[:16]


_COMMIT_CHARS = frozenset("0123456789abcdef")


def _is_commit(text: str) -> bool:
    return len(text) == 40 and set(text) <= _COMMIT_CHARS


def hub_revision(
    repo: str, revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> str:
    """The commit hash of the cached snapshot of hub model ``repo`` at ``revision``.

    A branch or tag name (default ``main``) is resolved through the local HF cache
    (``refs/<revision>``, then the ``snapshots/<commit>`` folder), so a cache key names the
    exact weights rather than a branch that moves. When nothing can be resolved, the name
    itself is returned with a warning.
    """
    rev = revision or "main"
    if _is_commit(rev):
        return rev
    from huggingface_hub import snapshot_download

    cache = Path(cache_dir) if cache_dir is not None else None
    try:
        folder = Path(snapshot_download(repo, revision=rev, cache_dir=cache, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for a missing snapshot
        log.warning(
            "cannot resolve revision %r of %s to a commit in the local HF cache (%s); cached "
            "scores are keyed by %r, which may move",
            rev,
            repo,
            exc,
            rev,
        )
        return rev
    if _is_commit(folder.name):
        return folder.name
    log.warning("snapshot folder %s of %s is not named by a commit; keyed by %r", folder, repo, rev)
    return rev


def token_ids(tokenizer: Any, variants: Sequence[str]) -> list[int]:
    """Ids of the ``variants`` that encode to exactly one token (deduplicated, in order)."""
    ids: list[int] = []
    for text in variants:
        enc = tokenizer.encode(text, add_special_tokens=False)
        if len(enc) == 1 and int(enc[0]) not in ids:
            ids.append(int(enc[0]))
    return ids


def yes_probability(
    logits: Any, yes_ids: Sequence[int], no_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """From next-token ``logits (n, V)`` (torch): ``(P(Yes)/(P(Yes)+P(No)), P(Yes)+P(No))``.

    Each answer's probability sums its token variants. Computed in log space (float64), so a
    model that puts almost no mass on either answer still gets a well-defined ratio.
    """
    import torch

    logp = torch.log_softmax(logits.double(), dim=-1)
    lyes = torch.logsumexp(logp[:, list(yes_ids)], dim=-1)
    lno = torch.logsumexp(logp[:, list(no_ids)], dim=-1)
    score = torch.sigmoid(lyes - lno)
    mass = torch.exp(torch.logaddexp(lyes, lno))
    return score.numpy().astype(np.float64), mass.numpy().astype(np.float64)


class VLMReranker:
    """A local transformers VLM as a reranker (see module docs).

    ``score(query, images) -> (n,) float64`` in [0, 1]. ``min_mass``: warn when
    P(Yes)+P(No) falls below it (the model is not answering yes/no).
    """

    def __init__(
        self,
        family: VLMFamily,
        model: str,
        device: str = "cpu",
        precision: str = "fp32",
        batch_size: int = 8,
        revision: str | None = None,
        min_mass: float = 0.5,
    ) -> None:
        import transformers

        from inquire.embed._torch import check_device, torch_dtype

        dtype = torch_dtype(precision)  # the one precision table, shared with the encoders
        device = str(check_device(device))  # a missing GPU fails here, clearly
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.family = family
        self.reranker_id = f"vlm:{family.name}/{model}"
        self.prompt_version = f"{family.name}-{family.prompt_version}"
        self.batch_size = batch_size
        self.min_mass = min_mass
        self.device = device
        self.precision = precision  # part of the cache key (rerank.cache.ModelKey)
        local = Path(model).expanduser()
        kwargs: dict[str, Any] = {}
        if local.is_dir():
            source = str(local)
            kwargs["local_files_only"] = True
        else:
            source = model
            if revision:
                kwargs["revision"] = revision
        model_cls = getattr(transformers, family.model_class)
        proc_cls = getattr(transformers, family.processor_class)
        try:
            self.processor = proc_cls.from_pretrained(source, **kwargs)
            self.model = model_cls.from_pretrained(source, dtype=dtype, **kwargs)
        except OSError as exc:
            raise InputError(
                f"cannot load VLM {model!r} ({family.model_class}): {exc}. Give a local folder "
                f"written by save_pretrained or a hub id that is in the local HF cache"
            ) from exc
        self.model.to(device).eval()
        if local.is_dir():
            self.revision = local_fingerprint(local)
        else:
            commit = getattr(self.model.config, "_commit_hash", None)
            self.revision = str(commit) if commit else hub_revision(model, revision)
        tok = self.processor.tokenizer
        tok.padding_side = family.padding_side
        self.yes_ids = token_ids(tok, family.yes)
        self.no_ids = token_ids(tok, family.no)
        if not self.yes_ids or not self.no_ids:
            raise InputError(
                f"model {model!r}: none of the answer variants {family.yes} / {family.no} is a "
                f"single token in its vocabulary; declare the model's own variants in its "
                f"family row"
            )
        image_token = getattr(self.processor, "image_token", None) or getattr(
            tok, "image_token", ""
        )
        self._image_token = str(image_token or "")

    def prompt(self, query_text: str) -> str:
        """The full prompt for ``query_text`` in this family's chat format."""
        question = self.family.question.format(query=query_text)
        return self.family.template.format(image=self._image_token, question=question)

    def inputs(self, query_text: str, images: Sequence[Any]) -> dict[str, Any]:
        """Processor output for one batch (same prompt for every image), on the device."""
        prompt = self.prompt(query_text)
        pil = [load_image(im) for im in images]
        imgs: list[Any] = [[p] for p in pil] if self.family.nest_images else pil
        enc = self.processor(
            images=imgs,
            text=[prompt] * len(pil),
            return_tensors="pt",
            padding=True,
            **self.family.processor_kwargs,
        )
        import torch

        dtype = self.model.dtype
        out: dict[str, Any] = {}
        for k, v in enc.items():
            if k == "labels":  # some processors add training labels; scoring has no loss
                continue
            if isinstance(v, torch.Tensor):
                # pixel values follow the model's precision (bf16/fp16), ids stay integers
                v = v.to(self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device)
            out[k] = v
        return out

    def next_token_logits(self, inputs: dict[str, Any]) -> Any:
        """``(n, V)`` float logits of the first answer token, from one forward pass."""
        import torch

        extra: dict[str, Any] = {}
        if self.family.encoder_decoder:
            n = inputs["input_ids"].shape[0]
            start = self.model.config.text_config.decoder_start_token_id
            extra["decoder_input_ids"] = torch.full(
                (n, 1), int(start), dtype=torch.long, device=self.device
            )
        if self.family.logits_to_keep:
            extra["logits_to_keep"] = 1
        with torch.inference_mode():
            out = self.model(**inputs, **extra)
        # With left padding (decoder-only) or a single decoder step, the last position is the
        # next token for every row.
        return out.logits[:, -1, :].float()

    def score_with_mass(
        self, query_text: str, images: Sequence[ImageLike]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n,), P(Yes)+P(No) (n,))`` float64, batched ``batch_size`` at a time."""
        scores, masses = [], []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            logits = self.next_token_logits(self.inputs(query_text, batch))
            s, m = yes_probability(logits, self.yes_ids, self.no_ids)
            scores.append(s)
            masses.append(m)
        if not scores:
            return np.empty(0, np.float64), np.empty(0, np.float64)
        score, mass = np.concatenate(scores), np.concatenate(masses)
        low = mass < self.min_mass
        if low.any():
            log.warning(
                "%s: P(Yes)+P(No) < %.2g for %d of %d images (min %.3g) for query %r; the "
                "model is not answering yes/no and its scores may mean little",
                self.reranker_id,
                self.min_mass,
                int(low.sum()),
                len(mass),
                float(mass.min()),
                query_text,
            )
        return score, mass

    def score(self, query_text: str, images: Sequence[ImageLike]) -> np.ndarray:
        """``(n,) float64`` P(Yes)/(P(Yes)+P(No)) per image; higher = more relevant."""
        return self.score_with_mass(query_text, images)[0]

    def generate_score(self, query_text: str, image: ImageLike) -> float:
        """The slow reference: the model's own ``generate`` for one step on one image.

        Reads the first step's scores from ``generate(max_new_tokens=1, output_scores=True)``
        with greedy decoding; used to check :meth:`score` in tests and benchmarks.
        """
        import torch

        inputs = self.inputs(query_text, [image])
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=1,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        score, _ = yes_probability(out.scores[0].float(), self.yes_ids, self.no_ids)
        return float(score[0])


def load_vlm_reranker(spec: str, **kwargs: Any) -> VLMReranker:
    """Load ``'<family>/<model>'`` (the part of a ``vlm:`` id after the colon)."""
    family, model = parse_vlm_id(spec)
    return VLMReranker(family, model, **kwargs)


__all__ = ["FAMILIES", "QUESTION", "VLMFamily", "VLMReranker", "load_vlm_reranker"]
