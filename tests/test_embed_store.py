"""EmbeddingStore on INQUIRE's published layout and on pipeline output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inquire.embed import EmbeddingStore
from inquire.errors import InputError


def _inquire_layout(root: Path, sizes=(5, 4), dim=8, seed=0) -> np.ndarray:
    """INQUIRE's published layout: float16 shards, metadata with image_path only (no .jpg,
    no image_id), no manifest."""
    rng = np.random.default_rng(seed)
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    blocks = []
    k = 0
    for i, n in enumerate(sizes):
        x = rng.standard_normal((n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(root / "img_emb" / f"img_emb_{i}.npy", x.astype(np.float16))
        paths = [f"train/0{j % 3}_Animalia_Chordata/{k + j:08x}-5e2b-4c1d" for j in range(n)]
        pq.write_table(pa.table({"image_path": paths}), root / "metadata" / f"metadata_{i}.parquet")
        blocks.append(x.astype(np.float16))
        k += n
    return np.vstack(blocks)


def test_inquire_published_layout_loads_as_is(tmp_path):
    emb = _inquire_layout(tmp_path)
    store = EmbeddingStore(tmp_path)
    assert (len(store), store.dim, store.manifest) == (9, 8, {})
    assert store.ids.tolist() == list(range(9))  # rows numbered in shard order
    np.testing.assert_array_equal(store.rows([7, 2]), emb[[7, 2]].astype(np.float32))
    store.check_normalized()
    # Annotations carry ".jpg"; the metadata does not. Both forms match.
    meta = store.metadata["image_path"].tolist()
    asked = [meta[6] + ".jpg", meta[0], "./" + meta[3] + ".JPG"]
    assert store.ids_for_paths(asked).tolist() == [6, 0, 3]
    assert store.row_of([6, 0]).tolist() == [6, 0]
    assert store.ids_for_paths(["train/x/nope.jpg"], missing="ignore").tolist() == [-1]
    with pytest.raises(InputError, match=r"1 image path\(s\) are not in the embedding store"):
        store.ids_for_paths(["train/x/nope.jpg"])


def test_row_of_with_ids_and_missing(tmp_path):
    _inquire_layout(tmp_path, sizes=(3,))
    pq.write_table(
        pa.table({"image_path": ["a.jpg", "b.jpg", "c.jpg"], "image_id": [30, 10, 20]}),
        tmp_path / "metadata" / "metadata_0.parquet",
    )
    store = EmbeddingStore(tmp_path)
    assert store.row_of([20, 30, 10]).tolist() == [2, 0, 1]
    assert store.row_of(np.array([20, 99]), missing="ignore").tolist() == [2, -1]
    with pytest.raises(InputError, match=r"image id\(s\) are not in.*\[99\]"):
        store.row_of([99])
    assert store.ids_for_paths(["b", "c.jpg"]).tolist() == [10, 20]


def test_dimension_and_normalisation_checks_name_the_numbers(tmp_path):
    _inquire_layout(tmp_path, sizes=(4,), dim=8)
    store = EmbeddingStore(tmp_path)
    with pytest.raises(InputError, match=r"dimension 512 but the image embeddings.*dimension 8"):
        store.check_queries(np.ones((2, 512), np.float32) / np.sqrt(512))
    q = np.ones((1, 8), np.float32)
    with pytest.raises(InputError, match=r"not L2-normalised.*max 2\.828"):
        store.check_queries(q)
    np.save(tmp_path / "img_emb" / "img_emb_0.npy", 3 * np.ones((4, 8), np.float16))
    with pytest.raises(InputError, match=r"image embeddings in .* min 8\.485"):
        EmbeddingStore(tmp_path).check_normalized()


def test_manifest_is_the_commit_record(tmp_path):
    _inquire_layout(tmp_path, sizes=(3, 3, 3))
    manifest = {
        "format": "inquire-embeddings/1",
        "model_id": "m",
        "shards": [{"index": 0}, {"index": 1}],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    store = EmbeddingStore(tmp_path)  # shard 2 is not committed: invisible
    assert len(store) == 6 and store.shard_indices == [0, 1]
    with pytest.raises(InputError, match="model m"):
        store.check_dim(4)
    (tmp_path / "img_emb" / "img_emb_1.npy").unlink()
    with pytest.raises(InputError, match=r"lists shard\(s\) \[1\]"):
        EmbeddingStore(tmp_path)
