"""Exact and approximate nearest-neighbour search over embedding stores."""

from __future__ import annotations

from inquire.index.exact import search

__all__ = ["search"]
