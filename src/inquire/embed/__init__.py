"""Embedding models (CLIP-style), the embedding pipeline and the embedding store."""

from __future__ import annotations

from inquire.embed.base import Encoder, ImageEncoder
from inquire.embed.models import load_encoder
from inquire.embed.pipeline import EmbedSummary, embed_images
from inquire.embed.store import EmbeddingStore
from inquire.embed.text_cache import text_embeddings

__all__ = [
    "EmbedSummary",
    "EmbeddingStore",
    "Encoder",
    "ImageEncoder",
    "embed_images",
    "load_encoder",
    "text_embeddings",
]
