"""``inquire eval fullrank`` (registered into the ``eval`` group)."""

from __future__ import annotations

from pathlib import Path

import typer

from inquire.cli._common import friendly_errors


@friendly_errors
def fullrank_cmd(
    model: str = typer.Option(..., "--model", help="Text model id, e.g. precomputed:FILE."),
    split: str = typer.Option("test", help="Benchmark split: val or test."),
    k: int = typer.Option(50, "--k", help="Cut-off for the metrics."),
    k_max: int | None = typer.Option(
        None, "--k-max", help="Images retrieved (and cached) per query; default k."
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="Embedding folder (clip-retrieval layout)."
    ),
    index: str | None = typer.Option(
        None, "--index", help="Search with this faiss index of the embeddings (default exact)."
    ),
    param: list[str] = typer.Option([], "--param", help="Index search parameter NAME=VALUE."),
    queries: Path | None = typer.Option(None, help="Local query CSV instead of the split's."),
    annotations: Path | None = typer.Option(None, help="Local annotations CSV."),
    out: Path | None = typer.Option(None, help="Write per_query.csv, summary.json, run.parquet."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Search again; ignore the cache."),
) -> None:
    """INQUIRE-Fullrank: embed the queries, search every image, print the metrics."""
    from rich.console import Console

    from inquire.data.qrels import read_qrels
    from inquire.data.queries import read_queries
    from inquire.errors import InputError
    from inquire.eval.fullrank import evaluate_fullrank
    from inquire.index.ann import parse_params
    from inquire.report.table import metrics_table

    if embeddings is None:
        raise InputError(
            "pass --embeddings DIR: a folder of image embeddings in the clip-retrieval layout "
            "(INQUIRE's published iNat24 embeddings or `inquire embed` output) for this model"
        )
    result, _ = evaluate_fullrank(
        model,
        read_queries(queries) if queries else split,
        read_qrels(annotations) if annotations else None,
        embeddings,
        k=k,
        k_max=k_max,
        index=index,
        index_params=parse_params(param),
        out_dir=out,
        cache=not no_cache,
        config_extra={"queries": str(queries) if queries else f"inquire:{split}"},
    )
    Console().print(metrics_table(result, title=f"INQUIRE-Fullrank, {model}, k={k}"))
    if out is not None:
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    from inquire.cli.evalcmd import eval_app

    eval_app.command("fullrank")(fullrank_cmd)
