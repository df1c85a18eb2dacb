"""Evaluate runs against relevance judgments; per-query results and aggregates.

``evaluate(run, qrels, queries)`` scores any run against a query table (the public
``inquire.evaluate(qrels, run)`` takes its queries from the judgments); :func:`run_fullrank`
runs INQUIRE-Fullrank and, with a reranker, two-stage reranking (``inquire eval fullrank``);
:func:`run_two_stage` reranks a first-stage run over an embedding folder and evaluates it.
"""

from __future__ import annotations

from inquire.eval.evaluate import GROUP_COLUMNS, EvalResult, evaluate
from inquire.eval.two_stage import FullrankResult, TwoStageResult, run_fullrank, run_two_stage

__all__ = [
    "GROUP_COLUMNS",
    "EvalResult",
    "FullrankResult",
    "TwoStageResult",
    "evaluate",
    "run_fullrank",
    "run_two_stage",
]
