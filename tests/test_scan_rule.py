"""One scanning rule for `inquire embed` and collections: the same files, whatever the tree."""

from __future__ import annotations

import os
from pathlib import Path

from inquire.collection import create_collection, open_collection
from inquire.collection.store import scan_images
from inquire.embed.sources import open_source, scan_image_files
from inquire.testing.collection_encoder import PixelHashEncoder
from inquire.testing.embed_images import write_jpegs


def _tree(tmp_path: Path) -> Path:
    """A photo folder with every case the rule decides: plain, nested, hidden file, hidden
    folder, a symlinked folder inside (duplicates), a link to a file outside, a link to a
    file inside, a broken link, a FIFO, a non-image."""
    root = tmp_path / "photos"
    write_jpegs(root / "a", 3)
    write_jpegs(root / "a" / "deep", 2)
    write_jpegs(root / ".hidden_folder", 2)
    outside = tmp_path / "outside"
    write_jpegs(outside, 2)
    first = sorted((root / "a").glob("*.jpg"))[0]
    (root / ".hidden.jpg").write_bytes(first.read_bytes())
    (root / "again").symlink_to(root / "a", target_is_directory=True)  # 5 duplicates
    (root / "linked_out.jpg").symlink_to(sorted(outside.glob("*.jpg"))[0])
    (root / "linked_in.jpg").symlink_to(first)
    (root / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    os.mkfifo(root / "pipe.jpg")
    (root / "notes.txt").write_text("x")
    return root


def test_embed_and_collection_see_the_same_files(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    want = sorted(
        [f"a/{p.name}" for p in (root / "a").glob("*.jpg")]
        + [f"a/deep/{p.name}" for p in (root / "a" / "deep").glob("*.jpg")]
        + ["linked_in.jpg"]
    )
    assert list(scan_image_files(root)) == want
    assert list(scan_images(root)) == want
    assert open_source(root).paths == want
    create_collection("c", root, "x", encoder=PixelHashEncoder(), workers=0)
    coll = open_collection("c")
    got = sorted(r["path"] for r in coll.conn.execute("SELECT path FROM images"))
    assert got == want


def test_names_that_are_not_utf8_are_skipped_with_a_warning_and_the_rest_ingested(
    tmp_path: Path, caplog
) -> None:
    """A file (or folder) named in another system's encoding (bytes b'\\xff', b'\\xe9') made
    `collection create` end in a UnicodeEncodeError traceback while writing metadata; such
    names are skipped with a warning naming them, and a newline or a 255-byte name is fine."""
    from inquire.testing.collection_encoder import make_photo_folder

    make_photo_folder(tmp_path / "src", n=5)
    photos = sorted((tmp_path / "src").rglob("*.jpg"))
    root = tmp_path / "photos"
    root.mkdir()
    bad_dir = os.fsdecode(bytes(root) + b"/d\xe9")
    os.mkdir(bad_dir)
    names = {
        os.fsdecode(bytes(root) + b"/bad\xff\xfe.jpg"): photos[0],
        os.path.join(bad_dir, "inside.jpg"): photos[1],
        str(root / "a\nb.jpg"): photos[2],
        str(root / ("x" * 251 + ".jpg")): photos[3],
        str(root / "plain.jpg"): photos[4],
    }
    for dst, src in names.items():
        Path(dst).write_bytes(src.read_bytes())
    with caplog.at_level("WARNING"):
        found = scan_image_files(root)
    assert sorted(found) == sorted(["a\nb.jpg", "x" * 251 + ".jpg", "plain.jpg"])
    warned = caplog.text
    assert "bad\\udcff\\udcfe.jpg" in warned and "d\\udce9" in warned and "UTF-8" in warned
    assert len(open_source(root)) == 3
    _, stats = create_collection("u", root, "x", encoder=PixelHashEncoder(), workers=0)
    assert stats.added == 3
    assert open_collection("u").counts() == {"ok": 3}
