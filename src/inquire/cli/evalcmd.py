"""``inquire eval``: the benchmark tasks (fullrank, rerank)."""

from __future__ import annotations

import typer

eval_app = typer.Typer(help="Run an INQUIRE task end to end.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
