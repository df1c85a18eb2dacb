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
    # The ideal list (min(R, k) ones, then zeros) is summed exactly like the real one, so a
    # perfect ranking scores exactly 1.0 rather than 1 - 1e-16.
    ideal = (np.arange(k)[None, :] < np.minimum(n_rel, k)[:, None]).astype(np.float64)
    dcg = (rel * discount).sum(axis=1)
    idcg = (ideal * discount).sum(axis=1)
    return dcg / idcg
