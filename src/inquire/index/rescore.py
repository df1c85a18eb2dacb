"""Exact scores of (query, row) pairs whose rows are read at random from a store's
memory-mapped shards, by query, on several threads, without growing this process's resident
memory."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.index.kernels import Kernels
from inquire.index.score import exact_score, gamma64, round_once

# Elements of one piece of rows converted to float64 and multiplied (256 x 1024 x 8 bytes =
# 2 MiB: stays in cache).
_PIECE_ELEMENTS = 1 << 18
# Rows read by one thread between two drops of the pages mapped meanwhile.
_DROP_ROWS = 1 << 14


def _gather(store: EmbeddingStore, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:len(rows)] (m, d)`` (the store's dtype) filled with the store's global ``rows``
    (fastest when ``rows`` ascend: each shard's rows are then one run)."""
    out = out[: len(rows)]
    if len(rows) == 0:
        return out
    shard_of = np.searchsorted(store.offsets, rows, side="right") - 1
    if shard_of[0] == shard_of[-1] and (shard_of == shard_of[0]).all():
        s = int(shard_of[0])
        np.take(store.shards[s], rows - int(store.offsets[s]), axis=0, out=out)
        return out
    if (np.diff(shard_of) >= 0).all():  # one run per shard
        cuts = np.flatnonzero(np.diff(shard_of)) + 1
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)], strict=True):
            s = int(shard_of[a])
            np.take(store.shards[s], rows[a:b] - int(store.offsets[s]), axis=0, out=out[a:b])
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


def _split(qr: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """``parts`` ranges of about equal size over the pairs, cut where the query changes."""
    m = len(qr)
    cuts = [0]
    for i in range(1, parts):
        c = int(np.searchsorted(qr, qr[min(m - 1, i * m // parts)], side="left"))
        if c > cuts[-1]:
            cuts.append(c)
    cuts.append(m)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _dots(
    store: EmbeddingStore,
    q64: np.ndarray,
    qr: np.ndarray,
    rows: np.ndarray,
    s: np.ndarray,
    err: np.ndarray,
    kernels: Kernels,
    bound: np.ndarray | None,
    drop: Callable[[], None],
) -> None:
    """Float64 inner products ``s`` of the pairs (query ``qr`` ascending, global ``rows``) and
    their error bounds ``err`` (``bound[r]`` per query, or each pair's own ``sum |q_i x_i|``
    times ``gamma_d``): per query, pieces of its rows gathered from the shards, converted to
    float64 (through float32, torch's fast path, where torch is installed) and multiplied."""
    t = kernels.torch
    d = store.dim
    piece = max(1, min(_PIECE_ELEMENTS // max(d, 1), len(rows)))
    raw = np.empty((piece, d), store.dtype)
    x64 = np.empty((piece, d), np.float64)
    tmp = np.empty(piece, np.float64)
    x32 = None if store.dtype == np.float32 else np.empty((piece, d), np.float32)
    g = gamma64(d)
    starts = np.searchsorted(qr, np.arange(len(q64) + 1))
    read = 0
    for r in np.flatnonzero(np.diff(starts)):
        a0, b0 = int(starts[r]), int(starts[r + 1])
        for a in range(a0, b0, piece):
            b = min(a + piece, b0)
            n = b - a
            perm = np.argsort(rows[a:b], kind="stable")  # ascending rows: one run per shard
            x = _gather(store, rows[a:b][perm], raw)
            at = a + perm
            if t is not None and x32 is not None:
                t.from_numpy(x32[:n]).copy_(t.from_numpy(x))  # float16 -> float32: exact
                t.from_numpy(x64[:n]).copy_(t.from_numpy(x32[:n]))
                t.mv(t.from_numpy(x64[:n]), t.from_numpy(q64[r]), out=t.from_numpy(tmp[:n]))
            else:
                np.copyto(x64[:n], x)
                np.matmul(x64[:n], q64[r], out=tmp[:n])
            s[at] = tmp[:n]
            if bound is not None:
                err[a:b] = bound[r]
            else:
                np.abs(x64[:n], out=x64[:n])
                np.matmul(x64[:n], np.abs(q64[r]), out=tmp[:n])
                err[at] = tmp[:n] * (g * (1 + 4 * g))
            read += n
            if read >= _DROP_ROWS:
                drop()
                read = 0


def rescore(
    store: EmbeddingStore,
    q: np.ndarray,
    qr: np.ndarray,
    rows: np.ndarray,
    kernels: Kernels,
    max_norm: float | None = None,
    threads: int = 1,
) -> np.ndarray:
    """Exact scores ``(m,) float32`` (:func:`inquire.index.score.exact_score`, bit for bit) of
    the pairs (query ``qr``, global row ``rows``), ``qr`` ascending. ``max_norm``: an upper
    bound of the rows' norms, if known. ``threads``: threads sharing the work (by query);
    torch's own thread count should then be 1.

    Per query, its rows are gathered from the memory-mapped shards in pieces that stay in
    cache, converted to float64 and multiplied with the query (:func:`_dots`); each float64
    value is then rounded once to float32 with a proven error bound
    (:func:`inquire.index.score.round_once`), the rare undecided pair exactly."""
    m = len(qr)
    if m == 0:
        return np.empty(0, np.float32)
    q64 = np.asarray(q, np.float32).astype(np.float64)
    g = gamma64(store.dim)
    bound = None
    if max_norm is not None:
        # |s - sum| <= gamma_d ||q|| max_norm; the float64 evaluation of the bound may be low
        # by ~gamma_d relative: inflate.
        bound = g * np.linalg.norm(q64, axis=1) * (1 + 4 * g) * max_norm
    s = np.empty(m, np.float64)
    err = np.empty(m, np.float64)
    parts = _split(qr, max(1, int(threads)))
    with _random_access(store) as drop:
        jobs = [
            (store, q64, qr[a:b], rows[a:b], s[a:b], err[a:b], kernels, bound, drop)
            for a, b in parts
        ]
        if len(jobs) == 1:
            _dots(*jobs[0])
        else:
            with ThreadPoolExecutor(len(jobs), thread_name_prefix="inquire-rescore") as pool:
                for f in [pool.submit(_dots, *job) for job in jobs]:
                    f.result()
    one = np.empty((1, store.dim), store.dtype)
    return round_once(
        s, err, lambda j: exact_score(q[qr[j]], _gather(store, rows[j : j + 1], one)[0])
    )
