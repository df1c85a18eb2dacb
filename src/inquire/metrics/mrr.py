"""Reciprocal rank, independent of the order of tied items.

Without ties:

    RR = 1 / (rank of the first relevant item in the top-k list), 0 if there is none.

With ties, RR is its expected value over the orders of the tie group G that holds the first
relevant item (starting at rank s, g items, m relevant, c of its places inside the top k):

    RR = sum_{j=1..c} P(J = j) / (s + j - 1),
    P(J = j) = [prod_{t=0..j-2} (g - m - t) / (g - t)] * m / (g - j + 1)

J being the place inside the group of its first relevant item. INQUIRE orders ties with an
unstable ``argsort``, which is not reproducible; this rule gives the same value in any order.
A group straddling the cut-off counts its relevant items after rank k in m (they may land
inside), and orders that push every relevant item past rank k add 0.

MRR is the mean of RR over queries, reported as a fraction (not x100).
"""

from __future__ import annotations

import numpy as np

from inquire.metrics._ties import Ties, group_stats


def reciprocal_rank(rel: np.ndarray, n_rel: np.ndarray, ties: Ties | None = None) -> np.ndarray:
    """``(nq,)`` RR for ``rel (nq, k)`` and optional tie groups."""
    if ties is None:
        any_hit = rel.any(axis=1)
        first = np.argmax(rel > 0, axis=1) + 1
        return np.where(any_hit, 1.0 / first, 0.0)
    st = group_stats(rel, ties)
    g, m = st.size, st.n_rel
    # The first group with a relevant item is the one with m > 0 and none before it.
    target = (m > 0) & (st.before == 0)
    rank = np.arange(1, rel.shape[1] + 1, dtype=np.float64)[None, :]
    t = rank - st.start  # j - 1
    step = np.where(target, np.clip(g - m - t, 0.0, None) / np.maximum(g - t, 1.0), 1.0)
    survive = np.ones_like(step)
    survive[:, 1:] = np.cumprod(step, axis=1)[:, :-1]
    p_first = np.where(target, survive * m / np.maximum(g - t, 1.0), 0.0)
    return (p_first / rank).sum(axis=1)
