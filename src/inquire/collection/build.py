"""Create and update a collection: the entry points that check their arguments, take the
collection's writer lock and run the ingest steps (:func:`inquire.collection.ingest.sync`).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from inquire._lock import writer_lock
from inquire.cache import transaction
from inquire.collection.ann import check_setting
from inquire.collection.ingest import UpdateStats, sync
from inquire.collection.metadata import InatMetadata
from inquire.collection.store import Collection, _collection_folder, open_collection
from inquire.embed.base import Encoder
from inquire.errors import InputError

log = logging.getLogger(__name__)


def _load_encoder(model_id: str, batch_size: int) -> Encoder:
    from inquire.embed.models import load_encoder

    return load_encoder(model_id, batch_size=batch_size)


def create_collection(
    name: str,
    images: str | os.PathLike[str],
    model_id: str,
    metadata: str | os.PathLike[str] | None = None,
    *,
    encoder: Encoder | None = None,
    root: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    chunk_size: int = 2048,
    progress: bool = False,
    workers: int = 2,
    index: str = "auto",
    lock_timeout: float | None = None,
) -> tuple[Collection, UpdateStats]:
    """Create collection ``name`` from the image files under ``images`` and embed them.

    ``metadata``: an iNat24-style ``train.json`` (else EXIF and file times are used).
    ``encoder``: an already-loaded encoder (else ``load_encoder(model_id)``).
    Images are decoded in ``workers`` processes (the embedding pipeline's reader) and encoded
    ``batch_size`` at a time. ``index``: ``"auto"``, ``"none"`` or a faiss factory string
    (see :mod:`inquire.collection.ann`). The work is committed every ``chunk_size`` images,
    so an interrupted run is resumed by :func:`update_collection`. ``lock_timeout``: see
    :func:`update_collection`.
    """
    check_work_sizes(batch_size, workers, chunk_size)
    folder = _collection_folder(name, root)
    images_root = Path(images).expanduser().resolve()
    if not images_root.is_dir():
        raise InputError(
            f"images folder {str(images_root)!r} does not exist or is not a folder; pass "
            "--images with the folder that holds the photos"
        )
    if (folder / "collection.db").is_file():
        raise InputError(
            f"collection {name!r} already exists at {str(folder)!r}; run `inquire collection "
            f"update {name}` to pick up changes, or `inquire collection delete {name}` first"
        )
    meta_path = Path(metadata).expanduser().resolve() if metadata is not None else None
    inat = InatMetadata(meta_path) if meta_path is not None else None
    enc = encoder or _load_encoder(model_id, batch_size)
    index_setting = check_setting(index, enc.dim)
    with writer_lock(folder, f"collection {name!r}", lock_timeout):
        if (folder / "collection.db").is_file():  # created meanwhile by another process
            raise InputError(
                f"collection {name!r} was created at {str(folder)!r} by another process "
                f"meanwhile; run `inquire collection update {name}` to pick up changes"
            )
        coll = Collection(folder)
        try:
            with transaction(coll.conn) as conn:
                coll.set_meta(
                    conn,
                    model_id=enc.model_id,
                    revision=enc.revision,
                    dim=enc.dim,
                    images_root=str(images_root),
                    metadata=str(meta_path) if meta_path else "",
                    generation=0,
                    index=index_setting,
                )
            stats = sync(coll, enc, inat, batch_size, chunk_size, progress, workers)
        except BaseException:
            _remove_if_empty(coll)
            raise
    return coll, stats


def check_work_sizes(batch_size: int, workers: int, chunk_size: int) -> None:
    """Refuse batch, worker and chunk counts no run could use, before anything is written."""
    for flag, value, low in (
        ("--batch-size", batch_size, 1),
        ("--workers", workers, 0),
        ("chunk_size", chunk_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(
                f"{flag} {value!r} is not allowed: expected a whole number >= {low}"
                + (" (0: decode in this process)" if flag == "--workers" else "")
            )


def _remove_if_empty(coll: Collection) -> None:
    """Undo a create that failed before any image was committed: remove its folder, so a
    retry starts afresh (a create that committed images is kept: ``update`` resumes it)."""
    try:
        row = coll.conn.execute("SELECT COUNT(*) AS n FROM images").fetchone()
        empty = int(row["n"]) == 0
    except Exception:  # the database itself failed (disk full, ...): nothing to keep
        empty = True
    if not empty:
        return
    coll.close()
    shutil.rmtree(coll.folder, ignore_errors=True)
    log.info("removed the empty collection folder %s after a failed create", coll.folder)


def update_collection(
    name: str,
    *,
    images: str | os.PathLike[str] | None = None,
    metadata: str | os.PathLike[str] | None = None,
    encoder: Encoder | None = None,
    root: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    chunk_size: int = 2048,
    progress: bool = False,
    workers: int = 2,
    index: str | None = None,
    lock_timeout: float | None = None,
) -> tuple[Collection, UpdateStats]:
    """Bring collection ``name`` up to date with its images folder.

    New files are embedded; files whose size or mtime changed are hashed and re-embedded only
    if their content changed; deleted files leave the results. An unchanged file is never
    sent to the encoder. ``images``/``metadata`` re-point the folder or train.json;
    ``index`` changes the index setting (None keeps it). The faiss index, if any, is rebuilt
    when the embeddings changed.

    A collection has one writer at a time (create, update, compact, delete): while another
    process writes it, this call waits (a warning names that process; at most
    ``lock_timeout`` seconds when given, then :class:`~inquire.errors.BusyError`) and then
    scans the folder afresh, so nothing that process embedded is embedded again. Searches
    need no lock and keep working during an update.
    """
    check_work_sizes(batch_size, workers, chunk_size)
    coll = open_collection(name, root)
    with writer_lock(coll.folder, f"collection {name!r}", lock_timeout):
        return _update_locked(
            coll, name, images, metadata, encoder, batch_size, chunk_size, progress, workers, index
        )


def _update_locked(
    coll: Collection,
    name: str,
    images: str | os.PathLike[str] | None,
    metadata: str | os.PathLike[str] | None,
    encoder: Encoder | None,
    batch_size: int,
    chunk_size: int,
    progress: bool,
    workers: int,
    index: str | None,
) -> tuple[Collection, UpdateStats]:
    meta = coll.meta()
    index_setting = check_setting(index, int(meta["dim"])) if index is not None else None
    with transaction(coll.conn) as conn:
        if index_setting is not None:
            coll.set_meta(conn, index=index_setting)
        if images is not None:
            new_root = Path(images).expanduser().resolve()
            if not new_root.is_dir():
                raise InputError(f"images folder {str(new_root)!r} does not exist")
            coll.set_meta(conn, images_root=str(new_root))
        if metadata is not None:
            coll.set_meta(conn, metadata=str(Path(metadata).expanduser().resolve()))
    meta = coll.meta()
    if not Path(meta["images_root"]).is_dir():
        raise InputError(
            f"the images folder of collection {name!r}, {meta['images_root']!r}, is gone; pass "
            "--images with its new location"
        )
    inat = InatMetadata(meta["metadata"]) if meta.get("metadata") else None
    enc = encoder or _load_encoder(meta["model_id"], batch_size)
    if (enc.model_id, enc.revision) != (meta["model_id"], meta["revision"]):
        raise InputError(
            f"collection {name!r} was embedded with {meta['model_id']} (revision "
            f"{meta['revision']!r}) but the encoder is {enc.model_id} (revision {enc.revision!r}); "
            "vectors of two models cannot be mixed: create a new collection for the new model"
        )
    stats = sync(coll, enc, inat, batch_size, chunk_size, progress, workers)
    return coll, stats


__all__ = ["check_work_sizes", "create_collection", "update_collection"]
