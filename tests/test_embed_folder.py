"""Shard names of the clip-retrieval layout: padded and unpadded numbers, pairing, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inquire.embed import EmbeddingStore
from inquire.embed.folder import list_shards, shard_numbers
from inquire.errors import InputError


def _write(root: Path, emb_names: list[str], meta_names: list[str], rows: int = 2) -> None:
    """Shard k (k = the number in the name) holds rows whose vectors and paths encode k."""
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for name in emb_names:
        k = int(name.removeprefix("img_emb_").removesuffix(".npy"))
        x = np.zeros((rows, 4), np.float16)
        x[:, k % 4] = 1
        np.save(root / "img_emb" / name, x)
    for name in meta_names:
        k = int(name.removeprefix("metadata_").removesuffix(".parquet"))
        paths = [f"shard{k}/img{j}" for j in range(rows)]
        pq.write_table(pa.table({"image_path": paths}), root / "metadata" / name)


def _clip_retrieval_names(count: int) -> tuple[list[str], list[str]]:
    """The names clip-retrieval's writer gives ``count`` partitions (zero-padded to the width
    of ``count`` from ten partitions on)."""
    width = len(str(count))  # == int(log10(count)) + 1
    nums = [str(i).zfill(width) for i in range(count)]
    return [f"img_emb_{n}.npy" for n in nums], [f"metadata_{n}.parquet" for n in nums]


@pytest.mark.parametrize("count", [1, 3, 12, 101])
def test_clip_retrieval_names_read_in_numeric_order(tmp_path, count):
    embs, metas = _clip_retrieval_names(count)
    if count == 12:
        assert (
            embs[:2] == ["img_emb_00.npy", "img_emb_01.npy"] and metas[-1] == "metadata_11.parquet"
        )
    _write(tmp_path, embs, metas, rows=1)
    assert shard_numbers(tmp_path) == list(range(count))
    store = EmbeddingStore(tmp_path)
    assert store.shard_indices == list(range(count))
    # Every row sits with its own shard's metadata (vector column k % 4, path "shard{k}/...").
    paths = store.metadata["image_path"].tolist()
    assert paths == [f"shard{k}/img0" for k in range(count)]
    hot = np.argmax(store.rows(np.arange(len(store))), axis=1)
    assert hot.tolist() == [k % 4 for k in range(count)]


def test_unpadded_names_beyond_nine_are_numeric_not_lexicographic(tmp_path):
    names = [f"img_emb_{i}.npy" for i in range(12)]
    _write(tmp_path, names, [f"metadata_{i}.parquet" for i in range(12)])
    store = EmbeddingStore(tmp_path)
    assert [p.name for p in store.shard_paths][:3] == [
        "img_emb_0.npy",
        "img_emb_1.npy",
        "img_emb_2.npy",
    ]
    assert store.shard_paths[-1].name == "img_emb_11.npy"
    assert store.metadata["image_path"].tolist()[-2:] == ["shard11/img0", "shard11/img1"]


def test_padding_may_differ_between_the_two_sides(tmp_path):
    _write(
        tmp_path, ["img_emb_00.npy", "img_emb_01.npy"], ["metadata_0.parquet", "metadata_1.parquet"]
    )
    shards = list_shards(tmp_path)
    assert [(s.number, s.embeddings.name, s.metadata.name) for s in shards if s.metadata] == [
        (0, "img_emb_00.npy", "metadata_0.parquet"),
        (1, "img_emb_01.npy", "metadata_1.parquet"),
    ]
    assert EmbeddingStore(tmp_path).metadata["image_path"].tolist()[2] == "shard1/img0"


def test_unpaired_numbers_are_refused_naming_the_files(tmp_path):
    _write(tmp_path, ["img_emb_00.npy", "img_emb_01.npy", "img_emb_02.npy"],
           ["metadata_00.parquet", "metadata_01.parquet", "metadata_03.parquet"])  # fmt: skip
    with pytest.raises(InputError, match=r"img_emb_02\.npy.*metadata_03\.parquet.*same number"):
        EmbeddingStore(tmp_path)


def test_two_names_for_one_number_are_refused(tmp_path):
    _write(tmp_path, ["img_emb_1.npy", "img_emb_01.npy"], ["metadata_1.parquet"])
    with pytest.raises(InputError, match=r"2 files for shard 1: img_emb_01\.npy, img_emb_1\.npy"):
        EmbeddingStore(tmp_path)
    (tmp_path / "img_emb" / "img_emb_01.npy").unlink()
    _write(tmp_path, [], ["metadata_01.parquet"])
    with pytest.raises(InputError, match=r"files for shard 1: metadata_01.*metadata_1"):
        EmbeddingStore(tmp_path)


def test_metadata_left_by_an_interrupted_write_is_ignored(tmp_path, caplog):
    _write(tmp_path, ["img_emb_0.npy"], ["metadata_0.parquet", "metadata_1.parquet"])
    store = EmbeddingStore(tmp_path)
    assert len(store) == 2 and store.shard_indices == [0]
    assert "metadata_1.parquet" in caplog.text


def test_manifest_numbers_pair_with_padded_names(tmp_path):
    embs, metas = _clip_retrieval_names(11)
    _write(tmp_path, embs, metas)
    manifest = {"model_id": "m", "shards": [{"index": i} for i in (0, 1, 10)]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    store = EmbeddingStore(tmp_path)
    assert store.shard_indices == [0, 1, 10]
    assert [p.name for p in store.metadata_paths] == [
        "metadata_00.parquet", "metadata_01.parquet", "metadata_10.parquet",
    ]  # fmt: skip


def test_fullrank_reads_the_padded_metadata(tmp_path):
    from inquire.eval.fullrank import store_has_image_ids

    _write(tmp_path, ["img_emb_00.npy"], ["metadata_00.parquet"])
    assert store_has_image_ids(EmbeddingStore(tmp_path)) is False
