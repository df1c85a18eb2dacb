"""Collection ingest: bring a collection's database and embeddings up to date with its folder.

:func:`sync` runs four named steps, each a function a test can run on its own:

1. **plan** (:func:`plan_sync`): scan the images folder and compare each file's size and
   mtime with the database. Reads no image bytes and needs no model: files with the same
   size and mtime are ``unchanged``; new, changed and returning files are ``todo``; files no
   longer on disk are ``gone``.
2. **hash** (:func:`hash_chunk`): for ``chunk_size`` files of ``todo`` at a time, hash the
   bytes (SHA-1). Same bytes as recorded: only the stat is ``touched``. New content: read its
   metadata, give it an image id, and decide where its vector comes from: an identical file
   already embedded (reused), an identical file earlier in the chunk (copied), or the encoder.
3. **embed** (:func:`embed_chunk`): produce the chunk's vectors: encode what must be encoded
   (:func:`inquire.collection.embedding.embed_files`), read reused rows from their shards,
   copy duplicates. Files that cannot be decoded become ``unreadable``.
4. **commit** (:func:`commit_chunk`): write the chunk's vectors as a new shard
   (:func:`inquire.embed.folder.write_shard`: metadata, then embeddings, each renamed into
   place) and then, in one transaction, the database rows that point at it. The database is
   the commit record: a shard whose rows were not committed holds only invalid rows, and a
   rerun (``update_collection``) hashes those files again and writes a new shard.

Removed files are marked ``deleted`` (:func:`commit_removals`) right after the plan, and
after the last chunk :func:`finish_sync` bumps the generation, rewrites the ``rows.parquet``
snapshot and brings the faiss index up to date. All of it runs under the collection's writer
lock (:func:`~inquire.collection.build.create_collection`,
:func:`~inquire.collection.build.update_collection`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inquire.cache import transaction
from inquire.collection.ann import ensure_index
from inquire.collection.embedding import embed_files
from inquire.collection.metadata import FIELDS, InatMetadata, describe
from inquire.collection.store import (
    Collection,
    inside_root,
    scan_images,
)
from inquire.embed import folder as emb_folder
from inquire.embed.base import Encoder
from inquire.errors import InputError

log = logging.getLogger(__name__)

# The columns an ingest writes to the images table, in order.
_ROW_COLUMNS = ("image_id", "path", "size", "mtime_ns", "sha1", "status", "shard", "row", *FIELDS)


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


def file_sha1(path: Path) -> str:
    """SHA-1 of the file's bytes (hex)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- step 1: plan -------------------------------------------------------------------------------


@dataclass
class SyncPlan:
    """What the folder and the database say, before any image byte is read.

    ``files``: every image file now, relative POSIX path -> ``(size bytes, mtime ns)``, in
    path order. ``known``: the database's images rows by path (``image_id, path, size,
    mtime_ns, sha1, status, shard, row``). ``todo``: new, changed (size or mtime differ) or
    returning (status ``deleted``) files, in path order: to hash. ``unchanged``: files with
    the recorded size and mtime (never read). ``gone``: files the database lists (not yet
    deleted) that are no longer in the folder.
    """

    files: dict[str, tuple[int, int]]
    known: dict[str, dict[str, Any]]
    todo: list[str]
    unchanged: list[str]
    gone: list[str]


def plan_sync(coll: Collection) -> SyncPlan:
    """Step 1: compare the images folder of ``coll`` with its database (no writes, no model)."""
    files = scan_images(coll.images_root)
    known = {
        r["path"]: dict(r)
        for r in coll.conn.execute(
            "SELECT image_id, path, size, mtime_ns, sha1, status, shard, row FROM images"
        )
    }
    todo: list[str] = []
    unchanged: list[str] = []
    for rel, stat in files.items():
        old = known.get(rel)
        same_stat = old is not None and (old["size"], old["mtime_ns"]) == stat
        if same_stat and old is not None and old["status"] != "deleted":
            unchanged.append(rel)
        else:
            todo.append(rel)
    gone = [p for p, r in known.items() if r["status"] != "deleted" and p not in files]
    return SyncPlan(files, known, todo, unchanged, gone)


