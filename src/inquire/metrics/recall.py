"""Recall at k.

R@k = (sum_{i<=k} rel_i) / R,   R = relevant items in the whole collection
"""

from __future__ import annotations

import numpy as np


def recall_at_k(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """``(nq,)`` R@k for ``rel (nq, k)`` and ``n_rel (nq,)``."""
    return rel.sum(axis=1) / n_rel
