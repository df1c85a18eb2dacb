"""The clip-retrieval layout through inquire.embed.folder: the writer, shard names (padded and
unpadded numbers), pairing, refusals, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inquire.embed import EmbeddingStore, folder
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


def _pad(root: Path, width: int) -> None:
    """Rename every shard file to clip-retrieval's zero-padded name of width ``width``."""
    for sub, prefix, suffix in (
        ("img_emb", "img_emb_", ".npy"),
        ("metadata", "metadata_", ".parquet"),
    ):
        for p in list((root / sub).iterdir()):
            n = int(p.name.removeprefix(prefix).removesuffix(suffix))
            p.rename(p.with_name(f"{prefix}{str(n).zfill(width)}{suffix}"))


@pytest.mark.parametrize("width", [0, 2, 3])
def test_write_shard_round_trips_through_the_reader(tmp_path, width):
    rng = np.random.default_rng(0)
    sizes = [3, 1, 4, 2, 5, 3, 1, 2, 2, 3, 4]  # eleven shards: numbers 0..10
    x = rng.standard_normal((sum(sizes), 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.permutation(1000)[: len(x)].astype(np.int64) + 5
    paths = [f"train/{i}" for i in ids]
    lo = 0
    for s, n in enumerate(sizes):
        e, m = folder.write_shard(tmp_path, s, x[lo : lo + n], paths[lo : lo + n], ids[lo : lo + n])
        assert (e.name, m.name) == (f"img_emb_{s}.npy", f"metadata_{s}.parquet")
        assert (e, m) == folder.shard_paths(tmp_path, s)
        lo += n
    if width:
        _pad(tmp_path, width)
        assert (tmp_path / "img_emb" / f"img_emb_{'1'.zfill(width)}.npy").is_file()
    assert shard_numbers(tmp_path) == list(range(11))
    store = EmbeddingStore(tmp_path)
    assert store.shard_indices == list(range(11)) and store.dtype == np.float16
    assert store.ids.tolist() == ids.tolist()
    assert store.metadata["image_path"].tolist() == paths
    assert np.allclose(store.rows(np.arange(len(x))), x, atol=1e-3)
    schema = pq.read_schema(store.metadata_paths[0])
    assert [(f.name, str(f.type)) for f in schema] == [
        ("image_path", "string"),
        ("image_id", "int64"),
    ]


def test_write_shard_without_ids_and_as_float32(tmp_path):
    x = np.eye(3, dtype=np.float32)
    folder.write_shard(tmp_path, 0, x, ["a", "b", "c"], dtype=np.float32)
    store = EmbeddingStore(tmp_path)
    assert store.dtype == np.float32 and np.array_equal(store.rows([0, 1, 2]), x)
    assert pq.read_schema(store.metadata_paths[0]).names == ["image_path"]
    assert store.ids.tolist() == [0, 1, 2]  # INQUIRE's layout: ids are row numbers
    folder.write_shard(tmp_path, 1, np.zeros((0, 3)), [], dtype=np.float32)  # empty: valid
    assert len(EmbeddingStore(tmp_path)) == 3 and shard_numbers(tmp_path) == [0, 1]


def test_write_shard_refuses_what_readers_could_not_read(tmp_path):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(InputError, match=r"shard 3: 2 embedding rows but 1 image paths"):
        folder.write_shard(tmp_path, 3, x, ["a"])
    with pytest.raises(InputError, match=r"2 image paths and 3 image ids"):
        folder.write_shard(tmp_path, 3, x, ["a", "b"], [1, 2, 3])
    with pytest.raises(InputError, match=r"\(n, d\) matrix, got \(4,\)"):
        folder.write_shard(tmp_path, 3, x[0], ["a"])
    with pytest.raises(InputError, match="float16 or float32, got"):
        folder.write_shard(tmp_path, 3, x, ["a", "b"], dtype=np.float64)
    with pytest.raises(InputError, match=">= 0, got -1"):
        folder.write_shard(tmp_path, -1, x, ["a", "b"])
    assert not (tmp_path / "img_emb").exists() and not (tmp_path / "metadata").exists()


def test_metadata_is_written_before_embeddings(tmp_path, monkeypatch, caplog):
    """A writer killed between its two files leaves a shard the readers ignore."""
    folder.write_shard(tmp_path, 0, np.eye(2, dtype=np.float32), ["a", "b"])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        folder.write_shard(tmp_path, 1, np.eye(2, dtype=np.float32), ["c", "d"])
    monkeypatch.undo()
    assert (tmp_path / "metadata" / "metadata_1.parquet").is_file()
    assert not (tmp_path / "img_emb" / "img_emb_1.npy").exists()
    assert not list((tmp_path / "img_emb").glob(".*.tmp"))  # the temporary file went too
    store = EmbeddingStore(tmp_path)
    assert store.shard_indices == [0] and "metadata_1.parquet" in caplog.text
    # The next writer of that number replaces the orphan.
    folder.write_shard(tmp_path, 1, np.eye(2, dtype=np.float32), ["e", "f"])
    assert EmbeddingStore(tmp_path).metadata["image_path"].tolist() == ["a", "b", "e", "f"]


def test_prepare_and_remove_keep_everything_but_the_layout(tmp_path):
    folder.write_shard(tmp_path, 0, np.eye(2, dtype=np.float32), ["a", "b"])
    _pad(tmp_path, 2)
    folder.write_manifest(tmp_path, {"shards": [{"index": 0}]})
    (tmp_path / "img_emb" / ".img_emb_1.npy.x.tmp").write_bytes(b"half")
    (tmp_path / "img_emb" / "notes.txt").write_text("mine")
    (tmp_path / "index").mkdir()
    folder.prepare_folder(tmp_path)
    assert sorted(p.name for p in (tmp_path / "img_emb").iterdir()) == [
        "img_emb_00.npy",
        "notes.txt",
    ]
    assert folder.read_manifest(tmp_path) == {"shards": [{"index": 0}]}
    folder.remove_shards(tmp_path)
    assert [p.name for p in (tmp_path / "img_emb").iterdir()] == ["notes.txt"]
    assert not list((tmp_path / "metadata").iterdir()) and (tmp_path / "index").is_dir()
    assert folder.read_manifest(tmp_path) is None


@pytest.mark.parametrize(
    ("text", "what"),
    [('{"shards": [', "is not readable JSON"), ("[1, 2]", "is not an embedding manifest"),
     ('{"shards": 3}', "is not an embedding manifest")],
)  # fmt: skip
def test_a_damaged_manifest_names_the_file_and_the_fix(tmp_path, text, what):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(InputError, match=rf"manifest\.json' {what}.*start again"):
        folder.read_manifest(tmp_path, fix="start again")


def test_image_path_candidates() -> None:
    # INQUIRE's metadata records iNat24 paths without ".jpg"; named files stay as they are.
    assert folder.image_path_candidates("train/a") == ("train/a", "train/a.jpg")
    assert folder.image_path_candidates("train/a.b") == ("train/a.b", "train/a.b.jpg")
    assert folder.image_path_candidates("x/b.png") == ("x/b.png",)
    assert folder.image_path_candidates("x/B.JPEG") == ("x/B.JPEG",)


def test_two_stage_and_web_images_find_the_same_file(tmp_path: Path) -> None:
    from inquire.eval.two_stage import image_resolver
    from inquire.web.images import ImageRoots

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.jpg").write_bytes(b"x")
    (tmp_path / "t" / "b.png").write_bytes(b"x")
    paths = {1: "t/a", 2: "t/a.jpg", 3: "t/b.png"}
    resolve = image_resolver(paths, tmp_path)
    roots = ImageRoots([tmp_path])
    for image_id, rel in paths.items():
        assert resolve(image_id) == roots.resolve(rel)
