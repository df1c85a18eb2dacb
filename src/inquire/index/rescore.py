"""Exact scores of (query, row) pairs whose rows are read at random from a store's shards:
each distinct row read once, in row order, with ``preadv`` (nothing of the store mapped into
this process), then each pair's float64 inner product, the same float32 results bit for bit
either way:

- with the compiled kernel (:mod:`inquire.index.fused`, where numba is installed and loaded),
  each thread reads a batch and runs the kernel over it: the pairs in row order, each row
  converted and multiplied in registers;
- without it, half the threads read while the others convert each query's rows to float64
  and multiply them (:func:`_batch_dots`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from queue import Queue
from typing import Any

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.index import fused
from inquire.index.blocks import _file_source, _pread_rows, mapped_file, open_source
from inquire.index.kernels import Kernels
from inquire.index.score import exact_score, gamma64, norm_bounds, round_once, row_bounds

# Elements of one batch of distinct rows read at a time by one thread (32 MiB of float16 at
# d = 1024), and of one piece of them converted to float64 and multiplied (2 MiB: in cache).
_BATCH_ELEMENTS = 1 << 24
_PIECE_ELEMENTS = 1 << 18
# Rows read at a time for the pairs settled the slow exact way.
_SLOW_ROWS = 16
# Bytes of the store read at most by one ``preadv`` (into a reused staging buffer of this
# size, then the rows wanted taken from it) or, where a shard is not a file, mapped at a time
# while gathering a batch's rows and then dropped (a batch's rows are sparse and may span the
# whole store: its pages all at once would map every page of the store the rows touch).
_WINDOW_BYTES = 4 << 20
# A run of rows read by one ``preadv`` ends where the next row wanted is more than this many
# rows further on: copying the rows between costs more than another call (measured from 1%
# to 50% of a store's rows wanted, this read beats gathering through the memory map at every
# density: 0.42 against 0.62 us a row at 50%, 3.0 against 5.5 at 1%).
_GAP_ROWS = 32
#: Pairs x width from which a rescoring waits for the compiled kernel to load (~0.3-0.7 s per
#: process) rather than run without it (~0.6 us a pair more at d = 1024); a search that
#: will rescore many pairs starts loading it while it scans (:func:`fused.start_loading`).
FUSED_WAIT_ELEMENTS = 1 << 29
# Pages dropped are whole large pages: the OS maps a whole folio (up to 2 MiB, aligned in the
# file) on one touch, and dropping only the pages of the rows read would leave the rest of it
# mapped.
_LARGE_PAGE = 2 << 20


def gather_ascending(store: Any, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:len(rows)] (m, d)`` (the store's dtype) filled with the store's global ``rows``
    (ascending: one ``np.take`` per shard; the order of reads through the memory maps).
    ``store``: anything with ``offsets`` and ``shards`` (an :class:`EmbeddingStore`)."""
    out = out[: len(rows)]
    if len(rows) == 0:
        return out
    shard_of = np.searchsorted(store.offsets, rows, side="right") - 1
    cuts = np.flatnonzero(np.diff(shard_of)) + 1
    for a, b in itertools.pairwise([0, *cuts.tolist(), len(rows)]):
        s = int(shard_of[a])
        np.take(store.shards[s], rows[a:b] - int(store.offsets[s]), axis=0, out=out[a:b])
    return out


def shard_mapping(shard: Any) -> Any:
    """The ``mmap`` behind a memory-mapped shard, or None."""
    m = getattr(shard, "_mmap", None)
    return m if m is not None and hasattr(m, "madvise") else None


