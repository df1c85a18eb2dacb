"""Exact scores of (query, row) pairs whose rows are read at random from a store's
memory-mapped shards: each distinct row read once, in row order, without growing this
process's resident memory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.index.kernels import Kernels
from inquire.index.score import exact_scores

# Rows gathered and converted per rescoring batch (times d elements: ~32 MiB of float32 at d=1024).
_RESCORE_ELEMENTS = 1 << 23


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


def shard_mapping(shard: Any) -> Any:
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

    maps = [m for m in (shard_mapping(s) for s in store.shards) if m is not None]
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


def rescore(
    store: EmbeddingStore,
    q: np.ndarray,
    qr: np.ndarray,
    rows: np.ndarray,
    kernels: Kernels,
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
