"""The one input every metric reads: a relevance matrix over ranked lists.

``rel`` is ``(nq, k)`` float64 of 0/1: ``rel[q, i] = 1`` when the item at rank ``i + 1`` of
query ``q`` is relevant. Lists shorter than ``k`` are padded with 0 (a missing item is a
non-relevant one, so P@k still divides by k). ``n_rel`` is ``(nq,)`` int64: R, the number of
relevant items in the whole collection (not only in the list).
"""

from __future__ import annotations

import numpy as np

from inquire.errors import InputError


def check(rel: np.ndarray, n_rel: np.ndarray, query_ids: np.ndarray | None = None) -> None:
    """Refuse non-binary labels, R = 0 and R smaller than the hits in a list, naming the query."""
    if rel.ndim != 2 or n_rel.shape != (rel.shape[0],):
        raise InputError(f"relevance matrix {rel.shape} and R {n_rel.shape} do not match")
    qids = query_ids if query_ids is not None else np.arange(rel.shape[0])
    bad = np.flatnonzero(((rel != 0) & (rel != 1)).any(axis=1))
    if len(bad):
        raise InputError(
            f"query {int(qids[bad[0]])}: relevance values must be 0 or 1 (binary labels), "
            f"got {sorted(set(rel[bad[0]].tolist()) - {0.0, 1.0})[:3]}"
        )
    zero = np.flatnonzero(n_rel <= 0)
    if len(zero):
        raise InputError(
            f"query {int(qids[zero[0]])} has R = 0 relevant items; metrics are undefined. "
            f"Remove it from the query set or supply its annotations"
        )
    hits = rel.sum(axis=1)
    over = np.flatnonzero(hits > n_rel)
    if len(over):
        i = over[0]
        raise InputError(
            f"query {int(qids[i])} has {int(hits[i])} relevant items in its list but R = "
            f"{int(n_rel[i])}; the annotations do not match the run"
        )


def relevance_matrix(
    ranked_ids: list[np.ndarray], relevant: list[frozenset[int]], k: int
) -> np.ndarray:
    """Build ``rel (nq, k)`` from each query's ranked ids (truncated to k) and relevant set."""
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    rel = np.zeros((len(ranked_ids), k), dtype=np.float64)
    for row, (ids, good) in enumerate(zip(ranked_ids, relevant, strict=True)):
        top = np.asarray(ids[:k], dtype=np.int64)
        if len(top) and good:
            rel[row, : len(top)] = np.isin(top, np.fromiter(good, np.int64, len(good)))
    return rel
