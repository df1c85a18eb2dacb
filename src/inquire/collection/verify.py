"""Verification of search results: marks per person, export, search effort and trends.

``verify.db`` (SQLite, WAL) in the collection folder holds

- ``searches``: a search request (text, examples, filters) keyed by a hash of the request and
  the model, so everyone who runs the same search verifies the same ranking;
- ``results``: the ranking as it was shown (rank, image id, score), extended on demand as
  people go further down (existing ranks never move, even after a collection update);
- ``marks``: one mark per (search, image, person): ``relevant``, ``not_relevant`` or
  ``unsure``, with the time it was made (UTC). A new mark by the same person replaces theirs;
- ``rounds``: each time the ranking learnt from the marks (relevance feedback, see
  :mod:`inquire.collection.feedback`): the model, the marks it learnt from, the rank after
  which its ranking starts, and its query vector. Round 0 is the first search; ``results``
  says which round placed each image.

Learning from the marks (:meth:`Verification.learn`) keeps every result up to the rank the
person has seen (and every marked one), drops the unmarked results after it, and appends the
new ranking of the not-yet-ranked images, so what was shown stays as it was shown and the
inspected images (the marked ones) are never shown again.

Consensus of several people on one image: ``relevant`` if more of them said relevant than not
relevant, ``not_relevant`` if fewer, otherwise ``unsure``. An image is INSPECTED once anyone
marked it; the share of positives is positives / inspected, with a Wilson score interval.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from inquire.cache import transaction
from inquire.collection.filters import Filters
from inquire.collection.search import SearchRequest, search
from inquire.collection.store import Collection, CollectionIndex, connect, records
from inquire.embed.base import Encoder
from inquire.errors import InputError, UnknownNameError
from inquire.stats import wilson_interval

log = logging.getLogger(__name__)
S = TypeVar("S")
P = TypeVar("P")
R = TypeVar("R")

MARKS = ("relevant", "not_relevant", "unsure")
# How often a ranking computed outside the write lock is computed again because the search
# changed meanwhile, before it is computed with the lock held.
COMPUTE_ATTEMPTS = 3
EXPORT_COLUMNS = [
    "image_id",
    "path",
    "taxon",
    "date",
    "lat",
    "lon",
    "score",
    "rank",
    "mark",
    "who",
    "when",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS searches (
    search_id TEXT PRIMARY KEY,
    request TEXT NOT NULL,             -- JSON: text, like, filters
    model_id TEXT NOT NULL, revision TEXT NOT NULL,
    created TEXT NOT NULL, created_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS results (
    search_id TEXT NOT NULL, rank INTEGER NOT NULL, image_id INTEGER NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (search_id, rank), UNIQUE (search_id, image_id)
);
CREATE TABLE IF NOT EXISTS rounds (
    search_id TEXT NOT NULL, round INTEGER NOT NULL, after_rank INTEGER NOT NULL,
    model TEXT NOT NULL, n_relevant INTEGER NOT NULL, n_not_relevant INTEGER NOT NULL,
    vector BLOB NOT NULL,             -- float32 query vector, L2-normalised
    created TEXT NOT NULL, created_by TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (search_id, round)
);
CREATE TABLE IF NOT EXISTS marks (
    search_id TEXT NOT NULL, image_id INTEGER NOT NULL, who TEXT NOT NULL,
    mark TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (search_id, image_id, who)
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_who(who: str) -> str:
    """A person's name as stored with their marks (1-64 printable characters)."""
    who = (who or "").strip()
    if not who or len(who) > 64 or not who.isprintable():
        raise InputError(
            f"user name {who!r} is not usable; give 1-64 printable characters (e.g. your initials)"
        )
    return who


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


@dataclass(frozen=True)
class FeedbackResults:
    """What :meth:`Verification.feedback_results` returns.

    ``results``: the result table (columns of
    :func:`~inquire.collection.search.results_frame`); ``round``: the ranking round's record
    (see :meth:`Verification.learn`) when it was saved, else None.
    """

    results: pd.DataFrame
    round: dict[str, Any] | None = None


