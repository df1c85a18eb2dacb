"""Exact scores over store rows: the rescoring and exact routes of the partitioned index.

The score is the float64 dot product of a stored float16 row and the float32 query, rounded
to float32 (the rule of :func:`inquire.index.topk.brute_force`); it does not depend on which
rows are scored together, so every route and every partition layout returns the same bits.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

# Exact passes over selected rows gather and score this many rows at a time.
EXACT_BLOCK_ROWS = 32768


def exact_scores(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``(nq, n) float32`` exact scores: float64 dot products rounded to float32.

    ``vectors (n, d)`` (float16 rows of the store), ``queries (nq, d) float32``. The same
    value :func:`inquire.index.topk.brute_force` ranks by, whatever rows share the call.
    """
    x = np.asarray(vectors, np.float64)
    q = np.asarray(queries, np.float64)
    return (q @ x.T).astype(np.float32)


def screen_margin(queries: np.ndarray, dim: int) -> np.ndarray:
    """``(nq,)`` bound on |float32 GEMM score - exact score| for unit-norm rows (x4 slack)."""
    qn = np.linalg.norm(np.asarray(queries, np.float64), axis=1)
    return (4.0 * (dim + 2) * 2.0**-24 * qn * 1.01 + 1e-7).astype(np.float32)


class RowSource(Protocol):
    """Rows of an embedding store (:class:`inquire.embed.store.EmbeddingStore`)."""

    shards: list[np.ndarray]
    offsets: np.ndarray
    dim: int

    def __len__(self) -> int: ...


def advise_random(store: RowSource) -> int:
    """Tell the kernel the store's memory-mapped shards are read at random rows
    (``MADV_RANDOM``): no read-ahead around each row read. The partitioned index only ever
    gathers scattered rows (its candidates, a filter's selection); with read-ahead each
    1-2 KiB row read pulls in far more, which under a memory limit that the shards do not
    fit evicts what the next row needs (measured at 10M rows in 4 GiB: ~1.8 GB/s of reads for
    a few MB of rows). Sequential readers of the same store (exact search) read with
    ``preadv``, not through these maps. Returns how many maps were advised."""
    import mmap

    from inquire.index.rescore import shard_mapping

    if not hasattr(mmap, "MADV_RANDOM"):
        return 0
    n = 0
    for m in filter(None, (shard_mapping(s) for s in store.shards)):
        try:
            m.madvise(mmap.MADV_RANDOM)
            n += 1
        except (OSError, ValueError):  # a closed map or a kernel without the advice
            continue
    return n


def gather(store: RowSource, rows: np.ndarray) -> np.ndarray:
    """``(len(rows), d)`` rows of the store, in the order given, in the store's dtype (read
    in ascending order: forward through the memory maps, :func:`~inquire.index.rescore.
    gather_ascending`)."""
    from inquire.index.rescore import gather_ascending

    rows = np.asarray(rows, np.int64)
    out = np.empty((len(rows), store.dim), store.shards[0].dtype)
    if len(rows) == 0:
        return out
    order = np.argsort(rows, kind="stable")
    out[order] = gather_ascending(store, rows[order], np.empty_like(out))
    return out


def _best(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate scoring at least the k-th best of ``scores (m,)`` (ties kept)."""
    ok = ~np.isnan(scores)
    scores, rows = scores[ok] + np.float32(0.0), rows[ok]
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        scores, rows = scores[keep], rows[keep]
    return scores, rows


def exact_over_rows(
    store: RowSource, queries: np.ndarray, rows: np.ndarray, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact top ``k`` (ties kept) of each query among ``rows`` (global store rows).

    Screens with a float32 product block by block, keeps every row within
    :func:`screen_margin` of the k-th screened score, and rescores those exactly
    (:func:`exact_scores`). Returns per query ``(rows (m,), scores (m,) float32)``.
    """
    nq = len(queries)
    if len(rows) == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(nq)]
    q32 = np.ascontiguousarray(queries, np.float32)
    margin = screen_margin(q32, store.dim)
    keep_s: list[list[np.ndarray]] = [[] for _ in range(nq)]
    keep_r: list[list[np.ndarray]] = [[] for _ in range(nq)]
    bound = np.full(nq, -np.inf, np.float32)
    for lo in range(0, len(rows), EXACT_BLOCK_ROWS):
        part = rows[lo : lo + EXACT_BLOCK_ROWS]
        s32 = q32 @ gather(store, part).astype(np.float32).T
        for i in range(nq):
            sel = np.flatnonzero(s32[i] >= bound[i] - margin[i])
            keep_s[i].append(s32[i, sel])
            keep_r[i].append(part[sel])
            cat = np.concatenate(keep_s[i])
            if len(cat) > 4 * k:  # tighten: the k-th screened score so far
                kth = np.partition(cat, len(cat) - k)[len(cat) - k]
                bound[i] = max(bound[i], kth)
                rr = np.concatenate(keep_r[i])
                keep = cat >= bound[i] - margin[i]
                keep_s[i], keep_r[i] = [cat[keep]], [rr[keep]]
    out = []
    for i in range(nq):
        s = np.concatenate(keep_s[i])
        r = np.concatenate(keep_r[i])
        if len(s) > k:
            kth = np.partition(s, len(s) - k)[len(s) - k]
            keep = s >= kth - margin[i]
            r = r[keep]
        exact = exact_scores(gather(store, r), q32[i : i + 1])[0]
        s_best, r_best = _best(exact, r, k)
        out.append((r_best, s_best))
    return out
