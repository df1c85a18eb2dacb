"""Tables for the terminal that never cut what a user must type or read.

rich shrinks a table that is wider than the terminal by wrapping cells and, for cells that
may not wrap, cutting them with an ellipsis ("…"). An id, path, URL or date cut that way is
useless. :func:`print_records` therefore renders the table once off-screen at the
console's width; if any cell of a ``keep`` column would be cut or broken, it prints the
same records vertically instead (one block per record, ``label: value`` lines, the whole
values written as single lines the terminal may wrap but that copy as one string).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ELLIPSIS = "…"
MIN_WRAP = 16  # narrowest readable width of a wrapping column (cells)


@dataclass(frozen=True)
class Col:
    """A column of :func:`print_records`.

    ``keep``: the values are shown whole (ids, paths, URLs, dates): never wrapped or cut.
    Other columns wrap at spaces (and fold words longer than the column, never cut them).
    """

    label: str
    keep: bool = False
    justify: Literal["left", "right", "center"] = "left"
    style: str | None = None


def records_table(
    columns: Sequence[Col], rows: Sequence[Sequence[str]], title: str | None = None
) -> Any:
    """The records as a rich ``Table`` (``keep`` columns unwrapped)."""
    from rich.table import Table

    table = Table(title=title or None)
    for c in columns:
        table.add_column(
            c.label,
            justify=c.justify,
            style=c.style,
            no_wrap=c.keep,
            overflow="ellipsis" if c.keep else "fold",
        )
    for row in rows:
        table.add_row(*row)
    return table


def fits(console: Any, columns: Sequence[Col], rows: Sequence[Sequence[str]], table: Any) -> bool:
    """Whether ``table`` renders at ``console``'s width with every ``keep`` cell whole and
    every other column at least :data:`MIN_WRAP` cells wide (or as wide as its content)."""
    from rich.cells import cell_len
    from rich.console import Console

    # Each column costs its content plus 3 cells (padding, rule), the table 1 more; a
    # wrapping column squeezed below MIN_WRAP cells is unreadable even though nothing is cut.
    need = 1
    for i, c in enumerate(columns):
        longest = max([cell_len(c.label), *(cell_len(row[i]) for row in rows)])
        need += 3 + (longest if c.keep else min(longest, MIN_WRAP))
    if need > console.width:
        return False
    buf = io.StringIO()
    probe = Console(file=buf, width=console.width, color_system=None, legacy_windows=False)
    probe.print(table)
    text = buf.getvalue()
    given = any(ELLIPSIS in cell for row in rows for cell in row)
    if ELLIPSIS in text and not given:
        return False
    lines = text.splitlines()
    for row in rows:
        for c, cell in zip(columns, row, strict=True):
            if c.keep and cell and not any(cell in line for line in lines):
                return False
    return True


def print_records(
    console: Any,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str]],
    title: str | None = None,
    *,
    head: int = 1,
    head_format: Callable[[Sequence[str]], str] | None = None,
    vertical: bool | None = None,
) -> bool:
    """Print ``rows`` (strings, one per column) as a table, or vertically if it cannot fit.

    ``head``: how many leading columns form each record's first line in the vertical layout
    (joined by two spaces, or by ``head_format(values)``).
    ``vertical``: force a layout (None: the table when every ``keep`` cell fits whole at the
    console's width). Returns True when the vertical layout was used.
    """
    rows = [tuple(str(v) for v in row) for row in rows]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {row!r} has {len(row)} values for {len(columns)} columns")
    if vertical is None:
        table = records_table(columns, rows, title)
        vertical = not fits(console, columns, rows, table)
        if not vertical:
            console.print(table)
            return False
    elif not vertical:
        console.print(records_table(columns, rows, title))
        return False
    _print_vertical(console, columns, rows, title, head, head_format)
    return True


def _print_vertical(
    console: Any,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str]],
    title: str | None,
    head: int,
    head_format: Callable[[Sequence[str]], str] | None = None,
) -> None:
    from rich.padding import Padding
    from rich.text import Text

    if title:
        console.print(Text(title, style="bold"), soft_wrap=True)
    width = max((len(c.label) for c in columns[head:]), default=0)
    records = [
        [(c, v) for c, v in zip(columns[head:], row[head:], strict=True) if v] for row in rows
    ]
    # All records' details on one line each when every one fits, else one line per field.
    joined = ["  " + " · ".join(f"{c.label} {v}" for c, v in fields) for fields in records]
    one_line = all(len(j) <= console.width and "\n" not in j for j in joined)
    for row, fields, line in zip(rows, records, joined, strict=True):
        first = head_format(row[:head]) if head_format else "  ".join(v for v in row[:head] if v)
        console.print(Text(first, style="bold"), soft_wrap=True)
        if one_line:
            if fields:
                console.print(Text(line), soft_wrap=True)
            continue
        for c, v in fields:
            text = Text(f"{c.label + ':':<{width + 1}} {v}")
            if c.keep:  # one line, even past the edge: it copies as one string
                console.print(Text("  ") + text, soft_wrap=True)
            else:
                console.print(Padding(text, (0, 0, 0, 2), expand=False))


def print_table(
    console: Any,
    table: Any,
    head: int = 1,
    head_format: Callable[[Sequence[str]], str] | None = None,
) -> bool:
    """Print a rich ``Table`` whole, or vertically (:func:`print_records`) when a cell would
    have to be cut or broken to fit: a number folded over two lines (``11.`` / ``0``) reads
    as two numbers. Columns with a ``max_width`` (free text) may wrap; every other cell is
    kept whole. ``head`` / ``head_format``: as :func:`print_records`. Returns True when the
    vertical layout was used."""
    from rich.text import Text

    def plain(cell: Any) -> str:
        return cell.plain if isinstance(cell, Text) else str(cell)

    columns = [
        Col(
            plain(c.header),
            keep=c.max_width is None,
            justify=c.justify if c.justify in ("left", "right", "center") else "left",
        )
        for c in table.columns
    ]
    cells = [[plain(x) for x in c._cells] for c in table.columns]
    rows = [tuple(col[i] for col in cells) for i in range(table.row_count)]
    title = plain(table.title) if table.title is not None else None
    return print_records(console, columns, rows, title, head=head, head_format=head_format)
