"""`inquire.eval.run_two_stage` called directly (no CLI): the reranked run against a by-hand
reference, the score cache forms, the result folder and early errors."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inquire.data.qrels import read_qrels
from inquire.data.queries import read_queries
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.embed import EmbeddingStore
from inquire.errors import InputError
from inquire.eval import evaluate, run_two_stage
from inquire.eval.evaluate import EvalResult
from inquire.eval.fullrank import evaluate_fullrank
from inquire.run import Run


class FileHashReranker:
    """Scores an image by a hash of its file's bytes and the query: deterministic, no ties."""

    reranker_id = "test:filehash"
    revision = "1"
    prompt_version = "1"

    def __init__(self) -> None:
        self.scored: list[str] = []

    def score(self, query_text: str, images: Sequence[Any]) -> np.ndarray:
        out = []
        for image in images:
            path = Path(image)
            self.scored.append(path.name)
            digest = hashlib.sha1(query_text.encode() + path.read_bytes()).digest()
            out.append(int.from_bytes(digest[:6], "little") / float(1 << 48))
        return np.array(out, np.float64)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("two-stage")
    bench = make_synthetic_benchmark(
        root / "bench", n_images=800, dim=16, n_val=1, n_test=3, write_images=True, image_size=16
    )
    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    _, first = evaluate_fullrank(
        f"precomputed:{bench.text_embeddings}",
        queries,
        qrels,
        bench.embeddings,
        k=12,
        cache=False,
        name="first",
    )
    return {"root": root, "bench": bench, "queries": queries, "qrels": qrels, "first": first}


def test_reranks_the_top_from_k_like_the_slow_reference(setup: dict[str, Any]) -> None:
    bench, queries, qrels, first = setup["bench"], setup["queries"], setup["qrels"], setup["first"]
    ranker = FileHashReranker()
    out = setup["root"] / "out"
    two = run_two_stage(
        first,
        ranker,
        bench.embeddings,
        bench.images,
        qrels,
        queries,
        k=5,
        from_k=8,
        cache=False,
        progress=False,
        out_dir=out,
        config_extra={"first_stage_model": "synthetic"},
    )
    # Reference: image files named in the embeddings' metadata, scored one by one, sorted.
    meta = EmbeddingStore(bench.embeddings).metadata
    path_of = dict(zip(meta["image_id"].astype(int), meta["image_path"], strict=True))
    texts = dict(zip(queries["query_id"], queries["query_text"], strict=True))
    reference = {}
    for q in first:
        ids = first[q][0][:8]
        files = []
        for i in ids:
            p = bench.images / path_of[int(i)]
            files.append(p if p.is_file() else Path(f"{p}.jpg"))
        scores = FileHashReranker().score(texts[q], files)
        order = np.argsort(-scores, kind="stable")
        reference[q] = (ids[order], scores[order])
    for q in first:
        got_ids, got_scores = two.run[q]
        assert got_ids.tolist() == reference[q][0].tolist()
        np.testing.assert_allclose(got_scores, reference[q][1])
    assert len(ranker.scored) == 8 * len(first)  # no cache: every candidate scored once
    want = evaluate(Run(reference), qrels, queries, k=5)
    np.testing.assert_allclose(
        two.result.per_query["ap"].to_numpy(), want.per_query["ap"].to_numpy()
    )
    assert two.result.config["first_stage_model"] == "synthetic"
    assert two.result.config["from_k"] == 8 and two.result.config["reranker"] == "test:filehash"
    saved = EvalResult.load(out)
    assert saved.k == 5 and Run.read(out / "run.parquet")[next(iter(first))][0].size == 8


def test_cache_file_is_used_on_the_second_run(setup: dict[str, Any]) -> None:
    bench, queries, qrels, first = setup["bench"], setup["queries"], setup["qrels"], setup["first"]
    cache = setup["root"] / "cache" / "scores.sqlite"
    a, b = FileHashReranker(), FileHashReranker()
    kw = {"k": 4, "from_k": 6, "cache": cache, "progress": False}
    one = run_two_stage(first, a, bench.embeddings, bench.images, qrels, queries, **kw)
    two = run_two_stage(first, b, bench.embeddings, bench.images, qrels, queries, **kw)
    assert cache.is_file() and len(a.scored) == 6 * len(first) and b.scored == []
    for q in first:
        assert one.run[q][0].tolist() == two.run[q][0].tolist()


def test_k_above_from_k_fails_before_loading_the_reranker(setup: dict[str, Any]) -> None:
    bench, queries, qrels, first = setup["bench"], setup["queries"], setup["qrels"], setup["first"]
    with pytest.raises(InputError, match="k=10 is larger than from_k=5"):
        run_two_stage(
            first, "vlm:no-such-family/x", bench.embeddings, bench.images, qrels, queries,
            k=10, from_k=5,
        )  # fmt: skip


def test_missing_images_folder_names_the_file(setup: dict[str, Any]) -> None:
    bench, queries, qrels, first = setup["bench"], setup["queries"], setup["qrels"], setup["first"]
    with pytest.raises(InputError, match="does not exist"):
        run_two_stage(
            first, FileHashReranker(), bench.embeddings, setup["root"] / "nowhere", qrels,
            queries, k=2, from_k=3, cache=False, progress=False,
        )  # fmt: skip


def test_bad_output_folder_fails_before_reranking(setup: dict[str, Any]) -> None:
    bench, queries, qrels, first = setup["bench"], setup["queries"], setup["qrels"], setup["first"]
    taken = setup["root"] / "a-file"
    taken.write_text("x", encoding="utf-8")
    ranker = FileHashReranker()
    with pytest.raises(InputError, match="existing file"):
        run_two_stage(
            first, ranker, bench.embeddings, bench.images, qrels, queries,
            k=2, from_k=3, cache=False, progress=False, out_dir=taken,
        )  # fmt: skip
    assert ranker.scored == []
