"""Text embeddings cached on disk by (model id, revision, precision, text).

One SQLite file, ``config.cache_dir("text_emb")/text_emb.sqlite``; each row holds a float32
vector as raw little-endian bytes. Encoders with an empty revision (nothing to pin the
weights) are never cached: their outputs could change under the same name.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inquire import config
from inquire.embed.base import Encoder
from inquire.errors import InputError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS text_emb (
    model_id TEXT NOT NULL,
    revision TEXT NOT NULL,
    precision TEXT NOT NULL,
    text TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (model_id, revision, precision, text)
)
"""


def cache_path() -> Path:
    """Where the text-embedding cache lives."""
    return config.cache_dir("text_emb") / "text_emb.sqlite"


def text_embeddings(
    encoder: Encoder, texts: Sequence[str], cache: bool = True, path: Path | None = None
) -> np.ndarray:
    """``(n, d) float32`` L2-normalised embeddings of ``texts``, computed once per model.

    Texts already in the cache for ``encoder``'s (model id, revision, precision) are read
    back; the others are embedded in one ``encode_text`` call and stored.
    """
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise InputError("text_embeddings takes a list of strings")
    precision = str(getattr(encoder, "precision", ""))
    if not cache or not encoder.revision:
        if cache:
            log.info("not caching text embeddings of %s: it has no revision", encoder.model_id)
        return encoder.encode_text(texts)
    key = (encoder.model_id, encoder.revision, precision)
    db = path or cache_path()
    # closing(): a connection's own context manager only commits, it never closes.
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con, con:
        con.execute(_SCHEMA)
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(texts))
        for lo in range(0, len(unique), 500):  # SQLite limits the number of parameters
            chunk = unique[lo : lo + 500]
            rows = con.execute(
                "SELECT text, dim, vec FROM text_emb WHERE model_id=? AND revision=? AND "
                f"precision=? AND text IN ({','.join('?' * len(chunk))})",
                (*key, *chunk),
            ).fetchall()
            for text, dim, vec in rows:
                found[text] = np.frombuffer(vec, dtype="<f4").reshape(dim)
        missing = [t for t in unique if t not in found]
        if missing:
            emb = np.asarray(encoder.encode_text(missing), dtype=np.float32)
            con.executemany(
                "INSERT OR REPLACE INTO text_emb VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (*key, t, int(e.shape[0]), e.astype("<f4").tobytes())
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
