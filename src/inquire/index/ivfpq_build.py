"""Building the partitioned IVF-PQ index: train the quantizer, plan and encode partitions.

:func:`build` trains once (``trained.faiss``), then encodes store rows not yet in a partition
(in this process, or through a :class:`PartitionRunner` such as Ray Data tasks), recording
each finished partition in the manifest so an interrupted build resumes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inquire._io import atomic_path
from inquire.errors import InputError
from inquire.index.ivfpq_exact import RowSource, gather
from inquire.index.ivfpq_manifest import (
    MANIFEST,
    TRAINED,
    Manifest,
    PartitionInfo,
    ScaleSettings,
    check_current,
    default_nlist,
    read_manifest,
    shard_signature,
    write_manifest,
)

log = logging.getLogger(__name__)

ADD_BLOCK_ROWS = 65536
PQ_TRAIN_ITERATIONS = 15
PQ_TRAIN_POINTS_PER_CENTROID = 64

ProgressFn = Callable[[int, int], None]


def _faiss() -> Any:
    from inquire.index.ann import _faiss as load

    return load()


def train(
    store: RowSource, folder: str | os.PathLike[str], settings: ScaleSettings, seed: int = 0
) -> Manifest:
    """Train the quantizer on a sample of ``store`` and start an empty index in ``folder``.

    Writes ``trained.faiss`` and a manifest with no partitions. Needs at least ``nlist``
    rows and 256 (PQ centroids per sub-quantizer)."""
    faiss = _faiss()
    settings = settings.check(store.dim)
    n = len(store)
    nlist = settings.nlist or default_nlist(n)
    if n < 256:  # 2**8 centroids per PQ sub-quantizer, whatever nlist is
        raise InputError(
            f"an IVF-PQ index needs at least 256 rows to train its codebooks, the store has "
            f"{n}; searches this small are exact without an index"
        )
    if n < nlist:
        raise InputError(
            f"an IVF-PQ index with {nlist} lists needs at least {nlist} rows to train, the "
            f"store has {n}; use a smaller nlist (at most {n}) or exact search"
        )
    size = min(n, settings.train_size or max(64 * nlist, 20_000))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=size, replace=False))
    sample = np.ascontiguousarray(gather(store, rows), np.float32)
    factory = settings.factory(nlist)
    index = faiss.index_factory(store.dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    # Polysemous training (a Hamming-order of the codes for a search mode not used here) cost
    # more than all the rest of training together (measured); PQ k-means in 2..8 dims is
    # memory-bound, so it sees at most 64 rows per centroid, 15 rounds: the rescoring makes
    # up for the small loss in code quality.
    ivf.do_polysemous_training = False
    ivf.pq.cp.niter = PQ_TRAIN_ITERATIONS
    ivf.pq.cp.max_points_per_centroid = PQ_TRAIN_POINTS_PER_CENTROID
    log.info("training %s on %d of %d rows", factory, size, n)
    index.train(sample)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / TRAINED) as tmp:
        faiss.write_index(index, str(tmp))
    man = Manifest(store.dim, nlist, factory, settings, [], size)
    write_manifest(folder, man)
    return man


def plan_partitions(
    offsets: Sequence[int], start_row: int, partition_rows: int, first_number: int
) -> list[PartitionInfo]:
    """Ranges of whole shards from ``start_row`` on, each closing at ``partition_rows``."""
    ends = [int(o) for o in offsets[1:] if int(o) > start_row]
    out: list[PartitionInfo] = []
    lo = start_row
    for end in ends:
        if end - lo >= partition_rows:
            out.append(PartitionInfo(first_number + len(out), lo, end))
            lo = end
    if ends and lo < ends[-1]:
        out.append(PartitionInfo(first_number + len(out), lo, ends[-1]))
    return out


def encode_partition(
    store: RowSource,
    folder: str | os.PathLike[str],
    part: PartitionInfo,
    existing: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``part_{number}.faiss`` holding the codes of rows ``[lo, hi)``.

    ``existing``: the partition file holds a prefix of these rows already (an append); only
    the rows past it are encoded. Returns the rows encoded. The file is replaced atomically,
    so an interrupted run leaves the old partition (or none) in place.
    """
    faiss = _faiss()
    folder = Path(folder)
    path = folder / part.file
    if existing and path.is_file():
        index = faiss.read_index(str(path))
    else:
        index = faiss.read_index(str(folder / TRAINED))
    start = part.lo + int(index.ntotal)
    done = 0
    for lo in range(start, part.hi, ADD_BLOCK_ROWS):
        hi = min(part.hi, lo + ADD_BLOCK_ROWS)
        block = np.ascontiguousarray(gather(store, np.arange(lo, hi)), np.float32)
        index.add_with_ids(block, np.arange(lo - part.lo, hi - part.lo, dtype=np.int64))
        done += hi - lo
        if progress is not None:
            progress(hi - lo)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return done


