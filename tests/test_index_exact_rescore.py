"""Rescoring distinct rows once, in batches, pieces and threads: the same exact scores as
pair by pair."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

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


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("known_norm", [False, True])
def test_rescore_across_shards_pieces_and_threads(tmp_path, monkeypatch, threads, known_norm):
    # Tiny batches and pieces: a batch's rows cross shard boundaries, a query's rows in a
    # batch cross pieces; rows repeat across queries; more threads than batches at the end.
    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 37 * 16)
    monkeypatch.setattr(rescore, "_PIECE_ELEMENTS", 7 * 16)
    x = random_unit(500, 16, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [120, 1, 379]))
    q = random_unit(6, 16, seed=4)
    rng = np.random.default_rng(5)
    qr = np.sort(rng.integers(0, 6, 900))
    rows = rng.integers(0, 500, 900)
    norms = [np.linalg.norm(np.asarray(sh, np.float32), axis=1).max() for sh in store.shards]
    norm = float(max(norms)) * 1.01
    got = rescore.rescore(store, q, qr, rows, Kernels(), norm if known_norm else None, threads)
    x16 = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    want = np.array([exact_score(q[r], x16[j]) for r, j in zip(qr, rows, strict=True)])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert len(rescore.rescore(store, q, qr[:0], rows[:0], Kernels())) == 0


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_batches_cover_every_row_once_and_feed_every_thread(threads):
    for n_rows in (1, 2, 7, 100, 1001):
        for step in (1, 3, 64, 10_000):
            got = rescore._batches(n_rows, step, threads)
            assert got[0][0] == 0 and got[-1][1] == n_rows
            assert all(b > a and b - a <= step for a, b in got)
            assert all(b == a2 for (_, b), (a2, _) in itertools.pairwise(got))
            assert len(got) >= min(threads, n_rows)


def test_pairs_in_any_order_and_queries_without_pairs(tmp_path):
    x = random_unit(50, 8, seed=6)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [20, 30]))
    q = random_unit(9, 8, seed=7)
    qr = np.array([8, 0, 8, 3, 3, 0, 8])  # not sorted; queries 1, 2, 4-7 have no pairs
    rows = np.array([49, 0, 49, 19, 20, 49, 0])
    x16 = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    want = np.array([exact_score(q[r], x16[j]) for r, j in zip(qr, rows, strict=True)])
    for threads in (1, 4):
        got = rescore.rescore(store, q, qr, rows, Kernels(), None, threads)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
