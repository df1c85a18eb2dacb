"""What a person needs to know about a collection, as data (``inquire collection info``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class CollectionInfo:
    """A collection's state.

    ``meta``: its settings (``images_root``, ``model_id``, ``revision``, ``dim``, ``metadata``,
    ``index``, ``generation``, ...); ``counts``: images by status (``ok``, ``deleted``,
    ``unreadable``); ``date_sources``: searchable images by where their date came from
    (``exif``, ``inat``, ``mtime``; ``""``: no date), most first; ``index``: the faiss
    index's sidecar (factory, count, built_at) or None; ``searches``: the saved searches
    (:meth:`~inquire.collection.verify.Verification.searches`).
    """

    name: str
    folder: Path
    meta: dict[str, Any]
    counts: dict[str, int]
    date_sources: dict[str, int]
    index: dict[str, Any] | None
    searches: pd.DataFrame
    #: The partitioned IVF-PQ index (setting "scale"): kind, partitions, rows, index_bytes,
    #: bytes_per_photo, settings, recall (:func:`inquire.collection.ann.scale_info`).
    scale: dict[str, Any] | None = None


def collection_info(name: str, root: str | os.PathLike[str] | None = None) -> CollectionInfo:
    """Read the state of the collection ``name`` (under ``root`` or the cache); read-only."""
    from inquire.collection.ann import index_info, scale_info
    from inquire.collection.store import open_collection
    from inquire.collection.verify import Verification

    with open_collection(name, root) as c:
        meta = c.meta()
        counts = c.counts()
        dated = {
            str(r[0]): int(r[1])
            for r in c.conn.execute(
                "SELECT COALESCE(date_source, ''), COUNT(*) FROM images WHERE status = 'ok' "
                "GROUP BY 1"
            )
        }
        ann = index_info(c)
        scale = scale_info(c)
        folder = c.folder
        with Verification(c) as v:
            searches = v.searches()
    return CollectionInfo(
        name,
        folder,
        dict(meta),
        dict(counts),
        dict(sorted(dated.items(), key=lambda kv: -kv[1])),
        ann,
        searches,
        scale,
    )
