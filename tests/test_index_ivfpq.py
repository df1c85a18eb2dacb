"""The partitioned IVF-PQ index: exact rescoring, the filter router, partitions, appends.

Every result is held to the slow obvious reference (``brute_force``) where the settings make
the search exhaustive, and measured as recall against exact search where they do not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index import ivfpq, ivfpq_build
from inquire.index.ann import recall_at_k
from inquire.index.topk import brute_force
from inquire.testing.clustered import ClusterSpec, queries, selectivity_masks, write_clustered
from inquire.testing.search_stores import random_unit, write_store

pytest.importorskip("faiss")

D = 32
SMALL = ivfpq.ScaleSettings(nlist=16, pq_m=8, partition_rows=1000, exact_below=0)


def _all_rows(store: EmbeddingStore) -> np.ndarray:
    return np.vstack([np.asarray(s) for s in store.shards])


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> EmbeddingStore:
    """3000 unit rows in 6 shards; rows 100..119 repeat rows 0..19 (ties), ids shuffled."""
    x = random_unit(3000, D, seed=3)
    x[100:120] = x[0:20]
    ids = np.random.default_rng(1).permutation(10_000)[:3000].astype(np.int64)
    root = write_store(tmp_path_factory.mktemp("s") / "emb", x, [500] * 6, ids=ids)
    return EmbeddingStore(root)


def _masks(n: int) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(0)
    return {
        "all": None,
        "half": rng.random(n) < 0.5,
        "1%": rng.random(n) < 0.01,
        "five": np.isin(np.arange(n), [5, 17, 100, 2999, 1500]),
        "none": np.zeros(n, bool),
    }


@pytest.mark.parametrize("route", ["ivf", "exact"])
def test_exhaustive_partitioned_equals_single_equals_brute_force(small_store, tmp_path, route):
    """nprobe = nlist and k x r >= rows: every row is a candidate, so the result is exact."""
    multi = ivfpq.build(small_store, tmp_path / "multi", SMALL)
    single = ivfpq.build(
        small_store,
        tmp_path / "single",
        ivfpq.ScaleSettings(**{**_kw(SMALL), "partition_rows": 10**9}),
    )
    assert len(multi.partitions) == 3 and len(single.partitions) == 1
    a = ivfpq.ScaleIndex.open(small_store, tmp_path / "multi")
    b = ivfpq.ScaleIndex.open(small_store, tmp_path / "single")
    x = _all_rows(small_store)
    q = np.vstack([random_unit(3, D, seed=9), x[5:6].astype(np.float32)])  # a tied query
    k = 40
    for name, mask in _masks(len(x)).items():
        ref = brute_force(q, x, small_store.ids, k, mask)
        for idx in (a, b):
            got = idx.search(q, k, mask, nprobe=16, exact=route == "exact")
            np.testing.assert_array_equal(got[1], ref[1], err_msg=name)
            np.testing.assert_array_equal(got[0], ref[0], err_msg=name)


def _kw(s: ivfpq.ScaleSettings) -> dict:
    from dataclasses import asdict

    return asdict(s)


def test_exact_route_over_rows_equals_brute_force_with_ties(small_store):
    x = _all_rows(small_store)
    q = x[[0, 7]].astype(np.float32)  # rows 0 and 7 each have a duplicate: a tie at the top
    rows = np.arange(0, 3000, 3)
    res = ivfpq.exact_over_rows(small_store, q, rows, 10)
    mask = np.zeros(3000, bool)
    mask[rows] = True
    ref = brute_force(q, x, small_store.ids, 10, mask)
    got = ivfpq.merge([res], small_store.ids, 2, 10)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[0], ref[0])


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    spec = ClusterSpec(d=64, clusters=200, seed=4)
    root = tmp_path_factory.mktemp("c") / "emb"
    meta = write_clustered(root, 60_000, spec, shard_rows=10_000)
    return spec, EmbeddingStore(root), meta


def test_recall_at_every_selectivity(clustered, tmp_path):
    """Default search settings, IVF route forced for every filter: recall@100 >= 0.95."""
    spec, store, meta = clustered
    settings = ivfpq.ScaleSettings(pq_m=16, partition_rows=20_000, exact_below=0)
    ivfpq.build(store, tmp_path / "idx", settings)
    idx = ivfpq.ScaleIndex.open(store, tmp_path / "idx")
    q = queries(spec, 20)
    for name, m in selectivity_masks(meta).items():
        mask = None if m.all() else m
        s, i = idx.search(q, 100, mask)
        _, ei = idx.search(q, 100, mask, exact=True)
        assert recall_at_k(i, ei, 100) >= 0.95, name
        # Returned scores are exact scores: each equals the exact score of its row.
        found = i >= 0
        assert (found == (ei >= 0)).all()
        rows = small_rows(store, i[found])
        x = np.vstack([np.asarray(sh) for sh in store.shards])[rows]
        qq = np.repeat(q, found.sum(axis=1), axis=0)
        np.testing.assert_array_equal(
            s[found],
            (np.einsum("nd,nd->n", x.astype(np.float64), qq.astype(np.float64))).astype(np.float32),
        )


def small_rows(store: EmbeddingStore, ids: np.ndarray) -> np.ndarray:
    return store.row_of(ids)


def test_widened_nprobe_keeps_recall_under_a_filter(clustered, tmp_path):
    """Asked for nprobe=1 under a 1% filter, the router widens it and recall stays high."""
    spec, store, meta = clustered
    ivfpq.build(
        store, tmp_path / "idx", ivfpq.ScaleSettings(pq_m=16, partition_rows=10**9, exact_below=0)
    )
    idx = ivfpq.ScaleIndex.open(store, tmp_path / "idx")
    q = queries(spec, 20)
    m = selectivity_masks(meta)["1%"]
    _, ei = idx.search(q, 100, m, exact=True)
    _, narrow = idx.search(q, 100, m, nprobe=1)
    route = idx.route(100, m, nprobe=1)
    assert route.nprobe > 1  # widened for a 1% filter
    assert recall_at_k(narrow, ei, 100) >= 0.95


def test_router_and_widening():
    man = ivfpq.Manifest(64, 256, "IVF256,PQ8x8", ivfpq.ScaleSettings(nprobe=16, exact_below=500))
    assert ivfpq.choose_route(man, 10, 400, 100_000, None).exact
    assert ivfpq.choose_route(man, 1000, 900, 100_000, None).exact  # k above the threshold
    r = ivfpq.choose_route(man, 10, 100_000, 100_000, None)
    assert (r.exact, r.nprobe, r.candidates) == (False, 16, 10 * man.settings.rescore)
    assert ivfpq.choose_route(man, 10, 50_000, 100_000, None).nprobe == 32  # 16 / 50%
    assert ivfpq.choose_route(man, 10, 10_000, 100_000, None).nprobe == 160  # 16 / 10%
    # Widened to every list of 10**9 rows: the IVF route would scan them all, so the 600
    # selected rows are searched exactly; the threshold given alone (as the recall
    # measurement does) takes the IVF route, capped at nlist.
    assert ivfpq.choose_route(man, 10, 600, 10**9, None).exact
    assert ivfpq.choose_route(man, 10, 600, 10**9, None, exact_below=500).nprobe == 256
    # The cost rule at its boundary: 100,000 rows, nprobe 16 of 256 widened by 1/share.
    # 4,000 selected: nprobe 256 (all 100k codes) >= 4,000 x 40 rows' cost? 160k > 100k: IVF.
    assert not ivfpq.choose_route(man, 10, 4_000, 100_000, None).exact
    # 2,500 selected: 2,500 x 40 = 100k <= 100k codes scanned: exact.
    assert ivfpq.choose_route(man, 10, 2_500, 100_000, None).exact
    assert not ivfpq.choose_route(man, 10, 2_501, 100_000, None).exact
    off = ivfpq.Manifest(64, 256, "IVF256,PQ8x8", ivfpq.ScaleSettings(nprobe=16, exact_below=0))
    assert not ivfpq.choose_route(off, 10, 600, 10**9, None).exact  # 0 in the settings: IVF
    assert ivfpq.widened_nprobe(16, 256, 0.0) == 256


def test_append_grows_the_last_partition_and_tail_is_searched(tmp_path):
    x = random_unit(5000, D, seed=5)
    root = tmp_path / "emb"
    write_store(root, x[:3000], [1000, 1000, 1000])
    settings = ivfpq.ScaleSettings(nlist=16, pq_m=8, partition_rows=2000, exact_below=0)
    man = ivfpq.build(EmbeddingStore(root), tmp_path / "idx", settings)
    assert [(p.lo, p.hi) for p in man.partitions] == [(0, 2000), (2000, 3000)]
    trained = (tmp_path / "idx" / ivfpq.TRAINED).read_bytes()
    from inquire.embed.folder import write_shard

    for s, lo in ((3, 3000), (4, 4000)):
        write_shard(
            root,
            s,
            x[lo : lo + 1000],
            [f"p{i}" for i in range(lo, lo + 1000)],
            np.arange(lo, lo + 1000),
        )
    store = EmbeddingStore(root)
    q = random_unit(3, D, seed=6)
    ref = brute_force(q, _all_rows(store), np.arange(5000), 30)
    # Before the update: rows 3000.. are in no partition and are searched exactly.
    stale = ivfpq.ScaleIndex.open(store, tmp_path / "idx")
    np.testing.assert_array_equal(stale.search(q, 30, nprobe=16)[1], ref[1])
    man = ivfpq.build(store, tmp_path / "idx")
    assert [(p.lo, p.hi) for p in man.partitions] == [(0, 2000), (2000, 4000), (4000, 5000)]
    assert (tmp_path / "idx" / ivfpq.TRAINED).read_bytes() == trained  # not retrained
    idx = ivfpq.ScaleIndex.open(store, tmp_path / "idx")
    got = idx.search(q, 30, nprobe=16)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[0], ref[0])
    # Settings that change how it is built are refused without a rebuild.
    with pytest.raises(InputError, match="rebuild"):
        ivfpq.build(store, tmp_path / "idx", ivfpq.ScaleSettings(nlist=32, pq_m=8))


def test_interrupted_build_resumes(small_store, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ivfpq.encode_partition

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ivfpq_build, "encode_partition", flaky)
    with pytest.raises(KeyboardInterrupt):
        ivfpq.build(small_store, tmp_path / "idx", SMALL)
    man = ivfpq.read_manifest(tmp_path / "idx")
    assert man is not None and [p.number for p in man.partitions] == [0]
    man = ivfpq.build(small_store, tmp_path / "idx", SMALL)  # resumes: partitions 1 and 2
    assert [(p.lo, p.hi) for p in man.partitions] == [(0, 1000), (1000, 2000), (2000, 3000)]
    assert calls["n"] == 4
    x = _all_rows(small_store)
    q = random_unit(2, D, seed=2)
    got = ivfpq.ScaleIndex.open(small_store, tmp_path / "idx").search(q, 20, nprobe=16)
    np.testing.assert_array_equal(got[1], brute_force(q, x, small_store.ids, 20)[1])


def test_bad_settings_are_refused(small_store, tmp_path):
    with pytest.raises(InputError, match="pq_m 7 does not divide"):
        ivfpq.build(small_store, tmp_path / "a", ivfpq.ScaleSettings(pq_m=7))
    with pytest.raises(InputError, match="at least 4096 rows"):
        ivfpq.build(small_store, tmp_path / "b", ivfpq.ScaleSettings(nlist=4096, pq_m=8))
    with pytest.raises(InputError, match="rescore must be at least 1"):
        ivfpq.ScaleSettings(rescore=0).check()
    with pytest.raises(InputError, match="no partitioned index"):
        ivfpq.ScaleIndex.open(small_store, tmp_path / "nothing")


def test_index_files_are_memory_mapped_and_small(small_store, tmp_path):
    ivfpq.build(small_store, tmp_path / "idx", SMALL)
    idx = ivfpq.ScaleIndex.open(small_store, tmp_path / "idx")
    backend = idx.backend
    assert isinstance(backend, ivfpq.LocalBackend)
    # PQ8 codes + 8-byte ids per row; the mapping keeps them out of the heap.
    assert backend.code_bytes() == 3000 * (8 + 8)
    import faiss

    for p in backend.parts:
        invlists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(p.index).invlists)
        assert isinstance(invlists, faiss.OnDiskInvertedLists)  # codes read from the file
    assert Path(tmp_path / "idx" / "part_0.faiss").is_file()


@pytest.mark.parametrize(
    ("dim", "named"), [(11, "1, 11"), (100, "1, 2, 4, 5, 10, 20, 25, 50, 100")]
)
def test_a_pq_size_that_does_not_divide_an_odd_dimension_names_its_divisors(
    dim: int, named: str
) -> None:
    """No usual PQ size divides 11 or 100: the message names the sizes that do."""
    with pytest.raises(InputError, match=f"one of {named} "):
        ivfpq.ScaleSettings(pq_m=64).check(dim)
    assert ivfpq.ScaleSettings(pq_m=11).check(11).pq_m == 11


def test_the_shards_are_advised_random_access_and_results_do_not_change(small_store):
    """Opening a partition advises MADV_RANDOM on every memory-mapped shard (no read-ahead
    around scattered row reads); gathered rows are the rows."""
    import mmap

    from inquire.index.ivfpq_exact import advise_random, gather

    store = small_store
    x = _all_rows(store)
    calls: list[int] = []

    class _Map:
        def madvise(self, advice: int) -> None:
            calls.append(advice)

    class _Shard:
        _mmap = _Map()

    fake = type("S", (), {"shards": [_Shard(), _Shard(), object()], "offsets": None, "dim": D})
    assert advise_random(fake) == 2 and calls == [mmap.MADV_RANDOM] * 2
    assert advise_random(store) == len(store.shards) == 6  # real memory maps accept it
    rows = np.array([2999, 0, 1500, 999, 1000, 500])
    np.testing.assert_array_equal(gather(store, rows), x[rows])
    # any order, repeats, every shard, none
    rows = np.random.default_rng(0).integers(0, len(store), 500)
    np.testing.assert_array_equal(
        gather(store, np.concatenate([rows, rows[::-1]])), x[[*rows, *rows[::-1]]]
    )
    assert gather(store, np.zeros(0, np.int64)).shape == (0, D)