class PartitionRunner(Protocol):
    """Encodes a list of partitions (in this process, or as Ray Data tasks)."""

    def __call__(
        self,
        store_root: str,
        folder: str,
        parts: list[PartitionInfo],
        existing: set[int],
        progress: Callable[[int], None] | None,
    ) -> None: ...


def run_local(
    store_root: str,
    folder: str,
    parts: list[PartitionInfo],
    existing: set[int],
    progress: Callable[[int], None] | None,
) -> None:
    """Encode ``parts`` one after the other in this process."""
    from inquire.embed.store import EmbeddingStore

    store = EmbeddingStore(store_root)
    for p in parts:
        encode_partition(store, folder, p, existing=p.number in existing, progress=progress)


def build(
    store: Any,
    folder: str | os.PathLike[str],
    settings: ScaleSettings | None = None,
    *,
    rebuild: bool = False,
    runner: PartitionRunner | None = None,
    progress: ProgressFn | None = None,
    seed: int = 0,
) -> Manifest:
    """Build or extend the partitioned index of ``store`` (an EmbeddingStore) in ``folder``.

    Trains the quantizer if the folder has none (or ``rebuild``), then encodes every store row
    not in a partition yet: the last partition grows until it holds ``partition_rows`` rows,
    further rows open new partitions. Each finished partition is recorded in the manifest at
    once, so an interrupted build resumes where it stopped. ``runner``: how partitions are
    encoded (:func:`run_local` by default; :func:`inquire.index.ray_serve.run_ray` runs them
    as Ray Data tasks in parallel). ``progress(done_rows, total_rows)``.
    """
    folder = Path(folder)
    # Temporary files of a build that was killed (SIGKILL, power loss) while writing; the
    # caller is the collection's one writer, so none of them is being written now.
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
        tmp.unlink(missing_ok=True)
    man = None if rebuild else read_manifest(folder)
    if (
        man is not None
        and settings is not None
        and _build_keys(settings) != _build_keys(man.settings)
    ):
        raise InputError(
            f"the index in {str(folder)!r} was built with {_build_keys(man.settings)}, not "
            f"{_build_keys(settings)}; rebuild it to change how it is built"
        )
    if man is not None:
        check_current(store, man)
    if man is None:
        if rebuild and folder.is_dir():
            # The manifest first: a rebuild killed from here on leaves no manifest naming
            # deleted partitions (searches are exact until the rebuild is run again).
            (folder / MANIFEST).unlink(missing_ok=True)
            for p in folder.glob("*.faiss"):
                p.unlink()
        man = train(store, folder, settings or ScaleSettings(), seed=seed)
    elif settings is not None:
        man.settings = replace(
            man.settings,
            nprobe=settings.nprobe,
            rescore=settings.rescore,
            exact_below=settings.exact_below,
        )
    parts = list(man.partitions)
    old_rows = man.rows
    existing: set[int] = set()
    first = len(parts)
    start = old_rows
    if parts and start < len(store) and parts[-1].hi - parts[-1].lo < man.settings.partition_rows:
        last = parts.pop()  # still open: the new rows go on growing it
        start, first = last.lo, last.number
        existing.add(last.number)
    plan = plan_partitions(store.offsets, start, man.settings.partition_rows, first)
    total = len(store) - old_rows
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    if runner is not None and plan:  # all at once, in parallel; recorded when all are written
        runner(str(store.root), str(folder), plan, existing, None)
        advance(total)
        plan_done = plan
    else:
        plan_done = []
        for part in plan:  # one by one, each recorded at once: a rerun resumes after it
            run_local(str(store.root), str(folder), [part], existing, advance)
            plan_done.append(part)
            man.partitions = parts + plan_done
            man.shards = shard_signature(store, man.rows)
            write_manifest(folder, man)
    man.partitions = parts + plan_done
    man.shards = shard_signature(store, man.rows)
    write_manifest(folder, man)
    return man


def _build_keys(s: ScaleSettings) -> dict[str, int]:
    return {"nlist": s.nlist, "pq_m": s.pq_m, "partition_rows": s.partition_rows}
