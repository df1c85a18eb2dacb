"""faiss indexes over a store: build, save, load memory-mapped, parameters, staleness."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError, UnknownNameError
from inquire.index.ann import (
    AnnIndex,
    StaleIndexError,
    build_index,
    default_name,
    list_indexes,
    parse_params,
    recall_at_k,
)
from inquire.index.exact import search
from inquire.testing.search_stores import random_unit, write_store


@pytest.fixture
def store(tmp_path):
    ids = np.arange(3000, dtype=np.int64) * 2 + 11
    return EmbeddingStore(
        write_store(tmp_path / "emb", random_unit(3000, 16, seed=1), [1000, 2000], ids=ids)
    )


@pytest.fixture
def queries():
    return random_unit(12, 16, seed=2)


def test_flat_index_equals_exact_and_sidecar(store, queries):
    path = build_index(store, "Flat")
    assert path == store.root / "index" / "flat.faiss"
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["factory"] == "Flat" and info["count"] == 3000 and info["dim"] == 16
    assert info["metric"] == "inner_product" and len(info["store_fingerprint"]) == 32
    ix = AnnIndex.load(store, "flat")
    s, i = ix.search(queries, 20)
    es, ei = search(store, queries, 20)
    np.testing.assert_array_equal(i, ei)  # ids are the store's image ids, not faiss rows
    np.testing.assert_allclose(s, es, atol=1e-5)
    assert list_indexes(store.root) == ["flat"]


def test_ivf_all_lists_probed_is_exact(store, queries):
    build_index(store, "IVF8,Flat", name="ivf")
    ix = AnnIndex.load(store, "ivf")
    _, ei = search(store, queries, 30)
    _, few = ix.search(queries, 30, params={"nprobe": 1})
    _, all_lists = ix.search(queries, 30, params={"nprobe": 8})
    assert recall_at_k(all_lists, ei) == 1.0
    assert recall_at_k(few, ei) < 1.0  # one of eight lists misses neighbours on random data


def test_hnsw_and_pq_build_and_search(store, queries):
    build_index(store, "HNSW16", name="hnsw")
    build_index(store, "IVF4,PQ4x4", name="pq", train_size=2000)
    _, ei = search(store, queries, 10)
    _, hi = AnnIndex.load(store, "hnsw").search(queries, 10, params=parse_params(["efSearch=256"]))
    assert recall_at_k(hi, ei) > 0.9
    _, pi = AnnIndex.load(store, "pq").search(queries, 10, params={"nprobe": 4})
    assert pi.shape == (12, 10) and (pi >= 0).all()
    assert set(list_indexes(store.root)) == {"hnsw", "pq"}


def test_results_padded_when_fewer_found(store, queries):
    build_index(store, "IVF8,Flat", name="ivf")
    s, i = AnnIndex.load(store, "ivf").search(queries, 2900, params={"nprobe": 1})
    assert (i == -1).any() and np.isneginf(s[i == -1]).all()
    assert np.all(np.diff(np.where(np.isneginf(s), -1e9, s), axis=1) <= 0)


def test_stale_index_is_refused(tmp_path, queries):
    root = write_store(tmp_path / "emb", random_unit(500, 16, seed=3))
    build_index(EmbeddingStore(root), "Flat")
    write_store(root, random_unit(500, 16, seed=4))  # same shape, new contents
    with pytest.raises(StaleIndexError, match="rebuild"):
        AnnIndex.load(EmbeddingStore(root), "flat")
    write_store(root, random_unit(600, 16, seed=4))  # different count
    with pytest.raises(StaleIndexError, match="600"):
        AnnIndex.load(EmbeddingStore(root), "flat")


def test_errors(store):
    with pytest.raises(InputError, match="factory string 'IVFx,Nope'"):
        build_index(store, "IVFx,Nope")
    build_index(store, "Flat")
    with pytest.raises(InputError, match="already exists"):
        build_index(store, "Flat")
    build_index(store, "Flat", overwrite=True)
    with pytest.raises(UnknownNameError, match="'flat'"):
        AnnIndex.load(store, "flatt")
    with pytest.raises(InputError, match="no search parameter 'nprobe'"):
        AnnIndex.load(store, "flat").set_params({"nprobe": 4})
    with pytest.raises(InputError, match="must be letters"):
        build_index(store, "Flat", name="../x")


def test_parse_params_and_names():
    assert parse_params(["nprobe=16", "efSearch = 64"]) == {"nprobe": 16.0, "efSearch": 64.0}
    assert parse_params(None) == {}
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_params(["nprobe"])
    with pytest.raises(InputError, match="needs a number"):
        parse_params(["nprobe=many"])
    assert default_name("IVF4096,PQ64") == "ivf4096_pq64"


def test_recall_at_k_by_hand():
    exact = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    approx = np.array([[4, 9, 1, 8], [6, 7, 5, -1]])
    # query 1: {1,4} of {1,2,3,4} = 0.5; query 2: {5,6} of {5,6} = 1.0
    assert recall_at_k(approx, exact) == pytest.approx(0.75)
    # at k=2: query 1: top-2 exact {1,2}, approx {4,9} -> 0; query 2: {5,6} vs {6,7} -> 0.5
    assert recall_at_k(approx, exact, k=2) == pytest.approx(0.25)
    with pytest.raises(InputError, match="same nq"):
        recall_at_k(approx[:1], exact)