class Verification:
    """Saved searches, rankings and marks of one collection (``verify.db`` in its folder).

    Each instance holds its own SQLite connection; make one per thread or request.
    """

    def __init__(self, coll: Collection) -> None:
        self.coll = coll
        self.path = coll.folder / "verify.db"
        self.conn: sqlite3.Connection = connect(self.path, SCHEMA)  # read-only if it must
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
        read_only = bool(self.conn.execute("PRAGMA query_only").fetchone()[0])
        if "round" not in cols and not read_only:  # written before relevance feedback
            with transaction(self.conn):
                cols = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
                if "round" not in cols:
                    self.conn.execute(
                        "ALTER TABLE results ADD COLUMN round INTEGER NOT NULL DEFAULT 0"
                    )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Verification:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- searches ------------------------------------------------------------------------------
    def save_search(self, request: SearchRequest, who: str = "") -> str:
        """Record ``request`` and return its id (the same request always gets the same id)."""
        meta = self.coll.meta()
        body = json.dumps(request.as_dict(), sort_keys=True)
        key = f"{body}|{meta['model_id']}|{meta['revision']}"
        search_id = hashlib.sha1(key.encode()).hexdigest()[:12]
        self.conn.execute(
            "INSERT OR IGNORE INTO searches (search_id, request, model_id, revision, created, "
            "created_by) VALUES (?, ?, ?, ?, ?, ?)",
            (search_id, body, meta["model_id"], meta["revision"], _now(), who),
        )
        return search_id

    def request(self, search_id: str) -> SearchRequest:
        row = self.conn.execute(
            "SELECT request FROM searches WHERE search_id = ?", (search_id,)
        ).fetchone()
        if row is None:
            known = [r[0] for r in self.conn.execute("SELECT search_id FROM searches")]
            raise UnknownNameError(f"search of collection {self.coll.name!r}", search_id, known)
        d = json.loads(row["request"])
        return SearchRequest(d["text"], tuple(d["like"]), Filters.from_dict(d["filters"]))

    def searches(self) -> pd.DataFrame:
        """All saved searches with their number of ranked results and marks."""
        return pd.read_sql_query(
            "SELECT s.search_id, s.request, s.created, s.created_by, "
            "(SELECT COUNT(*) FROM results r WHERE r.search_id = s.search_id) AS n_results, "
            "(SELECT COUNT(*) FROM marks m WHERE m.search_id = s.search_id) AS n_marks "
            "FROM searches s ORDER BY s.created",
            self.conn,
        )

    def extend(
        self,
        search_id: str,
        upto: int,
        index: CollectionIndex,
        encoder: Encoder | None = None,
        request: SearchRequest | None = None,
    ) -> int:
        """Make sure the ranking of ``search_id`` has at least ``upto`` results (if the
        collection has that many matches). Returns the number of ranked results.

        After a feedback round the ranking goes on with that round's query vector.

        ``request``: the saved request in an equivalent form to search with (the web page
        passes its examples as image ids, so no path is ever looked up); default: as saved."""
        req = self.request(search_id) if request is None else request

        def read() -> tuple[int, int]:
            last = self.conn.execute(
                "SELECT COALESCE(MAX(round), 0) FROM rounds WHERE search_id = ?", (search_id,)
            ).fetchone()[0]
            return self.n_ranked(search_id), int(last)

        def compute(state: tuple[int, int]) -> pd.DataFrame:
            n = state[0]
            if n >= upto:
                return pd.DataFrame({"image_id": [], "score": []})
            have = self._ranked_ids(search_id)
            last = self._last_round(search_id)
            if last is not None:
                return self._feedback_tail(index, req, last["vector"], have, upto - n)
            k = upto
            while True:
                req.k = k
                df = search(index, req, encoder)
                new = df[~df["image_id"].isin(have)]
                if n + len(new) >= upto or len(df) < k:
                    break
                k *= 2  # earlier results left the collection: look deeper
            return new.head(upto - n)

        def write(state: tuple[int, int], new: pd.DataFrame) -> int:
            self._append(search_id, new, state[1])
            return state[0] + len(new)

        n, _ = read()
        if n >= upto:
            return n
        return self._compute_then_write(read, compute, write)

    def _compute_then_write(
        self,
        read: Callable[[], S],
        compute: Callable[[S], P],
        write: Callable[[S, P], R],
    ) -> R:
        """``write(state, compute(state))`` where ``state = read()``, with the write lock
        held only for ``write``: ``compute`` (text encoding, top-k, model loading) runs on a
        snapshot, and the write happens only if ``read()`` still gives the same state under
        the lock; otherwise it is computed again from the new state. After
        :data:`COMPUTE_ATTEMPTS` changed states in a row it is computed under the lock."""
        for _ in range(COMPUTE_ATTEMPTS):
            with transaction(self.conn, immediate=False):  # a consistent snapshot
                state = read()
            plan = compute(state)
            with transaction(self.conn):  # IMMEDIATE: check and insert
                if read() == state:
                    return write(state, plan)
            log.info("verify.db changed while ranking; ranking again")
        with transaction(self.conn):
            state = read()
            return write(state, compute(state))

    def start_search(
        self,
        request: SearchRequest,
        index: CollectionIndex,
        encoder: Encoder | None = None,
        who: str = "",
        first: int = 50,
    ) -> str:
        """Save ``request`` (by ``who``) and rank its first ``first`` results; returns the
        search id.

        Everything that can refuse the request (the query text or examples, the filters)
        is checked before it is saved, and a search that fails to rank and did not exist
        before is removed again: a refused search is never left saved. Saving a request
        that exists returns its id and ranks it no further than it already is.
        """
        from inquire.collection.search import query_vector

        query_vector(index, encoder, request.text, request.like)
        request.filters.mask(index)
        before = self.conn.total_changes
        sid = self.save_search(request, who)
        is_new = self.conn.total_changes > before  # its INSERT OR IGNORE added the row
        try:
            self.extend(sid, first, index, encoder, request=request)
        except BaseException:
            if is_new and self.n_ranked(sid) == 0:
                self.conn.execute("DELETE FROM searches WHERE search_id = ?", (sid,))
            raise
        return sid

    def n_ranked(self, search_id: str) -> int:
        """How many results the search has ranked so far (ranks are 1..n, never a gap)."""
        row = self.conn.execute(
            "SELECT COALESCE(MAX(rank), 0) FROM results WHERE search_id = ?", (search_id,)
        ).fetchone()
        return int(row[0])

    def _ranked_ids(self, search_id: str) -> set[int]:
        return {
            int(r[0])
            for r in self.conn.execute(
                "SELECT image_id FROM results WHERE search_id = ?", (search_id,)
            )
        }

    def _append(self, search_id: str, new: pd.DataFrame, round_no: int) -> None:
        start = self.n_ranked(search_id)
        self.conn.executemany(
            "INSERT INTO results (search_id, rank, image_id, score, round) VALUES (?, ?, ?, ?, ?)",
            [
                (search_id, start + i + 1, int(r["image_id"]), float(r["score"]), round_no)
                for i, r in enumerate(records(new))
            ],
        )

    def _last_round(self, search_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT round, model, vector FROM rounds WHERE search_id = ? "
            "ORDER BY round DESC LIMIT 1",
            (search_id,),
        ).fetchone()
        if row is None:
            return None
        return {
            "round": int(row["round"]),
            "model": row["model"],
            "vector": np.frombuffer(row["vector"], np.float32).copy(),
        }

    @staticmethod
    def _feedback_tail(
        index: CollectionIndex,
        req: SearchRequest,
        vector: np.ndarray,
        exclude: set[int],
        k: int,
    ) -> pd.DataFrame:
        """The top ``k`` images by ``vector`` among those passing the search's filters and
        not in ``exclude``, as a result table."""
        from inquire.collection.search import CollectionSearcher

        if vector.shape != (index.store.dim,):
            raise InputError(
                f"the saved feedback vector has {vector.shape[0]} dimensions but the "
                f"collection's embeddings have {index.store.dim}; the collection was re-embedded "
                "with another model, start a new search"
            )
        mask = req.filters.mask(index)
        if exclude:
            mask &= ~np.isin(index.image_id, np.fromiter(exclude, np.int64, len(exclude)))
        return CollectionSearcher(index, exact=True).results(vector, k, mask)

    def feedback_vector(
        self,
        search_id: str,
        index: CollectionIndex,
        encoder: Encoder | None = None,
        model: str = "",
        who: str | None = None,
        request: SearchRequest | None = None,
    ) -> tuple[np.ndarray, int, int]:
        """``(vector (d,) float32, n_relevant, n_not_relevant)``: the query vector ``model``
        learns from the consensus marks of the search (of one person with ``who``).
        ``request``: the saved request in an equivalent form (see :meth:`extend`)."""
        from inquire.collection.feedback import DEFAULT_MODEL, feedback_vector
        from inquire.collection.search import query_vector

        req = self.request(search_id) if request is None else request
        if req.text.strip() and encoder is None:
            from inquire.embed.models import load_encoder

            encoder = load_encoder(index.collection.model_id)
        q = query_vector(index, encoder, req.text, req.like)
        c = self.consensus(search_id, who)
        pos_ids = c.loc[c["label"] == "relevant", "image_id"].to_numpy(np.int64)
        neg_ids = c.loc[c["label"] == "not_relevant", "image_id"].to_numpy(np.int64)

        def vecs(ids: np.ndarray) -> np.ndarray:
            rows = index.rows_of(ids.tolist()) if len(ids) else np.zeros(0, np.int64)
            rows = rows[rows >= 0]  # images that left the collection teach nothing
            return index.vectors(rows) if len(rows) else np.zeros((0, len(q)), np.float32)

        w = feedback_vector(q, vecs(pos_ids), vecs(neg_ids), model or DEFAULT_MODEL)
        return w, len(pos_ids), len(neg_ids)

    def feedback(
        self,
        search_id: str,
        index: CollectionIndex,
        k: int = 50,
        encoder: Encoder | None = None,
        model: str = "",
        who: str | None = None,
    ) -> pd.DataFrame:
        """The top ``k`` images that nobody marked yet, ranked by what the marks teach
        (``model``, see :mod:`inquire.collection.feedback`), with the search's filters.
        Nothing is saved (see :meth:`learn`)."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        req = self.request(search_id)
        w, _, _ = self.feedback_vector(search_id, index, encoder, model, who, req)
        marked = {int(x) for x in self.marks(search_id)["image_id"]}
        df = self._feedback_tail(index, req, w, marked, k)
        df["rank"] = np.arange(1, len(df) + 1)
        return df

    def feedback_results(
        self,
        search_id: str,
        index: CollectionIndex,
        k: int = 50,
        encoder: Encoder | None = None,
        model: str = "",
        save: bool = False,
        who: str = "",
    ) -> FeedbackResults:
        """The ``k`` images nobody marked yet, ranked by what the marks of ``search_id``
        teach (``model``, see :mod:`inquire.collection.feedback`), as a result table.

        ``save=False``: nothing is written (:meth:`feedback`; ranks 1..n). ``save=True``: a
        new ranking round is recorded (:meth:`learn` with ``depth=k``, by ``who``) and the
        table holds the round's results with their ranks in the saved search; the round's
        record comes back too.
        """
        from inquire.collection.search import results_frame

        if not save:
            return FeedbackResults(self.feedback(search_id, index, k, encoder, model))
        info = self.learn(search_id, index, encoder=encoder, model=model, who=who, depth=k)
        new = self.results(search_id, offset=info["after_rank"], limit=k)
        df = results_frame(
            index, new["image_id"].to_numpy(np.int64), new["score"].to_numpy(np.float32)
        )
        df["rank"] = new["rank"].to_numpy()
        return FeedbackResults(df, info)

    def learn(
        self,
        search_id: str,
        index: CollectionIndex,
        shown: int | None = None,
        encoder: Encoder | None = None,
        model: str = "",
        who: str = "",
        depth: int = 50,
        request: SearchRequest | None = None,
    ) -> dict[str, Any]:
        """Start a new ranking round of ``search_id`` learnt from its marks.

        Results up to rank ``max(shown, deepest marked rank)`` stay as they were shown; the
        unmarked results after it are dropped (nobody saw them); ``depth`` images ranked by
        the learnt vector follow. ``shown``: how far the person has looked (default: the
        deepest marked rank). Returns the round's record (``round``, ``after_rank``,
        ``model``, ``n_relevant``, ``n_not_relevant``, ``n_results``).
        """
        from inquire.collection.feedback import DEFAULT_MODEL, FEEDBACK_MODELS

        model = model or DEFAULT_MODEL
        if model not in FEEDBACK_MODELS:
            raise UnknownNameError("feedback model", model, FEEDBACK_MODELS)
        if shown is not None and (isinstance(shown, bool) or shown < 0 or shown > 10**9):
            raise InputError(f"shown must be a rank between 0 and 10^9, got {shown}")
        if depth < 1 or depth > 10_000:
            raise InputError(f"depth must be between 1 and 10000, got {depth}")
        req = self.request(search_id) if request is None else request

        def read() -> tuple[int, int, int]:
            # Every marked result lies at or above the deepest marked rank, so everything
            # dropped below ``after`` is unmarked: nobody inspected it.
            deepest = self.conn.execute(
                "SELECT COALESCE(MAX(r.rank), 0) FROM results r JOIN marks m "
                "ON m.search_id = r.search_id AND m.image_id = r.image_id WHERE r.search_id = ?",
                (search_id,),
            ).fetchone()[0]
            last = self.conn.execute(
                "SELECT COALESCE(MAX(round), 0) FROM rounds WHERE search_id = ?", (search_id,)
            ).fetchone()[0]
            return self.n_ranked(search_id), int(last), int(deepest)

        def compute(state: tuple[int, int, int]) -> tuple[np.ndarray, int, int, pd.DataFrame]:
            n, _, deepest = state
            w, n_pos, n_neg = self.feedback_vector(search_id, index, encoder, model, request=req)
            if n_pos + n_neg == 0:
                raise InputError(
                    f"search {search_id!r} has no relevant / not relevant marks yet; mark some "
                    "results before learning from them"
                )
            after = min(max(deepest, int(shown or 0)), n)
            kept = {
                int(r[0])
                for r in self.conn.execute(
                    "SELECT image_id FROM results WHERE search_id = ? AND rank <= ?",
                    (search_id, after),
                )
            }
            return w, n_pos, n_neg, self._feedback_tail(index, req, w, kept, depth)

        def write(
            state: tuple[int, int, int], plan: tuple[np.ndarray, int, int, pd.DataFrame]
        ) -> dict[str, Any]:
            n, last, deepest = state
            w, n_pos, n_neg, new = plan
            after = min(max(deepest, int(shown or 0)), n)
            round_no = last + 1
            self.conn.execute(
                "DELETE FROM results WHERE search_id = ? AND rank > ?", (search_id, after)
            )
            self.conn.execute(
                "INSERT INTO rounds (search_id, round, after_rank, model, n_relevant, "
                "n_not_relevant, vector, created, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    search_id,
                    round_no,
                    after,
                    model,
                    n_pos,
                    n_neg,
                    np.asarray(w, np.float32).tobytes(),
                    _now(),
                    who,
                ),
            )
            self._append(search_id, new, round_no)
            return {
                "round": round_no,
                "after_rank": after,
                "model": model,
                "n_relevant": n_pos,
                "n_not_relevant": n_neg,
                "n_results": self.n_ranked(search_id),
            }

        return self._compute_then_write(read, compute, write)

    def rounds(self, search_id: str) -> pd.DataFrame:
        """The ranking rounds of a search: ``round, after_rank, model, n_relevant,
        n_not_relevant, created, created_by`` (round 0, the first search, is implicit)."""
        self.request(search_id)
        return pd.read_sql_query(
            "SELECT round, after_rank, model, n_relevant, n_not_relevant, created, created_by "
            "FROM rounds WHERE search_id = ? ORDER BY round",
            self.conn,
            params=(search_id,),
        )

    def results(self, search_id: str, offset: int = 0, limit: int = 50) -> pd.DataFrame:
        """Ranked results ``offset .. offset+limit`` with image metadata (no extension)."""
        df = pd.read_sql_query(
            "SELECT rank, image_id, score, round FROM results WHERE search_id = ? AND rank > ? "
            "ORDER BY rank LIMIT ?",
            self.conn,
            params=(search_id, int(offset), int(limit)),
        )
        info = self.coll.images(df["image_id"].tolist())
        for c in ("path", "abspath", "status", "taxon", "date", "lat", "lon"):
            df[c] = info[c].to_numpy()
        return df

    # -- marks ---------------------------------------------------------------------------------
    def mark(self, search_id: str, image_id: int, who: str, mark: str) -> str:
        """Save ``who``'s ``mark`` on ``image_id`` (``clear`` removes it). Returns the time."""
        who = check_who(who)
        if mark not in (*MARKS, "clear"):
            raise InputError(f"mark {mark!r} is not one of {', '.join(MARKS)} or clear")
        ranked = self.conn.execute(
            "SELECT 1 FROM results WHERE search_id = ? AND image_id = ?", (search_id, image_id)
        ).fetchone()
        if ranked is None:
            self.request(search_id)  # unknown search -> its own error
            raise InputError(
                f"image {image_id} is not among the shown results of search {search_id!r}; "
                "only ranked results can be marked"
            )
        at = _now()
        if mark == "clear":
            self.conn.execute(
                "DELETE FROM marks WHERE search_id = ? AND image_id = ? AND who = ?",
                (search_id, image_id, who),
            )
        else:
            self.conn.execute(
                "INSERT INTO marks (search_id, image_id, who, mark, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (search_id, image_id, who) DO UPDATE SET mark = excluded.mark, "
                "at = excluded.at",
                (search_id, int(image_id), who, mark, at),
            )
        return at

    def marks(self, search_id: str, who: str | None = None) -> pd.DataFrame:
        """``image_id, who, mark, at`` of a search (all people, or one)."""
        q = "SELECT image_id, who, mark, at FROM marks WHERE search_id = ?"
        params: tuple[Any, ...] = (search_id,)
        if who:
            q += " AND who = ?"
            params += (who,)
        return pd.read_sql_query(q + " ORDER BY image_id, who", self.conn, params=params)

    def export(self, search_id: str, who: str | None = None) -> pd.DataFrame:
        """Every mark of the search joined with its image and ranking: one row per (image,
        person), columns :data:`EXPORT_COLUMNS` + ``search_id``, ``query``, ordered by rank."""
        self.request(search_id)
        marks = self.marks(search_id, who)
        ranks = pd.read_sql_query(
            "SELECT image_id, rank, score FROM results WHERE search_id = ?",
            self.conn,
            params=(search_id,),
        )
        df = marks.merge(ranks, on="image_id", how="left")
        info = self.coll.images(df["image_id"].tolist())
        df["path"] = info["abspath"].to_numpy()
        for c in ("taxon", "date", "lat", "lon"):
            df[c] = info[c].to_numpy()
        df = df.rename(columns={"at": "when"}).sort_values(["rank", "who"], kind="stable")
        req = self.request(search_id)
        df["search_id"] = search_id
        df["query"] = req.text
        return df[[*EXPORT_COLUMNS, "search_id", "query"]].reset_index(drop=True)

    def consensus(self, search_id: str, who: str | None = None) -> pd.DataFrame:
        """One row per inspected image: rank, score, counts of each mark and the consensus
        ``label`` (see the module docstring), with the image's metadata."""
        m = self.marks(search_id, who)
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
            self.conn,
            params=(search_id,),
        )
        df = counts.merge(ranks, on="image_id", how="left")[cols].sort_values("rank")
        info = self.coll.images(df["image_id"].tolist())
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

    def efficiency(self, search_id: str, who: str | None = None) -> dict[str, Any]:
        """Search effort: images inspected, positives found, their ratio, the deepest rank
        inspected, and the curve ``(inspected, positives)`` in rank order."""
        c = self.consensus(search_id, who)
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

    def agreement(self, search_id: str) -> dict[str, Any]:
        """Marks per person, and on images marked by two or more people the share where all
        gave the same mark."""
        m = self.marks(search_id)
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

    def trend(self, search_id: str, by: str = "month", who: str | None = None) -> pd.DataFrame:
        """Verified positives per group (``GROUPINGS``): ``group, inspected, positives, share,
        ci_low, ci_high`` (95% Wilson interval of positives / inspected).

        Time groupings (month, year, month-of-year) use only dates a photo carries (EXIF or
        train.json): an image dated only by its file time is left out, not put in the month
        it was copied, and counted in ``attrs["undated_inspected"]`` /
        ``attrs["undated_positives"]`` of the returned table.
        """
        if by not in GROUPINGS:
            raise UnknownNameError("trend grouping", by, GROUPINGS)
        c = self.consensus(search_id, who)
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


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# RFC 4180 line ends: a cell holding a carriage return is then quoted, not split in two.
CSV_EOL = "\r\n"


