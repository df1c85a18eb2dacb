"""Collections embed through the embedding pipeline's reader (parallel decoding, batching)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from inquire.collection import create_collection, open_collection, update_collection
from inquire.collection import embedding as coll_embedding
from inquire.embed import EmbeddingStore, load_encoder
from inquire.embed.images import open_image
from inquire.embed.reader import decode_batches
from inquire.embed.sources import ImageSource
from inquire.testing.collection_encoder import PixelHashEncoder, make_photo_folder
from inquire.testing.embed_images import ZOO_BAD, ZOO_OK, make_image_zoo, write_jpegs
from inquire.testing.embed_models import make_tiny_open_clip


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def parallel(monkeypatch):
    """Start decoding workers even for the few images of a test; record each call's workers."""
    from inquire.embed import reader

    monkeypatch.setattr(coll_embedding, "PARALLEL_FROM", 1)
    seen: list[int] = []
    real = reader.decode_batches

    def spy(source, batches, preprocess=None, workers=2, stack=True):
        seen.append(workers)
        return real(source, batches, preprocess, workers, stack)

    monkeypatch.setattr(reader, "decode_batches", spy)
    return seen


def _pid(image) -> int:
    return os.getpid()


@pytest.fixture(scope="module")
def model_id(tmp_path_factory) -> str:
    return make_tiny_open_clip(tmp_path_factory.mktemp("tiny") / "model")


def _stored(coll) -> dict[str, np.ndarray]:
    """path -> stored (float16 -> float32) vector of every valid row."""
    index = coll.index()
    rows = np.flatnonzero(index.valid)
    vec = index.vectors(rows)
    paths = coll.images(index.image_id[rows].tolist())["path"].tolist()
    return dict(zip(paths, vec, strict=True))


def test_collection_embeddings_equal_the_models_forward_on_single_images(
    model_id, tmp_path, parallel
):
    photos = tmp_path / "photos"
    make_image_zoo(photos, n_good=4)  # CMYK, 16-bit, alpha, palette, EXIF-rotated, 3 broken
    write_jpegs(photos / "more", 5, seed=50)
    enc = load_encoder(model_id, batch_size=3)
    coll, st = create_collection(
        "zoo", photos, model_id, encoder=enc, batch_size=3, workers=2, index="none"
    )
    assert parallel == [2]  # one chunk, decoded by two worker processes
    n_ok = 4 + len(ZOO_OK) + 5
    assert (st.added, st.embedded, st.unreadable) == (n_ok + len(ZOO_BAD), n_ok, len(ZOO_BAD))
    counts = coll.counts()
    assert counts == {"ok": n_ok, "unreadable": len(ZOO_BAD)}
    bad = set(coll.images().query("status == 'unreadable'")["path"])
    assert bad == set(ZOO_BAD)
    stored = _stored(coll)
    assert len(stored) == n_ok and len(EmbeddingStore(coll.emb_dir)) == n_ok
    for rel, vec in stored.items():
        # The model's own forward on this one image, opened by the embed module's rules.
        ref = enc.encode_images([open_image(photos / rel)])[0]
        np.testing.assert_allclose(vec, ref, atol=2e-3, err_msg=rel)
    # EXIF orientation was applied: not the embedding of the stored (sideways) pixels.
    from PIL import Image

    sideways = np.asarray(Image.open(photos / "exif_rotated.jpg"))
    raw = enc.encode_images([Image.fromarray(sideways)])[0]
    assert np.abs(stored["exif_rotated.jpg"] - raw).max() > 1e-2


