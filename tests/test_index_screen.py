"""bfloat16 screening of exact search: the same result as the float32 path, bit for bit.

Every screened search is compared with ``screen="off"`` (ids and score bits) and, where the
data makes float32 arithmetic exact (small integers), with a float64 full sort. The error
bound itself is checked against float64 on rows built to make bfloat16 rounding maximal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index import screen as scr
from inquire.index.exact import SearchStats, search
from inquire.testing.search_stores import random_unit, write_store

torch = pytest.importorskip("torch")


def reference(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, mask=None):
    """float64 scores, full sort by (score desc, id asc), padded when k > rows."""
    scores = q.astype(np.float64) @ x.astype(np.float64).T
    keep = np.arange(len(ids)) if mask is None else np.flatnonzero(mask)
    out_s = np.full((len(q), k), -np.inf)
    out_i = np.full((len(q), k), -1, np.int64)
    for r in range(len(q)):
        order = keep[np.lexsort((ids[keep], -scores[r, keep]))][:k]
        out_s[r, : len(order)] = scores[r, order]
        out_i[r, : len(order)] = ids[order]
    return out_s, out_i


def both(store, q, k, **kw):
    """Screened and float32 searches; asserts they agree bit for bit; returns screened."""
    s0, i0 = search(store, q, k, screen="off", **kw)
    st = SearchStats()
    s1, i1 = search(store, q, k, screen="bf16", stats=st, **kw)
    assert st.screen == "bf16"
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(s1.view(np.uint32), s0.view(np.uint32))
    return s1, i1, st


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 50, 4000])
def test_random_data_same_as_float32_path(tmp_path, k, threads):
    n, d = 3001, 48
    x = random_unit(n, d, seed=1)
    ids = np.random.default_rng(2).permutation(10 * n)[:n].astype(np.int64)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1400, 1601], ids=ids))
    q = random_unit(9, d, seed=3)
    s, i, st = both(store, q, k, block_rows=700, chunk_rows=256, threads=threads)
    # And the right answer: the float64 top k, up to float32 rounding.
    ref_s, _ = reference(x.astype(np.float16), ids, q, k)
    np.testing.assert_allclose(s, ref_s.astype(np.float32), atol=1e-5, rtol=0)
    if k == 4000:  # k > N: padding, every row rescored
        assert (i[:, n:] == -1).all() and np.isneginf(s[:, n:]).all()
    else:  # screening really pruned
        assert st.rescored < 0.5 * n * len(q)


def _integer_near_ties(seed: int, n_tie: int = 400, n_far: int = 1600, d: int = 16):
    """Rows of small integers (every float32 score exact) whose scores differ by far less
    than the screening bound: a base row plus +-1 on a few entries, which bfloat16 (8
    significant bits) cannot see at magnitudes ~1000. Queries are bfloat16-exact integers."""
    rng = np.random.default_rng(seed)
    base = rng.integers(900, 2000, size=d)
    tie = base + rng.integers(-1, 2, size=(n_tie, d))
    far = rng.integers(0, 600, size=(n_far, d))
    above = base + 40  # a few rows clearly above the cluster
    x = np.concatenate([far[: n_far // 2], tie, np.repeat(above[None], 5, 0), far[n_far // 2 :]])
    q = rng.integers(1, 4, size=(6, d)).astype(np.float32)
    return x.astype(np.float32), q


@pytest.mark.parametrize("k", [5, 50, 300, 404])
def test_adversarial_near_ties_around_kth_score(tmp_path, k):
    x, q = _integer_near_ties(seed=7)
    n = len(x)
    ids = np.random.default_rng(8).permutation(n).astype(np.int64) * 2 + 1
    store = EmbeddingStore(write_store(tmp_path / "s", x, [900, n - 900], ids=ids))
    s, i, st = both(store, q, k, block_rows=512, chunk_rows=128, threads=2)
    ref_s, ref_i = reference(x, ids, q, k)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s.astype(np.float32))
    if k > 5:  # the k-th score is inside the cluster, which the bound cannot separate
        assert st.rescored >= 400 * len(q)


def test_duplicated_rows_come_out_in_id_order(tmp_path):
    rng = np.random.default_rng(9)
    d = 32
    x = random_unit(2000, d, seed=10)
    x[rng.choice(2000, 300, replace=False)] = x[0]  # 301 copies of one vector
    ids = rng.permutation(2000).astype(np.int64) * 5
    store = EmbeddingStore(write_store(tmp_path / "s", x, ids=ids))
    q = np.vstack([x[:1], random_unit(3, d, seed=11)]).astype(np.float32)
    s, i, _ = both(store, q, 100, chunk_rows=256, threads=1)
    dup_ids = np.sort(ids[(x == x[0]).all(axis=1)])
    np.testing.assert_array_equal(i[0], dup_ids[:100])  # ties by id ascending
    assert len(set(s[0].tolist())) == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_mask_restricts_rows(tmp_path, threads):
    x, q = _integer_near_ties(seed=12)
    n = len(x)
    ids = np.arange(n, dtype=np.int64) * 3
    mask = np.random.default_rng(13).random(n) < 0.4
    store = EmbeddingStore(write_store(tmp_path / "s", x, ids=ids))
    s, i, _ = both(store, q, 60, chunk_rows=128, threads=threads, mask=mask)
    ref_s, ref_i = reference(x, ids, q, 60, mask=mask)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s.astype(np.float32))
    with pytest.raises(InputError, match="mask must be"):
        search(store, q, 5, mask=mask[:-1])


def test_bound_holds_against_float64_and_is_not_vacuous():
    """|f - s~| <= bound for every pair, f = the float32 GEMM's score, s~ = the bfloat16
    GEMM's; rows with bfloat16 rounding at its worst (halfway cases) come within 2x of it."""
    d = 256
    rng = np.random.default_rng(14)
    sign = rng.choice([-1.0, 1.0], size=d)
    halfway = np.float32((1 + 2.0**-8) * 2.0**-4)  # halfway between two bfloat16 numbers
    q = np.vstack([sign * halfway, random_unit(15, d, seed=15)]).astype(np.float32)
    worst = np.vstack([sign * halfway, -sign * halfway]).astype(np.float16)
    x = np.vstack([worst, random_unit(400, d, seed=16).astype(np.float16)])
    qb, a = scr.query_terms(q)
    xt = torch.from_numpy(x)
    s_hat = (torch.from_numpy(qb).view(torch.bfloat16) @ xt.to(torch.bfloat16).T).float().numpy()
    f = (torch.from_numpy(q) @ xt.float().T).numpy()
    exact = q.astype(np.float64) @ x.astype(np.float64).T
    norms = torch.linalg.vector_norm(xt, dim=1, dtype=torch.float32).numpy().astype(np.float64)
    c = scr.U_BF16 / (1 - scr.U_BF16)
    bound = (
        a[:, None] * norms[None, :] * scr.norm_inflation(d) + c * np.abs(s_hat) + scr.abs_slack(d)
    )
    err = np.abs(f.astype(np.float64) - s_hat)
    assert (err <= bound).all()
    assert np.abs(exact - f).max() < 1e-6  # the float32 path is what the bound is about
    assert (err / bound).max() > 0.5  # the worst case comes close: the bound is not loose
    # Screening thresholds are conservative: rows screened below the cut cannot reach t.
    t = f.max(axis=1).astype(np.float64)
    margin = a * norms.max() * scr.norm_inflation(d) + scr.abs_slack(d)
    cut = scr.upper_inverse(t, margin)
    for r in range(len(q)):
        below = s_hat[r] < cut[r]
        assert (f[r][below] < t[r]).all()
        assert (scr.lower_bound(s_hat[r].astype(np.float32), margin[r]) <= f[r] + 1e-12).all()


