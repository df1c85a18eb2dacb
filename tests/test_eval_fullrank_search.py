"""INQUIRE-Fullrank evaluation: search, id mapping, cache, results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from inquire import config
from inquire.data.qrels import Qrels, read_qrels
from inquire.data.queries import read_queries
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.embed import EmbeddingStore, load_encoder
from inquire.errors import InputError
from inquire.eval import EvalResult, evaluate
from inquire.eval import fullrank as fr
from inquire.index import exact
from inquire.run import Run
from inquire.testing.search_stores import random_unit, write_store


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return make_synthetic_benchmark(root, n_images=2400, dim=32, n_val=2, n_test=10, seed=3)


def brute_run(store: EmbeddingStore, q: np.ndarray, qids, k: int) -> Run:
    """The obvious way: every score, one full sort per query."""
    emb = np.concatenate([np.asarray(s, np.float32) for s in store.shards])
    scores = q @ emb.T
    res = {}
    for r, qid in enumerate(qids):
        order = np.lexsort((store.ids, -scores[r]))[:k]
        res[int(qid)] = (store.ids[order], scores[r, order].astype(np.float64))
    return Run(res)


def test_evaluate_fullrank_matches_brute_force(bench, tmp_path):
    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    model = f"precomputed:{bench.text_embeddings}"
    result, run = fr.evaluate_fullrank(
        model, queries, qrels, bench.embeddings, k=50, k_max=100, out_dir=tmp_path / "out"
    )
    store = EmbeddingStore(bench.embeddings)
    q = load_encoder(model).encode_text(queries["query_text"].tolist())
    ref = brute_run(store, q, queries["query_id"], 100)
    for qid in queries["query_id"]:
        np.testing.assert_array_equal(run[qid][0], ref[qid][0])
    expected = evaluate(ref, qrels, queries, k=50)
    pd.testing.assert_frame_equal(result.per_query, expected.per_query)
    assert result.config["search"] == "exact" and result.config["k_max"] == 100
    # The synthetic queries are findable: far above a random order, whose AP@50 is about
    # R / N ~ 0.005 here (the text query alone is meant to be weak: see data.synthetic).
    assert result.per_query["ap"].mean() > 0.02
    saved = EvalResult.load(tmp_path / "out")
    assert saved.k == 50 and len(saved.per_query) == len(queries)
    assert len(Run.read(tmp_path / "out" / "run.parquet")[int(queries["query_id"][0])][0]) == 100


def test_cache_serves_repeats_without_searching(bench, monkeypatch):
    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    model = f"precomputed:{bench.text_embeddings}"
    first, run1 = fr.evaluate_fullrank(model, queries, qrels, bench.embeddings, k=20, k_max=200)
    files = list(config.cache_dir("topk").glob("*.parquet"))
    assert len(files) == 1
    cached = pq.read_table(files[0]).to_pandas()
    assert set(cached.columns) == set(fr.CACHE_COLUMNS)
    assert cached["query_text"].nunique() == len(queries)

    def no_search(*args, **kwargs):
        raise AssertionError("searched although the cache holds the answer")

    monkeypatch.setattr(exact, "search", no_search)
    # Same k_max, and a smaller one (cut from the cached 200), come from the cache.
    again, _run2 = fr.evaluate_fullrank(model, queries, qrels, bench.embeddings, k=20, k_max=200)
    pd.testing.assert_frame_equal(first.per_query, again.per_query)
    _smaller, run3 = fr.evaluate_fullrank(model, queries, qrels, bench.embeddings, k=20, k_max=60)
    for qid in run1:
        np.testing.assert_array_equal(run3[qid][0], run1[qid][0][:60])
    # A larger k_max, or no cache, must search.
    with pytest.raises(AssertionError, match="searched"):
        fr.evaluate_fullrank(model, queries, qrels, bench.embeddings, k=20, k_max=300)
    with pytest.raises(AssertionError, match="searched"):
        fr.evaluate_fullrank(model, queries, qrels, bench.embeddings, k=20, cache=False)


def test_cache_key_follows_the_store(tmp_path):
    x = random_unit(300, 8, seed=1)
    root = write_store(tmp_path / "emb", x)
    texts = pd.DataFrame({"query_id": [1], "query_text": ["a"]})

    class Enc:
        model_id, revision, dim = "fake", "r1", 8

        def encode_text(self, t):
            return random_unit(len(t), 8, seed=2)

        def encode_images(self, images):
            raise NotImplementedError

    run1 = fr.fullrank_topk(Enc(), texts, EmbeddingStore(root), 5)
    write_store(root, -x)  # same size, other contents: the cached list is no longer valid
    run2 = fr.fullrank_topk(Enc(), texts, EmbeddingStore(root), 5)
    assert not np.array_equal(run1[1][0], run2[1][0])
    assert len(list(config.cache_dir("topk").glob("*.parquet"))) == 2
    Enc.revision = "r2"  # a new model revision is a new key too
    fr.fullrank_topk(Enc(), texts, EmbeddingStore(root), 5)
    assert len(list(config.cache_dir("topk").glob("*.parquet"))) == 3


def test_inquire_published_layout_joins_on_image_path(tmp_path):
    """Embeddings with image_path without .jpg and no image_id, as INQUIRE publishes them."""
    n, d = 600, 16
    x = random_unit(n, d, seed=5)
    paths = [f"train/01234_Animalia_Aves_sp{i % 7}/{i:08x}" for i in range(n)]
    root = write_store(tmp_path / "emb", x, [250, 350], paths=paths, with_image_id=False)
    store = EmbeddingStore(root)
    # The annotations: a few relevant images per query, paths with .jpg, iNat-style ids.
    rng = np.random.default_rng(6)
    rows = rng.choice(n, 40, replace=False)
    inat_ids = 10_000_000 + rows * 13
    q = x[rows[[0, 20]]] + 0.05 * random_unit(2, d, seed=7)
    text_file = tmp_path / "text.parquet"
    pd.DataFrame({"query_text": ["first", "second"], "embedding": list(q)}).to_parquet(text_file)
    ann = pd.DataFrame(
        {
            "query_id": [1] * 20 + [2] * 20,
            "image_id": inat_ids,
            "image_path": [paths[r] + ".jpg" for r in rows],
        }
    )
    qrels = Qrels.from_dataframe(ann)
    queries = pd.DataFrame(
        {
            "query_id": [1, 2],
            "query_text": ["first", "second"],
            "supercategory": ["Appearance", "Context"],
            "category": ["a", "b"],
            "iconic_group": ["Birds", "Birds"],
        }
    )
    result, run = fr.evaluate_fullrank(f"precomputed:{text_file}", queries, qrels, root, k=10)
    assert result.config["image_ids"] == "joined on image_path"
    # The nearest image of query 1 is the annotated row rows[0]: it carries its iNat id.
    assert run[1][0][0] == inat_ids[0]
    assert run[2][0][0] == inat_ids[20]
    # Rows outside the annotations get distinct ids above the base, by row.
    ids = fr.image_ids_by_path(store, qrels.paths)
    assert len(np.unique(ids)) == n
    assert ids[rows[3]] == inat_ids[3]
    other = np.setdiff1d(np.arange(n), rows)[0]
    assert ids[other] == fr.UNANNOTATED_ID_BASE + other
    assert result.per_query.loc[0, "mrr"] == 1.0


def test_path_join_errors(tmp_path):
    root = write_store(tmp_path / "emb", random_unit(20, 4), with_image_id=False)
    store = EmbeddingStore(root)
    with pytest.raises(InputError, match="no image_path column"):
        fr.image_ids_by_path(store, {})
    with pytest.raises(InputError, match="different collections"):
        fr.image_ids_by_path(store, {5: "val/elsewhere/x.jpg"})


def test_dimension_mismatch_names_both(bench, tmp_path):
    root = write_store(tmp_path / "emb", random_unit(50, 12))
    queries = read_queries(bench.queries_test)
    with pytest.raises(InputError, match=r"dimension 32 but .* dimension 12"):
        fr.evaluate_fullrank(
            f"precomputed:{bench.text_embeddings}", queries, read_qrels(bench.annotations), root
        )


def test_bad_k(bench):
    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    model = f"precomputed:{bench.text_embeddings}"
    with pytest.raises(InputError, match=r"k_max .* at least k"):
        fr.evaluate_fullrank(model, queries, qrels, bench.embeddings, k=50, k_max=10)
    with pytest.raises(InputError, match="positive integer"):
        fr.evaluate_fullrank(model, queries, qrels, bench.embeddings, k=0)


def test_with_an_index(bench):
    pytest.importorskip("faiss")
    from inquire.index.ann import build_index

    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    model = f"precomputed:{bench.text_embeddings}"
    build_index(EmbeddingStore(bench.embeddings), "IVF4,Flat", name="ivf4")
    _exact_res, exact_run = fr.evaluate_fullrank(model, queries, qrels, bench.embeddings, k=20)
    res, run = fr.evaluate_fullrank(
        model, queries, qrels, bench.embeddings, k=20, index="ivf4", index_params={"nprobe": 4}
    )
    assert res.config["search"].startswith("index:ivf4")
    for qid in exact_run:  # all lists probed: the same lists as exact search
        np.testing.assert_array_equal(run[qid][0], exact_run[qid][0])
