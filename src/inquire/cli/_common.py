"""Helpers shared by the CLI modules."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn an :class:`~inquire.errors.InquireError` into a red one-line message and exit 2.

    (``main()`` does this too; the decorator makes it hold under typer's test runner.)
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from inquire.errors import InquireError

        try:
            return fn(*args, **kwargs)
        except InquireError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
