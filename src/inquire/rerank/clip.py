"""The CLIP reranker: cosine similarity between the query and each candidate image, with any
model of the embedding registry (:func:`inquire.embed.load_encoder`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inquire.errors import InputError
from inquire.rerank.base import ImageLike, load_image

PROMPT_VERSION = "clip-cosine-1"


class ClipReranker:
    """``score(query, images) -> (n,) float64`` cosine similarities in [-1, 1].

    ``encoder`` is any :class:`inquire.embed.base.Encoder` (rows L2-normalised), so the dot
    product of its outputs is the cosine similarity.
    """

    cacheable = True

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.reranker_id = f"clip:{encoder.model_id}"
        self.revision = str(encoder.revision)
        self.prompt_version = PROMPT_VERSION
        self.precision = str(getattr(encoder, "precision", "fp32"))  # part of the cache key

    def score(self, query_text: str, images: Sequence[ImageLike]) -> np.ndarray:
        """``(n,) float64`` cosine similarity of each image with the query."""
        if len(images) == 0:
            return np.empty(0, np.float64)
        text = np.asarray(self.encoder.encode_text([query_text]), np.float32)
        imgs = np.asarray(self.encoder.encode_images([load_image(im) for im in images]))
        if text.ndim != 2 or imgs.shape != (len(images), text.shape[1]):
            raise InputError(
                f"encoder {self.encoder.model_id!r} returned text {text.shape} and images "
                f"{imgs.shape}; expected (1, d) and ({len(images)}, d)"
            )
        return (imgs.astype(np.float64) @ text[0].astype(np.float64)).astype(np.float64)


def load_clip_reranker(model_id: str, **kwargs: Any) -> ClipReranker:
    """``clip:<embedding model id>``: load the encoder from the embedding registry."""
    from inquire.embed import load_encoder

    opts = {k: v for k, v in kwargs.items() if k in {"device", "precision", "batch_size"}}
    return ClipReranker(load_encoder(model_id, **opts))
