"""The synthetic benchmark: INQUIRE formats, loadable by the real readers, deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from inquire.data.qrels import read_qrels
from inquire.data.queries import QUERY_COLUMNS, read_queries
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError

SMALL = {"n_images": 1000, "dim": 16, "n_val": 2, "n_test": 3, "n_shards": 2}


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_files_are_in_inquire_formats(tmp_path: Path) -> None:
    bench = make_synthetic_benchmark(tmp_path / "b", seed=1, **SMALL)
    assert "SYNTHETIC" in (bench.root / "SYNTHETIC.txt").read_text()
    # Query CSVs: the upstream header, with its unnamed index column.
    header = bench.queries_val.read_text().splitlines()[0]
    assert header == "," + ",".join(QUERY_COLUMNS)
    val, test = read_queries(bench.queries_val), read_queries(bench.queries_test)
    assert (len(val), len(test)) == (2, 3)
    assert set(val["query_id"]).isdisjoint(test["query_id"])
    assert "synthetic" in val["query_text"].iloc[0]
    # Annotations: query_id, image_id, image_path (with .jpg, as upstream).
    ann = pd.read_csv(bench.annotations)
    assert list(ann.columns) == ["query_id", "image_id", "image_path"]
    assert ann["image_path"].str.endswith(".jpg").all()
    qrels = read_qrels(bench.annotations)
    assert set(qrels) == set(val["query_id"]) | set(test["query_id"])
    assert all(5 <= qrels.n_relevant(q) < 80 for q in qrels)
    # Embeddings: the clip-retrieval layout, float16, L2-normalised, ids joinable to qrels.
    store = EmbeddingStore(bench.embeddings)
    assert len(store) == 1000 and store.dim == 16
    shards = sorted((bench.embeddings / "img_emb").glob("img_emb_*.npy"))
    assert [p.name for p in shards] == ["img_emb_0.npy", "img_emb_1.npy"]
    emb = np.concatenate([np.load(p) for p in shards])
    assert emb.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=2e-3)
    ids = set(store.ids.tolist())
    assert all(img in ids for q in qrels for img in qrels[q])
    meta = store.metadata
    assert not meta["image_path"].str.endswith(".jpg").any()  # as INQUIRE's metadata
    # Text embeddings: one row per query, float32 vectors of the same dim.
    text = pq.read_table(bench.text_embeddings).to_pandas()
    assert set(text["query_text"]) == set(val["query_text"]) | set(test["query_text"])
    assert len(text["embedding"].iloc[0]) == 16
    assert bench.images is None


def test_relevant_images_score_above_the_rest(tmp_path: Path) -> None:
    # Structured, not random noise: a query's relevant images lie nearer its text embedding.
    bench = make_synthetic_benchmark(tmp_path / "b", seed=2, **SMALL)
    store = EmbeddingStore(bench.embeddings)
    emb = np.concatenate([np.load(p) for p in sorted((bench.embeddings / "img_emb").glob("*.npy"))])
    text = pq.read_table(bench.text_embeddings).to_pandas()
    queries = pd.concat([read_queries(bench.queries_val), read_queries(bench.queries_test)])
    vec = dict(zip(text["query_text"], text["embedding"], strict=True))
    qrels = read_qrels(bench.annotations)
    row = {int(i): r for r, i in enumerate(store.ids)}
    for qid, qtext in zip(queries["query_id"], queries["query_text"], strict=True):
        scores = emb.astype(np.float32) @ np.asarray(vec[qtext], np.float32)
        rel_rows = [row[i] for i in qrels[int(qid)]]
        mask = np.zeros(len(scores), bool)
        mask[rel_rows] = True
        assert scores[mask].mean() > scores[~mask].mean()


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = make_synthetic_benchmark(tmp_path / "a", seed=5, **SMALL)
    b = make_synthetic_benchmark(tmp_path / "b", seed=5, **SMALL)
    c = make_synthetic_benchmark(tmp_path / "c", seed=6, **SMALL)
    assert _digest(a.root) == _digest(b.root)
    assert _digest(a.root) != _digest(c.root)


def test_images_match_the_annotation_paths(tmp_path: Path) -> None:
    small = {**SMALL, "n_val": 1, "n_test": 1, "n_images": 400}
    bench = make_synthetic_benchmark(
        tmp_path / "b", seed=0, write_images=True, image_size=16, **small
    )
    assert bench.images is not None
    jpgs = list(bench.images.rglob("*.jpg"))
    assert len(jpgs) == 400
    ann = pd.read_csv(bench.annotations)
    assert all((bench.images / p).is_file() for p in ann["image_path"])
    assert all(p.parent.name == "train" and p.name.startswith("synthetic_") for p in jpgs)
    # Re-running over existing images (a resumed run) writes the same files.
    before = _digest(bench.root)
    jpgs[0].unlink()
    make_synthetic_benchmark(tmp_path / "b", seed=0, write_images=True, image_size=16, **small)
    assert _digest(bench.root) == before


def test_too_few_images_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"n_images=100 is too small.*at least 1000"):
        make_synthetic_benchmark(tmp_path, **{**SMALL, "n_images": 100})
