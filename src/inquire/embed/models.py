"""The model registry: model ids ``backend:rest`` -> encoders.

A backend is a row in ``BACKENDS`` (name -> loader); INQUIRE's short names are rows in
``ALIASES``. Loaders import their libraries lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from inquire.embed.base import Encoder
from inquire.errors import InputError, UnknownNameError

Loader = Callable[..., Encoder]


@dataclass(frozen=True)
class Backend:
    """How to load one family of models."""

    name: str
    loader: Callable[[], Loader]  # returns the loader; imports happen only when called
    help: str


def _precomputed() -> Loader:
    from inquire.embed.precomputed import PrecomputedEncoder

    return PrecomputedEncoder


def _toy() -> Loader:
    from inquire.testing.collection_encoder import load_toy

    return load_toy


def _open_clip() -> Loader:
    from inquire.embed.open_clip_backend import OpenClipEncoder

    return OpenClipEncoder


def _hf_clip() -> Loader:
    from inquire.embed.hf_backend import HFClipEncoder

    return HFClipEncoder


BACKENDS: dict[str, Backend] = {
    "precomputed": Backend(
        "precomputed",
        _precomputed,
        "text embeddings looked up in a parquet file (query_text, embedding): "
        "precomputed:PATH.parquet",
    ),
    "toy": Backend(
        "toy", _toy, "deterministic colour-histogram encoder for tests and demos: toy:colour"
    ),
    "open_clip": Backend(
        "open_clip",
        _open_clip,
        "open_clip models: open_clip:ARCH/TAG (ARCH/random: random weights), "
        "open_clip:hf-hub:ORG/NAME, open_clip:local-dir:/DIR, open_clip:ARCH@/PATH/CHECKPOINT",
    ),
    "hf_clip": Backend(
        "hf_clip",
        _hf_clip,
        "transformers CLIPModel/SiglipModel (AutoModel): hf_clip:ORG/NAME[@REVISION], "
        "hf_clip:/PATH/TO/save_pretrained_folder",
    ),
}


@dataclass(frozen=True)
class Alias:
    """One of INQUIRE's short model names and the model it stands for."""

    name: str
    model_id: str
    dim: int
    note: str


# INQUIRE's short model names (the models of its full-rank table). QuickGELU variants for the
# OpenAI and DFN weights: those models were trained with QuickGELU.
ALIAS_TABLE: list[Alias] = [
    Alias("vit-b-32", "open_clip:ViT-B-32-quickgelu/openai", 512, "OpenAI CLIP ViT-B/32"),
    Alias("rn50", "open_clip:RN50-quickgelu/openai", 1024, "OpenAI CLIP ResNet-50"),
    Alias("rn50x16", "open_clip:RN50x16-quickgelu/openai", 768, "OpenAI CLIP ResNet-50x16"),
    Alias("vit-b-16", "open_clip:ViT-B-16-quickgelu/openai", 512, "OpenAI CLIP ViT-B/16"),
    Alias("vit-l-14", "open_clip:ViT-L-14-quickgelu/openai", 768, "OpenAI CLIP ViT-L/14"),
    Alias("vit-b-16-dfn", "open_clip:ViT-B-16/dfn2b", 512, "DFN-2B ViT-B/16"),
    Alias("vit-l-14-dfn", "open_clip:ViT-L-14-quickgelu/dfn2b", 768, "DFN-2B ViT-L/14"),
    Alias(
        "vit-h-14-378",
        "open_clip:ViT-H-14-378-quickgelu/dfn5b",
        1024,
        "DFN-5B ViT-H/14 at 378 px (INQUIRE's default embeddings)",
    ),
    Alias("siglip-vit-l-16-384", "open_clip:ViT-L-16-SigLIP-384/webli", 1024, "SigLIP ViT-L/16"),
    Alias(
        "siglip-so400m-14-384",
        "open_clip:ViT-SO400M-14-SigLIP-384/webli",
        1152,
        "SigLIP SO400M/14",
    ),
    Alias("bioclip", "open_clip:hf-hub:imageomics/bioclip", 512, "BioCLIP (tree of life)"),
]

ALIASES: dict[str, str] = {a.name: a.model_id for a in ALIAS_TABLE}


def resolve(model_id: str) -> tuple[str, str]:
    """Split ``model_id`` (or an alias) into ``(backend, rest)``; unknown names fail at once."""
    full = ALIASES.get(model_id, model_id)
    backend, sep, rest = full.partition(":")
    if not sep or backend not in BACKENDS:
        raise UnknownNameError(
            "model", model_id, [*ALIASES, *ALIASES.values(), *(f"{b}:" for b in BACKENDS)]
        )
    if not rest:
        raise InputError(f"model id {model_id!r} names backend {backend!r} but no model after ':'")
    return backend, rest


def load_encoder(
    model_id: str,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 32,
) -> Encoder:
    """Load the encoder named ``model_id`` (``backend:rest`` or an alias).

    ``device`` (cpu, cuda, cuda:N, mps), ``precision`` (fp32, fp16, bf16: the dtype of the
    weights and activations) and ``batch_size`` (texts or images per forward pass) are all
    used; a device that does not exist or an unknown precision fails at once. Image-capable
    encoders implement :class:`~inquire.embed.base.ImageEncoder`.
    """
    backend, rest = resolve(model_id)
    loader = BACKENDS[backend].loader()
    return loader(rest, device=device, precision=precision, batch_size=batch_size)
