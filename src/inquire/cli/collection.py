"""``inquire collection ...``, ``inquire search`` and ``inquire trend``: your own photos."""

from __future__ import annotations

import contextlib
from contextlib import closing
from pathlib import Path
from typing import Any

import typer

from inquire.cli._common import friendly_errors

collection_app = typer.Typer(
    help="Collections of your own photos: create, update, export verified marks.",
    no_args_is_help=True,
)


def _console() -> Any:
    from rich.console import Console

    return Console()


def results_table(df: Any, images_root: Path | None = None, title: str = "") -> Any:
    """A rich Table of search results (rank, score, path, taxon, date, lat, lon)."""
    import math

    from rich.table import Table

    from inquire.collection.store import records

    table = Table(title=title or None)
    for col, just in (
        ("rank", "right"),
        ("score", "right"),
        ("image", "right"),
        ("path", "left"),
        ("taxon", "left"),
        ("date", "left"),
        ("lat", "right"),
        ("lon", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in records(df):
        path = str(r["path"])
        if images_root is not None:
            with contextlib.suppress(ValueError):  # outside the root: keep it absolute
                path = str(Path(path).relative_to(images_root))
        score = f"{r['score']:.4f}" + (f" → {r['rerank_score']:.3f}" if "rerank_score" in r else "")
        table.add_row(
            str(r["rank"]),
            score,
            str(r["image_id"]),
            path,
            str(r["taxon"] or ""),
            str(r["date"] or "")[:10],
            "" if r["lat"] is None or math.isnan(r["lat"]) else f"{r['lat']:.4f}",
            "" if r["lon"] is None or math.isnan(r["lon"]) else f"{r['lon']:.4f}",
        )
    return table


_INDEX_HELP = (
    '"auto" (an IVF index from 2M images), "none", or a faiss factory string, e.g. "IVF4096,Flat".'
)


def _stats_line(stats: Any) -> str:
    d = stats.as_dict()
    return ", ".join(f"{k} {v}" for k, v in d.items() if k != "shards_written")


@collection_app.command("create")
@friendly_errors
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
@friendly_errors
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
    from rich.table import Table

    from inquire.collection import list_collections, open_collection

    table = Table("name", "model", "images", "deleted", "unreadable", "folder")
    for name in list_collections():
        c = open_collection(name)
        n = c.counts()
        table.add_row(
            name,
            c.model_id,
            str(n.get("ok", 0)),
            str(n.get("deleted", 0)),
            str(n.get("unreadable", 0)),
            str(c.images_root),
        )
    _console().print(table)


@collection_app.command("info")
@friendly_errors
def info_cmd(name: str = typer.Argument(..., help="Collection.")) -> None:
    """Show a collection's model, counts and saved searches."""
    from inquire.collection import open_collection
    from inquire.collection.ann import index_info
    from inquire.collection.verify import Verification

    c = open_collection(name)
    console = _console()
    ann = index_info(c)
    faiss_index = f"{ann['factory']} ({ann['count']} rows, {ann['built_at']})" if ann else "none"
    console.print(
        {**c.meta(), "counts": c.counts(), "folder": str(c.folder), "faiss_index": faiss_index}
    )
    with closing(Verification(c)) as v:
        searches = v.searches()
    c.close()
    if len(searches):
        console.print(searches.to_string(index=False))


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
) -> None:
    """Export verified marks: image id, path, taxon, date, place, score, rank, mark, who, when."""
    from inquire.collection import open_collection
    from inquire.collection.verify import Verification, write_table

    with closing(open_collection(name)) as coll, closing(Verification(coll)) as v:
        df = v.export(search_id, who)
    if only_relevant:
        df = df[df["mark"] == "relevant"]
    write_table(df, out)
    _console().print(f"wrote {len(df)} marks to {out}")


@collection_app.command("serve")
@friendly_errors
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port (the same default as `inquire serve`)."),
) -> None:
    """Serve only the verification page (http://HOST:PORT/verify)."""
    import uvicorn

    from inquire.web.verify import make_app

    uvicorn.run(make_app(), host=host, port=port)


