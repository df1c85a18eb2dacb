"""An optional faiss index over a collection's embeddings, searched with the filters inside.

The index is built with :func:`inquire.index.ann.build_index` over the collection's embedding
store (faiss row ``i`` = embedding row ``i``, valid or not) and lives beside the shards as
``embeddings/index/collection.faiss`` + ``collection.json``. Which index a collection keeps is
its ``index`` setting (collection meta), one of:

- ``"auto"`` (default): an ``IVF{nlist},Flat`` index once the store holds at least
  ``AUTO_INDEX_ROWS`` rows (``nlist`` the power of two nearest ``4 * sqrt(rows)``), none below;
- ``"none"``: never an index (exact search only);
- a faiss factory string such as ``"IVF4096,Flat"`` or ``"HNSW32"``;
- ``"scale"``: the partitioned IVF-PQ index with exact rescoring
  (:mod:`inquire.index.ivfpq`; the functions at the end of this module), set by
  ``inquire collection index NAME``; updates append to it instead of rebuilding it.

Every create/update/compact that changes the store rebuilds the index (the sidecar's store
fingerprint says whether it still matches); deletions only change the row-validity mask and
keep it. A search loads the index only when it matches the store, so an interrupted update
falls back to exact search until the next update rebuilds it.

Filters are applied inside faiss: the collection's searcher
(:class:`inquire.collection.search.CollectionSearcher`) passes the rows passing the filters
(and the validity mask) as the ``mask`` of :meth:`inquire.index.ann.AnnIndex.search`, an
``IDSelectorBitmap`` in faiss, so faiss only ever scores selected rows and returns the top k
among them, never a top k that is filtered afterwards.

This module takes any object with a collection's ``name``, ``emb_dir``, ``meta()`` and
``store()`` (:class:`CollectionFiles`); ``inquire.collection.store`` imports it, not the
other way round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from inquire.embed.folder import is_embedding_folder
from inquire.errors import InputError

log = logging.getLogger(__name__)

INDEX_NAME = "collection"
# Below this many rows exact filtered search answers in well under a second on two cores
# (see benchmarks/collection_search.py); "auto" builds no index there.
AUTO_INDEX_ROWS = 2_000_000
# Probes per query when the caller gives none (capped at the index's list count).
DEFAULT_NPROBE = 64
# k-means training sample (faiss wants >= 39 points per list; more buys little).
TRAIN_PER_LIST = 64
SETTINGS = ("auto", "none", "scale")


class CollectionFiles(Protocol):
    """What the index needs of a collection (:class:`inquire.collection.store.Collection`)."""

    @property
    def name(self) -> str: ...

    @property
    def emb_dir(self) -> Path: ...

    def meta(self) -> dict[str, str]: ...

    def store(self) -> Any: ...


def check_setting(value: str, dim: int | None = None) -> str:
    """Validate an ``index`` setting: ``"auto"``, ``"none"`` or a faiss factory string.

    A factory string is tried with faiss (for ``dim``-d vectors when known), so a typo fails
    before any image is embedded.
    """
    setting = str(value).strip()
    if setting.lower() in SETTINGS:
        return setting.lower()
    if not setting:
        raise InputError("--index needs 'auto', 'none' or a faiss factory string like IVF4096,Flat")
    from inquire.index.ann import _faiss

    faiss = _faiss()
    try:
        faiss.index_factory(int(dim or 64), setting, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise InputError(
            f"--index {setting!r} is not a faiss factory string faiss can build ({last}); use "
            "'auto', 'none' or e.g. 'IVF4096,Flat', 'IVF1024,PQ32', 'HNSW32'"
        ) from None
    return setting


def auto_factory(n_rows: int) -> str | None:
    """The factory ``"auto"`` picks for ``n_rows`` rows (None: too small for an index)."""
    if n_rows < AUTO_INDEX_ROWS:
        return None
    nlist = 2 ** round(math.log2(4 * math.sqrt(n_rows)))
    return f"IVF{nlist},Flat"


def wanted_factory(setting: str, n_rows: int) -> str | None:
    """The factory string the collection should have for ``setting`` and ``n_rows``."""
    if setting == "none":
        return None
    if setting == "auto":
        return auto_factory(n_rows)
    return setting


def _paths(coll: CollectionFiles) -> tuple[Any, Any]:
    from inquire.index.ann import INDEX_SUFFIX, SIDECAR_SUFFIX, index_dir

    folder = index_dir(coll.emb_dir)
    return folder / f"{INDEX_NAME}{INDEX_SUFFIX}", folder / f"{INDEX_NAME}{SIDECAR_SUFFIX}"


def remove_index(coll: CollectionFiles) -> bool:
    """Delete the collection's index files; True if there were any."""
    found = False
    for p in _paths(coll):
        if p.exists():
            p.unlink()
            found = True
    return found