def test_kernel_accumulates_in_float32():
    assert scr.bf16_accumulates_in_fp32()


def test_kernel_adds_the_shift_before_rounding():
    assert scr.shift_rounds_once()


def test_shifted_bound_holds_against_float64():
    """``p~ = bf16(q~.x~ - t)`` (addmm, one rounding): ``|s - (p~ + t)| <= a(q) ||x|| +
    gamma(d + 1) |t| + c |p~| + eps`` for every pair, rows at their worst bfloat16 rounding
    included, with shifts near the scores, far from them, zero and negative."""
    d = 256
    rng = np.random.default_rng(140)
    sign = rng.choice([-1.0, 1.0], size=d)
    halfway = np.float32((1 + 2.0**-8) * 2.0**-4)
    q = np.vstack([sign * halfway, random_unit(15, d, seed=141)]).astype(np.float32)
    worst = np.vstack([sign * halfway, -sign * halfway]).astype(np.float16)
    x = np.vstack([worst, random_unit(400, d, seed=142).astype(np.float16)])
    x[2:40] = (q[1:2] + 0.01 * rng.standard_normal((38, d))).astype(np.float16)  # large scores
    qb, a = scr.query_terms(q)
    xt = torch.from_numpy(x)
    exact = q.astype(np.float64) @ x.astype(np.float64).T
    norms = torch.linalg.vector_norm(xt, dim=1, dtype=torch.float32).numpy().astype(np.float64)
    c = scr.U_BF16 / (1 - scr.U_BF16)
    top = exact.max(axis=1)
    for floor in (top, 0.9 * top, np.zeros(len(q)), -top, 3.0 * top):
        t = scr.shift_terms(floor.astype(np.float32))
        bias = torch.from_numpy(-t).to(torch.bfloat16)[:, None]
        assert np.array_equal(bias.float().numpy()[:, 0], -t)  # t is a bfloat16 number
        p = torch.addmm(bias, torch.from_numpy(qb).view(torch.bfloat16), xt.to(torch.bfloat16).T)
        p = p.float().numpy().astype(np.float64)
        bound = (
            a[:, None] * norms[None, :] * scr.norm_inflation(d)
            + scr.gamma(d + 1) * np.abs(t.astype(np.float64))[:, None]
            + c * np.abs(p)
            + scr.abs_slack(d)
        )
        err = np.abs(exact - (p + t.astype(np.float64)[:, None]))
        assert (err <= bound).all()
    # Near the floor the shifted output's rounding is far below the unshifted one's.
    t = scr.shift_terms(top.astype(np.float32))
    assert (np.abs(t - top) <= 2.0**-8 * np.abs(top)).all()


def _double_rounding_addmm(monkeypatch):
    """torch.addmm as a kernel that rounds the product to bfloat16 before adding the bias."""
    real = torch.addmm

    def addmm(bias, a, b, out=None, **kw):
        got = (torch.matmul(a, b) + bias).to(a.dtype)  # matmul already rounded: twice
        if out is None:
            return got
        return out.copy_(got)

    monkeypatch.setattr(torch, "addmm", addmm)
    return real


