"""The reranker interface every reranker implements, and image loading.

A reranker scores candidate images for one query text::

    score(query_text, images) -> (n,) float64, higher = more relevant

``images`` are PIL images, file paths or raw encoded bytes. A score of NaN marks a recorded
failure (e.g. an API request that kept failing): it is never a silent 0, it is never cached,
and evaluations count and report it.

Optional attributes the scoring loop reads (:func:`inquire.rerank.cache.score_candidates`):
``cacheable`` (default True; False for non-deterministic scorers, whose outputs are never
cached), ``needs_images`` (default True; False for scorers that never look at pixels) and
``chunk_size`` (images per ``score`` call the loop should use at least).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from inquire.errors import InputError

# A PIL image, a path (str or os.PathLike) or encoded bytes; PIL is imported lazily.
ImageLike = Any


@runtime_checkable
class Reranker(Protocol):
    """Scores images for a query. ``reranker_id``, ``revision`` and ``prompt_version`` are the
    model's part of every cache key."""

    reranker_id: str
    revision: str
    prompt_version: str

    def score(self, query_text: str, images: Sequence[ImageLike]) -> np.ndarray:
        """``(len(images),) float64`` scores, higher = more relevant; NaN = failure."""
        ...


def load_image(image: ImageLike) -> Any:
    """An RGB ``PIL.Image`` from a PIL image, a path or encoded bytes.

    Decoded like every image the embedding models see (:func:`inquire.embed.base.open_image`:
    EXIF orientation applied, transparency over white, 16-bit scaled), so a reranker looks at
    the same picture as the first stage.
    """
    from PIL import Image, UnidentifiedImageError

    from inquire.embed.base import open_image

    if isinstance(image, Image.Image):
        return open_image(image)
    try:
        if isinstance(image, (bytes, bytearray)):
            return open_image(bytes(image))
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise InputError(f"image file {str(path)!r} does not exist")
            return open_image(path)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read image {str(image)[:80]!r}: {exc}") from exc
    raise InputError(
        f"cannot use a {type(image).__name__} as an image; give a PIL image, a path or bytes"
    )


def image_bytes(image: ImageLike, fmt: str = "JPEG") -> tuple[bytes, str]:
    """Encoded bytes and MIME type of ``image`` (files and bytes are passed through)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), _sniff_mime(bytes(image))
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"image file {str(path)!r} does not exist")
        data = path.read_bytes()
        return data, _sniff_mime(data)
    buf = io.BytesIO()
    load_image(image).save(buf, format=fmt)
    return buf.getvalue(), f"image/{fmt.lower()}"


def _sniff_mime(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"