def commit_removals(coll: Collection, paths: list[str]) -> None:
    """Mark the images rows of ``paths`` ``deleted`` (no embedding row) in one transaction."""
    if not paths:
        return
    with transaction(coll.conn) as conn:
        conn.executemany(
            "UPDATE images SET status = 'deleted', shard = NULL, row = NULL, "
            "updated = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE path = ?",
            [(p,) for p in paths],
        )


@dataclass
class IngestState:
    """What the steps of one sync share across chunks.

    ``known``: the plan's database rows by path. ``by_hash``: SHA-1 -> ``(shard, row)`` of a
    valid embedding row with those bytes (grows as chunks commit). ``ids_taken``: image ids in
    use; ``next_id``: the next free one (above every id of the database and of ``train.json``).
    """

    known: dict[str, dict[str, Any]]
    by_hash: dict[str, tuple[int, int]]
    ids_taken: set[int]
    next_id: int

    @classmethod
    def start(cls, coll: Collection, plan: SyncPlan, inat: InatMetadata | None) -> IngestState:
        """The state before the first chunk, read from the database."""
        by_hash = {
            r["sha1"]: (int(r["shard"]), int(r["row"]))
            for r in coll.conn.execute("SELECT sha1, shard, row FROM images WHERE status = 'ok'")
        }
        ids_taken = {int(r["image_id"]) for r in plan.known.values()}
        json_ids = {rec["source_id"] for rec in inat.by_key.values()} if inat else set()
        next_id = max([*ids_taken, *json_ids, -1]) + 1
        return cls(plan.known, by_hash, ids_taken, next_id)

    def new_id(self, source_id: Any) -> int:
        """The id of a file new to the database: its ``train.json`` id when still free."""
        if source_id is not None and int(source_id) not in self.ids_taken:
            image_id = int(source_id)
        else:
            image_id = self.next_id
            self.next_id += 1
        self.ids_taken.add(image_id)
        return image_id


# -- step 2: hash -------------------------------------------------------------------------------


@dataclass
class HashedChunk:
    """One chunk after hashing.

    ``records``: ``(relative path, images-row record)`` of each file with new content, in
    chunk order (``record`` has the metadata fields, ``image_id``, ``size``, ``mtime_ns``,
    ``sha1``; the embed step may set ``status`` to ``unreadable``). Where each record's vector
    comes from: ``reuse`` (record position -> ``(shard, row)`` of an identical file already
    embedded), ``to_encode`` (positions to send to the encoder), ``copies`` (``(duplicate,
    original)`` positions: identical bytes earlier in the chunk). ``touched``: ``(size,
    mtime_ns, path)`` of files whose bytes are as recorded (only the stat is updated).
    """

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reuse: dict[int, tuple[int, int]] = field(default_factory=dict)
    to_encode: list[int] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)
    touched: list[tuple[int, int, str]] = field(default_factory=list)


def hash_chunk(
    coll: Collection,
    files: dict[str, tuple[int, int]],
    chunk: list[str],
    state: IngestState,
    inat: InatMetadata | None,
    stats: UpdateStats,
) -> HashedChunk:
    """Step 2: hash the files ``chunk`` (paths of ``files``) and sort them (see
    :class:`HashedChunk`). Counts ``added``, ``changed`` and ``reused`` in ``stats``; assigns
    image ids through ``state``. Files that cannot be read, or that now link outside the
    images folder, are skipped with a warning (picked up again by a later update)."""
    root = coll.images_root
    root_real = Path(os.path.realpath(root))
    out = HashedChunk()
    first_in_chunk: dict[str, int] = {}  # sha1 -> position in out.records
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
        old = state.known.get(rel)
        if old is not None and old["status"] == "ok" and old["sha1"] == sha:
            out.touched.append((size, mtime, rel))
            continue
        rec = describe(full, rel, mtime, inat)
        if old is not None:
            image_id = int(old["image_id"])
            if old["status"] == "deleted":
                stats.added += 1
            else:
                stats.changed += 1
        else:
            image_id = state.new_id(rec.get("source_id"))
            stats.added += 1
        rec.update(image_id=image_id, size=size, mtime_ns=mtime, sha1=sha)
        pos = len(out.records)
        out.records.append((rel, rec))
        if sha in state.by_hash:
            out.reuse[pos] = state.by_hash[sha]
            stats.reused += 1
        elif sha in first_in_chunk:  # a duplicate of a file embedded in this same chunk
            out.copies.append((pos, first_in_chunk[sha]))
        else:
            out.to_encode.append(pos)
            first_in_chunk[sha] = pos
    return out