def test_a_kernel_that_rounds_twice_gets_no_shift_and_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setattr(scr, "_shift_ok", [])
    _double_rounding_addmm(monkeypatch)
    assert not scr.shift_rounds_once()
    q = random_unit(6, 32, seed=143)
    assert scr.bounds(q, True).shift is False
    n, d = 3000, 32
    x = random_unit(n, d, seed=144)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [n]))
    qs = random_unit(6, d, seed=145)
    s, i, _ = both(store, qs, 30, chunk_rows=256, block_rows=1024)
    ref_s, ref_i = reference(x.astype(np.float16), np.arange(n), qs, 30)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s.astype(np.float32), rtol=0, atol=1e-6)


def test_a_kernel_that_rounds_twice_at_one_shape_gets_no_shift_there(tmp_path, monkeypatch):
    """A kernel chosen by shape (as oneDNN's AMX kernels are) that rounds before the bias
    only at GEMMs of more than 2000 rows: the checks at first use pass (their shapes are
    smaller), the check at the search's own chunk shape does not, and those chunks are
    screened unshifted (the 1000-row tail chunk keeps its shift); the result is the same."""
    real = torch.addmm
    shifted_rows: list[int] = []

    def by_shape(bias, a, b, out=None, **kw):
        if b.shape[1] > 2000:
            got = (torch.matmul(a, b) + bias).to(a.dtype)  # rounded twice
            return got if out is None else out.copy_(got)
        return real(bias, a, b, out=out, **kw)

    monkeypatch.setattr(scr, "_shift_ok", [])
    monkeypatch.setattr(scr, "_shift_shapes", {})
    monkeypatch.setattr(torch, "addmm", by_shape)
    assert scr.shift_rounds_once()
    assert not scr.shift_rounds_once_at(6, 4096, 32) and scr.shift_rounds_once_at(6, 1000, 32)
    from inquire.index import scorer

    offer = scorer.Scorer._offer

    def recording(self, s, margin, c, first, shift=None):
        if shift is not None:
            shifted_rows.append(s.shape[1])
        return offer(self, s, margin, c, first, shift)

    monkeypatch.setattr(scorer.Scorer, "_offer", recording)
    n, d = 4096 * 8 + 1000, 32
    x = random_unit(n, d, seed=148)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [n]))
    q = random_unit(6, d, seed=149)
    s, i, st = both(store, q, 40, chunk_rows=4096, block_rows=4096 * 8, threads=1)
    assert st.chunks_bf16 == 9 and shifted_rows == [1000]
    ref_s, ref_i = reference(x.astype(np.float16), np.arange(n), q, 40)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s.astype(np.float32), rtol=0, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_shift_keeps_fewer_rows_where_scores_are_large(tmp_path, monkeypatch, threads):
    """Rows close to the queries (scores ~0.95): the unshifted bound's output term ``c |s~|``
    is ~0.004, the shifted one's ``c |p~|`` near the floor almost 0; the pool keeps fewer
    rows, and both give the float32 path's result, which is the float64 top k."""
    n, d, k = 6000, 64, 40
    rng = np.random.default_rng(146)
    q = random_unit(4, d, seed=147)
    x = q[rng.integers(0, 4, n)] + 0.03 * rng.standard_normal((n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [2500, n - 2500]))
    kw = dict(chunk_rows=512, block_rows=1024, threads=threads)
    s1, i1, shifted = both(store, q, k, **kw)
    monkeypatch.setattr(scr, "_shift_ok", [False])
    s0, i0, plain = both(store, q, k, **kw)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(s1.view(np.uint32), s0.view(np.uint32))
    ref_s, ref_i = reference(x.astype(np.float16), np.arange(n), q, k)
    np.testing.assert_array_equal(i1, ref_i)
    np.testing.assert_allclose(s1, ref_s.astype(np.float32), rtol=0, atol=1e-6)
    assert shifted.rescored < 0.9 * plain.rescored


def test_auto_plan(monkeypatch):
    """ "auto" never screens where it cannot pay or has measured a loss; "bf16" is forced."""
    q = random_unit(4, 32, seed=17)
    args = dict(n_rows=1_000_000, k=10, chunk_rows=256, store_dtype=np.dtype(np.float16))
    monkeypatch.setattr(scr, "_choices", {})
    monkeypatch.setattr(scr, "cpu_has_bf16_units", lambda: True)
    plan = scr.plan_screen("auto", q, has_torch=True, threads=1, **args)
    assert plan.method is None and plan.key is not None  # a timed trial decides
    assert plan.bounds.a_bf16 is not None and (plan.bounds.a_bf16 > plan.bounds.a32).all()
    scr.remember_choice(plan.key, "fp32")
    assert scr.plan_screen("auto", q, has_torch=True, threads=1, **args).method == "fp32"
    scr.remember_choice(plan.key, "bf16")
    assert scr.plan_screen("auto", q, has_torch=True, threads=1, **args).method == "bf16"
    assert scr.plan_screen("off", q, has_torch=True, threads=1, **args).method == "fp32"
    # No bfloat16 units listed: float32 without a trial; forced: screens anyway.
    monkeypatch.setattr(scr, "_choices", {})
    monkeypatch.setattr(scr, "cpu_has_bf16_units", lambda: False)
    assert scr.plan_screen("auto", q, has_torch=True, threads=1, **args).method == "fp32"
    assert scr.plan_screen("bf16", q, has_torch=True, threads=1, **args).method == "bf16"
    with pytest.raises(InputError, match="screen='bf16' is not possible"):
        scr.plan_screen("bf16", q, has_torch=False, threads=1, **args)
    # Too few rows per result or chunks for a trial: auto does not bother.
    monkeypatch.setattr(scr, "cpu_has_bf16_units", lambda: True)
    small = dict(args, n_rows=15 * 256)
    assert scr.plan_screen("auto", q, has_torch=True, threads=1, **small).method == "fp32"


