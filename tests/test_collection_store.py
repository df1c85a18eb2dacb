from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from inquire.collection import (
    SearchRequest,
    compact,
    create_collection,
    list_collections,
    open_collection,
    parse_filters,
    search,
    update_collection,
)
from inquire.embed import EmbeddingStore, load_encoder
from inquire.embed.toy_backend import ColourEncoder
from inquire.errors import InputError, UnknownNameError
from inquire.testing.collection_encoder import (
    PixelHashEncoder,
    make_camera_trap_tree,
    make_inat_tree,
    make_photo_folder,
    write_photo,
)


def _ids(df) -> set[int]:
    return set(df["image_id"].tolist())


def test_toy_encoder_is_a_registered_model() -> None:
    enc = load_encoder("toy:colour")
    assert enc.model_id == "toy:colour" and enc.dim == 11
    t = enc.encode_text(["a red bird", "nothing coloured"])
    assert t.shape == (2, 11) and np.allclose(np.linalg.norm(t, axis=1), 1)
    with pytest.raises(UnknownNameError, match="colour"):
        load_encoder("toy:color")


def test_plain_folder_collection_in_the_clip_retrieval_layout(tmp_path: Path) -> None:
    photos = make_photo_folder(tmp_path / "photos", n=24)
    coll, stats = create_collection("trip", tmp_path / "photos", "toy:colour")
    assert (stats.added, stats.embedded, stats.unreadable) == (24, 24, 0)
    assert coll.folder.parent.name == "collections" and list_collections() == ["trip"]
    store = EmbeddingStore(coll.emb_dir)  # the embedding store reads what we wrote
    assert len(store) == 24 and store.dtype == np.float16 and store.dim == 11
    assert set(store.metadata["image_path"]) == {
        p.path.relative_to(tmp_path / "photos").as_posix() for p in photos
    }
    imgs = coll.images().set_index("path")
    for p in photos:
        row = imgs.loc[p.path.relative_to(tmp_path / "photos").as_posix()]
        if p.date is not None:
            assert row["date_source"] == "exif" and row["date"] == p.date.isoformat()
        else:
            assert row["date_source"] == "mtime"
        if p.lat is None:
            assert np.isnan(row["lat"])
        else:
            assert row["lat"] == pytest.approx(p.lat, abs=1e-6)
            assert row["lon"] == pytest.approx(p.lon, abs=1e-6)
    red = search(coll, SearchRequest("red", k=3))
    colour_of = {str(p.path): p.colour for p in photos}
    assert all(colour_of[p] == "red" for p in red["path"] if red["score"].iloc[0] > 0.9)


def test_inat_tree_and_camera_trap_folders(tmp_path: Path) -> None:
    meta = make_inat_tree(tmp_path / "inat", per_taxon=3)
    coll, _ = create_collection("inat", tmp_path / "inat", "toy:colour", metadata=meta)
    imgs = coll.images()
    assert set(imgs["image_id"]) == set(range(1000, 1015))  # the JSON's own image ids
    assert (imgs["date_source"] == "inat").all() and imgs["taxon"].notna().all()
    birds = search(coll, SearchRequest("blue", k=50, filters=parse_filters(["aves"])))
    assert set(birds["class"]) == {"Aves"} and len(birds) == 6

    make_camera_trap_tree(tmp_path / "traps", sites=2, cameras=2, frames=4)
    trap, stats = create_collection("traps", tmp_path / "traps", "toy:colour")
    assert stats.added == 16
    t = trap.images()
    assert t["path"].str.match(r"site_\d/cam_\d/RCNX\d{4}\.JPG").all()
    assert (t["date_source"] == "exif").all() and t["lat"].isna().all()
    june = search(
        trap, SearchRequest("brown", k=50, filters=parse_filters([], "2021-06-01", "2021-06-30"))
    )
    assert len(june) == 8 and june["path"].str.startswith(str(tmp_path / "traps" / "site_0")).all()
    site1 = search(trap, SearchRequest("grey", k=50, filters=parse_filters(under="site_1")))
    assert len(site1) == 8 and site1["path"].str.contains("/site_1/cam_").all()
    cam = search(trap, SearchRequest("grey", k=50, filters=parse_filters(under="site_1/cam_0/")))
    assert len(cam) == 4


