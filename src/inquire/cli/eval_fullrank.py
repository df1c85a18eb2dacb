"""``inquire eval fullrank`` (registered into the ``eval`` group)."""

from __future__ import annotations

from pathlib import Path

import typer

from inquire.cli._common import friendly_errors


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

    from inquire.data.qrels import load_qrels, read_qrels
    from inquire.data.queries import load_queries, read_queries
    from inquire.errors import InputError
    from inquire.eval.fullrank import data_files, evaluate_fullrank
    from inquire.index.ann import parse_params
    from inquire.report.table import metrics_table

    if embeddings is None:
        raise InputError(
            "pass --embeddings DIR: a folder of image embeddings in the clip-retrieval layout "
            "(INQUIRE's published iNat24 embeddings or `inquire embed` output) for this model"
        )
    if rerank is not None:
        from inquire.eval.rerank import check_reranker_id

        check_reranker_id(rerank, baselines=False)
    if rerank is not None and images is None:
        raise InputError(
            "--rerank needs --images ROOT: the folder the embeddings' image paths are relative "
            "to (for iNat24, the folder that holds train/)"
        )
    from inquire.index.screen import check_screen

    check_screen(screen)
    query_df = read_queries(queries) if queries else load_queries(split)
    qrels = read_qrels(annotations) if annotations else load_qrels()
    # the files read, so reports and the web page find the labels (precision-recall curves)
    files = {"split": None if queries else split, **data_files(split, queries, annotations)}
    first_k = max(k_max or k, from_k) if rerank is not None else k_max
    result, run = evaluate_fullrank(
        model,
        query_df,
        qrels,
        embeddings,
        k=k,
        k_max=first_k,
        index=index,
        index_params=parse_params(param),
        out_dir=out,
        cache=use_cache,
        device=device,
        precision=precision,
        batch_size=batch_size,
        screen=screen,
        config_extra=files,
    )
    console = Console()
    console.print(metrics_table(result, title=f"INQUIRE-Fullrank, {model}, k={k}"))
    if rerank is not None and images is not None:
        from inquire.eval import run_two_stage
        from inquire.rerank import RerankOptions

        two = run_two_stage(
            run,
            rerank,
            embeddings,
            images,
            qrels,
            query_df,
            k=k,
            from_k=from_k,
            options=RerankOptions(
                device=device,
                precision=precision,
                protocol=protocol,
                base_url=base_url,
                api_key_env=api_key_env,
            ),
            allow_failures=allow_failures,
            out_dir=None if out is None else out / "two_stage",
            config_extra={"first_stage_model": model, **files},
        )
        console.print(
            metrics_table(two.result, title=f"Two-stage: {model} top-{from_k} -> {rerank}, k={k}")
        )
    if out is not None:
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    from inquire.cli.evalcmd import eval_app

    eval_app.command("fullrank")(fullrank_cmd)