def _timed_paths(monkeypatch, bf16_cost: float, fp32_cost: float) -> None:
    """Make the approximating GEMMs cost fixed times on a fake clock (no real timing)."""
    from inquire.index.scorer import Scorer

    now = [0.0]
    monkeypatch.setattr(scr, "clock", lambda: now[0])
    monkeypatch.setattr(scr, "_choices", {})
    monkeypatch.setattr(scr, "cpu_has_bf16_units", lambda: True)
    bf16, fp32 = Scorer._approx_bf16, Scorer._approx_fp32

    def slow_bf16(self, *a):
        now[0] += bf16_cost
        return bf16(self, *a)

    def slow_fp32(self, *a):
        now[0] += fp32_cost
        return fp32(self, *a)

    monkeypatch.setattr(Scorer, "_approx_bf16", slow_bf16)
    monkeypatch.setattr(Scorer, "_approx_fp32", slow_fp32)


def _slow_conversions(monkeypatch, cost: float = 0.6) -> None:
    """On :func:`_timed_paths`' fake clock (call it first), each conversion of a chunk to
    bfloat16 costs ``cost`` float32 GEMMs."""
    from inquire.index.scorer import Scorer

    t = [0.0]
    base = scr.clock
    monkeypatch.setattr(scr, "clock", lambda: base() + t[0])
    to_bf16 = Scorer._to_bf16

    def slow_conversion(self, data):
        t[0] += cost
        return to_bf16(self, data)

    monkeypatch.setattr(Scorer, "_to_bf16", slow_conversion)


@pytest.mark.parametrize("bf16_cost,want", [(5.0, "off"), (0.95, "off"), (0.5, "bf16")])
def test_auto_trial_takes_the_faster_path(tmp_path, monkeypatch, bf16_cost, want):
    """A screen made slower (or not clearly faster) than float32 is not used; a faster one
    is; either way the result is the float32 path's, and the choice is remembered."""
    _timed_paths(monkeypatch, bf16_cost=bf16_cost, fp32_cost=1.0)
    n, d = 64 * 32, 24
    x = random_unit(n, d, seed=30)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1024, 1024]))
    q = random_unit(5, d, seed=31)
    off = search(store, q, 20, screen="off", chunk_rows=64, threads=1)
    st = SearchStats()
    got = search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st)
    assert st.trial and st.screen == want
    from inquire.index.fanout import Chooser

    trial_bf16 = Chooser.TRIAL.count("bf16")  # one warm-up, two timed
    assert trial_bf16 == 3 and Chooser.TRIAL[: Chooser.SKIP] == ("fp32",) * Chooser.SKIP
    assert st.chunks_bf16 == (trial_bf16 if want == "off" else 32 - Chooser.TRIAL.count("fp32"))
    np.testing.assert_array_equal(got[1], off[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), off[0].view(np.uint32))
    st2 = SearchStats()
    again = search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st2)
    assert not st2.trial and st2.chunks_bf16 == (0 if want == "off" else 32)
    np.testing.assert_array_equal(again[1], off[1])


def test_auto_trial_with_two_threads_gives_the_same_result(tmp_path, monkeypatch):
    _timed_paths(monkeypatch, bf16_cost=0.5, fp32_cost=1.0)
    x = random_unit(64 * 40, 16, seed=32)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1000, 1560]))
    q = random_unit(3, 16, seed=33)
    off = search(store, q, 30, screen="off", chunk_rows=64, threads=2)
    st = SearchStats()
    got = search(store, q, 30, screen="auto", chunk_rows=64, threads=2, stats=st)
    assert st.trial and st.chunks_bf16 >= 3
    np.testing.assert_array_equal(got[1], off[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), off[0].view(np.uint32))


def test_auto_gives_the_float32_result(tmp_path):
    x = random_unit(1500, 24, seed=18)
    store = EmbeddingStore(write_store(tmp_path / "s", x))
    q = random_unit(3, 24, seed=19)
    s0, i0 = search(store, q, 20, screen="off")
    st = SearchStats()
    s1, i1 = search(store, q, 20, screen="auto", stats=st)
    assert st.screen in ("bf16", "off")
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(s1, s0)


def test_bad_screen_value_names_the_choices(tmp_path):
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(10, 8, seed=20)))
    with pytest.raises(InputError, match=r"auto, bf16, off; got 'fast'"):
        search(store, random_unit(1, 8, seed=21), 3, screen="fast")  # type: ignore[arg-type]


def _lists(result):
    """``(scores, ids)`` of a search as one ``(ids, scores)`` per query, padding dropped."""
    scores, ids = result
    assert scores.shape == ids.shape and scores.dtype == np.float32 and ids.dtype == np.int64
    assert np.isneginf(scores[ids < 0]).all()
    return [(i[i >= 0], s[i >= 0]) for s, i in zip(scores, ids, strict=True)]