# -- step 3: embed ------------------------------------------------------------------------------


class ShardRows:
    """Rows of the collection's existing shards, read on demand (memory-mapped, cached)."""

    def __init__(self, coll: Collection) -> None:
        self.coll = coll
        self._files: dict[int, Path] = {}
        self._open: dict[int, np.ndarray] = {}

    def __call__(self, loc: tuple[int, int]) -> np.ndarray:
        """``(d,) float32`` vector at ``(shard, row)``."""
        shard, row = loc
        if shard not in self._open:
            if shard not in self._files:
                self._files.update(
                    (sh.number, sh.embeddings)
                    for sh in emb_folder.list_shards(self.coll.emb_dir, require_metadata=False)
                )
            if shard not in self._files:
                raise InputError(
                    f"collection {self.coll.name!r}: its database points at shard {shard}, which "
                    f"has no file in {str(emb_folder.emb_dir(self.coll.emb_dir))!r}; restore that "
                    f"folder or create the collection again"
                )
            self._open[shard] = np.load(self._files[shard], mmap_mode="r")
        return np.asarray(self._open[shard][row], np.float32)


def embed_chunk(
    coll: Collection,
    enc: Encoder,
    hashed: HashedChunk,
    old_rows: Callable[[tuple[int, int]], np.ndarray],
    stats: UpdateStats,
    batch_size: int = 32,
    workers: int = 2,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Step 3: the ``(len(hashed.records), d) float32`` vectors of the chunk, row ``i`` for
    ``hashed.records[i]``: encoded (``batch_size`` at a time, decoded in ``workers``
    processes), read with ``old_rows((shard, row))``, or copied. Records of files that cannot
    be decoded get ``status = "unreadable"`` (their rows stay zero). Counts ``embedded``,
    ``unreadable`` and the copies' ``reused`` in ``stats``."""
    records = hashed.records
    vectors = np.zeros((len(records), enc.dim), np.float32)
    for i, loc in hashed.reuse.items():
        vectors[i] = old_rows(loc)
    if hashed.to_encode:
        vecs, ok, _ = embed_files(
            enc,
            [records[i][0] for i in hashed.to_encode],
            batch_size,
            workers,
            root=coll.images_root,
            advance=advance,
        )
        for j, i in enumerate(hashed.to_encode):
            vectors[i] = vecs[j]
            if not ok[j]:
                records[i][1]["status"] = "unreadable"
        stats.embedded += int(ok.sum())
        stats.unreadable += int((~ok).sum())
    for dup, src in hashed.copies:
        vectors[dup] = vectors[src]
        if records[src][1].get("status") == "unreadable":
            records[dup][1]["status"] = "unreadable"
            stats.unreadable += 1
        else:
            stats.reused += 1
    return vectors


# -- step 4: commit -----------------------------------------------------------------------------


def next_shard(coll: Collection) -> int:
    """The next free shard number: above every number in the database and on disk."""
    row = coll.conn.execute("SELECT MAX(shard) AS m FROM images").fetchone()
    used = [int(row["m"])] if row["m"] is not None else []
    used += emb_folder.shard_numbers(coll.emb_dir)
    return max(used) + 1 if used else 0


def commit_chunk(
    coll: Collection,
    hashed: HashedChunk,
    vectors: np.ndarray,
    state: IngestState,
    stats: UpdateStats,
) -> int | None:
    """Step 4: write the chunk's readable rows as a new shard, then commit the database rows
    (new content pointing at the shard, unreadable files without a row, touched stats) in one
    transaction. Returns the shard number (None when no row was readable). Updates
    ``state.by_hash``, ``stats.shards_written`` and ``stats.touched``."""
    records = hashed.records
    keep = [i for i, (_, r) in enumerate(records) if r.get("status") != "unreadable"]
    shard = None
    if keep:
        shard = next_shard(coll)
        emb_folder.write_shard(
            coll.emb_dir,
            shard,
            vectors[keep],
            [records[i][0] for i in keep],
            [records[i][1]["image_id"] for i in keep],
        )
        stats.shards_written.append(shard)
    pos_in_shard = {i: r for r, i in enumerate(keep)}
    params = []
    for i, (rel, rec) in enumerate(records):
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
                *(rec[f] for f in FIELDS),
            )
        )
    quoted = ", ".join(f'"{c}"' for c in _ROW_COLUMNS)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in _ROW_COLUMNS if c != "image_id")
    with transaction(coll.conn) as conn:
        conn.executemany("UPDATE images SET size = ?, mtime_ns = ? WHERE path = ?", hashed.touched)
        conn.executemany(
            f"INSERT INTO images ({quoted}) VALUES ({', '.join('?' * len(_ROW_COLUMNS))}) "
            f"ON CONFLICT(image_id) DO UPDATE SET {updates}, "
            "updated = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
            params,
        )
    if shard is not None:
        state.by_hash.update((records[i][1]["sha1"], (shard, pos_in_shard[i])) for i in keep)
    stats.touched += len(hashed.touched)
    return shard


