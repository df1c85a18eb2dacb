"""One query check and one dimension check serve the store, exact search and full-rank."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.eval.fullrank import check_dims
from inquire.index.exact import check_queries, search
from inquire.testing.search_stores import random_unit, write_store


def _message(fn, *args) -> str:
    with pytest.raises(InputError) as info:
        fn(*args)
    return str(info.value)


def test_dimension_messages_are_the_same_everywhere(tmp_path: Path) -> None:
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(20, 8)))
    q = random_unit(2, 5)
    from_store = _message(store.check_queries, q, "queries")
    from_search = _message(search, store, q, 3)
    assert from_store == from_search
    assert "dimension 5 but the image embeddings" in from_search and "dimension 8" in from_search
    enc = SimpleNamespace(dim=5, model_id="m5")
    from_fullrank = _message(check_dims, enc, store)
    assert "text embeddings of model 'm5' have dimension 5" in from_fullrank
    assert from_fullrank.split(" have ", 1)[1] == from_store.split(" have ", 1)[1]


def test_non_finite_and_shape_checks_are_shared(tmp_path: Path) -> None:
    store = EmbeddingStore(write_store(tmp_path / "s", random_unit(20, 8)))
    bad = np.full((1, 8), np.nan, np.float32)
    # NaN rows would slip through a norm check (|NaN - 1| > tol is False): refused first.
    assert "NaN or infinite" in _message(store.check_queries, bad)
    assert _message(search, store, bad, 3) == _message(store.check_queries, bad, "queries")
    assert "(n, d) matrix" in _message(check_queries, store, np.zeros(8, np.float32))
    # exact search accepts unnormalised queries; the store's default check does not
    q = np.ones((1, 8), np.float32)
    assert check_queries(store, q).flags.c_contiguous
    assert "not L2-normalised" in _message(store.check_queries, q)