def test_collection_masked_search_screened(tmp_path, monkeypatch):
    """The collection's filtered exact search, screened, equals its float32 result."""
    import importlib

    from inquire.collection import CollectionSearcher, create_collection, parse_filters
    from inquire.testing.collection_encoder import (
        PixelHashEncoder,
        make_inat_tree,
        make_photo_folder,
    )

    meta = make_inat_tree(tmp_path / "root", per_taxon=6, seed=1)
    make_photo_folder(tmp_path / "root" / "extra", n=40, seed=2)
    enc = PixelHashEncoder(dim=16)
    coll, _ = create_collection("c", tmp_path / "root", enc.model_id, meta, encoder=enc)
    index = coll.index()
    q = random_unit(2, 16, seed=22)
    collection_search = importlib.import_module("inquire.collection.search")  # not the function
    monkeypatch.setattr(collection_search, "GATHER_BELOW", 0.0)  # the streamed pass always
    for taxa in ((), ("Aves",)):
        mask = parse_filters(list(taxa)).mask(index)
        for k in (1, 5, 200):
            got = _lists(CollectionSearcher(index, screen="bf16").search(q, k, mask))
            rows = np.flatnonzero(mask & index.valid)
            vec = np.stack([index.store.row(int(r)) for r in rows]).astype(np.float32)
            ids = index.image_id[rows]
            ref_s, ref_i = reference(vec, ids, q, min(k, len(rows)))
            for r, (g_ids, g_scores) in enumerate(got):
                np.testing.assert_array_equal(g_ids, ref_i[r])
                np.testing.assert_allclose(g_scores, ref_s[r], atol=1e-5)
            off = search(index.store, q, min(k, len(rows)), screen="off", mask=mask & index.valid)
            for r, (g_ids, g_scores) in enumerate(got):
                np.testing.assert_array_equal(g_ids, off[1][r][off[1][r] >= 0])
                np.testing.assert_array_equal(g_scores.view(np.uint32), off[0][r].view(np.uint32))


def test_float32_store(tmp_path):
    x = random_unit(2500, 40, seed=23)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1000, 1500], dtype=np.float32))
    q = random_unit(5, 40, seed=24)
    s, _i, st = both(store, q, 30, chunk_rows=256, threads=2)
    ref_s, _ = reference(x, np.arange(2500), q, 30)
    np.testing.assert_allclose(s, ref_s.astype(np.float32), atol=1e-5, rtol=0)
    assert st.rescored < 0.5 * 2500 * 5


@pytest.mark.parametrize("threads", [1, 2])
def test_auto_trial_on_exactly_16_chunks_and_interrupted(tmp_path, monkeypatch, threads):
    # 16 chunks: the SKIP float32 chunks, then the whole trial, then 2 chunks after it. A
    # trial chunk that fails: the error comes back, no scoring thread is left running, no
    # choice is remembered, and the next search (not failing) gives the float32 result.
    import threading

    from inquire.index.fanout import Chooser
    from inquire.index.scorer import Scorer

    _timed_paths(monkeypatch, bf16_cost=0.5, fp32_cost=1.0)
    assert len(Chooser.TRIAL) <= scr.MIN_TRIAL_CHUNKS == 16
    x = random_unit(16 * 64, 16, seed=40)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [16 * 64]))
    q = random_unit(3, 16, seed=41)
    off = search(store, q, 30, screen="off", chunk_rows=64, threads=threads)
    score, calls = Scorer.score, [0]

    def failing(self, *a, **kw):
        calls[0] += 1
        if calls[0] == Chooser.SKIP + 2:  # a timed trial chunk
            raise RuntimeError("disk gone")
        return score(self, *a, **kw)

    monkeypatch.setattr(Scorer, "score", failing)
    before = set(threading.enumerate())  # (other tests' pools may hold inquire- threads)
    with pytest.raises(RuntimeError, match="disk gone"):
        search(store, q, 30, screen="auto", chunk_rows=64, block_rows=128, threads=threads)
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("inquire-")]
    assert scr._choices == {}
    monkeypatch.setattr(Scorer, "score", score)
    st = SearchStats()
    got = search(store, q, 30, screen="auto", chunk_rows=64, threads=threads, stats=st)
    assert st.trial and st.chunks_bf16 + st.chunks_fp32 == 16
    # bfloat16 measured faster: the 2 chunks after the trial screen (one thread: in order).
    assert st.chunks_bf16 == 5 if threads == 1 else st.chunks_bf16 >= 3
    assert len(scr._choices) == 1
    np.testing.assert_array_equal(got[1], off[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), off[0].view(np.uint32))


def test_chunks_shorter_than_the_chunk_size_take_no_trial_slot():
    from inquire.index.fanout import Chooser

    ch = Chooser(None, ("shape",), chunk_rows=64)
    assert ch.next(10) == ("fp32", None)  # a shard's short last chunk: float32, untimed
    assert ch.next(63) == ("fp32", None)
    assert ch.next(64) == (Chooser.TRIAL[0], 0)
    assert ch.next(10) == ("fp32", None)
    assert ch.next(64) == (Chooser.TRIAL[1], 1)
    decided = Chooser("bf16", None, chunk_rows=64)
    assert decided.next(10) == ("bf16", None)  # once decided, every chunk takes the choice


