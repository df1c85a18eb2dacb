"""The ``hf_clip`` backend: CLIP-style models of Hugging Face ``transformers``.

Forms of the part after ``hf_clip:`` (one row each in ``ID_FORMS``):

- ``ORG/NAME`` or ``ORG/NAME@REVISION``: a hub repository (``CLIPModel``, ``SiglipModel``,
  ... through ``AutoModel``), e.g. ``openai/clip-vit-large-patch14``. Files come through the
  Hugging Face cache, so ``HF_HUB_OFFLINE=1`` works once they are there.
- ``/PATH`` (or ``./PATH``, ``~/PATH``): a folder written by ``save_pretrained``.

INQUIRE loaded its ``hf_clip:`` models through ``all_clip``, and this backend reproduces that
path for CLIP models: ``CLIPModel`` with the image processor of ``CLIPProcessor`` as
transformers 4.x loaded it (the PIL implementation; transformers 5 defaults to a torchvision
one whose resizing differs slightly), texts tokenized like OpenAI's ``clip.tokenize(...,
truncate=True)`` (see :func:`openai_clip_token_ids`) and passed without an attention mask,
features L2-normalised in float32. Other model types (SigLIP, ...) use their own tokenizer
with the padding of ``TEXT_PROTOCOLS``.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inquire.embed._torch import TorchEncoder, revision_of
from inquire.embed.open_clip_backend import _offline_hint
from inquire.errors import DownloadError, InputError

log = logging.getLogger(__name__)

# model_type -> how texts become token ids. "openai_clip": OpenAI's clip.tokenize protocol
# (what all_clip, and so INQUIRE, used for every hf_clip model). "max_length" / "longest": the
# model's own tokenizer with that padding. SigLIP models were trained on fixed-length padded
# texts and give different embeddings otherwise.
TEXT_PROTOCOLS: dict[str, str] = {
    "clip": "openai_clip",
    "siglip": "max_length",
    "siglip2": "max_length",
}
DEFAULT_TEXT_PROTOCOL = "longest"
# The image processor implementation: transformers 4.x (INQUIRE used 4.45) loaded the PIL one.
IMAGE_PROCESSOR_BACKEND = "pil"
OPENAI_CONTEXT_LENGTH = 77


def openai_clean(text: str) -> str:
    """OpenAI CLIP's text cleaning: ftfy, HTML entities unescaped (twice), whitespace runs
    collapsed, stripped, lower-cased."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def openai_clip_token_ids(
    tokenizer: Any, texts: list[str], context_length: int = OPENAI_CONTEXT_LENGTH
) -> Any:
    """``(n, context_length) int64`` token ids as OpenAI's ``clip.tokenize(texts,
    truncate=True)`` makes them, with ``tokenizer``'s BPE vocabulary.

    Each text is cleaned (:func:`openai_clean`), wrapped in start/end tokens, cut to
    ``context_length`` with the end token kept last, and padded with zeros.
    """
    import torch

    sot, eot = tokenizer.bos_token_id, tokenizer.eos_token_id
    if sot is None or eot is None:
        raise InputError(
            f"the tokenizer {type(tokenizer).__name__} has no start/end tokens; the OpenAI CLIP "
            f"text protocol needs <|startoftext|> and <|endoftext|>"
        )
    out = torch.zeros((len(texts), context_length), dtype=torch.long)
    for i, text in enumerate(texts):
        # Untruncated on purpose (cut below, as clip.tokenize does); verbose=False silences
        # the tokenizer's warning about sequences longer than its maximum.
        body = tokenizer(openai_clean(text), add_special_tokens=False, verbose=False)["input_ids"]
        ids = [sot, *body, eot]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = eot
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


_WEIGHT_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]


def _from_hub(m: re.Match[str]) -> Path:
    from huggingface_hub import snapshot_download

    repo, rev = m.group("repo"), m.group("rev")
    try:
        snap = Path(snapshot_download(repo, revision=rev, allow_patterns=_WEIGHT_PATTERNS))
        if not any(snap.glob("*.safetensors")):
            snap = Path(snapshot_download(repo, revision=rev, allow_patterns=["pytorch_model.bin"]))
    except Exception as exc:
        raise DownloadError(
            f"could not get hf_clip:{repo}{'@' + rev if rev else ''}: {exc}{_offline_hint()}"
        ) from exc
    return snap


