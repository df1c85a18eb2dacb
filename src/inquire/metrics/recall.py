"""Recall at k.

    R@k = (sum_{i<=k} rel_i) / R,   R = relevant items in the whole collection

A tie group straddling the cut-off counts ``c * m / g`` hits (its expected hits over the
orders of the group; see :mod:`inquire.metrics.precision`).
"""

from __future__ import annotations

import numpy as np

from inquire.metrics._ties import Ties, expected_hits


def recall_at_k(rel: np.ndarray, n_rel: np.ndarray, ties: Ties | None = None) -> np.ndarray:
    """``(nq,)`` R@k for ``rel (nq, k)`` and ``n_rel (nq,)``."""
    return expected_hits(rel, ties) / n_rel
