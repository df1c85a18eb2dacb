"""The page's free-text search over an embeddings folder written again while the server runs
(inquire.web.catalog.Catalog._current): the next search opens the folder again and answers
from the new files under the new ids; a folder that cannot be opened now is a clear error
until it is whole again; searches across the reopening never mix the two."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inquire.embed.folder import emb_dir, meta_dir, remove_shards, write_manifest
from inquire.testing.search_stores import random_unit, write_store
from inquire.testing.web_client import page_client
from inquire.web.app import create_app
from inquire.web.catalog import Catalog
from inquire.web.config import WebConfig

D = 8
K = 5
QUERY = random_unit(1, D, seed=99)[0]


class _Encoder:
    """Embeds every text as ``QUERY``; ``gate(texts)``, when set, runs first (a test holds
    a search there)."""

    model_id, revision, dim = "test:fixed", "r", D

    def __init__(self) -> None:
        self.gate: Callable[[], None] | None = None

    def encode_text(self, texts: list[str]) -> np.ndarray:
        if self.gate is not None:
            self.gate()
        return np.repeat(QUERY[None].astype(np.float32), len(texts), axis=0)

    def encode_images(self, images: list[object]) -> np.ndarray:
        raise NotImplementedError


def _write(
    root: Path, seed: int, sizes: list[int], first_id: int, manifest: bool = False
) -> list[tuple[int, float]]:
    """Write an embedding folder at ``root`` the way ``inquire embed`` does (each file
    renamed into place over the one before), shards of ``sizes`` rows with ids from
    ``first_id`` (paths ``s{seed}/img_{id}``); shards past ``sizes`` removed. Returns the
    top ``K`` ``(id, score)`` for ``QUERY``, computed here from the vectors as stored."""
    vecs = random_unit(sum(sizes), D, seed=seed)
    ids = np.arange(first_id, first_id + len(vecs), dtype=np.int64)
    write_store(root, vecs, sizes, ids, paths=[f"s{seed}/img_{i}" for i in ids])
    for p in [*emb_dir(root).glob("img_emb_*.npy"), *meta_dir(root).glob("metadata_*.parquet")]:
        if int(p.stem.rpartition("_")[2]) >= len(sizes):
            p.unlink()
    if manifest:
        write_manifest(root, {"shards": [{"index": s, "n": n} for s, n in enumerate(sizes)]})
    scores = vecs.astype(np.float16).astype(np.float32) @ QUERY
    top = np.argsort(-scores, kind="stable")[:K]
    return [(int(ids[i]), float(scores[i])) for i in top]


def _found(items: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(it["image_id"]), float(it["score"])) for it in items]


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    return [i for i, _ in got] == [i for i, _ in want] and np.allclose(
        [s for _, s in got], [s for _, s in want], atol=1e-3
    )


def _app(root: Path, encoder: _Encoder | None = None) -> tuple[Any, Catalog]:
    images = root.parent / "images"  # the metadata's paths are the image table's
    images.mkdir(exist_ok=True)
    config = WebConfig(embeddings=root, model=encoder or _Encoder(), image_roots=[images])
    app = create_app(config)
    return app, app.state.inquire.catalog


def _search(client: Any) -> Any:
    return client.get("/api/search", params={"q": "a bird", "k": K})


def test_search_after_the_folder_is_embedded_again_answers_from_the_new_files(
    tmp_path: Path,
) -> None:
    """Before: every search after the rewrite failed ("open the store again") until the
    server was restarted. The same text again must not come from the first answers."""
    root = tmp_path / "emb"
    first = _write(root, seed=1, sizes=[6, 7], first_id=0)
    app, catalog = _app(root)
    client = page_client(app)
    assert _same(_found(_search(client).json()["results"]), first)

    second = _write(root, seed=2, sizes=[4, 4, 5], first_id=1000)  # more shards, new ids
    reply = _search(client)
    assert reply.status_code == 200, reply.text
    assert _same(_found(reply.json()["results"]), second)
    assert catalog.store is not None and len(catalog.store.shards) == 3
    # the image paths follow the new metadata: the new ids are known, the old ones not
    assert catalog.images.path_of(1000) == "s2/img_1000"
    assert catalog.images.path_of(0) is None

    third = _write(root, seed=3, sizes=[9], first_id=50)  # fewer shards than before
    assert _same(_found(_search(client).json()["results"]), third)
    assert catalog.store is not None and len(catalog.store.shards) == 1


def test_an_unchanged_folder_is_not_opened_again(tmp_path: Path) -> None:
    root = tmp_path / "emb"
    first = _write(root, seed=1, sizes=[6, 7], first_id=0)
    app, catalog = _app(root)
    client = page_client(app)
    opened = catalog._opened
    for text in ("a", "b", "a"):
        reply = client.get("/api/search", params={"q": text, "k": K})
        assert _same(_found(reply.json()["results"]), first)
    assert catalog._opened is opened


def test_a_shard_removed_is_a_clear_error_until_the_folder_is_whole_again(
    tmp_path: Path,
) -> None:
    """A folder whose manifest lists a shard that is gone cannot be searched: a 400 naming
    the fix (on the JSON API and on the page), never the earlier rows; once the shard is
    written again the search works on the new files."""
    root = tmp_path / "emb"
    first = _write(root, seed=1, sizes=[6, 7], first_id=0, manifest=True)
    app, _ = _app(root)
    client = page_client(app, raise_server_exceptions=False)
    assert _same(_found(_search(client).json()["results"]), first)

    (emb_dir(root) / "img_emb_1.npy").unlink()
    reply = _search(client)
    assert reply.status_code == 400
    assert "whose img_emb files are missing" in reply.json()["detail"]
    page = client.get("/search", params={"q": "a bird", "k": K})
    assert page.status_code == 400 and "whose img_emb files are missing" in page.text
    assert client.get("/api/health").status_code == 200

    whole = _write(root, seed=4, sizes=[6, 7], first_id=200, manifest=True)
    reply = _search(client)
    assert reply.status_code == 200, reply.text
    assert _same(_found(reply.json()["results"]), whole)


def test_a_shard_removed_from_a_folder_without_manifest_leaves_the_others(
    tmp_path: Path,
) -> None:
    """Without a manifest the folder is the shards it holds: the search answers from the
    shard left, under its own ids (never the removed shard's rows)."""
    root = tmp_path / "emb"
    _write(root, seed=1, sizes=[6, 7], first_id=0)
    app, _ = _app(root)
    client = page_client(app)
    _search(client)
    (emb_dir(root) / "img_emb_1.npy").unlink()
    got = _found(_search(client).json()["results"])
    vecs = random_unit(13, D, seed=1)[:6].astype(np.float16).astype(np.float32)
    scores = vecs @ QUERY
    want = [(int(i), float(scores[i])) for i in np.argsort(-scores, kind="stable")[:K]]
    assert _same(got, want)


@pytest.mark.parametrize("how", ["shards removed", "folder removed"])
def test_an_emptied_folder_is_a_clear_error_and_recovers(tmp_path: Path, how: str) -> None:
    root = tmp_path / "emb"
    _write(root, seed=1, sizes=[6, 7], first_id=0, manifest=True)
    app, _ = _app(root)
    client = page_client(app, raise_server_exceptions=False)
    assert _search(client).status_code == 200

    if how == "shards removed":
        remove_shards(root)
        expected = "holds no img_emb"
    else:
        shutil.rmtree(root)
        expected = "is not an embedding folder"
    for _ in range(2):  # each search tries the folder again; none answers from the old one
        reply = _search(client)
        assert reply.status_code == 400
        assert expected in reply.json()["detail"]
        assert "<server path>" in reply.json()["detail"]  # no server path in the reply

    again = _write(root, seed=5, sizes=[3, 3, 3], first_id=7000)
    reply = _search(client)
    assert reply.status_code == 200, reply.text
    assert _same(_found(reply.json()["results"]), again)


def test_a_search_running_across_a_reopening_answers_from_one_folder(tmp_path: Path) -> None:
    """A search that began on the old files is held while the folder is written again and
    another search opens the new one; then it goes on. Each answer is wholly the old or
    wholly the new folder's (the held one reads the shards by name: it finds them
    replaced and searches the folder as it is now)."""
    root = tmp_path / "emb"
    first = _write(root, seed=1, sizes=[6, 7], first_id=0)
    encoder = _Encoder()
    app, _ = _app(root, encoder)
    client = page_client(app)
    held, go = threading.Event(), threading.Event()
    calls = [0]
    calls_lock = threading.Lock()
    answers: dict[str, Any] = {}

    def gate() -> None:  # holds the first search (it runs on a worker thread of the app)
        with calls_lock:
            calls[0] += 1
            first_call = calls[0] == 1
        if first_call:
            held.set()
            assert go.wait(60)

    def run_held() -> None:
        answers["held"] = _search(client)

    encoder.gate = gate
    t = threading.Thread(target=run_held)
    t.start()
    try:
        assert held.wait(60)  # the held search chose the old files and waits in the encoder
        second = _write(root, seed=2, sizes=[5, 5, 5], first_id=3000)
        reply = _search(client)
        assert reply.status_code == 200, reply.text
        assert _same(_found(reply.json()["results"]), second)
    finally:
        go.set()
        t.join(60)
    assert not t.is_alive()
    held_reply = answers["held"]
    assert held_reply.status_code == 200, held_reply.text
    got = _found(held_reply.json()["results"])
    assert _same(got, second) or _same(got, first), got
    # the scan reads the shards by name, finds them replaced, and searches the new folder
    assert _same(got, second), got


def test_searches_arriving_together_after_a_change_open_the_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two searches that both notice the change: one opens the folder (under the lock),
    the other waits for it and uses that opening; both answer from the new files."""
    root = tmp_path / "emb"
    _write(root, seed=1, sizes=[6, 7], first_id=0)
    app, catalog = _app(root)
    client = page_client(app)
    second = _write(root, seed=2, sizes=[4, 4], first_id=500)

    opening, go, waiting = threading.Event(), threading.Event(), threading.Event()
    opens: list[int] = []
    real_open = catalog._open

    def slow_open() -> Any:
        opens.append(threading.get_ident())
        opening.set()
        assert go.wait(60)
        return real_open()

    class Announcing:
        """The reopen lock, saying when a second thread comes to wait for it."""

        def __init__(self, lock: Any) -> None:
            self.lock, self.entered, self.guard = lock, 0, threading.Lock()

        def __enter__(self) -> None:
            with self.guard:
                self.entered += 1
                if self.entered == 2:
                    waiting.set()
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    monkeypatch.setattr(catalog, "_open", slow_open)
    monkeypatch.setattr(catalog, "_reopen_lock", Announcing(catalog._reopen_lock))
    replies: list[Any] = [None, None]

    def run(i: int) -> None:
        replies[i] = client.get("/api/search", params={"q": f"text {i}", "k": K})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        assert opening.wait(60)  # one search opens the folder ...
        assert waiting.wait(60)  # ... while the other waits for the lock
    finally:
        go.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(opens) == 1
    for reply in replies:
        assert reply.status_code == 200, reply.text
        assert _same(_found(reply.json()["results"]), second)


def test_rows_named_by_the_annotations_follow_the_new_metadata(tmp_path: Path) -> None:
    """INQUIRE's layout (no image_id: rows take the annotations' ids, joined on the paths):
    written again with the rows in another order, each row keeps the id of its path."""
    root = tmp_path / "emb"
    vecs = random_unit(6, D, seed=7)
    paths = [f"train/x/r{i}" for i in range(6)]
    ann = tmp_path / "ann.csv"
    ann.write_text(
        "query_id,image_id,image_path\n"
        + "".join(f"1,{100 + i},{p}.jpg\n" for i, p in enumerate(paths))
    )
    scores = vecs.astype(np.float16).astype(np.float32) @ QUERY
    want = [(100 + int(i), float(scores[i])) for i in np.argsort(-scores, kind="stable")[:K]]
    write_store(root, vecs, [3, 3], paths=paths, with_image_id=False)
    app = create_app(WebConfig(embeddings=root, model=_Encoder(), annotations=[ann]))
    client = page_client(app)
    assert _same(_found(_search(client).json()["results"]), want)

    order = [4, 2, 0, 5, 1, 3]
    write_store(root, vecs[order], [2, 4], paths=[paths[i] for i in order], with_image_id=False)
    catalog = app.state.inquire.catalog
    assert _same(_found(_search(client).json()["results"]), want)
    assert catalog.row_ids is not None
    assert catalog.row_ids.tolist() == [100 + i for i in order]


def test_a_metadata_file_removed_is_a_clear_error_until_it_is_back(tmp_path: Path) -> None:
    root = tmp_path / "emb"
    first = _write(root, seed=1, sizes=[6, 7], first_id=0)
    app, _ = _app(root)
    client = page_client(app, raise_server_exceptions=False)
    assert _same(_found(_search(client).json()["results"]), first)
    (meta_dir(root) / "metadata_1.parquet").unlink()
    reply = _search(client)
    assert reply.status_code == 400
    assert "no metadata file of the same shard number" in reply.json()["detail"]
    again = _write(root, seed=6, sizes=[6, 7], first_id=60)
    assert _same(_found(_search(client).json()["results"]), again)
