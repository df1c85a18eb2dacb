"""Average precision at k, with INQUIRE's normalisation.

    AP@k = (1 / min(R, k)) * sum_{i<=k, rel_i=1} P@i

INQUIRE divides by min(R, k) rather than by R (trec_eval / ranx ``map@k``) or by the hits in
the list (scikit-learn). Dividing by R would cap AP@50 far below 1 for a query with 1,000
relevant images even when all 50 results are right; dividing by the hits would give a list
with one relevant item at rank 1 a perfect score. min(R, k) makes AP@k = 1 exactly when the
top min(R, k) are all relevant. The trec_eval definition is :func:`trec_ap_at_k`.
"""

from __future__ import annotations

import numpy as np


def _precision_sum(rel: np.ndarray) -> np.ndarray:
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    prec_at_i = np.cumsum(rel, axis=1) / ranks
    return (prec_at_i * rel).sum(axis=1)


def ap_at_k(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """``(nq,)`` INQUIRE AP@k for ``rel (nq, k)`` and ``n_rel (nq,)``."""
    return _precision_sum(rel) / np.minimum(n_rel, rel.shape[1])


def trec_ap_at_k(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """``(nq,)`` trec_eval / ranx ``map@k``: the same sum divided by R."""
    return _precision_sum(rel) / n_rel
