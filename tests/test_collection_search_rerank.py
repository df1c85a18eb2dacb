"""Collection search --rerank: the score cache is closed, reranker options reach the loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from inquire.cli import app
from inquire.collection import SearchRequest, create_collection, search
from inquire.testing.collection_encoder import make_photo_folder


class _BlueFirst:
    reranker_id, revision, prompt_version = "test:blue-first", "1", "1"

    def score(self, text: str, images: Any) -> np.ndarray:
        return np.array([float(np.asarray(Image.open(im))[..., 2].mean()) for im in images])


def test_rerank_closes_the_cache_it_opened(tmp_path: Path, monkeypatch) -> None:
    import inquire.rerank
    import inquire.rerank.cache as cache_mod

    opened: list[Any] = []
    closed: list[Any] = []

    class SpyCache(cache_mod.ScoreCache):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            opened.append(self)

        def close(self) -> None:
            closed.append(self)
            super().close()

    monkeypatch.setattr(cache_mod, "ScoreCache", SpyCache)
    monkeypatch.setattr(inquire.rerank, "load_reranker", lambda rid, **kw: _BlueFirst())
    make_photo_folder(tmp_path / "p", n=12, seed=3)
    coll, _ = create_collection("rc", tmp_path / "p", "toy:colour")
    out = search(coll, SearchRequest("red", k=4, rerank="blue-first", from_k=8))
    assert len(out) == 4
    assert len(opened) == 1 and closed == opened

    # A cache the caller passes in stays open for the caller.
    from inquire.collection.search import rerank_results, results_frame

    index = coll.index()
    ids = np.array(index.image_id[:3], np.int64)
    df = results_frame(index, ids, np.zeros(3, np.float32))
    with cache_mod.ScoreCache(tmp_path / "mine.sqlite") as mine:
        closed.clear()
        rerank_results(df, "red", "blue-first", cache=mine)
        assert closed == []
        assert mine.count() == 3


def test_search_cli_passes_reranker_options_to_the_loader(tmp_path: Path, monkeypatch) -> None:
    import inquire.rerank

    calls: list[tuple[str, dict[str, Any]]] = []

    def spy(rid: str, **kw: Any) -> _BlueFirst:
        calls.append((rid, kw))
        return _BlueFirst()

    monkeypatch.setattr(inquire.rerank, "load_reranker", spy)
    # The CLI checks that --device exists before any work; this machine may have no GPU.
    monkeypatch.setattr("inquire.embed._torch.check_device", lambda device: device)
    make_photo_folder(tmp_path / "p", n=10, seed=4)
    create_collection("ro", tmp_path / "p", "toy:colour")
    runner = CliRunner()
    args = ["search", "ro", "red", "-k", "3", "--csv", "--rerank", "clip:x", "--from-k", "6"]
    opts = ["--device", "cuda:1", "--precision", "bf16", "--batch-size", "3"]
    res = runner.invoke(app, [*args, *opts, "--protocol", "inquire-sum"])
    assert res.exit_code == 0, res.output
    want = {"device": "cuda:1", "precision": "bf16", "batch_size": 3, "protocol": "inquire-sum"}
    assert calls == [("clip:x", want)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    default = {"device": "cpu", "precision": "fp32", "batch_size": 8, "protocol": "inquire-2024"}
    assert calls[-1] == ("clip:x", default)
