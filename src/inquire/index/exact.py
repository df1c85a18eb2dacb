"""Exact top-k inner-product search over an :class:`~inquire.embed.EmbeddingStore`.

**The exact score** of a row for a query is their real inner product rounded once to float32
(:mod:`inquire.index.score`): it does not depend on the call's shape, the CPU, the BLAS or
the thread count, and every path below returns exactly it.

How it works (all queries at once, one pass over the store):

1. The store is read in blocks of rows that never cross a shard boundary
   (:mod:`inquire.index.blocks`). A reader thread reads the next block's bytes straight from
   the shard file (``os.preadv`` into one of a few reused buffers: the pages stay in the OS
   cache and out of this process's resident memory) while the scoring threads work on the
   current one (:mod:`inquire.index.fanout`). Blocks are ~8 MiB by default, so the buffers
   fit in the CPU's last-level cache and the GEMMs read the rows from there
   (:data:`inquire.index.blocks.CACHE_BLOCK_BYTES`).
2. **Approximate every row** (:mod:`inquire.index.scorer`). Each block is cut into chunks of
   ``chunk_rows`` rows: float16 -> float32 into one reused buffer (torch's ``copy_`` when
   torch is installed, ~10x faster than numpy's ``astype``; :mod:`inquire.index.kernels`),
   then one GEMM ``queries @ chunk.T -> (nq, chunk_rows)``: float32 (``screen="off"``) or
   bfloat16 (``screen="bf16"``, see :mod:`inquire.index.screen`). Each
   approximate score ``s~`` comes with a proven interval around the exact score: ``|exact -
   s~| <= a(q) max||x|| (+ c|s~| for bfloat16)``, one margin per query and chunk (the chunk's
   largest row norm, computed once per resident store).
3. **Keep only what may reach the top k.** Each query's :class:`~inquire.index.pool.
   CandidatePool` holds the rows whose upper bound reaches its floor, a proven lower bound of
   the k-th exact score; one vectorised comparison per chunk finds them (after the first
   chunks a tiny fraction), and the floor rises as the pool fills (its k-th upper bound minus
   the widest interval). While a query has no floor yet, or a chunk beats an unusual number
   of pooled rows, the chunk's own k-th approximate score (``np.partition``, linear time)
   gives one. The floors start at a guess from a sample of the store
   (:mod:`inquire.index.speculate`), checked at the end: a query whose k-th exact score is
   below its guess is searched again without one.
4. **Rescore the survivors exactly** at the end (:mod:`inquire.index.rescore`: each distinct
   row read once, with ``preadv``, on every scoring thread; float64, rounded once), and select them
   with :class:`inquire.index.topk.TopK` under the one ranking rule. With the float32 bound the
   pool ends with about ``k`` rows plus the few within twice the margin of the k-th score; a
   pool that grows past ``4 k + 4096`` rows (near ties the bound cannot separate) is rescored
   at once, so memory stays bounded.

Both approximations therefore return the same ids and scores, bit for bit, on every CPU.
``screen="auto"`` (default) takes the float32 GEMM unless the CPU lists bfloat16 units and a
timed trial on the search's first chunks finds bfloat16 faster
(:class:`~inquire.index.fanout.Chooser`).

Memory: the read buffers, per scoring thread one float32 chunk and one ``(nq, chunk_rows)``
score chunk (two while oneDNN runs the float32 GEMM: it writes each chunk's scores anew),
the pools (about ``k`` keys per query) and the results; independent of N.

Result contract (:mod:`inquire.index.base`): ``scores (nq, k) float32`` descending, ``ids
(nq, k) int64`` image ids, equal scores ordered by image id ascending. When fewer than ``k``
rows may be returned the rows are padded with id ``-1`` and score ``-inf``
(``Run.from_arrays`` drops the padding). NaN scores never match; a chunk holding a row with
an infinite or NaN value has no bound and is scored exactly pair by pair.
:class:`ExactIndex` is this search behind the :class:`~inquire.index.base.Searcher` protocol;
:func:`search` is the same call with the store as first argument.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index import fused
from inquire.index.base import check_mask
from inquire.index.bf16_copy import copy_expected, ensure_copy
from inquire.index.blocks import DEFAULT_MEMORY_MB, auto_block_rows, iter_blocks
from inquire.index.fanout import Chooser, score_in_threads
from inquire.index.kernels import Kernels
from inquire.index.scorer import Scorer, SharedFloor
from inquire.index.screen import (
    MIN_TRIAL_CHUNKS,
    Screen,
    ScreenPlan,
    check_screen,
    keep_choice,
    plan_screen,
)
from inquire.index.speculate import failed, guess_floor
from inquire.index.topk import check_k, rank_ids

log = logging.getLogger(__name__)

#: Queries x k x width from which a search loads the rescoring's compiled kernel in the
#: background while it scans (:mod:`inquire.index.fused`; ~0.3-0.7 s of one core per process,
#: against ~0.6 us saved per pair rescored at d = 1024: at least ~k pairs per query).
FUSED_LOAD_ELEMENTS = 1 << 27
# Kept for callers that passed the old constant; ``None`` means "size from the budget".
DEFAULT_BLOCK_ROWS: int | None = None
#: Rows scored per GEMM. Small enough that the float32 copy of a chunk is still in cache when
#: the GEMM reads it, large enough for the GEMM to run at full speed (measured: 8192 at d=1024).
DEFAULT_CHUNK_ROWS = 8192
#: ``search(bf16_copy=)``: build and read the store's bfloat16 copy, read it only, or never.
Bf16CopyMode = Literal["auto", "use", "off"]
BF16_COPY_MODES: tuple[str, ...] = ("auto", "use", "off")


@dataclass
class SearchStats:
    """What one :func:`search` did (filled in when passed as ``stats``)."""

    screen: str = "off"  # the path that scored most chunks: "bf16" (screened) or "off" (float32)
    queries: int = 0
    rows: int = 0  # rows of the store
    rescored: int = 0  # (query, row) pairs given their exact score (float64, rounded once)
    chunks_bf16: int = 0  # chunks approximated by the bfloat16 GEMM
    chunks_fp32: int = 0  # chunks approximated by the float32 GEMM
    trial: bool = False  # "auto" timed both paths on this search's first chunks
    gemm_seconds: float = 0.0  # time inside the approximating GEMMs, summed over threads
    seconds: float = 0.0  # wall time of the whole search
    rescore_seconds: float = 0.0  # wall time of the final exact rescoring (after the scan)
    threads: int = 1  # scoring threads
    bf16_copy: bool = False  # screened blocks were read from the store's bfloat16 copy
    pooled: int = 0  # (query, row) candidates offered to the pools while scanning
    guessed: int = 0  # queries searched from a guessed floor (inquire.index.speculate)
    searched_again: int = 0  # of those, queries whose guess failed: searched again without
    fp32_gemm: str = "torch"  # who ran the float32 GEMM: "torch", "numpy" or "onednn"
    fp32_fallbacks: int = 0  # float32 GEMMs numpy's BLAS ran instead (see Kernels.fallbacks)
    rescored_fused: int = 0  # of the pairs rescored, those by the compiled kernel (fused)

    @property
    def rescored_per_query(self) -> float:
        """Rows given their exact score per query (both paths rescore their candidates)."""
        return self.rescored / max(self.queries, 1)


def check_queries(store: EmbeddingStore, queries: np.ndarray) -> np.ndarray:
    """``queries`` as a C-ordered, writeable ``(nq, d) float32`` array matching
    ``store.dim`` (a copy where the caller's is read-only: torch reads it without copying,
    and warns about read-only arrays)."""
    # Scores are inner products, so unnormalised queries are allowed here (they scale each
    # query's scores, not its ranking).
    q = store.check_queries(queries, "queries", normalized=False)
    return q if q.flags.writeable else q.copy()


def search(
    store: EmbeddingStore,
    queries: np.ndarray,
    k: int,
    block_rows: int | None = DEFAULT_BLOCK_ROWS,
    memory_mb: int = DEFAULT_MEMORY_MB,
    prefetch: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    threads: int | None = None,
    screen: Screen = "auto",
    stats: SearchStats | None = None,
    mask: np.ndarray | None = None,
    bf16_copy: Bf16CopyMode = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows of ``store`` by inner product with each query, exactly.

    ``queries``: ``(nq, d) float32`` (L2-normalised for cosine similarity).
    ``block_rows``: rows read at a time (default: ~8 MiB of rows, fewer where two staging
    buffers would take more than ``memory_mb`` MiB).
    ``chunk_rows``: rows converted to float32 and approximated by one GEMM.
    ``prefetch``: read the next block on a second thread while scoring this one.
    ``threads``: scoring threads, each owning a core with single-threaded kernels and its
    own top k (default: one per core, at most ``torch.get_num_threads()``; 1 without torch).
    torch's thread count is set to 1 while they run and restored afterwards.
    ``screen``: how rows are approximated before the rows that could reach the top k are
    given their exact score: ``"off"`` by the float32 GEMM, ``"bf16"`` by a bfloat16 GEMM
    (a wider bound; see :mod:`inquire.index.screen`), ``"auto"`` (default) by bfloat16 only
    where it is measured faster on this search's first chunks. The result is the same.
    ``stats``: a :class:`SearchStats` to fill in (the path taken, pairs rescored, timings).
    ``mask``: ``(N,) bool``, rows of the store that may be returned (None: all).
    ``bf16_copy``: where every chunk is screened in bfloat16 (``screen="bf16"``, or ``"auto"``
    after it measured bfloat16 faster for this shape), read the store's bfloat16 copy
    (:mod:`inquire.index.bf16_copy`) instead of converting each chunk: ``"auto"`` (default)
    builds it first where it is missing or stale (once; where it cannot be written, the search
    converts each chunk and logs why once), ``"use"`` reads it only if it exists and is
    current, ``"off"`` never reads it. The result is the same.

    Returns ``scores (nq, k) float32`` descending (each the exact score: the real inner
    product rounded once to float32) and ``ids (nq, k) int64`` image ids; equal scores are
    ordered by image id ascending. When fewer than ``k`` rows may be returned
    (``k > len(store)``, a narrow mask, NaN scores) rows are padded with id ``-1`` and score
    ``-inf``.
    """
    started = time.perf_counter()
    q = check_queries(store, queries)
    k = check_k(k)
    if block_rows is None:
        block_rows = auto_block_rows(store.dim, store.dtype.itemsize, memory_mb)
    if block_rows < 1 or chunk_rows < 1:
        raise InputError(f"block_rows and chunk_rows must be >= 1, got {block_rows}, {chunk_rows}")
    chunk_rows = min(chunk_rows, block_rows)
    screen = check_screen(screen)
    mask = check_mask(mask, len(store))
    if bf16_copy not in BF16_COPY_MODES:
        raise InputError(
            f"bf16_copy must be one of {', '.join(BF16_COPY_MODES)}; got {bf16_copy!r}"
        )
    scores, ids = _search(
        store,
        q,
        k,
        block_rows,
        prefetch,
        chunk_rows,
        threads,
        screen,
        stats,
        mask,
        bf16_copy,
        memory_mb,
    )
    if stats is not None:
        stats.seconds = time.perf_counter() - started
    return scores, ids


