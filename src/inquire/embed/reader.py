"""The reader stage of the embedding pipeline: image items -> decoded, preprocessed batches.

:func:`decode_batches` reads, decodes and preprocesses the items of an
:class:`~inquire.embed.sources.ImageSource` in torch DataLoader worker processes (or in this
process), batch by batch; :func:`decode_item` is the work done on one item. ``inquire embed``
(local and Ray engines) and collections read images through it, so every path uses the same
opening rules (:func:`~inquire.embed.images.open_image`) and the same failure reasons.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from inquire.embed.images import open_image
from inquire.embed.sources import ImageSource


def decode_item(source: ImageSource, preprocess: Any, i: int) -> tuple[Any, str]:
    """``(tensor (3, H, W) float32, "")`` for item ``i``, or ``(None, reason)`` if it fails."""
    try:
        data = source.read(i)
    except OSError as exc:
        return None, f"unreadable: {exc}"
    if not data:
        return None, "empty file (0 bytes)"
    from PIL import UnidentifiedImageError

    try:
        image = open_image(data)
    except UnidentifiedImageError:
        return None, "not an image: no image format recognised in the bytes"
    except Exception as exc:  # Pillow raises many types for bad data
        return None, f"not a decodable image: {type(exc).__name__}: {exc}"
    try:
        return preprocess(image), ""
    except Exception as exc:
        return None, f"preprocessing failed: {type(exc).__name__}: {exc}"


def _keep_image(image: Any) -> Any:
    """The identity ``preprocess``: hand the decoded RGB PIL image on as it is."""
    return image


class _DecodeDataset:
    """Map-style dataset: item index -> (index, pixels or None, failure reason)."""

    def __init__(self, source: ImageSource, preprocess: Any) -> None:
        self.source, self.preprocess = source, preprocess

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, Any, str]:
        pixels, reason = decode_item(self.source, self.preprocess, i)
        return i, pixels, reason


DecodedBatch = tuple[np.ndarray, Any, list[tuple[int, str]]]


def _collate(batch: list[tuple[int, Any, str]], stack: bool = True) -> DecodedBatch:
    ok = [(i, px) for i, px, _ in batch if px is not None]
    items = np.array([i for i, _ in ok], dtype=np.int64)
    pixels: Any = None
    if ok and stack:
        import torch

        pixels = torch.stack([px for _, px in ok])
    elif ok:
        pixels = [px for _, px in ok]
    return items, pixels, [(i, r) for i, px, r in batch if px is None]


def decode_batches(
    source: ImageSource,
    batches: Sequence[Sequence[int]],
    preprocess: Any = None,
    workers: int = 2,
    stack: bool = True,
) -> Iterator[DecodedBatch]:
    """Read, decode and preprocess the items of ``source`` in parallel, batch by batch.

    ``batches``: lists of item indices, yielded in this order. Each item is opened with
    :func:`~inquire.embed.images.open_image` (EXIF orientation, 16-bit, alpha, CMYK handled)
    and passed through ``preprocess`` (None: keep the RGB PIL image). ``workers``: torch
    DataLoader worker processes (0 decodes in this process, without torch when
    ``stack=False``).

    Yields ``(items (b,) int64, pixels, errors)`` per batch: ``items`` the indices that
    decoded, ``pixels`` a ``(b, 3, H, W)`` tensor when ``stack`` (else a list of ``b``
    preprocessed images; None when ``b == 0``), ``errors`` ``[(item, reason), ...]`` for the
    items that could not be decoded (a bad image never stops the run).
    """
    prep = preprocess if preprocess is not None else _keep_image
    collate = functools.partial(_collate, stack=stack)
    if workers == 0:
        # Same work as a DataLoader without workers, but needs torch only to stack.
        for batch in batches:
            yield collate([(i, *decode_item(source, prep, i)) for i in batch])
        return
    from torch.utils.data import DataLoader

    loader: Any = DataLoader(
        _DecodeDataset(source, prep),  # type: ignore[arg-type]
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        collate_fn=collate,
        prefetch_factor=4,
    )
    yield from loader
