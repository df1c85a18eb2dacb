"""Exact top-k inner-product search over an :class:`~inquire.embed.EmbeddingStore`.

**The exact score** of a row for a query is their real inner product rounded once to float32
(:mod:`inquire.index.score`): it does not depend on the call's shape, the CPU, the BLAS or
the thread count, and every path below returns exactly it.

How it works (all queries at once, one pass over the store):

1. The store is read in blocks of rows that never cross a shard boundary. A reader thread
   reads the next block's bytes straight from the shard file (``os.preadv`` into one of two
   reused buffers: the pages stay in the OS cache and out of this process's resident memory)
   while the scoring threads work on the current one.
2. **Approximate every row.** Each block is cut into chunks of ``chunk_rows`` rows: float16
   -> float32 into one reused buffer (torch's ``copy_`` when torch is installed, ~10x faster
   than numpy's ``astype``), then one GEMM ``queries @ chunk.T -> (nq, chunk_rows)``: float32
   (``screen="off"``) or bfloat16 (``screen="bf16"``, see :mod:`inquire.index.screen`). Each
   approximate score ``s~`` comes with a proven interval around the exact score: ``|exact -
   s~| <= a(q) max||x|| (+ c|s~| for bfloat16)``, one margin per query and chunk (the chunk's
   largest row norm, computed once per resident store).
3. **Keep only what may reach the top k.** Each query's :class:`~inquire.index.pool.
   CandidatePool` holds the rows whose upper bound reaches its floor, a proven lower bound of
   the k-th exact score; one vectorised comparison per chunk finds them (after the first
   chunks a tiny fraction), and the floor rises as the pool fills (its k-th upper bound minus
   the widest interval). While a query has no floor yet, or a chunk beats an unusual number
   of pooled rows, the chunk's own k-th approximate score (``np.partition``, linear time)
   gives one.
4. **Rescore the survivors exactly**, at the end, gathered per query (float64, rounded once:
   :func:`inquire.index.score.exact_scores`), and select them with
   :class:`inquire.index.topk.TopK` under the one ranking rule. With the float32 bound the
   pool ends with about ``k`` rows plus the few within twice the margin of the k-th score; a
   pool that grows past ``4 k + 4096`` rows (near ties the bound cannot separate) is rescored
   at once, so memory stays bounded.

Both approximations therefore return the same ids and scores, bit for bit, on every CPU.
``screen="auto"`` (default) takes the float32 GEMM unless the CPU lists bfloat16 units and a
timed trial on the search's first chunks finds bfloat16 faster (:class:`_Chooser`).

Memory: the read buffers, per scoring thread one float32 chunk and one ``(nq, chunk_rows)``
score chunk, the pools (about ``k`` keys per query) and the results; independent of N.

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
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from queue import Queue
from typing import Any, Literal

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index import screen as screen_mod
from inquire.index.base import check_mask
from inquire.index.bf16_copy import Bf16Copy, ensure_copy
from inquire.index.pool import CandidatePool, round_down, round_up
from inquire.index.score import exact_scores
from inquire.index.screen import (
    AUTO_MARGIN,
    C_BF16,
    Bounds,
    Screen,
    check_screen,
    lower_bound,
    plan_screen,
    remember_choice,
    row_error_slack,
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
#: ``search(bf16_copy=)``: build and read the store's bfloat16 copy, read it only, or never.
Bf16CopyMode = Literal["auto", "use", "off"]
BF16_COPY_MODES: tuple[str, ...] = ("auto", "use", "off")
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
    store: EmbeddingStore,
    block_rows: int,
    prefetch: bool = True,
    n_slots: int = 2,
    shards: list[np.ndarray] | None = None,
) -> Iterator[_Block]:
    """Yield every block of ``store`` in its stored dtype; the consumer calls ``release``.

    ``shards``: read these arrays instead of the store's (the same rows in another dtype:
    the bfloat16 copy, :mod:`inquire.index.bf16_copy`).

    Blocks never cross a shard boundary. With ``prefetch`` a reader thread fills up to
    ``n_slots`` buffers ahead; it only moves bytes (``preadv`` into a reused buffer, or a copy
    for in-memory shards), so compute stays on the scoring threads. Without ``prefetch`` one
    buffer is reused: each block must be finished before the next is requested.
    """
    d = store.dim
    shards = store.shards if shards is None else shards
    n_slots = max(2, n_slots) if prefetch else 1
    stage = [np.empty((block_rows, d), shards[0].dtype) for _ in range(n_slots)]
    plan = [
        (int(base + lo), s_idx, lo, min(block_rows, len(shard) - lo))
        for s_idx, (shard, base) in enumerate(zip(shards, store.offsets[:-1], strict=True))
        for lo in range(0, len(shard), block_rows)
    ]
    sources = [_file_source(s) for s in shards]
    fds: dict[int, int] = {}

    def load(slot: int, s_idx: int, lo: int, rows: int) -> np.ndarray:
        shard, src = shards[s_idx], sources[s_idx]
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

    screen: str = "off"  # the path that scored most chunks: "bf16" (screened) or "off" (float32)
    queries: int = 0
    rows: int = 0  # rows of the store
    rescored: int = 0  # (query, row) pairs given their exact score (float64, rounded once)
    chunks_bf16: int = 0  # chunks approximated by the bfloat16 GEMM
    chunks_fp32: int = 0  # chunks approximated by the float32 GEMM
    trial: bool = False  # "auto" timed both paths on this search's first chunks
    gemm_seconds: float = 0.0  # time inside the approximating GEMMs, summed over threads
    seconds: float = 0.0  # wall time of the whole search
    threads: int = 1  # scoring threads
    bf16_copy: bool = False  # screened blocks were read from the store's bfloat16 copy

    @property
    def rescored_per_query(self) -> float:
        """Rows given their exact score per query (both paths rescore their candidates)."""
        return self.rescored / max(self.queries, 1)


# A chunk with fewer rows than this is approximated the float32 way (small bfloat16 GEMMs take
# other code paths and gain nothing).
_MIN_SCREEN_ROWS = 64
# A query whose pool grows past this many times k (plus a constant) is rescored at once: the
# pool's memory stays bounded even where the bound cannot separate many rows (near ties).
_POOL_CAP_FACTOR = 4
_POOL_CAP_EXTRA = 4096
# Rows gathered and converted per rescoring batch (times d elements: ~32 MiB of float32 at d=1024).
_RESCORE_ELEMENTS = 1 << 23


# Per process: an upper bound of the largest row norm of each chunk of the stores searched,
# keyed by the shard files (path, size, mtime) and the chunk's rows, so a resident store's
# norms are computed once. Cleared when it grows past _NORMS_MAX entries.
_norms: dict[tuple[Any, ...], float] = {}
_norms_lock = threading.Lock()
_NORMS_MAX = 1 << 20


def _store_key(store: EmbeddingStore) -> tuple[Any, ...] | None:
    """Identity of the store's shard files (None when a shard is not a file)."""
    try:
        return tuple(
            (str(p), st.st_size, st.st_mtime_ns)
            for p, st in ((p, os.stat(p)) for p in store.shard_paths)
        )
    except (OSError, AttributeError, TypeError):
        return None


