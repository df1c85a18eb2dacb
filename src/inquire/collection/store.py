"""A collection: image files + their embeddings + metadata, kept in one cache folder.

Layout of ``config.cache_dir("collections", NAME)``::

    collection.db                  SQLite (WAL): meta (key/value) and images (one row per file)
    embeddings/img_emb/img_emb_{i}.npy        (n_i, d) float16, L2-normalised rows
    embeddings/metadata/metadata_{i}.parquet  image_path, image_id (clip-retrieval layout)
    rows.parquet                   per embedding row: image_id, valid, date, lat, lon, taxonomy
                                   (a snapshot of the database the search reads; rebuilt from
                                   the database whenever its generation is stale)
    manifest.json                  name, model, revision, dim, generation, counts

Updates never rewrite shards: each run appends new shards, and an embedding row is VALID only
while the ``images`` row of its file still points at it (``shard``, ``row``). A changed file
gets a new row in a new shard (its old row becomes invalid); a deleted file is kept in the
database with status ``deleted`` (so verified marks keep their metadata) and has no valid row.
:func:`compact` rewrites the shards without the invalid rows when they pile up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

import numpy as np
import pandas as pd

from inquire import config
from inquire._io import atomic_open, atomic_path, write_json
from inquire._lock import try_writer_lock, writer_lock
from inquire.cache import connect as connect_db
from inquire.cache import transaction
from inquire.collection.ann import check_setting, ensure_index, load_index
from inquire.collection.embedding import embed_files
from inquire.collection.metadata import FIELDS, RANKS, InatMetadata, describe
from inquire.embed.base import Encoder
from inquire.embed.images import IMAGE_SUFFIXES
from inquire.embed.layout import (
    EMB_DIR,
    META_DIR,
    emb_file_name,
    list_shards,
    meta_file_name,
    shard_numbers,
)
from inquire.errors import InputError, UnknownNameError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TAXON_COLUMNS = ("taxon", *RANKS)
NO_DAY = np.iinfo(np.int32).min  # rows without a date never pass a date filter

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    image_id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,          -- relative to the images root, '/'-separated
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha1 TEXT,
    status TEXT NOT NULL,               -- ok | unreadable | deleted
    shard INTEGER, row INTEGER,         -- embedding row while status = ok
    source_id INTEGER,
    date TEXT, date_source TEXT, lat REAL, lon REAL,
    taxon_id INTEGER, taxon TEXT, kingdom TEXT, phylum TEXT, class TEXT, "order" TEXT,
    family TEXT, genus TEXT, taxon_source TEXT,
    updated TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX IF NOT EXISTS images_sha1 ON images (sha1);
"""
_META_FIELDS = FIELDS  # the metadata columns of the images table


@dataclass
class UpdateStats:
    """What a create/update run did (counts of files)."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    touched: int = 0  # size or mtime changed but the content hash did not: nothing re-embedded
    reused: int = 0  # embedding copied from an identical file already embedded
    embedded: int = 0  # images sent to the encoder
    unreadable: int = 0
    shards_written: list[int] = field(default_factory=list)
    index: str = "none"  # what happened to the faiss index (inquire.collection.ann)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``df`` as dicts (column name -> value)."""
    return [{str(k): v for k, v in row.items()} for row in df.to_dict("records")]


