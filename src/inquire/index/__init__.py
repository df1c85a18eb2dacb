"""Exact and approximate nearest-neighbour search over embedding stores.

One contract (:mod:`inquire.index.base`): ``searcher.search(queries (nq, d), k, mask=None)
-> (scores (nq, k) float32, ids (nq, k) int64)``, padded with ``-inf`` / ``-1``, ranked by
the rule of :mod:`inquire.index.topk` (score descending, id ascending). Searchers:
:class:`~inquire.index.exact.ExactIndex` (exact, streamed, memory-bounded; ``search(store,
...)`` is the same call as a function) and :class:`inquire.index.ann.AnnIndex` (faiss,
imported lazily: faiss loads only when an index is built or opened).
"""

from __future__ import annotations

from inquire.index.base import Searcher
from inquire.index.exact import ExactIndex, search
from inquire.index.topk import brute_force, topk

__all__ = ["ExactIndex", "Searcher", "brute_force", "search", "topk"]
