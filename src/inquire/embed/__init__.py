"""Embedding models (CLIP-style), the embedding pipeline and the embedding store."""

from __future__ import annotations

from inquire.embed.base import Encoder
from inquire.embed.models import load_encoder
from inquire.embed.store import EmbeddingStore

__all__ = ["EmbeddingStore", "Encoder", "load_encoder"]
