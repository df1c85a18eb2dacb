"""Average precision at k, with INQUIRE's normalisation and scikit-learn's handling of ties.

Without ties (every score distinct):

    AP@k = (1 / min(R, k)) * sum_{i<=k, rel_i=1} P@i

With ties, as INQUIRE gets it from ``sklearn.metrics.average_precision_score``: a group of
equal scores is one threshold, whatever the order of its items. Over the distinct score values
t of the top k, highest first,

    AP@k = (1 / min(R, k)) * sum_t n_t * P_t,
    n_t = relevant items scoring exactly t,
    P_t = (relevant items scoring >= t) / (items scoring >= t)

so labels ``[1, 0]`` with scores ``[0.5, 0.5]`` and R = 1 give AP 0.5 in either order.

A tie group that straddles the cut-off (items tied with rank k also sit after it) is averaged
over the orders of the group: with ``H`` relevant items before the group, ``c`` of its ``g``
items inside the top k and ``m`` of them relevant, the number X of relevant ones that land
inside is hypergeometric and the group adds ``E[X * (H + X)] / k`` =
``(H * E[X] + E[X^2]) / k`` with ``E[X] = c m / g`` and
``Var X = c (m / g) (1 - m / g) (g - c) / (g - 1)``. This is the expected value of INQUIRE's
rule (truncate the list at k, then score the truncated group as one threshold).

INQUIRE divides by min(R, k) rather than by R (trec_eval / ranx ``map@k``) or by the hits in
the list (scikit-learn). Dividing by R would cap AP@50 far below 1 for a query with 1,000
relevant images even when all 50 results are right; dividing by the hits would give a list
with one relevant item at rank 1 a perfect score. min(R, k) makes AP@k = 1 exactly when the
top min(R, k) are all relevant. The trec_eval definition is :func:`trec_ap_at_k`.
"""

from __future__ import annotations

import numpy as np

from inquire.metrics._ties import Ties, group_stats


def _precision_sum(rel: np.ndarray) -> np.ndarray:
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    prec_at_i = np.cumsum(rel, axis=1) / ranks
    return (prec_at_i * rel).sum(axis=1)


def _tied_precision_sum(rel: np.ndarray, ties: Ties) -> np.ndarray:
    st = group_stats(rel, ties)
    g, m, c = st.size, st.n_rel, st.inside
    mean_x = c * m / g
    frac = m / g
    var_x = np.where(g > 1, c * frac * (1 - frac) * (g - c) / np.maximum(g - 1, 1), 0.0)
    per_group = (st.before * mean_x + var_x + mean_x**2) / st.end
    first = np.arange(1, rel.shape[1] + 1)[None, :] == st.start
    return np.where(first, per_group, 0.0).sum(axis=1)


def ap_at_k(rel: np.ndarray, n_rel: np.ndarray, ties: Ties | None = None) -> np.ndarray:
    """``(nq,)`` INQUIRE AP@k for ``rel (nq, k)``, ``n_rel (nq,)`` and optional tie groups.

    ``ties=None`` reads every place as its own score (the plain formula).
    """
    total = _precision_sum(rel) if ties is None else _tied_precision_sum(rel, ties)
    return total / np.minimum(n_rel, rel.shape[1])


def trec_ap_at_k(rel: np.ndarray, n_rel: np.ndarray, ties: Ties | None = None) -> np.ndarray:
    """``(nq,)`` trec_eval / ranx ``map@k``: the plain precision sum divided by R.

    Ties are *not* handled: the list is read in its given order (as trec_eval reads a run
    whose ties it has already ordered); ``ties`` is accepted and ignored.
    """
    return _precision_sum(rel) / n_rel