def test_pool_take_best_takes_the_largest_upper_bounds_per_query():
    from inquire.index.pool import CandidatePool

    pool = CandidatePool(3, 10)  # k above every query's size: the pool drops nothing
    rng = np.random.default_rng(31)
    # Query 0: 6 rows, query 1: 1 row, query 2: none.
    qr = np.array([0] * 6 + [1])
    rows = np.array([10, 11, 12, 13, 14, 15, 20])
    upper = rng.permutation(np.float32([0.1, 0.5, 0.3, 0.9, 0.2, 0.7, 0.4]))
    pool.push(qr, rows, upper, np.zeros(7))
    got_q, got_r = pool.take_best(3)
    want0 = rows[:6][np.argsort(-upper[:6])[:3]]
    assert got_q.tolist() == [0, 0, 0, 1]
    assert sorted(got_r[:3].tolist()) == sorted(want0.tolist()) and got_r[3] == 20
    rest_q, rest_r = pool.take()
    assert rest_q.tolist() == [0, 0, 0]
    assert sorted(rest_r.tolist()) == sorted(set(rows[:6].tolist()) - set(want0.tolist()))
    assert [len(a) for a in pool.take_best(5)] == [0, 0]  # empty pool
    # Fewer entries than n everywhere: everything is taken.
    pool.push(np.array([2, 2]), np.array([7, 8]), np.float32([0.3, 0.2]), np.zeros(2))
    q2, r2 = pool.take_best(4)
    assert q2.tolist() == [2, 2] and sorted(r2.tolist()) == [7, 8]
    assert pool.take()[0].size == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_two_stage_rescoring_reads_fewer_rows_and_gives_the_same_result(
    tmp_path, monkeypatch, threads
):
    from inquire.index import scorer

    # A wide bound (bfloat16 at d = 64 over near-equal scores) leaves many more than k rows
    # per query at the end: the k best by upper bound first, then only what reaches their
    # k-th exact score.
    n, d, k = 6000, 64, 40
    rng = np.random.default_rng(32)
    x = (random_unit(1, d, seed=33) + 0.02 * rng.standard_normal((n, d))).astype(np.float32)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [2500, n - 2500]))
    q = random_unit(5, d, seed=34)
    kw = dict(k=k, chunk_rows=512, block_rows=1024, threads=threads, screen="bf16")
    one, two = SearchStats(), SearchStats()
    width = scorer._TWO_STAGE_WIDTH
    monkeypatch.setattr(scorer, "_TWO_STAGE_WIDTH", float("inf"))
    s1, i1 = search(store, q, stats=one, **kw)
    monkeypatch.setattr(scorer, "_TWO_STAGE_WIDTH", width)  # (not undo(): conftest's settings)
    s2, i2 = search(store, q, stats=two, **kw)
    np.testing.assert_array_equal(i2, i1)
    np.testing.assert_array_equal(s2.view(np.uint32), s1.view(np.uint32))
    ref_s, ref_i = reference(x.astype(np.float16), np.arange(n), q, k)
    np.testing.assert_array_equal(i2, ref_i)
    np.testing.assert_allclose(s2, ref_s.astype(np.float32), rtol=0, atol=1e-6)
    assert one.rescored > 1.25 * k * len(q)  # one stage: the whole wide pool
    assert two.rescored < 0.8 * one.rescored
    assert 0 < two.rescore_seconds <= two.seconds  # the final rescoring's share of the time


def test_auto_trial_leaves_out_conversions_the_bf16_copy_spares(tmp_path, monkeypatch):
    """Converting chunks to bfloat16 makes screening slower than float32 here, reading the
    store's bfloat16 copy (no conversions) faster: the trial times what the search will run."""
    from inquire.index import bf16_copy as bc

    _timed_paths(monkeypatch, bf16_cost=0.5, fp32_cost=1.0)
    _slow_conversions(monkeypatch)  # 0.6 float32 GEMMs per conversion
    n, d = 64 * 32, 24
    x = random_unit(n, d, seed=50)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1024, 1024]))
    q = random_unit(4, d, seed=51)
    off = search(store, q, 20, screen="off", chunk_rows=64, threads=1)

    def run(copy):
        st = SearchStats()
        kw = dict(screen="auto", chunk_rows=64, threads=1, bf16_copy=copy, stats=st)
        got = search(store, q, 20, **kw)
        np.testing.assert_array_equal(got[1], off[1])
        np.testing.assert_array_equal(got[0].view(np.uint32), off[0].view(np.uint32))
        return st

    # No copy will be read: bfloat16 with its conversions (1.1) loses to float32 (1.0).
    st = run("off")
    assert st.trial and st.screen == "off"
    st = run("use")  # reads a copy only if one exists: none does
    assert not st.trial and st.screen == "off"  # the same shape: remembered
    assert bc.open_copy(store) is None
    # The copy will be built: bfloat16 without conversions (0.5) wins; the search after the
    # trial builds the copy and reads it.
    st = run("auto")
    assert st.trial and st.screen == "bf16" and not st.bf16_copy
    st = run("auto")
    assert not st.trial and st.screen == "bf16" and st.bf16_copy
    st = run("use")  # now it exists
    assert not st.trial and st.screen == "bf16" and st.bf16_copy


