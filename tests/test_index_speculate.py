"""Exact search from a guessed floor: fewer candidates pooled, the same result bit for bit,
and a guess that turns out too high searched again (:mod:`inquire.index.speculate`)."""

from __future__ import annotations

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.index import exact as exact_mod
from inquire.index import speculate as spec
from inquire.index.exact import SearchStats, search
from inquire.testing.search_stores import random_unit, write_store


def _no_guess(*_a, **_k):
    return None


def guessed_and_not(store, q, k, monkeypatch, **kw):
    """The search with its guess and without; asserts the same ids and score bits; returns
    (scores, ids, stats with, stats without)."""
    st = SearchStats()
    s, i = search(store, q, k, stats=st, **kw)
    with monkeypatch.context() as m:
        m.setattr(exact_mod, "guess_floor", _no_guess)
        st0 = SearchStats()
        s0, i0 = search(store, q, k, stats=st0, **kw)
    np.testing.assert_array_equal(i, i0)
    np.testing.assert_array_equal(s.view(np.uint32), s0.view(np.uint32))
    assert st0.guessed == 0 and st0.searched_again == 0
    return s, i, st, st0


def float64_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Ids of the float64 top k (ties by id), for data without near-ties."""
    scores = q.astype(np.float64) @ x.astype(np.float64).T
    return np.stack([np.lexsort((np.arange(len(x)), -row))[:k] for row in scores])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("screen", ["off", "bf16"])
def test_guess_pools_fewer_candidates_and_changes_nothing(tmp_path, monkeypatch, threads, screen):
    if screen == "bf16":
        pytest.importorskip("torch")
    n, d, k = 40_000, 16, 64
    x = random_unit(n, d, seed=1)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [15_000, 25_000]))
    q = random_unit(6, d, seed=2)
    kw = dict(chunk_rows=512, block_rows=4096, threads=threads, screen=screen)
    _, i, st, st0 = guessed_and_not(store, q, k, monkeypatch, **kw)
    np.testing.assert_array_equal(i, float64_top(x.astype(np.float16), q, k))
    assert st.guessed == len(q) and st.searched_again == 0
    assert st.pooled < 0.5 * st0.pooled  # the guess is near the k-th score from the start


def test_a_guess_too_high_is_searched_again(tmp_path, monkeypatch):
    """Queries 0 and 2 get a guess above their k-th score (rows they need are left out):
    searched again without it; query 1 has no guess, query 3 a correct one."""
    n, d, k = 20_000, 16, 10
    x = random_unit(n, d, seed=3)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [n]))
    q = random_unit(4, d, seed=4)
    want_s, want_i = search(store, q, k, chunk_rows=512)
    kth = want_s[:, -1]
    guess = np.array([kth[0] + 0.05, -np.inf, kth[2] + 1e-6, kth[3] - 0.01], np.float32)
    monkeypatch.setattr(exact_mod, "guess_floor", lambda *a, **kw: guess.copy())
    st = SearchStats()
    s, i = search(store, q, k, chunk_rows=512, stats=st)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(s.view(np.uint32), want_s.view(np.uint32))
    assert st.guessed == 3 and st.searched_again == 2
    assert st.queries == 4 and st.seconds > 0


@pytest.mark.parametrize("threads", [1, 2])
def test_a_guess_at_the_kth_score_keeps_every_tie(tmp_path, monkeypatch, threads):
    """Many rows share the k-th score (duplicates with different ids): a guess equal to it
    leaves none of them out, and they come out in id order."""
    n, d, k = 20_000, 16, 30
    rng = np.random.default_rng(5)
    x = random_unit(n, d, seed=6)
    q = random_unit(2, d, seed=7)
    x[rng.choice(n, 200, replace=False)] = x[int(np.argmax(x @ q[0]))]  # 200 copies of the best
    ids = rng.permutation(5 * n)[:n].astype(np.int64)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [n], ids=ids))
    with monkeypatch.context() as m:
        m.setattr(exact_mod, "guess_floor", _no_guess)
        want_s, want_i = search(store, q, k, chunk_rows=512, threads=threads)
    assert want_s[0, 0] == want_s[0, -1]  # query 0's top k: all tied
    guess = want_s[:, -1].copy()
    monkeypatch.setattr(exact_mod, "guess_floor", lambda *a, **kw: guess.copy())
    st = SearchStats()
    s, i = search(store, q, k, chunk_rows=512, threads=threads, stats=st)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(s.view(np.uint32), want_s.view(np.uint32))
    assert st.searched_again == 0
    assert (np.diff(i[0]) > 0).all()  # ties by image id


def test_guess_with_a_mask(tmp_path, monkeypatch):
    n, d, k = 40_000, 16, 48
    x = random_unit(n, d, seed=8)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [n]))
    q = random_unit(5, d, seed=9)
    mask = np.zeros(n, bool)
    mask[::3] = True
    _, i, st, _ = guessed_and_not(store, q, k, monkeypatch, chunk_rows=512, mask=mask)
    assert st.guessed == len(q) and st.searched_again == 0
    assert mask[i].all()
    # The guess counts only allowed rows: its sample's allowed share matches the mask's.
    guess = spec.guess_floor(store, q, k, exact_mod.Kernels(), mask)
    assert guess is not None and (guess <= search(store, q, k, mask=mask)[0][:, -1]).all()
    # Too few allowed rows for a sample to pay: no guess.
    few = np.zeros(n, bool)
    few[:200] = True
    _, _, st, _ = guessed_and_not(store, q, k, monkeypatch, chunk_rows=512, mask=few)
    assert st.guessed == 0


def test_guess_with_non_finite_rows(tmp_path, monkeypatch):
    """Rows of NaN (never returned) and of +inf (first or last, by the query's sign) in the
    sample: the guess ignores NaN, and an infinite guess is no guess."""
    n, d, k = 20_000, 8, 40
    x = random_unit(n, d, seed=10)
    q = np.abs(random_unit(3, d, seed=11))  # positive queries: a +inf row scores +inf
    q[2] = -q[2]  # ... and -inf for this one
    slices = spec._slices(EmbeddingStore(write_store(tmp_path / "t", x, [n])), n // 16)
    hit = [lo + 1 for _, lo, _ in slices[::4]]  # inside sampled slices
    x[hit[: len(hit) // 2]] = np.nan
    x[hit[len(hit) // 2 :]] = np.inf
    store = EmbeddingStore(write_store(tmp_path / "s", x, [n]))
    guess = spec.guess_floor(store, q, k, exact_mod.Kernels())
    assert guess is not None and not np.isnan(guess).any()
    assert np.isneginf(guess[:2]).all() and np.isfinite(guess[2])  # +inf sampled: no guess
    s, i, st, _ = guessed_and_not(store, q, k, monkeypatch, chunk_rows=512)
    assert st.guessed == 1 and st.searched_again == 0
    inf_rows = sorted(hit[len(hit) // 2 :])
    top = len(inf_rows)  # +inf first, by id, then the finite scores
    assert np.isposinf(s[:2, :top]).all() and i[0, :top].tolist() == inf_rows
    assert np.isfinite(s[:2, top:]).all()
    assert not set(i[2].tolist()) & set(hit)  # -inf and NaN rows: last, never


def test_store_sorted_by_score(tmp_path, monkeypatch):
    """Rows sorted by the first query's score (best last): the evenly spread sample still
    guesses below the k-th score."""
    n, d, k = 40_000, 16, 50
    x = random_unit(n, d, seed=12)
    q = random_unit(3, d, seed=13)
    x = x[np.argsort(x @ q[0], kind="stable")]
    store = EmbeddingStore(write_store(tmp_path / "s", x, [10_000, 30_000]))
    _, i, st, st0 = guessed_and_not(store, q, k, monkeypatch, chunk_rows=512, threads=2)
    assert st.searched_again == 0 and st.pooled < st0.pooled
    np.testing.assert_array_equal(i, float64_top(x.astype(np.float16), q, k))


def test_no_guess_where_the_store_is_small(tmp_path, monkeypatch):
    n, d = 3000, 16
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(n, d, seed=14), [n]))
    q = random_unit(2, d, seed=15)
    # 3000 rows: a sample of at most 187. k = 40: it holds 2.5 of the top k on average, a
    # guess; k = 10: 0.6, no guess (the pools' own floor does as well); k = 200: the store is
    # under 16 k rows; k > N.
    for k, guessed in ((40, 2), (10, 0), (200, 0), (5000, 0)):
        _, _, st, _ = guessed_and_not(store, q, k, monkeypatch, chunk_rows=256)
        assert st.guessed == guessed


def test_slices_stay_inside_shards_and_spread_over_the_store(tmp_path):
    sizes = [37] * 40 + [5000, 1, 0, 2000]
    n = sum(sizes)
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(n, 4, seed=16), sizes))
    for want in (spec.MIN_SAMPLE, 1000, 8192, 2 * n):
        parts = spec._slices(store, want)
        count = max(1, want // spec.SLICE_ROWS)
        assert 0.9 * min(count, n // spec.SLICE_ROWS) <= len(parts) <= count
        starts = []
        for s, lo, hi in parts:
            assert 0 <= lo < hi <= len(store.shards[s]) and hi - lo <= spec.SLICE_ROWS
            starts.append(int(store.offsets[s]) + lo)
        assert starts == sorted(set(starts))  # in order, none twice
        assert starts[0] < n / len(parts) and starts[-1] > n - 2 * n / len(parts)


def test_failed_names_the_queries_the_result_does_not_prove():
    scores = np.array([[3, 2, 1], [3, 2, -np.inf], [5, 5, 5], [1, 1, 0.5]], np.float32)
    guess = np.array([1, 0, 5, -np.inf], np.float32)
    assert spec.failed(scores, guess).tolist() == [1]  # padding below a finite guess
    assert spec.failed(scores, np.full(4, 4.0, np.float32)).tolist() == [0, 1, 3]


def test_a_sample_holding_all_the_best_rows_guesses_too_high(tmp_path, monkeypatch):
    """An adversarial layout: the only rows close to query 0 sit exactly where the sample
    reads. Its guess (the j-th best sampled) is then above the store's k-th score: query 0
    is searched again, the others are not, and the result is the same."""
    n, d, k = 20_000, 16, 40
    rng = np.random.default_rng(17)
    q = random_unit(3, d, seed=18)
    x = random_unit(n, d, seed=19) * 0.1
    probe = EmbeddingStore(write_store(tmp_path / "t", x, [n]))
    for s, lo, hi in spec._slices(probe, min(spec.SAMPLE_ROWS, n // spec.MIN_RATIO)):
        first = int(probe.offsets[s]) + lo
        x[first : first + hi - lo] = q[0] + 0.01 * rng.standard_normal((hi - lo, d))
    store = EmbeddingStore(write_store(tmp_path / "s", x, [n]))
    _, i, st, _ = guessed_and_not(store, q, k, monkeypatch, chunk_rows=512)
    assert st.searched_again >= 1
    np.testing.assert_array_equal(i, float64_top(x.astype(np.float16), q, k))


def test_a_store_ordered_by_cluster_is_rarely_searched_again(tmp_path, monkeypatch):
    """Rows ordered by cluster (as a store ordered by taxon: near-duplicates side by side),
    each query near one cluster's centre. Slices of 8 rows sample each run in proportion;
    with 64 slices of 39 rows here, 9 of the 40 guesses failed (each a second pass). The
    result is the same either way."""
    n, d, size, k = 40_000, 16, 100, 50
    centres = random_unit(n // size, d, seed=20)
    x = np.repeat(centres, size, axis=0) + 0.1 * random_unit(n, d, seed=21)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [n]))
    q = centres[np.random.default_rng(22).choice(len(centres), 40, replace=False)]
    _, _, st, _ = guessed_and_not(store, q, k, monkeypatch, chunk_rows=512, screen="off")
    assert st.guessed == len(q)
    assert st.searched_again <= 1


def test_the_sample_keeps_to_the_memory_budget(tmp_path, monkeypatch):
    """The sample's rows (stored and float32) take at most memory_mb / 4: a wide store gets
    a smaller sample, and a budget too small for 64 rows gets no guess."""
    n, d, k = 20_000, 512, 600
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(n, d, seed=23), [n]))
    q = random_unit(2, d, seed=24)
    seen = []
    real = spec.read_slices

    def counting(shards, parts, out):
        seen.append(len(out))
        return real(shards, parts, out)

    monkeypatch.setattr(spec, "read_slices", counting)
    # 256 MiB: the sample holds TARGET_HITS rows of the top k on average; 1 MiB: 85 rows.
    for mb, rows in ((256, -(-spec.TARGET_HITS * n // k)), (1, (1 << 20) // 4 // (d * 6))):
        assert spec.guess_floor(store, q, k, exact_mod.Kernels(), memory_mb=mb) is not None
        assert seen[-1] <= rows and seen[-1] >= 0.9 * rows
    monkeypatch.setattr(spec, "read_slices", real)  # (not undo(): conftest's settings too)
    budget_rows = (1 << 20) // 4 // (d * 6)  # 85 rows per MiB at d = 512
    assert budget_rows >= spec.MIN_SAMPLE
    _, _, st, _ = guessed_and_not(store, q, k, monkeypatch, chunk_rows=512, memory_mb=1)
    assert st.guessed == 2
    wide = 8 * d  # 64 / 8 rows per MiB: under MIN_SAMPLE
    store = EmbeddingStore(write_store(tmp_path / "w", random_unit(n, wide, seed=25), [n]))
    assert (
        spec.guess_floor(store, random_unit(2, wide, seed=26), k, exact_mod.Kernels(), memory_mb=1)
        is None
    )


def test_the_sampled_scores_keep_to_the_memory_budget_for_many_queries(tmp_path, monkeypatch):
    """The sample's scores (queries x sampled rows, float32) are computed a group of queries
    at a time within memory_mb / 4: 2000 queries over 8192 sampled rows took 64 MiB at
    once whatever memory_mb (here 8 MiB)."""
    import tracemalloc

    n, d, k = 150_000, 16, 200
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(n, d, seed=27), [n]))
    q = random_unit(2000, d, seed=28)
    kernels = exact_mod.Kernels()
    wide = spec.guess_floor(store, q, k, kernels, memory_mb=4096)
    tracemalloc.start()
    try:
        guess = spec.guess_floor(store, q, k, kernels, memory_mb=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert guess is not None and wide is not None and np.isfinite(guess).all()
    assert peak <= 8 << 20
    np.testing.assert_allclose(guess, wide, rtol=0, atol=1e-5)  # the same sample
    _, _, st, _ = guessed_and_not(store, q[:50], k, monkeypatch, chunk_rows=2048, memory_mb=1)
    assert st.guessed == 50


@pytest.mark.parametrize("screen", ["off", "bf16"])
def test_stats_of_queries_searched_again_count_both_passes(tmp_path, monkeypatch, screen):
    """Every guess fails: the queries are searched twice, and the stats count the chunks
    of both passes (as they count the pairs pooled and rescored and the GEMM time)."""
    if screen == "bf16":
        pytest.importorskip("torch")
    n, d, k = 20_000, 16, 10
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(n, d, seed=29), [n]))
    q = random_unit(3, d, seed=30)
    kw = dict(chunk_rows=512, block_rows=4096, screen=screen, threads=1)
    st0 = SearchStats()
    want_s, want_i = search(store, q, k, stats=st0, **kw)
    monkeypatch.setattr(exact_mod, "guess_floor", lambda *a, **_: np.full(3, 5.0, np.float32))
    st = SearchStats()
    s, i = search(store, q, k, stats=st, **kw)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(s.view(np.uint32), want_s.view(np.uint32))
    assert st.guessed == 3 and st.searched_again == 3
    chunks = -(-n // 512)
    assert st.chunks_bf16 + st.chunks_fp32 == 2 * chunks
    assert st0.chunks_bf16 + st0.chunks_fp32 == chunks
    assert st.screen == st0.screen == screen
    assert st.rescored == st0.rescored and st.pooled == st0.pooled  # the first pass: nothing
    _, i2 = search(store, q, k, stats=None, **kw)
    np.testing.assert_array_equal(i2, want_i)
