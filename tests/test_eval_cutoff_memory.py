"""A cut-off far beyond the run: memory follows the run, the metrics keep their meaning."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data import Qrels
from inquire.errors import InputError
from inquire.eval.evaluate import evaluate
from inquire.metrics import METRICS, Metric, compute_metrics, register_metric, unregister_metric
from inquire.metrics import relevance_with_ties as rwt
from inquire.run import Run

ALL = ("ap", "ndcg", "mrr", "precision", "recall", "trec_ap")


def _world(seed: int) -> tuple[Run, Qrels, pd.DataFrame]:
    """Queries with lists of different lengths, tied scores, and R both below and above the
    longest list (AP@k's min(R, k) and nDCG's ideal list must see R, not the list)."""
    rng = np.random.default_rng(seed)
    run, qrels = {}, {}
    for q in range(1, 9):
        n = int(rng.integers(0, 30))
        ids = rng.choice(200, n, replace=False)
        scores = np.round(rng.random(n), 1)  # one decimal: many ties
        run[q] = (ids.tolist(), scores.tolist())
        qrels[q] = set(rng.choice(200, int(rng.integers(1, 60)), replace=False).tolist())
    queries = pd.DataFrame(
        {
            "query_id": np.arange(1, 9, dtype=np.int64),
            "query_text": [f"q{q}" for q in range(1, 9)],
            "supercategory": "S",
            "category": "C",
            "iconic_group": "I",
        }
    )
    return Run(run, name="r"), Qrels(qrels), queries


def _full_width(run: Run, qrels: Qrels, queries: pd.DataFrame, k: int) -> pd.DataFrame:
    """The reference: the (nq, k) matrix built in full, as before the bound."""
    qids = queries["query_id"].to_numpy(np.int64)
    ranked = [run[int(q)][0] for q in qids]
    scores = [run[int(q)][1] for q in qids]
    relevant = [qrels.get(int(q), frozenset()) for q in qids]
    n_rel = np.array([len(s) for s in relevant], np.int64)
    rel, ties = rwt(ranked, scores, relevant, k, query_ids=qids)
    return pd.DataFrame(compute_metrics(rel, n_rel, ALL, query_ids=qids, ties=ties))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 29, 30, 59, 60, 61, 200, 1000])
def test_bounded_matrix_gives_the_full_width_values(seed: int, k: int) -> None:
    run, qrels, queries = _world(seed)
    got = evaluate(run, qrels, queries, k=k, metrics=ALL).per_query[list(ALL)]
    want = _full_width(run, qrels, queries, k)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12, atol=1e-15)


def test_k_of_a_trillion_stays_small() -> None:
    run, qrels, queries = _world(3)
    tracemalloc.start()
    try:
        res = evaluate(run, qrels, queries, k=10**12, metrics=ALL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # a (8, 10**12) matrix would be 64 TB
    # Nothing is found past the lists: recall, AP (R < k), MRR are as at a k of 1,000.
    at_1000 = evaluate(run, qrels, queries, k=1000, metrics=ALL).per_query
    for m in ("ap", "ndcg", "mrr", "recall", "trec_ap"):
        np.testing.assert_allclose(res.per_query[m], at_1000[m], rtol=1e-12)
    np.testing.assert_allclose(res.per_query["precision"], at_1000["precision"] * 1000 / 10**12)


def test_another_metric_needs_the_full_width_and_names_the_limit() -> None:
    run, qrels, queries = _world(4)
    register_metric(
        Metric("width", lambda rel, n_rel, ties: np.full(len(rel), rel.shape[1] / 1e9), "W")
    )
    try:
        res = evaluate(run, qrels, queries, k=100, metrics=["width"])
        np.testing.assert_allclose(res.per_query["width"], 100 / 1e9)  # built at the real k
        with pytest.raises(InputError, match=r"--k 1,000,000,000,000 is too large.*at most"):
            evaluate(run, qrels, queries, k=10**12, metrics=["width"])
    finally:
        unregister_metric("width")
    assert "width" not in METRICS


def test_cli_evaluate_with_a_k_of_a_trillion(tmp_path: Path) -> None:
    run, qrels, queries = _world(5)
    queries.to_csv(tmp_path / "q.csv", index=False)
    qrels.to_dataframe().to_csv(tmp_path / "a.csv", index=False)
    run.save_trec(tmp_path / "r.trec")
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--run",
            str(tmp_path / "r.trec"),
            "--queries",
            str(tmp_path / "q.csv"),
            "--annotations",
            str(tmp_path / "a.csv"),
            "--k",
            str(10**12),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "k=1000000000000" in res.output


@pytest.mark.parametrize("use_index", [False, True])
def test_fullrank_topk_with_k_far_past_the_store_returns_every_row_once(
    tmp_path: Path, use_index: bool
) -> None:
    """`eval fullrank --k 10**12` searched for (queries x 10**12) rows of padding (a 291 TiB
    MemoryError); the top 10**12 of N rows is the top N, the same lists as k = N."""
    from inquire.data.queries import read_queries
    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import EmbeddingStore, load_encoder
    from inquire.eval.fullrank import fullrank_topk
    from inquire.index.ann import AnnIndex, build_index

    bench = make_synthetic_benchmark(tmp_path / "b", n_images=400, dim=16, n_val=1, n_test=1)
    queries = read_queries(bench.queries_test)
    store = EmbeddingStore(bench.embeddings)
    enc = load_encoder(f"precomputed:{bench.text_embeddings}")
    ix = None
    if use_index:
        build_index(store, "IVF4,Flat", name="ivf")
        ix = AnnIndex.load(store, "ivf")
    params = {"nprobe": 4} if use_index else None
    n = len(store)
    tracemalloc.start()
    try:
        huge = fullrank_topk(enc, queries, store, 10**12, index=ix, index_params=params)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20
    exact = fullrank_topk(enc, queries, store, n, index=ix, index_params=params, cache=False)
    for qid in queries["query_id"]:
        ids_h, sc_h = huge[int(qid)]
        ids_n, sc_n = exact[int(qid)]
        assert len(ids_h) == n == len(set(np.asarray(ids_h).tolist()))
        np.testing.assert_array_equal(ids_h, ids_n)
        np.testing.assert_array_equal(sc_h, sc_n)
    with pytest.raises(InputError, match="k_max must be a positive integer"):
        fullrank_topk(enc, queries, store, 0)


def test_eval_fullrank_cli_with_k_far_past_the_store(tmp_path: Path) -> None:
    from inquire.data.synthetic import make_synthetic_benchmark

    b = make_synthetic_benchmark(tmp_path / "b", n_images=400, dim=16, n_val=1, n_test=1)
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "fullrank",
            "--model",
            f"precomputed:{b.text_embeddings}",
            "--embeddings",
            str(b.embeddings),
            "--queries",
            str(b.queries_test),
            "--annotations",
            str(b.annotations),
            "--k",
            str(10**12),
            "--no-cache",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