def test_auto_trial_counts_conversions_where_the_copy_cannot_be_built(tmp_path, monkeypatch):
    from inquire.index import bf16_copy as bc

    _timed_paths(monkeypatch, bf16_cost=0.5, fp32_cost=1.0)
    _slow_conversions(monkeypatch)  # 0.6 float32 GEMMs per conversion

    def no_room(store, progress=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bc, "build_copy", no_room)
    monkeypatch.setattr(bc, "_warned", set())
    n, d = 64 * 32, 24
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(n, d, seed=52), [n]))
    q = random_unit(4, d, seed=53)
    first, second, third = SearchStats(), SearchStats(), SearchStats()
    search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=first)
    assert first.trial and first.screen == "bf16"  # expecting a copy
    search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=second)
    # Building it failed: this search converts, so it does not follow the choice made for
    # a copy; a new trial, with the conversions, picks float32.
    assert not second.bf16_copy
    assert second.trial and second.screen == "off"
    search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=third)
    assert not third.trial and third.screen == "off"  # remembered for a converting search


@pytest.mark.parametrize("masked", [False, True])
def test_screens_answers_for_the_search_it_is_asked_about(tmp_path, monkeypatch, masked):
    """``screens`` recalls the choice a search of the same shape made: with a mask (the
    collection's masked exact search) and the bfloat16 copy expected as the search does."""
    from inquire.index.exact import ExactIndex

    _timed_paths(monkeypatch, bf16_cost=5.0, fp32_cost=1.0)
    n, d = 64 * 32, 24
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(n, d, seed=54), [n]))
    q = random_unit(4, d, seed=55)
    mask = np.ones(n, bool) if masked else None
    index = ExactIndex(store, chunk_rows=64, threads=1, stats=SearchStats())
    assert index.screens(q, 20, mask)  # not measured yet: a trial would decide
    index.search(q, 20, mask)
    assert index.stats is not None and index.stats.trial and index.stats.screen == "off"
    assert not index.screens(q, 20, mask)  # measured slower for this search: float32


@pytest.mark.parametrize("fp32_cost,want", [(0.8, "fp32"), (1.5, "bf16")])
def test_auto_trial_times_both_conversions_every_search_makes(
    tmp_path, monkeypatch, fp32_cost, want
):
    """Without a copy, every screened float16 chunk is converted to float32, then to
    bfloat16 (the first search also computes its norm from the float32 rows; later ones know
    it). The trial times both conversions, as later searches make them: bfloat16 (1.0 + 0.5
    + GEMM 0.5 = 2.0) loses to float32 (conversion 1.0 + GEMM 0.8) and beats it with a GEMM of
    1.5; the choice holds for the next search, and the result is float32's either way."""
    from inquire.index.kernels import Kernels
    from inquire.index.scorer import Scorer

    _timed_paths(monkeypatch, bf16_cost=0.5, fp32_cost=fp32_cost)
    t = [0.0]
    base = scr.clock
    monkeypatch.setattr(scr, "clock", lambda: base() + t[0])
    convert, to_bf16 = Kernels.convert, Scorer._to_bf16
    converted = []

    def slow_convert(self, src, dst):
        t[0] += 1.0
        return convert(self, src, dst)

    def slow_to_bf16(self, data):
        converted.append(data.dtype)
        t[0] += 0.5
        return to_bf16(self, data)

    monkeypatch.setattr(Kernels, "convert", slow_convert)
    monkeypatch.setattr(Scorer, "_to_bf16", slow_to_bf16)
    n, d = 64 * 32, 24
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(n, d, seed=56), [n]))
    q = random_unit(4, d, seed=57)
    runs = []
    for trial in (True, False):  # the first search of this store: no norm known yet
        st = SearchStats()
        runs.append(
            search(store, q, 20, screen="auto", chunk_rows=64, threads=1, bf16_copy="off", stats=st)
        )
        assert st.trial is trial and st.screen == ("off" if want == "fp32" else "bf16")
    # Every chunk went to bfloat16 from float32 rows, never straight from float16.
    assert converted and set(converted) == {np.dtype(np.float32)}
    off = search(store, q, 20, screen="off", chunk_rows=64, threads=1)
    for got in runs:
        np.testing.assert_array_equal(got[1], off[1])
        np.testing.assert_array_equal(got[0].view(np.uint32), off[0].view(np.uint32))


def test_remembered_choices_stay_bounded(monkeypatch):
    monkeypatch.setattr(scr, "_choices", {})
    monkeypatch.setattr(scr, "_CHOICES_MAX", 3)
    for n in range(3):
        scr.remember_choice(("shape", n), "bf16")
    scr.remember_choice(("shape", 0), "fp32")  # a known shape: updated, nothing forgotten
    assert len(scr._choices) == 3 and scr.recalled_choice(("shape", 0)) == "fp32"
    scr.remember_choice(("shape", 3), "bf16")  # one more: the old ones are forgotten
    assert scr._choices == {("shape", 3): "bf16"}
    assert scr.recalled_choice(("shape", 1)) is None


def test_auto_trial_counts_conversions_where_the_folder_is_read_only(tmp_path, monkeypatch):
    """A store folder this process may not write (checked with ``os.access``: as root every
    folder is writable, so the check is replaced here) gets no copy: the trial times the
    conversions from the start."""
    from inquire.index import bf16_copy as bc

    _timed_paths(monkeypatch, bf16_cost=0.5, fp32_cost=1.0)
    _slow_conversions(monkeypatch)  # 0.6 float32 GEMMs per conversion
    monkeypatch.setattr(bc, "_warned", set())
    n, d = 64 * 32, 24
    root = write_store(tmp_path / "s", random_unit(n, d, seed=54), [n])
    store = EmbeddingStore(root)
    real_access = bc.os.access
    monkeypatch.setattr(
        bc.os, "access", lambda p, mode: Path(p) != Path(root) and real_access(p, mode)
    )
    assert not bc.copy_expected(store, build=True)
    st = SearchStats()
    search(store, q := random_unit(4, d, seed=55), 20, screen="auto", chunk_rows=64, stats=st)
    assert st.trial and st.screen == "off"
    monkeypatch.setattr(bc.os, "access", real_access)  # writable again: a copy is expected
    assert bc.copy_expected(store, build=True)
    st = SearchStats()
    search(store, q, 20, screen="auto", chunk_rows=64, threads=1, stats=st)
    assert st.trial and st.screen == "bf16"


