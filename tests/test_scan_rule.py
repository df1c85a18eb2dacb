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
