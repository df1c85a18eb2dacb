"""``inquire eval fullrank`` (registered into the ``eval`` group)."""

from __future__ import annotations

from pathlib import Path

import typer

from inquire.cli._common import check_device_precision, friendly_errors


@friendly_errors
def fullrank_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Text model id, e.g. precomputed:FILE."),
    split: str = typer.Option("test", help="Benchmark split: val or test."),
    k: int = typer.Option(50, "--k", "-k", help="Cut-off for the metrics."),
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
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write per_query.csv, summary.json, run.parquet."
    ),
    use_cache: bool = typer.Option(
        True, "--cache/--no-cache", help="Reuse cached search results (--no-cache: search again)."
    ),
    rerank: str | None = typer.Option(
        None,
        "--rerank",
        help="Two-stage: rerank the top --from-k with this reranker (see `inquire rerank list`).",
    ),
    from_k: int = typer.Option(100, "--from-k", help="Two-stage: first-stage images reranked."),
    protocol: str = typer.Option(
        "inquire-2024",
        "--protocol",
        help="Two-stage: reranking protocol (inquire-2024, inquire-sum).",
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="Two-stage: OpenAI-compatible server of an api: reranker."
    ),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", "--api-key-env", help="Two-stage: environment variable with the key."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Two-stage: root folder the embeddings' image paths are under."
    ),
    device: str = typer.Option(
        "cpu", help="Device of the text model and of a local reranker: cpu, cuda, cuda:N, mps."
    ),
    precision: str = typer.Option(
        "fp32", help="Precision of the text model and of a local reranker: fp32, fp16, bf16."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Texts per text-model forward pass."),
    allow_failures: bool = typer.Option(
        False, "--allow-failures", help="Two-stage: rank candidates the reranker failed on last."
    ),
    screen: str = typer.Option(
        "auto",
        "--screen",
        help="Exact search: auto (bfloat16 screening where this CPU makes it pay), bf16, off. "
        "Same results either way.",
    ),
) -> None:
    """INQUIRE-Fullrank: embed the queries, search every image, print the metrics."""
    from rich.console import Console

    from inquire.errors import InputError
    from inquire.eval.two_stage import run_fullrank
    from inquire.index.ann import parse_params
    from inquire.report.table import metrics_table

    check_device_precision(device, precision)
    if embeddings is None:
        raise InputError(
            "pass --embeddings DIR: a folder of image embeddings in the clip-retrieval layout "
            "(INQUIRE's published iNat24 embeddings or `inquire embed` output) for this model"
        )
    console = Console()
    result = run_fullrank(
        model,
        embeddings,
        split=split,
        queries=queries,
        annotations=annotations,
        k=k,
        k_max=k_max,
        index=index,
        index_params=parse_params(param),
        cache=use_cache,
        device=device,
        precision=precision,
        batch_size=batch_size,
        screen=screen,
        rerank=rerank,
        from_k=from_k,
        protocol=protocol,
        base_url=base_url,
        api_key_env=api_key_env,
        images=images,
        allow_failures=allow_failures,
        out=out,
        on_first_stage=lambda first: console.print(
            metrics_table(first, title=f"INQUIRE-Fullrank, {model}, k={k}")
        ),
    )
    if result.two_stage is not None:
        console.print(
            metrics_table(
                result.two_stage.result,
                title=f"Two-stage: {model} top-{from_k} -> {rerank}, k={k}",
            )
        )
    if out is not None:
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    from inquire.cli.evalcmd import eval_app

    eval_app.command("fullrank")(fullrank_cmd)
