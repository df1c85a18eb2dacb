"""``inquire eval fullrank`` (registered into the ``eval`` group)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """No command yet."""