def escape_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells starting with ``=``, ``+``, ``-``, ``@``, a tab or
    a carriage return get a leading ``'``, so a spreadsheet shows them as text instead of
    running them. Numbers (negative longitudes included) are left as they are."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object and not pd.api.types.is_string_dtype(out[col]):
            continue
        out[col] = [
            "'" + v if isinstance(v, str) and v.startswith(FORMULA_PREFIXES) else v
            for v in out[col]
        ]
    return out


def results_csv(df: pd.DataFrame, eol: str = CSV_EOL) -> str:
    """``df`` as CSV text with formulas escaped (:func:`escape_formulas`): the one CSV
    writer of result and mark tables (downloads, files, ``inquire search --csv``).
    ``eol``: line end, RFC 4180's CRLF by default (``"\\n"`` for a terminal)."""
    return escape_formulas(df).to_csv(index=False, lineterminator=eol)


def table_bytes(df: pd.DataFrame, fmt: str) -> bytes:
    """``df`` encoded as ``csv`` (UTF-8, CRLF line ends, formulas escaped:
    :func:`escape_formulas`) or ``parquet``."""
    import io

    if fmt == "csv":
        return results_csv(df).encode("utf-8")
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    raise InputError(f"export format {fmt!r} is not csv or parquet")


def write_table(df: pd.DataFrame, out: str | Path) -> Path:
    """Write ``df`` as CSV (formulas escaped: :func:`escape_formulas`) or parquet (by the
    suffix of ``out``), atomically."""
    from inquire._io import atomic_path

    out = Path(out)
    writers = {
        ".csv": lambda p: p.write_text(results_csv(df), encoding="utf-8", newline=""),
        ".parquet": lambda p: df.to_parquet(p, index=False),
    }
    if out.suffix.lower() not in writers:
        raise InputError(f"cannot write {str(out)!r}: use a .csv or .parquet file name")
    with atomic_path(out) as tmp:
        writers[out.suffix.lower()](tmp)
    return out
