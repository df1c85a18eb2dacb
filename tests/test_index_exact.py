"""Exact search against brute-force numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index.exact import search
from inquire.testing.search_stores import random_unit, small_integer_vectors, write_store


def reference(vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int):
    """All scores in float64, one full sort by (score desc, id asc); padding when k > N."""
    scores = q.astype(np.float64) @ vectors.astype(np.float64).T
    out_s = np.full((len(q), k), -np.inf)
    out_i = np.full((len(q), k), -1, np.int64)
    for r in range(len(q)):
        order = sorted(range(len(ids)), key=lambda j: (-scores[r, j], ids[j]))[:k]
        out_s[r, : len(order)] = scores[r, order]
        out_i[r, : len(order)] = ids[order]
    return out_s, out_i


def check_close(got_s, got_i, vectors, ids, q, k, tol=1e-5):
    """Same top-k as the reference up to float32 rounding: ids that differ only within tol."""
    ref_s, ref_i = reference(vectors, ids, q, k)
    assert got_s.shape == got_i.shape == (len(q), k)
    assert got_s.dtype == np.float32 and got_i.dtype == np.int64
    np.testing.assert_allclose(got_s, ref_s.astype(np.float32), atol=tol, rtol=0)
    row_of = {int(i): j for j, i in enumerate(ids)}
    exact = q.astype(np.float64) @ vectors.astype(np.float64).T
    for r in range(len(q)):
        valid = got_i[r] >= 0
        assert len(set(got_i[r][valid].tolist())) == int(valid.sum())
        # Every returned id really has the score returned for it.
        back = np.array([exact[r, row_of[int(i)]] for i in got_i[r][valid]])
        np.testing.assert_allclose(got_s[r][valid], back, atol=tol, rtol=0)
        # Ids clearly inside the reference top k (not near the k-th score) must be found.
        kth = ref_s[r, min(k, len(ids)) - 1]
        sure = set(ref_i[r][ref_s[r] > kth + 2 * tol].tolist())
        assert sure <= set(got_i[r].tolist())
        assert np.all(np.diff(got_s[r][valid]) <= 0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 50, 1000])
@pytest.mark.parametrize(
    "sizes,block_rows,chunk_rows",
    [
        ([3001], 700, 256),  # one shard, N not a multiple of the block or chunk
        ([400, 1, 999, 1601], 512, 300),  # many shards of uneven sizes, a 1-row shard
        ([1500, 1501], None, 8192),  # defaults
    ],
)
def test_random_data_matches_reference(tmp_path, k, sizes, block_rows, chunk_rows, threads):
    n, d = sum(sizes), 24
    x = random_unit(n, d, seed=1)
    ids = np.random.default_rng(2).permutation(10 * n)[:n].astype(np.int64)
    store = EmbeddingStore(write_store(tmp_path / "s", x, sizes, ids=ids))
    q = random_unit(7, d, seed=3)
    vectors = x.astype(np.float16).astype(np.float32)
    s, i = search(store, q, k, block_rows=block_rows, chunk_rows=chunk_rows, threads=threads)
    check_close(s, i, vectors, ids, q, k)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("k", [1, 50, 1000])
def test_small_integer_data_is_identical_with_ties(tmp_path, prefetch, dtype, k, threads):
    """Scores exact in float32: ids and scores equal the reference bit for bit, ties included
    (many equal scores, ordered by id across chunks, blocks and shards)."""
    n, d = 2500, 8
    x = small_integer_vectors(n, d, seed=4, levels=1)
    ids = np.random.default_rng(5).permutation(n).astype(np.int64) * 3 + 7
    store = EmbeddingStore(write_store(tmp_path / "s", x, [1000, 777, 723], ids=ids, dtype=dtype))
    q = np.random.default_rng(6).integers(-2, 3, size=(9, d)).astype(np.float32)
    ref_s, ref_i = reference(x, ids, q, k)
    s, i = search(store, q, k, block_rows=600, chunk_rows=128, prefetch=prefetch, threads=threads)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s.astype(np.float32))


def test_duplicate_vectors_rank_by_id(tmp_path):
    """The same vector stored under several ids in different shards: ids come out ascending."""
    rng = np.random.default_rng(7)
    base = random_unit(300, 16, seed=8)
    dup = base[5]
    x = base.copy()
    where = [3, 150, 151, 299]
    x[where] = dup
    ids = np.arange(300, dtype=np.int64)[::-1].copy()  # ids descend with the row
    store = EmbeddingStore(write_store(tmp_path / "s", x, [100, 100, 100], ids=ids))
    q = dup[None, :] + 0.01 * rng.standard_normal((1, 16)).astype(np.float32)
    s, i = search(store, q, 5, block_rows=64, chunk_rows=32)
    dup_ids = sorted(int(ids[r]) for r in [*where, 5])
    assert i[0].tolist() == dup_ids
    assert len(set(s[0].tolist())) == 1


def test_k_larger_than_store_pads(tmp_path):
    x = random_unit(10, 8, seed=9)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [4, 6]))
    s, i = search(store, random_unit(3, 8, seed=10), 15)
    assert s.shape == i.shape == (3, 15)
    assert (i[:, 10:] == -1).all() and np.isneginf(s[:, 10:]).all()
    assert sorted(i[0, :10].tolist()) == list(range(10))
    check_close(
        s, i, x.astype(np.float16).astype(np.float32), np.arange(10), random_unit(3, 8, seed=10), 15
    )


def test_ids_beyond_32_bits(tmp_path):
    """Image ids outside [0, 2**32) (e.g. negative or huge) keep their order and identity."""
    n = 500
    x = small_integer_vectors(n, 4, seed=11, levels=1)
    ids = np.random.default_rng(12).permutation(n).astype(np.int64) * (1 << 33) - (1 << 40)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [250, 250], ids=ids))
    q = np.ones((2, 4), np.float32)
    _ref_s, ref_i = reference(x, ids, q, 60)
    _s, i = search(store, q, 60, block_rows=128, chunk_rows=64)
    np.testing.assert_array_equal(i, ref_i)


def test_sorted_data_many_candidates_per_block(tmp_path):
    """Rows in increasing score order: every block beats the kept top k (the heavy path)."""
    n, d = 4000, 4
    x = np.zeros((n, d), np.float32)
    x[:, 0] = np.linspace(-1, 1, n)
    store = EmbeddingStore(write_store(tmp_path / "s", x, dtype=np.float32))
    q = np.array([[1, 0, 0, 0]], np.float32)
    _s, i = search(store, q, 100, block_rows=512, chunk_rows=256)
    assert i[0].tolist() == list(range(n - 1, n - 101, -1))


def test_bad_input(tmp_path):
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(20, 8)))
    with pytest.raises(InputError, match=r"dimension 5 but .* dimension 8"):
        search(store, np.zeros((2, 5), np.float32), 3)
    with pytest.raises(InputError, match="k must be a positive integer"):
        search(store, np.zeros((2, 8), np.float32), 0)
    with pytest.raises(InputError, match="NaN"):
        search(store, np.full((1, 8), np.nan, np.float32), 3)
    with pytest.raises(InputError, match="block_rows"):
        search(store, np.zeros((1, 8), np.float32), 3, block_rows=0)


def test_threads_restore_torch_settings(tmp_path):
    torch = pytest.importorskip("torch")
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(3000, 8), [1000, 2000]))
    before = torch.get_num_threads()
    a = search(store, random_unit(4, 8), 20, threads=2, block_rows=512, chunk_rows=100)
    assert torch.get_num_threads() == before
    b = search(store, random_unit(4, 8), 20, threads=1, block_rows=512, chunk_rows=100)
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("threads", [1, 2])
def test_truncated_shard_is_reported(tmp_path, threads):
    root = write_store(tmp_path / "s", random_unit(5000, 8), [2000, 3000])
    store = EmbeddingStore(root)
    shard = root / "img_emb" / "img_emb_1.npy"
    with open(shard, "r+b") as fh:  # cut the file after the store mapped it
        fh.truncate(shard.stat().st_size - 4096)
    with pytest.raises(InputError, match="truncated"):
        search(store, random_unit(1, 8), 3, block_rows=1024, threads=threads)


def test_brute_force_helper_agrees(tmp_path):
    """``brute_force`` (the obvious full sort) is a valid reference too."""
    from inquire.index.topk import brute_force

    x = small_integer_vectors(700, 6, seed=13, levels=1)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [300, 400]))
    q = np.random.default_rng(14).integers(-2, 3, size=(5, 6)).astype(np.float32)
    for k in (1, 40, 800):
        bs, bi = brute_force(q, store.rows(np.arange(len(store))), store.ids, k)
        s, i = search(store, q, k, block_rows=256, chunk_rows=100)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_array_equal(s, bs)


@pytest.mark.parametrize("screen", ["off", "bf16"])
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_gemm_overflow_of_finite_rows_is_exact(tmp_path, threads, screen):
    from inquire.index.topk import brute_force

    # Unnormalised queries are allowed. Rows 0 and 1 sum 2e38 + 2e38 (over the largest
    # float32) before the -2e38 terms: the GEMM overflows, the exact scores are 0 and 2e38.
    # Forced bfloat16 screening takes queries up to 1e30 only: there the rows are larger.
    big = 1e38 if screen == "off" else 1e29
    q = np.full((1, 4), big, np.float32)
    x = np.full((8, 4), 0.1, np.float32)
    x[0] = [2, 2, -2, -2]
    x[1] = [2, 2, -2, 0]
    x[2] = [2.5, 0, 0, 0]
    x *= np.float32(1e38 / big)
    store = EmbeddingStore(write_store(tmp_path / "s", x, [8], dtype=np.float32))
    ws, wi = brute_force(q, x, store.ids, 3)
    assert wi[0].tolist() == [2, 1, 3]
    if screen == "bf16":
        pytest.importorskip("torch")
    s, i = search(store, q, 3, threads=threads, chunk_rows=8, screen=screen)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s.view(np.uint32), ws.view(np.uint32))


def test_a_shard_replaced_with_its_old_size_and_mtime_is_not_taken_for_the_old(tmp_path):
    """The row norms kept per process belong to the shard file searched: a shard replaced
    by one of the same size with its modification time set back (``rsync -t``, ``cp -p``,
    a restore) has its norms computed again. With the old, 4096x smaller norms the float32
    bound would be too narrow and near ties would come out in the wrong order."""
    import os

    from inquire.index.topk import brute_force

    n, d = 2000, 256
    rng = np.random.default_rng(0)
    base = random_unit(1, d, seed=1)
    near = (base + rng.standard_normal((n, d)).astype(np.float32) * 3e-7).astype(np.float32)
    root = write_store(tmp_path / "s", near / np.float32(4096), [n], dtype=np.float32)
    shard = next((root / "img_emb").glob("*.npy"))
    before = os.stat(shard)
    q = (random_unit(15, d, seed=2) * 0.01 + base).astype(np.float32)
    search(EmbeddingStore(root), q, 3, screen="off", threads=1)  # norms kept
    np.save(tmp_path / "new.npy", near)
    os.replace(tmp_path / "new.npy", shard)
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(shard).st_size == before.st_size
    store = EmbeddingStore(root)
    want = brute_force(q, np.asarray(store.shards[0]), store.ids, 3)
    got = search(store, q, 3, screen="off", threads=1)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
