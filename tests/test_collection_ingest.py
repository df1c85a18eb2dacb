"""The steps of a collection ingest on their own: plan (no model), hash, embed, commit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from inquire.collection import create_collection, open_collection
from inquire.collection.ingest import (
    IngestState,
    ShardRows,
    UpdateStats,
    commit_chunk,
    embed_chunk,
    hash_chunk,
    plan_sync,
)
from inquire.collection.store import Collection, transaction
from inquire.embed import EmbeddingStore
from inquire.errors import InputError
from inquire.testing.collection_encoder import PixelHashEncoder, make_photo_folder


class _NoEncoder:
    """An encoder that fails if asked for anything: the steps under test must not need it."""

    model_id, revision, dim = "test:none", "1", 16

    def encode_images(self, images):
        raise AssertionError("the encoder was called")

    encode_text = encode_images


def _bare(folder: Path, images: Path) -> Collection:
    """A collection folder whose database knows only its images folder (nothing synced)."""
    folder.mkdir()
    coll = Collection(folder)
    with transaction(coll.conn) as conn:
        coll.set_meta(conn, images_root=str(images))
    return coll


def _rel(photo, root: Path) -> str:
    return photo.path.relative_to(root).as_posix()


@pytest.fixture
def edited(tmp_path):
    """A collection of 6 photos, then: one deleted, one touched (same bytes, new mtime), one
    overwritten with another photo's bytes, one copied to a new name."""
    root = tmp_path / "p"
    photos = make_photo_folder(root, n=6)
    rels = [_rel(p, root) for p in photos]
    create_collection("c", root, "test:pixelhash-16", encoder=PixelHashEncoder(), workers=0)
    coll = open_collection("c")
    os.remove(root / rels[0])
    st = (root / rels[1]).stat()
    os.utime(root / rels[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    shutil.copyfile(root / rels[3], root / rels[2])
    shutil.copyfile(root / rels[4], root / "copy_of_4.jpg")
    return coll, root, rels


def test_plan_needs_only_the_folder_and_the_database(edited):
    coll, root, rels = edited
    plan = plan_sync(coll)
    assert plan.gone == [rels[0]]
    assert plan.todo == sorted([rels[1], rels[2], "copy_of_4.jpg"])
    assert sorted(plan.unchanged) == sorted(rels[3:])
    assert set(plan.files) == set(rels[1:]) | {"copy_of_4.jpg"}
    assert plan.files["copy_of_4.jpg"][0] == (root / "copy_of_4.jpg").stat().st_size
    assert {r["status"] for r in plan.known.values()} == {"ok"} and len(plan.known) == 6
    # Planning writes nothing: the same plan again.
    assert plan_sync(coll) == plan


def test_plan_of_a_new_collection_lists_every_file(tmp_path):
    root = tmp_path / "p"
    make_photo_folder(root, n=4)
    (root / "notes.txt").write_text("not an image")
    coll = _bare(tmp_path / "new", root)
    plan = plan_sync(coll)
    assert len(plan.todo) == 4 and plan.todo == sorted(plan.todo) == list(plan.files)
    assert (plan.unchanged, plan.gone, plan.known) == ([], [], {})


def test_hash_sorts_files_by_what_their_bytes_need(edited):
    coll, _, rels = edited
    plan = plan_sync(coll)
    state = IngestState.start(coll, plan, None)
    stats = UpdateStats()
    hashed = hash_chunk(coll, plan.files, plan.todo, state, None, stats)
    paths = [rel for rel, _ in hashed.records]
    assert [p for _, _, p in hashed.touched] == [rels[1]]  # same bytes: stat only
    assert sorted(paths) == sorted([rels[2], "copy_of_4.jpg"])
    # Both have bytes already embedded (photo 3's and photo 4's): reused, never encoded.
    assert hashed.to_encode == [] and hashed.copies == []
    assert set(hashed.reuse) == {0, 1}
    old = plan.known[rels[2]]
    rec = dict(hashed.records)[rels[2]]
    assert rec["image_id"] == old["image_id"]  # a changed file keeps its id
    new = dict(hashed.records)["copy_of_4.jpg"]["image_id"]
    assert new == max(r["image_id"] for r in plan.known.values()) + 1
    assert (stats.changed, stats.added, stats.reused) == (1, 1, 2)
    # Embed: vectors come from the old shards, the encoder is not called.
    vectors = embed_chunk(coll, _NoEncoder(), hashed, ShardRows(coll), stats, workers=0)
    store = EmbeddingStore(coll.emb_dir)
    want = {
        rels[2]: store.rows(store.row_of([plan.known[rels[3]]["image_id"]]))[0],
        "copy_of_4.jpg": store.rows(store.row_of([plan.known[rels[4]]["image_id"]]))[0],
    }
    for (rel, _), vec in zip(hashed.records, vectors, strict=True):
        assert np.array_equal(vec, want[rel])


def test_hash_then_embed_copies_duplicates_within_a_chunk(tmp_path):
    root = tmp_path / "p"
    photos = make_photo_folder(root, n=3)
    shutil.copyfile(photos[0].path, root / "dup.jpg")
    coll = _bare(tmp_path / "new", root)
    plan = plan_sync(coll)
    state = IngestState.start(coll, plan, None)
    stats = UpdateStats()
    hashed = hash_chunk(coll, plan.files, plan.todo, state, None, stats)
    paths = [rel for rel, _ in hashed.records]
    first = paths.index(_rel(photos[0], root))
    dup = paths.index("dup.jpg")
    assert len(hashed.to_encode) == 3 and hashed.copies == [(max(first, dup), min(first, dup))]
    assert [r["image_id"] for _, r in hashed.records] == [0, 1, 2, 3]
    enc = PixelHashEncoder()
    vectors = embed_chunk(coll, enc, hashed, ShardRows(coll), stats, workers=0)
    assert enc.n_images_encoded == 3 and np.array_equal(vectors[first], vectors[dup])
    assert (stats.embedded, stats.reused, stats.added) == (3, 1, 4)
    # Commit: one shard, written in the clip-retrieval layout, rows pointing at it.
    shard = commit_chunk(coll, hashed, vectors, state, stats)
    assert shard == 0 and stats.shards_written == [0]
    store = EmbeddingStore(coll.emb_dir)
    assert store.metadata["image_path"].tolist() == paths
    assert np.allclose(store.rows(np.arange(4)), vectors, atol=1e-3)
    db = {r["path"]: (r["shard"], r["row"], r["status"]) for r in coll.conn.execute(
        "SELECT path, shard, row, status FROM images")}  # fmt: skip
    assert db == {p: (0, i, "ok") for i, p in enumerate(paths)}
    assert state.by_hash[dict(hashed.records)["dup.jpg"]["sha1"]] == (0, max(first, dup))


def test_embed_reports_a_missing_shard_by_number(edited):
    coll = edited[0]
    plan = plan_sync(coll)
    hashed = hash_chunk(coll, plan.files, plan.todo, IngestState.start(coll, plan, None), None,
                        UpdateStats())  # fmt: skip
    hashed.reuse = {i: (7, 0) for i in hashed.reuse}
    with pytest.raises(InputError, match=r"points at shard 7, which has no file"):
        embed_chunk(coll, _NoEncoder(), hashed, ShardRows(coll), UpdateStats(), workers=0)
