"""``inquire evaluate``: score any run against INQUIRE's (or your) annotations."""

from __future__ import annotations

from pathlib import Path

import typer

from inquire.cli._common import friendly_errors


@friendly_errors
def evaluate_cmd(
    run: Path = typer.Option(..., "--run", help="A TREC run file or an inquire run parquet."),
    split: str | None = typer.Option(
        None, help="Benchmark split: val or test (default test; with --queries, a check)."
    ),
    k: int = typer.Option(50, "--k", "-k", help="Cut-off for AP@k, nDCG@k, P@k, R@k and MRR."),
    annotations: Path | None = typer.Option(
        None, help="Local annotations CSV instead of the downloaded one."
    ),
    queries: Path | None = typer.Option(None, help="Local query CSV instead of the split's."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write per_query.csv, summary.json and run.parquet (for `report` curves) here.",
    ),
) -> None:
    """Evaluate RUN against the relevance annotations and print the metrics table."""
    from rich.console import Console

    from inquire._io import check_output_folder
    from inquire.data.qrels import load_qrels, read_qrels
    from inquire.data.queries import load_queries, read_queries
    from inquire.eval import evaluate
    from inquire.eval.evaluate import check_queries_match_split
    from inquire.report.table import metrics_table
    from inquire.run import Run

    if out is not None:
        check_output_folder(out)
    the_run = Run.read(run)
    split_name = split or "test"
    qs = read_queries(queries) if queries else load_queries(split_name)
    if queries and split:
        check_queries_match_split(qs, split, str(queries))
    qrels = read_qrels(annotations) if annotations else load_qrels()
    result = evaluate(
        the_run,
        qrels,
        qs,
        k=k,
        config={
            "task": "evaluate",
            "split": split_name if queries is None or split else None,
            "run_file": str(run),
            "queries": str(queries) if queries else f"inquire:{split_name}",
            "annotations": str(annotations) if annotations else "inquire:annotations",
        },
    )
    Console().print(metrics_table(result))
    if out is not None:
        result.save(out, run=the_run)
        typer.echo(
            f"wrote {out / 'per_query.csv'}, {out / 'summary.json'} and {out / 'run.parquet'}"
        )


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)
