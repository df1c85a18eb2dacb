"""An encoder whose text embeddings were computed elsewhere and stored in a parquet file.

``precomputed:PATH`` reads ``PATH`` with columns ``query_text`` and ``embedding`` (a list of
floats per row) and optionally ``model_id``. Used for INQUIRE's published text embeddings and
the synthetic benchmark. It cannot embed images. :func:`read_text_embeddings` and
:func:`write_text_embeddings` are the reader and writer of that file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inquire._io import atomic_path
from inquire.embed.base import l2_normalize
from inquire.errors import InputError


def write_text_embeddings(
    path: str | os.PathLike[str], texts: Sequence[str], emb: np.ndarray, model_id: str
) -> Path:
    """Write ``texts`` and their embeddings ``emb (n, d)`` (stored float32) as a
    ``precomputed:`` parquet file (``query_text``, ``embedding``, ``model_id``), atomically.
    Returns the path."""
    arr = np.asarray(emb, dtype=np.float32)
    if arr.ndim != 2 or len(arr) != len(texts):
        raise InputError(
            f"text embeddings must be an (n, d) matrix with one row per text: got shape "
            f"{arr.shape} for {len(texts)} texts"
        )
    table = pa.table(
        {
            "query_text": pa.array([str(t) for t in texts], pa.string()),
            "embedding": pa.array(list(arr), pa.list_(pa.float32())),
            "model_id": pa.array([model_id] * len(texts), pa.string()),
        }
    )
    out = Path(path)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return out


def read_text_embeddings(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, str]:
    """``(texts, embeddings (n, d) float32 as stored, model_id)`` of a ``precomputed:`` file
    (``model_id`` is ``""`` when the file has no such column). A missing file or column is an
    :class:`InputError` naming it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(
            f"precomputed text embeddings {str(p)!r} do not exist; pass "
            f"precomputed:PATH to a parquet file with columns query_text, embedding"
        )
    table = pq.read_table(p).to_pandas()
    missing = {"query_text", "embedding"} - set(table.columns)
    if missing:
        raise InputError(f"{str(p)!r} lacks column(s) {sorted(missing)}")
    emb = np.stack(table["embedding"].to_numpy()).astype(np.float32, copy=False)
    model_id = str(table["model_id"].iloc[0]) if "model_id" in table.columns else ""
    return [str(t) for t in table["query_text"]], emb, model_id


class PrecomputedEncoder:
    """Looks texts up in a table; ``encode_images`` is not available."""

    def __init__(
        self, path: str, device: str = "cpu", precision: str = "fp32", batch_size: int = 32
    ) -> None:
        p = Path(path).expanduser()
        texts, raw, revision = read_text_embeddings(p)
        emb = l2_normalize(raw)
        self._rows = {t: i for i, t in enumerate(texts)}
        self._emb = emb
        self.model_id = f"precomputed:{p}"
        self.revision = revision
        self.dim = int(emb.shape[1])
        self.device, self.precision, self.batch_size = device, precision, batch_size

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._rows]
        if missing:
            raise InputError(
                f"{len(missing)} text(s) have no precomputed embedding in {self.model_id}, "
                f"e.g. {missing[0]!r}"
            )
        return self._emb[[self._rows[t] for t in texts]]

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        raise InputError(
            f"{self.model_id} holds text embeddings only; use an image model to embed images"
        )