@friendly_errors
def search_cmd(
    name: str = typer.Argument(..., help="Collection to search."),
    text: str = typer.Argument("", help="What to look for, in words."),
    k: int = typer.Option(100, "-k", "--k", help="Number of results."),
    taxon: list[str] = typer.Option([], "--taxon", help="Keep a taxon (any rank); repeatable."),
    date_from: str | None = typer.Option(None, "--from", help="First day, YYYY-MM-DD."),
    date_to: str | None = typer.Option(None, "--to", help="Last day, YYYY-MM-DD."),
    bbox: str | None = typer.Option(None, "--bbox", help="W,S,E,N in degrees."),
    under: list[str] = typer.Option([], "--under", help="Only this sub-folder; repeatable."),
    like: list[str] = typer.Option([], "--like", help="Example image: id or path; repeatable."),
    rerank: str | None = typer.Option(None, "--rerank", help="Reranker id."),
    from_k: int = typer.Option(200, "--from-k", help="Results the reranker re-orders."),
    device: str = typer.Option(
        "cpu", "--device", help="Device of a local reranker: cpu, cuda, cuda:N, mps."
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="Precision of a local reranker: fp32, bf16, fp16."
    ),
    batch_size: int = typer.Option(
        8, "--batch-size", help="Images per forward pass of a local reranker."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print results as CSV."),
    copy_to: Path | None = typer.Option(None, "--copy-to", help="Copy result images here."),
    save: bool = typer.Option(False, "--save", help="Save the search for verification."),
    exact: bool = typer.Option(False, "--exact", help="Exact search even if a faiss index exists."),
    nprobe: int | None = typer.Option(
        None, "--nprobe", help="IVF lists probed per query (faiss index only; default 64)."
    ),
    screen: str = typer.Option(
        "auto",
        "--screen",
        help="Exact search: auto (bfloat16 screening where this CPU makes it pay), bf16, off. "
        "Same results either way.",
    ),
) -> None:
    """Search a collection by text and/or example images, filters applied inside the search."""
    import json
    import shutil

    from inquire._io import atomic_open
    from inquire.collection import SearchRequest, open_collection, parse_filters, search
    from inquire.collection.store import records
    from inquire.index.screen import check_screen

    check_screen(screen)
    with closing(open_collection(name)) as coll:
        req = SearchRequest(
            text,
            tuple(like),
            parse_filters(taxon, date_from, date_to, bbox, under),
            k,
            rerank,
            from_k,
            exact=exact,
            nprobe=nprobe,
            screen=screen,
            rerank_device=device,
            rerank_precision=precision,
            rerank_batch_size=batch_size,
        )
        df = search(coll, req)
        if save:
            from inquire.collection.verify import Verification

            with closing(Verification(coll)) as v:
                sid = v.save_search(req)
            typer.echo(f"saved search {sid}", err=True)
        if as_json:
            typer.echo(json.dumps(json.loads(df.to_json(orient="records")), indent=1))
        elif as_csv:
            typer.echo(df.to_csv(index=False), nl=False)
        else:
            _console().print(
                results_table(df, coll.images_root, f"{name}: {text or '(by example)'}")
            )
        if copy_to is not None:
            copy_to.mkdir(parents=True, exist_ok=True)
            for r in records(df):
                shutil.copy2(
                    r["path"], copy_to / f"{r['rank']:04d}_{r['image_id']}{Path(r['path']).suffix}"
                )
            with atomic_open(copy_to / "results.csv", "w", encoding="utf-8", newline="") as fh:
                df.to_csv(fh, index=False)
            typer.echo(f"copied {len(df)} images to {copy_to}", err=True)


@friendly_errors
def trend_cmd(
    name: str = typer.Argument(..., help="Collection."),
    search_id: str = typer.Option(..., "--search-id", help="Saved search."),
    by: str = typer.Option(
        "month",
        "--by",
        help="month, year, month-of-year, taxon, genus, family, order, class or region.",
    ),
    who: str | None = typer.Option(None, "--who", help="Only this person's marks."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the chart as PNG here."),
) -> None:
    """Verified positives per group with their share of inspected images and a 95% CI."""
    from rich.table import Table

    from inquire.collection import open_collection
    from inquire.collection.charts import trend_png
    from inquire.collection.store import records
    from inquire.collection.verify import Verification

    with closing(open_collection(name)) as coll, closing(Verification(coll)) as v:
        req = v.request(search_id)
        t = v.trend(search_id, by, who)
        eff = v.efficiency(search_id, who)
    table = Table(by, "inspected", "positives", "share", "95% CI", title=f"{name}: {req.text}")
    for r in records(t):
        table.add_row(
            str(r["group"]),
            str(r["inspected"]),
            str(r["positives"]),
            f"{r['share']:.1%}",
            f"{r['ci_low']:.1%} - {r['ci_high']:.1%}",
        )
    console = _console()
    console.print(table)
    console.print(
        f"search effort: {eff['inspected']} images inspected (down to rank {eff['deepest_rank']}),"
        f" {eff['positives']} positives found"
    )
    if out is not None:
        trend_png(t, out, title=f"{req.text} — verified positives by {by}")
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(collection_app, name="collection")
    app.command("search")(search_cmd)
    app.command("trend")(trend_cmd)