def finish_sync(coll: Collection, stats: UpdateStats) -> None:
    """After the last chunk: bump the generation, rewrite the ``rows.parquet`` snapshot and
    build, keep or remove the faiss index (``stats.index`` says which)."""
    with transaction(coll.conn) as conn:
        coll.set_meta(conn, generation=coll.generation + 1)
    coll.write_rows_snapshot()
    stats.index = ensure_index(coll)
    log.info("collection %s: %s", coll.name, stats.as_dict())


def sync(
    coll: Collection,
    enc: Encoder,
    inat: InatMetadata | None,
    batch_size: int,
    chunk_size: int,
    progress: bool,
    workers: int,
) -> UpdateStats:
    """Bring ``coll`` up to date with its folder: plan, then hash / embed / commit every
    ``chunk_size`` files, then finish (see the module docs). Call with the writer lock held."""
    from inquire.embed.pipeline import progress_bar

    stats = UpdateStats()
    plan = plan_sync(coll)
    stats.unchanged = len(plan.unchanged)
    # Read the embedded hashes before the removals: a file moved (or renamed) since the last
    # run is "gone" at its old path and new at its new one, and its vector is reused.
    state = IngestState.start(coll, plan, inat)
    commit_removals(coll, plan.gone)
    stats.removed = len(plan.gone)
    if inat is not None:
        _refresh_json_metadata(coll, inat, plan.unchanged)
    old_rows = ShardRows(coll)

    bar = progress_bar(disable=not progress, label=f"collection {coll.name}")
    task = bar.add_task("sync", total=len(plan.todo), rate="")
    start = time.perf_counter()
    done = [0]  # files handled by this run: the rate counts encoder work and cheap files alike

    def advance(n: int) -> None:
        done[0] += n
        rate = done[0] / max(time.perf_counter() - start, 1e-9)
        bar.update(task, advance=n, rate=f"{rate:,.1f} img/s")

    with bar:
        for lo in range(0, len(plan.todo), chunk_size):
            chunk = plan.todo[lo : lo + chunk_size]
            hashed = hash_chunk(coll, plan.files, chunk, state, inat, stats)
            vectors = embed_chunk(coll, enc, hashed, old_rows, stats, batch_size, workers, advance)
            commit_chunk(coll, hashed, vectors, state, stats)
            advance(len(chunk) - len(hashed.to_encode))  # files that needed no encoder work
    finish_sync(coll, stats)
    return stats


def _refresh_json_metadata(coll: Collection, inat: InatMetadata, paths: list[str]) -> None:
    """Apply a new or changed train.json to files that are otherwise unchanged (no embedding
    work): fields the JSON has replace the stored ones, fields it lacks are kept."""
    stamp = f"{inat.path}:{inat.path.stat().st_mtime_ns}"
    if coll.meta().get("metadata_stamp") == stamp:
        return
    sets = ", ".join(f'"{f}" = COALESCE(?, "{f}")' for f in FIELDS)
    params = [(*(rec[f] for f in FIELDS), p) for p in paths if (rec := inat.get(p)) is not None]
    with transaction(coll.conn) as conn:
        conn.executemany(f"UPDATE images SET {sets} WHERE path = ?", params)
        coll.set_meta(conn, metadata_stamp=stamp)
