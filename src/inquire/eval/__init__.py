"""Evaluate runs against relevance judgments; per-query results and aggregates."""

from __future__ import annotations

from inquire.eval.evaluate import GROUP_COLUMNS, EvalResult, evaluate

__all__ = ["GROUP_COLUMNS", "EvalResult", "evaluate"]
