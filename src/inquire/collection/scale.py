"""``inquire collection index NAME``: build, extend or remove a collection's partitioned index.

One library call, :func:`index_collection`; the index itself is :mod:`inquire.index.ivfpq`
and its place in the collection the end of :mod:`inquire.collection.ann`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from inquire._lock import writer_lock
from inquire.cache import transaction
from inquire.collection.ann import (
    SCALE_SETTING,
    measure_recall,
    remove_index,
    remove_scale_index,
    scale_dir,
    scale_info,
)
from inquire.collection.store import open_collection
from inquire.errors import InputError

log = logging.getLogger(__name__)


def index_collection(
    name: str,
    root: str | os.PathLike[str] | None = None,
    options: dict[str, int] | None = None,
    *,
    rebuild: bool = False,
    off: bool = False,
    runner: Any = None,
    progress: Callable[[int, int], None] | None = None,
    lock_timeout: float | None = None,
) -> dict[str, Any] | None:
    """Build (or extend) the partitioned IVF-PQ index of collection ``name``.

    ``options``: :class:`~inquire.index.ivfpq.ScaleSettings` fields to set (``nlist``,
    ``pq_m``, ``partition_rows``, ``nprobe``, ``rescore``, ``exact_below``); the rest keep the
    index's own values (or the defaults for a new index), a rebuild included; changing how it
    is built (``nlist``, ``pq_m``, ``partition_rows``) needs ``rebuild``; ``rebuild``: retrain
    and re-encode everything; ``off``: remove the index and go back to the ``auto`` setting;
    ``runner``: how partitions are encoded (:func:`inquire.index.ray_serve.run_ray`: Ray
    Data tasks). An interrupted build resumes where it stopped when run again. Measures
    recall@100 against exact search and records it. Returns
    :func:`inquire.collection.ann.scale_info` (None after ``off``).
    """
    from inquire.index import ivfpq

    coll = open_collection(name, root)
    try:
        with writer_lock(coll.folder, f"collection {name!r}", lock_timeout):
            if off:
                remove_scale_index(coll)
                with transaction(coll.conn) as conn:
                    coll.set_meta(conn, index="auto")
                return None
            cindex = coll.index()
            if cindex.valid.sum() == 0:
                raise InputError(f"collection {name!r} has no searchable images to index")
            folder = scale_dir(coll)
            try:
                man = ivfpq.read_manifest(folder)  # its settings are kept by a rebuild too
            except ivfpq.BrokenScaleIndexError as exc:
                if not rebuild:
                    raise InputError(f"{exc} (add --rebuild)") from None
                man = None  # unreadable: rebuilt with the defaults and the options given
            base = man.settings if man is not None else ivfpq.ScaleSettings()
            try:
                settings = replace(base, **(options or {})).check(cindex.store.dim)
            except TypeError as exc:
                raise InputError(f"unknown index option: {exc}") from None
            try:
                ivfpq.build(
                    cindex.store,
                    folder,
                    settings,
                    rebuild=rebuild,
                    runner=runner,
                    progress=progress,
                )
            except ivfpq.StaleScaleIndexError as exc:
                raise InputError(f"{exc} (add --rebuild)") from None
            except RuntimeError as exc:  # faiss could not read the partition being extended
                raise InputError(
                    f"the index in {str(folder)!r} has an unreadable partition file "
                    f"({ivfpq._faiss_reason(exc)}); add --rebuild"
                ) from None
            with transaction(coll.conn) as conn:
                coll.set_meta(conn, index=SCALE_SETTING)
            remove_index(coll)  # the partitioned index replaces a single faiss index
            scale = ivfpq.ScaleIndex.open(cindex.store, folder, ids=cindex.image_id)
            try:
                man = scale.manifest
                man.recall = measure_recall(scale, cindex.valid, cindex.image_id)
                ivfpq.write_manifest(folder, man)
            finally:
                scale.close()
            log.info("collection %s: index recall %s", name, man.recall)
            return scale_info(coll)
    finally:
        coll.close()
