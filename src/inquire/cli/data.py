"""``inquire download``: fetch benchmark artifacts into the cache."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """No commands yet."""
