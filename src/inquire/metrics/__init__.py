"""Retrieval metrics exactly as INQUIRE defines them, vectorised over queries.

Every metric takes ``rel (nq, k)`` 0/1 float64 (see :mod:`inquire.metrics._matrix`),
``n_rel (nq,)`` int64 (R per query) and optional tie groups ``ties``
(:class:`~inquire.metrics.Ties`, built from the scores by :func:`relevance_with_ties`) and
returns ``(nq,)`` float64 fractions in [0, 1]. With ties, every metric except ``trec_ap``
gives the same value whatever the order of tied items (see each metric's module for its rule).

Table scaling (as INQUIRE reports): AP, nDCG, precision and recall x100; MRR as a fraction.
Each metric is one :class:`Metric` entry of :data:`METRICS`; every consumer (evaluation,
reports, plots, the CLI, the web page) reads names, labels and scales from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from inquire.errors import InputError, UnknownNameError
from inquire.metrics._matrix import check, relevance_matrix, relevance_with_ties
from inquire.metrics._ties import Ties, expected_hits, expected_relevance
from inquire.metrics.ap import ap_at_k, trec_ap_at_k
from inquire.metrics.mrr import reciprocal_rank
from inquire.metrics.ndcg import ndcg_at_k
from inquire.metrics.precision import precision_at_k
from inquire.metrics.recall import recall_at_k

MetricFn = Callable[[np.ndarray, np.ndarray, Ties | None], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """One metric and everything its consumers read: the single place a metric is declared.

    ``name`` keys it everywhere (``per_query.csv`` and ``summary.json`` columns,
    ``--metrics``, report tables); ``fn(rel (nq, k), n_rel (nq,), ties) -> (nq,)`` float64
    fractions in [0, 1]; ``label`` heads table columns (``AP`` -> ``AP@50``, or just ``MRR``
    when ``at_k`` is false); ``scale`` is the factor tables multiply the fraction by (100:
    shown with one decimal; 1: a fraction with three); ``default``: computed when no
    ``metrics`` are asked for. Higher is better for every metric.
    """

    name: str
    fn: MetricFn
    label: str
    scale: float = 100.0
    at_k: bool = True
    default: bool = True
    description: str = ""

    def header(self, k: int | str) -> str:
        """The column header at cut-off ``k``: ``AP@50``, ``nDCG@50``, ``MRR``."""
        return f"{self.label}@{k}" if self.at_k else self.label

    def display(self, value: float | None) -> str:
        """``value`` already on the table scale as tables print it: ``-`` for missing/NaN,
        3 decimals for fractions (scale 1), else 1 decimal."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.3f}" if self.scale == 1.0 else f"{value:.1f}"


# The registry. The first five are INQUIRE's (in its table order); trec_ap is trec_eval's
# map@k (divides by R), on request only. Adding a metric: a module with its function (formula
# in the docstring) and one entry here; evaluate, reports, plots, the CLI and the web page
# read everything else from it (docs/architecture.md, "Add a metric").
METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric, replace: bool = False) -> Metric:
    """Add ``metric`` to :data:`METRICS` (at run time, e.g. from a plug-in); return it.

    An existing name is an error unless ``replace``. A metric registered here with
    ``default=True`` is not added to :data:`DEFAULT_METRICS` (fixed at import): ask for it
    by name (``evaluate(..., metrics=[..., name])``).
    """
    if not metric.name.isidentifier():
        raise InputError(
            f"metric name {metric.name!r} must be an identifier (it names CSV and JSON "
            f"columns and `name_lo` / `name_hi` interval columns)"
        )
    if metric.name in METRICS and not replace:
        raise InputError(f"metric {metric.name!r} is already registered; pass replace=True")
    METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> Metric:
    """Remove the metric ``name`` from :data:`METRICS`; return it."""
    return METRICS.pop(get_metric(name).name)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; :class:`UnknownNameError` (with close matches) else."""
    if name not in METRICS:
        raise UnknownNameError("metric", name, METRICS)
    return METRICS[name]


for _m in (
    Metric("ap", ap_at_k, "AP", description="INQUIRE's AP@k (divides by min(R, k))"),
    Metric("ndcg", ndcg_at_k, "nDCG", description="nDCG@k, binary gains, log2 discounts"),
    Metric("mrr", reciprocal_rank, "MRR", scale=1.0, at_k=False, description="reciprocal rank"),
    Metric("precision", precision_at_k, "P", description="P@k"),
    Metric("recall", recall_at_k, "R", description="R@k"),
    Metric(
        "trec_ap",
        trec_ap_at_k,
        "trec_ap",
        default=False,
        description="trec_eval's map@k (divides by R; depends on the order of ties)",
    ),
):
    register_metric(_m)

DEFAULT_METRICS = tuple(m.name for m in METRICS.values() if m.default)


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
    chosen = [get_metric(name) for name in metrics]
    check(rel, n_rel, query_ids, ties)
    return {m.name: m.fn(rel, n_rel, ties) for m in chosen}


def metric_label(metric: str, k: int | str) -> str:
    """The header of ``metric`` at cut-off ``k``: ``AP@50``, ``nDCG@50``, ``MRR``.

    A name that is not registered (a column of an old result folder) reads ``name@k``."""
    m = METRICS.get(metric)
    return m.header(k) if m is not None else f"{metric}@{k}"


def scale(metric: str) -> float:
    """The factor a table multiplies ``metric`` by (100 or 1)."""
    return get_metric(metric).scale


def format_value(metric: str, value: float | None) -> str:
    """``value`` of ``metric``, already on the table scale, as tables print it."""
    return get_metric(metric).display(value)


def format_fraction(metric: str, value: float | None) -> str:
    """``value`` of ``metric`` as a fraction (as stored), printed on the table scale."""
    m = get_metric(metric)
    return m.display(None if value is None else value * m.scale)


def scale_note(metrics: Sequence[str]) -> str:
    """How a table of ``metrics`` is scaled, in words: ``AP, nDCG, P and R x100; MRR as a
    fraction``."""
    chosen = [get_metric(n) for n in metrics]

    def words(labels: list[str]) -> str:
        return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"

    by_scale: dict[float, list[str]] = {}
    for m in chosen:
        by_scale.setdefault(m.scale, []).append(m.label)
    parts = [f"{words(labels)} x{s:g}" for s, labels in by_scale.items() if s != 1.0]
    if 1.0 in by_scale:
        plain = by_scale[1.0]
        parts.append(f"{words(plain)} as {'a fraction' if len(plain) == 1 else 'fractions'}")
    return "; ".join(parts)


__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "Metric",
    "MetricFn",
    "Ties",
    "ap_at_k",
    "compute_metrics",
    "expected_hits",
    "expected_relevance",
    "format_fraction",
    "format_value",
    "get_metric",
    "metric_label",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "register_metric",
    "relevance_matrix",
    "relevance_with_ties",
    "scale",
    "scale_note",
    "trec_ap_at_k",
    "unregister_metric",
]
