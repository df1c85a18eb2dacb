"""The inspected part of a saved search: one row per ranked result down to the deepest mark.

Both exports for outside tools (:mod:`~inquire.collection.interop.inquire_search` and
:mod:`~inquire.collection.interop.dwca`) start from this table, so they agree on which
results were inspected and on what the marks say about each.

Which results: ranks ``1 .. depth`` of the search in rank order, where ``depth`` is by default
the deepest rank anyone marked (``who``: that person) — every result above it was on the page
the person worked down — or a given number of ranks (never more than were ranked). The marks
of an image become one ``label`` as in :meth:`Verification.consensus
<inquire.collection.verify.Verification.consensus>`: ``relevant`` when more people said
relevant than not relevant, ``not_relevant`` when fewer, ``unsure`` otherwise (a tie, or only
``unsure`` marks); an image nobody marked has the label ``""``.
"""

from __future__ import annotations

import pandas as pd

from inquire.cache import transaction
from inquire.collection.verify import CAMERA_DATE_SOURCES, MARKS, Verification
from inquire.errors import InputError

INAT_PHOTO_URL = "https://www.inaturalist.org/photos/{}"
MAX_DEPTH = 10**7  # ranks; far beyond any verified search

# Columns of :func:`inspected_results`, in order.
COLUMNS = (
    "rank",
    "image_id",
    "score",
    "path",
    "status",
    "taxon",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "date",
    "date_source",
    "camera_date",
    "lat",
    "lon",
    "coord_uncertainty_m",
    "license",
    "rights_holder",
    "inat_photo_id",
    "n_relevant",
    "n_not_relevant",
    "n_unsure",
    "label",
    "relevant_by",
    "last_relevant_at",
)


def check_depth(depth: int | None) -> int | None:
    """``depth`` if it is None or a number of ranks in 1..10^7, else an :class:`InputError`."""
    if depth is None:
        return None
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise InputError(
            f"depth {depth!r} is not a number of ranks between 1 and {MAX_DEPTH}; give how many "
            "ranked results to export, or leave it out to export down to the deepest mark"
        )
    return depth


def inspected_results(
    v: Verification,
    search_id: str,
    who: str | None = None,
    depth: int | None = None,
    inat_ids: bool = True,
) -> pd.DataFrame:
    """The results of ``search_id`` down to ``depth`` (default: the deepest marked rank) with
    their marks and photo metadata: columns :data:`COLUMNS`, one row per rank, in rank order.

    ``who``: count only that person's marks. ``inat_ids``: a photo's ``train.json`` image id
    is its iNaturalist photo id (true of iNat24, whose ids INQUIRE-Search links to
    iNaturalist); then ``inat_photo_id`` holds it, else it is empty. ``camera_date`` is the
    photo's date when the photo carries one (EXIF or train.json), empty when only the file's
    time is known. ``relevant_by``: the people whose mark was relevant, sorted, joined by
    ``" | "``; ``last_relevant_at``: the latest of those marks (UTC, ISO 8601).
    """
    depth = check_depth(depth)
    # One read snapshot of marks and ranking (WAL): marks made meanwhile are in or out whole.
    with transaction(v.conn, immediate=False):
        v.request(search_id)  # an unknown search id -> its own error
        marks, ranks = _marks_and_ranks(v, search_id, who, depth)
    info = v.coll.images(ranks["image_id"].tolist())
    df = ranks.copy()
    for c in COLUMNS:  # the photo's own columns, as the images table has them
        if c in info.columns and c not in df.columns:
            df[c] = info[c].to_numpy()
    df["lat"] = pd.to_numeric(df["lat"], errors="coerce").astype("float64")
    df["lon"] = pd.to_numeric(df["lon"], errors="coerce").astype("float64")
    df["coord_uncertainty_m"] = pd.to_numeric(df["coord_uncertainty_m"], errors="coerce")
    camera = df["date_source"].isin(CAMERA_DATE_SOURCES) & df["date"].notna()
    df["camera_date"] = df["date"].where(camera, None)
    source = pd.to_numeric(info["source_id"], errors="coerce").astype("Int64")
    df["inat_photo_id"] = pd.Series(
        source.array if inat_ids else pd.array([pd.NA] * len(df), dtype="Int64"), index=df.index
    )
    counts = _mark_counts(marks)
    df = df.merge(counts, on="image_id", how="left")
    for m in MARKS:
        df[f"n_{m}"] = df[f"n_{m}"].fillna(0).astype("int64")
    rel, nrel = df["n_relevant"], df["n_not_relevant"]
    marked = (rel + nrel + df["n_unsure"]) > 0
    df["label"] = "unsure"
    df.loc[rel > nrel, "label"] = "relevant"
    df.loc[rel < nrel, "label"] = "not_relevant"
    df.loc[~marked, "label"] = ""
    df["relevant_by"] = df["relevant_by"].fillna("")
    df["last_relevant_at"] = df["last_relevant_at"].fillna("")
    return df[list(COLUMNS)].reset_index(drop=True)


def _marks_and_ranks(
    v: Verification, search_id: str, who: str | None, depth: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The marks (``who``'s, or all) and the ranking ``rank, image_id, score`` down to
    ``depth`` (default: the deepest marked rank)."""
    marks = v.marks(search_id, who)
    if depth is None:
        row = v.conn.execute(
            "SELECT COALESCE(MAX(r.rank), 0) FROM results r JOIN marks m ON "
            "m.search_id = r.search_id AND m.image_id = r.image_id WHERE r.search_id = ?"
            + (" AND m.who = ?" if who else ""),
            (search_id, who) if who else (search_id,),
        ).fetchone()
        depth = int(row[0])
    ranks = pd.read_sql_query(
        "SELECT rank, image_id, score FROM results WHERE search_id = ? AND rank <= ? ORDER BY rank",
        v.conn,
        params=(search_id, int(depth)),
    )
    return marks, ranks


def _mark_counts(marks: pd.DataFrame) -> pd.DataFrame:
    """Per image: the number of each mark, who said relevant and when they last did."""
    cols = ["image_id", *(f"n_{m}" for m in MARKS), "relevant_by", "last_relevant_at"]
    if marks.empty:
        return pd.DataFrame(columns=cols).astype({"image_id": "int64"})
    counts = pd.crosstab(marks["image_id"], marks["mark"]).reindex(
        columns=list(MARKS), fill_value=0
    )
    counts.columns = [f"n_{m}" for m in MARKS]
    rel = marks[marks["mark"] == "relevant"]
    by = rel.groupby("image_id").agg(
        relevant_by=("who", lambda s: " | ".join(sorted(map(str, s)))),
        last_relevant_at=("at", "max"),
    )
    out = counts.join(by, how="left").reset_index()
    return out[cols]
