"""``inquire search NAME TEXT`` and ``inquire trend NAME``: search a collection, count its marks.

The result table as text (:func:`result_rows`, :func:`print_results`) is shared with the
other collection commands.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from inquire.cli._common import check_device_precision, friendly_errors
from inquire.errors import InputError


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
    ray_address: str | None = typer.Option(
        None,
        "--ray",
        help="Serve the partitioned index from one Ray actor per partition on the Ray cluster "
        "at this address (HOST:PORT); the same results as in this process.",
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
    from inquire.collection.scale import index_served

    with index_served(ray_address, name) as served:
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
        if served is not None:
            typer.echo(
                f"index served by {served.actors()} Ray actors on {served.nodes()} nodes"
                if served.actors()
                else f"the partitioned index of {name!r} was not used (stale or unreadable, "
                "see the warning above): searched in this process",
                err=True,
            )
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
