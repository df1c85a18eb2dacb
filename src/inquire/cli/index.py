"""``inquire index``: build approximate (faiss) indexes and measure their recall."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from inquire.cli._common import friendly_errors

index_app = typer.Typer(
    help="Approximate nearest-neighbour indexes (faiss) next to an embedding folder.",
    no_args_is_help=True,
)


@index_app.command("build")
@friendly_errors
def build_cmd(
    embeddings: Path = typer.Option(..., "--embeddings", help="Embedding folder (img_emb/...)."),
    factory: str = typer.Option(
        ..., "--factory", help="faiss factory string, e.g. 'IVF1024,Flat', 'HNSW32'."
    ),
    name: str | None = typer.Option(None, "--name", help="Index name (default from factory)."),
    train_size: int = typer.Option(200_000, help="Rows sampled to train the index."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index."),
) -> None:
    """Build a faiss index (inner product) over EMBEDDINGS and save it in EMBEDDINGS/index/."""
    from inquire._progress import rich_progress
    from inquire.embed.store import EmbeddingStore
    from inquire.index.ann import build_index

    store = EmbeddingStore(embeddings)
    with rich_progress(f"adding {len(store):,} vectors") as bar:
        task = bar.add_task("vectors", total=len(store), rate="")
        path = build_index(
            store,
            factory,
            name=name,
            train_size=train_size,
            overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    typer.echo(f"wrote {path}")


@index_app.command("list")
@friendly_errors
def list_cmd(
    embeddings: Path = typer.Option(..., "--embeddings", help="Embedding folder."),
) -> None:
    """List the indexes built for EMBEDDINGS."""
    import json

    from inquire.index.ann import index_dir, list_indexes

    for name in list_indexes(embeddings):
        info = json.loads((index_dir(embeddings) / f"{name}.json").read_text(encoding="utf-8"))
        typer.echo(f"{name}\t{info.get('factory')}\t{info.get('count')} vectors")


@index_app.command("recall")
@friendly_errors
def recall_cmd(
    embeddings: Path = typer.Option(..., "--embeddings", help="Embedding folder."),
    index: str = typer.Option(..., "--index", help="Index name (see `inquire index list`)."),
    model: str = typer.Option(..., "--model", "-m", help="Text model id, e.g. precomputed:FILE."),
    split: str = typer.Option("test", help="Benchmark split whose queries are used."),
    queries: Path | None = typer.Option(None, help="Local query CSV instead of the split's."),
    k: int = typer.Option(50, "--k", "-k", help="Recall@k cut-off."),
    param: list[str] = typer.Option([], "--param", help="Search parameter NAME=VALUE."),
) -> None:
    """Recall@k of an index against exact search on the benchmark's queries, and the speed-up."""
    from rich.console import Console
    from rich.table import Table

    from inquire.data.queries import load_queries, read_queries
    from inquire.embed import EmbeddingStore, load_encoder
    from inquire.eval.fullrank import check_dims
    from inquire.index.ann import AnnIndex, parse_params, recall_at_k
    from inquire.index.exact import ExactIndex

    store = EmbeddingStore(embeddings)
    qs = read_queries(queries) if queries else load_queries(split)
    encoder = load_encoder(model)
    check_dims(encoder, store)
    q = encoder.encode_text(qs["query_text"].tolist())
    params = parse_params(param)
    ann = AnnIndex.load(store, index)
    ann.set_params(params)
    exact = ExactIndex(store)
    # Warm both sides the same way before timing: one query pages in the memory-mapped
    # embeddings (exact) and index (faiss), so neither timing includes first reads from disk.
    exact.search(q[:1], k)
    ann.search(q[:1], k)
    t0 = time.perf_counter()
    _, exact_ids = exact.search(q, k)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, approx_ids = ann.search(q, k)
    t_ann = time.perf_counter() - t0
    recall = recall_at_k(approx_ids, exact_ids, k)
    table = Table(title=f"{index} ({ann.info.get('factory')}) vs exact, {len(qs)} queries")
    for col in ("params", f"recall@{k}", "exact s", "index s", "speed-up"):
        table.add_column(col, justify="right")
    shown = ", ".join(f"{n}={v:g}" for n, v in params.items()) or "defaults"
    table.add_row(
        shown,
        f"{recall:.4f}",
        f"{t_exact:.3f}",
        f"{t_ann:.3f}",
        f"{t_exact / max(t_ann, 1e-9):.1f}x",
    )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
