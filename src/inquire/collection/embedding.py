"""Embedding of collection images with the embedding pipeline's reader and batching.

:func:`embed_files` is the one place the collection code turns files into vectors. Files are
read, decoded and preprocessed in parallel worker processes by
:func:`inquire.embed.reader.decode_batches` (the pipeline's own reader: the same image
opening rules, the same failure reasons), then encoded batch by batch in this process:

- an :class:`~inquire.embed.base.ImageEncoder` (open_clip, hf_clip) gets its ``preprocess``
  run in the workers and only ``encode_pixels`` here, as in ``inquire embed``;
- any other :class:`~inquire.embed.base.Encoder` gets the decoded RGB PIL images
  (``encode_images``), still decoded in the workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from inquire.embed.base import Encoder, ImageEncoder
from inquire.errors import InputError

log = logging.getLogger(__name__)

# Worker processes are started only for at least this many images: starting them costs
# about as much as decoding a few dozen small photos in this process.
PARALLEL_FROM = 64


def _can_fork_workers() -> bool:
    try:
        import torch.utils.data  # noqa: F401  (DataLoader runs the workers)
    except ImportError:
        return False
    return True


def embed_files(
    encoder: Encoder,
    paths: Sequence[str | os.PathLike[str]],
    batch_size: int = 32,
    workers: int = 2,
    root: str | os.PathLike[str] | None = None,
    advance: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embed the image files ``paths`` (relative to ``root`` when given) in batches.

    ``workers``: decoding processes (0, fewer than ``PARALLEL_FROM`` images, or no torch:
    decoded in this process). ``advance(n)`` is called after each batch with the number of
    files it handled. Returns ``(vectors (n, d) float32 L2-normalised, ok (n,) bool,
    reasons (n,) str)``: rows of files that cannot be decoded are zero, ``ok`` is False and
    ``reasons`` says why (``""`` for good files).
    """
    from inquire.embed.reader import decode_batches
    from inquire.embed.sources import ImageSource

    if batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}")
    if workers < 0:
        raise InputError(f"workers must be >= 0, got {workers}")
    base = Path(root) if root is not None else Path()
    source = ImageSource("folder", base, [os.fspath(p) for p in paths])
    n = len(source)
    out = np.zeros((n, encoder.dim), np.float32)
    ok = np.zeros(n, bool)
    reasons = [""] * n
    if n == 0:
        return out, ok, reasons
    if workers and (n < PARALLEL_FROM or not _can_fork_workers()):
        workers = 0
    pixel_encoder = isinstance(encoder, ImageEncoder)
    batches = [list(range(lo, min(lo + batch_size, n))) for lo in range(0, n, batch_size)]
    decoded = decode_batches(
        source,
        batches,
        preprocess=getattr(encoder, "preprocess", None) if pixel_encoder else None,
        workers=workers,
        stack=pixel_encoder,
    )
    for items, pixels, errors in decoded:
        for i, reason in errors:
            reasons[i] = reason
            log.warning(
                "cannot read image %s (%s); it is skipped until the file changes",
                base / source.paths[i],
                reason,
            )
        if len(items):
            if pixel_encoder:
                vec = encoder.encode_pixels(pixels)  # type: ignore[attr-defined]
            else:
                vec = encoder.encode_images(pixels)
            vec = np.asarray(vec, dtype=np.float32)
            if vec.shape != (len(items), encoder.dim):
                raise InputError(
                    f"encoder {encoder.model_id} returned shape {vec.shape} for {len(items)} "
                    f"images; expected ({len(items)}, {encoder.dim})"
                )
            out[items] = vec
            ok[items] = True
        if advance is not None:
            advance(len(items) + len(errors))
    return out, ok, reasons
