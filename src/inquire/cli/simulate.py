"""``inquire simulate feedback``: positives found per image inspected, with and without
relevance feedback, by a simulated verifier on a labelled benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from inquire.cli._common import friendly_errors

simulate_app = typer.Typer(
    help="Simulations on labelled benchmarks.", no_args_is_help=True, add_completion=False
)


def _simulation_kept(kwargs: dict[str, Any]) -> str:
    """What an interrupted ``simulate feedback`` kept, and how to go on."""
    synthetic = kwargs.get("synthetic")
    if synthetic is None:
        return "nothing was written (results are written at the end); run the same command again"
    folder = Path(synthetic)
    if (folder / "SYNTHETIC.txt").is_file():
        return (
            f"the synthetic benchmark in {str(folder)!r} is complete and kept; run the same "
            "command again to simulate on it (results are written at the end)"
        )
    return (
        f"the synthetic benchmark in {str(folder)!r} was not finished; run the same command "
        "again to finish it and simulate"
    )


@simulate_app.command("feedback")
@friendly_errors(on_interrupt=_simulation_kept)
def feedback_cmd(
    synthetic: Path | None = typer.Option(
        None,
        "--synthetic",
        help="Folder of a synthetic benchmark (generated there when missing).",
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="INQUIRE-Fullrank: the iNat24 embedding folder."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="INQUIRE-Fullrank: the embedding model that made --embeddings.",
    ),
    split: str = typer.Option("test", "--split", help="val or test."),
    budget: int = typer.Option(200, "--budget", help="Images inspected per query."),
    batch: int = typer.Option(10, "--batch", help="Images marked between re-rankings."),
    feedback_model: str = typer.Option(
        "", "--feedback-model", help="rocchio or logistic (default: rocchio)."
    ),
    text_noise: float = typer.Option(
        0.06, "--text-noise", help="Synthetic only: noise added to the text embeddings."
    ),
    seed: int = typer.Option(0, "--seed", help="Synthetic only: seed of a new benchmark."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for curves.parquet, summary.csv, config.json, curve.png.",
    ),
) -> None:
    """Simulate a verifier who marks results in batches from the labels; compare the static
    ranking with re-ranking from the marks (mean positives found, 95% bootstrap intervals)."""
    from rich.console import Console
    from rich.table import Table

    from inquire.eval.feedback import run_simulation

    sim, summary = run_simulation(
        synthetic,
        embeddings,
        model,
        split,
        budget,
        batch,
        feedback_model,
        text_noise,
        seed,
        out,
    )
    table = Table(title=str(sim.config.get("title", "")), title_justify="left")
    for col in ("group", "n", "inspected", "static [95% CI]", "feedback [95% CI]", "ratio"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for r in summary.itertuples():
        table.add_row(
            str(r.group),
            str(r.queries),
            str(r.inspected),
            f"{r.static:.1f} [{r.static_lo:.1f}, {r.static_hi:.1f}]",
            f"{r.feedback:.1f} [{r.feedback_lo:.1f}, {r.feedback_hi:.1f}]",
            f"{r.ratio:.2f}",
        )
    Console().print(table)
    if out is not None:
        typer.echo(f"wrote {out}/summary.csv, curves.parquet, config.json and curve.png")


def register(app: typer.Typer) -> None:
    app.add_typer(simulate_app, name="simulate")
