"""``verify.db``, the saved searches, rankings and marks of one collection: its tables and
their upgrades (:func:`inquire.cache.migrate`).

``verify.db`` (SQLite, WAL) in the collection folder holds

- ``searches``: a search request (text, examples, filters) keyed by a hash of the request and
  the model, so everyone who runs the same search verifies the same ranking;
- ``results``: the ranking as it was shown (rank, image id, score, the round that placed it),
  extended on demand as people go further down (existing ranks never move, even after a
  collection update);
- ``marks``: one mark per (search, image, person): one of :data:`MARKS`, with the time it
  was made (UTC). A new mark by the same person replaces theirs;
- ``rounds``: each time the ranking learnt from the marks (relevance feedback, see
  :mod:`inquire.collection.feedback`): the model, the marks it learnt from, the rank after
  which its ranking starts, and its query vector. Round 0 is the first search.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from inquire.cache import migrate
from inquire.collection.store import connect

MARKS = ("relevant", "not_relevant", "unsure")

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


def _add_round_column(conn: sqlite3.Connection) -> None:
    """Files written before relevance feedback have no ``results.round`` (all round 0)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    if "round" not in cols:
        conn.execute("ALTER TABLE results ADD COLUMN round INTEGER NOT NULL DEFAULT 0")


# The upgrades of verify.db, in order (PRAGMA user_version = how many were applied).
MIGRATIONS = (_add_round_column,)


def open_verify_db(folder: Path) -> sqlite3.Connection:
    """The ``verify.db`` of the collection in ``folder``, created or upgraded as needed;
    read-only (and not upgraded) when the folder cannot be written."""
    path = folder / "verify.db"
    conn = connect(path, SCHEMA)
    try:
        migrate(conn, MIGRATIONS, f"verification database {str(path)!r}")
    except BaseException:
        conn.close()
        raise
    return conn


def has_round_column(conn: sqlite3.Connection) -> bool:
    """Whether ``results`` records rounds (a read-only file from before feedback does not)."""
    return "round" in {r[1] for r in conn.execute("PRAGMA table_info(results)")}
