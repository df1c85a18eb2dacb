"""The one input every metric reads: a relevance matrix over ranked lists, and its ties.

``rel`` is ``(nq, k)`` float64 of 0/1: ``rel[q, i] = 1`` when the item at rank ``i + 1`` of
query ``q`` is relevant. Lists shorter than ``k`` are padded with 0 (a missing item is a
non-relevant one, so P@k still divides by k). ``n_rel`` is ``(nq,)`` int64: R, the number of
relevant items in the whole collection (not only in the list). ``ties``
(:class:`~inquire.metrics._ties.Ties`) says which places share a score; every metric reads
a group of tied items as a whole, never in its list order.
"""

from __future__ import annotations

import numpy as np

from inquire.errors import InputError
from inquire.metrics._ties import Ties


def check(
    rel: np.ndarray,
    n_rel: np.ndarray,
    query_ids: np.ndarray | None = None,
    ties: Ties | None = None,
) -> None:
    """Refuse non-binary labels, R = 0 and R smaller than the hits in a list, naming the query.

    Relevant items tied with rank k but ranked after it (``ties.tail_rel``) count as hits.
    """
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
    if ties is not None:
        ties.check(rel)
        hits = hits + ties.tail_rel
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
    """Build ``rel (nq, k)`` from each query's ranked ids (truncated to k) and relevant set.

    The lists are read in the given order and carry no scores, so nothing is tied; lists with
    scores go through :func:`relevance_with_ties`.
    """
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    rel = np.zeros((len(ranked_ids), k), dtype=np.float64)
    for row, (ids, good) in enumerate(zip(ranked_ids, relevant, strict=True)):
        top = np.asarray(ids[:k], dtype=np.int64)
        if len(top) and good:
            rel[row, : len(top)] = np.isin(top, np.fromiter(good, np.int64, len(good)))
    return rel


def relevance_with_ties(
    ranked_ids: list[np.ndarray],
    scores: list[np.ndarray],
    relevant: list[frozenset[int]],
    k: int,
    query_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, Ties]:
    """``(rel (nq, k), ties)`` from each query's ids, scores ``(n,)`` and relevant set.

    Each list is put in ranking order first (score descending, ties in input order, as
    :class:`~inquire.run.Run` stores it), truncated to k, and items with equal scores form
    tie groups; the items after rank k tied with rank k are counted in ``ties.tail_*``. The
    order of tied items in ``rel`` is kept for display, and no metric depends on it.
    """
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    nq = len(ranked_ids)
    if len(scores) != nq or len(relevant) != nq:
        raise InputError(
            f"{nq} ranked lists but {len(scores)} score lists and {len(relevant)} relevant sets"
        )
    qids = query_ids if query_ids is not None else np.arange(nq)
    rel = np.zeros((nq, k), dtype=np.float64)
    top_scores = np.full((nq, k), np.nan, dtype=np.float64)
    tail_size = np.zeros(nq, dtype=np.int64)
    tail_rel = np.zeros(nq, dtype=np.int64)
    for row, (ids, sc, good) in enumerate(zip(ranked_ids, scores, relevant, strict=True)):
        ids = np.asarray(ids, dtype=np.int64)
        sc = np.asarray(sc, dtype=np.float64)
        if ids.shape != sc.shape or ids.ndim != 1:
            raise InputError(
                f"query {int(qids[row])}: image ids {ids.shape} and scores {sc.shape} must be "
                f"1-d arrays of the same length"
            )
        if np.isnan(sc).any():
            raise InputError(
                f"query {int(qids[row])}: scores contain NaN at position "
                f"{int(np.flatnonzero(np.isnan(sc))[0])}; every ranked item needs a real score"
            )
        order = np.argsort(-sc, kind="stable")
        ids, sc = ids[order], sc[order]
        is_rel = (
            np.isin(ids, np.fromiter(good, np.int64, len(good)))
            if len(good)
            else np.zeros(len(ids), dtype=bool)
        )
        n = min(len(ids), k)
        rel[row, :n] = is_rel[:n]
        top_scores[row, :n] = sc[:n]
        if len(ids) > k:
            # The tail is contiguous: the list is sorted, so equal scores are adjacent.
            tied = sc[k:] == sc[k - 1]
            n_tail = int(np.argmin(tied)) if not tied.all() else len(tied)
            tail_size[row] = n_tail
            tail_rel[row] = int(is_rel[k : k + n_tail].sum())
    return rel, Ties.from_scores(top_scores, tail_size, tail_rel)
