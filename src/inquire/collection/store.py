"""A collection: image files + their embeddings + metadata, kept in one cache folder.

Layout of ``config.cache_dir("collections", NAME)``::

    collection.db                  SQLite (WAL): meta (key/value) and images (one row per file)
    embeddings/img_emb/img_emb_{i}.npy        (n_i, d) float16, L2-normalised rows
    embeddings/metadata/metadata_{i}.parquet  image_path, image_id (clip-retrieval layout,
                                              written by inquire.embed.folder.write_shard)
    rows.parquet                   per embedding row: image_id, valid, date, lat, lon, taxonomy
                                   (a snapshot of the database the search reads; rebuilt from
                                   the database whenever its generation is stale)
    manifest.json                  name, model, revision, dim, generation, counts

Updates (:mod:`inquire.collection.ingest`: plan / hash / embed / commit) never rewrite
shards: each run appends new shards, and an embedding row is VALID only
while the ``images`` row of its file still points at it (``shard``, ``row``). A changed file
gets a new row in a new shard (its old row becomes invalid); a deleted file is kept in the
database with status ``deleted`` (so verified marks keep their metadata) and has no valid row.
:func:`compact` rewrites the shards without the invalid rows when they pile up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inquire import config
from inquire._io import atomic_path, write_json
from inquire._lock import try_writer_lock, writer_lock
from inquire.cache import connect as connect_db
from inquire.cache import migrate, transaction
from inquire.collection.ann import ensure_index, load_index
from inquire.collection.metadata import RANKS
from inquire.embed import folder as emb_folder
from inquire.embed.sources import scan_image_files
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
    coord_uncertainty_m REAL, license TEXT, rights_holder TEXT,
    updated TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX IF NOT EXISTS images_sha1 ON images (sha1);
"""


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``df`` as dicts (column name -> value)."""
    return [{str(k): v for k, v in row.items()} for row in df.to_dict("records")]


def collections_root(root: str | os.PathLike[str] | None = None, create: bool = True) -> Path:
    """The folder holding all collections (``cache_dir("collections")`` by default).

    ``create=False`` (readers): the folder is not created, so a read-only cache works."""
    if root is None:
        return config.cache_dir("collections") if create else config.cache_path("collections")
    path = Path(root)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def list_collections(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the collections under ``root`` (none when the folder does not exist yet)."""
    base = collections_root(root, create=False)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "collection.db").is_file())


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(
            f"collection name {name!r} is not allowed; use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def connect(path: Path, schema: str | None = None) -> sqlite3.Connection:
    """A collection database (:func:`inquire.cache.connect`: WAL, waits for writers), rows
    as ``sqlite3.Row``; ``schema`` (``CREATE ... IF NOT EXISTS`` statements) is applied.

    When the folder cannot be written (a read-only cache, a read-only mount) the database is
    opened **read-only** instead (:func:`connect_read_only`): reading works, and a write
    fails with SQLite's "attempt to write a readonly database", never by calling a good
    database unusable."""
    if not _may_write(path):
        return connect_read_only(path, schema)
    try:
        conn = connect_db(path, timeout_s=30, row_factory=sqlite3.Row, what="collection database")
    except InputError:
        if folder_writable(path.parent):
            raise  # a writable folder: the file itself is not a database
        return connect_read_only(path, schema)
    if schema:
        try:
            conn.executescript(schema)
        except BaseException:
            conn.close()
            raise
    return conn


def _may_write(path: Path) -> bool:
    """False when the OS says the database or its folder cannot be written (cheap; as root
    this only catches read-only file systems, :func:`folder_writable` probes for real)."""
    folder = path.parent
    if not folder.is_dir():
        return True  # created by the writer (or refused there, with its own message)
    if not os.access(folder, os.W_OK):
        return False
    return not path.exists() or os.access(path, os.W_OK)


def folder_writable(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (a probe file, removed at once)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def connect_read_only(path: Path, schema: str | None = None) -> sqlite3.Connection:
    """``path`` opened read-only (``PRAGMA query_only``): ``mode=ro`` (which reads a WAL
    left by a writer), else ``immutable=1`` (a cleanly closed WAL database in a folder where
    SQLite cannot create its ``-shm`` file). A database that does not exist yet reads as
    empty: an in-memory one holding ``schema``."""
    from urllib.parse import quote

    conn: sqlite3.Connection | None = None
    err: Exception | None = None
    if not path.exists():
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if schema:
            conn.executescript(schema)
    else:
        uri = "file:" + quote(str(path.resolve()))
        for flag in ("mode=ro", "immutable=1"):
            try:
                conn = sqlite3.connect(
                    f"{uri}?{flag}", uri=True, isolation_level=None, check_same_thread=False
                )
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                if flag == "immutable=1" and Path(f"{path}-wal").exists():
                    log.warning(
                        "%s has unapplied changes in %s-wal that read-only access cannot see",
                        path,
                        path,
                    )
                break
            except sqlite3.DatabaseError as exc:
                if conn is not None:
                    conn.close()
                conn = None
                err = exc
    if conn is None:
        raise InputError(
            f"collection database {str(path)!r} cannot be read ({err}); its folder is "
            "read-only, so nothing was changed"
        )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only = 1")
    log.info("opened %s read-only: its folder cannot be written", path)
    return conn


def inside_root(root_real: Path, path: Path) -> bool:
    """Whether ``path``, symlinks resolved, lies under ``root_real`` (a real path)."""
    return Path(os.path.realpath(path)).is_relative_to(root_real)


def scan_images(images_root: Path) -> dict[str, tuple[int, int]]:
    """Image files under ``images_root``: ``{relative POSIX path: (size bytes, mtime ns)}``
    in sorted path order, by the one scanning rule shared with ``inquire embed``
    (:func:`inquire.embed.sources.scan_image_files`: hidden files and folders skipped,
    regular files only, symlinked folders not entered, no link out of the folder)."""
    return scan_image_files(images_root)


# Columns added to ``images`` after its first release: (name, SQL type).
_LATER_COLUMNS = (("coord_uncertainty_m", "REAL"), ("license", "TEXT"), ("rights_holder", "TEXT"))


def _add_later_columns(conn: sqlite3.Connection) -> None:
    """Give a database written before a column existed that column (empty)."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(images)")}
    for name, kind in _LATER_COLUMNS:
        if name not in have:
            conn.execute(f'ALTER TABLE images ADD COLUMN "{name}" {kind}')


# The upgrades of collection.db, in order (PRAGMA user_version = how many were applied).
MIGRATIONS = (_add_later_columns,)


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
            conn = connect(self.db_path, SCHEMA)
            try:  # a read-only database is read as it is (see _later_column_sql)
                migrate(conn, MIGRATIONS, f"collection database {str(self.db_path)!r}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def located_counts(self) -> tuple[int, int]:
        """``(searchable images with coordinates, searchable images)``."""
        row = self.conn.execute(
            "SELECT COUNT(*) AS n, COUNT(lat) AS located FROM images WHERE status = 'ok'"
        ).fetchone()
        return int(row["located"]), int(row["n"])

    def _later_column_sql(self) -> list[str]:
        """The columns added after the first release, as select terms: a database opened
        read-only before it gained one reads that column as empty."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(images)")}
        return [c if c in have else f"NULL AS {c}" for c, _ in _LATER_COLUMNS]

    # -- images --------------------------------------------------------------------------------
    def images(self, image_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Rows of the images table (all, or those of ``image_ids``, in that order), with an
        absolute ``abspath`` column."""
        cols = (
            "image_id, path, status, date, date_source, lat, lon, taxon_id, "
            + ", ".join(f'"{c}"' for c in TAXON_COLUMNS)
            + ", source_id, "
            + ", ".join(self._later_column_sql())
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
        return self.image_id_of_relative(rel)

    def image_id_of_relative(self, rel: str) -> int | None:
        """The id of the searchable image stored at ``rel`` ('/'-separated, relative to the
        images root), looked up in the database only: no file is opened or tested."""
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
        if store is None and not emb_folder.is_embedding_folder(self.emb_dir):
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
        start = df["shard"].map(shard_pos)  # NaN: a shard this store does not hold
        known = start.notna().to_numpy()
        df = df[known]
        pos = start[known].to_numpy(np.int64) + df["row"].to_numpy(np.int64)
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
        if not emb_folder.is_embedding_folder(self.emb_dir):
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
        if not _rows_match(store, df["image_id"].to_numpy(np.int64)):
            # The snapshot names other images than the shards' metadata: the shards were
            # replaced after it was taken (a compaction swaps them in before its database
            # commit is visible). Once more from the database as it is now.
            df = coll._rows_snapshot(store)
            if not _rows_match(store, df["image_id"].to_numpy(np.int64)):
                raise InputError(
                    f"collection {coll.name!r} is being rewritten by another process (its "
                    f"embeddings and its database disagree: a compaction is committing); "
                    f"search again when it has finished"
                )
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

    def bound_to(self, coll: Collection) -> CollectionIndex:
        """This index reading image metadata through ``coll`` (the caller's own connection):
        a shallow copy sharing the arrays and the store. An index kept between requests or
        threads is handed out this way, so no connection is ever shared."""
        if coll.folder != self.collection.folder:
            raise InputError(
                f"the index of collection {self.collection.name!r} cannot search {coll.name!r}"
            )
        return dataclasses.replace(self, collection=coll)

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


def _rows_match(store: Any, image_id: np.ndarray) -> bool:
    """Whether every valid row of ``image_id`` (a snapshot's per-row ids, -1 invalid) is the
    image the shard's metadata says that row embeds (each shard is written with its rows'
    ``image_id``). Shards without valid rows, or whose metadata has no ``image_id``, are not
    read; only the ``image_id`` column is."""
    import pyarrow.parquet as pq

    offsets = store.offsets
    for s, path in enumerate(store.metadata_paths):
        mine = image_id[int(offsets[s]) : int(offsets[s + 1])]
        valid = mine >= 0
        if not valid.any():
            continue
        try:
            if "image_id" not in pq.read_schema(path).names:
                continue
            written = pq.read_table(path, columns=["image_id"]).column(0).to_numpy()
        except (OSError, ValueError):
            return False  # replaced or removed while read: not these shards' metadata
        if len(written) != len(mine) or (np.asarray(written, np.int64)[valid] != mine[valid]).any():
            return False
    return True


def _collection_folder(name: str, root: str | os.PathLike[str] | None) -> Path:
    return collections_root(root) / _check_name(name)


def open_collection(name: str, root: str | os.PathLike[str] | None = None) -> Collection:
    """Open the existing collection ``name`` (under ``root`` or the cache)."""
    folder = collections_root(root, create=False) / _check_name(name)
    if not (folder / "collection.db").is_file():
        raise UnknownNameError("collection", name, list_collections(root))
    return Collection(folder)


def compact(name: str, root: str | os.PathLike[str] | None = None) -> int:
    """Rewrite the shards of ``name`` keeping only valid rows; returns the rows dropped.

    The new shards are built beside the old ones and swapped in with a rename, and the
    database is updated in the same step, so a failure leaves the old state intact.
    """
    coll = open_collection(name, root)
    with writer_lock(coll.folder, f"collection {name!r}"):
        return _compact_locked(coll)


def _compact_locked(coll: Collection) -> int:
    if not emb_folder.is_embedding_folder(coll.emb_dir):
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
        emb_folder.write_shard(
            new_dir, s, index.vectors(part), [paths[int(i)] for i in pid], [int(i) for i in pid]
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
