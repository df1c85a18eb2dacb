"""The exact score (the real inner product rounded once to float32) and the searches that
must return it: checked against exact rational arithmetic, then every path of exact search
against ``brute_force`` bit for bit on data where float32 and float64 sums round."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.index import scorer
from inquire.index.exact import SearchStats, search
from inquire.index.score import exact_score, exact_scores
from inquire.index.topk import brute_force
from inquire.testing.search_stores import random_unit, write_store


def rational_score(q: np.ndarray, x: np.ndarray) -> np.float32:
    """The float32 nearest to the exact rational inner product (ties: even last bit)."""
    total = sum(
        (Fraction(float(a)) * Fraction(float(b)) for a, b in zip(q, x, strict=True)), Fraction(0)
    )
    guess = np.float32(float(total))
    cands = [
        guess,
        np.nextafter(guess, np.float32(np.inf)),
        np.nextafter(guess, np.float32(-np.inf)),
    ]
    dist = [abs(Fraction(float(c)) - total) for c in cands]
    best = min(dist)
    near = [c for c, e in zip(cands, dist, strict=True) if e == best]
    if len(near) == 1:
        return near[0]
    return next(c for c in near if int(c.view(np.uint32)) % 2 == 0)


def _hard_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Rows whose exact sum sits on, just above or just below a float32 midpoint: float64
    rounding then float32 rounding (double rounding) would get some of them wrong."""
    one = 1.0
    rows = [
        [one, 2.0**-24, 2.0**-70],  # above the midpoint of 1 and 1 + 2**-23
        [one, 2.0**-24, -(2.0**-70)],  # below it
        [one, 2.0**-24, 0.0],  # on it: ties to even, 1
        [one + 2.0**-23, 2.0**-24, 0.0],  # on it: ties to even, 1 + 2**-22
        [-one, -(2.0**-24), -(2.0**-70)],  # negative, above the midpoint in magnitude
        [2.0**100, -(2.0**100), 2.0**-120],  # cancellation down to a tiny number
    ]
    x = np.array(rows, np.float32)
    q = np.ones((1, 3), np.float32)
    return q, x


def test_exact_score_is_the_correctly_rounded_inner_product():
    q, x = _hard_pairs()
    want = [rational_score(q[0], row) for row in x]
    got = [exact_score(q[0], row) for row in x]
    assert [float(v) for v in got] == [float(v) for v in want]
    assert float(got[0]) == 1 + 2.0**-23 and float(got[1]) == 1.0 and float(got[2]) == 1.0
    naive = np.float32(np.float64(x[0].astype(np.float64).sum()))
    assert float(naive) == 1.0  # what a float64 sum rounded to float32 gives: wrong here
    rng = np.random.default_rng(0)
    qs = rng.standard_normal((3, 40)).astype(np.float32)
    xs = rng.standard_normal((20, 40)).astype(np.float16)
    for a in qs:
        for b in xs:
            assert exact_score(a, b) == rational_score(a, b.astype(np.float32))


def test_fast_exact_scores_equal_the_reference_bit_for_bit():
    rng = np.random.default_rng(1)
    d = 64
    q = rng.standard_normal((4, d)).astype(np.float32)
    x = rng.standard_normal((300, d)).astype(np.float16).astype(np.float32)
    hq, hx = _hard_pairs()
    pad = np.zeros((len(hx), d), np.float32)
    pad[:, :3] = hx
    x = np.vstack([x, pad])
    q[3] = 0
    q[3, :3] = hq[0]
    x[5, 7] = np.nan
    x[6, 1] = np.inf
    qr = np.repeat(np.arange(4), len(x))
    rows = np.tile(np.arange(len(x)), 4)
    got = exact_scores(q, qr, x[rows])
    want = np.array([exact_score(q[a], x[b]) for a, b in zip(qr, rows, strict=True)])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.isnan(got[5]) and np.isposinf(got[6]) == (q[0, 1] > 0)


def _store(tmp_path, n=3000, d=40, seed=2, sizes=None, dtype=np.float16):
    x = random_unit(n, d, seed=seed)
    ids = np.random.default_rng(seed + 1).permutation(5 * n)[:n].astype(np.int64)
    store = EmbeddingStore(write_store(tmp_path / "s", x, sizes or [n], ids=ids, dtype=dtype))
    return store, store.rows(np.arange(n))


