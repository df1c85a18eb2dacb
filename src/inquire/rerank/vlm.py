"""Vision-language model rerankers (transformers): score = P(Yes) / (P(Yes) + P(No)).

The score is read from the first answer token's distribution after the prompt, in one forward
pass per batch of images: no generate loop. Every supported family is one row of
:data:`inquire.rerank.families.FAMILIES` (loader class, processor, how to run one step, its
prompt and answer tokens under each protocol); how the distribution is read comes from the
reranking protocol (:mod:`inquire.rerank.protocol`; default ``inquire-2024``, INQUIRE's own).
Adding a family is adding a row there.

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
from pathlib import Path
from typing import Any

import numpy as np

from inquire.errors import InputError, UnknownNameError
from inquire.rerank.base import ImageLike, load_image, load_image_as_stored
from inquire.rerank.families import FAMILIES, QUESTION, VLMFamily, VLMPrompt
from inquire.rerank.protocol import FirstStep, Protocol, get_protocol

log = logging.getLogger(__name__)


def resolve_precision(precision: str, family: VLMFamily, device: str) -> str:
    """``precision``, or for ``auto``: the family's precision in INQUIRE's runs
    (``upstream_precision``) on a CUDA device, float32 elsewhere (half precision on a CPU is
    slow and, for some kernels, missing; scores then differ from INQUIRE's in the last bits
    of the float16 arithmetic, see docs/fidelity.md)."""
    if precision != "auto":
        return precision
    return family.upstream_precision if device.startswith("cuda") else "fp32"


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


def answer_token_ids(tokenizer: Any, spec: VLMPrompt, model: str) -> tuple[list[int], list[int]]:
    """The Yes and No token ids of ``spec`` for ``tokenizer``.

    With ``spec.token_index`` set: ``tokenizer(text).input_ids[index]`` of the first spelling
    (special tokens included: INQUIRE's choice, e.g. index 1 after Llama's ``<s>``); else every
    spelling that is a single token.
    """
    if spec.token_index is None:
        yes, no = token_ids(tokenizer, spec.yes), token_ids(tokenizer, spec.no)
        if not yes or not no:
            raise InputError(
                f"model {model!r}: none of the answer variants {spec.yes} / {spec.no} is a "
                f"single token in its vocabulary; declare the model's own variants in its "
                f"prompt row"
            )
        return yes, no
    out: list[list[int]] = []
    for text in (spec.yes[0], spec.no[0]):
        ids = list(tokenizer(text)["input_ids"])
        try:
            out.append([int(ids[spec.token_index])])
        except IndexError:
            raise InputError(
                f"model {model!r}: its tokenizer encodes {text!r} as {ids}, which has no "
                f"position {spec.token_index} (where INQUIRE reads the answer token); this "
                f"protocol needs the family's own tokenizer"
            ) from None
    if out[0] == out[1]:
        raise InputError(f"model {model!r}: Yes and No map to the same token id {out[0][0]}")
    return out[0], out[1]


def yes_probability(
    logits: Any, yes_ids: Sequence[int], no_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """From next-token ``logits (n, V)`` (torch): ``(P(Yes)/(P(Yes)+P(No)), P(Yes)+P(No))``.

    Each answer's probability sums its token variants. Computed in log space (float64), so a
    model that puts almost no mass on either answer still gets a well-defined ratio.
    """
    import torch

    logp = torch.log_softmax(logits.double(), dim=-1)
    return _ratio_from_logprobs(logp, yes_ids, no_ids, torch.float64)


def _ratio_from_logprobs(
    logp: Any, yes_ids: Sequence[int], no_ids: Sequence[int], dtype: Any
) -> tuple[np.ndarray, np.ndarray]:
    import torch

    if dtype == torch.float64:
        lyes = torch.logsumexp(logp[:, list(yes_ids)], dim=-1)
        lno = torch.logsumexp(logp[:, list(no_ids)], dim=-1)
        score = torch.sigmoid(lyes - lno)
        # both answers filtered out: no "Yes" at all scores 0 (as INQUIRE's API rule)
        score = torch.where(torch.isneginf(lyes), torch.zeros_like(score), score)
        mass = torch.exp(torch.logaddexp(lyes, lno))
        return score.numpy().astype(np.float64), mass.numpy().astype(np.float64)
    # INQUIRE's arithmetic: probabilities exponentiated, then p_yes / (p_yes + p_no)
    probs = logp.exp()
    p_yes = probs[:, list(yes_ids)].sum(-1)
    p_no = probs[:, list(no_ids)].sum(-1)
    mass = p_yes + p_no
    score = torch.where(mass > 0, p_yes / torch.where(mass > 0, mass, 1), torch.zeros_like(mass))
    return score.numpy().astype(np.float64), mass.numpy().astype(np.float64)


def _torch_dtype(step: FirstStep) -> Any:
    """The torch dtype of ``step.dtype`` (``float32`` or ``float64``)."""
    import torch

    return torch.float32 if step.dtype == "float32" else torch.float64


# Generation-config settings that change the first step of generate(do_sample=True) and that
# first_step_logprobs does not reproduce; a model that sets one is scored with a warning.
_UNREPRODUCED = {
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "sequence_bias": None,
    "min_new_tokens": None,
    "encoder_repetition_penalty": 1.0,
}


def unreproduced_settings(generation_config: Any) -> dict[str, Any]:
    """Settings of ``generation_config`` that :func:`first_step_logprobs` does not apply."""
    out = {}
    for name, default in _UNREPRODUCED.items():
        value = getattr(generation_config, name, default)
        if value is not None and value != default and not (name == "min_new_tokens" and not value):
            out[name] = value
    min_length = getattr(generation_config, "min_length", 0) or 0
    if min_length > 0:
        out["min_length"] = min_length
    return out


def first_step_logprobs(
    logits: Any,
    step: FirstStep,
    generation_config: Any = None,
    input_ids: Any = None,
    attention_mask: Any = None,
) -> Any:
    """``(n, V)`` log-probabilities of the first answer token from its raw ``logits (n, V)``.

    With ``step.sampling_filters`` this is what ``generate(do_sample=True,
    temperature=step.temperature, renormalize_logits=True)`` reports as its first step's
    scores: the repetition penalty of ``generation_config`` (over ``input_ids``, the ids
    generate sees: the prompt, or the decoder start for encoder-decoder models; padding
    positions of ``attention_mask`` excluded), the temperature, top-k (the config's, default
    50) and top-p, then log-softmax. Without, a plain log-softmax of ``logits /
    temperature``. Computed in ``step.dtype``.
    """
    import torch

    x = logits.to(_torch_dtype(step))
    if not step.sampling_filters:
        return torch.log_softmax(x / step.temperature, dim=-1)
    from transformers.generation.logits_process import (
        LogitNormalization,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    gc = generation_config
    processors: list[Any] = []
    penalty = getattr(gc, "repetition_penalty", None)
    if penalty is not None and penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(float(penalty)))
    if step.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(step.temperature))
    top_k = getattr(gc, "top_k", None)
    top_k = 50 if top_k is None else int(top_k)  # generate's default when the config is silent
    if top_k != 0:
        processors.append(TopKLogitsWarper(top_k=top_k))
    top_p = getattr(gc, "top_p", None)
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=float(top_p)))
    processors.append(LogitNormalization())
    if input_ids is None:
        ids = torch.zeros((x.shape[0], 1), dtype=torch.long, device=x.device)
    else:
        ids = input_ids
        if attention_mask is not None and bool((attention_mask == 0).any()):
            # Left padding: a padding position repeats the row's last (real) token, so the
            # penalty sees exactly the row's own tokens.
            ids = torch.where(attention_mask.bool(), ids, ids[:, -1:].expand_as(ids))
    for proc in processors:
        x = proc(ids, x)
    return x


_DECODERS = {"inquire": load_image, "pil": load_image_as_stored}


class VLMReranker:
    """A local transformers VLM as a reranker (see module docs).

    ``score(query, images) -> (n,) float64`` in [0, 1]. ``protocol``: a row of
    :data:`inquire.rerank.protocol.PROTOCOLS` (default ``inquire-2024``). ``min_mass``: warn
    when P(Yes)+P(No) falls below it (the model is not answering yes/no).
    """

    def __init__(
        self,
        family: VLMFamily,
        model: str,
        device: str = "cpu",
        precision: str = "auto",
        batch_size: int = 8,
        revision: str | None = None,
        min_mass: float = 0.5,
        protocol: str | Protocol | None = None,
        prompt: VLMPrompt | None = None,
    ) -> None:
        import transformers

        from inquire.embed._torch import check_device, torch_dtype

        self.protocol_row = get_protocol(protocol)
        self.protocol = self.protocol_row.name  # part of the cache key (rerank.cache.reranker_key)
        self.spec = prompt or self.protocol_row.vlm_prompt(family.name)
        device = str(check_device(device))  # a missing GPU fails here, clearly
        precision = resolve_precision(precision, family, device)
        dtype = torch_dtype(precision)  # the one precision table, shared with the encoders
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.family = family
        self.reranker_id = f"vlm:{family.name}/{model}"
        self.prompt_version = f"{family.name}-{self.spec.version}"
        self.batch_size = batch_size
        self.min_mass = min_mass
        self.device = device
        self.precision = precision  # part of the cache key (rerank.cache.reranker_key)
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
        self.yes_ids, self.no_ids = answer_token_ids(tok, self.spec, model)
        image_token = getattr(self.processor, "image_token", None) or getattr(
            tok, "image_token", ""
        )
        self._image_token = str(image_token or "")
        step = self.protocol_row.first_step
        if step.sampling_filters:
            odd = unreproduced_settings(self.generation_config)
            if odd:
                log.warning(
                    "%s: its generation config sets %s, which generate() would apply and this "
                    "scorer does not; scores may differ from generate's",
                    self.reranker_id,
                    odd,
                )

    @property
    def generation_config(self) -> Any:
        """The generation config ``generate`` reads (the language model's for BLIP-2 and
        InstructBLIP, whose ``generate`` hands over to it)."""
        if self.family.encoder_decoder:
            lm = getattr(self.model, "language_model", None)
            if lm is not None and getattr(lm, "generation_config", None) is not None:
                return lm.generation_config
        return self.model.generation_config

    def prompt(self, query_text: str) -> str:
        """The prompt for ``query_text`` under this reranker's protocol."""
        return self.spec.render(query_text, self._image_token)

    def prepare_image(self, image: ImageLike) -> Any:
        """The PIL image handed to the processor (decoded and converted as the protocol says)."""
        pil = _DECODERS[self.spec.decode](image)
        return pil.convert("RGB") if self.spec.convert_rgb else pil

    def inputs(self, query_text: str, images: Sequence[Any]) -> dict[str, Any]:
        """Processor output for one batch (same prompt for every image), on the device."""
        prefix = self.spec.processor_prefix.replace("{image}", self._image_token)
        prompt = prefix + self.prompt(query_text)
        pil = [self.prepare_image(im) for im in images]
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

    def _decoder_ids(self, n: int) -> Any:
        import torch

        start = self.model.config.text_config.decoder_start_token_id
        return torch.full((n, 1), int(start), dtype=torch.long, device=self.device)

    def next_token_logits(self, inputs: dict[str, Any]) -> Any:
        """``(n, V)`` float32 logits of the first answer token, from one forward pass."""
        import torch

        extra: dict[str, Any] = {}
        if self.family.encoder_decoder:
            extra["decoder_input_ids"] = self._decoder_ids(inputs["input_ids"].shape[0])
        if self.family.logits_to_keep:
            extra["logits_to_keep"] = 1
        with torch.inference_mode():
            out = self.model(**inputs, **extra)
        # With left padding (decoder-only) or a single decoder step, the last position is the
        # next token for every row.
        return out.logits[:, -1, :].float()

    def answer_logprobs(self, logits: Any, inputs: dict[str, Any]) -> Any:
        """``(n, V)`` log-probabilities of the first answer token under the protocol."""
        if self.family.encoder_decoder:
            ids, mask = self._decoder_ids(logits.shape[0]), None
        else:
            ids, mask = inputs.get("input_ids"), inputs.get("attention_mask")
        return first_step_logprobs(
            logits, self.protocol_row.first_step, self.generation_config, ids, mask
        )

    def score_with_mass(
        self, query_text: str, images: Sequence[ImageLike]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n,), P(Yes)+P(No) (n,))`` float64, batched ``batch_size`` at a time."""
        dtype = _torch_dtype(self.protocol_row.first_step)
        scores, masses = [], []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            inputs = self.inputs(query_text, batch)
            logp = self.answer_logprobs(self.next_token_logits(inputs), inputs)
            s, m = _ratio_from_logprobs(logp, self.yes_ids, self.no_ids, dtype)
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

        Under a protocol with sampling filters (``inquire-2024``) this is INQUIRE's call:
        ``generate(do_sample=True, temperature=0.5, renormalize_logits=True,
        output_scores=True, return_dict_in_generate=True, pad_token_id=eos)`` and the first
        step's scores; otherwise greedy ``generate(max_new_tokens=1, output_scores=True)``.
        Used to check :meth:`score` in tests and benchmarks.
        """
        import torch

        step = self.protocol_row.first_step
        inputs = self.inputs(query_text, [image])
        kwargs: dict[str, Any] = {
            "max_new_tokens": 1,
            "output_scores": True,
            "return_dict_in_generate": True,
        }
        if step.sampling_filters:
            kwargs |= {
                "do_sample": True,
                "temperature": step.temperature,
                "renormalize_logits": True,
                "pad_token_id": self.processor.tokenizer.eos_token_id,
            }
        else:
            kwargs["do_sample"] = False
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        first = out.scores[0].float()
        if step.sampling_filters:
            dtype = _torch_dtype(step)
            score, _ = _ratio_from_logprobs(first.to(dtype), self.yes_ids, self.no_ids, dtype)
        else:
            score, _ = _ratio_from_logprobs(
                torch.log_softmax(first.double() / step.temperature, -1),
                self.yes_ids,
                self.no_ids,
                torch.float64,
            )
        return float(score[0])


def load_vlm_reranker(spec: str, **kwargs: Any) -> VLMReranker:
    """Load ``'<family>/<model>'`` (the part of a ``vlm:`` id after the colon)."""
    family, model = parse_vlm_id(spec)
    return VLMReranker(family, model, **kwargs)


__all__ = ["FAMILIES", "QUESTION", "VLMFamily", "VLMReranker", "load_vlm_reranker"]
