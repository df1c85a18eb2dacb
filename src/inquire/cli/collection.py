"""``inquire collection ...``: create, update, list, show, export and serve your own photos.

``inquire search`` / ``inquire trend`` live in :mod:`inquire.cli.collection_search`,
``inquire collection index`` in :mod:`inquire.cli.collection_index`; all register here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from inquire.cli._common import friendly_errors
from inquire.cli.collection_index import index_cmd, scale_line
from inquire.cli.collection_search import search_cmd, trend_cmd
from inquire.errors import InputError

collection_app = typer.Typer(
    help="Collections of your own photos: create, update, export verified marks.",
    no_args_is_help=True,
)


def _console() -> Any:
    from rich.console import Console

    return Console()


_INDEX_HELP = (
    '"auto" (an IVF index from 2M images), "none", or a faiss factory string, e.g. "IVF4096,Flat".'
)


def _stats_line(stats: Any) -> str:
    d = stats.as_dict()
    return ", ".join(f"{k} {v}" for k, v in d.items() if k != "shards_written")


def _kept(kwargs: dict[str, Any]) -> str:
    """What an interrupted or failed create/update left, and how to go on."""
    from inquire.collection.store import open_collection
    from inquire.errors import UnknownNameError

    name = str(kwargs["name"])
    try:
        coll = open_collection(name)
    except UnknownNameError:
        return f"nothing was kept; run the same `inquire collection create {name} ...` again"
    with coll:
        n = coll.counts()
    return (
        f"the {sum(n.values()):,} images committed so far to collection {name!r} are kept "
        f"({n.get('ok', 0):,} searchable); run `inquire collection update {name}` to resume "
        "where it stopped (nothing committed is embedded again)"
    )


@collection_app.command("create")
@friendly_errors(on_stop=_kept, on_interrupt=_kept)
def create_cmd(
    name: str = typer.Argument(..., help="Name of the new collection."),
    images: Path = typer.Option(
        ..., "--images", help="Folder with the photos (searched recursively)."
    ),
    model: str = typer.Option(
        ..., "--model", "-m", help="Encoder id, e.g. toy:colour or an open_clip id."
    ),
    metadata: Path | None = typer.Option(None, "--metadata", help="iNat24-style train.json."),
    batch_size: int = typer.Option(32, help="Images per encoder call."),
    workers: int = typer.Option(2, help="Processes decoding images (0: this process)."),
    index: str = typer.Option(
        "auto",
        "--index",
        help=_INDEX_HELP,
    ),
) -> None:
    """Scan a folder of photos, embed them, record metadata (train.json, EXIF, file time)."""
    from inquire.collection import create_collection

    coll, stats = create_collection(
        name,
        images,
        model,
        metadata,
        batch_size=batch_size,
        progress=True,
        workers=workers,
        index=index,
    )
    _console().print(
        f"[green]created[/] collection {name!r} at {coll.folder}: {_stats_line(stats)}"
    )


@collection_app.command("update")
@friendly_errors(on_stop=_kept, on_interrupt=_kept)
def update_cmd(
    name: str = typer.Argument(..., help="Collection to update."),
    images: Path | None = typer.Option(None, "--images", help="New location of the photos."),
    metadata: Path | None = typer.Option(None, "--metadata", help="New train.json."),
    batch_size: int = typer.Option(32, help="Images per encoder call."),
    workers: int = typer.Option(2, help="Processes decoding images (0: this process)."),
    index: str | None = typer.Option(
        None,
        "--index",
        help="Change the index setting: " + _INDEX_HELP,
    ),
) -> None:
    """Pick up new, changed and deleted files; unchanged images are never re-embedded."""
    from inquire.collection import update_collection

    _, stats = update_collection(
        name,
        images=images,
        metadata=metadata,
        batch_size=batch_size,
        progress=True,
        workers=workers,
        index=index,
    )
    _console().print(f"[green]updated[/] {name!r}: {_stats_line(stats)}")


@collection_app.command("list")
@friendly_errors
def list_cmd() -> None:
    """List the collections in the cache."""
    from inquire._render import Col, print_records
    from inquire.collection.actions import collections_overview

    rows = [
        (
            r["name"],
            r["model_id"],
            str(r["ok"]),
            str(r["deleted"]),
            str(r["unreadable"]),
            r["images_root"],
        )
        for r in collections_overview().to_dict("records")
    ]
    if not rows:
        typer.echo(
            "no collections yet; create one with `inquire collection create NAME --images DIR`"
        )
        return
    print_records(
        _console(),
        [
            Col("name", keep=True, style="bold"),
            Col("model", keep=True),
            Col("images", justify="right"),
            Col("deleted", justify="right"),
            Col("unreadable", justify="right"),
            Col("photos folder", keep=True),
        ],
        rows,
    )


_DATE_SOURCES = {"exif": "EXIF", "inat": "train.json", "mtime": "file time only"}


def collection_summary(name: str) -> list[str]:
    """``inquire collection info`` as lines of text: what a person needs to know."""
    from inquire.collection.info import collection_info

    info = collection_info(name)
    meta, n, ann, searches = info.meta, info.counts, info.index, info.searches
    setting = meta.get("index", "auto")
    index = (
        f"faiss {ann['factory']} ({ann['count']:,} rows, built {ann['built_at']}); "
        f"setting {setting!r}"
        if ann
        else f"none, searches are exact (setting {setting!r})"
    )
    if info.scale:
        index = scale_line(info.scale)
    dates = ", ".join(
        f"{k:,} {_DATE_SOURCES.get(src, 'no date') if src else 'no date'}"
        for src, k in info.date_sources.items()
    )
    lines = [
        f"collection {name}",
        f"  folder:   {info.folder}",
        f"  photos:   {meta.get('images_root', '?')}",
        f"  model:    {meta.get('model_id', '?')} (revision {meta.get('revision', '?')}, "
        f"{meta.get('dim', '?')} dimensions)",
        f"  metadata: {meta.get('metadata') or 'EXIF (no train.json)'}",
        f"  images:   {n.get('ok', 0):,} searchable, {n.get('deleted', 0):,} deleted, "
        f"{n.get('unreadable', 0):,} unreadable",
        f"  dates:    {dates or 'none'}"
        + (" (file-time dates are left out of trends)" if info.date_sources.get("mtime") else ""),
        f"  index:    {index}",
        f"  updates:  generation {meta.get('generation', '0')}",
    ]
    if not len(searches):
        lines.append("no saved searches (save one with `inquire search NAME TEXT --save`)")
        return lines
    lines.append(f"saved searches ({len(searches)}): export with --search-id ID")
    for r in searches.to_dict("records"):
        lines.append(f"  {r['search_id']}  {_describe_request(str(r['request']))}")
        who = f" by {r['created_by']}" if r["created_by"] else ""
        lines.append(
            f"      saved {str(r['created'])[:16].replace('T', ' ')}{who}; "
            f"{r['n_results']} results ranked, {r['n_marks']} marks"
        )
    return lines


def _describe_request(request_json: str) -> str:
    """A saved search request (JSON) in words: the text, examples and filters."""
    import json

    d = json.loads(request_json)
    f = d.get("filters", {})
    parts = [repr(d["text"]) if d.get("text") else "(by example)"]
    if d.get("like"):
        parts.append("like " + ", ".join(d["like"]))
    if f.get("taxa"):
        parts.append("taxon " + "/".join(f["taxa"]))
    if f.get("date_from") or f.get("date_to"):
        parts.append(f"dates {f.get('date_from') or '...'} to {f.get('date_to') or '...'}")
    if f.get("bbox"):
        parts.append("bbox " + ",".join(f"{x:g}" for x in f["bbox"]))
    if f.get("under"):
        parts.append("under " + ", ".join(f["under"]))
    return "; ".join(parts)


@collection_app.command("info")
@friendly_errors
def info_cmd(name: str = typer.Argument(..., help="Collection.")) -> None:
    """Show a collection's folders, model, counts, dates, index and saved searches."""
    from rich.text import Text

    console = _console()
    for line in collection_summary(name):
        console.print(Text(line), soft_wrap=True)


