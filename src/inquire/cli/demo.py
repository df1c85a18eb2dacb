"""``inquire demo``: the whole pipeline offline on a synthetic benchmark."""

from __future__ import annotations

from pathlib import Path

import typer

from inquire.cli._common import friendly_errors


@friendly_errors
def demo_cmd(
    out: Path = typer.Option(Path("demo-output"), help="Folder for the demo's data and results."),
    seed: int = typer.Option(0, help="Random seed of the synthetic benchmark."),
) -> None:
    """Build a small SYNTHETIC benchmark and evaluate it end to end with the real code paths."""
    from inquire.demo import run_demo

    run_demo(out, seed=seed)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
