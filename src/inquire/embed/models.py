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
}

# INQUIRE's short model names -> full model ids.
ALIASES: dict[str, str] = {}


def resolve(model_id: str) -> tuple[str, str]:
    """Split ``model_id`` (or an alias) into ``(backend, rest)``; unknown names fail at once."""
    full = ALIASES.get(model_id, model_id)
    backend, sep, rest = full.partition(":")
    if not sep:
        raise UnknownNameError("model", model_id, [*ALIASES, *(f"{b}:..." for b in BACKENDS)])
    if backend not in BACKENDS:
        raise UnknownNameError("model backend", backend, BACKENDS)
    if not rest:
        raise InputError(f"model id {model_id!r} names backend {backend!r} but no model after ':'")
    return backend, rest


def load_encoder(
    model_id: str,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 32,
) -> Encoder:
    """Load the encoder named ``model_id`` (``backend:rest`` or an alias)."""
    backend, rest = resolve(model_id)
    loader = BACKENDS[backend].loader()
    return loader(rest, device=device, precision=precision, batch_size=batch_size)
