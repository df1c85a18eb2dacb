"""Embedding of collection images: a batched loop over ``encoder.encode_images``.

:func:`embed_files` is the one place the collection code turns files into vectors, so a
different pipeline (sharded, multi-process) can replace it without touching the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inquire.embed.base import Encoder
from inquire.errors import InputError

log = logging.getLogger(__name__)


def _open_rgb(path: Path) -> object | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or not an image
        log.warning("cannot read image %s (%s); it is skipped until the file changes", path, exc)
        return None


def embed_files(
    encoder: Encoder, paths: Sequence[Path], batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the image files ``paths`` in batches of ``batch_size``.

    Returns ``(vectors (n, d) float32 L2-normalised, ok (n,) bool)``; rows of files Pillow
    cannot read are zero and ``ok`` is False for them.
    """
    out = np.zeros((len(paths), encoder.dim), np.float32)
    ok = np.zeros(len(paths), bool)
    for lo in range(0, len(paths), batch_size):
        chunk = list(range(lo, min(lo + batch_size, len(paths))))
        images, rows = [], []
        for i in chunk:
            img = _open_rgb(paths[i])
            if img is not None:
                images.append(img)
                rows.append(i)
        if not images:
            continue
        vec = np.asarray(encoder.encode_images(images), dtype=np.float32)
        if vec.shape != (len(images), encoder.dim):
            raise InputError(
                f"encoder {encoder.model_id} returned shape {vec.shape} for {len(images)} images; "
                f"expected ({len(images)}, {encoder.dim})"
            )
        out[rows] = vec
        ok[rows] = True
    return out, ok