@collection_app.command("compact")
@friendly_errors
def compact_cmd(name: str = typer.Argument(..., help="Collection.")) -> None:
    """Rewrite the embedding shards without rows of deleted or changed files."""
    from inquire.collection import compact

    _console().print(f"dropped {compact(name)} stale embedding rows")


@collection_app.command("delete")
@friendly_errors
def delete_cmd(
    name: str = typer.Argument(..., help="Collection."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
) -> None:
    """Delete a collection's embeddings, database and marks (not the photos)."""
    from inquire.collection import delete_collection

    if not yes:
        typer.confirm(f"delete collection {name!r} and all its marks?", abort=True)
    _console().print(f"deleted {delete_collection(name)}")


@collection_app.command("export")
@friendly_errors
def export_cmd(
    name: str = typer.Argument(..., help="Collection."),
    search_id: str = typer.Option(..., "--search-id", help="Saved search (see `collection info`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .csv or .parquet file."),
    who: str | None = typer.Option(None, "--who", help="Only this person's marks."),
    only_relevant: bool = typer.Option(False, "--relevant", help="Only marks 'relevant'."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    fmt: str = typer.Option(
        "",
        "--format",
        "-f",
        help="inquire-search (INQUIRE-Search's CSV) or dwca (Darwin Core Archive for GBIF); "
        "default: these columns, as .csv or .parquet by the --out suffix.",
    ),
    depth: int | None = typer.Option(
        None, "--depth", help="--format: ranks to export (default: down to the deepest mark)."
    ),
    unverified: bool = typer.Option(
        False, "--unverified", help="dwca: also the results nobody marked (MachineObservation)."
    ),
    media_url: str | None = typer.Option(
        None, "--media-url", help="dwca: URL the photo folder is published at (associatedMedia)."
    ),
    inat_ids: bool = typer.Option(
        True, "--inat-ids/--no-inat-ids", help="train.json ids are iNaturalist photo ids (iNat24)."
    ),
) -> None:
    """Export verified marks: image id, path, taxon, date, place, score, rank, mark, who, when.

    With --format, a file other tools read (docs/interop.md)."""
    from inquire.collection.actions import export_marks

    if not fmt and (depth is not None or unverified or media_url or not inat_ids):
        raise InputError(
            "--depth, --unverified, --media-url and --no-inat-ids go with --format "
            "inquire-search or --format dwca"
        )
    if fmt:
        from inquire.cli.collection_interop import export_format_cmd

        export_format_cmd(
            name,
            search_id,
            out,
            fmt,
            who,
            only_relevant,
            overwrite,
            depth,
            unverified,
            media_url,
            inat_ids,
        )
        return

    n = export_marks(name, search_id, out, who, only_relevant, overwrite)
    _console().print(f"wrote {n} marks to {out}")


@collection_app.command("serve")
@friendly_errors
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port (the same default as `inquire serve`)."),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        help="Another name clients use to reach the server (repeatable); requests naming "
        "any other host are refused.",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray",
        help="Serve partitioned indexes from Ray actors (one per partition) on the Ray cluster "
        "at this address (HOST:PORT); stopped with the server.",
    ),
) -> None:
    """Serve only the verification page (http://HOST:PORT/verify)."""
    from inquire.cli.web import check_port_free
    from inquire.collection.scale import index_served
    from inquire.web.server import serve
    from inquire.web.verify import make_app

    check_port_free(host, port)
    with index_served(ray_address):
        serve(make_app(host=host, allowed_hosts=allow_host), host=host, port=port)


collection_app.command("index")(index_cmd)


def register(app: typer.Typer) -> None:
    app.add_typer(collection_app, name="collection")
    app.command("search")(search_cmd)
    app.command("trend")(trend_cmd)