def test_decode_batches_in_workers_equals_in_process(tmp_path):
    zoo = make_image_zoo(tmp_path / "zoo", n_good=2)
    paths = sorted(p.name for p in zoo.iterdir() if p.suffix != ".txt")
    src = ImageSource("folder", zoo, paths)
    batches = [[0, 1, 2], [3, 4, 5, 6], list(range(7, len(paths)))]
    one = list(decode_batches(src, batches, workers=0, stack=False))
    two = list(decode_batches(src, batches, workers=2, stack=False))
    assert len(one) == len(two) == 3
    for (i1, px1, e1), (i2, px2, e2) in zip(one, two, strict=True):
        assert i1.tolist() == i2.tolist() and e1 == e2
        for a, b in zip(px1 or [], px2 or [], strict=True):
            assert a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    pids = {
        p for _, px, _ in decode_batches(src, batches, _pid, workers=2, stack=False) for p in px
    }
    assert os.getpid() not in pids and len(pids) >= 1  # decoded in worker processes
    failed = {paths[i]: r for _, _, errs in one for i, r in errs}
    assert set(failed) == set(ZOO_BAD) and "0 bytes" in failed["empty.jpg"]


def test_incremental_update_through_parallel_decoding_embeds_only_new_files(tmp_path, parallel):
    photos = make_photo_folder(tmp_path / "p", n=20)
    enc = PixelHashEncoder()
    coll, st = create_collection("inc", tmp_path / "p", enc.model_id, encoder=enc, batch_size=6)
    assert (st.embedded, enc.n_images_encoded) == (20, 20)
    make_photo_folder(tmp_path / "p" / "new", n=5, seed=100)
    os.remove(photos[0].path)
    _, st = update_collection("inc", encoder=enc, batch_size=6)
    assert (st.added, st.removed, st.unchanged, st.embedded) == (5, 1, 19, 5)
    assert enc.n_images_encoded == 25  # the 19 unchanged files were not decoded or encoded
    # Parallel decoding + batching gives the same vectors as encoding each file alone.
    for rel, vec in _stored(coll).items():
        ref = enc.encode_images([open_image(tmp_path / "p" / rel)])[0]
        np.testing.assert_allclose(vec, ref, atol=2e-3)


def test_interrupted_parallel_create_is_finished_by_update(tmp_path, parallel):
    make_photo_folder(tmp_path / "p", n=12)

    class Failing(PixelHashEncoder):
        def encode_images(self, images):
            if self.n_images_encoded >= 6:
                raise RuntimeError("power cut")
            return super().encode_images(images)

    enc = Failing()
    with pytest.raises(RuntimeError, match="power cut"):
        create_collection(
            "r", tmp_path / "p", enc.model_id, encoder=enc, chunk_size=6, batch_size=3, workers=2
        )
    assert open_collection("r").counts() == {"ok": 6}
    good = PixelHashEncoder()
    coll, st = update_collection("r", encoder=good, workers=2)
    assert (st.added, st.unchanged, good.n_images_encoded) == (6, 6, 6)
    assert coll.counts() == {"ok": 12} and len(coll.index()) == 12


def test_create_shows_a_rich_progress_bar(tmp_path, monkeypatch):
    from rich.console import Console

    from inquire.embed import pipeline

    make_photo_folder(tmp_path / "p", n=6)
    consoles: list[Console] = []
    real = pipeline.progress_bar

    def recording(console=None, disable=False, label="embedding"):
        c = Console(record=True, force_terminal=False, width=120)
        consoles.append(c)
        return real(c, disable, label)

    monkeypatch.setattr(pipeline, "progress_bar", recording)
    enc = PixelHashEncoder()
    create_collection("bar", tmp_path / "p", enc.model_id, encoder=enc, progress=True)
    text = consoles[0].export_text()
    assert "collection bar" in text and "6/6" in text and "img/s" in text


def test_bad_worker_and_batch_arguments_fail_clearly(tmp_path: Path):
    from inquire.errors import InputError

    enc = PixelHashEncoder()
    with pytest.raises(InputError, match="workers must be >= 0"):
        coll_embedding.embed_files(enc, [tmp_path / "x.jpg"], workers=-1)
    with pytest.raises(InputError, match="batch_size must be a positive"):
        coll_embedding.embed_files(enc, [tmp_path / "x.jpg"], batch_size=0)
