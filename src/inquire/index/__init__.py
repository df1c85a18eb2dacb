"""Exact and approximate nearest-neighbour search over embedding stores.

``inquire.index.exact.search`` is exact (streamed, memory-bounded); ``inquire.index.ann``
holds faiss indexes (imported lazily: faiss loads only when an index is built or opened).
"""

from __future__ import annotations

from inquire.index.exact import search

__all__ = ["search"]
