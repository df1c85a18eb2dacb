"""``inquire collection export --format ...`` and ``inquire collection import-marks``: files
that INQUIRE-Search's R scripts and GBIF read, and marks loaded back (docs/interop.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from inquire.cli._common import friendly_errors
from inquire.errors import InputError


def export_format_cmd(
    name: str,
    search_id: str,
    out: Path,
    fmt: str,
    who: str | None,
    only_relevant: bool,
    overwrite: bool,
    depth: int | None,
    unverified: bool,
    media_url: str | None,
    inat_ids: bool,
) -> None:
    """``inquire collection export NAME --search-id ID --format FMT --out OUT``."""
    from inquire.collection.interop.exports import ExportOptions, export_format, export_search

    f = export_format(fmt)
    if only_relevant:
        raise InputError(
            f"--relevant does not go with --format {fmt}: the format says itself which results "
            "were relevant (see docs/interop.md)"
        )
    if out.suffix.lower() != f.suffix:
        raise InputError(
            f"--out {str(out)!r} does not end in {f.suffix}; name the {fmt} file "
            f"e.g. {out.with_suffix(f.suffix).name!r}"
        )
    if fmt != "dwca" and (unverified or media_url):
        raise InputError("--unverified and --media-url go with --format dwca")
    opts = ExportOptions(who or None, depth, inat_ids, unverified, media_url)
    res = export_search(name, search_id, out, fmt, opts, overwrite)
    what = "occurrences" if fmt == "dwca" else "rows"
    typer.echo(
        f"wrote {res.rows} {what} to {out} ({res.inspected} results down to the deepest "
        f"{'requested rank' if depth else 'mark'}, {res.positives} verified relevant)"
    )
    if not res.inspected and not depth:
        typer.echo(
            f"nothing inspected: {'no marks by ' + repr(who) if who else 'nobody has marked'} "
            f"on search {search_id}; mark results on the verification page first, check the "
            "--who name, or pass --depth N to export the first N ranked results",
            err=True,
        )
    if res.without_taxon:
        typer.echo(
            f"left out {res.without_taxon} verified photos without a taxon (an occurrence "
            "needs a scientific name)",
            err=True,
        )


@friendly_errors
def import_marks_cmd(
    name: str = typer.Argument(..., help="Collection whose photos carry iNaturalist photo ids."),
    file: Path = typer.Argument(..., help="CSV exported by INQUIRE-Search."),
    who: str = typer.Option(..., "--who", help="Whose marks they become (e.g. your initials)."),
    query: str | None = typer.Option(
        None, "--query", help="Make a new saved search for this text, ranked as in the file."
    ),
    search_id: str | None = typer.Option(
        None, "--search-id", help="Mark the photos this saved search has ranked."
    ),
) -> None:
    """Load the marks of an INQUIRE-Search export (marked 1 -> relevant, 0 -> not relevant)."""
    from inquire.collection.interop.marks_import import import_marks

    res = import_marks(name, file, who, query=query, search_id=search_id)
    left = [
        (res.not_inat, "without an iNaturalist photo id"),
        (res.not_in_collection, "not in the collection"),
        (res.not_ranked, "not ranked by the search"),
        (res.duplicates, "repeated"),
    ]
    typer.echo(
        f"{'made' if res.created else 'marked'} search {res.search_id}: {res.marked} of "
        f"{res.rows} rows marked by {who} ({res.relevant} relevant, {res.not_relevant} not "
        "relevant)"
    )
    skipped = ", ".join(f"{n} {why}" for n, why in left if n)
    if skipped:
        typer.echo(f"left out: {skipped}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``import-marks`` to the ``collection`` group (registered before this module; found
    by name, so this module and ``cli.collection``, which calls :func:`export_format_cmd`,
    do not import each other)."""
    for group in app.registered_groups:
        if group.name == "collection" and group.typer_instance is not None:
            group.typer_instance.command("import-marks")(import_marks_cmd)
            return
    raise RuntimeError("the collection command group must be registered before collection_interop")
