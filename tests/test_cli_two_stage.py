"""`inquire eval fullrank --rerank`: the two-stage pipeline from the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data.qrels import read_qrels
from inquire.data.queries import read_queries
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.eval.evaluate import EvalResult
from inquire.run import Run
from inquire.testing.rerank_tiny_vlm import build_tiny_vlm


def test_two_stage_reranks_the_first_stage_top_k(tmp_path: Path) -> None:
    bench = make_synthetic_benchmark(
        tmp_path / "bench", n_images=1000, dim=32, n_val=1, n_test=3, write_images=True
    )
    model_dir = build_tiny_vlm("llava-1.5", tmp_path / "vlm")
    out = tmp_path / "out"
    args = [
        "eval", "fullrank",
        "--model", f"precomputed:{bench.text_embeddings}",
        "--embeddings", str(bench.embeddings),
        "--queries", str(bench.queries_test),
        "--annotations", str(bench.annotations),
        "--k", "10", "--from-k", "20",
        "--rerank", f"vlm:llava-1.5/{model_dir}",
        "--images", str(bench.images),
        "--out", str(out),
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    first = Run.read(out / "run.parquet")
    second = Run.read(out / "two_stage" / "run.parquet")
    assert set(second) == set(first)
    for q in first:
        # The reranked list is a permutation of the first stage's top from_k.
        assert sorted(second[q][0].tolist()) == sorted(first[q][0][:20].tolist())
        assert np.all((second[q][1] >= 0) & (second[q][1] <= 1))
    two = EvalResult.load(out / "two_stage")
    assert two.k == 10
    assert two.config["from_k"] == 20 and two.config["reranker"].startswith("vlm:llava-1.5")
    assert two.config["protocol"] == "inquire-2024" and "(inquire-2024)" in second.name
    # The metrics are the foundation's over the reranked top 10, with R from the annotations.
    qrels = read_qrels(bench.annotations)
    queries = read_queries(bench.queries_test)
    per_query = pd.read_csv(out / "two_stage" / "per_query.csv")
    for q in queries["query_id"]:
        ids, scores = second[int(q)]
        rel = np.array([int(i) in qrels[int(q)] for i in ids], float)
        # P@10 by hand, INQUIRE's tie rule: a group of equal scores straddling rank 10
        # counts its share of the places inside (c of its g items) times its hits.
        kth = scores[9]
        above = scores[:10] > kth
        group = scores == kth
        inside = int((scores[:10] == kth).sum())
        hits = rel[:10][above].sum() + inside * rel[group].sum() / group.sum()
        got = per_query.loc[per_query["query_id"] == q, "precision"].item()
        assert got == pytest.approx(hits / 10, abs=1e-12)
    # --protocol reaches the reranker, and the results say which protocol scored them
    out2 = tmp_path / "out2"
    args2 = [*args[:-1], str(out2), "--protocol", "inquire-sum"]
    res = CliRunner().invoke(app, args2)
    assert res.exit_code == 0, res.output
    assert EvalResult.load(out2 / "two_stage").config["protocol"] == "inquire-sum"


def test_rerank_without_images_is_a_clear_error(tmp_path: Path) -> None:
    bench = make_synthetic_benchmark(tmp_path / "bench", n_images=1000, dim=16, n_val=1, n_test=3)
    res = CliRunner().invoke(
        app,
        [
            "eval", "fullrank",
            "--model", f"precomputed:{bench.text_embeddings}",
            "--embeddings", str(bench.embeddings),
            "--queries", str(bench.queries_test),
            "--annotations", str(bench.annotations),
            "--rerank", "vlm:llava-1.5/nowhere",
        ],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "--images" in res.output
