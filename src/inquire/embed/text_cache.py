"""Text embeddings cached on disk by the model's :class:`~inquire.cache.OutputKey` and the text.

One SQLite file, ``config.cache_dir("text_emb")/text_emb.sqlite`` (set up by
:func:`inquire.cache.connect`), table ``text_emb_v2``: the key columns (model, revision,
precision, protocol; the protocol is empty for text encoders), the text, and the float32
vector as raw little-endian bytes. Encoders with an empty revision (nothing to pin the
weights) are never cached: their outputs could change under the same name.

Rows of the earlier table ``text_emb`` (keyed with an empty precision for encoders that
declare none) are not read; those embeddings are computed again once. The file's layout is
versioned like every SQLite file of inquire (:func:`inquire.cache.migrate`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inquire import config
from inquire.cache import (
    OutputKey,
    connect,
    key_columns_sql,
    key_match_sql,
    migrate,
    transaction,
)
from inquire.embed.base import Encoder
from inquire.errors import InputError

log = logging.getLogger(__name__)

TABLE = "text_emb_v2"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    {key_columns_sql()},
    text TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (model, revision, precision, protocol, text)
) WITHOUT ROWID
"""


def _create_table(con: sqlite3.Connection) -> None:
    con.execute(_SCHEMA)


# The upgrades of the cache file, in order (PRAGMA user_version = how many were applied,
# :func:`inquire.cache.migrate`): 1 creates the current table.
MIGRATIONS = (_create_table,)


def cache_path() -> Path:
    """Where the text-embedding cache lives."""
    return config.cache_dir("text_emb") / "text_emb.sqlite"


def text_embeddings(
    encoder: Encoder, texts: Sequence[str], cache: bool = True, path: Path | None = None
) -> np.ndarray:
    """``(n, d) float32`` L2-normalised embeddings of ``texts``, computed once per model.

    Texts already in the cache under ``encoder``'s key (:meth:`OutputKey.of`: model id,
    revision, precision) are read back; the others are embedded in one ``encode_text`` call
    and stored. ``path``: the SQLite file (default :func:`cache_path`).
    """
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise InputError("text_embeddings takes a list of strings")
    key = OutputKey.of(encoder)
    if not cache or not key.pinned:
        if cache:
            log.info("not caching text embeddings of %s: it has no revision", encoder.model_id)
        return encoder.encode_text(texts)
    db = path or cache_path()
    with contextlib.closing(connect(db, what="text-embedding cache")) as con:
        migrate(con, MIGRATIONS, f"text-embedding cache {str(db)!r}")
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(texts))
        for lo in range(0, len(unique), 500):  # SQLite limits the number of parameters
            chunk = unique[lo : lo + 500]
            rows = con.execute(
                f"SELECT text, dim, vec FROM {TABLE} WHERE {key_match_sql()} AND "
                f"text IN ({','.join('?' * len(chunk))})",
                (*key.values, *chunk),
            ).fetchall()
            for text, dim, vec in rows:
                found[text] = np.frombuffer(vec, dtype="<f4").reshape(dim)
        missing = [t for t in unique if t not in found]
        if missing:
            emb = np.asarray(encoder.encode_text(missing), dtype=np.float32)
            with transaction(con):
                con.executemany(
                    f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (*key.values, t, int(e.shape[0]), e.astype("<f4").tobytes())
                        for t, e in zip(missing, emb, strict=True)
                    ],
                )
            found.update(zip(missing, emb, strict=True))
        log.info(
            "text embeddings: %d cached, %d computed", len(unique) - len(missing), len(missing)
        )
    if not texts:
        return np.zeros((0, encoder.dim), np.float32)
    return np.stack([found[t] for t in texts]).astype(np.float32)