def _gather(store: EmbeddingStore, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:len(rows)] (m, d)`` (the store's dtype) filled with the store's global ``rows``."""
    out = out[: len(rows)]
    if len(rows) == 0:
        return out
    shard_of = np.searchsorted(store.offsets, rows, side="right") - 1
    if shard_of[0] == shard_of[-1] and (shard_of == shard_of[0]).all():
        s = int(shard_of[0])
        np.take(store.shards[s], rows - int(store.offsets[s]), axis=0, out=out)
        return out
    for s in np.unique(shard_of):
        sel = shard_of == s
        out[sel] = store.shards[int(s)][rows[sel] - int(store.offsets[s])]
    return out


def _mapping(shard: np.ndarray) -> Any:
    """The ``mmap`` behind a memory-mapped shard, or None."""
    m = getattr(shard, "_mmap", None)
    return m if m is not None and hasattr(m, "madvise") else None


@contextlib.contextmanager
def _random_access(store: EmbeddingStore) -> Iterator[Callable[[], None]]:
    """Random row reads from the memory-mapped shards without growing this process's
    resident memory: no fault-around while reading (``MADV_RANDOM``), and the pages read are
    unmapped again by the callable yielded (``MADV_DONTNEED``: on a read-only file mapping it
    only drops this process's page-table entries; the data stays in the OS cache)."""
    import mmap

    maps = [m for m in (_mapping(s) for s in store.shards) if m is not None]
    advise = hasattr(mmap, "MADV_RANDOM") and hasattr(mmap, "MADV_DONTNEED")

    def drop() -> None:
        if advise:
            for m in maps:
                with contextlib.suppress(OSError, ValueError):
                    m.madvise(mmap.MADV_DONTNEED)

    if advise:
        for m in maps:
            with contextlib.suppress(OSError, ValueError):
                m.madvise(mmap.MADV_RANDOM)
    try:
        yield drop
    finally:
        drop()
        if advise:
            for m in maps:
                with contextlib.suppress(OSError, ValueError):
                    m.madvise(mmap.MADV_NORMAL)


def _rescore(
    store: EmbeddingStore,
    q: np.ndarray,
    qr: np.ndarray,
    rows: np.ndarray,
    kernels: _Kernels,
    max_norm: float | None = None,
) -> np.ndarray:
    """Exact scores ``(m,) float32`` (:func:`inquire.index.score.exact_scores`) of the pairs
    (query ``qr``, global row ``rows``), ``qr`` ascending. ``max_norm``: an upper bound of
    the rows' norms, if known.

    Each distinct row is read from the store once, in row order, however many queries kept
    it (with a wide bound one row survives for several queries): batches of distinct rows
    are gathered from the memory-mapped shards and converted to float32, then every pair of
    the batch is scored from memory."""
    out = np.empty(len(qr), np.float32)
    if len(qr) == 0:
        return out
    step = max(1, _RESCORE_ELEMENTS // max(store.dim, 1))
    order = np.argsort(rows, kind="stable")  # pairs by row
    uniq, first = np.unique(rows[order], return_index=True)
    first = np.append(first, len(order))
    raw = np.empty((min(step, len(uniq)), store.dim), store.dtype)
    buf = raw if store.dtype == np.float32 else np.empty(raw.shape, np.float32)
    with _random_access(store) as drop:
        for a in range(0, len(uniq), step):
            b = min(a + step, len(uniq))
            x = _gather(store, uniq[a:b], raw)
            drop()
            x32 = buf[: b - a]
            if x32 is not x:
                kernels.convert(x, x32)
            pairs = order[first[a] : first[b]]
            pairs = pairs[np.argsort(qr[pairs], kind="stable")]  # queries ascending
            local = np.searchsorted(uniq[a:b], rows[pairs])
            out[pairs] = exact_scores(q, qr[pairs], x32, max_norm, index=local)
    return out


def _slice_rows(store: EmbeddingStore, first: int, rows: int) -> np.ndarray:
    """``(rows, d) float32``: the stored global rows ``first .. first + rows`` (one shard)."""
    s = int(np.searchsorted(store.offsets, first, side="right") - 1)
    lo = first - int(store.offsets[s])
    return np.asarray(store.shards[s][lo : lo + rows], np.float32)


def _cut_below(floor: np.ndarray, margin: np.ndarray, c: float) -> np.ndarray:
    """``(nq,) float32``: approximate scores below it have ``upper < floor`` (``upper(s) = s +
    c|s| + margin``, increasing in ``s``); rounded down, ``-inf`` where ``floor`` is.

    One threshold per query and chunk, not a bound per score: ``margin_q = a(q) max||x|| +
    e`` takes the chunk's largest row norm, so it bounds every row of the chunk, and the
    chunk needs one comparison ``s~ >= cut_q`` per score. With ``F = floor``, ``v = F -
    margin`` and ``0 <= c < 1``, ``upper`` is strictly increasing and the smallest ``s`` with
    ``upper(s) >= F`` is: for ``v >= 0``, ``v / (1 + c)`` (a negative ``s`` has ``upper(s) <
    margin <= F``; for ``s >= 0``, ``s (1 + c) >= v``); for ``v < 0``, ``v / (1 - c)`` (``s (1 -
    c) >= v`` for negative ``s``; every ``s >= 0`` has ``upper >= margin > F``). The float64
    value is off by a few float64 units at most, so :func:`round_down` (one float32 step
    below the nearest float32) keeps every ``s~`` with ``upper(s~) >= F``."""
    v = floor.astype(np.float64) - margin
    with np.errstate(invalid="ignore"):
        s = np.where(v >= 0, v / (1 + c), v / (1 - c))
    return round_down(s)


class _Scorer:
    """One scoring thread's buffers, candidate pool and exact top k."""

    def __init__(
        self,
        store: EmbeddingStore,
        q: np.ndarray,
        k: int,
        chunk_rows: int,
        id_keys: np.ndarray,
        kernels: _Kernels,
        bound: Bounds,
        mask: np.ndarray | None = None,
        copy: Bf16Copy | None = None,
    ) -> None:
        self.store, self.q, self.id_keys, self.kernels, self.mask = store, q, id_keys, kernels, mask
        self.bound = bound
        self.copy = copy  # blocks of uint16 (bfloat16 bits) come from it, with row norms
        nq, dim = q.shape
        self.top = TopK(nq, k)  # rows already given their exact score
        self.pool = CandidatePool(nq, k)  # rows that may still reach the top k
        self.cap = _POOL_CAP_FACTOR * k + _POOL_CAP_EXTRA
        self.f32 = np.empty((chunk_rows, dim), np.float32)
        self.out = np.empty((nq, chunk_rows), np.float32)
        self.rescored = 0
        self.nonfinite: list[int] = []  # store rows holding NaN / inf (never returned)
        self.gemm_seconds = 0.0
        self.chunks = {"bf16": 0, "fp32": 0}
        self.max_norm = 0.0  # upper bound of the norms of every pooled row
        self.store_key = _store_key(store)
        if bound.q_bf16 is not None:
            t = kernels._torch
            self.q_bf16 = t.from_numpy(bound.q_bf16).view(t.bfloat16)
            if copy is None:
                self.x_bf16 = t.empty((chunk_rows, dim), dtype=t.bfloat16)
            self.s_bf16 = t.empty(nq * chunk_rows, dtype=t.bfloat16)

    def score(self, block: _Block, lo: int, rows: int, method: str = "fp32") -> None:
        """Approximate ``rows`` rows of ``block`` from ``lo`` (``method`` "bf16" or "fp32")
        and put the rows that may reach the top k into the pool."""
        src = block.data[lo : lo + rows]
        first = block.start + lo
        if src.dtype == np.uint16:
            self._score_copy(src, first)
            return
        key = None if self.store_key is None else (self.store_key, first, rows)
        with _norms_lock:
            norm = _norms.get(key) if key is not None else None
        bf16 = (
            method == "bf16"
            and self.bound.q_bf16 is not None
            and rows >= _MIN_SCREEN_ROWS
            and src.flags.writeable
        )
        if bf16 and norm is not None and np.isfinite(norm):
            # The norm is known: the stored rows go to bfloat16 directly (one conversion).
            data = src
        elif src.dtype == np.float32:
            data = src
        else:
            data = self.f32[:rows]
            self.kernels.convert(src, data)
        if norm is None:
            norm = self._max_norm(data)
            if key is not None:
                with _norms_lock:
                    if len(_norms) >= _NORMS_MAX:
                        _norms.clear()
                    _norms[key] = norm
        if not np.isfinite(norm):  # a row with inf/NaN: no bound; score the chunk exactly
            self._score_exactly(data, first)
            return
        self.max_norm = max(self.max_norm, norm)
        if bf16:
            s, margin, c = self._approx_bf16(data, norm)
            self.chunks["bf16"] += 1
        else:
            s, margin, c = self._approx_fp32(data, norm)
            self.chunks["fp32"] += 1
        self._offer(s, margin, c, first)

    def _score_copy(self, bits: np.ndarray, first: int) -> None:
        """Screen ``bits (rows, d)``, the bfloat16 copy of global rows ``first ..``: no
        conversion; the norms from the copy. ``||x||`` there is the float32-computed norm
        of the stored rows, as :meth:`_max_norm` computes it, so the same inflation bounds
        it; ``||x - bf16(x)||`` is a float32-computed norm of exact differences, bounded the
        same way plus :func:`~inquire.index.screen.row_error_slack` for squares that
        underflow. The margin is then ``a_row max||x - bf16(x)|| + a_rest max||x|| + e``
        (:func:`~inquire.index.screen.split_terms`): not wider than ``a(q) max||x|| + e``
        but for that underflow slack (``||q|| sqrt(d) 2**-62``)."""
        assert self.copy is not None
        rows = len(bits)
        norm, err = self.copy.max_norms(first, rows)
        if not (np.isfinite(norm) and np.isfinite(err)):  # inf/NaN: score the rows exactly
            self._score_exactly(_slice_rows(self.store, first, rows), first)
            return
        norm *= self.bound.inflate
        err = err * self.bound.inflate + row_error_slack(self.q.shape[1])
        self.max_norm = max(self.max_norm, norm)
        t = self.kernels._torch
        s, _, c = self._approx_bf16(t.from_numpy(bits).view(t.bfloat16), norm)
        assert self.bound.a_row is not None and self.bound.a_rest is not None
        margin = self.bound.a_row * err + self.bound.a_rest * norm + self.bound.slack
        self.chunks["bf16"] += 1
        self._offer(s, margin, c, first)

    def _max_norm(self, data: np.ndarray) -> float:
        """An upper bound of the largest row norm of ``data (rows, d) float32``."""
        t = self.kernels._torch
        if t is not None:
            n = float(t.linalg.vector_norm(t.from_numpy(data), dim=1).max())
        else:
            n = float(np.sqrt(np.einsum("ij,ij->i", data, data).max(initial=0.0)))
        return n * self.bound.inflate

    def _approx_fp32(self, data: np.ndarray, norm: float) -> tuple[np.ndarray, np.ndarray, float]:
        rows = len(data)
        # A contiguous output: numpy hands strided `out=` arrays to BLAS via a temporary.
        s = self.out if rows == len(self.f32) else np.empty((len(self.q), rows), np.float32)
        t0 = time.perf_counter()
        self.kernels.scores(self.q, data, s)
        self.gemm_seconds += time.perf_counter() - t0
        return s, self.bound.a32 * norm + self.bound.slack, 0.0

    def _approx_bf16(self, data: Any, norm: float) -> tuple[np.ndarray, np.ndarray, float]:
        """``data (rows, d)``: float16 or float32 rows (writeable numpy, converted into the
        reused bfloat16 buffer), or a bfloat16 torch tensor (used as it is), screened by the
        bfloat16 GEMM."""
        t = self.kernels._torch
        nq, rows = len(self.q), len(data)
        if isinstance(data, np.ndarray):
            xb = self.x_bf16[:rows]
            xb.copy_(t.from_numpy(data))
        else:
            xb = data
        sb = self.s_bf16[: nq * rows].view(nq, rows)
        t0 = time.perf_counter()
        t.matmul(self.q_bf16, xb.T, out=sb)
        self.gemm_seconds += time.perf_counter() - t0
        s = self.out.reshape(-1)[: nq * rows].reshape(nq, rows)
        t.from_numpy(s).copy_(sb)
        assert self.bound.a_bf16 is not None
        return s, self.bound.a_bf16 * norm + self.bound.slack, C_BF16

    def _offer(self, s: np.ndarray, margin: np.ndarray, c: float, first: int) -> None:
        """Pool the rows of ``s (nq, rows)`` (approximate scores, ``|exact - s| <= c|s| +
        margin``) whose upper bound reaches the pool's floor."""
        nq, rows = s.shape
        k, pool = self.top.k, self.pool
        if self.mask is not None:
            s[:, ~self.mask[first : first + rows]] = np.nan  # never a candidate
        if rows > k:
            # Queries without a proven floor yet: the chunk's own k-th approximate score (k
            # rows of the chunk have exact scores at least its lower bound).
            empty = np.flatnonzero(np.isneginf(pool.floor))
            if len(empty):
                low = lower_bound(kth_largest(s[empty], k), margin[empty], c)
                pool.raise_floor(round_down(low), empty)
        qr, cols = self.top.candidates(s, _cut_below(pool.floor, margin, c))
        counts = np.bincount(qr, minlength=nq)
        heavy = np.flatnonzero(counts > HEAVY_FACTOR * k)
        if len(heavy) and rows > k:
            # This chunk beats many pooled rows (e.g. rows sorted by score): its own k-th.
            low = lower_bound(kth_largest(s[heavy], k), margin[heavy], c)
            pool.raise_floor(round_down(low), heavy)
            qr, cols = self.top.candidates(s, _cut_below(pool.floor, margin, c))
        if len(qr) == 0:
            return
        v = s[qr, cols].astype(np.float64)
        spread = c * np.abs(v) + margin[qr]
        upper = round_up(v + spread)
        lower = round_down(v - spread)
        pool.push(qr, first + cols, upper, upper.astype(np.float64) - lower)
        if pool.keys.shape[1] > self.cap:
            self._flush(np.flatnonzero(pool.sizes() > self.cap // 2))

    def _flush(self, queries: np.ndarray) -> None:
        """Give the pooled rows of ``queries`` their exact scores now (bounded memory)."""
        qr, rows = self.pool.take(queries)
        values = _rescore(self.store, self.q, qr, rows, self.kernels, self.max_norm)
        self.add_exact(qr, rows, values)

    def add_exact(self, qr: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
        """Offer exact ``values`` of pairs (query ``qr`` ascending, global ``rows``)."""
        self.rescored += len(qr)
        self.top.add_pairs(qr, rows, values, self.id_keys)
        self.top.merge()
        self.pool.raise_floor(self.top.threshold)

    def _score_exactly(self, data: np.ndarray, first: int) -> None:
        """Exact scores of every (query, row) of a chunk with a non-finite row."""
        nq, rows = len(self.q), len(data)
        # A row holding NaN or inf scores non-finite for every query (the queries are
        # checked finite): NaN is never returned, +-inf ranks first or last, as in
        # brute_force; the search reports such rows.
        bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
        self.nonfinite.extend((first + bad).tolist())
        cols = np.arange(rows)
        for r in range(nq):
            qr = np.full(rows, r, np.int64)
            values = exact_scores(self.q, qr, data)
            if self.mask is not None:
                values[~self.mask[first : first + rows]] = np.nan
            self.add_exact(qr, first + cols, values)

    def finish(self, others: list[_Scorer]) -> tuple[np.ndarray, np.ndarray]:
        """Fold the other threads' pools and top k into this one, rescore what the pool
        holds, and return the result keys (:meth:`TopK.result`)."""
        for other in others:
            self.top.absorb(other.top)
            self.pool.absorb(other.pool)
            self.rescored += other.rescored
            self.max_norm = max(self.max_norm, other.max_norm)
        self.top.merge()
        self.pool.raise_floor(self.top.threshold)
        qr, rows = self.pool.take()
        if len(qr):
            values = _rescore(self.store, self.q, qr, rows, self.kernels, self.max_norm)
            self.add_exact(qr, rows, values)
        return self.top.result()


class _Chooser:
    """Which approximation each chunk gets: fixed ("fp32", "bf16"), or for ``"auto"`` where
    screening is possible, a timed trial on this search's first chunks (both paths, the same
    number of rows, warm-ups untimed; the result counts either way), then the faster path
    (bfloat16 only if at most ``AUTO_MARGIN`` times the float32 time). The decision is kept per
    process for the search's shape (:func:`inquire.index.screen.remember_choice`)."""

    # Warm-up of each path, then both paths twice in ABBA order.
    TRIAL = ("fp32", "bf16", "bf16", "fp32", "fp32", "bf16")
    TIMED_FROM = 2

    def __init__(self, fixed: str | None, key: tuple[Any, ...] | None = None) -> None:
        self.decided = fixed
        self.key = key
        self._next = 0
        self._times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        self._lock = threading.Lock()
        self.trial = fixed is None

    def next(self) -> tuple[str, int | None]:
        """``(method, trial slot or None)`` for the next chunk."""
        with self._lock:
            if self.decided is not None:
                return self.decided, None
            if self._next < len(self.TRIAL):
                slot = self._next
                self._next += 1
                return self.TRIAL[slot], slot
            return "fp32", None  # trial chunks still running on another thread

    def report(self, slot: int, seconds: float) -> None:
        """The trial chunk ``slot`` took ``seconds`` (of :func:`screen.clock`)."""
        with self._lock:
            if slot >= self.TIMED_FROM:
                self._times[self.TRIAL[slot]].append(seconds)
            timed = len(self.TRIAL) - self.TIMED_FROM
            if self.decided is None and sum(map(len, self._times.values())) == timed:
                bf16, fp32 = min(self._times["bf16"]), min(self._times["fp32"])
                self.decided = "bf16" if bf16 <= AUTO_MARGIN * fp32 else "fp32"
                log.info(
                    "screen=auto: bfloat16 chunk %.4f s, float32 chunk %.4f s: %s",
                    bf16,
                    fp32,
                    self.decided,
                )
                if self.key is not None:
                    remember_choice(self.key, self.decided)

    def run(self, scorer: _Scorer, block: _Block, lo: int, rows: int) -> None:
        """Score one chunk with the chosen method, timing it while on trial."""
        method, slot = self.next()
        if slot is None:
            scorer.score(block, lo, rows, method)
            return
        t0 = screen_mod.clock()
        scorer.score(block, lo, rows, method)
        self.report(slot, screen_mod.clock() - t0)


def _score_in_threads(
    store: EmbeddingStore,
    block_rows: int,
    chunk_rows: int,
    prefetch: bool,
    scorers: list[_Scorer],
    chooser: _Chooser,
    shards: list[np.ndarray] | None = None,
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
                    chooser.run(scorer, block, lo, rows)
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
        for block in _iter_blocks(store, block_rows, prefetch=prefetch, n_slots=3, shards=shards):
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
    bf16_copy: Bf16CopyMode = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows of ``store`` by inner product with each query, exactly.

    ``queries``: ``(nq, d) float32`` (L2-normalised for cosine similarity).
    ``block_rows``: rows read at a time (default: two staging buffers of ~``memory_mb`` MiB).
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
    id_keys, sorted_ids = rank_ids(store.ids)
    kernels = _Kernels()
    n_workers = kernels.workers(threads)
    with kernels.single_threaded() if n_workers > 1 else contextlib.nullcontext():
        plan = plan_screen(
            screen,
            q,
            len(store),
            k,
            chunk_rows,
            store.dtype,
            kernels._torch is not None,
            n_workers,
            mask is not None,
        )
        chooser = _Chooser(plan.method, plan.key)
        copy = None
        if plan.method == "bf16" and bf16_copy != "off" and len(store):
            copy = ensure_copy(store, build=bf16_copy == "auto")
        shards = None if copy is None else copy.shards
        scorers = [
            _Scorer(store, q, k, chunk_rows, id_keys, kernels, plan.bounds, mask, copy)
            for _ in range(n_workers)
        ]
        if n_workers == 1:
            for block in _iter_blocks(store, block_rows, prefetch=prefetch, shards=shards):
                for lo in range(0, block.rows, chunk_rows):
                    chooser.run(scorers[0], block, lo, min(chunk_rows, block.rows - lo))
                block.release()
        else:
            _score_in_threads(store, block_rows, chunk_rows, prefetch, scorers, chooser, shards)
    scores, keys = scorers[0].finish(scorers[1:])
    _report_nonfinite(store, sorted(r for sc in scorers for r in sc.nonfinite))
    if stats is not None:
        n_bf16 = sum(sc.chunks["bf16"] for sc in scorers)
        n_fp32 = sum(sc.chunks["fp32"] for sc in scorers)
        stats.screen = "bf16" if n_bf16 > n_fp32 else "off"
        stats.queries, stats.rows = len(q), len(store)
        stats.rescored = scorers[0].rescored
        stats.chunks_bf16, stats.chunks_fp32 = n_bf16, n_fp32
        stats.trial = chooser.trial
        stats.gemm_seconds = sum(sc.gemm_seconds for sc in scorers)
        stats.threads = n_workers
        stats.bf16_copy = copy is not None
        stats.seconds = time.perf_counter() - started
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
    """Whether :func:`search` with these arguments would screen in bfloat16 (``"auto"``: or
    time it against float32 on its first chunks; ``"bf16"`` raises where it cannot)."""
    q = check_queries(store, queries)
    kernels = _Kernels()
    n_workers = kernels.workers(threads)
    plan = plan_screen(
        check_screen(screen),
        q,
        len(store),
        int(k),
        chunk_rows,
        store.dtype,
        kernels._torch is not None,
        n_workers,
    )
    return plan.method != "fp32"