def _search(
    store: EmbeddingStore,
    q: np.ndarray,
    k: int,
    block_rows: int,
    prefetch: bool,
    chunk_rows: int,
    threads: int | None,
    screen: Screen,
    stats: SearchStats | None,
    mask: np.ndarray | None,
    bf16_copy: Bf16CopyMode,
    memory_mb: int = DEFAULT_MEMORY_MB,
    guess: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search` of checked arguments; ``guess``: start from a guessed floor
    (:mod:`inquire.index.speculate`), searching again the queries it fails."""
    started = time.perf_counter()
    if len(q) * min(k, len(store)) * store.dim >= FUSED_LOAD_ELEMENTS:
        fused.start_loading()  # the rescoring's compiled kernel, loaded while this scans
    id_keys, sorted_ids = rank_ids(store.ids)
    kernels = Kernels()
    n_workers = kernels.workers(threads)
    # A guessed floor, from a sample scored before the scoring threads take torch's cores.
    floor = guess_floor(store, q, k, kernels, mask, memory_mb) if guess and len(store) else None
    with kernels.single_threaded() if n_workers > 1 else contextlib.nullcontext():

        def plan_for(copy_ahead: bool | Callable[[], bool]) -> ScreenPlan:
            return plan_screen(
                screen,
                q,
                len(store),
                k,
                chunk_rows,
                store.dtype,
                kernels.torch is not None,
                n_workers,
                mask is not None,
                copy=copy_ahead,
            )

        plan = plan_for(_copy_ahead(store, bf16_copy))  # asked only where "auto" may screen
        copy = None
        if plan.method == "bf16" and bf16_copy != "off" and len(store):
            copy = ensure_copy(store, build=bf16_copy == "auto")
            if copy is None and plan.copy:
                # "auto" chose bfloat16 for this shape timed without conversions, but the
                # copy could not be built after all: decide again as a converting search.
                plan = plan_for(False)
        chooser = Chooser(plan.method, plan.key, chunk_rows, plan.copy)
        if plan.method != "bf16" and len(store) >= MIN_TRIAL_CHUNKS * chunk_rows:
            # One scoring thread: the GEMMs run on torch's (or BLAS's) own threads, timed so.
            kernels.choose_gemm(len(q), store.dim, chunk_rows, pooled=n_workers == 1)
        shards = None if copy is None else copy.shards
        shared = SharedFloor(len(q)) if n_workers > 1 else None
        scorers = [
            Scorer(
                store, q, k, chunk_rows, id_keys, kernels, plan.bounds, mask, copy, shared, floor
            )
            for _ in range(n_workers)
        ]
        if n_workers == 1:
            for block in iter_blocks(store, block_rows, prefetch=prefetch, shards=shards):
                for lo in range(0, block.rows, chunk_rows):
                    chooser.run(scorers[0], block, lo, min(chunk_rows, block.rows - lo))
                block.release()
        else:
            score_in_threads(store, block_rows, chunk_rows, prefetch, scorers, chooser, shards)
    if chooser.decided is not None and chooser.key is not None and chooser.clear:
        # For later processes on this machine too (a near call is measured again there).
        keep_choice(chooser.key, chooser.decided)
    # The survivors' exact scores, on the scoring threads' cores (torch's small conversions
    # there run fastest single-threaded, even where the GEMMs used torch's own threads).
    finished = time.perf_counter()
    with kernels.single_threaded() if kernels.torch is not None else contextlib.nullcontext():
        scores, keys = scorers[0].finish(scorers[1:], threads=n_workers)
    finished = time.perf_counter() - finished
    _report_nonfinite(store, sorted(r for sc in scorers for r in sc.nonfinite))
    if stats is not None:
        n_bf16 = sum(sc.chunks["bf16"] for sc in scorers)
        n_fp32 = sum(sc.chunks["fp32"] for sc in scorers)
        stats.screen = "bf16" if n_bf16 > n_fp32 else "off"
        stats.queries, stats.rows = len(q), len(store)
        stats.rescored = scorers[0].rescored
        stats.pooled = sum(sc.pooled for sc in scorers)
        stats.chunks_bf16, stats.chunks_fp32 = n_bf16, n_fp32
        stats.trial = chooser.trial
        stats.gemm_seconds = sum(sc.gemm_seconds for sc in scorers)
        stats.threads = n_workers
        stats.bf16_copy = copy is not None
        stats.fp32_gemm = kernels.fp32_gemm
        stats.fp32_fallbacks = kernels.fallbacks
        stats.seconds = time.perf_counter() - started
        stats.rescore_seconds = finished
        stats.rescored_fused = sum(sc.rescored_fused for sc in scorers)
        stats.guessed = 0 if floor is None else int(np.count_nonzero(~np.isneginf(floor)))
        stats.searched_again = 0
    ids = keys if sorted_ids is None else np.where(keys >= 0, sorted_ids[np.maximum(keys, 0)], -1)
    if floor is not None:
        again = failed(scores, floor)
        if len(again):
            # The guess was above the k-th exact score found: those queries' results may
            # miss rows the guess left out. Searched again without a guess.
            log.info(
                "guessed floor too high for %d of %d queries; searching them again",
                len(again),
                len(q),
            )
            sub = None if stats is None else SearchStats()
            s2, i2 = _search(
                store,
                q[again],
                k,
                block_rows,
                prefetch,
                chunk_rows,
                threads,
                screen,
                sub,
                mask,
                bf16_copy,
                memory_mb,
                guess=False,
            )
            scores[again], ids[again] = s2, i2
            if stats is not None and sub is not None:
                stats.searched_again = len(again)
                stats.rescored += sub.rescored
                stats.pooled += sub.pooled
                stats.gemm_seconds += sub.gemm_seconds
                stats.rescore_seconds += sub.rescore_seconds
                stats.rescored_fused += sub.rescored_fused
                stats.chunks_bf16 += sub.chunks_bf16  # the second pass's chunks too
                stats.chunks_fp32 += sub.chunks_fp32
                stats.fp32_fallbacks += sub.fp32_fallbacks
                stats.screen = "bf16" if stats.chunks_bf16 > stats.chunks_fp32 else "off"
    return scores, ids


def _copy_ahead(store: EmbeddingStore, bf16_copy: str) -> Callable[[], bool]:
    """Whether screening would read the bfloat16 copy ("auto" times its trial so), for
    :func:`~inquire.index.screen.plan_screen` to ask only where "auto" may screen (it may
    check the copy's digest: a full read)."""

    def expected() -> bool:
        return (
            bf16_copy != "off"
            and len(store) > 0
            and copy_expected(store, build=bf16_copy == "auto")
        )

    return expected


def _report_nonfinite(store: EmbeddingStore, rows: list[int]) -> None:
    """Say how many rows of ``store`` hold NaN or infinite values, and which image ids."""
    if not rows:
        return
    ids = store.ids[np.asarray(rows[:10], np.int64)].tolist()
    log.warning(
        "%d embedding row(s) of %s hold NaN or infinite values (their scores are NaN, never "
        "returned, or +-inf, ranked first or last): "
        "image id(s) %s%s; embed those images again",
        len(rows),
        store.root,
        ", ".join(str(i) for i in ids),
        " ..." if len(rows) > 10 else "",
    )


@dataclass
class ExactIndex:
    """Exact search over ``store`` as a :class:`~inquire.index.base.Searcher`.

    The fields are :func:`search`'s options (``screen``, ``threads``, ``block_rows``,
    ``memory_mb``, ``prefetch``, ``chunk_rows``, ``bf16_copy``); ``stats``, when set, is
    filled in by each search.
    """

    store: EmbeddingStore
    screen: Screen = "auto"
    threads: int | None = None
    block_rows: int | None = DEFAULT_BLOCK_ROWS
    memory_mb: int = DEFAULT_MEMORY_MB
    prefetch: bool = True
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    stats: SearchStats | None = None
    bf16_copy: Bf16CopyMode = "auto"

    def search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows (where ``mask (N,) bool`` allows) of ``queries (nq, d) float32``:
        ``scores (nq, k) float32`` descending, ``ids (nq, k) int64`` (padding -1 / -inf)."""
        return search(
            self.store,
            queries,
            k,
            block_rows=self.block_rows,
            memory_mb=self.memory_mb,
            prefetch=self.prefetch,
            chunk_rows=self.chunk_rows,
            threads=self.threads,
            screen=self.screen,
            stats=self.stats,
            mask=mask,
            bf16_copy=self.bf16_copy,
        )

    def screens(self, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> bool:
        """Whether a search of ``queries`` for ``k`` (where ``mask`` allows) would screen in
        bfloat16."""
        return screens(
            self.store,
            queries,
            k,
            self.screen,
            self.chunk_rows,
            self.threads,
            mask=mask,
            bf16_copy=self.bf16_copy,
        )


def screens(
    store: EmbeddingStore,
    queries: np.ndarray,
    k: int,
    screen: Screen = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    threads: int | None = None,
    mask: np.ndarray | None = None,
    bf16_copy: Bf16CopyMode = "auto",
) -> bool:
    """Whether :func:`search` with these arguments would screen in bfloat16 (``"auto"``: or
    time it against float32 on its first chunks; ``"bf16"`` raises where it cannot). The
    choice "auto" remembers depends on ``mask`` (whether there is one) and ``bf16_copy`` too."""
    q = check_queries(store, queries)
    screen = check_screen(screen)
    kernels = Kernels()
    n_workers = kernels.workers(threads)
    plan = plan_screen(
        screen,
        q,
        len(store),
        check_k(k),
        chunk_rows,
        store.dtype,
        kernels.torch is not None,
        n_workers,
        mask is not None,
        copy=_copy_ahead(store, bf16_copy),
    )
    return plan.method != "fp32"
