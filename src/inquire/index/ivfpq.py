"""A compressed, partitioned index over an embedding store: faiss IVF-PQ + exact rescoring.

Built for collections that outgrow one machine's memory (:doc:`docs/scale.md`):

- **One trained quantizer.** A faiss ``IVF{nlist},PQ{m}x8`` index (inner product) is trained
  once on a sample of the store and saved empty (``trained.faiss``); every partition is a
  copy of it holding the codes of its rows, so codes from any partition are comparable.
- **Partitions.** A partition is a contiguous run of store rows ``[lo, hi)`` (whole shards),
  saved as ``part_{i}.faiss`` and read memory-mapped (``faiss.IO_FLAG_MMAP``): the codes stay
  on disk and in the page cache. faiss ids are rows relative to ``lo``. Adding photos appends
  codes to the last partition while it holds fewer than ``partition_rows`` rows, else opens a
  new one; deletions are the caller's row mask; nothing is rebuilt unless asked.
- **Exact rescoring.** A search takes ``k x rescore`` candidates per query from faiss and
  scores them again from the float16 shards (memory-mapped), so every returned score is an
  exact score: the float64 dot product of the stored float16 row and the float32 query,
  rounded to float32 (the rule of :func:`inquire.index.topk.brute_force`). That score does not
  depend on which rows are scored together, so one partition, many partitions, in one process
  or on Ray actors, all return the same bits.
- **A router per search.** When the mask selects at most ``exact_below`` rows, those rows are
  searched exactly (no approximation at all); otherwise faiss searches with the selection as
  an ``IDSelectorBitmap`` and ``nprobe`` widened as the selected share ``s`` falls
  (``nprobe / s``, capped at ``nlist``). A query whose probed lists hold fewer selected
  rows than it must return is answered exactly within its partition.

Ranking rule: score descending, ties by image id ascending, padding id ``-1`` / ``-inf``
(:mod:`inquire.index.topk`). A partition returns every candidate scoring at least its k-th
best (ties included), so the driver's merge under the rule equals one search over all rows.

Layout of an index folder::

    manifest.json    settings, dim, factory, partitions [{number, lo, hi}], measured recall
    trained.faiss    the trained, empty IVF-PQ index every partition copies
    part_{i}.faiss   partition i's codes (ids: row - lo)

The code lives in four modules, one job each, whose public names this module gathers:
:mod:`~inquire.index.ivfpq_manifest` (settings, manifest, staleness checks),
:mod:`~inquire.index.ivfpq_exact` (exact scores over rows), :mod:`~inquire.index.ivfpq_build`
(training and encoding partitions) and :mod:`~inquire.index.ivfpq_search` (router, partition
search, merge, backends, measured recall).
"""

from __future__ import annotations

from inquire.index.ivfpq_build import (
    ADD_BLOCK_ROWS,
    PartitionRunner,
    ProgressFn,
    build,
    encode_partition,
    plan_partitions,
    run_local,
    train,
)
from inquire.index.ivfpq_exact import (
    EXACT_BLOCK_ROWS,
    RowSource,
    exact_over_rows,
    exact_scores,
    gather,
    screen_margin,
)
from inquire.index.ivfpq_manifest import (
    FORMAT,
    MANIFEST,
    TRAINED,
    BrokenScaleIndexError,
    Manifest,
    PartitionInfo,
    ScaleSettings,
    StaleScaleIndexError,
    check_current,
    default_nlist,
    index_file_bytes,
    read_manifest,
    shard_signature,
    write_manifest,
)
from inquire.index.ivfpq_search import (
    RECALL_K,
    RECALL_QUERIES,
    Backend,
    BackendFactory,
    LocalBackend,
    Partition,
    Route,
    ScaleIndex,
    _faiss_reason,
    backend_factory,
    choose_route,
    measure_recall,
    merge,
    record_recall,
    widened_nprobe,
)

__all__ = [
    "ADD_BLOCK_ROWS",
    "EXACT_BLOCK_ROWS",
    "FORMAT",
    "MANIFEST",
    "RECALL_K",
    "RECALL_QUERIES",
    "TRAINED",
    "Backend",
    "BackendFactory",
    "BrokenScaleIndexError",
    "LocalBackend",
    "Manifest",
    "Partition",
    "PartitionInfo",
    "PartitionRunner",
    "ProgressFn",
    "Route",
    "RowSource",
    "ScaleIndex",
    "ScaleSettings",
    "StaleScaleIndexError",
    "_faiss_reason",
    "backend_factory",
    "build",
    "check_current",
    "choose_route",
    "default_nlist",
    "encode_partition",
    "exact_over_rows",
    "exact_scores",
    "gather",
    "index_file_bytes",
    "measure_recall",
    "merge",
    "plan_partitions",
    "read_manifest",
    "record_recall",
    "run_local",
    "screen_margin",
    "shard_signature",
    "train",
    "widened_nprobe",
    "write_manifest",
]
