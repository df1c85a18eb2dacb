"""Normalised discounted cumulative gain at k (binary gains).

DCG@k  = sum_{i<=k} rel_i / log2(i + 1)
IDCG@k = sum_{i<=min(R, k)} 1 / log2(i + 1)
nDCG@k = DCG@k / IDCG@k
"""

from __future__ import annotations

import numpy as np


def ndcg_at_k(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """``(nq,)`` nDCG@k for ``rel (nq, k)`` and ``n_rel (nq,)``."""
    k = rel.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = rel @ discount
    ideal_cum = np.cumsum(discount)
    idcg = ideal_cum[np.minimum(n_rel, k) - 1]
    return dcg / idcg
