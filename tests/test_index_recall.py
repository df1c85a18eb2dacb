"""measure_recall: an index against exact search over a parameter grid, called directly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index.ann import AnnIndex, build_index, index_infos, recall_at_k
from inquire.index.exact import search
from inquire.index.recall import RECALL_COLUMNS, measure_recall
from inquire.testing.search_stores import random_unit, write_store


@pytest.fixture
def store(tmp_path):
    ids = np.arange(2000, dtype=np.int64) * 3 + 5
    return EmbeddingStore(
        write_store(tmp_path / "emb", random_unit(2000, 16, seed=4), [700, 1300], ids=ids)
    )


class _Table:
    """An encoder stand-in: each text is looked up in a table of vectors."""

    model_id = "table"
    revision = "0"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.dim = len(next(iter(vectors.values())))

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


def test_grid_rows_match_searches_done_by_hand(store):
    build_index(store, "IVF8,Flat", name="ivf")
    q = random_unit(9, 16, seed=5)
    res = measure_recall(store, "ivf", q, 10, [{"nprobe": 1}, {"nprobe": 8}, {}])
    assert (res.index, res.factory, res.n_queries, res.k) == ("ivf", "IVF8,Flat", 9, 10)
    assert list(res.table.columns) == list(RECALL_COLUMNS)
    assert res.table["params"].tolist() == [{"nprobe": 1}, {"nprobe": 8}, {}]
    _, exact_ids = search(store, q, 10)
    ix = AnnIndex.load(store, "ivf")
    want = [
        recall_at_k(ix.search(q, 10, params={"nprobe": 1})[1], exact_ids, 10),
        1.0,  # every list probed: exact
    ]
    assert res.table["recall"].tolist()[:2] == pytest.approx(want)
    assert res.table["recall"].between(0, 1).all()
    assert (res.table["exact_s"] > 0).all() and res.table["exact_s"].nunique() == 1
    np.testing.assert_allclose(res.table["speedup"], res.table["exact_s"] / res.table["index_s"])


def test_texts_are_embedded_and_checked(store):
    build_index(store, "Flat", name="flat")
    q = random_unit(2, 16, seed=6)
    enc = _Table({"a": q[0], "b": q[1]})
    res = measure_recall(store, "flat", ["a", "b"], 7, encoder=enc)  # type: ignore[arg-type]
    assert res.n_queries == 2 and res.table["recall"].tolist() == [1.0]
    assert res.table["params"].tolist() == [{}]
    wrong = _Table({"a": np.ones(8, np.float32)})
    with pytest.raises(InputError, match="dimension 8"):
        measure_recall(store, "flat", ["a"], 7, encoder=wrong)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="encoder"):
        measure_recall(store, "flat", ["a"], 7)


def test_bad_input(store):
    build_index(store, "IVF8,Flat", name="ivf")
    q = random_unit(2, 16, seed=7)
    with pytest.raises(InputError, match="efSearch"):
        measure_recall(store, "ivf", q, 5, [{"efSearch": 16}])
    with pytest.raises(InputError, match="grid is empty"):
        measure_recall(store, "ivf", q, 5, [])
    with pytest.raises(InputError, match="k must be"):
        measure_recall(store, "ivf", q, 0)
    with pytest.raises(InputError, match="no queries"):
        measure_recall(store, "ivf", q[:0], 5)


def test_index_infos(store, tmp_path):
    assert index_infos(store.root) == {}
    build_index(store, "Flat", name="flat")
    build_index(store, "IVF8,Flat", name="ivf")
    infos = index_infos(store.root)
    assert list(infos) == ["flat", "ivf"]
    assert infos["ivf"]["factory"] == "IVF8,Flat" and infos["flat"]["count"] == 2000
