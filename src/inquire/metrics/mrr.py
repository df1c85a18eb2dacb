"""Reciprocal rank.

    RR = 1 / (rank of the first relevant item in the top-k list), 0 if there is none.

MRR is the mean of RR over queries, reported as a fraction (not x100).
"""

from __future__ import annotations

import numpy as np


def reciprocal_rank(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """``(nq,)`` RR for ``rel (nq, k)``."""
    any_hit = rel.any(axis=1)
    first = np.argmax(rel > 0, axis=1) + 1
    return np.where(any_hit, 1.0 / first, 0.0)
