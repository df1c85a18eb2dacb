"""Normalised discounted cumulative gain at k (binary gains), ties as scikit-learn has them.

Without ties:

    DCG@k  = sum_{i<=k} rel_i / log2(i + 1)
    IDCG@k = sum_{i<=min(R, k)} 1 / log2(i + 1)
    nDCG@k = DCG@k / IDCG@k

With ties (``sklearn.metrics.ndcg_score``, which INQUIRE uses with ``ignore_ties=False``),
each group of tied items adds the mean gain of the group times the sum of the discounts of the
places it occupies inside the top k:

    DCG@k = sum_G (m_G / g_G) * sum_{i in G, i<=k} 1 / log2(i + 1)

where a group straddling the cut-off counts all its g items (also those after rank k) in its
mean gain. This equals the DCG averaged over the orders of the tied items. INQUIRE pads the
list with the relevant items it missed, scored last, so the ideal DCG is over min(R, k) ones.
"""

from __future__ import annotations

import numpy as np

from inquire.metrics._ties import Ties, expected_relevance


def ndcg_at_k(rel: np.ndarray, n_rel: np.ndarray, ties: Ties | None = None) -> np.ndarray:
    """``(nq,)`` nDCG@k for ``rel (nq, k)``, ``n_rel (nq,)`` and optional tie groups."""
    k = rel.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    # The ideal list (min(R, k) ones, then zeros) is summed exactly like the real one, so a
    # perfect ranking scores exactly 1.0 rather than 1 - 1e-16.
    ideal = (np.arange(k)[None, :] < np.minimum(n_rel, k)[:, None]).astype(np.float64)
    dcg = (expected_relevance(rel, ties) * discount).sum(axis=1)
    idcg = (ideal * discount).sum(axis=1)
    return dcg / idcg