_TRUNCATED_SEARCH = """
import sys
import numpy as np
from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index.exact import search
from inquire.testing.search_stores import random_unit, write_store

root = write_store(sys.argv[1], random_unit(6000, 16, seed=1), [2000, 4000])
store = EmbeddingStore(root)
shard = root / "img_emb" / "img_emb_1.npy"
with open(shard, "r+b") as fh:  # cut the file after the store mapped it
    fh.truncate(shard.stat().st_size - int(sys.argv[2]))
try:
    search(store, random_unit(2, 16, seed=2), 5, screen="bf16", chunk_rows=256, threads=1)
except InputError as exc:
    print("InputError:", exc)
else:
    print("no error")
"""


@pytest.mark.parametrize("cut", [4, 20_000])
def test_truncated_shard_is_reported_when_the_bf16_copy_is_built(tmp_path, cut):
    """Screening with ``bf16_copy="auto"`` builds the store's bfloat16 copy from the shards'
    memory maps: a shard cut after the store mapped it is the reader's InputError, not a
    SIGBUS (whole pages missing) nor a silent result from zeros read past the end (a few
    bytes missing). In a child process, so that a crash fails only this test."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(
        [sys.executable, "-c", _TRUNCATED_SEARCH, str(tmp_path / "s"), str(cut)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "InputError:" in done.stdout and "truncated" in done.stdout, done.stdout


def _all_bf16_but_nan() -> np.ndarray:
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    return bits[~np.isnan(scr.bf16_values(bits))]


def test_bf16_values_are_the_bits_widened():
    bits = _all_bf16_but_nan()
    want = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(scr.bf16_values(bits).view(np.uint32), want.view(np.uint32))
    assert scr.bf16_finite(bits[np.isfinite(scr.bf16_values(bits))])
    assert not scr.bf16_finite(np.array([0x3F80, 0x7F80], np.uint16))  # +inf
    assert not scr.bf16_finite(np.array([0xFF80], np.uint16))  # -inf
    assert not scr.bf16_finite(np.array([0x7FC1], np.uint16))  # NaN


def _cuts() -> np.ndarray:
    """Cuts at, just above and just below every kind of bfloat16 value, and the edges."""
    values = scr.bf16_values(_all_bf16_but_nan())
    rng = np.random.default_rng(0)
    picked = values[rng.choice(len(values), 600, replace=False)]
    picked = np.concatenate(
        [picked, np.float32([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38])]
    )
    with np.errstate(over="ignore"):
        up = np.nextafter(picked, np.float32(np.inf))
        down = np.nextafter(picked, np.float32(-np.inf))
    halfway = picked + np.float32(0.0)
    halfway = (halfway.view(np.uint32) | np.uint32(0x8000)).view(np.float32)
    cuts = np.concatenate([picked, up, down, halfway]).astype(np.float32)
    return cuts[~np.isnan(cuts)]


def test_bf16_cut_keys_select_exactly_the_values_at_least_the_cut():
    # Every bfloat16 value but NaN against cuts on, beside and between bfloat16 values
    # (+-0, subnormals, +-inf, the largest finite): the 16-bit comparison keeps exactly the
    # values the float32 comparison keeps.
    from inquire.index.topk import TopK

    bits = _all_bf16_but_nan()
    values = scr.bf16_values(bits)
    cuts = _cuts()
    for part in np.array_split(cuts, 8):
        positive, key = scr.bf16_cut_keys(part)
        grid = np.broadcast_to(bits, (len(part), len(bits)))
        got = np.zeros(grid.shape, bool)
        rows, cols = TopK(len(part), 1).candidates_bf16(np.ascontiguousarray(grid), positive, key)
        got[rows, cols] = True
        want = values[None, :] >= part[:, None]
        bad = np.argwhere(got != want)
        assert not len(bad), [(float(part[i]), float(values[j])) for i, j in bad[:5]]


@pytest.mark.parametrize("kinds", ["positive", "negative", "mixed"])
def test_candidates_bf16_matches_candidates_of_the_float32_values(kinds):
    # All cuts positive, all not, and mixed (each a different branch), on GEMM-like scores.
    from inquire.index.topk import TopK

    rng = np.random.default_rng(3)
    s = rng.standard_normal((7, 300)).astype(np.float32) / 8
    bits = (torch.from_numpy(s).to(torch.bfloat16).view(torch.int16).numpy()).view(np.uint16)
    cut = np.abs(rng.standard_normal(7).astype(np.float32)) / 16
    if kinds == "negative":
        cut = -cut
    elif kinds == "mixed":
        cut[::2] *= -1
        cut[1] = 0.0
    got = TopK(7, 5).candidates_bf16(bits, *scr.bf16_cut_keys(cut))
    want = TopK(7, 5).candidates(scr.bf16_values(bits), cut)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
