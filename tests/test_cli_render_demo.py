"""Terminal output that stays readable: numbers never folded, the demo's commands runnable from
any folder, the reader's COLUMNS obeyed when piped."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from inquire._render import print_table


def _pair_table() -> Table:
    header = [
        "metric",
        "A",
        "B",
        "queries",
        "mean A",
        "mean B",
        "A - B",
        "wins/losses/ties",
        "p (rand.)",
        "p (rand., Holm)",
        "t",
        "p (t)",
        "p (t, Holm)",
    ]
    t = Table(title="Paired comparison")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i < 3 else "right", overflow="fold")
    t.add_row(
        "AP@50",
        "synthetic-fullrank",
        "fullrank-noisy-text",
        "40",
        "11.0",
        "10.4",
        "+0.6",
        "21/15/4",
        "0.0312",
        "0.0624",
        "2.114",
        "0.041",
        "0.082",
    )
    t.add_row(
        "nDCG@50",
        "synthetic-fullrank",
        "fullrank-noisy-text",
        "40",
        "19.7",
        "18.9",
        "+0.8",
        "22/14/4",
        "0.0101",
        "0.0624",
        "2.510",
        "0.016",
        "0.082",
    )
    return t


def _render(width: int, table: Table, head: int = 3) -> tuple[bool, str]:
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None)
    vertical = print_table(console, table, head=head)
    return vertical, buf.getvalue()


@pytest.mark.parametrize("width", [40, 80, 100])
def test_a_wide_table_at_80_columns_keeps_every_number_whole(width: int) -> None:
    vertical, text = _render(width, _pair_table())
    assert vertical
    for cell in ("11.0", "10.4", "+0.6", "21/15/4", "0.0624", "fullrank-noisy-text", "2.510"):
        assert cell in text, text
    assert not any(line.rstrip().endswith("11.") for line in text.splitlines())


def test_a_table_that_fits_is_printed_as_a_table() -> None:
    vertical, text = _render(250, _pair_table())
    assert not vertical
    assert "11.0" in text and "Paired comparison" in text


def test_demo_console_obeys_columns_when_piped(monkeypatch) -> None:
    from inquire.demo.main import demo_console

    monkeypatch.setenv("COLUMNS", "80")
    assert demo_console().width == 80
    monkeypatch.delenv("COLUMNS")
    assert demo_console().width == 150


def test_demo_serve_command_has_absolute_paths(tmp_path: Path, monkeypatch) -> None:
    from inquire.demo.web import serve_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench" / "images").mkdir(parents=True)
    (tmp_path / "bench" / "inquire_annotations.csv").write_text("x")
    (tmp_path / "coll" / "collections").mkdir(parents=True)
    cmd = serve_command([Path("res")], Path("bench"), collections=Path("coll/collections"))
    args = shlex.split(cmd)
    for flag in ("--collections", "--images", "--annotations"):
        assert Path(args[args.index(flag) + 1]).is_absolute(), cmd
    assert str(tmp_path / "res") in args
    assert str(tmp_path / "coll" / "collections") in args
