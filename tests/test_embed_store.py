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
from inquire.testing.search_stores import random_unit, write_store


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


def test_folder_state_changes_with_every_kind_of_rewrite(tmp_path):
    """folder_state tells the folder a store opened from the folder after a shard was
    added, removed or renamed over, or the manifest written; listing it again without a
    change gives the same value."""
    from inquire.embed.folder import emb_dir, folder_state, write_manifest, write_shard

    write_store(tmp_path, random_unit(6, 4), [3, 3])
    before = folder_state(tmp_path)
    assert folder_state(tmp_path) == before
    states = [before]
    write_shard(tmp_path, 1, random_unit(3, 4, seed=1), ["a", "b", "c"], [7, 8, 9])  # replaced
    states.append(folder_state(tmp_path))
    write_shard(tmp_path, 2, random_unit(2, 4, seed=2), ["d", "e"], [10, 11])  # added
    states.append(folder_state(tmp_path))
    (emb_dir(tmp_path) / "img_emb_2.npy").unlink()  # removed
    states.append(folder_state(tmp_path))
    write_manifest(tmp_path, {"shards": [{"index": 0}, {"index": 1}]})
    states.append(folder_state(tmp_path))
    assert len(set(states)) == len(states)
    assert folder_state(tmp_path / "nothing") != folder_state(tmp_path)


def test_open_settled_opens_again_a_folder_written_while_it_was_opened(tmp_path, monkeypatch):
    """A writer renaming new shard files in while the store is being opened: the store
    opened then may hold the old embeddings with the new metadata (read after them). The
    folder is opened again; the store returned holds the folder as it is, with its state."""
    import inquire.embed.store as store_mod
    from inquire.embed.folder import folder_state

    write_store(tmp_path, random_unit(4, 4), [2, 2])
    calls = [0]

    def rewritten_on_second_look(root):
        calls[0] += 1
        if calls[0] == 2:  # after the first opening, before its check
            write_store(root, random_unit(4, 4, seed=5), [2, 2], ids=np.arange(50, 54))
        return folder_state(root)

    monkeypatch.setattr(store_mod, "folder_state", rewritten_on_second_look)
    store, state = store_mod.open_settled(tmp_path)
    assert store.ids.tolist() == [50, 51, 52, 53]
    np.testing.assert_allclose(
        store.rows([0, 1, 2, 3]), random_unit(4, 4, seed=5).astype(np.float16), rtol=1e-3
    )
    assert state == folder_state(tmp_path)
    assert calls[0] == 4


def test_open_settled_gives_up_on_a_folder_that_keeps_changing(tmp_path, monkeypatch):
    import inquire.embed.store as store_mod

    write_store(tmp_path, random_unit(4, 4), [2, 2])
    states = iter(range(100))
    monkeypatch.setattr(store_mod, "folder_state", lambda root: next(states))
    with pytest.raises(InputError, match="changed each of the 3 times it was opened"):
        store_mod.open_settled(tmp_path)


def test_open_settled_reports_a_folder_that_cannot_be_opened(tmp_path):
    from inquire.embed.store import open_settled

    (tmp_path / "img_emb").mkdir()
    with pytest.raises(InputError, match="holds no img_emb"):
        open_settled(tmp_path)
