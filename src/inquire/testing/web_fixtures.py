"""A small world for the web page: a synthetic benchmark with image files, two evaluated runs
and a text encoder that embeds any text, so free-text search works without model weights."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from inquire.data.synthetic import SyntheticBenchmark, make_synthetic_benchmark
from inquire.embed.base import l2_normalize
from inquire.errors import InputError

_WORD = re.compile(r"[a-z]+")
_STOP = frozenset({"a", "an", "the", "in", "on", "of", "its", "with", "synthetic", "and"})


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


class BagOfWordsEncoder:
    """Embeds any text as the normalised mean of the known texts' embeddings that share a word
    with it; a text sharing no word gets a pseudo-random unit vector seeded by its hash.

    Built from a parquet file of ``query_text, embedding`` (the synthetic benchmark's text
    embeddings), so "puffin" lands near the synthetic puffin queries. ``encode_text`` returns
    ``(n, dim) float32`` L2-normalised rows; it cannot embed images.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"text embeddings {str(p)!r} do not exist")
        table = pq.read_table(p).to_pandas()
        self._texts = [str(t) for t in table["query_text"]]
        self._emb = l2_normalize(np.stack(table["embedding"].to_numpy()))
        self._words = [_words(t) for t in self._texts]
        self.dim = int(self._emb.shape[1])
        self.model_id = f"bow:{p}"
        self.revision = hashlib.sha256(p.read_bytes()).hexdigest()[:12]

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), np.float32)
        for n, text in enumerate(texts):
            words = _words(text)
            weights = np.array([len(words & w) for w in self._words], np.float32)
            if weights.sum() > 0:
                out[n] = weights @ self._emb
            else:
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
                out[n] = np.random.default_rng(seed).standard_normal(self.dim)
        return l2_normalize(out)

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        raise InputError(f"{self.model_id} embeds text only")


@dataclass(frozen=True)
class WebFixture:
    """A synthetic benchmark with images and the result folders of two runs over it."""

    bench: SyntheticBenchmark
    results: list[Path]
    encoder: BagOfWordsEncoder

    @property
    def images(self) -> Path:
        if self.bench.images is None:
            raise InputError("this fixture was built without images")
        return self.bench.images


def build_web_fixture(
    out_dir: str | os.PathLike[str],
    n_images: int = 2000,
    dim: int = 32,
    n_test: int = 8,
    k: int = 50,
    seed: int = 0,
) -> WebFixture:
    """Write a synthetic benchmark with JPEGs plus two evaluated runs to ``out_dir``.

    Run ``exact`` searches with the benchmark's text embeddings; run ``noisy`` with the same
    embeddings plus noise, so the two rank differently. Both results name their query and
    annotation files in ``config`` (the web page reads them from there).
    """
    from inquire.data.qrels import read_qrels
    from inquire.data.queries import read_queries
    from inquire.embed.models import load_encoder
    from inquire.embed.store import EmbeddingStore
    from inquire.eval.evaluate import evaluate
    from inquire.index.exact import search
    from inquire.run import Run

    out = Path(out_dir)
    bench = make_synthetic_benchmark(
        out / "benchmark",
        n_images=n_images,
        dim=dim,
        n_val=2,
        n_test=n_test,
        seed=seed,
        write_images=True,
    )
    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    store = EmbeddingStore(bench.embeddings)
    q_emb = load_encoder(f"precomputed:{bench.text_embeddings}").encode_text(
        queries["query_text"].tolist()
    )
    rng = np.random.default_rng(seed + 1)
    results = []
    for name, emb in (
        ("exact", q_emb),
        ("noisy", l2_normalize(q_emb + 0.6 * rng.standard_normal(q_emb.shape) / np.sqrt(dim))),
    ):
        scores, ids = search(store, emb, k=k)
        run = Run.from_arrays(queries["query_id"], ids, scores, name=name)
        cfg = {
            "task": "fullrank",
            "data": "synthetic",
            "queries": str(bench.queries_test),
            "annotations": str(bench.annotations),
        }
        result = evaluate(run, qrels, queries, k=k, config=cfg)
        results.append(result.save(out / "results" / name, run=run))
    return WebFixture(bench, results, BagOfWordsEncoder(bench.text_embeddings))


def serve_fixture(
    results: list[str], images: str, embeddings: str, text_emb: str, thumbs: str, port: int
) -> None:
    """Serve the web app over a :func:`build_web_fixture` world on 127.0.0.1:``port`` with the
    bag-of-words encoder (blocks; run it in a child process)."""
    from inquire.web.app import create_app
    from inquire.web.config import WebConfig
    from inquire.web.server import serve

    config = WebConfig(
        results=[Path(r) for r in results],
        image_roots=[Path(images)],
        embeddings=Path(embeddings),
        model=BagOfWordsEncoder(text_emb),
        thumb_cache=Path(thumbs),
    )
    serve(create_app(config), port=port, log_level="warning")
