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


F32_MAX = float(np.finfo(np.float32).max)


def _overflow_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows whose exact score for the query ``(1, 1, 1, 0)`` lies at the float32 overflow
    threshold ``2**128 - 2**103`` (halfway between the largest float32 and ``2**128``) or
    within a float64 rounding of it, and the scores they round to."""
    h = 2.0**103
    x = np.array(
        [
            [F32_MAX, h, -(2.0**-60), 0],  # just below: the largest float32
            [F32_MAX, h, 2.0**-60, 0],  # just above: inf
            [F32_MAX, h, 0, 0],  # exactly halfway: to even, inf
            [-F32_MAX, -h, 2.0**-60, 0],  # the same below zero
            [-F32_MAX, -h, -(2.0**-60), 0],
        ],
        np.float32,
    )
    want = np.array([F32_MAX, np.inf, np.inf, -F32_MAX, -np.inf], np.float32)
    return x, want


def test_exact_score_at_the_float32_overflow_threshold():
    # The float64 sum of the first row is the threshold itself, the exact sum a hair below:
    # the float32 it rounds to is the largest finite one, not inf.
    x, want = _overflow_rows()
    q = np.array([1, 1, 1, 0], np.float32)
    got = np.array([exact_score(q, row) for row in x])
    np.testing.assert_array_equal(got, want)
    qr = np.zeros(len(x), np.int64)
    for max_norm in (None, 1e39):
        np.testing.assert_array_equal(exact_scores(q[None], qr, x, max_norm), want)


def test_rescore_and_search_at_the_float32_overflow_threshold(tmp_path):
    from inquire.index.exact import search

    x, want = _overflow_rows()
    store = EmbeddingStore(write_store(tmp_path / "s", x, [2, 3], dtype=np.float32))
    q = np.array([[1, 1, 1, 0]], np.float32)
    qr = np.zeros(len(x), np.int64)
    rows = np.arange(len(x))
    for max_norm in (None, 1e39):
        got = rescore.rescore(store, q, qr, rows, Kernels(), max_norm)
        np.testing.assert_array_equal(got, want)
    s, i = search(store, q, 5, threads=1, screen="off")
    order = np.lexsort((np.arange(5), -want))
    np.testing.assert_array_equal(i[0], order)
    np.testing.assert_array_equal(s[0], want[order])


def test_rescore_of_zero_and_tiny_scores_is_exact_score_bit_for_bit(tmp_path):
    # A zero row for a query with negative entries: the float64 sum is 0 exactly, its
    # interval [-2**-1000, 2**-1000] rounds to -0.0 at one end and 0.0 at the other, which
    # compare equal; exact_score gives 0.0. Tiny negative sums round to -0.0 in both.
    x = np.zeros((4, 8), np.float32)
    x[1, 0] = 2.0**-140  # times -2**-100: -2**-240, rounds to -0.0
    x[2, :2] = [2.0**-149, -(2.0**-149)]  # products cancel: exactly 0
    x[3, :] = 1e-45
    q = np.full((2, 8), -1.0, np.float32)
    q[:, 0] = -(2.0**-100)
    q[1] = np.abs(q[1])
    store = EmbeddingStore(write_store(tmp_path / "s", x, [4], dtype=np.float32))
    qr = np.repeat(np.arange(2), 4)
    rows = np.tile(np.arange(4), 2)
    want = np.array([exact_score(q[r], x[j]) for r, j in zip(qr, rows, strict=True)])
    for max_norm in (None, 1.0):
        got = rescore.rescore(store, q, qr, rows, Kernels(), max_norm)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        got = exact_scores(q, qr, x[rows], max_norm)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("with_torch", [True, False])
@pytest.mark.parametrize("known_norm", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_rescore_of_awkward_rows_and_pairs(
    tmp_path, monkeypatch, dtype, with_torch, known_norm, threads
):
    # Exact float32 midpoints that float64 rounding lands on (1 + 2**-24 + 2**-80 is above
    # the midpoint between 1 and 1 + 2**-23, its float64 sum is the midpoint), huge rows
    # (scores over the largest float32), NaN and inf rows, zero and subnormal rows, 1-row
    # shards; pairs: queries without pairs, rows repeated within a query, one query only.
    monkeypatch.setattr(rescore, "_PIECE_ELEMENTS", 3 * 8)
    monkeypatch.setattr(rescore, "_BATCH_ELEMENTS", 4 * 8)
    monkeypatch.setattr(rescore, "_SLOW_ROWS", 2)
    x = random_unit(20, 8, seed=6)
    x[0, :3] = [1, 2.0**-24, 2.0**-80]
    x[1, :3] = [1, 2.0**-24, -(2.0**-80)]
    x[2, :3] = [1, 2.0**-24, 0]
    x[3] = 1e30 if dtype == np.float32 else 6e4
    x[4, 5] = np.nan
    x[5, 1] = np.inf
    x[6] = 0
    x[7] = 2.0**-140 if dtype == np.float32 else 2.0**-20
    x[8, :2] = 3e38 if dtype == np.float32 else 6e4
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1, 1, 5, 1, 12], dtype=dtype))
    xs = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    q = random_unit(5, 8, seed=7)
    q[0, :3] = 1
    q[0, 3:] = 0
    q[3] = -q[3]
    kernels = Kernels()
    if not with_torch:
        kernels.torch = None
    finite = np.isfinite(xs).all(axis=1)
    norm = float(np.linalg.norm(xs[finite].astype(np.float64), axis=1).max()) * 1.01
    rng = np.random.default_rng(8)
    for qr, rows in [
        (np.sort(rng.choice([0, 3, 4], 70)), rng.integers(0, 20, 70)),
        (np.zeros(1, np.int64), np.zeros(1, np.int64)),
        (np.full(40, 3), np.tile(np.arange(20), 2)),
    ]:
        pairs = list(zip(qr, rows, strict=True))
        if known_norm:  # the bound covers finite rows only
            keep = finite[rows]
            qr, rows = qr[keep], rows[keep]
            pairs = list(zip(qr, rows, strict=True))
        got = rescore.rescore(store, q, qr, rows, kernels, norm if known_norm else None, threads)
        want = np.array([exact_score(q[r], xs[j]) for r, j in pairs], np.float32)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    if dtype == np.float32:  # the midpoint cases are what they claim
        assert exact_score(q[0], xs[0]) == np.float32(1 + 2.0**-23)
        assert exact_score(q[0], xs[1]) == exact_score(q[0], xs[2]) == np.float32(1)
