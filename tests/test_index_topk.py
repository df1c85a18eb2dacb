"""One top-k and one search contract: every searcher equals the brute-force reference.

Hand-computed cases for :func:`inquire.index.topk.topk`, then a property test: for random
small-integer embeddings (every score exact in float32, many ties), random masks and random
k, exact search (float32 and bfloat16-screened), the collection's filtered search (gather,
dense, screened, faiss) and a faiss ``Flat`` index all return exactly what
:func:`inquire.index.topk.brute_force` returns: the same ids, the same scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index.base import Searcher, check_mask
from inquire.index.exact import ExactIndex
from inquire.index.topk import PAD_ID, brute_force, padded, topk
from inquire.testing.search_stores import small_integer_vectors, write_store

# --------------------------------------------------------------------------------------------
# topk and brute_force by hand
# --------------------------------------------------------------------------------------------


def test_topk_by_hand() -> None:
    scores = np.array([[0.5, 0.75, 0.5, np.nan, 0.5, -0.0]], np.float32)
    ids = np.array([40, 7, 12, 1, 3, 2], np.int64)
    # 0.75 first; the three 0.5s by id (3, 12, 40); NaN never matches; -0.0 comes back 0.0.
    s, i = topk(scores, ids, 3)
    assert i.tolist() == [[7, 3, 12]] and s.tolist() == [[0.75, 0.5, 0.5]]
    s, i = topk(scores, ids, 7)
    assert i.tolist() == [[7, 3, 12, 40, 2, PAD_ID, PAD_ID]]
    assert s[0, 4] == 0.0 and not np.signbit(s[0, 4]) and np.isneginf(s[0, 5:]).all()
    # Per-query ids (faiss's answers): PAD_ID entries are padding, never results.
    s, i = topk(np.array([[1.0, 2.0, 2.0]], np.float32), np.array([[9, PAD_ID, 4]]), 2)
    assert i.tolist() == [[4, 9]] and s.tolist() == [[2.0, 1.0]]


def test_topk_and_brute_force_agree_on_ties() -> None:
    x = np.array([[1, 0], [0, 1], [1, 0], [1, 1], [0, 0]], np.float32)
    ids = np.array([30, 20, 10, 50, 40], np.int64)
    q = np.array([[1, 0], [0, 0]], np.float32)
    want_s = [[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    want_i = [[10, 30, 50, 20], [10, 20, 30, 40]]  # query 2: every score ties, ids decide
    for s, i in (brute_force(q, x, ids, 4), topk(q @ x.T, ids, 4)):
        assert s.tolist() == want_s and i.tolist() == want_i
    mask = np.array([True, False, False, True, True])
    s, i = brute_force(q, x, ids, 4, mask)
    assert i.tolist() == [[30, 50, 40, PAD_ID], [30, 40, 50, PAD_ID]]
    assert np.isneginf(s[:, 3]).all()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InputError, match="k must be a positive integer, got 0"):
        topk(np.zeros((1, 3), np.float32), np.arange(3), 0)
    with pytest.raises(InputError, match="do not fit"):
        topk(np.zeros((2, 3), np.float32), np.arange(4), 1)
    with pytest.raises(InputError, match=r"mask must be a \(5,\) bool array.*int64 \(5,\)"):
        check_mask(np.ones(5, np.int64), 5)
    with pytest.raises(InputError, match="nprobe go in params="):
        check_mask({"nprobe": 4}, 5)
    s, i = padded(np.ones((1, 2), np.float32), np.array([[3, 4]]), 4)
    assert i.tolist() == [[3, 4, -1, -1]] and np.isneginf(s[0, 2:]).all()


# --------------------------------------------------------------------------------------------
# Every searcher against brute_force
# --------------------------------------------------------------------------------------------


def _collection_index(store: EmbeddingStore, image_id: np.ndarray, ann: Any) -> Any:
    """A collection's search index over ``store`` (no collection folder needed): the rows
    whose ``image_id`` is -1 are invalid (deleted files)."""
    from inquire.collection.store import CollectionIndex

    n = len(store)
    return CollectionIndex(
        collection=None,
        store=store,
        image_id=image_id,
        days=np.zeros(n, np.int32),
        lat=np.zeros(n, np.float32),
        lon=np.zeros(n, np.float32),
        taxa={},
        folder=pd.Categorical([""] * n),
        generation=0,
        ann=ann,
    )


def _flat_index(store: EmbeddingStore) -> Any:
    import faiss

    from inquire.index.ann import AnnIndex

    flat = faiss.IndexFlatIP(store.dim)
    flat.add(np.asarray(store.rows(np.arange(len(store))), np.float32))
    return AnnIndex(store, "flat", {"factory": "Flat"}, flat, Path("flat.faiss"))


def _searchers(store: EmbeddingStore, image_id: np.ndarray) -> dict[str, tuple[Searcher, bool]]:
    """name -> (searcher, whether invalid rows are left out as the collection does)."""
    from inquire.collection.search import CollectionSearcher

    flat = _flat_index(store)
    plain = _collection_index(store, image_id, None)
    with_ann = _collection_index(store, image_id, flat)
    return {
        "exact": (ExactIndex(store, screen="off", block_rows=128, chunk_rows=64), False),
        "exact bf16": (ExactIndex(store, screen="bf16", block_rows=128, chunk_rows=64), False),
        "exact 2 threads": (ExactIndex(store, screen="off", threads=2, chunk_rows=32), False),
        "faiss Flat": (flat, False),
        "collection exact": (CollectionSearcher(plain, screen="off"), True),
        "collection bf16": (CollectionSearcher(plain, exact=True, screen="bf16"), True),
        "collection faiss": (CollectionSearcher(with_ann), True),
    }


@pytest.fixture(scope="module")
def stores(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[int, tuple[EmbeddingStore, np.ndarray]]:
    """Stores of small-integer vectors, by seed: duplicates and zero rows give many ties;
    ids are scattered int64 (some above 2**32, so exact search ranks ids internally)."""
    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    out = {}
    for seed in range(4):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 300))
        x = small_integer_vectors(n, 5, seed=seed, levels=1)
        x[rng.random(n) < 0.2] = x[0]  # duplicated rows
        x[rng.random(n) < 0.05] = 0.0
        ids = rng.choice(np.int64(2**40), size=n, replace=False) if seed % 2 else None
        sizes = [n // 2, n - n // 2] if n > 1 else None
        root = write_store(tmp_path_factory.mktemp(f"s{seed}"), x, sizes, ids=ids)
        store = EmbeddingStore(root)
        image_id = store.ids.copy()
        image_id[rng.random(n) < 0.1] = -1  # deleted files in the collection
        out[seed] = (store, image_id)
    return out


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 3),
    nq=st.integers(1, 3),
    k_frac=st.floats(0.0, 1.2),
    density=st.sampled_from([None, 0.0, 0.03, 0.3, 0.9, 1.0]),
    qseed=st.integers(0, 2**16),
)
def test_every_searcher_equals_brute_force(
    stores: dict[int, tuple[EmbeddingStore, np.ndarray]],
    seed: int,
    nq: int,
    k_frac: float,
    density: float | None,
    qseed: int,
) -> None:
    store, image_id = stores[seed]
    n = len(store)
    rng = np.random.default_rng(qseed)
    q = rng.integers(-2, 3, size=(nq, store.dim)).astype(np.float32)
    k = max(1, int(k_frac * n))
    mask = None if density is None else rng.random(n) < density
    x = np.asarray(store.rows(np.arange(n)), np.float32)
    for name, (searcher, drops_invalid) in _searchers(store, image_id).items():
        assert isinstance(searcher, Searcher)
        allowed = np.ones(n, bool) if mask is None else mask
        if drops_invalid:
            allowed = allowed & (image_id >= 0)
        want_s, want_i = brute_force(q, x, store.ids, k, allowed)
        got_s, got_i = searcher.search(q, k, mask)
        assert got_s.dtype == np.float32 and got_i.dtype == np.int64, name
        assert got_s.shape == got_i.shape == (nq, k), name
        np.testing.assert_array_equal(got_i, want_i, err_msg=name)
        np.testing.assert_array_equal(got_s, want_s, err_msg=name)


def test_faiss_completes_a_tie_group_at_the_cut(tmp_path: Path) -> None:
    """50 identical rows, k = 10: faiss alone may keep any 10 of them; the rule keeps the
    10 smallest ids, as exact search does."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    x = np.ones((200, 4), np.float32) / 8
    x[50:] = small_integer_vectors(150, 4, seed=4, levels=1) - 0.5  # all below the ties
    ids = rng.permutation(10_000)[:200].astype(np.int64)
    store = EmbeddingStore(write_store(tmp_path / "s", x, ids=ids))
    q = np.ones((2, 4), np.float32)
    flat = _flat_index(store)
    s, i = flat.search(q, 10)
    assert i[0].tolist() == sorted(ids[:50].tolist())[:10] and (s == 0.5).all()
    ref_s, ref_i = ExactIndex(store).search(q, 10)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s)
