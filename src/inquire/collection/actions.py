"""One library call per action on a collection, for the command line and the web page.

Each function opens the collection by name, does the whole action (search and save,
learn from marks, copy results, export marks, trends, an overview of every collection)
and closes it again; the front ends parse arguments, call one of these and render what
comes back.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from inquire.collection.search import SearchRequest, search
from inquire.collection.store import list_collections, open_collection, records
from inquire.collection.verify import Verification, write_table

RESULTS_CSV = "results.csv"


@dataclass(frozen=True)
class SearchOutcome:
    """A search of a collection and what it saved.

    ``results``: the result table (rank, score, image_id, path, taxon, date, lat, lon, the
    taxonomy, date_source; ``rerank_score`` when reranked); ``images_root``: the
    collection's photo folder (paths are absolute under it); ``search_id``: the saved
    search (None when nothing was saved); ``round``: the ranking round's record when
    feedback was saved (see :meth:`~inquire.collection.verify.Verification.learn`).
    """

    results: pd.DataFrame
    images_root: Path
    search_id: str | None = None
    round: dict[str, Any] | None = None


def search_collection(
    name: str,
    request: SearchRequest,
    save: bool = False,
    who: str = "",
    root: str | os.PathLike[str] | None = None,
) -> SearchOutcome:
    """``inquire search NAME TEXT``: run ``request`` on collection ``name`` (filters,
    examples, reranking: :func:`~inquire.collection.search.search`); with ``save`` the
    request is saved for verification afterwards (by ``who``), so a refused search is
    never saved."""
    with open_collection(name, root) as coll:
        df = search(coll, request)
        sid = None
        if save:
            with Verification(coll) as v:
                sid = v.save_search(request, who)
        return SearchOutcome(df, coll.images_root, sid)


def feedback_search(
    name: str,
    search_id: str,
    k: int = 50,
    model: str = "",
    save: bool = False,
    who: str = "",
    root: str | os.PathLike[str] | None = None,
) -> SearchOutcome:
    """``inquire search NAME --feedback ID``: the ``k`` images nobody marked yet in saved
    search ``search_id``, ranked by what its marks teach (``model``: rocchio, logistic);
    with ``save`` recorded as the search's next ranking round
    (:meth:`~inquire.collection.verify.Verification.feedback`)."""
    with open_collection(name, root) as coll, Verification(coll) as v:
        fb = v.feedback(search_id, coll.index(), k, model=model, save=save, who=who)
        return SearchOutcome(fb.results, coll.images_root, round=fb.round)


def copy_results(results: pd.DataFrame, dest: str | os.PathLike[str]) -> Path:
    """Copy the images of a result table into folder ``dest`` (created if missing) as
    ``{rank:04d}_{image_id}{suffix}``, and write the table beside them as ``results.csv``
    (formulas escaped, written atomically: :func:`~inquire.collection.verify.write_table`).
    Returns the path of ``results.csv``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for r in records(results):
        src = Path(r["path"])
        shutil.copy2(src, dest / f"{int(r['rank']):04d}_{int(r['image_id'])}{src.suffix}")
    return write_table(results, dest / RESULTS_CSV)


def export_marks(
    name: str,
    search_id: str,
    out: str | os.PathLike[str],
    who: str | None = None,
    only_relevant: bool = False,
    overwrite: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> int:
    """``inquire collection export``: write the marks of ``search_id`` (one person's with
    ``who``; only ``relevant`` ones with ``only_relevant``) to ``out`` (.csv, formulas
    escaped, or .parquet), atomically. An existing ``out`` is refused before any work
    unless ``overwrite``. Returns the number of marks written."""
    from inquire._io import check_output_file

    check_output_file(out, overwrite)
    with open_collection(name, root) as coll, Verification(coll) as v:
        df = v.export(search_id, who)
    if only_relevant:
        df = df[df["mark"] == "relevant"]
    write_table(df, Path(out))
    return len(df)


@dataclass(frozen=True)
class TrendReport:
    """``inquire trend``: ``request`` (the saved search), ``table`` (see
    :meth:`~inquire.collection.verify.Verification.trend`) and ``efficiency`` (see
    :meth:`~inquire.collection.verify.Verification.efficiency`)."""

    request: SearchRequest
    table: pd.DataFrame
    efficiency: dict[str, Any]


def trend_report(
    name: str,
    search_id: str,
    by: str = "month",
    who: str | None = None,
    root: str | os.PathLike[str] | None = None,
) -> TrendReport:
    """Verified positives of saved search ``search_id`` per group ``by`` (month, year,
    taxon, region, ...) with the search effort, from everyone's marks or ``who``'s."""
    with open_collection(name, root) as coll, Verification(coll) as v:
        req = v.request(search_id)
        return TrendReport(req, v.trend(search_id, by, who), v.efficiency(search_id, who))


def collections_overview(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per collection (sorted by name): ``name, model_id, ok, deleted, unreadable,
    images_root`` (image counts by status, the photo folder)."""
    rows = []
    for name in list_collections(root):
        with open_collection(name, root) as c:
            n = c.counts()
            rows.append(
                {
                    "name": name,
                    "model_id": c.model_id,
                    "ok": int(n.get("ok", 0)),
                    "deleted": int(n.get("deleted", 0)),
                    "unreadable": int(n.get("unreadable", 0)),
                    "images_root": str(c.images_root),
                }
            )
    cols = ["name", "model_id", "ok", "deleted", "unreadable", "images_root"]
    return pd.DataFrame(rows, columns=cols)
