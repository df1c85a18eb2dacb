"""Precision at k.

    P@k = (sum_{i<=k} rel_i) / k

Ties only matter for a group that straddles the cut-off: then P@k is averaged over the orders
of that group, which counts ``c * m / g`` hits for it (``c`` of its ``g`` items inside the top
k, ``m`` relevant): ``P@k = (hits before the group + c m / g) / k``.
"""

from __future__ import annotations

import numpy as np

from inquire.metrics._ties import Ties, expected_hits


def precision_at_k(rel: np.ndarray, n_rel: np.ndarray, ties: Ties | None = None) -> np.ndarray:
    """``(nq,)`` P@k for ``rel (nq, k)``; k is the matrix width."""
    return expected_hits(rel, ties) / rel.shape[1]