def _row_span(store: EmbeddingStore, s: int, m: Any, lo: int, hi: int) -> tuple[int, int] | None:
    """Page-aligned ``(start, length)`` in the mapping ``m`` of shard ``s`` covering its local
    rows ``lo .. hi - 1`` in whole large pages of the file, or None where the array's place in
    the mapping or the file is not known."""
    import mmap

    shard = store.shards[s]
    offset = getattr(shard, "offset", None)
    row_bytes = store.dim * store.dtype.itemsize
    stride = shard.strides[0] if shard.ndim == 2 else 0
    if not isinstance(offset, int) or stride < row_bytes or hi <= lo:
        return None
    # The mapping starts at the granule below the memmap's offset (numpy maps from there);
    # the rows start where the array's data is in it (read from the addresses: a view of the
    # memmap keeps its parent's offset).
    base = offset - offset % mmap.ALLOCATIONGRANULARITY  # the mapping's first byte in the file
    try:
        view = np.frombuffer(m, np.uint8)
    except (TypeError, ValueError, BufferError):  # closed
        return None
    at = int(shard.__array_interface__["data"][0]) - int(view.ctypes.data)
    del view
    first, last = at + lo * stride, at + (hi - 1) * stride + row_bytes
    if first < 0 or last > len(m):
        return None
    page = max(_LARGE_PAGE, mmap.PAGESIZE)
    # Rounded out to whole large pages of the file (what one touch maps), then clipped to
    # the mapping; its start stays page-aligned (``base`` is).
    start = max(0, (base + first) // page * page - base)
    end = min(len(m), -(-(base + last) // page) * page - base)
    return (start, end - start) if end > start else None


def drop_rows(store: EmbeddingStore, s: int, lo: int, hi: int) -> None:
    """Unmap from this process the large pages of shard ``s``'s local rows ``lo .. hi - 1``
    (``MADV_DONTNEED``: on a read-only file mapping it only drops this process's page-table
    entries; the data stays in the OS cache). Nothing where the shard is not a memory map."""
    import mmap

    m = shard_mapping(store.shards[s])
    if m is None or not hasattr(mmap, "MADV_DONTNEED") or hi <= lo:
        return
    span = _row_span(store, s, m, lo, hi)
    with contextlib.suppress(OSError, ValueError):
        if span is None:
            m.madvise(mmap.MADV_DONTNEED)
        else:
            m.madvise(mmap.MADV_DONTNEED, *span)


@contextlib.contextmanager
def _random_access(store: EmbeddingStore, mapped: list[int]) -> Iterator[Callable[..., None]]:
    """Random row reads from the memory-mapped shards ``mapped`` (those read through their
    map: :class:`_Reader` reads the others with ``preadv``) without growing this process's
    resident memory: no fault-around while reading (``MADV_RANDOM``), and the pages read are
    unmapped again by the callable yielded (``MADV_DONTNEED``: on a read-only file mapping it
    only drops this process's page-table entries; the data stays in the OS cache). Called
    with global rows ``lo, hi`` it drops the large pages holding rows ``lo .. hi - 1`` (so
    threads reading rows further away keep theirs; one reading a row nearby maps it again);
    without, every page of those shards."""
    import mmap

    maps = {s: m for s in mapped if (m := shard_mapping(store.shards[s])) is not None}
    advise = hasattr(mmap, "MADV_RANDOM") and hasattr(mmap, "MADV_DONTNEED")

    def drop(lo: int | None = None, hi: int | None = None) -> None:
        if not advise:
            return
        if lo is None or hi is None:
            for m in maps.values():
                with contextlib.suppress(OSError, ValueError):
                    m.madvise(mmap.MADV_DONTNEED)
            return
        if hi <= lo:
            return
        # The shards holding rows lo .. hi - 1 only (empty shards among them drop nothing).
        s0 = int(np.searchsorted(store.offsets, lo, side="right")) - 1
        s1 = int(np.searchsorted(store.offsets, hi - 1, side="right")) - 1
        for s in range(max(s0, 0), min(s1, len(store.shards) - 1) + 1):
            if s in maps:
                first = int(store.offsets[s])
                a = max(lo, first) - first
                b = min(hi, int(store.offsets[s + 1])) - first
                drop_rows(store, s, a, b)

    if advise:
        for m in maps.values():
            with contextlib.suppress(OSError, ValueError):
                m.madvise(mmap.MADV_RANDOM)
    try:
        yield drop
    finally:
        drop()
        if advise:
            for m in maps.values():
                with contextlib.suppress(OSError, ValueError):
                    m.madvise(mmap.MADV_NORMAL)


class _Reader:
    """Reads a store's rows (ascending global rows) for one rescoring: from each shard file
    with ``preadv``, a run of nearby rows at a time (the pages stay in the OS cache, out of
    this process; a truncated file is an InputError, where a memory map would fault), or,
    where a shard is not a file (an array in memory, a strided view), through the array, a
    window at a time, its pages dropped before the next (``drop``, :func:`_random_access`).
    Threads may share one reader: each passes its own staging buffer (:meth:`stage`); each
    call of :meth:`read` opens the shard files it reads one at a time and closes them."""

    def __init__(self, store: EmbeddingStore) -> None:
        self.store = store
        self.sources = [
            _file_source(sh) if sh.dtype == store.dtype else None for sh in store.shards
        ]
        self.span = max(1, _WINDOW_BYTES // max(store.dim * store.dtype.itemsize, 1))
        self.mapped = [s for s, src in enumerate(self.sources) if src is None]
        self.drop: Callable[..., None] = lambda *a: None

    def stage(self) -> np.ndarray:
        """A staging buffer for one thread's reads."""
        return np.empty((self.span, self.store.dim), self.store.dtype)

    def read(self, rows: np.ndarray, out: np.ndarray, stage: np.ndarray) -> np.ndarray:
        """``out[:len(rows)]`` filled with the store's ascending global ``rows`` (repeats
        allowed). A run read at once never crosses a shard or a window of ``span`` rows, and
        ends at a gap of more than ``_GAP_ROWS`` rows in a shard read from its file."""
        out = out[: len(rows)]
        if len(rows) == 0:
            return out
        store = self.store
        segments = self._segments(rows)
        local = segments[1]
        # Repeats before each row: a run is consecutive rows only without them (a repeat
        # and a gap could make up its length).
        repeats = np.concatenate(([0], np.cumsum(np.diff(local) == 0)))
        with contextlib.closing(self._open_runs(*segments)) as runs:
            for a, b, s, lo, hi, fd in runs:
                src = self.sources[s]
                if src is None:
                    np.take(store.shards[s], local[a:b], axis=0, out=out[a:b])
                    self.drop(int(rows[a]), int(rows[b - 1]) + 1)
                elif hi - lo == b - a and repeats[b - 1] == repeats[a]:  # straight into place
                    _pread_rows(fd, src, lo, out[a:b])
                else:
                    got = _pread_rows(fd, src, lo, stage[: hi - lo])
                    np.take(got, local[a:b] - lo, axis=0, out=out[a:b])
        return out

    def _segments(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(shard, local, cuts)`` of the ascending global ``rows``: each row's shard and row
        in it, and where a run ends (see :meth:`read`)."""
        store = self.store
        shard = np.searchsorted(store.offsets, rows, side="right") - 1
        local = rows - store.offsets[shard]
        filed = np.array([src is not None for src in self.sources])[shard]
        ends = (np.diff(shard) != 0) | (np.diff(local // self.span) != 0)
        ends |= (np.diff(local) > _GAP_ROWS) & filed[1:]
        return shard, local, np.flatnonzero(ends) + 1

    def runs(
        self, rows: np.ndarray, stage: np.ndarray
    ) -> Generator[tuple[int, int, np.ndarray, int], None, None]:
        """The runs of the ascending global ``rows`` (as :meth:`read` reads them), each as
        ``(a, b, x, start)``: ``rows[a:b]`` lie in ``x``, the store's rows from global row
        ``start`` on, read into ``stage`` (valid until the next run), or, where the shard is
        not a file, a slice of the array (its pages dropped once the next run is asked for).
        Close the iterator when stopping early (its shard file stays open until then)."""
        if len(rows) == 0:
            return
        store = self.store
        with contextlib.closing(self._open_runs(*self._segments(rows))) as runs:
            for a, b, s, lo, hi, fd in runs:
                start = int(store.offsets[s]) + lo
                src = self.sources[s]
                if src is None:
                    yield a, b, store.shards[s][lo:hi], start
                    self.drop(start, start + hi - lo)
                else:
                    yield a, b, _pread_rows(fd, src, lo, stage[: hi - lo]), start

    def _open_runs(
        self, shard: np.ndarray, local: np.ndarray, cuts: np.ndarray
    ) -> Generator[tuple[int, int, int, int, int, int], None, None]:
        """The runs of ascending global rows (their :meth:`_segments`) as ``(a, b, shard,
        lo, hi, fd)``: rows ``a:b`` lie in the shard's local rows ``lo .. hi - 1``; ``fd`` is
        open on the shard's file (-1 where the shard is not a file). One shard file open at a time,
        closed before the next (the rows ascend): a store of many shards already holds a
        descriptor per shard for its memory maps, and a scan under way another per shard;
        one more per shard here could exceed ``ulimit -n``."""
        fd, fd_shard = -1, -1
        try:
            for a, b in itertools.pairwise([0, *cuts.tolist(), len(local)]):
                s, lo, hi = int(shard[a]), int(local[a]), int(local[b - 1]) + 1
                src = self.sources[s]
                if src is not None and s != fd_shard:
                    if fd >= 0:
                        os.close(fd)
                        fd = -1
                    # Another file renamed over the one the store mapped: an InputError.
                    fd, fd_shard = open_source(src, mapped_file(self.store, s)), s
                yield a, b, s, lo, hi, (fd if src is not None else -1)
        finally:
            if fd >= 0:
                os.close(fd)


def _read(reader: _Reader, rows: np.ndarray, out: np.ndarray, stage: np.ndarray) -> np.ndarray:
    """The ascending global ``rows`` read into ``out`` (:meth:`_Reader.read`)."""
    return reader.read(rows, out, stage)


def _batches(n_rows: int, step: int, threads: int) -> list[tuple[int, int]]:
    """Ranges of at most ``step`` distinct rows, at least ``threads`` of them when there are
    that many rows (so every thread has work)."""
    step = max(1, min(step, -(-n_rows // max(threads, 1))))
    return [(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]


class _Worker:
    """One computing thread's buffers: a piece of a batch's rows as stored, in float32 and
    in float64."""

    def __init__(self, store: EmbeddingStore, piece: int) -> None:
        d = store.dim
        self.piece = piece
        self.xs = np.empty((piece, d), store.dtype)
        self.x32 = None if store.dtype == np.float32 else np.empty((piece, d), np.float32)
        self.x64 = np.empty((piece, d), np.float64)
        self.tmp = np.empty(piece, np.float64)


def _batch_dots(
    x: np.ndarray,
    q64: np.ndarray,
    qr: np.ndarray,
    rows: np.ndarray,
    uniq: np.ndarray,
    pairs: np.ndarray,
    s: np.ndarray,
    err: np.ndarray,
    kernels: Kernels,
    bound: np.ndarray | None,
    w: _Worker,
) -> None:
    """Float64 inner products ``s[pairs]`` and their error bounds ``err[pairs]`` of the pairs
    ``pairs`` (indices into ``qr``/``rows``), whose rows are the distinct ascending ``uniq``,
    read into ``x`` (:func:`_read`): per query, pieces of its rows are converted to float64
    (through float32, torch's fast path, where torch is installed) and multiplied with the
    query. ``err`` is ``bound[r]`` per query, or each pair's own ``sum |q_i x_i|`` times
    ``gamma_d`` (rounded up)."""
    t = kernels.torch
    # By query, each query's rows still ascending (a stable sort; on 16-bit keys numpy's
    # stable sort is a radix sort, several times faster than on int64).
    key = qr[pairs]
    if len(key) and int(key.min()) >= 0 and int(key.max()) < 1 << 15:
        key = key.astype(np.int16)
    pairs = pairs[np.argsort(key, kind="stable")]
    local = np.searchsorted(uniq, rows[pairs])
    pq = qr[pairs]
    cuts = np.flatnonzero(np.diff(pq)) + 1
    for lo0, hi0 in itertools.pairwise([0, *cuts.tolist(), len(pairs)]):
        r = int(pq[lo0])
        for lo in range(lo0, hi0, w.piece):
            hi = min(lo + w.piece, hi0)
            n = hi - lo
            at = pairs[lo:hi]
            xs = np.take(x, local[lo:hi], axis=0, out=w.xs[:n])
            x64, tmp = w.x64[:n], w.tmp[:n]
            if t is not None and w.x32 is not None:
                x32 = w.x32[:n]
                t.from_numpy(x32).copy_(t.from_numpy(xs))  # float16 -> float32: exact
                t.from_numpy(x64).copy_(t.from_numpy(x32))
                t.mv(t.from_numpy(x64), t.from_numpy(q64[r]), out=t.from_numpy(tmp))
            else:
                np.copyto(x64, xs)
                np.matmul(x64, q64[r], out=tmp)
            s[at] = tmp
            if bound is not None:
                err[at] = bound[r]
            else:
                row_bounds(x64, q64[r], tmp)
                err[at] = tmp


def _pipelined(
    store: EmbeddingStore,
    batches: list[tuple[int, int]],
    step: int,
    piece: int,
    threads: int,
    reader: _Reader,
    uniq: np.ndarray,
    dots: Callable[[np.ndarray, int, int, _Worker], None],
) -> None:
    """Run ``dots(x, a, b, worker)`` on every batch ``(a, b)`` of distinct rows ``uniq[a:b]``,
    read into ``x`` by ``reader``: half the threads (at least one) read the batches, the
    others compute, through ``threads + 1`` reused buffers (with many cores a single reader
    would hold the others up; on two cores, reading by ``preadv``, this split and both
    threads reading and computing took the same time). An error on any thread stops the
    others and is raised here."""
    readers = max(1, threads // 2)
    computers = threads - readers
    free: Queue[np.ndarray] = Queue()
    for _ in range(threads + 1):
        free.put(np.empty((step, store.dim), store.dtype))
    ready: Queue[tuple[int, int, np.ndarray, np.ndarray] | None] = Queue()
    failed = threading.Event()
    errors: list[BaseException] = []
    done = [0]
    done_lock = threading.Lock()

    def read(mine: list[tuple[int, int]]) -> None:
        try:
            stage = reader.stage()
            for a, b in mine:
                buf = free.get()
                if failed.is_set():
                    return
                ready.put((a, b, buf, _read(reader, uniq[a:b], buf, stage)))
        except BaseException as exc:
            errors.append(exc)
            failed.set()
        finally:
            with done_lock:
                done[0] += 1
                last = done[0] == readers
            if last:  # the last reader out: each compute thread stops at its None
                for _ in range(computers):
                    ready.put(None)

    def compute() -> None:
        w: _Worker | None = None
        try:
            w = _Worker(store, piece)
        except BaseException as exc:  # out of memory: the others stop; this one drains
            errors.append(exc)
            failed.set()
        # Every item is taken and its buffer handed back, whatever failed: the reader waits
        # for free buffers, and each compute thread must reach its None.
        while (item := ready.get()) is not None:
            a, b, buf, x = item
            try:
                if w is not None and not failed.is_set():
                    dots(x, a, b, w)
            except BaseException as exc:
                errors.append(exc)
                failed.set()
            finally:
                free.put(buf)

    with ThreadPoolExecutor(threads, thread_name_prefix="inquire-rescore") as pool:
        futures = [pool.submit(read, batches[r::readers]) for r in range(readers)]
        futures += [pool.submit(compute) for _ in range(computers)]
        try:
            for f in futures:
                f.result()
        except BaseException:
            # Interrupted here (KeyboardInterrupt while waiting): the threads stop at their
            # next batch rather than rescoring every batch before the pool's exit returns.
            failed.set()
            raise
    if errors:
        raise errors[0]


def _each_reads(
    batches: list[tuple[int, int]],
    threads: int,
    reader: _Reader,
    work_on: Callable[[int, int, np.ndarray], None],
) -> None:
    """Run ``work_on(a, b, stage)`` on every batch on ``threads`` threads (one when 1), each
    with its own staging buffer, reading and computing (with the compiled kernel the products
    take less time than the reads: a thread that only computed would mostly wait). Batches
    are taken in order from a shared counter; an error on any thread stops the others at
    their next batch and is raised here."""
    lock = threading.Lock()
    nxt = [0]
    failed = threading.Event()

    def work() -> None:
        try:
            stage = reader.stage()
            while not failed.is_set():
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(batches):
                    return
                work_on(*batches[i], stage)
        except BaseException:  # (out of memory for the stage too): the others stop
            failed.set()
            raise

    if threads == 1:
        work()
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="inquire-rescore") as pool:
        futures = [pool.submit(work) for _ in range(threads)]
        try:
            errors = [f.exception() for f in futures]
        except BaseException:
            failed.set()  # interrupted while waiting: the threads stop at their next batch
            raise
    for exc in errors:
        if exc is not None:
            raise exc


def kernel_for(
    store: EmbeddingStore, wait: bool = False
) -> tuple[Callable[..., None], Callable[..., None]] | None:
    """The compiled kernel (:func:`inquire.index.fused.loaded`) where it can rescore
    ``store`` (float16 or float32 rows) and is loaded (``wait``: loaded first), else None."""
    if store.dtype not in (np.float16, np.float32):
        return None
    return fused.loaded(wait=wait)


def rescore(
    store: EmbeddingStore,
    q: np.ndarray,
    qr: np.ndarray,
    rows: np.ndarray,
    kernels: Kernels,
    max_norm: float | None = None,
    threads: int = 1,
    used: list[str] | None = None,
) -> np.ndarray:
    """Exact scores ``(m,) float32`` (:func:`inquire.index.score.exact_score`, bit for bit) of
    the pairs (query ``qr``, global row ``rows``). ``used``: gets ``"fused"`` or ``"numpy"``
    appended (which way ran). ``max_norm``: an upper bound of the rows'
    norms, if known. ``threads``: threads sharing the work (with the compiled kernel each
    reads and computes; without it, with two or more, half read the batches and the others
    compute: :func:`_pipelined`); torch's own thread count should then be 1.

    The distinct rows are read in ascending order, in batches of ~32 MiB, each row once however
    many queries kept it; a batch's rows (sparse: they may span the whole store) are read from
    the shard files with ``preadv``, a run of nearby rows at a time through a staging buffer
    of at most ~4 MiB (:class:`_Reader`: nothing of the store is mapped into this process;
    gathering through the memory map, each touch maps a large page, which must be unmapped
    again, and cost more at every density measured). Within a batch, with the compiled
    kernel loaded (:func:`inquire.index.fused.loaded`, waited for only where ``m * d >=
    FUSED_WAIT_ELEMENTS``), its pairs in row order go through the kernel, each thread reading
    and computing its own batches (:func:`_each_reads`); without it, per query, its rows are
    converted to float64 and multiplied with the query (:func:`_batch_dots`), half the threads
    reading (:func:`_pipelined`). Each float64 value is then rounded once to float32 with a
    proven error bound (:func:`inquire.index.score.round_once`), the rare undecided pair
    exactly."""
    m = len(qr)
    if m == 0:
        return np.empty(0, np.float32)
    d = store.dim
    q64 = np.asarray(q, np.float32).astype(np.float64)
    bound = norm_bounds(q64, max_norm)
    # Pairs by row (the order of one row's pairs does not matter: an unstable sort, ~5x
    # faster), then each distinct row's first pair.
    order = np.argsort(rows)
    kern = kernel_for(store, wait=m * d >= FUSED_WAIT_ELEMENTS)
    if used is not None:
        used.append("numpy" if kern is None else "fused")
    by_row = rows[order]
    first = np.flatnonzero(np.concatenate(([True], by_row[1:] != by_row[:-1])))
    uniq = by_row[first]
    first = np.append(first, m)
    threads = max(1, int(threads))
    batches = _batches(len(uniq), max(1, _BATCH_ELEMENTS // max(d, 1)), threads)
    n_workers = min(threads, len(batches))
    step = max(b - a for a, b in batches)
    piece = max(1, min(_PIECE_ELEMENTS // max(d, 1), m))
    s = np.empty(m, np.float64)
    err = np.empty(m, np.float64)
    q32 = np.ascontiguousarray(q, np.float32)
    g = gamma64(d) * (1 + 4 * gamma64(d))

    def dots(x: np.ndarray, a: int, b: int, w: _Worker) -> None:
        # The batch of distinct rows uniq[a:b], read into x, and their pairs.
        pairs = order[first[a] : first[b]]
        _batch_dots(x, q64, qr, rows, uniq[a:b], pairs, s, err, kernels, bound, w)

    def kernel_dots(a: int, b: int, stage: np.ndarray) -> None:
        # The pairs of the distinct rows uniq[a:b], run by run as read: the compiled kernel
        # reads each run's rows where preadv left them (in cache), in row order.
        assert kern is not None
        with contextlib.closing(reader.runs(uniq[a:b], stage)) as runs:
            for ra, rb, x, start in runs:
                pa, pb = int(first[a + ra]), int(first[a + rb])
                pairs = order[pa:pb]
                local = by_row[pa:pb] - start
                qp = np.ascontiguousarray(qr[pairs], np.int64)
                out = np.empty(pb - pa, np.float64)
                tot = None if bound is not None else np.empty(pb - pa, np.float64)
                fused.pair_dots(kern, x, local, qp, q32, out, tot)
                s[pairs] = out
                err[pairs] = bound[qp] if bound is not None else tot * g  # type: ignore[operator]

    reader = _Reader(store)
    with _random_access(store, reader.mapped) as drop:
        reader.drop = drop
        if kern is not None:
            _each_reads(batches, n_workers, reader, kernel_dots)
        elif n_workers == 1:
            raw, w = np.empty((step, d), store.dtype), _Worker(store, piece)
            stage = reader.stage()
            for a, b in batches:
                dots(_read(reader, uniq[a:b], raw, stage), a, b, w)
            del raw, w, stage
        else:
            _pipelined(store, batches, step, piece, n_workers, reader, uniq, dots)

        def slow(js: np.ndarray) -> np.ndarray:
            return _slow_scores(store, q, qr, rows, reader, js)

        return round_once(s, err, slow)


def _slow_scores(
    store: EmbeddingStore,
    q: np.ndarray,
    qr: np.ndarray,
    rows: np.ndarray,
    reader: _Reader,
    js: np.ndarray,
) -> np.ndarray:
    """Exact scores of the pairs ``js`` a float64 value cannot settle (rare), by row, a few
    rows at a time (:func:`inquire.index.score.exact_score`)."""
    by_row = np.argsort(rows[js], kind="stable")  # positions in js
    got = np.empty(len(js), np.float32)
    buf = np.empty((_SLOW_ROWS, store.dim), store.dtype)
    stage = reader.stage()
    for a in range(0, len(by_row), _SLOW_ROWS):
        part = by_row[a : a + _SLOW_ROWS]
        x = _read(reader, rows[js[part]], buf, stage)
        for i, p in enumerate(part):
            got[p] = exact_score(q[qr[js[p]]], x[i])
    return got
