"""A guessed floor for exact search, from a sample of the store, checked after the search.

Each query's candidate pool keeps the rows whose upper bound reaches its floor, a proven lower
bound of the k-th exact score (:mod:`inquire.index.pool`). A proven floor needs k rows seen,
so it starts low and rises slowly: over a 1M-row store the pools take in ~13 times more
candidates than they keep. A floor *guessed* near the k-th score from the start saves most of
that work. The guess may be wrong, so it is checked:

- **Guess.** Read a systematic sample of the allowed rows (short slices of ``SLICE_ROWS``
  rows spread evenly over the store), score it with a float32 GEMM, and take per query the
  ``j``-th largest sampled score, ``j = m + 4 sqrt(m) + 4`` where ``m = k * sampled /
  allowed`` is how many sampled rows the true top k would hold on average: the guess ``G``
  sits, in expectation, well below the k-th score (the store holds about ``j / m`` times k
  rows above it).
- **Search** with the pools' floors raised to ``G``: rows whose upper bound is below ``G``
  are never pooled.
- **Check.** Let ``t`` be the k-th exact score found. Where ``t >= G``, every row left out
  had an exact score ``< G <= t``: strictly below the k-th score, in no top k, ties
  included; the result is exact. Where ``t < G`` (or fewer than k rows were found), the
  guess was too high and that query is searched again without it (:func:`failed`).

The guess never changes a result, only the time: a wrong guess costs a second pass for the
queries it failed (a second pass over the store for them). With a random sample a failure
has probability ~1e-5 per query. Short slices keep a store ordered by cluster (taxon, date:
a query's best rows in runs) from failing much more often: with 64 slices of 128 rows, a
store in runs of 200 rows failed ~1 query in 5 (a slice inside a run over-represents it);
with slices of 8 rows, none of 40 (``tests/test_index_speculate.py``).
"""

from __future__ import annotations

import math

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError
from inquire.index.blocks import DEFAULT_MEMORY_MB, read_slices
from inquire.index.kernels import Kernels

#: Rows sampled at most (a float32 GEMM of this many rows: ~0.8% of a search's GEMM), in
#: slices of this many neighbouring rows spread evenly over the store: short slices, so a
#: store ordered by taxon or date (a query's best rows in one run) is sampled in proportion.
SAMPLE_ROWS = 8192
SLICE_ROWS = 8
#: Guess only where the allowed rows are at least this many times the sample, and the sample
#: holds at least this many rows.
MIN_RATIO = 16
MIN_SAMPLE = 64
#: The sample is sized to hold ``TARGET_HITS`` rows of the true top k on average (fewer rows
#: where k is large), and a guess is made only where it holds at least ``MIN_HITS``: with
#: fewer the guess lies far below the k-th score (``j / m`` times k rows above it), where
#: the pools' own floor already is after a few chunks (measured at 1M rows: top 100 gained
#: about what its sample cost; top 1000 ~5x fewer candidates pooled).
TARGET_HITS = 8
MIN_HITS = 2
#: The sample's rows (stored and float32) take at most this share of ``memory_mb``.
MEMORY_SHARE = 4


def _slices(store: EmbeddingStore, n: int) -> list[tuple[int, int, int]]:
    """``(shard, lo, hi)`` local row ranges of about ``n`` rows in all, ``SLICE_ROWS`` rows
    each, spread evenly over the store's global rows (each cut at its shard's end), in
    order."""
    total = len(store)
    per = max(1, min(SLICE_ROWS, n))
    count = max(1, n // per)
    out: list[tuple[int, int, int]] = []
    for i in range(count):
        first = (2 * i + 1) * total // (2 * count) - per // 2
        first = min(max(first, 0), max(total - per, 0))
        s = int(np.searchsorted(store.offsets, first, side="right") - 1)
        lo = first - int(store.offsets[s])
        hi = min(lo + per, len(store.shards[s]))
        if hi > lo and (not out or (s, lo) > out[-1][:2]):
            out.append((s, lo, hi))
    return out


def guess_floor(
    store: EmbeddingStore,
    q: np.ndarray,
    k: int,
    kernels: Kernels,
    mask: np.ndarray | None = None,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> np.ndarray | None:
    """``(nq,) float32`` guessed floors (``-inf`` where no guess), or None where the store's
    allowed rows are too few for a sample to pay (see module). The sample's rows take at
    most ``memory_mb / MEMORY_SHARE`` MiB (stored and in float32)."""
    allowed = len(store) if mask is None else int(np.count_nonzero(mask))
    if allowed < MIN_RATIO * k:  # k >= 1: no allowed rows is no guess
        return None
    row_bytes = store.dim * (store.dtype.itemsize + 4)
    budget = (max(int(memory_mb), 1) << 20) // MEMORY_SHARE // max(row_bytes, 1)
    # Allowed rows wanted in the sample; the slices cover all rows, so where a mask allows a
    # share of them, that many more are read (at most SAMPLE_ROWS and the memory budget).
    want = min(SAMPLE_ROWS, allowed // MIN_RATIO, -(-TARGET_HITS * allowed // k))
    n = min(-(-want * len(store) // allowed), SAMPLE_ROWS, budget)
    if n < MIN_SAMPLE:
        return None
    parts = _slices(store, n)
    raw = np.empty((sum(hi - lo for _, lo, hi in parts), store.dim), store.dtype)
    try:
        read_slices(store, parts, raw)
    except (InputError, OSError):
        return None  # the search itself reports an unreadable shard
    allow = np.ones(len(raw), bool)
    if mask is not None:
        at = 0
        for s, lo, hi in parts:
            first = int(store.offsets[s]) + lo
            allow[at : at + hi - lo] = mask[first : first + hi - lo]
            at += hi - lo
    valid = int(np.count_nonzero(allow))
    m = k * valid / allowed
    if m < MIN_HITS:
        return None
    if raw.dtype == np.float32:
        x = raw
    else:
        x = np.empty(raw.shape, np.float32)
        kernels.convert(raw, x)
    del raw
    j = math.ceil(m + 4 * math.sqrt(m) + 4)
    if j > len(x):
        return None
    # The sampled scores a group of queries at a time, within the same share of memory_mb
    # as the rows (all queries at once would take nq x sampled floats, whatever memory_mb).
    group = max(1, (max(int(memory_mb), 1) << 20) // MEMORY_SHARE // (4 * len(x)))
    guess = np.empty(len(q), np.float32)
    for a in range(0, len(q), group):
        # numpy's BLAS, whatever torch's settings: a guess needs no proven precision, and the
        # search's own GEMMs keep their checks.
        with np.errstate(all="ignore"):
            sample = np.matmul(q[a : a + group], x.T)
        sample[np.isnan(sample)] = -np.inf  # NaN is never returned
        sample[:, ~allow] = -np.inf
        sample.partition(sample.shape[1] - j, axis=1)  # in place: the j-th largest at n - j
        guess[a : a + group] = sample[:, sample.shape[1] - j]
        del sample
    del x
    return np.where(np.isfinite(guess), guess, np.float32(-np.inf)).astype(np.float32)


def failed(scores: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """Queries whose guessed floor was not proven by the result: the k-th exact score found
    (``scores (nq, k)`` descending, padding ``-inf``) is below the guess, or not a number."""
    kth = scores[:, -1]
    with np.errstate(invalid="ignore"):
        ok = (kth >= guess) | np.isneginf(guess)
    return np.flatnonzero(~ok)
