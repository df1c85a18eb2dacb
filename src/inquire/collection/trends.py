"""Statistics of the marks of a saved search: consensus per image, search effort, agreement
between people, and verified positives per group (time, taxon, region) for trend charts.

Consensus of several people on one image: ``relevant`` if more of them said relevant than not
relevant, ``not_relevant`` if fewer, otherwise ``unsure``. An image is INSPECTED once anyone
marked it; the share of positives is positives / inspected, with a Wilson score interval
(:func:`inquire.stats.wilson_interval`).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from inquire.collection.verify_db import MARKS
from inquire.errors import UnknownNameError
from inquire.stats import wilson_interval


class MarkedSearches(Protocol):
    """What these statistics read (a :class:`~inquire.collection.verify.Verification`): the
    marks of a search, its ranked results (``conn``) and the images' metadata (``coll``)."""

    conn: sqlite3.Connection
    coll: Any

    def marks(self, search_id: str, who: str | None = None) -> pd.DataFrame: ...


def _region(df: pd.DataFrame, deg: int = 10) -> pd.Series:
    lat0 = np.floor(df["lat"].astype(float) / deg) * deg
    lon0 = np.floor(df["lon"].astype(float) / deg) * deg
    out = [
        "unknown"
        if math.isnan(a) or math.isnan(b)
        else f"lat {a:+.0f}..{a + deg:+.0f}, lon {b:+.0f}..{b + deg:+.0f}"
        for a, b in zip(lat0, lon0, strict=True)
    ]
    return pd.Series(out, index=df.index)


@dataclass(frozen=True)
class Grouping:
    """How ``inquire trend --by NAME`` groups images, and whether groups sort by name (time)
    or by number of positives."""

    key: Callable[[pd.DataFrame], pd.Series]
    chronological: bool
    help: str


# Where a date comes from when the photo itself says when it was taken; "mtime" (the file's
# modification time, a fallback of collection metadata) says when it was copied or edited.
CAMERA_DATE_SOURCES = ("exif", "inat")

GROUPINGS: dict[str, Grouping] = {
    "month": Grouping(lambda d: d["date"].str.slice(0, 7), True, "calendar month YYYY-MM"),
    "year": Grouping(lambda d: d["date"].str.slice(0, 4), True, "year"),
    "month-of-year": Grouping(
        lambda d: d["date"].str.slice(5, 7), True, "month 01-12 pooled over years (phenology)"
    ),
    "taxon": Grouping(lambda d: d["taxon"], False, "species name"),
    "genus": Grouping(lambda d: d["genus"], False, "genus"),
    "family": Grouping(lambda d: d["family"], False, "family"),
    "order": Grouping(lambda d: d["order"], False, "order"),
    "class": Grouping(lambda d: d["class"], False, "class"),
    "region": Grouping(_region, False, "10x10 degree cell of latitude/longitude"),
}


def consensus(v: MarkedSearches, search_id: str, who: str | None = None) -> pd.DataFrame:
    """One row per inspected image: rank, score, counts of each mark and the consensus
    ``label`` (see the module docstring), with the image's metadata."""
    m = v.marks(search_id, who)
    cols = ["image_id", "rank", "score", "n_relevant", "n_not_relevant", "n_unsure", "label"]
    if m.empty:
        return pd.DataFrame(columns=[*cols, "date", "date_source", "lat", "lon", "taxon"])
    counts = (
        pd.crosstab(m["image_id"], m["mark"]).reindex(columns=list(MARKS), fill_value=0)
    ).rename(columns={k: f"n_{k}" for k in MARKS})
    counts = counts.reset_index()
    rel, nrel = counts["n_relevant"], counts["n_not_relevant"]
    counts["label"] = np.where(
        rel > nrel, "relevant", np.where(rel < nrel, "not_relevant", "unsure")
    )
    ranks = pd.read_sql_query(
        "SELECT image_id, rank, score FROM results WHERE search_id = ?",
        v.conn,
        params=(search_id,),
    )
    df = counts.merge(ranks, on="image_id", how="left")[cols].sort_values("rank")
    info = v.coll.images(df["image_id"].tolist())
    for c in (
        "date",
        "date_source",
        "lat",
        "lon",
        "taxon",
        "genus",
        "family",
        "order",
        "class",
    ):
        df[c] = info[c].to_numpy()
    return df.reset_index(drop=True)


