"""``inquire collection ...``, ``inquire search`` and ``inquire trend``: your own photos."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from inquire.cli._common import check_device_precision, friendly_errors
from inquire.errors import InputError

collection_app = typer.Typer(
    help="Collections of your own photos: create, update, export verified marks.",
    no_args_is_help=True,
)


def _console() -> Any:
    from rich.console import Console

    return Console()


RESULT_COLUMNS = ("rank", "score", "image", "path", "taxon", "date", "lat", "lon")


def result_rows(df: Any, images_root: Path | None = None) -> list[tuple[str, ...]]:
    """Search results as strings in :data:`RESULT_COLUMNS` order.

    Paths under ``images_root`` are shown relative to it; dates as YYYY-MM-DD (the time of
    day is in ``--json`` / ``--csv``), marked "(file time)" when the photo carries no date
    and the file's modification time stands in.
    """
    import math

    from inquire.collection.store import records

    def shown(text: str) -> str:
        # A newline or other control character in a file name would forge a line of output.
        return text if text.isprintable() else repr(text)[1:-1]

    rows: list[tuple[str, ...]] = []
    for r in records(df):
        path = str(r["path"])
        if images_root is not None:
            with contextlib.suppress(ValueError):  # outside the root: keep it absolute
                path = str(Path(path).relative_to(images_root))
        score = f"{r['score']:.4f}" + (f" → {r['rerank_score']:.3f}" if "rerank_score" in r else "")
        rows.append(
            (
                str(r["rank"]),
                score,
                str(r["image_id"]),
                shown(path),
                shown(str(r["taxon"] or "")),
                str(r["date"] or "")[:10]
                + (" (file time)" if r.get("date_source") == "mtime" else ""),
                "" if r["lat"] is None or math.isnan(r["lat"]) else f"{r['lat']:.4f}",
                "" if r["lon"] is None or math.isnan(r["lon"]) else f"{r['lon']:.4f}",
            )
        )
    return rows


def print_results(console: Any, df: Any, images_root: Path | None = None, title: str = "") -> None:
    """Search results as a table, or one block per result when paths do not fit the width."""
    from inquire._render import Col, print_records

    keep = {"score", "image", "path", "date", "lat", "lon"}
    right = {"rank", "score", "image", "lat", "lon"}
    columns = [
        Col(c, keep=c in keep, justify="right" if c in right else "left") for c in RESULT_COLUMNS
    ]
    print_records(
        console,
        columns,
        result_rows(df, images_root),
        title or None,
        head=4,
        head_format=lambda v: f"rank {v[0]}: {v[3]}  (score {v[1]}, image {v[2]})",
    )


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
        index = _scale_line(info.scale)
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


def _scale_line(sc: dict[str, Any]) -> str:
    """The partitioned index in one line: kind, partitions, bytes per photo, recall."""
    if "error" in sc:
        return f"partitioned index unusable, searches are exact: {sc['error']}"
    rec = sc.get("recall") or {}
    measured = ", ".join(
        f"{label} {rec[key]:.3f}" + (" (exact route)" if rec.get(f"{key}_route") == "exact" else "")
        for key, label in (("unfiltered", "unfiltered"), ("filter_1pct", "1% filter"))
        if key in rec
    )
    return (
        f"{sc['kind']}: {sc['partitions']} partitions, {sc['rows']:,} rows, "
        f"{sc['bytes_per_photo']:.1f} bytes/photo; recall@{rec.get('k', 100)} "
        f"{measured or 'not measured'}; setting 'scale'"
    )


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
) -> None:
    """Serve only the verification page (http://HOST:PORT/verify)."""
    from inquire.cli.web import check_port_free
    from inquire.web.server import serve
    from inquire.web.verify import make_app

    check_port_free(host, port)
    serve(make_app(host=host, allowed_hosts=allow_host), host=host, port=port)


def check_output_choice(as_json: bool, as_csv: bool) -> None:
    """--json and --csv are two answers to one question: refuse both at once."""
    if as_json and as_csv:
        raise InputError("--json and --csv print the results in two formats; pass only one")


def no_match_note(name: str) -> str:
    """Why a search with --bbox found nothing: how many photos carry coordinates at all."""
    from inquire.collection.store import open_collection

    with open_collection(name) as coll:
        located, total = coll.located_counts()
    if located == 0:
        return (
            f"no results: --bbox keeps photos with GPS coordinates, and none of the {total:,} "
            f"photos of collection {name!r} carries any (EXIF GPS or train.json latitude/"
            "longitude)"
        )
    return (
        f"no results inside --bbox: {located:,} of the {total:,} photos of collection {name!r} "
        "carry GPS coordinates, none of them in that box (W,S,E,N in degrees)"
    )


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
    protocol: str = typer.Option(
        "inquire-2024", "--protocol", help="Reranking protocol (inquire-2024, inquire-sum)."
    ),
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
    feedback: str | None = typer.Option(
        None,
        "--feedback",
        help="Saved search id: rank the images nobody marked yet by what its marks teach "
        "(with --save: record it as the search's next ranking round).",
    ),
    feedback_model: str = typer.Option(
        "", "--feedback-model", help="rocchio or logistic (default: rocchio)."
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

    from inquire.collection import SearchRequest, parse_filters
    from inquire.collection.actions import copy_results, feedback_search, search_collection
    from inquire.collection.verify import results_csv
    from inquire.index.screen import check_screen

    check_output_choice(as_json, as_csv)
    check_device_precision(device, precision)
    if copy_to is not None and copy_to.exists() and not copy_to.is_dir():
        raise InputError(
            f"--copy-to {str(copy_to)!r} is an existing file; the result images are copied into "
            "a folder: pass a folder (new or existing)"
        )
    if feedback is not None and (text or like or taxon or date_from or date_to or bbox or under):
        raise InputError(
            "--feedback re-ranks a saved search: its text, examples and filters come from it; "
            "drop the query text and filter options"
        )
    if rerank is not None:
        from inquire.eval.rerank import check_reranker_id

        check_reranker_id(rerank, baselines=False)
    check_screen(screen)
    if feedback is not None:
        out = feedback_search(name, feedback, k, feedback_model, save)
        text = f"feedback on search {feedback}"
        if out.round is not None:
            info = out.round
            typer.echo(
                f"search {feedback}: ranking round {info['round']} ({info['model']}, learnt "
                f"from {info['n_relevant']} relevant and {info['n_not_relevant']} not relevant "
                f"marks) follows rank {info['after_rank']}",
                err=True,
            )
    else:
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
            rerank_protocol=protocol,
        )
        out = search_collection(name, req, save)
        if out.search_id is not None:
            typer.echo(f"saved search {out.search_id}", err=True)
    df = out.results
    if bbox is not None and not len(df):
        typer.echo(no_match_note(name), err=True)
    elif not len(df) and (taxon or date_from or date_to or under):
        given = [*(("--taxon", t) for t in taxon), ("--from", date_from), ("--to", date_to)]
        given += [("--under", u) for u in under]
        said = " ".join(f"{flag} {value!r}" for flag, value in given if value)
        typer.echo(
            f"no results: no photo of collection {name!r} passes {said}; loosen or drop it",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(json.loads(df.to_json(orient="records")), indent=1))
    elif as_csv:
        typer.echo(results_csv(df, eol="\n"), nl=False)
    else:
        print_results(_console(), df, out.images_root, f"{name}: {text or '(by example)'}")
    if copy_to is not None:
        copy_results(df, copy_to)
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
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the chart here: .png, .jpg, .svg or .pdf."
    ),
) -> None:
    """Verified positives per group with their share of inspected images and a 95% CI.

    Time groupings use the dates photos carry (EXIF or train.json); images dated only by
    their file time are left out and counted.
    """
    from rich.table import Table

    from inquire.collection.actions import trend_report
    from inquire.collection.charts import chart_format, trend_chart, undated_note
    from inquire.collection.store import records

    if out is not None:
        chart_format(out)  # an unknown suffix fails before any work

    rep = trend_report(name, search_id, by, who)
    req, t, eff = rep.request, rep.table, rep.efficiency
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
    note = undated_note(t)
    if note:
        console.print(f"[yellow]{note}[/]")
    if out is not None:
        trend_chart(t, out, title=f"{req.text} — verified positives by {by}", by=by)
        console.print(f"wrote {out}")