def _from_folder(m: re.Match[str]) -> Path:
    folder = Path(m.group("dir")).expanduser()
    if not (folder / "config.json").is_file():
        raise InputError(
            f"{str(folder)!r} is not a transformers model folder: it has no config.json "
            f"(write one with model.save_pretrained)"
        )
    return folder


# (form, pattern of the id after "hf_clip:", resolver -> model folder). First match wins.
ID_FORMS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], Path]]] = [
    ("/PATH", re.compile(r"^(?P<dir>[/.~].*)$"), _from_folder),
    (
        "ORG/NAME[@REVISION]",
        re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w.-]+))?$"),
        _from_hub,
    ),
]


def _processor_choice() -> dict[str, Any]:
    """Keyword arguments that select the PIL image processor (transformers 5 names it a
    backend; 4.x loads it unless ``use_fast`` is set)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"backend": IMAGE_PROCESSOR_BACKEND}
    return {"use_fast": False}


class HFPreprocess:
    """A picklable ``PIL RGB image -> (3, H, W) float32 tensor`` around an image processor."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Any) -> Any:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"HFPreprocess({self.processor!r})"


def _features(out: Any) -> Any:
    # transformers v5 returns an output object whose pooler_output is the projected
    # embedding; v4 returned the tensor itself.
    return getattr(out, "pooler_output", out)


class HFClipEncoder(TorchEncoder):
    """A transformers CLIP-style model behind the ImageEncoder interface."""

    def __init__(
        self, rest: str, device: str = "cpu", precision: str = "fp32", batch_size: int = 32
    ) -> None:
        super().__init__(device, precision, batch_size)
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        for _, pattern, fn in ID_FORMS:
            if m := pattern.match(rest):
                folder = fn(m)
                break
        else:
            forms = ", ".join(f"hf_clip:{f}" for f, _, _ in ID_FORMS)
            raise InputError(f"hf_clip model id {rest!r} matches none of the forms {forms}")
        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if not weights:
            raise InputError(f"{str(folder)!r} holds no model weights (*.safetensors, *.bin)")
        model = AutoModel.from_pretrained(folder, dtype=self._dtype, local_files_only=True)
        if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
            raise InputError(
                f"hf_clip:{rest} is a {type(model).__name__}, not a two-tower image-text model "
                f"(CLIPModel, SiglipModel, ...)"
            )
        self._model = model.to(self._device).eval()
        self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(
            folder, local_files_only=True, **_processor_choice()
        )
        model_type = str(getattr(model.config, "model_type", "clip"))
        self._text_protocol = TEXT_PROTOCOLS.get(model_type, DEFAULT_TEXT_PROTOCOL)
        text_config = getattr(model.config, "text_config", None)
        self._context = int(
            getattr(text_config, "max_position_embeddings", OPENAI_CONTEXT_LENGTH)
            or OPENAI_CONTEXT_LENGTH
        )
        self.model_id = f"hf_clip:{rest}"
        self.revision = revision_of(weights[0])
        self.preprocess = HFPreprocess(processor)
        self.preprocess_info = {
            "library": "transformers",
            "model_type": model_type,
            "text_protocol": self._text_protocol,
            "image_processor": type(processor).__name__,
            "processor": processor.to_dict(),
        }
        with torch.inference_mode():
            self.dim = int(self._text_batch([""]).shape[-1])

    def _text_batch(self, texts: list[str]) -> Any:
        if self._text_protocol == "openai_clip":
            # As all_clip did: ids only, no attention mask (CLIP's causal mask and end-token
            # pooling make the padding after the end token irrelevant).
            context = min(self._context, OPENAI_CONTEXT_LENGTH)
            ids = openai_clip_token_ids(self._tokenizer, texts, context)
            return _features(self._model.get_text_features(input_ids=ids.to(self._device)))
        tok = self._tokenizer(
            texts, padding=self._text_protocol, truncation=True, return_tensors="pt"
        ).to(self._device)
        return _features(self._model.get_text_features(**tok))

    def _pixel_batch(self, pixels: Any) -> Any:
        return _features(self._model.get_image_features(pixel_values=pixels))
