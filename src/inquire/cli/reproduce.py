"""``inquire reproduce``: the command behind every published leaderboard row, and a check."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from inquire.cli._common import friendly_errors


@friendly_errors
def reproduce_cmd(
    folders: list[Path] = typer.Argument(
        None, help="With --check: results folders (summary.json from `inquire eval ...`)."
    ),
    check: bool = typer.Option(
        False, "--check", help="Set the FOLDERS' results beside the published numbers."
    ),
    task: str | None = typer.Option(None, help="Only this leaderboard: fullrank or rerank."),
    method: str | None = typer.Option(
        None, help="With --check: the published row to compare with (default: from the config)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    report_only: bool = typer.Option(
        False,
        "--report-only",
        help="With --check: exit 0 even when a folder does not reproduce its row (a folder "
        "that cannot be read still exits 2).",
    ),
) -> None:
    """List every published INQUIRE row with the command that reproduces it, or --check results.

    Published values have one decimal: a result reproduces one when it was made as the row was
    (model, protocol, whole split, k, pool) and is within 0.05. --check reports every folder,
    then exits 2 if one could not be read (no summary.json, not a result summary), else 1
    unless every folder reproduces its row (--report-only: 0).
    """
    from inquire.report.recipes import PLACEHOLDERS, recipes, task_info
    from inquire.report.reproduce import (
        REPRODUCES,
        ROUNDING,
        UNREADABLE,
        all_reproduce,
        check_results,
        format_value,
    )

    folders = list(folders or [])
    if folders and not check:
        raise typer.BadParameter("give --check to compare results folders", param_hint="FOLDERS")
    if check and not folders:
        raise typer.BadParameter("--check needs results folders", param_hint="FOLDERS")
    if check:
        results = check_results(folders, method=method)
        if as_json:
            typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
        else:
            for r in results:
                if r.status == UNREADABLE:
                    typer.secho(f"{r.folder}: UNREADABLE: {r.notes[0]}", fg="red", err=True)
                    continue
                made = r.model + (f" ({r.protocol})" if r.protocol else "") if r.model else "?"
                head = f"{r.folder}: {r.task} / {r.method or '(no published row)'}, k={r.k}"
                typer.echo(f"{head}, {r.n_queries} queries, made with {made}")
                for col, pub in r.published.items():
                    ours, diff = r.ours.get(col), r.diff.get(col)
                    typer.echo(
                        f"  {col:<12} published {format_value(pub):>5}   ours "
                        f"{format_value(ours, 2):>6}   diff {format_value(diff, 2):>6}"
                    )
                typer.echo(f"  {_VERDICTS[r.status].format(rounding=ROUNDING)}")
                for note in r.notes:
                    typer.echo(f"  note: {note}")
            n_ok = sum(r.status == REPRODUCES for r in results)
            n_bad = sum(r.status == UNREADABLE for r in results)
            unread = f"; {n_bad} could not be read" if n_bad else ""
            typer.echo(f"{n_ok} of {len(results)} folders reproduce their published row{unread}")
        if any(r.status == UNREADABLE for r in results):
            raise typer.Exit(2)
        if not report_only and not all_reproduce(results):
            raise typer.Exit(1)
        return
    rows = recipes(task)
    if as_json:
        typer.echo(json.dumps([rec.as_dict() for rec in rows], indent=2))
        return
    typer.echo("Paths the commands use (set these environment variables first):")
    width = max(map(len, PLACEHOLDERS))
    for name, what in PLACEHOLDERS.items():
        typer.echo(f"  {name:<{width}} {what}")
    current = None
    for rec in rows:
        if rec.task != current:
            current = rec.task
            info = task_info(rec.task)
            typer.echo(
                f"\n{info['label']} (published AP@{info['k']} x100; "
                f"computed at k = {info['check_k']})"
            )
        values = ", ".join(
            f"{c} {format_value(v)}" for c, v in rec.published.items() if v is not None
        )
        typer.echo(f"\n  {rec.method}  [{rec.kind}]  {values}")
        for cmd in rec.commands:
            typer.echo(f"    {cmd}")
        if not rec.commands:
            typer.echo("    (no command)")
        if rec.without_gpu:
            typer.echo("    without a GPU, from INQUIRE's released scores:")
            for cmd in rec.without_gpu:
                typer.echo(f"    {cmd}")
        for folder in rec.check:
            typer.echo(f"    check: inquire reproduce --check {folder}")
        if rec.note:
            typer.echo(f"    note: {rec.note}")


_VERDICTS = {
    "reproduces": "REPRODUCES: made as the row was, every value within the published rounding "
    "(+-{rounding})",
    "differs": "DIFFERS: made as the row was, but NOT within the published rounding (+-{rounding})",
    "not comparable": "NOT COMPARABLE: not made as the published row was (see the notes)",
    "other protocol": "OTHER PROTOCOL: the row's model under another rerank protocol; not compared",
    "no published row": "NO PUBLISHED ROW matches this folder",
    "unreadable": "UNREADABLE: not a results folder (see the note)",
}


def register(app: typer.Typer) -> None:
    """Add ``inquire reproduce``."""
    app.command("reproduce")(reproduce_cmd)