def test_update_embeds_only_new_and_changed_files(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    photos = make_photo_folder(root, n=12, seed=3)
    enc = ColourEncoder()
    coll, _ = create_collection("c", root, "toy:colour", encoder=enc)
    assert enc.n_images_encoded == 12

    _, st = update_collection("c", encoder=enc)
    assert (st.unchanged, st.embedded, enc.n_images_encoded) == (12, 0, 12)

    # A new mtime with the same bytes: hashed, not re-embedded.
    os.utime(photos[0].path, ns=(0, 1_500_000_000 * 10**9))
    _, st = update_collection("c", encoder=enc)
    assert (st.touched, st.embedded, enc.n_images_encoded) == (1, 0, 12)

    before = coll.images().set_index("path")
    rel = {p.path: p.path.relative_to(root).as_posix() for p in photos}
    # 3 new files, 2 changed (new content), 2 deleted, 1 byte-identical copy under a new name.
    for i in range(3):
        write_photo(
            root / "new" / f"N{i}.jpg", "pink", datetime(2023, 5, 1 + i), 10.0, 20.0, 900 + i
        )
    write_photo(photos[1].path, "blue", datetime(2023, 1, 1), 1.0, 2.0, seed=77)
    write_photo(photos[2].path, "blue", datetime(2023, 1, 2), 1.0, 2.0, seed=78)
    photos[3].path.unlink()
    photos[4].path.unlink()
    shutil.copy2(photos[5].path, root / "copy_of_5.jpg")
    # Two byte-identical new frames (a camera-trap burst) arrive together: one is embedded.
    write_photo(root / "new" / "B0.jpg", "green", seed=555)
    shutil.copy2(root / "new" / "B0.jpg", root / "new" / "B1.jpg")
    _, st = update_collection("c", encoder=enc)
    assert (st.added, st.changed, st.removed, st.reused, st.embedded) == (6, 2, 2, 2, 6)
    assert enc.n_images_encoded == 12 + 6
    (root / "new" / "B0.jpg").unlink()
    (root / "new" / "B1.jpg").unlink()
    _, st = update_collection("c", encoder=enc)
    assert (st.removed, st.embedded) == (2, 0)

    after = coll.images().set_index("path")
    # A changed file keeps its id; a deleted one stays in the table (for marks) as deleted.
    assert after.loc[rel[photos[1].path], "image_id"] == before.loc[rel[photos[1].path], "image_id"]
    assert after.loc[rel[photos[1].path], "date"] == "2023-01-01T00:00:00"
    assert after.loc[rel[photos[3].path], "status"] == "deleted"
    gone = {int(after.loc[rel[p.path], "image_id"]) for p in photos[3:5]}
    everything = search(coll, SearchRequest("", like=(rel[photos[0].path],), k=100))
    assert len(everything) == 12 + 3 + 1 - 2 and not (gone & _ids(everything))
    blue = search(coll, SearchRequest("blue", k=2))
    assert set(blue["path"]) == {str(photos[1].path), str(photos[2].path)}

    # Stale rows stay in the shards behind the validity mask until compaction.
    index = coll.index()
    assert len(index) == 12 + 3 + 1 + 2 + 2 and int(index.valid.sum()) == 14
    ranked = search(coll, SearchRequest("pink", k=20))
    assert compact("c") == 6
    assert len(coll.index()) == 14
    again = search(coll, SearchRequest("pink", k=20))
    assert again["image_id"].tolist() == ranked["image_id"].tolist()
    assert np.allclose(again["score"], ranked["score"])

    # A deleted file that comes back gets its old id again.
    write_photo(photos[3].path, "black", seed=5)
    _, st = update_collection("c", encoder=enc)
    assert st.added == 1
    assert coll.images().set_index("path").loc[rel[photos[3].path], "image_id"] in gone


def test_interrupted_create_is_resumed_by_update(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "p", n=10)

    class Failing(PixelHashEncoder):
        def encode_images(self, images):
            if self.n_images_encoded >= 4:
                raise RuntimeError("power cut")
            return super().encode_images(images)

    enc = Failing()
    with pytest.raises(RuntimeError, match="power cut"):
        create_collection(
            "r", tmp_path / "p", enc.model_id, encoder=enc, chunk_size=4, batch_size=4
        )
    assert open_collection("r").counts() == {"ok": 4}
    good = PixelHashEncoder()
    _, st = update_collection("r", encoder=good)
    assert (st.added, st.unchanged, good.n_images_encoded) == (6, 4, 6)


def test_unreadable_files_are_skipped_until_they_change(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "p", n=3)
    (tmp_path / "p" / "broken.jpg").write_bytes(b"not a jpeg at all")
    enc = ColourEncoder()
    coll, st = create_collection("u", tmp_path / "p", "toy:colour", encoder=enc)
    assert (st.embedded, st.unreadable) == (3, 1) and coll.counts() == {"ok": 3, "unreadable": 1}
    _, st = update_collection("u", encoder=enc)
    assert (st.unchanged, st.embedded, enc.n_images_encoded) == (4, 0, 3)
    write_photo(tmp_path / "p" / "broken.jpg", "red")
    _, st = update_collection("u", encoder=enc)
    assert (st.changed, st.embedded) == (1, 1) and coll.counts() == {"ok": 4}


def test_collection_errors_say_what_to_do(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "p", n=2)
    with pytest.raises(InputError, match="not allowed"):
        create_collection("../evil", tmp_path / "p", "toy:colour")
    with pytest.raises(InputError, match="does not exist or is not a folder"):
        create_collection("x", tmp_path / "nope", "toy:colour")
    create_collection("x", tmp_path / "p", "toy:colour")
    with pytest.raises(InputError, match=r"already exists.*update x"):
        create_collection("x", tmp_path / "p", "toy:colour")
    with pytest.raises(InputError, match="cannot be mixed"):
        update_collection("x", encoder=PixelHashEncoder())
    with pytest.raises(UnknownNameError, match="Did you mean 'x'"):
        open_collection("xx")
    with pytest.raises(UnknownNameError, match="unknown model 'nosuch:model'"):
        create_collection("y", tmp_path / "p", "nosuch:model")


def test_update_with_a_train_json_adds_metadata_without_re_embedding(tmp_path: Path) -> None:
    meta = make_inat_tree(tmp_path / "inat", per_taxon=2)
    enc = ColourEncoder()
    coll, _ = create_collection("late", tmp_path / "inat", "toy:colour", encoder=enc)
    before = coll.images()
    # Without the JSON: taxonomy from the iNat24 class folder names, dates from the file time.
    assert set(before["date_source"]) == {"mtime"} and before["taxon"].notna().all()
    _, st = update_collection("late", metadata=meta, encoder=enc)
    assert (st.unchanged, st.embedded, enc.n_images_encoded) == (10, 0, 10)
    after = coll.images()
    assert set(after["date_source"]) == {"inat"} and after["lat"].notna().all()
    jan = search(
        coll, SearchRequest("red", k=50, filters=parse_filters([], "2018-01-01", "2018-01-31"))
    )
    assert len(jan) == 1


def test_train_json_licence_holder_and_uncertainty_are_kept_and_old_databases_gain_them(
    tmp_path: Path,
) -> None:
    import json
    import sqlite3

    meta = make_inat_tree(tmp_path / "inat", per_taxon=3)
    coll, _ = create_collection("lic", tmp_path / "inat", "toy:colour", metadata=meta)
    imgs = coll.images().set_index("image_id")
    coll.close()
    for img in json.loads(meta.read_text(encoding="utf-8"))["images"]:
        row = imgs.loc[img["id"]]
        assert row["source_id"] == img["id"] and row["coord_uncertainty_m"] == 10
        for col in ("license", "rights_holder"):
            assert (row[col] if isinstance(row[col], str) else None) == img.get(col)
    assert imgs["license"].isna().any() and imgs["license"].notna().any()
    # a database written before these columns existed gets them, empty, when opened
    db = coll.db_path
    with sqlite3.connect(db) as conn:
        for col in ("coord_uncertainty_m", "license", "rights_holder"):
            conn.execute(f'ALTER TABLE images DROP COLUMN "{col}"')
        conn.execute("PRAGMA user_version = 0")  # as written before versions were counted
    old = open_collection("lic")
    try:
        again = old.images()
        assert again["license"].isna().all() and len(again) == len(imgs)
        assert len(search(old, SearchRequest("blue", k=5))) == 5
    finally:
        old.close()


def test_an_index_loaded_while_a_compaction_commits_never_names_wrong_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compact swaps the new shards in before its database transaction commits: a reader
    loading the index in between (another process, a server's first request) saw the new
    shards with the old rows' positions, every valid row under another image's id. It is
    now a clear error; before the swap and after the commit the index is whole."""
    from inquire.collection import store as cs
    from inquire.collection.store import Collection

    photos = make_photo_folder(tmp_path / "p", n=12)
    enc = PixelHashEncoder()
    coll, _ = create_collection("c", tmp_path / "p", "toy:colour", encoder=enc)
    for i in range(1, 6):
        write_photo(photos[i].path, "blue", seed=100 + i)
    update_collection("c", encoder=enc)
    real_replace = os.replace
    seen: dict[str, object] = {}

    def replace_then_read(src: object, dst: object) -> None:
        real_replace(src, dst)  # type: ignore[arg-type]
        if Path(str(dst)) == coll.emb_dir:  # the new shards are in; the commit is not
            with Collection(coll.folder) as other:
                try:
                    idx = other.index()
                except InputError as exc:
                    seen["error"] = str(exc)
                else:
                    valid = idx.valid
                    seen["wrong"] = int((idx.image_id[valid] != idx.store.ids[valid]).sum())

    monkeypatch.setattr(cs.os, "replace", replace_then_read)
    assert compact("c") == 5
    monkeypatch.setattr(cs.os, "replace", real_replace)
    assert "wrong" not in seen, seen
    assert "is being rewritten by another process" in str(seen["error"])
    with Collection(coll.folder) as fresh:
        after = fresh.index()
    assert len(after) == 12 and bool(after.valid.all())
    assert after.image_id.tolist() == after.store.ids.tolist()
