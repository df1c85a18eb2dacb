"""The one search contract: ``searcher.search(queries, k, mask=None) -> (scores, ids)``.

Every way of searching embeddings in ``inquire`` implements :class:`Searcher`:

- :class:`inquire.index.exact.ExactIndex`: exact, streamed over an embedding store (optional
  bfloat16 screening, the same result);
- :class:`inquire.index.ann.AnnIndex`: a faiss index (approximate unless it is ``Flat``);
- :class:`inquire.collection.search.CollectionSearcher`: a photo collection's filtered search
  (its validity mask and the filters inside the ranking; faiss or exact behind it).

Arguments: ``queries (nq, d) float32`` (L2-normalised for cosine similarity), ``k >= 1``,
``mask (N,) bool`` (store rows that may be returned; None: all). Results: ``scores (nq, k)
float32`` descending and ``ids (nq, k) int64`` image ids, equal scores by id ascending (the
rule of :mod:`inquire.index.topk`). A query with fewer than ``k`` matches (``k > N``, a
narrow mask, too few rows in the probed lists of an IVF index) is padded after its matches
with id ``-1`` and score ``-inf``: callers keep ``ids >= 0``, and ``Run.from_arrays`` drops
padding itself.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from inquire.errors import InputError
from inquire.index.topk import PAD_ID, check_k

__all__ = ["PAD_ID", "Searcher", "check_k", "check_mask"]


@runtime_checkable
class Searcher(Protocol):
    """Anything that answers ``search(queries, k, mask=None) -> (scores, ids)``."""

    def search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``scores (nq, k) float32`` descending, ``ids (nq, k) int64`` (padding: -1, -inf)."""
        ...


def check_mask(mask: object, n: int) -> np.ndarray | None:
    """``mask`` as an ``(n,) bool`` array (None stays None), or :class:`InputError`."""
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n,):
        got = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
        hint = "; search parameters such as nprobe go in params=" if isinstance(mask, dict) else ""
        raise InputError(
            f"mask must be a ({n},) bool array (one flag per store row), got {got}{hint}"
        )
    return mask
