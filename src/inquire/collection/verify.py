"""Saved searches of a collection, their rankings and people's marks (``verify.db``,
:mod:`~inquire.collection.verify_db`): ranking further on demand and paging, marking,
relevance feedback rounds, and the marks joined with their images for export.

Ranks never move once shown: going further down appends; learning from the marks
(:meth:`Verification.feedback` with ``save``) keeps every result up to the rank the person
has seen (and every marked one), drops the unmarked results after it and appends the new
ranking of the not-yet-ranked images, so inspected images are never shown again. Statistics
of the marks live in :mod:`~inquire.collection.trends`, the table writers in
:mod:`~inquire.collection.tables` (both re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from inquire.cache import transaction
from inquire.collection import trends
from inquire.collection.filters import Filters
from inquire.collection.search import SearchRequest, search
from inquire.collection.store import Collection, CollectionIndex, records
from inquire.collection.tables import (  # noqa: F401 - re-exported
    CSV_EOL,
    FORMULA_PREFIXES,
    escape_formulas,
    results_csv,
    table_bytes,
    write_table,
)
from inquire.collection.trends import (  # noqa: F401 - re-exported
    CAMERA_DATE_SOURCES,
    GROUPINGS,
    Grouping,
)
from inquire.collection.verify_db import MARKS, has_round_column, open_verify_db
from inquire.embed.base import Encoder
from inquire.errors import InputError, UnknownNameError
from inquire.stats import wilson_interval  # noqa: F401 - re-exported

log = logging.getLogger(__name__)
S = TypeVar("S")
P = TypeVar("P")
R = TypeVar("R")

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


@dataclass(frozen=True)
class FeedbackResults:
    """What :meth:`Verification.feedback` returns.

    ``results``: the result table (columns of
    :func:`~inquire.collection.search.results_frame`); ``round``: the ranking round's record
    when it was saved, else None.
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
        self.conn: sqlite3.Connection = open_verify_db(coll.folder)  # read-only if it must

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

    def _learnt_vector(
        self,
        search_id: str,
        index: CollectionIndex,
        encoder: Encoder | None,
        model: str,
        request: SearchRequest,
    ) -> tuple[np.ndarray, int, int]:
        """``(vector (d,) float32, n_relevant, n_not_relevant)``: the query vector ``model``
        learns from everyone's consensus marks of the search."""
        from inquire.collection.feedback import feedback_vector
        from inquire.collection.search import query_vector

        if request.text.strip() and encoder is None:
            from inquire.embed.models import load_encoder

            encoder = load_encoder(index.collection.model_id)
        q = query_vector(index, encoder, request.text, request.like)
        c = self.consensus(search_id)
        pos_ids = c.loc[c["label"] == "relevant", "image_id"].to_numpy(np.int64)
        neg_ids = c.loc[c["label"] == "not_relevant", "image_id"].to_numpy(np.int64)

        def vecs(ids: np.ndarray) -> np.ndarray:
            rows = index.rows_of(ids.tolist()) if len(ids) else np.zeros(0, np.int64)
            rows = rows[rows >= 0]  # images that left the collection teach nothing
            return index.vectors(rows) if len(rows) else np.zeros((0, len(q)), np.float32)

        w = feedback_vector(q, vecs(pos_ids), vecs(neg_ids), model)
        return w, len(pos_ids), len(neg_ids)

    def feedback(
        self,
        search_id: str,
        index: CollectionIndex,
        k: int = 50,
        *,
        encoder: Encoder | None = None,
        model: str = "",
        save: bool = False,
        who: str = "",
        shown: int | None = None,
        request: SearchRequest | None = None,
    ) -> FeedbackResults:
        """Relevance feedback: the ``k`` images nobody marked yet, ranked by the query vector
        ``model`` (:data:`~inquire.collection.feedback.FEEDBACK_MODELS`) learns from
        everyone's marks of ``search_id``, within the search's filters.

        ``save=False``: nothing is written; the table is ranked 1..k. ``save=True``: a new
        ranking round is recorded (by ``who``): results up to rank ``max(shown, deepest
        marked rank)`` stay as they were shown (``shown``: how far the person has looked;
        default: the deepest marked rank), the unmarked results after it are dropped (nobody
        saw them), and the ``k`` learnt ones follow; the table holds them with their ranks in
        the saved search, and ``round`` the round's record (``round``, ``after_rank``,
        ``model``, ``n_relevant``, ``n_not_relevant``, ``n_results``).

        ``request``: the saved request in an equivalent form to search with (see
        :meth:`extend`). The write lock is held only to check and write (:meth:`extend`).
        """
        from inquire.collection.feedback import DEFAULT_MODEL, FEEDBACK_MODELS
        from inquire.collection.search import results_frame

        model = model or DEFAULT_MODEL
        if model not in FEEDBACK_MODELS:
            raise UnknownNameError("feedback model", model, FEEDBACK_MODELS)
        if shown is not None and (isinstance(shown, bool) or shown < 0 or shown > 10**9):
            raise InputError(f"shown must be a rank between 0 and 10^9, got {shown}")
        if isinstance(k, bool) or k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        if save and k > 10_000:
            raise InputError(f"a saved round ranks at most 10000 results, got k={k}; give less")
        req = self.request(search_id) if request is None else request
        if not save:
            w, _, _ = self._learnt_vector(search_id, index, encoder, model, req)
            marked = {int(x) for x in self.marks(search_id)["image_id"]}
            df = self._feedback_tail(index, req, w, marked, k)
            df["rank"] = np.arange(1, len(df) + 1)
            return FeedbackResults(df)
        info = self._new_round(search_id, index, encoder, model, who, k, shown, req)
        new = self.results(search_id, offset=info["after_rank"], limit=k)
        df = results_frame(
            index, new["image_id"].to_numpy(np.int64), new["score"].to_numpy(np.float32)
        )
        df["rank"] = new["rank"].to_numpy()
        return FeedbackResults(df, info)

    def _new_round(
        self,
        search_id: str,
        index: CollectionIndex,
        encoder: Encoder | None,
        model: str,
        who: str,
        depth: int,
        shown: int | None,
        req: SearchRequest,
    ) -> dict[str, Any]:
        """Record a ranking round learnt from the marks (see :meth:`feedback`)."""

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
            w, n_pos, n_neg = self._learnt_vector(search_id, index, encoder, model, req)
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
        # A read-only file from before feedback rounds: every result is round 0.
        round_col = "round" if has_round_column(self.conn) else "0 AS round"
        df = pd.read_sql_query(
            f"SELECT rank, image_id, score, {round_col} FROM results WHERE search_id = ? "
            "AND rank > ? "
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

    # -- statistics of the marks (inquire.collection.trends) ------------------------------------
    def consensus(self, search_id: str, who: str | None = None) -> pd.DataFrame:
        """:func:`inquire.collection.trends.consensus` of this search."""
        return trends.consensus(self, search_id, who)

    def efficiency(self, search_id: str, who: str | None = None) -> dict[str, Any]:
        """:func:`inquire.collection.trends.efficiency` of this search."""
        return trends.efficiency(self, search_id, who)

    def agreement(self, search_id: str) -> dict[str, Any]:
        """:func:`inquire.collection.trends.agreement` of this search."""
        return trends.agreement(self, search_id)

    def trend(self, search_id: str, by: str = "month", who: str | None = None) -> pd.DataFrame:
        """:func:`inquire.collection.trends.trend` of this search."""
        return trends.trend(self, search_id, by, who)