def _sidecar(coll: CollectionFiles) -> dict[str, Any] | None:
    import json

    path, side = _paths(coll)
    if not path.is_file() or not side.is_file():
        return None
    info: dict[str, Any] = json.loads(side.read_text(encoding="utf-8"))
    return info


def index_info(coll: CollectionFiles) -> dict[str, Any] | None:
    """The sidecar of the collection's faiss index (factory, count, built_at, ...) or None."""
    return _sidecar(coll)


def ensure_index(
    coll: CollectionFiles, progress: Callable[[int, int], None] | None = None, seed: int = 0
) -> str:
    """Build, keep or remove the collection's index so that it matches its setting and store.

    Returns what happened, for the command's summary: ``"none"``, ``"kept FACTORY"``,
    ``"built FACTORY"``, ``"removed"`` or ``"not built: REASON"`` (e.g. fewer rows than an
    IVF index has lists; searches are then exact).
    """
    setting = coll.meta().get("index", "auto")
    if setting == SCALE_SETTING:
        remove_index(coll)
        if not is_embedding_folder(coll.emb_dir):
            return "none"
        return extend_scale_index(coll, progress)
    if has_scale_index(coll):  # the setting moved away from "scale"
        remove_scale_index(coll)
    if not is_embedding_folder(coll.emb_dir):
        return "removed" if remove_index(coll) else "none"
    store = coll.store()
    factory = wanted_factory(setting, len(store))
    if factory is None:
        return "removed" if remove_index(coll) else "none"
    from inquire.index.ann import build_index, store_fingerprint

    info = _sidecar(coll)
    if (
        info is not None
        and info.get("factory") == factory
        and info.get("count") == len(store)
        and info.get("store_fingerprint") == store_fingerprint(store)
    ):
        return f"kept {factory}"
    train = min(len(store), max(TRAIN_PER_LIST * _nlist(factory), 10_000))
    log.info("building index %s over %d rows of collection %s", factory, len(store), coll.name)
    try:
        build_index(
            store,
            factory,
            name=INDEX_NAME,
            train_size=train,
            seed=seed,
            overwrite=True,
            progress=progress,
        )
    except InputError as exc:
        remove_index(coll)
        log.warning("collection %s: index %s not built (%s)", coll.name, factory, exc)
        return f"not built: {exc}"
    return f"built {factory}"


def _nlist(factory: str) -> int:
    import re

    m = re.search(r"IVF(\d+)", factory)
    return int(m.group(1)) if m else 1


def load_index(coll: CollectionFiles, store: Any) -> Any:
    """The collection's index if it has one matching ``store``, else None: an
    :class:`~inquire.index.ann.AnnIndex`, or a :class:`~inquire.index.ivfpq.ScaleIndex`
    where the setting is ``"scale"``.

    A stale index (the store changed since it was built, e.g. an interrupted update) is not
    used: searches are exact until ``inquire collection update`` rebuilds it.
    """
    if coll.meta().get("index") == SCALE_SETTING:
        return load_scale_index(coll, store)
    if _sidecar(coll) is None:
        return None
    from inquire.index.ann import AnnIndex, StaleIndexError

    try:
        return AnnIndex.load(store, INDEX_NAME)
    except StaleIndexError as exc:
        log.warning(
            "collection %s: its faiss index does not match the embeddings (%s); searching "
            "exactly until `inquire collection update %s` rebuilds it",
            coll.name,
            str(exc).split(";")[0],
            coll.name,
        )
        return None


