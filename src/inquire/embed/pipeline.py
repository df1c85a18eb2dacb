"""The embedding pipeline: reader -> encoder -> writer, shard by shard, resumable.

Output (the clip-retrieval layout of INQUIRE's published embeddings, plus a manifest)::

    OUT/img_emb/img_emb_{i}.npy          (n_i, d) float16, L2-normalised rows
    OUT/metadata/metadata_{i}.parquet    image_path [, image_id]   (row-aligned)
    OUT/manifest.json                    model id + revision, preprocessing, precision, dim,
                                         count, source, and one entry per completed shard
                                         (row count, SHA-256 of both files, bad images)
    OUT/errors.csv                       path, reason: images that could not be decoded

Shard ``i`` always covers input items ``[i * shard_size, (i + 1) * shard_size)`` of the
source's fixed order (fewer rows when some fail to decode). A shard is written by
:func:`inquire.embed.folder.write_shard` (temporary files renamed into place, metadata first,
embeddings second) and only then recorded in the manifest, which is the commit:
:class:`~inquire.embed.store.EmbeddingStore` reads only the shards the manifest lists. A
rerun of the same command skips recorded shards and rewrites anything else, so an
interrupted run ends with exactly the output of an uninterrupted one.

Engines (rows of ``ENGINES``): ``local`` decodes in torch DataLoader worker processes
(:mod:`inquire.embed.reader`) and encodes in this process; ``ray`` runs the same stages as
Ray Data ``map_batches`` over a Ray cluster (:mod:`inquire.embed.ray_engine`). Both hand
their results to the one :class:`ShardWriter`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from inquire._io import atomic_open, check_output_folder, file_sha256
from inquire._lock import writer_lock
from inquire.embed import folder
from inquire.embed.base import ImageEncoder
from inquire.embed.reader import decode_batches
from inquire.embed.sources import ImageSource, open_source
from inquire.errors import InputError, UnknownNameError

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "inquire-embeddings/1"
ERRORS_CSV = "errors.csv"
# Manifest fields that must match for a rerun to continue an existing output folder.
_RESUME_KEYS = (
    "model_id",
    "revision",
    "precision",
    "dim",
    "preprocessing",
    "shard_size",
    "source_fingerprint",
)


@dataclass(frozen=True)
class EmbedSummary:
    """What a pipeline run did. ``seconds``/``images_per_s`` cover this run's new shards."""

    out: Path
    count: int  # rows in the output (all shards)
    n_errors: int  # images listed in errors.csv
    n_shards: int
    new_images: int  # input items processed by this run (0 when everything was done)
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.new_images / self.seconds if self.seconds > 0 else 0.0


