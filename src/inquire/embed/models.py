"""The model registry: model ids ``backend:rest`` -> encoders.

A backend is a row in ``BACKENDS`` (name -> loader); INQUIRE's short names are rows of
``ALIAS_TABLE`` (alias, model id, INQUIRE's own id, dimension, note). Loaders import their
libraries lazily.
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
    from inquire.embed.toy_backend import load_toy

    return load_toy


def _open_clip() -> Loader:
    from inquire.embed.open_clip_backend import OpenClipEncoder

    return OpenClipEncoder


def _hf_clip() -> Loader:
    from inquire.embed.hf_backend import HFClipEncoder

    return HFClipEncoder


def _wildclip() -> Loader:
    from inquire.embed.wildclip_backend import WildClipEncoder

    return WildClipEncoder


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
        "hf_clip:/PATH/TO/save_pretrained_folder; CLIP texts tokenized as OpenAI's "
        "clip.tokenize",
    ),
    "wildclip": Backend(
        "wildclip",
        _wildclip,
        "WildCLIP checkpoints (state_dict, keys model.clip_model.*) over OpenAI ViT-B/16: "
        "wildclip:NAME (NAME.pth in $INQUIRE_WILDCLIP_DIR), wildclip:/PATH.pth, "
        "wildclip:BASE@/PATH.pth (BASE: an open_clip id)",
    ),
}


@dataclass(frozen=True)
class Alias:
    """One of INQUIRE's short model names.

    ``model_id`` is what inquire loads; ``upstream_id`` is INQUIRE's own entry for the name
    (its ``TopKPredictionStore.models`` table, loaded through ``all_clip``). They differ only
    where today's libraries would build a different model from INQUIRE's string; ``note``
    says why. ``published_embeddings``: INQUIRE publishes iNat24 embeddings of this model
    (its data/README.md), so ``inquire reproduce`` points at them instead of ``inquire embed``.
    """

    name: str
    model_id: str
    upstream_id: str
    dim: int
    note: str
    published_embeddings: bool = False


_OPENAI_QUICKGELU = (
    "with QuickGELU, as INQUIRE's open_clip built 'openai' weights (open_clip>=2.29 builds "
    "INQUIRE's id with GELU)"
)

# INQUIRE's short model names, in the order of its table. Adding a model is adding a row:
# `inquire models`, model lookup (alias or INQUIRE's own id), `inquire reproduce` and the
# reports read everything from here (docs/architecture.md, "Add an embedding alias").
ALIAS_TABLE: list[Alias] = [
    Alias(
        "vit-b-32",
        "hf_clip:openai/clip-vit-base-patch32",
        "hf_clip:openai/clip-vit-base-patch32",
        512,
        "OpenAI CLIP ViT-B/32 (transformers)",
    ),
    Alias(
        "wildclip-t1",
        "wildclip:wildclip_vitb16_t1",
        "wildclip_vitb16_t1",
        512,
        "WildCLIP ViT-B/16, T1 (checkpoint file; see docs/embed.md)",
    ),
    Alias(
        "wildclip-t1t7-lwf",
        "wildclip:wildclip_vitb16_t1t7_lwf",
        "wildclip_vitb16_t1t7_lwf",
        512,
        "WildCLIP ViT-B/16, T1+T7 with LwF (checkpoint file; see docs/embed.md)",
    ),
    Alias(
        "bioclip",
        "open_clip:hf-hub:imageomics/bioclip",
        "bioclip",
        512,
        "BioCLIP (open_clip hf-hub:imageomics/bioclip)",
    ),
    Alias(
        "rn50",
        "open_clip:RN50-quickgelu/openai",
        "open_clip:RN50/openai",
        1024,
        f"OpenAI CLIP ResNet-50, {_OPENAI_QUICKGELU}",
    ),
    Alias(
        "rn50x16",
        "open_clip:RN50x16-quickgelu/openai",
        "open_clip:RN50x16/openai",
        768,
        f"OpenAI CLIP ResNet-50x16, {_OPENAI_QUICKGELU}",
    ),
    Alias(
        "vit-b-16",
        "hf_clip:openai/clip-vit-base-patch16",
        "hf_clip:openai/clip-vit-base-patch16",
        512,
        "OpenAI CLIP ViT-B/16 (transformers)",
        published_embeddings=True,
    ),
    Alias(
        "vit-l-14",
        "hf_clip:openai/clip-vit-large-patch14",
        "hf_clip:openai/clip-vit-large-patch14",
        768,
        "OpenAI CLIP ViT-L/14 (transformers)",
        published_embeddings=True,
    ),
    Alias(
        "vit-b-16-dfn",
        "open_clip:ViT-B-16-quickgelu/dfn2b",
        "open_clip:ViT-B-16/dfn2b",
        512,
        "DFN-2B ViT-B/16. The weights were trained with QuickGELU; INQUIRE's id builds the "
        "GELU architecture (open_clip warns of the mismatch); pass it as a model id to "
        "reproduce that build",
    ),
    Alias(
        "vit-l-14-dfn",
        "open_clip:ViT-L-14-quickgelu/dfn2b",
        "open_clip:ViT-L-14-quickgelu/dfn2b",
        768,
        "DFN-2B ViT-L/14",
    ),
    Alias(
        "vit-h-14-378",
        "open_clip:ViT-H-14-378-quickgelu/dfn5b",
        "open_clip:ViT-H-14-378-quickgelu/dfn5b",
        1024,
        "DFN-5B ViT-H/14 at 378 px (INQUIRE's default embeddings)",
        published_embeddings=True,
    ),
    Alias(
        "siglip-vit-l-16-384",
        "open_clip:ViT-L-16-SigLIP-384/webli",
        "open_clip:ViT-L-16-SigLIP-384/webli",
        1024,
        "SigLIP ViT-L/16 at 384 px",
    ),
    Alias(
        "siglip-so400m-14-384",
        "open_clip:ViT-SO400M-14-SigLIP-384/webli",
        "open_clip:ViT-SO400M-14-SigLIP-384/webli",
        1152,
        "SigLIP SO400M/14 at 384 px",
        published_embeddings=True,
    ),
]

# Lookups derived from the table (kept in step by register_alias).
ALIASES: dict[str, str] = {a.name: a.model_id for a in ALIAS_TABLE}
# INQUIRE's ids that are not model ids of ours (no backend prefix) resolve like their alias.
UPSTREAM_NAMES: dict[str, str] = {
    a.upstream_id: a.model_id for a in ALIAS_TABLE if ":" not in a.upstream_id
}


def register_alias(alias: Alias) -> Alias:
    """Add a row to :data:`ALIAS_TABLE` at run time (and to the lookups derived from it).

    The model id must name a known backend; an alias already in use is an error."""
    backend, sep, rest = alias.model_id.partition(":")
    if not sep or backend not in BACKENDS or not rest:
        raise InputError(
            f"alias {alias.name!r}: model id {alias.model_id!r} must be BACKEND:REST with "
            f"BACKEND one of {sorted(BACKENDS)}"
        )
    if alias.name in ALIASES or alias.name in UPSTREAM_NAMES:
        raise InputError(f"model alias {alias.name!r} is already in use")
    ALIAS_TABLE.append(alias)
    ALIASES[alias.name] = alias.model_id
    if ":" not in alias.upstream_id:
        UPSTREAM_NAMES[alias.upstream_id] = alias.model_id
    return alias


def unregister_alias(name: str) -> Alias:
    """Remove the row ``name`` added by :func:`register_alias`; return it."""
    for i, a in enumerate(ALIAS_TABLE):
        if a.name == name:
            del ALIAS_TABLE[i]
            del ALIASES[name]
            if UPSTREAM_NAMES.get(a.upstream_id) == a.model_id and ":" not in a.upstream_id:
                del UPSTREAM_NAMES[a.upstream_id]
            return a
    raise UnknownNameError("model alias", name, ALIASES)


def published_embeddings() -> list[str]:
    """The aliases whose iNat24 embeddings INQUIRE publishes (``published_embeddings``)."""
    return [a.name for a in ALIAS_TABLE if a.published_embeddings]


def describe_models(width: int = 80) -> str:
    """The backends and INQUIRE's aliases as plain text, one block per entry, every line
    at most ``width`` characters (long values wrap; ids are never cut)."""
    import textwrap

    def field(label: str, value: str) -> list[str]:
        head = f"  {label:<9} "
        return textwrap.wrap(
            value,
            width,
            initial_indent=head,
            subsequent_indent=" " * len(head),
            break_long_words=False,
            break_on_hyphens=False,
        )

    lines = ["Model backends (model id = BACKEND:REST)", ""]
    for b in BACKENDS.values():
        lines += [b.name, *field("forms", b.help), ""]
    lines += ["INQUIRE's models (alias: what inquire loads; INQUIRE's own id)", ""]
    for a in ALIAS_TABLE:
        published = ", iNat24 embeddings published by INQUIRE" if a.published_embeddings else ""
        lines += [f"{a.name} ({a.dim}-d{published})", *field("model id", a.model_id)]
        lines += [*field("upstream", a.upstream_id), *field("note", a.note), ""]
    return "\n".join(lines).rstrip() + "\n"


def resolve(model_id: str) -> tuple[str, str]:
    """Split ``model_id`` (or an alias) into ``(backend, rest)``; unknown names fail at once."""
    full = ALIASES.get(model_id) or UPSTREAM_NAMES.get(model_id, model_id)
    backend, sep, rest = full.partition(":")
    if not sep or backend not in BACKENDS:
        raise UnknownNameError(
            "model",
            model_id,
            [*ALIASES, *ALIASES.values(), *UPSTREAM_NAMES, *(f"{b}:" for b in BACKENDS)],
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
