"""Benchmark data: query sets, relevance annotations, upstream artifacts and synthetic data."""

from __future__ import annotations

from inquire.data.download import extract, fetch, fetch_dataset
from inquire.data.qrels import Qrels, load_qrels
from inquire.data.queries import QUERY_COLUMNS, SPLITS, UNKNOWN_GROUP, load_queries, read_queries

__all__ = [
    "QUERY_COLUMNS",
    "SPLITS",
    "UNKNOWN_GROUP",
    "Qrels",
    "extract",
    "fetch",
    "fetch_dataset",
    "load_qrels",
    "load_queries",
    "read_queries",
]
