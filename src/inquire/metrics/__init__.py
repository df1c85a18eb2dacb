"""Retrieval metrics exactly as INQUIRE defines them, vectorised over queries.

Every metric takes ``rel (nq, k)`` 0/1 float64 (see :mod:`inquire.metrics._matrix`),
``n_rel (nq,)`` int64 (R per query) and optional tie groups ``ties``
(:class:`~inquire.metrics.Ties`, built from the scores by :func:`relevance_with_ties`) and
returns ``(nq,)`` float64 fractions in [0, 1]. With ties, every metric except ``trec_ap``
gives the same value whatever the order of tied items (see each metric's module for its rule).

Table scaling (as INQUIRE reports): AP, nDCG, precision and recall x100; MRR as a fraction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from inquire.errors import UnknownNameError
from inquire.metrics._matrix import check, relevance_matrix, relevance_with_ties
from inquire.metrics._ties import Ties, expected_relevance
from inquire.metrics.ap import ap_at_k, trec_ap_at_k
from inquire.metrics.mrr import reciprocal_rank
from inquire.metrics.ndcg import ndcg_at_k
from inquire.metrics.precision import precision_at_k
from inquire.metrics.recall import recall_at_k

MetricFn = Callable[[np.ndarray, np.ndarray, Ties | None], np.ndarray]

# name -> (function, scale for tables). The first five are INQUIRE's; trec_ap is trec_eval's.
METRICS: dict[str, tuple[MetricFn, float]] = {
    "ap": (ap_at_k, 100.0),
    "ndcg": (ndcg_at_k, 100.0),
    "mrr": (reciprocal_rank, 1.0),
    "precision": (precision_at_k, 100.0),
    "recall": (recall_at_k, 100.0),
    "trec_ap": (trec_ap_at_k, 100.0),
}
DEFAULT_METRICS = ("ap", "ndcg", "mrr", "precision", "recall")
# How tables, plots and the web page name each metric; MRR carries no cut-off.
METRIC_LABELS: dict[str, str] = {
    "ap": "AP",
    "ndcg": "nDCG",
    "mrr": "MRR",
    "precision": "P",
    "recall": "R",
}


def compute_metrics(
    rel: np.ndarray,
    n_rel: np.ndarray,
    metrics: Sequence[str] = DEFAULT_METRICS,
    query_ids: np.ndarray | None = None,
    ties: Ties | None = None,
) -> dict[str, np.ndarray]:
    """Per-query values of ``metrics`` as fractions: ``{name: (nq,) float64}``.

    ``rel (nq, k)`` 0/1, ``n_rel (nq,)`` R per query, ``query_ids (nq,)`` only name queries
    in errors; ``ties`` (from :func:`relevance_with_ties`) makes every metric but ``trec_ap``
    independent of the order of tied items. Without it, each place is its own score.
    """
    rel = np.asarray(rel, dtype=np.float64)
    n_rel = np.asarray(n_rel, dtype=np.int64)
    for name in metrics:
        if name not in METRICS:
            raise UnknownNameError("metric", name, METRICS)
    check(rel, n_rel, query_ids, ties)
    return {name: METRICS[name][0](rel, n_rel, ties) for name in metrics}


def metric_label(metric: str, k: int | str) -> str:
    """The header of ``metric`` at cut-off ``k``: ``AP@50``, ``nDCG@50``, ``MRR``."""
    label = METRIC_LABELS.get(metric, metric)
    return label if metric == "mrr" else f"{label}@{k}"


def scale(metric: str) -> float:
    """The factor a table multiplies ``metric`` by (100 or 1)."""
    if metric not in METRICS:
        raise UnknownNameError("metric", metric, METRICS)
    return METRICS[metric][1]


__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "METRIC_LABELS",
    "Ties",
    "ap_at_k",
    "compute_metrics",
    "expected_relevance",
    "metric_label",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "relevance_matrix",
    "relevance_with_ties",
    "scale",
    "trec_ap_at_k",
]
