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

    from inquire.eval.evaluate import evaluate_run_file
    from inquire.report.table import metrics_table

    result = evaluate_run_file(run, k, split, queries, annotations, out)
    Console().print(metrics_table(result))
    if out is not None:
        typer.echo(
            f"wrote {out / 'per_query.csv'}, {out / 'summary.json'} and {out / 'run.parquet'}"
        )


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)
