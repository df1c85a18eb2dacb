"""The collection's masked exact top-k and ``topk`` apply the ranking rule of exact search."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inquire.collection import CollectionSearcher, create_collection
from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index.exact import search
from inquire.index.topk import topk
from inquire.testing.collection_encoder import make_photo_folder
from inquire.testing.search_stores import random_unit, write_store


def test_masked_search_with_full_mask_equals_exact_search_on_ties(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    make_photo_folder(folder, n=12, seed=11)
    photos = sorted(p for p in folder.rglob("*") if p.is_file())
    # Copies have the same pixels, hence the same embedding: many exact score ties.
    for i, p in enumerate(photos[:6]):
        for c in range(3):
            shutil.copy2(p, p.with_name(f"copy{c}_{i}{p.suffix}"))
    coll, _ = create_collection("ties", folder, "toy:colour")
    index = coll.index()
    assert bool(index.valid.all())
    store: EmbeddingStore = index.store
    q = random_unit(4, store.dim, seed=5)
    for k in (1, 5, 13, len(store), len(store) + 4):
        got_s, got_i = CollectionSearcher(index, exact=True).search(q, k, np.ones(len(store), bool))
        scores, rows = search(store, q, k)
        assert got_s.shape == got_i.shape == (len(q), k)  # both pad past N with -1 / -inf
        for r in range(len(q)):
            keep = rows[r] >= 0
            np.testing.assert_array_equal(got_i[r] >= 0, keep)
            ids, s = got_i[r][keep], got_s[r][keep]
            want_ids = index.image_id[np.searchsorted(store.ids, rows[r][keep])]
            np.testing.assert_array_equal(ids, want_ids)
            np.testing.assert_allclose(s, scores[r][keep], atol=1e-6)
            assert np.all(np.isneginf(got_s[r][~keep]))
            # the ties are really there, and they are ordered by id
            same = np.flatnonzero(np.diff(s) == 0)
            assert np.all(ids[same] < ids[same + 1])


def test_topk_leaves_out_nan_scores_like_exact_search(tmp_path: Path) -> None:
    vecs = random_unit(40, 8, seed=1)
    vecs[[3, 17, 18, 30]] = np.nan  # rows whose scores are NaN
    vecs[20:26] = vecs[5]  # ties
    ids = np.arange(40, dtype=np.int64)[::-1] * 3 + 7
    store = EmbeddingStore(write_store(tmp_path / "s", vecs, ids=ids, dtype=np.float32))
    q = random_unit(3, 8, seed=2)
    emb = np.asarray(store.rows(np.arange(40)), np.float32)
    for k in (1, 4, 10, 36, 40):
        scores, got_ids = search(store, q, k)
        s, i = topk((q @ emb.T).astype(np.float32), store.ids, k)
        np.testing.assert_array_equal(i, got_ids)
        np.testing.assert_allclose(s, scores, atol=1e-6)
        assert not np.isnan(s).any() and int((i >= 0).sum(axis=1).min()) == min(k, 36)


def test_masked_search_refuses_nan_queries_like_exact_search(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "p", n=4, seed=2)
    coll, _ = create_collection("nanq", tmp_path / "p", "toy:colour")
    index = coll.index()
    bad = np.full((1, index.store.dim), np.nan, np.float32)
    with pytest.raises(InputError, match="NaN"):
        CollectionSearcher(index, exact=True).search(bad, 3)
    with pytest.raises(InputError, match="NaN"):
        search(index.store, bad, 3)