# -- the partitioned IVF-PQ index (setting "scale") -------------------------------------------
# Where it lives, how updates extend it, how searches load it, what ``collection info`` shows
# (the index itself: inquire.index.ivfpq). Updates append the codes of new rows (the last
# partition grows, then new partitions open); deletions are the validity mask; a compaction
# rewrites the shards, so the index is rebuilt with its own settings (compaction asks for it).

SCALE_SETTING = "scale"
SCALE_FOLDER = "scale_index"


def scale_dir(coll: Any) -> Path:
    """The collection's partitioned-index folder."""
    return Path(coll.emb_dir).parent / SCALE_FOLDER


def has_scale_index(coll: Any) -> bool:
    from inquire.index.ivfpq import MANIFEST

    return (scale_dir(coll) / MANIFEST).is_file()


def extend_scale_index(coll: Any, progress: Callable[[int, int], None] | None = None) -> str:
    """Bring the index up to the store: append new rows, or rebuild after a compaction.

    Returns what happened, for the update's summary."""
    from inquire.index import ivfpq

    folder = scale_dir(coll)
    broken = f"run `inquire collection index {coll.name} --rebuild` (searches are exact)"
    try:
        man = ivfpq.read_manifest(folder)
    except InputError as exc:
        log.warning("collection %s: %s", coll.name, exc)
        return f"not extended, the index is unreadable: {broken}"
    if man is None:
        return f"not built: run `inquire collection index {coll.name}` (searches are exact)"
    store = coll.store()
    before = man.rows
    try:
        man = ivfpq.build(store, folder, progress=progress)
    except RuntimeError as exc:  # faiss could not read the partition being extended
        log.warning("collection %s: index not extended (%s)", coll.name, exc)
        return f"not extended, a partition file is unreadable: {broken}"
    except ivfpq.StaleScaleIndexError:
        log.info("collection %s: shards rewritten; rebuilding its scale index", coll.name)
        man = ivfpq.build(store, folder, man.settings, rebuild=True, progress=progress)
        ivfpq.record_recall(store, folder)  # over the store's rows (no validity mask here)
        return f"rebuilt {man.factory} ({len(man.partitions)} partitions, {man.rows:,} rows)"
    if man.rows == before:
        return f"kept {man.factory} ({len(man.partitions)} partitions)"
    added = man.rows - before
    ivfpq.record_recall(store, folder)  # over the store's rows (no validity mask here)
    return f"extended {man.factory} by {added:,} rows ({len(man.partitions)} partitions)"


def load_scale_index(coll: Any, store: Any) -> Any:
    """The collection's :class:`~inquire.index.ivfpq.ScaleIndex` over ``store``, or None
    when it has none or it no longer matches the shards (searches are then exact)."""
    if not has_scale_index(coll):
        return None
    from inquire.index.ivfpq import ScaleIndex, StaleScaleIndexError

    try:
        return ScaleIndex.open(store, scale_dir(coll))
    except StaleScaleIndexError as exc:
        log.warning("collection %s: %s; searching exactly until it is updated", coll.name, exc)
        return None
    except InputError as exc:  # a missing, truncated or foreign index file
        log.warning(
            "collection %s: %s; searching exactly until `inquire collection index %s --rebuild`",
            coll.name,
            exc,
            coll.name,
        )
        return None


def remove_scale_index(coll: Any) -> bool:
    import shutil

    folder = scale_dir(coll)
    if folder.is_dir():
        shutil.rmtree(folder)
        return True
    return False


def scale_info(coll: Any) -> dict[str, Any] | None:
    """What ``collection info`` shows of the index: kind, partitions, rows, bytes per photo
    (index files on disk / rows indexed), settings and the recall measured at build time."""
    from inquire.index.ivfpq import index_file_bytes, read_manifest

    folder = scale_dir(coll)
    try:
        man = read_manifest(folder) if folder.is_dir() else None
    except InputError as exc:
        return {"error": f"{exc} (`inquire collection index {coll.name} --rebuild`)"}
    if man is None:
        return None
    size = index_file_bytes(folder)
    return {
        "kind": f"partitioned {man.factory} + exact rescoring",
        "partitions": len(man.partitions),
        "rows": man.rows,
        "index_bytes": size,
        "bytes_per_photo": round(size / max(man.rows, 1), 1),
        "settings": dict(man.settings.__dict__),
        "recall": dict(man.recall),
    }
