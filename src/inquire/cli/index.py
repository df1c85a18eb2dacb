"""Commands of this area (registered by ``register``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """No commands in this area yet."""
