"""Precision at k.

P@k = (sum_{i<=k} rel_i) / k
"""

from __future__ import annotations

import numpy as np


def precision_at_k(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """``(nq,)`` P@k for ``rel (nq, k)``; k is the matrix width."""
    return rel.sum(axis=1) / rel.shape[1]
