"""Rescoring by query, in pieces and threads: the same exact scores as pair by pair."""

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
    # Tiny pieces: a query's rows cross piece and shard boundaries; rows repeat across
    # queries; pages are dropped every few rows; more threads than queries with pairs.
    monkeypatch.setattr(rescore, "_PIECE_ELEMENTS", 7 * 16)
    monkeypatch.setattr(rescore, "_DROP_ROWS", 5)
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


def test_split_cuts_only_between_queries():
    qr = np.array([0, 0, 0, 0, 0, 1, 2, 2, 5, 5, 5, 5])
    for parts in range(1, 15):
        ranges = rescore._split(qr, parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(qr)
        assert all(b > a for a, b in ranges) and len(ranges) <= parts
        for (_, b), (a2, _) in itertools.pairwise(ranges):
            assert b == a2 and qr[b - 1] != qr[b]
