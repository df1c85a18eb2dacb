"""Evaluate runs against relevance judgments; per-query results and aggregates.

``evaluate(run, qrels, queries)`` scores any run; :func:`run_two_stage` reranks a first-stage
run over an embedding folder and evaluates it (``inquire eval fullrank --rerank``).
"""

from __future__ import annotations

from inquire.eval.evaluate import GROUP_COLUMNS, EvalResult, evaluate
from inquire.eval.two_stage import TwoStageResult, run_two_stage

__all__ = ["GROUP_COLUMNS", "EvalResult", "TwoStageResult", "evaluate", "run_two_stage"]