def collections_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding all collections (``cache_dir("collections")`` by default)."""
    if root is None:
        return config.cache_dir("collections")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_collections(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the collections under ``root``."""
    base = collections_root(root)
    return sorted(p.name for p in base.iterdir() if (p / "collection.db").is_file())


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(
            f"collection name {name!r} is not allowed; use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def connect(path: Path) -> sqlite3.Connection:
    """A collection database (:func:`inquire.cache.connect`: WAL, waits for writers), rows
    as ``sqlite3.Row``."""
    return connect_db(path, timeout_s=30, row_factory=sqlite3.Row, what="collection database")


def file_sha1(path: Path) -> str:
    """SHA-1 of the file's bytes (hex)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inside_root(root_real: Path, path: Path) -> bool:
    """Whether ``path``, symlinks resolved, lies under ``root_real`` (a real path)."""
    return Path(os.path.realpath(path)).is_relative_to(root_real)


def scan_images(images_root: Path) -> dict[str, tuple[int, int]]:
    """Image files under ``images_root`` (recursively; hidden files and folders skipped).

    Returns ``{relative POSIX path: (size bytes, mtime ns)}`` in sorted path order. Only
    regular files count; a symlink counts only if its target lies inside the folder too, and
    symlinked folders are not entered, so nothing outside the folder is ever read (its
    bytes, its metadata or its size).
    """
    found: dict[str, tuple[int, int]] = {}
    root_real = Path(os.path.realpath(images_root))
    for dirpath, dirnames, filenames in os.walk(images_root):  # does not follow links
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if fname.startswith(".") or Path(fname).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            full = Path(dirpath) / fname
            if full.is_symlink() and not inside_root(root_real, full):
                log.warning("skipped %s: it links to a file outside the images folder", full)
                continue
            try:
                st = full.stat()
            except OSError:  # vanished or a broken link: not part of the collection
                continue
            if not S_ISREG(st.st_mode):  # a pipe or device would block or never end
                continue
            found[full.relative_to(images_root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return dict(sorted(found.items()))


class Collection:
    """An existing collection folder. Use :func:`open_collection` or :func:`create_collection`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = folder.name
        self.db_path = folder / "collection.db"
        self.emb_dir = folder / "embeddings"
        self.rows_path = folder / "rows.parquet"
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.db_path)
            self._conn.executescript(SCHEMA)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- meta ----------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self.conn.execute("SELECT key, value FROM meta")}

    def set_meta(self, conn: sqlite3.Connection, **values: Any) -> None:
        conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    @property
    def model_id(self) -> str:
        return self.meta()["model_id"]

    @property
    def images_root(self) -> Path:
        return Path(self.meta()["images_root"])

    @property
    def generation(self) -> int:
        return int(self.meta().get("generation", "0"))

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) AS n FROM images GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    # -- images --------------------------------------------------------------------------------
    def images(self, image_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Rows of the images table (all, or those of ``image_ids``, in that order), with an
        absolute ``abspath`` column."""
        cols = "image_id, path, status, date, date_source, lat, lon, taxon_id, " + ", ".join(
            f'"{c}"' for c in TAXON_COLUMNS
        )
        if image_ids is None:
            df = pd.read_sql_query(f"SELECT {cols} FROM images ORDER BY image_id", self.conn)
        else:
            ids = [int(i) for i in image_ids]
            frames = []
            for lo in range(0, len(ids), 900):  # SQLite's bound-parameter limit
                part = ids[lo : lo + 900]
                q = f"SELECT {cols} FROM images WHERE image_id IN ({','.join('?' * len(part))})"
                frames.append(pd.read_sql_query(q, self.conn, params=part))
            df = (
                pd.concat(frames, ignore_index=True)
                if frames
                else pd.read_sql_query(f"SELECT {cols} FROM images WHERE 0", self.conn)
            )
            df = df.set_index("image_id").reindex(ids).reset_index()
        root = self.images_root
        df["abspath"] = [str(root / p) if isinstance(p, str) else None for p in df["path"]]
        return df

    def image_id_for_path(self, path: str | os.PathLike[str]) -> int | None:
        """The id of the file at ``path`` (absolute, or relative to the images root)."""
        p = Path(path).expanduser()
        if p.is_absolute() or p.exists():
            try:
                rel = p.resolve().relative_to(self.images_root.resolve()).as_posix()
            except ValueError:
                return None
        else:
            rel = p.as_posix()
        row = self.conn.execute(
            "SELECT image_id FROM images WHERE path = ? AND status = 'ok'", (rel,)
        ).fetchone()
        return None if row is None else int(row["image_id"])

    # -- the search snapshot -------------------------------------------------------------------
    def store(self) -> Any:
        from inquire.embed.store import EmbeddingStore

        return EmbeddingStore(self.emb_dir)

    def write_rows_snapshot(self, write: bool = True, store: Any = None) -> pd.DataFrame:
        """Rebuild ``rows.parquet`` (one row per embedding row) from the database; return it.

        ``write=False`` only builds it (a reader while another process holds the writer lock
        must not replace the files that writer is about to write). ``store``: the embedding
        store whose rows to describe (default: the shards on disk now)."""
        gen = self.generation
        if store is None and not (self.emb_dir / "img_emb").is_dir():
            n, offsets, shard_pos = 0, np.zeros(1, np.int64), {}
        else:
            store = store if store is not None else self.store()
            n, offsets = len(store), store.offsets
            shard_pos = {s: int(offsets[j]) for j, s in enumerate(store.shard_indices)}
        cols = ", ".join(f'"{c}"' for c in TAXON_COLUMNS)
        df = pd.read_sql_query(
            f"SELECT image_id, path, shard, row, date, lat, lon, {cols} FROM images "
            "WHERE status = 'ok'",
            self.conn,
        )
        image_id = np.full(n, -1, np.int64)
        days = np.full(n, NO_DAY, np.int32)
        lat = np.full(n, np.nan, np.float32)
        lon = np.full(n, np.nan, np.float32)
        known = df["shard"].map(shard_pos)
        df = df[known.notna()]
        pos = df["shard"].map(shard_pos).to_numpy(np.int64) + df["row"].to_numpy(np.int64)
        image_id[pos] = df["image_id"].to_numpy(np.int64)
        d = pd.to_datetime(df["date"].str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
        has = d.notna().to_numpy()
        days[pos[has]] = (d[has].to_numpy("datetime64[D]").astype(np.int64)).astype(np.int32)
        lat[pos] = df["lat"].to_numpy(np.float32, na_value=np.nan)
        lon[pos] = df["lon"].to_numpy(np.float32, na_value=np.nan)
        out = pd.DataFrame({"image_id": image_id, "days": days, "lat": lat, "lon": lon})
        for c in TAXON_COLUMNS:
            col = np.full(n, None, object)
            col[pos] = df[c].to_numpy(object)
            out[c] = pd.Categorical(col)
        folder = np.full(n, None, object)
        folder[pos] = [p.rpartition("/")[0] for p in df["path"]]
        out["folder"] = pd.Categorical(folder)
        if not write:
            return out
        with atomic_path(self.rows_path) as tmp:
            out.to_parquet(tmp, index=False)
        write_json(
            self.folder / "manifest.json",
            {
                "name": self.name,
                "generation": gen,
                "rows": n,
                "valid_rows": int((image_id >= 0).sum()),
                **{k: v for k, v in self.meta().items() if k != "generation"},
            },
        )
        return out

    def _rows_snapshot(self, store: Any = None) -> pd.DataFrame:
        """A fresh snapshot, also written to disk unless another process is writing."""
        with try_writer_lock(self.folder) as free:
            return self.write_rows_snapshot(write=free, store=store)

    def index(self) -> CollectionIndex:
        """Load the embeddings (memory-mapped) and the filter columns for searching."""
        man = self.folder / "manifest.json"
        stale = True
        if man.is_file() and self.rows_path.is_file():
            stale = json.loads(man.read_text(encoding="utf-8")).get("generation") != self.generation
        rows = self._rows_snapshot() if stale else None
        if not (self.emb_dir / "img_emb").is_dir():
            raise InputError(
                f"collection {self.name!r} has no embedded images yet; add images to "
                f"{str(self.images_root)!r} and run `inquire collection update {self.name}`"
            )
        return CollectionIndex.load(self, rows)


@dataclass
class CollectionIndex:
    """Everything a search needs, resident: the memory-mapped store and per-row columns.

    All arrays have one entry per embedding row (N): ``image_id (N,) int64`` (-1 for invalid
    rows), ``days (N,) int32`` days since 1970-01-01 (``NO_DAY`` if unknown), ``lat``/``lon``
    ``(N,) float32`` degrees (NaN if unknown), ``taxa[col]`` a pandas Categorical per
    taxonomy column, ``folder`` a Categorical of each file's folder relative to the images
    root (``""`` for files at the top).
    """

    collection: Collection
    store: Any
    image_id: np.ndarray
    days: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    taxa: dict[str, pd.Categorical]
    folder: pd.Categorical
    generation: int
    ann: Any = None  # the collection's faiss index (inquire.index.ann.AnnIndex) if current

    @classmethod
    def load(cls, coll: Collection, rows: pd.DataFrame | None = None) -> CollectionIndex:
        """``rows``: a snapshot just built (else ``rows.parquet`` is read)."""
        store = coll.store()
        df = pd.read_parquet(coll.rows_path) if rows is None else rows
        if len(df) != len(store) or "folder" not in df.columns:
            # Shards written since the snapshot (e.g. by an update running now): describe
            # exactly the shards this store holds.
            df = coll._rows_snapshot(store)
        taxa = {c: pd.Categorical(df[c]) for c in TAXON_COLUMNS}
        return cls(
            coll,
            store,
            df["image_id"].to_numpy(np.int64),
            df["days"].to_numpy(np.int32),
            df["lat"].to_numpy(np.float32),
            df["lon"].to_numpy(np.float32),
            taxa,
            pd.Categorical(df["folder"]),
            coll.generation,
            load_index(coll, store),
        )

    @property
    def valid(self) -> np.ndarray:
        """``(N,) bool``: rows that belong to a current file."""
        return self.image_id >= 0

    def __len__(self) -> int:
        return len(self.image_id)

    def rows_of(self, image_ids: Sequence[int]) -> np.ndarray:
        """Embedding row of each image id (``-1`` if the image has no valid row)."""
        order = np.argsort(self.image_id, kind="stable")
        sorted_ids = self.image_id[order]
        ids = np.asarray(image_ids, np.int64)
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(order) - 1, 0))
        hit = (len(order) > 0) & (sorted_ids[pos] == ids) & (ids >= 0)
        return np.where(hit, order[pos], -1)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), d) float32`` embeddings of the given global rows."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.store.dim), np.float32)
        offsets = self.store.offsets
        shard_of = np.searchsorted(offsets, rows, side="right") - 1
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            out[sel] = self.store.shards[s][rows[sel] - offsets[s]]
        return out


def _collection_folder(name: str, root: str | os.PathLike[str] | None) -> Path:
    return collections_root(root) / _check_name(name)


def open_collection(name: str, root: str | os.PathLike[str] | None = None) -> Collection:
    """Open the existing collection ``name`` (under ``root`` or the cache)."""
    folder = _collection_folder(name, root)
    if not (folder / "collection.db").is_file():
        raise UnknownNameError("collection", name, list_collections(root))
    return Collection(folder)


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
        stats = _sync(coll, enc, inat, batch_size, chunk_size, progress, workers)
    return coll, stats


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
    stats = _sync(coll, enc, inat, batch_size, chunk_size, progress, workers)
    return coll, stats


def _write_shard(emb_dir: Path, idx: int, vectors: np.ndarray, ids: list[int], paths: list[str]):
    """Metadata first, then vectors: a shard without its metadata file is never visible."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"image_path": paths, "image_id": pa.array(ids, pa.int64())})
    with atomic_path(emb_dir / META_DIR / meta_file_name(idx)) as tmp:
        pq.write_table(table, tmp)
    with atomic_open(emb_dir / EMB_DIR / emb_file_name(idx), "wb") as fh:
        np.save(fh, vectors.astype(np.float16))


def _next_shard(coll: Collection) -> int:
    row = coll.conn.execute("SELECT MAX(shard) AS m FROM images").fetchone()
    used = [int(row["m"])] if row["m"] is not None else []
    used += shard_numbers(coll.emb_dir)
    return max(used) + 1 if used else 0


def _sync(
    coll: Collection,
    enc: Encoder,
    inat: InatMetadata | None,
    batch_size: int,
    chunk_size: int,
    progress: bool,
    workers: int,
) -> UpdateStats:
    import time

    from inquire.embed.pipeline import progress_bar

    root = coll.images_root
    stats = UpdateStats()
    files = scan_images(root)
    conn = coll.conn
    known = {
        r["path"]: dict(r)
        for r in conn.execute(
            "SELECT image_id, path, size, mtime_ns, sha1, status, shard, row FROM images"
        )
    }
    todo: list[str] = []  # new, changed or returning files, in path order
    for rel, stat in files.items():
        old = known.get(rel)
        same_stat = old is not None and (old["size"], old["mtime_ns"]) == stat
        if same_stat and old is not None and old["status"] != "deleted":
            stats.unchanged += 1
        else:
            todo.append(rel)
    gone = [p for p, r in known.items() if r["status"] != "deleted" and p not in files]
    if gone:
        with transaction(conn):
            conn.executemany(
                "UPDATE images SET status = 'deleted', shard = NULL, row = NULL, "
                "updated = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE path = ?",
                [(p,) for p in gone],
            )
        stats.removed = len(gone)
    if inat is not None:
        todo_set = set(todo)
        _refresh_json_metadata(coll, inat, [p for p in files if p in known and p not in todo_set])
    # Identical bytes elsewhere in the collection (a moved file, a duplicated frame) reuse
    # that row's vector instead of calling the encoder.
    by_hash = {
        r["sha1"]: (int(r["shard"]), int(r["row"]))
        for r in conn.execute("SELECT sha1, shard, row FROM images WHERE status = 'ok'")
    }
    ids_taken = {int(r["image_id"]) for r in known.values()}
    json_ids = {rec["source_id"] for rec in inat.by_key.values()} if inat else set()
    next_id = max([*ids_taken, *json_ids, -1]) + 1
    shard_cache: dict[int, np.ndarray] = {}
    shard_files: dict[int, Path] = {}

    def old_vector(loc: tuple[int, int]) -> np.ndarray:
        if loc[0] not in shard_cache:
            if loc[0] not in shard_files:
                shard_files.update(
                    (sh.number, sh.embeddings)
                    for sh in list_shards(coll.emb_dir, require_metadata=False)
                )
            if loc[0] not in shard_files:
                raise InputError(
                    f"collection {coll.name!r}: its database points at shard {loc[0]}, which "
                    f"has no file in {str(coll.emb_dir / EMB_DIR)!r}; restore that folder or "
                    f"create the collection again"
                )
            shard_cache[loc[0]] = np.load(shard_files[loc[0]], mmap_mode="r")
        return np.asarray(shard_cache[loc[0]][loc[1]], np.float32)

    bar = progress_bar(disable=not progress, label=f"collection {coll.name}")
    task = bar.add_task("sync", total=len(todo), rate="")
    start = time.perf_counter()
    done = [0]  # files handled by this run: the rate counts encoder work and cheap files alike

    def advance(n: int) -> None:
        done[0] += n
        rate = done[0] / max(time.perf_counter() - start, 1e-9)
        bar.update(task, advance=n, rate=f"{rate:,.1f} img/s")

    with bar:
        for lo in range(0, len(todo), chunk_size):
            chunk = todo[lo : lo + chunk_size]
            rows_out: list[tuple[str, dict[str, Any]]] = []  # (rel, record) for the db
            vec_rows: list[np.ndarray] = []
            to_encode: list[int] = []  # positions in rows_out
            touched: list[tuple[int, int, str]] = []
            first_in_chunk: dict[str, int] = {}  # sha1 -> position in rows_out
            copies: list[tuple[int, int]] = []  # (duplicate, original) positions in rows_out
            root_real = Path(os.path.realpath(root))
            for rel in chunk:
                size, mtime = files[rel]
                full = root / rel
                if not inside_root(root_real, full):  # became a link out since the scan
                    log.warning("skipped %s: it links outside the images folder", full)
                    continue
                try:
                    sha = file_sha1(full)
                except OSError as exc:
                    log.warning("cannot read %s (%s); skipped", full, exc)
                    continue
                old = known.get(rel)
                if old is not None and old["status"] == "ok" and old["sha1"] == sha:
                    touched.append((size, mtime, rel))
                    continue
                rec = describe(full, rel, mtime, inat)
                if old is not None:
                    image_id = int(old["image_id"])
                    if old["status"] == "deleted":
                        stats.added += 1
                    else:
                        stats.changed += 1
                else:
                    src = rec.get("source_id")
                    if src is not None and int(src) not in ids_taken:
                        image_id = int(src)
                    else:
                        image_id = next_id
                        next_id += 1
                    ids_taken.add(image_id)
                    stats.added += 1
                rec.update(image_id=image_id, size=size, mtime_ns=mtime, sha1=sha)
                rows_out.append((rel, rec))
                if sha in by_hash:
                    vec_rows.append(old_vector(by_hash[sha]))
                    stats.reused += 1
                elif sha in first_in_chunk:  # a duplicate of a file embedded in this same chunk
                    vec_rows.append(np.zeros(enc.dim, np.float32))
                    copies.append((len(rows_out) - 1, first_in_chunk[sha]))
                else:
                    vec_rows.append(np.zeros(enc.dim, np.float32))
                    to_encode.append(len(rows_out) - 1)
                    first_in_chunk[sha] = len(rows_out) - 1
            if to_encode:
                vecs, ok, _ = embed_files(
                    enc,
                    [rows_out[i][0] for i in to_encode],
                    batch_size,
                    workers,
                    root=root,
                    advance=advance,
                )
                for j, i in enumerate(to_encode):
                    vec_rows[i] = vecs[j]
                    if not ok[j]:
                        rows_out[i][1]["status"] = "unreadable"
                stats.embedded += int(ok.sum())
                stats.unreadable += int((~ok).sum())
            for dup, src in copies:
                vec_rows[dup] = vec_rows[src]
                if rows_out[src][1].get("status") == "unreadable":
                    rows_out[dup][1]["status"] = "unreadable"
                    stats.unreadable += 1
                else:
                    stats.reused += 1
            keep = [i for i, (_, r) in enumerate(rows_out) if r.get("status") != "unreadable"]
            shard = -1
            if keep:
                shard = _next_shard(coll)
                _write_shard(
                    coll.emb_dir,
                    shard,
                    np.stack([vec_rows[i] for i in keep]),
                    [rows_out[i][1]["image_id"] for i in keep],
                    [rows_out[i][0] for i in keep],
                )
                stats.shards_written.append(shard)
            with transaction(conn):
                conn.executemany("UPDATE images SET size = ?, mtime_ns = ? WHERE path = ?", touched)
                pos_in_shard = {i: r for r, i in enumerate(keep)}
                params = []
                for i, (rel, rec) in enumerate(rows_out):
                    status = rec.get("status") or "ok"
                    loc = (shard, pos_in_shard[i]) if status == "ok" else (None, None)
                    params.append(
                        (
                            rec["image_id"],
                            rel,
                            rec["size"],
                            rec["mtime_ns"],
                            rec["sha1"],
                            status,
                            *loc,
                            *(rec[f] for f in _META_FIELDS),
                        )
                    )
                    if status == "ok":
                        by_hash[rec["sha1"]] = (shard, pos_in_shard[i])
                cols = (
                    "image_id",
                    "path",
                    "size",
                    "mtime_ns",
                    "sha1",
                    "status",
                    "shard",
                    "row",
                    *_META_FIELDS,
                )
                quoted = ", ".join(f'"{c}"' for c in cols)
                updates = ", ".join(f'"{c}" = excluded."{c}"' for c in cols if c != "image_id")
                conn.executemany(
                    f"INSERT INTO images ({quoted}) VALUES ({', '.join('?' * len(cols))}) "
                    f"ON CONFLICT(image_id) DO UPDATE SET {updates}, "
                    "updated = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
                    params,
                )
            stats.touched += len(touched)
            advance(len(chunk) - len(to_encode))  # files that needed no encoder work
    with transaction(conn):
        coll.set_meta(conn, generation=coll.generation + 1)
    coll.write_rows_snapshot()
    stats.index = ensure_index(coll)
    log.info("collection %s: %s", coll.name, stats.as_dict())
    return stats


def _refresh_json_metadata(coll: Collection, inat: InatMetadata, paths: list[str]) -> None:
    """Apply a new or changed train.json to files that are otherwise unchanged (no embedding
    work): fields the JSON has replace the stored ones, fields it lacks are kept."""
    stamp = f"{inat.path}:{inat.path.stat().st_mtime_ns}"
    if coll.meta().get("metadata_stamp") == stamp:
        return
    sets = ", ".join(f'"{f}" = COALESCE(?, "{f}")' for f in _META_FIELDS)
    params = [
        (*(rec[f] for f in _META_FIELDS), p) for p in paths if (rec := inat.get(p)) is not None
    ]
    with transaction(coll.conn) as conn:
        conn.executemany(f"UPDATE images SET {sets} WHERE path = ?", params)
        coll.set_meta(conn, metadata_stamp=stamp)


def compact(name: str, root: str | os.PathLike[str] | None = None) -> int:
    """Rewrite the shards of ``name`` keeping only valid rows; returns the rows dropped.

    The new shards are built beside the old ones and swapped in with a rename, and the
    database is updated in the same step, so a failure leaves the old state intact.
    """
    coll = open_collection(name, root)
    with writer_lock(coll.folder, f"collection {name!r}"):
        return _compact_locked(coll)


def _compact_locked(coll: Collection) -> int:
    if not (coll.emb_dir / "img_emb").is_dir():
        return 0
    index = coll.index()
    rows = np.flatnonzero(index.valid)
    dropped = len(index) - len(rows)
    if dropped == 0:
        return 0
    new_dir = coll.folder / "embeddings.new"
    if new_dir.exists():
        shutil.rmtree(new_dir)
    ids = index.image_id[rows]
    paths = dict(
        coll.conn.execute("SELECT image_id, path FROM images WHERE status = 'ok'").fetchall()
    )
    per_shard = 100_000
    locs: list[tuple[int, int, int]] = []
    for s, lo in enumerate(range(0, len(rows), per_shard)):
        part = rows[lo : lo + per_shard]
        pid = ids[lo : lo + per_shard]
        _write_shard(
            new_dir, s, index.vectors(part), [int(i) for i in pid], [paths[int(i)] for i in pid]
        )
        locs += [(s, r, int(i)) for r, i in enumerate(pid)]
    old_dir = coll.folder / "embeddings.old"
    with transaction(coll.conn) as conn:
        conn.executemany("UPDATE images SET shard = ?, row = ? WHERE image_id = ?", locs)
        coll.set_meta(conn, generation=coll.generation + 1)
        os.replace(coll.emb_dir, old_dir)
        os.replace(new_dir, coll.emb_dir)
    shutil.rmtree(old_dir)
    coll.write_rows_snapshot()
    ensure_index(coll)  # the old index went with the old shards
    return dropped


def delete_collection(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Remove the collection folder (embeddings, database, marks). Returns the folder."""
    coll = open_collection(name, root)
    coll.close()
    with writer_lock(coll.folder, f"collection {name!r}"):
        shutil.rmtree(coll.folder)
    return coll.folder
