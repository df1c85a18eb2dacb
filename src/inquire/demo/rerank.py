"""The reranking step of the offline demo: a synthetic INQUIRE-Rerank set, two baselines and a
tiny random-weight vision-language model, plus two-stage reranking of a full-rank run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TINY_FAMILY = "llava-1.5"


def demo_rerank(out_dir: str | os.PathLike[str], console: Any = None, seed: int = 0) -> Path:
    """Write a synthetic INQUIRE-Rerank set under ``out_dir``, evaluate the ``clip_score`` and
    ``random`` baselines and a tiny RANDOM-WEIGHT LLaVA-style reranker on it, rerank a
    full-rank top-20 with the same model (two-stage), print the tables and return the results
    folder (``out_dir/results/rerank``)."""
    import torch
    from rich.console import Console
    from rich.panel import Panel

    from inquire.data.qrels import read_qrels
    from inquire.data.queries import read_queries
    from inquire.data.rerank_set import read_rerank_set, write_synthetic_rerank_set
    from inquire.eval import run_two_stage
    from inquire.eval.fullrank import evaluate_fullrank
    from inquire.eval.rerank import evaluate_rerank
    from inquire.report.table import metrics_table, rerank_table
    from inquire.rerank import load_reranker
    from inquire.rerank.cache import ScoreCache
    from inquire.testing.rerank_tiny_vlm import build_tiny_vlm

    console = console or Console()
    out = Path(out_dir)
    results = out / "results" / "rerank"
    console.print(
        Panel(
            "[bold yellow]SYNTHETIC DATA, RANDOM-WEIGHT MODEL[/]: a made-up INQUIRE-Rerank set "
            f"and a tiny {TINY_FAMILY} model with random weights. The numbers exercise the "
            "reranking pipeline; they say nothing about any real model.",
            title="inquire demo: reranking",
        )
    )
    paths = write_synthetic_rerank_set(out / "rerank-set", n_val=1, n_test=3, seed=seed)
    bench = out / "rerank-set" / "benchmark"
    queries = read_queries(bench / "inquire_queries_test.csv")
    rs = read_rerank_set(paths["test"], queries=queries)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model_dir = build_tiny_vlm(TINY_FAMILY, out / "tiny-vlm" / TINY_FAMILY, seed=seed)
    reranker = load_reranker(f"vlm:{TINY_FAMILY}/{model_dir}", batch_size=25)
    label = f"tiny random-weight {TINY_FAMILY}"
    # The tiny model never answers yes/no; its warnings would drown the tables.
    vlm_log = logging.getLogger("inquire.rerank.vlm")
    level = vlm_log.level
    vlm_log.setLevel(logging.ERROR)
    try:
        with ScoreCache(out / "cache" / "scores.sqlite") as cache:
            for name, ranker in (
                ("clip_score", "clip_score"),
                ("random", "random"),
                ("tiny-vlm", reranker),
            ):
                res = evaluate_rerank(
                    rs, ranker, seed=seed, cache=cache, progress=False, config={"data": "synthetic"}
                )
                title = f"INQUIRE-Rerank (synthetic): {label if name == 'tiny-vlm' else name}"
                console.print(rerank_table(res, title))
                if res.expected_random is not None:
                    console.print(f"expected AP of a random order: {100 * res.expected_random:.1f}")
                res.save(results / name)

            # Two-stage: full-rank top-20 by the synthetic embeddings, reranked.
            qrels = read_qrels(bench / "inquire_annotations.csv")
            _, first = evaluate_fullrank(
                f"precomputed:{bench / 'text_embeddings.parquet'}",
                queries,
                qrels,
                bench / "embeddings",
                k=20,
                cache=False,
                name="synthetic-fullrank",
            )
            two = run_two_stage(
                first,
                reranker,
                bench / "embeddings",
                bench / "images",
                qrels,
                queries,
                k=10,
                from_k=20,
                cache=cache,
                progress=False,
                out_dir=results / "two-stage",
            )
    finally:
        vlm_log.setLevel(level)
    console.print(
        metrics_table(
            two.result,
            by="supercategory",
            title=f"Two-stage (synthetic): full-rank top-20 reranked by {label}, k=10",
        )
    )
    console.print(f"results: {results}")
    return results
