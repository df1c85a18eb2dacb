"""Exact top-k inner-product search over an :class:`~inquire.embed.EmbeddingStore`.

Streams the store block by block; never sorts all N scores and never holds a float32 copy of
the whole store. Ties are broken by image id ascending. Queries beyond the store size: rows
are padded with id -1 and score -inf when k > N.
"""

from __future__ import annotations

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError

DEFAULT_BLOCK_ROWS = 65536


def _topk_rows(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row of ``scores (nq, m)`` with ids ``(nq, m)``: score desc, id asc."""
    m = scores.shape[1]
    if m > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, part, 1).min(axis=1, keepdims=True)
        # Items tied with the k-th score may be cut arbitrarily by argpartition: take all of
        # them, then order and cut so ties resolve by id.
        cand = scores >= kth
        out_s = np.full((scores.shape[0], k), -np.inf, np.float32)
        out_i = np.full((scores.shape[0], k), -1, np.int64)
        for r in range(scores.shape[0]):
            c = np.flatnonzero(cand[r])
            order = np.lexsort((ids[r, c], -scores[r, c]))[:k]
            out_s[r, : len(order)] = scores[r, c[order]]
            out_i[r, : len(order)] = ids[r, c[order]]
        return out_s, out_i
    order = np.lexsort((ids, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def search(
    store: EmbeddingStore,
    queries: np.ndarray,
    k: int,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows of ``store`` by inner product with each query.

    ``queries``: ``(nq, d) float32`` (L2-normalised for cosine similarity).
    Returns ``scores (nq, k) float32`` descending and ``ids (nq, k) int64`` image ids.
    """
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != store.dim:
        raise InputError(
            f"queries have shape {q.shape} but the store at {str(store.root)!r} holds "
            f"{store.dim}-d embeddings; embed the queries with the model that made the store"
        )
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    nq = q.shape[0]
    all_ids = store.ids
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_i = np.full((nq, 0), -1, np.int64)
    for start, block in store.iter_blocks(block_rows):
        s = np.asarray(block, dtype=np.float32) @ q.T  # (b, nq)
        ids = np.broadcast_to(all_ids[start : start + len(block)], (nq, len(block)))
        cs = np.concatenate([best_s, s.T], axis=1)
        ci = np.concatenate([best_i, ids], axis=1)
        best_s, best_i = _topk_rows(cs, ci, k)
    if best_s.shape[1] < k:
        pad = k - best_s.shape[1]
        best_s = np.concatenate([best_s, np.full((nq, pad), -np.inf, np.float32)], axis=1)
        best_i = np.concatenate([best_i, np.full((nq, pad), -1, np.int64)], axis=1)
    return best_s, best_i
