"""Exact top-k inner-product search over an :class:`~inquire.embed.EmbeddingStore`.

How it works (all queries at once, one pass over the store):

1. The store is read in blocks of rows that never cross a shard boundary. A reader thread
   reads the next block's bytes straight from the shard file (``os.preadv`` into one of two
   reused buffers: the pages stay in the OS cache and out of this process's resident memory)
   while the caller's thread scores the current one.
2. Each block is scored in chunks of ``chunk_rows`` rows: float16 -> float32 into one reused
   buffer (torch's ``copy_`` when torch is installed, ~10x faster than numpy's ``astype``),
   then one float32 GEMM ``queries @ chunk.T -> (nq, chunk_rows)`` into a reused output,
   using both cores. Float32 inputs and accumulation: no reduced precision anywhere.
3. Selection without sorting: each query keeps its best ``k`` so far and their ``k``-th score
   ``t``. Only chunk scores ``>= t`` can enter the top ``k``; after the first chunks this is
   a tiny fraction, found by one vectorised comparison. While a query holds fewer than ``k``
   items (or a chunk beats an unusual number of them) the chunk's own ``k``-th largest score
   (``np.partition``, linear time) bounds the candidates instead. Candidates are packed into
   one uint64 key each (score order in the high half, image-id order in the low half), so a
   single integer partition applies the whole ranking rule, ties included; they are merged
   into the running top ``k`` only when they outnumber it.

4. Optionally (``screen``), rows are first screened by a bfloat16 GEMM with a proven error
   bound and only those that could reach the top k are scored in float32 (same result, bit
   for bit): see :mod:`inquire.index.screen`.

Memory: two read buffers (``block_rows`` rows in the store's dtype), one float32 chunk, one
``(nq, chunk_rows)`` score chunk and the results; independent of N.

Result contract (:mod:`inquire.index.base`): ``scores (nq, k) float32`` descending, ``ids
(nq, k) int64`` image ids, equal scores ordered by image id ascending (the selector is
:class:`inquire.index.topk.TopK`). When fewer than ``k`` rows may be returned the rows are
padded with id ``-1`` and score ``-inf`` (``Run.from_arrays`` drops the padding). NaN scores
never match. :class:`ExactIndex` is this search behind the :class:`~inquire.index.base.Searcher`
protocol; :func:`search` is the same call with the store as first argument.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from queue import Queue
from typing import Any

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index.base import check_mask
from inquire.index.screen import (
    MIN_RESCORE_ROWS,
    Screen,
    ScreenPlan,
    check_screen,
    lower_bound,
    plan_screen,
    upper_inverse,
)
from inquire.index.topk import HEAVY_FACTOR, TopK, check_k, kth_largest, rank_ids

log = logging.getLogger(__name__)

#: Budget of two of the reader's staging buffers when ``block_rows`` is not given (MiB).
DEFAULT_MEMORY_MB = 256
# Kept for callers that passed the old constant; ``None`` means "size from the budget".
DEFAULT_BLOCK_ROWS: int | None = None
#: Rows scored per GEMM. Small enough that the float32 copy of a chunk is still in cache when
#: the GEMM reads it, large enough for the GEMM to run at full speed (measured: 8192 at d=1024).
DEFAULT_CHUNK_ROWS = 8192
_MIN_BLOCK_ROWS = 1024
_MAX_BLOCK_ROWS = 1 << 20


def auto_block_rows(dim: int, itemsize: int = 2, memory_mb: int = DEFAULT_MEMORY_MB) -> int:
    """Rows per read block so that two staging buffers take about ``memory_mb`` MiB.

    (With several scoring threads the reader keeps three buffers in flight: 1.5x that.)
    """
    rows = (memory_mb << 20) // (2 * itemsize * max(dim, 1))
    rows = max(_MIN_BLOCK_ROWS, min(_MAX_BLOCK_ROWS, int(rows)))
    return rows - rows % _MIN_BLOCK_ROWS


# --------------------------------------------------------------------------------------------
# Block reading and conversion
# --------------------------------------------------------------------------------------------


@dataclass
class _Block:
    start: int  # global row of the first row
    rows: int
    data: np.ndarray  # (rows, d) float16/float32 view into a reused staging buffer
    release: Callable[[], None]  # hands the buffer back to the reader; call when done


def _file_source(shard: np.ndarray) -> tuple[str, int] | None:
    """``(filename, byte offset)`` when ``shard`` is a C-ordered memmap readable with pread."""
    filename = getattr(shard, "filename", None)
    offset = getattr(shard, "offset", None)
    if (
        not isinstance(shard, np.memmap)
        or filename is None
        or offset is None
        or not shard.flags.c_contiguous
        or not hasattr(os, "preadv")
    ):
        return None
    return str(filename), int(offset)


class _Kernels:
    """float16 -> float32 conversion and the float32 GEMM, via torch when available.

    torch's ``copy_`` converts ~10x faster than numpy's ``astype``, and running the GEMM in
    torch's thread pool too keeps conversion and GEMM from fighting over the two cores with a
    second (OpenBLAS) pool. The GEMM stays float32: torch is used only while its float32
    matmul precision is "highest" (other settings may round inputs to bfloat16).
    """

    def __init__(self) -> None:
        try:
            import torch
        except ImportError:  # torch is an optional dependency; numpy is correct, only slower
            self._torch: Any = None
        else:
            self._torch = torch
        self._gemm_torch = (
            self._torch is not None and self._torch.get_float32_matmul_precision() == "highest"
        )

    def workers(self, requested: int | None) -> int:
        """Scoring threads: one per core when torch runs the kernels, else one (numpy's
        OpenBLAS then threads each GEMM itself)."""
        if not self._gemm_torch:
            return 1
        if requested is None:
            requested = min(os.cpu_count() or 1, self._torch.get_num_threads())
        return max(1, int(requested))

    @contextlib.contextmanager
    def single_threaded(self) -> Iterator[None]:
        """Each scoring thread owns one core: torch's kernels run in the calling thread."""
        old = self._torch.get_num_threads()
        self._torch.set_num_threads(1)
        try:
            yield
        finally:
            self._torch.set_num_threads(old)

    def convert(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Write ``src`` rows into the float32 buffer ``dst`` of the same shape."""
        if self._torch is not None and src.flags.writeable and src.dtype == np.float16:
            self._torch.from_numpy(dst).copy_(self._torch.from_numpy(src))
        else:
            np.copyto(dst, src, casting="unsafe")

    def scores(self, q: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
        """``out (nq, b) = q (nq, d) @ data (b, d).T`` in float32."""
        if self._gemm_torch and data.flags.writeable:
            t = self._torch
            t.matmul(t.from_numpy(q), t.from_numpy(data).T, out=t.from_numpy(out))
        else:
            np.matmul(q, data.T, out=out)


def _iter_blocks(
    store: EmbeddingStore, block_rows: int, prefetch: bool = True, n_slots: int = 2
) -> Iterator[_Block]:
    """Yield every block of ``store`` in its stored dtype; the consumer calls ``release``.

    Blocks never cross a shard boundary. With ``prefetch`` a reader thread fills up to
    ``n_slots`` buffers ahead; it only moves bytes (``preadv`` into a reused buffer, or a copy
    for in-memory shards), so compute stays on the scoring threads. Without ``prefetch`` one
    buffer is reused: each block must be finished before the next is requested.
    """
    d = store.dim
    n_slots = max(2, n_slots) if prefetch else 1
    stage = [np.empty((block_rows, d), store.dtype) for _ in range(n_slots)]
    plan = [
        (int(base + lo), s_idx, lo, min(block_rows, len(shard) - lo))
        for s_idx, (shard, base) in enumerate(zip(store.shards, store.offsets[:-1], strict=True))
        for lo in range(0, len(shard), block_rows)
    ]
    sources = [_file_source(s) for s in store.shards]
    fds: dict[int, int] = {}

    def load(slot: int, s_idx: int, lo: int, rows: int) -> np.ndarray:
        shard, src = store.shards[s_idx], sources[s_idx]
        buf = stage[slot][:rows]
        if src is None:
            np.copyto(buf, shard[lo : lo + rows], casting="unsafe")
            return buf
        fd = fds.get(s_idx)
        if fd is None:
            fd = fds[s_idx] = os.open(src[0], os.O_RDONLY)
        want, done = buf.nbytes, 0
        view = memoryview(buf).cast("B")  # type: ignore[arg-type]
        while done < want:  # preadv may return short counts on large reads
            got = os.preadv(fd, [view[done:]], src[1] + lo * d * buf.itemsize + done)
            if got <= 0:
                raise InputError(
                    f"embedding shard {src[0]!r} is shorter than its header says "
                    f"(read {done} of {want} bytes at row {lo}); the file is truncated"
                )
            done += got
        return buf

    try:
        if not prefetch:
            for start, s_idx, lo, rows in plan:
                yield _Block(start, rows, load(0, s_idx, lo, rows), lambda: None)
            return
        yield from _prefetched(plan, load, n_slots)
    finally:
        for fd in fds.values():
            os.close(fd)


def _releaser(free: Queue[int], slot: int) -> Callable[[], None]:
    return lambda: free.put(slot)


def _prefetched(plan: list[tuple[int, int, int, int]], load: Any, n_slots: int) -> Iterator[_Block]:
    free: Queue[int] = Queue()
    ready: Queue[_Block | BaseException | None] = Queue()
    for slot in range(n_slots):
        free.put(slot)
    stop = threading.Event()

    def produce() -> None:
        try:
            for start, s_idx, lo, rows in plan:
                slot = free.get()
                if stop.is_set():
                    return
                data = load(slot, s_idx, lo, rows)
                ready.put(_Block(start, rows, data, _releaser(free, slot)))
            ready.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            ready.put(exc)

    thread = threading.Thread(target=produce, name="inquire-block-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        free.put(0)  # wake a reader waiting for a slot so it sees `stop`
        thread.join()


@dataclass
class SearchStats:
    """What one :func:`search` did (filled in when passed as ``stats``)."""

    screen: str = "off"  # the path that ran: "bf16" (screened) or "off" (float32 GEMM)
    queries: int = 0
    rows: int = 0  # rows of the store
    rescored: int = 0  # (query, row) pairs scored in float32 after bfloat16 screening
    gemm_pairs: int = 0  # (query, row) products the rescoring float32 GEMMs computed

    @property
    def rescored_per_query(self) -> float:
        """Pairs scored exactly per query: ``rows`` when nothing was screened."""
        if self.screen != "bf16":
            return float(self.rows)
        return self.rescored / max(self.queries, 1)


# A chunk with fewer rows than this is scored the float32 way (small GEMMs take other paths).
_MIN_SCREEN_ROWS = 64
# Row norms are computed this many rows at a time (torch converts each slice to float32).
_NORM_ROWS = 1024


class _Scorer:
    """One scoring thread's buffers and running top k."""

    def __init__(
        self,
        q: np.ndarray,
        k: int,
        chunk_rows: int,
        dim: int,
        id_keys: np.ndarray,
        kernels: _Kernels,
        plan: ScreenPlan | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        self.q, self.id_keys, self.kernels, self.mask = q, id_keys, kernels, mask
        self.top = TopK(q.shape[0], k)
        self.f32 = np.empty((chunk_rows, dim), np.float32)
        self.out = np.empty((q.shape[0], chunk_rows), np.float32)
        self.plan = plan
        self.rescored = 0
        self.gemm_pairs = 0
        self.nonfinite: list[int] = []  # store rows holding NaN / inf (never returned)
        if plan is not None:
            t = kernels._torch
            self.q_bf16 = t.from_numpy(plan.q_bf16).view(t.bfloat16)
            self.s_bf16 = t.empty(q.shape[0] * chunk_rows, dtype=t.bfloat16)
            nq, g = q.shape[0], plan.group or q.shape[0]
            # Fresh arrays, like the shapes the plan checked.
            self.q_groups = {g0: np.array(q[min(g0, nq - g) :][:g]) for g0 in range(0, nq, g)}

    def score(self, block: _Block, lo: int, rows: int) -> None:
        """Score ``rows`` rows of ``block`` from ``lo`` and offer them to the top k."""
        if (
            self.plan is not None
            and rows >= _MIN_SCREEN_ROWS
            and block.data.flags.writeable
            and self._screen(block, lo, rows)
        ):
            return
        self._score_fp32(block, lo, rows)

    def _score_fp32(self, block: _Block, lo: int, rows: int) -> None:
        src = block.data[lo : lo + rows]
        if src.dtype == np.float32:
            data = src
        else:
            data = self.f32[:rows]
            self.kernels.convert(src, data)
        # A contiguous output: numpy hands strided `out=` arrays to BLAS via a temporary.
        s = self.out if rows == len(self.f32) else np.empty((len(self.q), rows), np.float32)
        self.kernels.scores(self.q, data, s)
        first = block.start + lo
        # A row holding NaN or inf scores non-finite for every query (the queries are
        # checked finite): it can never be returned, which the search reports.
        bad = np.flatnonzero(~np.isfinite(s[0])) if len(s) else np.zeros(0, np.int64)
        if len(bad):
            self.nonfinite.extend((first + bad).tolist())
        if self.mask is not None:
            s[:, ~self.mask[first : first + rows]] = np.nan  # NaN never matches
        self.top.add_block(s, self.id_keys[first : first + rows])

    def _screen(self, block: _Block, lo: int, rows: int) -> bool:
        """Screen ``rows`` rows in bfloat16, rescore the survivors in float32 and offer them.

        Returns False (nothing done) when a row has a non-finite norm: such a chunk is
        scored the float32 way. See :mod:`inquire.index.screen` for the bound.
        """
        plan = self.plan
        assert plan is not None
        t = self.kernels._torch
        nq, k, d = len(self.q), self.top.k, self.f32.shape[1]
        src = block.data[lo : lo + rows]
        src_t = t.from_numpy(src)
        norms_t = t.empty(rows, dtype=t.float32)
        for r0 in range(0, rows, _NORM_ROWS):  # torch casts to float32 first: keep that small
            part = src_t[r0 : r0 + _NORM_ROWS]
            t.linalg.vector_norm(part, dim=1, dtype=t.float32, out=norms_t[r0 : r0 + len(part)])
        norms = norms_t.numpy()
        if not np.isfinite(norms).all():
            return False
        # The bfloat16 rows live in the float32 buffer's memory (rescoring reuses it later).
        xb = t.from_numpy(self.f32.reshape(-1)).view(t.bfloat16)[: rows * d].view(rows, d)
        xb.copy_(src_t)
        sb = self.s_bf16[: nq * rows].view(nq, rows)
        t.matmul(self.q_bf16, xb.T, out=sb)
        s = self.out.reshape(-1)[: nq * rows].reshape(nq, rows)
        t.from_numpy(s).copy_(sb)
        if self.mask is not None:
            first = block.start + lo
            s[:, ~self.mask[first : first + rows]] = np.nan  # never a candidate
        margin = plan.a * (float(norms.max(initial=0.0)) * plan.inflate) + plan.slack
        bound = self.top.threshold.astype(np.float64)
        if rows > k:
            empty = np.flatnonzero(np.isneginf(bound))
            if len(empty):
                low = lower_bound(kth_largest(s[empty], k), margin[empty])
                bound[empty] = np.maximum(bound[empty], low)
        cut = upper_inverse(bound, margin)
        if np.count_nonzero(s >= cut[:, None]) * 4 > nq * rows:
            # Early chunks, or k near the chunk size: most rows survive, and the float32 path
            # (its own k-th-score bound, no screening margin) needs less memory and time.
            self._score_fp32(block, lo, rows)
            self.rescored += nq * rows
            return True
        qr, cols = self.top.candidates(s, cut)
        counts = np.bincount(qr, minlength=nq)
        heavy = np.flatnonzero(counts > HEAVY_FACTOR * k)
        if len(heavy) and rows > k:
            low = lower_bound(kth_largest(s[heavy], k), margin[heavy])
            bound[heavy] = np.maximum(bound[heavy], low)
            qr, cols = self.top.candidates(s, upper_inverse(bound, margin))
        self.rescored += len(qr)
        if len(qr) == 0:
            return True
        values = self._rescore(src, rows, qr, cols)
        first = block.start + lo
        self.top.add_pairs(qr, cols, values, self.id_keys[first : first + rows])
        return True

    def _rescore(self, src: np.ndarray, rows: int, qr: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 scores of the pairs (``qr`` ascending, ``cols``), bit for bit those of the
        float32 path: float32 GEMMs of ``plan.group`` queries by the rows some of them need
        (a shape whose scores were checked to match the full GEMM's), or the full GEMM."""
        plan = self.plan
        assert plan is not None
        nq, g = len(self.q), plan.group or len(self.q)
        starts = np.searchsorted(qr, np.arange(0, nq, g))
        ends = np.append(starts[1:], len(qr))
        groups = []
        work = 0
        for g0, a, b in zip(range(0, nq, g), starts, ends, strict=True):
            if a == b:
                continue
            need = np.unique(cols[a:b])
            if len(need) < MIN_RESCORE_ROWS:
                need = np.union1d(need, np.arange(min(rows, MIN_RESCORE_ROWS)))
            groups.append((g0, a, b, need))
            work += g * len(need)
        if plan.group is None or work * 2 >= nq * rows:
            # Most of the chunk is needed anyway: the float32 path's own GEMM.
            data = self.f32[:rows]
            if src.dtype == np.float32:
                data = src
            else:
                self.kernels.convert(src, data)
            s = self.out if rows == len(self.f32) else np.empty((nq, rows), np.float32)
            self.kernels.scores(self.q, data, s)
            self.gemm_pairs += nq * rows
            return s[qr, cols]
        values = np.empty(len(qr), np.float32)
        for g0, a, b, need in groups:
            data = self.f32[: len(need)]
            self.kernels.convert(src[need], data)
            out = np.empty((g, len(need)), np.float32)
            self.kernels.scores(self.q_groups[g0], data, out)
            top_row = min(g0, nq - g)
            values[a:b] = out[qr[a:b] - top_row, np.searchsorted(need, cols[a:b])]
            self.gemm_pairs += g * len(need)
        return values


def _score_in_threads(
    store: EmbeddingStore,
    block_rows: int,
    chunk_rows: int,
    prefetch: bool,
    scorers: list[_Scorer],
) -> None:
    """Chunks of every block go to the scorers' threads through one queue; a block's buffer
    goes back to the reader when its last chunk is done."""
    tasks: Queue[tuple[_Block, int, int, Callable[[], None]] | None] = Queue()
    errors: list[BaseException] = []

    def work(scorer: _Scorer) -> None:
        while (task := tasks.get()) is not None:
            block, lo, rows, done = task
            try:
                if not errors:
                    scorer.score(block, lo, rows)
            except BaseException as exc:  # re-raised by the caller once all threads stop
                errors.append(exc)
            finally:
                done()

    threads = [
        threading.Thread(target=work, args=(sc,), name=f"inquire-scorer-{i}", daemon=True)
        for i, sc in enumerate(scorers)
    ]
    for t in threads:
        t.start()
    try:
        # Three buffers: one being read while the threads finish one block and start the next.
        for block in _iter_blocks(store, block_rows, prefetch=prefetch, n_slots=3):
            starts = range(0, block.rows, chunk_rows)
            finished = threading.Semaphore(0)
            left = [len(starts)]
            lock = threading.Lock()

            def done(
                block: _Block = block,
                left: list[int] = left,
                lock: Any = lock,
                finished: Any = finished,
            ) -> None:
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    block.release()
                    finished.release()

            for lo in starts:
                tasks.put((block, lo, min(chunk_rows, block.rows - lo), done))
            if not prefetch:
                finished.acquire()  # one buffer only: finish this block before reading on
            if errors:
                break
    finally:
        for _ in threads:
            tasks.put(None)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def check_queries(store: EmbeddingStore, queries: np.ndarray) -> np.ndarray:
    """``queries`` as a C-ordered ``(nq, d) float32`` array matching ``store.dim``."""
    # Scores are inner products, so unnormalised queries are allowed here (they scale each
    # query's scores, not its ranking).
    return store.check_queries(queries, "queries", normalized=False)


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
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows of ``store`` by inner product with each query, exactly.

    ``queries``: ``(nq, d) float32`` (L2-normalised for cosine similarity).
    ``block_rows``: rows read at a time (default: two staging buffers of ~``memory_mb`` MiB).
    ``chunk_rows``: rows converted to float32 and scored by one GEMM.
    ``prefetch``: read the next block on a second thread while scoring this one.
    ``threads``: scoring threads, each owning a core with single-threaded kernels and its
    own top k (default: one per core, at most ``torch.get_num_threads()``; 1 without torch).
    torch's thread count is set to 1 while they run and restored afterwards.
    ``screen``: ``"bf16"`` screens rows with a bfloat16 GEMM and a proven error bound, then
    rescores the rows that could reach the top k in float32 (same result, bit for bit; see
    :mod:`inquire.index.screen`); ``"off"`` scores every row in float32; ``"auto"`` (default)
    screens where this CPU's bfloat16 GEMM is measured to be much faster.
    ``stats``: a :class:`SearchStats` to fill in (the path taken, pairs rescored).
    ``mask``: ``(N,) bool``, rows of the store that may be returned (None: all).

    Returns ``scores (nq, k) float32`` descending and ``ids (nq, k) int64`` image ids; equal
    scores are ordered by image id ascending. When fewer than ``k`` rows may be returned
    (``k > len(store)``, a narrow mask, NaN scores) rows are padded with id ``-1`` and score
    ``-inf``.
    """
    q = check_queries(store, queries)
    k = check_k(k)
    if block_rows is None:
        block_rows = auto_block_rows(store.dim, store.dtype.itemsize, memory_mb)
    if block_rows < 1 or chunk_rows < 1:
        raise InputError(f"block_rows and chunk_rows must be >= 1, got {block_rows}, {chunk_rows}")
    chunk_rows = min(chunk_rows, block_rows)
    screen = check_screen(screen)
    mask = check_mask(mask, len(store))
    id_keys, sorted_ids = rank_ids(store.ids)
    kernels = _Kernels()
    n_workers = kernels.workers(threads)
    with kernels.single_threaded() if n_workers > 1 else contextlib.nullcontext():
        # Planned under the scoring threads' settings: its checks run the same kernels.
        plan = plan_screen(
            screen, q, len(store), k, chunk_rows, store.dtype, kernels._gemm_torch, n_workers
        )
        scorers = [
            _Scorer(q, k, chunk_rows, store.dim, id_keys, kernels, plan, mask)
            for _ in range(n_workers)
        ]
        if n_workers == 1:
            for block in _iter_blocks(store, block_rows, prefetch=prefetch):
                for lo in range(0, block.rows, chunk_rows):
                    scorers[0].score(block, lo, min(chunk_rows, block.rows - lo))
                block.release()
        else:
            _score_in_threads(store, block_rows, chunk_rows, prefetch, scorers)
    if stats is not None:
        stats.screen = "off" if plan is None else "bf16"
        stats.queries, stats.rows = len(q), len(store)
        stats.rescored = sum(sc.rescored for sc in scorers)
        stats.gemm_pairs = sum(sc.gemm_pairs for sc in scorers)
    _report_nonfinite(store, sorted(r for sc in scorers for r in sc.nonfinite))
    top = scorers[0].top
    for other in scorers[1:]:
        top.absorb(other.top)
    scores, keys = top.result()
    if sorted_ids is None:
        return scores, keys
    ids = np.where(keys >= 0, sorted_ids[np.maximum(keys, 0)], -1)
    return scores, ids


def _report_nonfinite(store: EmbeddingStore, rows: list[int]) -> None:
    """Say how many rows of ``store`` hold NaN or infinite values, and which image ids."""
    if not rows:
        return
    ids = store.ids[np.asarray(rows[:10], np.int64)].tolist()
    log.warning(
        "%d embedding row(s) of %s hold NaN or infinite values and can never be returned: "
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
    ``memory_mb``, ``prefetch``, ``chunk_rows``); ``stats``, when set, is filled in by each
    search.
    """

    store: EmbeddingStore
    screen: Screen = "auto"
    threads: int | None = None
    block_rows: int | None = DEFAULT_BLOCK_ROWS
    memory_mb: int = DEFAULT_MEMORY_MB
    prefetch: bool = True
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    stats: SearchStats | None = None

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
        )

    def screens(self, queries: np.ndarray, k: int) -> bool:
        """Whether a search of ``queries`` for ``k`` would screen in bfloat16."""
        return screens(self.store, queries, k, self.screen, self.chunk_rows, self.threads)


def screens(
    store: EmbeddingStore,
    queries: np.ndarray,
    k: int,
    screen: Screen = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    threads: int | None = None,
) -> bool:
    """Whether :func:`search` with these arguments would screen in bfloat16 (the measured
    decision of ``"auto"``, cached per process; ``"bf16"`` raises where it cannot)."""
    q = check_queries(store, queries)
    kernels = _Kernels()
    n_workers = kernels.workers(threads)
    with kernels.single_threaded() if n_workers > 1 else contextlib.nullcontext():
        plan = plan_screen(
            check_screen(screen),
            q,
            len(store),
            int(k),
            chunk_rows,
            store.dtype,
            kernels._gemm_torch,
            n_workers,
        )
    return plan is not None