@collection_app.command("index")
@friendly_errors
def index_cmd(
    name: str = typer.Argument(..., help="Collection."),
    nlist: int | None = typer.Option(None, help="IVF lists (default: sqrt(rows), 64..4096)."),
    pq_m: int | None = typer.Option(
        None, "--pq-m", help="PQ bytes per photo, must divide the dim (default: 64)."
    ),
    partition_rows: int | None = typer.Option(None, help="Rows per partition (default: 5000000)."),
    nprobe: int | None = typer.Option(
        None, help="Lists probed per query (default: 32; widened under filters)."
    ),
    rescore: int | None = typer.Option(
        None, help="Candidates per result rescored exactly (default: 10)."
    ),
    exact_below: int | None = typer.Option(
        None,
        help="Filters selecting at most this many photos are searched exactly (default: 50000).",
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Retrain and re-encode everything."),
    off: bool = typer.Option(False, "--off", help="Remove the index (back to 'auto')."),
    ray_address: str | None = typer.Option(
        None, "--ray", help="Encode partitions as Ray Data tasks on this cluster (address)."
    ),
) -> None:
    """Build or extend the partitioned IVF-PQ index (exact rescoring); rerun to resume.

    Options left out keep the index's own settings (or the defaults for a new index)."""
    from inquire._progress import enabled, rich_progress
    from inquire.collection.scale import index_collection

    given = {
        "nlist": nlist, "pq_m": pq_m, "partition_rows": partition_rows, "nprobe": nprobe,
        "rescore": rescore, "exact_below": exact_below,
    }  # fmt: skip
    options = {k: v for k, v in given.items() if v is not None}
    runner = None
    if ray_address:
        import ray

        from inquire.index.ray_serve import run_ray

        if not ray.is_initialized():
            ray.init(address=ray_address, log_to_driver=False)
        runner = run_ray
    console = _console()
    with rich_progress("encoding", disable=not enabled()) as bar:
        task = bar.add_task("encoding", total=None, rate="")

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, rate=f"{done:,}/{total:,} rows")

        sc = index_collection(
            name, options=options, rebuild=rebuild, off=off,
            runner=runner, progress=progress,
        )  # fmt: skip
    if sc is None:
        console.print(f"[green]removed[/] the partitioned index of {name!r}; setting 'auto'")
        return
    from rich.text import Text

    console.print(Text(f"indexed {name!r}: {_scale_line(sc)}"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(collection_app, name="collection")
    app.command("search")(search_cmd)
    app.command("trend")(trend_cmd)
