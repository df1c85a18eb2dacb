"""The collection step of ``inquire demo``: photos -> collection -> filtered search -> marks
-> trend, all offline with the colour encoder (``toy:colour``)."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from inquire.collection.build import create_collection
from inquire.collection.filters import parse_filters
from inquire.collection.search import SearchRequest, search
from inquire.collection.store import delete_collection, list_collections
from inquire.collection.verify import Verification
from inquire.embed.toy_backend import COLOURS
from inquire.testing.collection_encoder import make_photo_folder


def demo_collection(
    out_dir: str | os.PathLike[str], console: Console | None = None, seed: int = 7
) -> Path:
    """Write ~100 generated photos (EXIF dates and GPS) under ``out_dir/photos``, build the
    collection ``demo`` under ``out_dir/collections``, run a filtered search, verify its top
    results automatically (a photo is relevant when its colour is the one asked for) and print
    the results, the survey effort and the monthly trend. ``seed`` draws the photos.
    Returns the collection folder."""
    console = console or Console()
    out = Path(out_dir)
    root = out / "collections"
    console.print(
        Panel(
            "[bold yellow]SYNTHETIC PHOTOS[/]: single-colour JPEGs with made-up EXIF dates and "
            "GPS, searched with a colour-histogram encoder. This exercises the collection "
            "workflow (scan, embed, filter, verify, trend); it says nothing about any model.",
            title="inquire demo · your own collection",
        )
    )
    photos = make_photo_folder(out / "photos", n=100, seed=seed)
    if "demo" in list_collections(root):
        delete_collection("demo", root)
    coll, stats = create_collection("demo", out / "photos", "toy:colour", root=root)
    console.print(
        f"collection 'demo': {stats.added} photos embedded, metadata from EXIF "
        f"({sum(p.date is not None for p in photos)} with a date, "
        f"{sum(p.lat is not None for p in photos)} with GPS)"
    )
    req = SearchRequest(
        "red flowers", filters=parse_filters([], "2020-01-01", "2022-12-31", "-180,-90,180,90"), k=8
    )
    df = search(coll, req)
    table = Table(title="search 'red flowers', 2020-2022, with GPS")
    for col in ("rank", "score", "path", "date", "lat", "lon"):
        table.add_column(col)
    for r in df.to_dict("records"):
        table.add_row(
            str(r["rank"]),
            f"{r['score']:.3f}",
            Path(str(r["path"])).name,
            str(r["date"])[:10],
            f"{r['lat']:.2f}",
            f"{r['lon']:.2f}",
        )
    console.print(table)
    v = Verification(coll)
    sid = v.save_search(SearchRequest("red flowers", filters=req.filters), who="demo")
    index = coll.index()
    v.extend(sid, 30, index)
    truth = {str(p.path.resolve()): p.colour == "red" for p in photos}
    for r in v.results(sid, 0, 30).to_dict("records"):
        mark = "relevant" if truth.get(str(Path(str(r["abspath"])).resolve())) else "not_relevant"
        v.mark(sid, int(r["image_id"]), "demo", mark)
    eff = v.efficiency(sid)
    console.print(
        f"verified the top {eff['inspected']} results: {eff['positives']} positives "
        f"(of {sum(p.colour == 'red' for p in photos)} red photos in the folder; "
        f"{len(COLOURS)} colours in all)"
    )
    trend = Table(title="verified positives per year (95% Wilson interval of the share)")
    for col in ("year", "inspected", "positives", "share", "95% CI"):
        trend.add_column(col)
    for r in v.trend(sid, "year").to_dict("records"):
        trend.add_row(
            str(r["group"]),
            str(r["inspected"]),
            str(r["positives"]),
            f"{r['share']:.0%}",
            f"{r['ci_low']:.0%}-{r['ci_high']:.0%}",
        )
    console.print(trend)
    v.close()
    return coll.folder
