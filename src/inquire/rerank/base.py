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

    Decoded like every image the embedding models see (:func:`inquire.embed.images.open_image`:
    EXIF orientation applied, transparency over white, 16-bit scaled), so a reranker looks at
    the same picture as the first stage.
    """
    from inquire.embed.images import open_image

    return _decode(image, open_image)


def load_image_as_stored(image: ImageLike) -> Any:
    """A PIL image as ``PIL.Image.open`` gives it (no EXIF rotation, mode kept): the ``pil``
    decoding of a reranking protocol (:func:`inquire.embed.images.open_as_stored`)."""
    from inquire.embed.images import open_as_stored

    return _decode(image, open_as_stored)


def _decode(image: ImageLike, opener: Any) -> Any:
    """``opener(image)`` with a missing file, unreadable bytes or a wrong type as InputError."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return opener(image)
    try:
        if isinstance(image, (bytes, bytearray)):
            return opener(bytes(image))
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise InputError(f"image file {str(path)!r} does not exist")
            return opener(path)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read image {str(image)[:80]!r}: {exc}") from exc
    raise InputError(
        f"cannot use a {type(image).__name__} as an image; give a PIL image, a path or bytes"
    )


# Media types chat-completions APIs accept in an image URL; other files are re-encoded.
SENT_AS_IS = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})


def image_bytes(image: ImageLike, fmt: str = "JPEG") -> tuple[bytes, str]:
    """Encoded bytes and media type of ``image`` to send to an API.

    Files and bytes in one of :data:`SENT_AS_IS` are passed through unchanged (their type
    from :func:`inquire.embed.images.sniff_mime`); other images (TIFF, BMP, PIL images) are
    decoded with :func:`load_image` and encoded as ``fmt``. Raises InputError for a missing
    file or bytes that are not a decodable image.
    """
    from inquire.embed.images import UnknownImageFormat, sniff_mime

    data: bytes | None = None
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"image file {str(path)!r} does not exist")
        data = path.read_bytes()
    if data is not None:
        try:
            mime = sniff_mime(data)
        except UnknownImageFormat:
            mime = ""
        if mime in SENT_AS_IS:
            return data, mime
        image = data
    buf = io.BytesIO()
    load_image(image).save(buf, format=fmt)
    return buf.getvalue(), f"image/{fmt.lower()}"
