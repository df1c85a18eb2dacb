"""Rescoring reads each distinct row once: the same exact scores as pair by pair."""

from __future__ import annotations

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.index import rescore
from inquire.index.kernels import Kernels
from inquire.index.score import exact_score, exact_scores
from inquire.testing.search_stores import random_unit, write_store


def test_exact_scores_with_shared_rows_equal_pair_by_pair():
    rng = np.random.default_rng(0)
    q = random_unit(5, 33, seed=1)
    x = random_unit(40, 33, seed=2).astype(np.float16).astype(np.float32)
    qr = np.sort(rng.integers(0, 5, 300))
    index = rng.integers(0, 40, 300)
    got = exact_scores(q, qr, x, index=index)
    want = np.array([exact_score(q[r], x[j]) for r, j in zip(qr, index, strict=True)])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_rescore_across_shards_and_batches(tmp_path, monkeypatch):
    # Tiny batches: distinct rows cross batch and shard boundaries; rows repeat across queries.
    monkeypatch.setattr(rescore, "_RESCORE_ELEMENTS", 7 * 16)
    x = random_unit(500, 16, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [120, 1, 379]))
    q = random_unit(6, 16, seed=4)
    rng = np.random.default_rng(5)
    qr = np.sort(rng.integers(0, 6, 900))
    rows = rng.integers(0, 500, 900)
    got = rescore.rescore(store, q, qr, rows, Kernels())
    x16 = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    want = np.array([exact_score(q[r], x16[j]) for r, j in zip(qr, rows, strict=True)])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert len(rescore.rescore(store, q, qr[:0], rows[:0], Kernels())) == 0
