"""Sequential reading of an embedding store's shards in blocks of rows that never cross a
shard boundary: ``os.preadv`` into reused staging buffers (the pages stay in the OS cache,
out of this process's resident memory), optionally filled ahead by a reader thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from queue import Queue
from typing import Any

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError

#: Budget of two of the reader's staging buffers when ``block_rows`` is not given (MiB).
DEFAULT_MEMORY_MB = 256
#: Bytes of one read block when ``block_rows`` is not given: the reader's buffers (three with
#: several scoring threads) then fit in a CPU's last-level cache, where the GEMMs find the
#: rows ``preadv`` just wrote. Measured side by side at 1M x 1024 float16, 250 queries, top
#: 1000, 2 cores (32 MiB of L3): searches reading the bfloat16 copy took 1.34 s in blocks of
#: 8 MiB against 1.79 s in blocks of 128 MiB (medians of 7); float32 searches 1.77-1.79 s
#: against 2.08 s. ``benchmarks/exact_search_parts.py`` prints the ratio (``block_ratio``).
CACHE_BLOCK_BYTES = 8 << 20
_MIN_BLOCK_ROWS = 1024
_MAX_BLOCK_ROWS = 1 << 20


def auto_block_rows(dim: int, itemsize: int = 2, memory_mb: int = DEFAULT_MEMORY_MB) -> int:
    """Rows per read block: ``CACHE_BLOCK_BYTES`` of rows, fewer where two staging buffers
    would take more than ``memory_mb`` MiB (with several scoring threads the reader keeps
    three buffers in flight: 1.5x that); a multiple of 1024 rows, at least 1024."""
    row_bytes = itemsize * max(dim, 1)
    rows = min((memory_mb << 20) // (2 * row_bytes), CACHE_BLOCK_BYTES // row_bytes)
    rows = max(_MIN_BLOCK_ROWS, min(_MAX_BLOCK_ROWS, int(rows)))
    return rows - rows % _MIN_BLOCK_ROWS


@dataclass
class Block:
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
    # A view keeps its parent's ``offset`` (``np.load(p, mmap_mode="r")[100:]``): where its
    # data lies in the file is read from the addresses (numpy maps the file from the
    # allocation granule below ``offset``).
    m = getattr(shard, "_mmap", None)
    if m is None:
        return str(filename), int(offset)
    import mmap

    try:
        base = np.frombuffer(m, np.uint8)
    except (TypeError, ValueError, BufferError):  # closed
        return None
    at = int(shard.__array_interface__["data"][0]) - int(base.ctypes.data)
    del base
    if not 0 <= at <= len(m):
        return None
    return str(filename), int(offset) - int(offset) % mmap.ALLOCATIONGRANULARITY + at


def open_source(src: tuple[str, int], expect: tuple[int, int] | None = None) -> int:
    """A descriptor open for reading on the shard file of ``src`` (:func:`_file_source`); a
    file gone since the store mapped it (deleted, unreadable) or, where ``expect`` (its
    ``(device, inode)`` when mapped: ``EmbeddingStore.shard_files``) is given, another file
    renamed over it, is an InputError: its rows are not the rows the store's ids describe."""
    try:
        fd = os.open(src[0], os.O_RDONLY)
    except OSError as exc:
        raise InputError(
            f"embedding shard {src[0]!r} cannot be read ({exc.strerror or exc}); it was "
            f"removed or changed since the store was opened: open the store again"
        ) from None
    if expect is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != tuple(expect):
            os.close(fd)
            raise InputError(
                f"embedding shard {src[0]!r} was replaced by another file since the store "
                f"was opened: open the store again"
            )
    return fd


def mapped_file(store: Any, s: int) -> tuple[int, int] | None:
    """The ``(device, inode)`` of shard ``s``'s file when ``store`` mapped it
    (``EmbeddingStore.shard_files``), for :func:`open_source`; None where not recorded."""
    files = getattr(store, "shard_files", None)
    return None if files is None else files[s]


def _pread_rows(fd: int, src: tuple[str, int], lo: int, buf: np.ndarray) -> np.ndarray:
    """Fill ``buf (rows, d)`` with the shard's rows from ``lo`` (``src``: its file name and
    data offset, :func:`_file_source`; ``fd`` open on it); a short file is an InputError."""
    want, done = buf.nbytes, 0
    row_bytes = buf.nbytes // max(len(buf), 1)
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]
    while done < want:  # preadv may return short counts on large reads
        got = os.preadv(fd, [view[done:]], src[1] + lo * row_bytes + done)
        if got <= 0:
            raise InputError(
                f"embedding shard {src[0]!r} is shorter than its header says "
                f"(read {done} of {want} bytes at row {lo}); the file is truncated"
            )
        done += got
    return buf


def read_slices(
    store: EmbeddingStore, slices: list[tuple[int, int, int]], out: np.ndarray
) -> np.ndarray:
    """``out (rows, d)`` (the store's dtype) filled with the rows of the store's ``slices``
    (``(shard, lo, hi)`` local row ranges), one after another: read from the shard files,
    each opened once (the pages stay out of this process; a truncated file is an InputError,
    where the memory map would fault; so is a file replaced since the store mapped it), or
    copied where a shard is not a file."""
    shards = store.shards
    fds: dict[int, int] = {}
    try:
        at = 0
        for s, lo, hi in slices:
            buf = out[at : at + hi - lo]
            src = _file_source(shards[s])
            if src is None:
                np.copyto(buf, shards[s][lo:hi], casting="unsafe")
            else:
                if s not in fds:
                    fds[s] = open_source(src, mapped_file(store, s))
                _pread_rows(fds[s], src, lo, buf)
            at += hi - lo
        return out
    finally:
        for fd in fds.values():
            os.close(fd)


def iter_blocks(
    store: EmbeddingStore,
    block_rows: int,
    prefetch: bool = True,
    n_slots: int = 2,
    shards: list[np.ndarray] | None = None,
) -> Iterator[Block]:
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
    # The store's own shard files are checked to be the files it mapped (not a copy's).
    own = shards is store.shards
    fds: dict[int, int] = {}

    def load(slot: int, s_idx: int, lo: int, rows: int) -> np.ndarray:
        shard, src = shards[s_idx], sources[s_idx]
        buf = stage[slot][:rows]
        if src is None:
            np.copyto(buf, shard[lo : lo + rows], casting="unsafe")
            return buf
        fd = fds.get(s_idx)
        if fd is None:
            fd = fds[s_idx] = open_source(src, mapped_file(store, s_idx) if own else None)
        return _pread_rows(fd, src, lo, buf)

    try:
        if not prefetch:
            for start, s_idx, lo, rows in plan:
                yield Block(start, rows, load(0, s_idx, lo, rows), lambda: None)
            return
        yield from _prefetched(plan, load, n_slots)
    finally:
        for fd in fds.values():
            os.close(fd)


def _releaser(free: Queue[int], slot: int) -> Callable[[], None]:
    return lambda: free.put(slot)


def _prefetched(plan: list[tuple[int, int, int, int]], load: Any, n_slots: int) -> Iterator[Block]:
    free: Queue[int] = Queue()
    ready: Queue[Block | BaseException | None] = Queue()
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
                ready.put(Block(start, rows, data, _releaser(free, slot)))
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
