"""``inquire index``: build approximate (faiss) indexes and measure their recall."""

from __future__ import annotations

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
    from inquire.index.ann import index_infos

    for name, info in index_infos(embeddings).items():
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
    from inquire.embed.store import EmbeddingStore
    from inquire.index.ann import parse_params
    from inquire.index.recall import measure_recall

    store = EmbeddingStore(embeddings)
    qs = read_queries(queries) if queries else load_queries(split)
    res = measure_recall(
        store, index, qs["query_text"].tolist(), k, [parse_params(param)], encoder=model
    )
    table = Table(title=f"{index} ({res.factory}) vs exact, {res.n_queries} queries")
    for col in ("params", f"recall@{k}", "exact s", "index s", "speed-up"):
        table.add_column(col, justify="right")
    for r in res.table.to_dict("records"):
        table.add_row(
            ", ".join(f"{n}={v:g}" for n, v in r["params"].items()) or "defaults",
            f"{r['recall']:.4f}",
            f"{r['exact_s']:.3f}",
            f"{r['index_s']:.3f}",
            f"{r['speedup']:.1f}x",
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
