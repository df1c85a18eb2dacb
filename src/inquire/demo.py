"""The offline demo: a synthetic benchmark run through the same code as a real evaluation."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from inquire.data.qrels import read_qrels
from inquire.data.queries import read_queries
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.embed import EmbeddingStore
from inquire.eval.fullrank import evaluate_fullrank
from inquire.report.table import metrics_table


def run_demo(
    out_dir: str | os.PathLike[str], seed: int = 0, console: Console | None = None
) -> Path:
    """Generate the synthetic benchmark under ``out_dir``, evaluate full-rank retrieval on it,
    print the tables and return the results folder."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or logged: keep wide tables readable
            console = Console(width=150)
    _quiet_model_progress()
    out = Path(out_dir)
    console.print(
        Panel(
            "[bold yellow]SYNTHETIC DATA[/]: random embeddings and made-up queries in INQUIRE's "
            "formats. The numbers below exercise the pipeline; they say nothing about any model.",
            title="inquire demo",
        )
    )
    bench = make_synthetic_benchmark(out / "benchmark", seed=seed, write_images=True)
    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    k = 50
    result, _ = evaluate_fullrank(
        f"precomputed:{bench.text_embeddings}",
        queries,
        qrels,
        bench.embeddings,
        k=k,
        out_dir=out / "results" / "fullrank",
        cache=False,  # regenerated data every run: caching it would only fill the cache
        config_extra={"data": "synthetic", "seed": seed},
        name="synthetic-fullrank",
    )
    store = EmbeddingStore(bench.embeddings)
    console.print(
        f"Full-rank retrieval over {len(store):,} synthetic images, {len(queries)} test queries"
    )
    console.print(
        metrics_table(result, by="supercategory", title=f"INQUIRE-Fullrank (synthetic), k={k}")
    )
    res_dir = out / "results" / "fullrank"
    console.print(f"results: {res_dir}")
    _later_steps(out, res_dir, bench.root, console, seed)
    return res_dir


def _quiet_model_progress() -> None:
    """Hide the hub's and transformers' per-file progress bars (tiny local models)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def _later_steps(out: Path, res_dir: Path, bench_root: Path, console: Console, seed: int) -> None:
    """Embedding, reranking, report and statistics, a photo collection, and the web page."""
    from inquire.collection.demo import demo_collection
    from inquire.embed.demo import demo_embed
    from inquire.report.demo import demo_report
    from inquire.rerank.demo import demo_rerank
    from inquire.web.demo import demo_web

    demo_embed(out / "embed", console, seed=seed)
    demo_rerank(out / "rerank", console, seed=seed)
    demo_report([res_dir], out / "report", console)
    # The collection's default photos (seed 7) show every colour; other seeds draw new ones.
    collection = demo_collection(out / "collection", console, seed=7 + seed)
    demo_web([res_dir], bench_root, console, collections=collection.parent)