def efficiency(v: MarkedSearches, search_id: str, who: str | None = None) -> dict[str, Any]:
    """Search effort: images inspected, positives found, their ratio, the deepest rank
    inspected, and the curve ``(inspected, positives)`` in rank order."""
    c = consensus(v, search_id, who)
    pos = (c["label"] == "relevant").to_numpy()
    n, k = len(c), int(pos.sum())
    lo, hi = wilson_interval(k, n)
    return {
        "inspected": n,
        "positives": k,
        "precision": k / n if n else None,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "deepest_rank": int(c["rank"].max()) if n else 0,
        "curve": list(zip(range(1, n + 1), np.cumsum(pos).tolist(), strict=True)),
    }


def agreement(v: MarkedSearches, search_id: str) -> dict[str, Any]:
    """Marks per person, and on images marked by two or more people the share where all
    gave the same mark."""
    m = v.marks(search_id)
    per_user = m.groupby("who")["mark"].value_counts().unstack(fill_value=0)
    multi = m.groupby("image_id")["mark"].agg(["count", "nunique"])
    multi = multi[multi["count"] >= 2]
    same = int((multi["nunique"] == 1).sum())
    return {
        "people": {
            str(w): {k: int(per_user.loc[w].get(k, 0)) for k in MARKS} for w in per_user.index
        },
        "images_marked_by_several": len(multi),
        "images_all_agree": same,
        "agreement": same / len(multi) if len(multi) else None,
    }


def trend(
    v: MarkedSearches, search_id: str, by: str = "month", who: str | None = None
) -> pd.DataFrame:
    """Verified positives per group (``GROUPINGS``): ``group, inspected, positives, share,
    ci_low, ci_high`` (95% Wilson interval of positives / inspected).

    Time groupings (month, year, month-of-year) use only dates a photo carries (EXIF or
    train.json): an image dated only by its file time is left out, not put in the month
    it was copied, and counted in ``attrs["undated_inspected"]`` /
    ``attrs["undated_positives"]`` of the returned table.
    """
    if by not in GROUPINGS:
        raise UnknownNameError("trend grouping", by, GROUPINGS)
    c = consensus(v, search_id, who)
    cols = ["group", "inspected", "positives", "share", "ci_low", "ci_high"]
    undated = {"undated_inspected": 0, "undated_positives": 0}
    g = GROUPINGS[by]
    if g.chronological and not c.empty:
        dated = c["date"].notna() & c["date_source"].isin(CAMERA_DATE_SOURCES)
        undated = {
            "undated_inspected": int((~dated).sum()),
            "undated_positives": int((c.loc[~dated, "label"] == "relevant").sum()),
        }
        c = c[dated].copy()
    if c.empty:
        empty = pd.DataFrame(columns=cols)
        empty.attrs.update(undated)
        return empty
    c["group"] = g.key(c).fillna("unknown").astype(str)
    c["pos"] = (c["label"] == "relevant").astype(int)
    t = c.groupby("group").agg(inspected=("pos", "size"), positives=("pos", "sum"))
    t = t.reset_index()
    t["share"] = t["positives"] / t["inspected"]
    t["ci_low"], t["ci_high"] = wilson_interval(t["positives"], t["inspected"])
    if g.chronological:
        t = t.sort_values("group")
    else:
        t = t.sort_values(["positives", "group"], ascending=[False, True])
    t = t[cols].reset_index(drop=True)
    t.attrs.update(undated)
    return t
