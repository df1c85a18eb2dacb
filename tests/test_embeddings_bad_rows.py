"""Embedding folders with a bad row: a NaN row is reported (how many, which), a repeated
image id is blamed on the metadata file that holds it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from inquire.embed import EmbeddingStore
from inquire.embed.folder import write_shard
from inquire.errors import InputError
from inquire.eval.fullrank import check_unique_ids
from inquire.index.exact import search


def _store(root: Path, ids: list[int], nan_rows: tuple[int, ...] = ()) -> EmbeddingStore:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((len(ids), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[list(nan_rows)] = np.nan
    half = len(ids) // 2
    write_shard(root, 0, emb[:half], [f"p{i}" for i in ids[:half]], ids[:half])
    write_shard(root, 1, emb[half:], [f"p{i}" for i in ids[half:]], ids[half:])
    return EmbeddingStore(root)


@pytest.mark.parametrize("screen", ["off", "auto"])
def test_nan_rows_are_reported_with_their_ids(tmp_path: Path, caplog, screen: str) -> None:
    ids = list(range(100, 140))
    store = _store(tmp_path / "e", ids, nan_rows=(3, 25))
    q = np.asarray(store.rows([0, 1]), np.float32)
    with caplog.at_level(logging.WARNING):
        _, got = search(store, q, k=40, screen=screen)
    assert 103 not in got and 125 not in got
    assert (got[:, -2:] == -1).all()  # 38 rows can be returned, the rest is padding
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "2 embedding row(s)" in msg and "image id(s) 103, 125" in msg


def test_clean_store_says_nothing(tmp_path: Path, caplog) -> None:
    store = _store(tmp_path / "e", list(range(10)))
    with caplog.at_level(logging.WARNING):
        search(store, np.asarray(store.rows([0]), np.float32), k=3)
    assert not [r for r in caplog.records if "NaN" in r.getMessage()]


def test_a_repeated_image_id_names_the_metadata_files(tmp_path: Path) -> None:
    store = _store(tmp_path / "e", [1, 2, 3, 4, 5, 2])
    with pytest.raises(InputError, match=r"lists image_id 2 2 times.*metadata_0.*metadata_1"):
        check_unique_ids(store)
    check_unique_ids(_store(tmp_path / "ok", [1, 2, 3, 4]))