@pytest.mark.parametrize("screen", ["off", "bf16"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 37, 700])
def test_every_path_returns_the_exact_scores(tmp_path, screen, threads, k):
    """Random float16 rows (float32 GEMM scores round differently from the exact score):
    ids and score bits equal ``brute_force``; only ~k rows per query are rescored."""
    store, vectors = _store(tmp_path, sizes=[1200, 1800])
    q = random_unit(6, 40, seed=5)
    st = SearchStats()
    s, i = search(
        store, q, k, screen=screen, threads=threads, block_rows=700, chunk_rows=128, stats=st
    )
    bs, bi = brute_force(q, vectors, store.ids, k)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(s.view(np.uint32), bs.view(np.uint32))
    if screen == "off" and k < 700:
        assert st.rescored_per_query <= k + 20  # the float32 bound leaves a thin fringe
    assert st.rescored_per_query < len(store)


def test_masked_and_float32_store(tmp_path):
    store, vectors = _store(tmp_path, n=2500, d=24, dtype=np.float32, sizes=[1000, 1500])
    q = random_unit(4, 24, seed=6)
    mask = np.random.default_rng(7).random(len(store)) < 0.3
    for screen in ("off", "bf16"):
        s, i = search(store, q, 50, screen=screen, chunk_rows=100, mask=mask)
        bs, bi = brute_force(q, vectors, store.ids, 50, mask)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_array_equal(s.view(np.uint32), bs.view(np.uint32))


def test_a_full_pool_is_rescored_early(tmp_path, monkeypatch):
    """Near ties the bound cannot separate: with a tiny pool cap the pool is rescored while
    the pass goes on; the result does not change."""
    monkeypatch.setattr(scorer, "_POOL_CAP_FACTOR", 1)
    monkeypatch.setattr(scorer, "_POOL_CAP_EXTRA", 0)
    rng = np.random.default_rng(8)
    d = 16
    base = rng.standard_normal(d).astype(np.float32)
    x = np.vstack([base + 1e-6 * rng.standard_normal((600, d)), rng.standard_normal((900, d))])
    rng.shuffle(x)
    store = EmbeddingStore(write_store(tmp_path / "s", x.astype(np.float32), dtype=np.float32))
    q = np.vstack([base, rng.standard_normal(d)]).astype(np.float32)
    for screen in ("off", "bf16"):
        st = SearchStats()
        s, i = search(store, q, 40, screen=screen, chunk_rows=64, threads=1, stats=st)
        bs, bi = brute_force(q, x, store.ids, 40)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_array_equal(s.view(np.uint32), bs.view(np.uint32))


def test_non_finite_rows(tmp_path):
    """A chunk with an infinite or NaN row has no bound: it is scored exactly (NaN never
    matches, +inf comes first)."""
    x = random_unit(700, 8, seed=9)
    x[10, 3] = np.nan
    x[400] = 0
    x[400, 0] = np.inf
    store = EmbeddingStore(write_store(tmp_path / "s", x, dtype=np.float32))
    q = np.abs(random_unit(3, 8, seed=10))
    for screen in ("off", "bf16"):
        s, i = search(store, q, 700, screen=screen, chunk_rows=64)
        bs, bi = brute_force(q, x, store.ids, 700)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_array_equal(s.view(np.uint32), bs.view(np.uint32))
        assert (i[:, 0] == store.ids[400]).all() and (i[:, -1] == -1).all()


def test_candidate_pool_by_hand():
    """k = 2, one query: the floor is the 2nd largest upper bound minus the widest interval;
    rows whose upper bound falls below it leave; take() empties the pool."""
    from inquire.index.pool import CandidatePool

    pool = CandidatePool(1, 2)
    qr = np.zeros(4, np.int64)
    upper = np.array([1.0, 0.9, 0.5, 0.85], np.float32)
    pool.push(qr, np.array([10, 11, 12, 13]), upper, np.full(4, 0.1))
    assert pool.sizes().tolist() == [3]  # floor 0.9 - 0.1 = 0.8 (rounded down): 0.5 leaves
    assert 0.79 < float(pool.floor[0]) <= 0.8
    pool.raise_floor(np.array([0.95], np.float32))
    qs, rows = pool.take()
    assert qs.tolist() == [0] and rows.tolist() == [10]
    assert pool.sizes().tolist() == [0]
    # Rows whose upper bound is below the floor never enter.
    pool.push(np.zeros(1, np.int64), np.array([5]), np.array([0.5], np.float32), np.ones(1))
    assert pool.sizes().tolist() == [0]