class ShardWriter:
    """Writes shards atomically and keeps the manifest, the pipeline's commit record."""

    def __init__(
        self,
        out: Path,
        encoder: ImageEncoder,
        source: ImageSource,
        shard_size: int,
        overwrite: bool = False,
    ) -> None:
        if shard_size < 1:
            raise InputError(f"shard_size must be a positive integer, got {shard_size}")
        self.out, self.source, self.shard_size = out, source, shard_size
        self.n_shards = max(1, -(-len(source) // shard_size))
        self.dim = encoder.dim
        header = {
            "format": MANIFEST_FORMAT,
            "model_id": encoder.model_id,
            "revision": encoder.revision,
            "precision": encoder.precision,
            "dim": encoder.dim,
            "dtype": "float16",
            "normalized": True,
            "preprocessing": encoder.preprocess_info,
            "source": source.describe(),
            "source_fingerprint": source.fingerprint(),
            "shard_size": shard_size,
            "n_shards": self.n_shards,
        }
        self.manifest = self._open(header, overwrite)
        self._pending: dict[int, list[tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]]] = {}
        self._seen: dict[int, int] = {}

    def _open(self, header: dict[str, Any], overwrite: bool) -> dict[str, Any]:
        man_path = folder.manifest_path(self.out)
        old = None if overwrite else _read_manifest(self.out)
        if old is not None:
            # Compared as JSON values (the manifest turned tuples into lists).
            new = json.loads(json.dumps(header, default=str))
            diff = [k for k in _RESUME_KEYS if old.get(k) != new[k]]
            if diff:
                shown = "; ".join(
                    f"{k}: {str(old.get(k))[:80]!r} there, {str(new[k])[:80]!r} now" for k in diff
                )
                raise InputError(
                    f"{str(self.out)!r} holds embeddings of another run ({shown}); pass another "
                    f"--out folder, or --overwrite to replace them"
                )
            for sh in old["shards"]:
                if not all(p.is_file() for p in folder.shard_paths(self.out, int(sh["index"]))):
                    raise InputError(
                        f"shard {sh['index']} listed in {str(man_path)!r} is missing its files; "
                        f"pass --overwrite to start {str(self.out)!r} again"
                    )
            log.info(
                "resuming %s: %d of %d shards done", self.out, len(old["shards"]), old["n_shards"]
            )
            manifest = {**old, **header, "shards": old["shards"]}
        else:
            if (
                not overwrite
                and folder.is_embedding_folder(self.out)
                and any(folder.emb_dir(self.out).iterdir())
            ):
                raise InputError(
                    f"{str(self.out)!r} already holds img_emb/ shards but no manifest.json of "
                    f"inquire embed; choose an empty --out folder or pass --overwrite"
                )
            if overwrite:
                _clear_output(self.out)
            manifest = {**header, "shards": [], "count": 0, "n_errors": 0, "complete": False}
            manifest["created"] = _now()
        folder.prepare_folder(self.out)
        return manifest

    @property
    def done(self) -> set[int]:
        return {int(sh["index"]) for sh in self.manifest["shards"]}

    def todo(self) -> list[int]:
        """Shard indices still to write, ascending."""
        done = self.done
        return [s for s in range(self.n_shards) if s not in done]

    def bounds(self, shard: int) -> tuple[int, int]:
        """Input item range ``[lo, hi)`` of ``shard``."""
        lo = shard * self.shard_size
        return lo, min(lo + self.shard_size, len(self.source))

    def add(self, items: np.ndarray, emb: np.ndarray, errors: list[tuple[int, str]]) -> None:
        """Record results for input ``items`` (embedded rows ``emb``, failed ``errors``).

        Items may come in any order and any grouping; each shard is committed as soon as all
        its items have been seen.
        """
        all_items = np.concatenate([items, np.array([i for i, _ in errors], np.int64)])
        shards = all_items // self.shard_size
        for s in np.unique(shards):
            s = int(s)
            keep = items // self.shard_size == s
            errs = [(i, r) for i, r in errors if i // self.shard_size == s]
            self._pending.setdefault(s, []).append((items[keep], emb[keep], errs))
            self._seen[s] = self._seen.get(s, 0) + int((shards == s).sum())
            lo, hi = self.bounds(s)
            if self._seen[s] == hi - lo:
                self.commit(s)
            elif self._seen[s] > hi - lo:
                raise RuntimeError(f"shard {s} received more items than it holds")

    def commit(self, shard: int) -> None:
        """Write shard files atomically, then record the shard in the manifest."""
        parts = self._pending.pop(shard)
        self._seen.pop(shard)
        items = np.concatenate([p[0] for p in parts]).astype(np.int64)
        emb = np.concatenate([p[1] for p in parts]).reshape(-1, self.dim)
        order = np.argsort(items, kind="stable")
        items, emb = items[order], emb[order]
        errors = sorted(e for p in parts for e in p[2])
        ids = self.source.image_ids
        emb_path, meta_path = folder.write_shard(
            self.out,
            shard,
            emb,
            [self.source.paths[i] for i in items],
            ids[items] if ids is not None else None,
        )
        emb_rel, meta_rel = folder.shard_relpaths(shard)
        entry = {
            "index": shard,
            "count": len(items),
            "n_inputs": len(items) + len(errors),
            "img_emb": emb_rel,
            "metadata": meta_rel,
            "sha256_img_emb": file_sha256(emb_path),
            "sha256_metadata": file_sha256(meta_path),
            "errors": [[self.source.paths[i], reason] for i, reason in errors],
        }
        shards = [sh for sh in self.manifest["shards"] if int(sh["index"]) != shard]
        self.manifest["shards"] = sorted([*shards, entry], key=lambda sh: int(sh["index"]))
        self._write_manifest()
        log.debug("committed shard %d (%d rows, %d errors)", shard, len(items), len(errors))

    def _write_manifest(self, complete: bool = False) -> None:
        m = self.manifest
        m["count"] = sum(int(sh["count"]) for sh in m["shards"])
        m["n_errors"] = sum(len(sh["errors"]) for sh in m["shards"])
        m["complete"] = complete
        m["updated"] = _now()
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "reason"])
        for sh in m["shards"]:
            w.writerows(sh["errors"])
        with atomic_open(self.out / ERRORS_CSV, "w", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
        folder.write_manifest(self.out, m)

    def finish(self) -> None:
        if self._pending or self.todo():
            raise RuntimeError(f"shards {self.todo()} were not completed")
        self._write_manifest(complete=True)


def _read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of an earlier ``inquire embed`` into ``out`` (None when there is none)."""
    man = folder.read_manifest(out, fix="pass --overwrite to start this folder again")
    if man is not None and man.get("format") != MANIFEST_FORMAT:
        raise InputError(
            f"{str(folder.manifest_path(out))!r} is not a manifest of inquire embed (format "
            f"{man.get('format')!r}); choose another --out folder"
        )
    return man


def _clear_output(out: Path) -> None:
    folder.remove_shards(out)
    (out / ERRORS_CSV).unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# The local engine: DataLoader workers decode, this process encodes and writes.


def progress_bar(console: Any = None, disable: bool = False, label: str = "embedding") -> Any:
    """A rich ``Progress`` with count, percentage, rate and ETA columns (on stderr).

    Tasks take a ``rate`` field (e.g. ``"12.3 img/s"``), updated by the caller.
    """
    from inquire._progress import rich_progress

    return rich_progress(label, console=console, disable=disable)


def _shard_batches(writer: ShardWriter, shards: list[int], batch_size: int) -> Iterator[list[int]]:
    # Batches never cross a shard boundary, so each shard commits as soon as it is encoded.
    for s in shards:
        lo, hi = writer.bounds(s)
        for b in range(lo, hi, batch_size):
            yield list(range(b, min(b + batch_size, hi)))


def _run_local(
    encoder: ImageEncoder,
    source: ImageSource,
    writer: ShardWriter,
    batch_size: int,
    workers: int,
    address: str | None,
    advance: Callable[[int], None],
) -> None:
    if address is not None:
        raise InputError("--address joins a Ray cluster; use it with --engine ray")
    batches = list(_shard_batches(writer, writer.todo(), batch_size))
    # An encoder without its own preprocessing (preprocess None) takes the decoded PIL images.
    stack = encoder.preprocess is not None
    for items, pixels, errors in decode_batches(
        source, batches, encoder.preprocess, workers, stack=stack
    ):
        emb = (
            encoder.encode_pixels(pixels)
            if pixels is not None
            else np.zeros((0, encoder.dim), np.float32)
        )
        writer.add(items, emb, errors)
        advance(len(items) + len(errors))


def _run_ray(
    encoder: ImageEncoder,
    source: ImageSource,
    writer: ShardWriter,
    batch_size: int,
    workers: int,
    address: str | None,
    advance: Callable[[int], None],
) -> None:
    from inquire.embed.ray_engine import run_ray

    items = [i for s in writer.todo() for i in range(*writer.bounds(s))]
    run_ray(encoder, source, items, writer.add, batch_size, workers, address, advance)


Engine = Callable[
    [ImageEncoder, ImageSource, ShardWriter, int, int, "str | None", Callable[[int], None]], None
]
ENGINES: dict[str, Engine] = {"local": _run_local, "ray": _run_ray}


def _as_image_encoder(
    model: str | ImageEncoder, device: str | None, precision: str | None, batch_size: int
) -> ImageEncoder:
    from inquire.embed.models import load_encoder

    if isinstance(model, str):
        encoder: Any = load_encoder(model, device or "cpu", precision or "fp32", batch_size)
    else:
        encoder = model
        for name, asked in (("device", device), ("precision", precision)):
            have = getattr(encoder, name, None)
            if asked is not None and asked != have:
                raise InputError(
                    f"{name}={asked!r} asked for, but the encoder passed in was loaded with "
                    f"{name}={have!r}; load it with {name}={asked!r} or pass the model id"
                )
    if not isinstance(encoder, ImageEncoder):
        raise InputError(
            f"{getattr(encoder, 'model_id', encoder)!r} cannot embed images in the pipeline "
            f"(it lacks preprocess/encode_pixels); use an open_clip: or hf_clip: model"
        )
    return encoder


def embed_images(
    model: str | ImageEncoder,
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    batch_size: int = 64,
    shard_size: int = 100_000,
    workers: int = 2,
    engine: str = "local",
    address: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    console: Any = None,
    lock_timeout: float | None = None,
) -> EmbedSummary:
    """Embed every image of ``images`` with ``model`` into ``out`` (see the module docs).

    ``model``: a model id (loaded with ``device`` (default cpu), ``precision`` (default fp32)
    and ``batch_size``) or a loaded image encoder, which keeps its own device and precision
    (passing different ones is an error) and splits each batch of ``batch_size`` decoded
    images by its own batch size. ``images``: a folder tree, an uncompressed tar
    archive, or a COCO-style JSON / iNat24 ``train/`` tree. ``workers``: decoding processes
    (0 decodes in this process); with ``engine="ray"``, the number of encoder actors.
    ``address``: a Ray cluster to join (``engine="ray"`` only). Rerunning the same call
    continues an interrupted run; ``overwrite=True`` starts over.

    ``out`` has one writer at a time: while another process embeds into it, this call waits
    (a warning says so; at most ``lock_timeout`` seconds when given, then
    :class:`~inquire.errors.BusyError`) and then continues from what that run committed.
    ``out`` naming an existing file is an :class:`InputError` before any work.
    """
    if engine not in ENGINES:
        raise UnknownNameError("engine", engine, ENGINES)
    if workers < 0:
        raise InputError(f"workers must be >= 0, got {workers}")
    if batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}")
    out_path = check_output_folder(out)
    source = open_source(images)
    with source:
        encoder = _as_image_encoder(model, device, precision, batch_size)
        # One writer per folder: a second run waits here, then resumes from the manifest
        # the first one left (its shards are skipped, never embedded twice).
        lock = writer_lock(out_path, f"embedding folder {str(out_path)!r}", lock_timeout)
        with lock:
            return _embed_locked(
                encoder,
                source,
                out_path,
                batch_size,
                shard_size,
                workers,
                engine,
                address,
                overwrite,
                progress,
                console,
            )


def _embed_locked(
    encoder: ImageEncoder,
    source: ImageSource,
    out_path: Path,
    batch_size: int,
    shard_size: int,
    workers: int,
    engine: str,
    address: str | None,
    overwrite: bool,
    progress: bool,
    console: Any,
) -> EmbedSummary:
    """The body of :func:`embed_images`, run while holding the folder's writer lock."""
    writer = ShardWriter(out_path, encoder, source, shard_size, overwrite)
    todo = writer.todo()
    n_todo = sum(hi - lo for lo, hi in map(writer.bounds, todo))
    start = time.perf_counter()
    with progress_bar(console, disable=not progress) as bar:
        task = bar.add_task("embed", total=len(source), completed=len(source) - n_todo, rate="")

        processed = [0]  # items handled by this run (the bar also counts earlier runs)

        def advance(n: int) -> None:
            processed[0] += n
            rate = processed[0] / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=n, rate=f"{rate:,.1f} img/s")

        if todo:
            log.info(
                "embedding %d images (%d shards) of %s with %s",
                n_todo,
                len(todo),
                source.root,
                encoder.model_id,
            )
            ENGINES[engine](encoder, source, writer, batch_size, workers, address, advance)
    seconds = time.perf_counter() - start
    writer.finish()
    return EmbedSummary(
        out=out_path,
        count=int(writer.manifest["count"]),
        n_errors=int(writer.manifest["n_errors"]),
        n_shards=writer.n_shards,
        new_images=n_todo,
        seconds=seconds,
    )
