"""Candidates of exact search, kept by a proven upper bound until they are scored exactly.

Exact search first scores every row approximately (a float32 or a bfloat16 GEMM), with a
proven interval ``[lower, upper]`` (float32 numbers) around each row's exact score
(:mod:`inquire.index.score`). A :class:`CandidatePool` keeps, per query, every row whose
``upper`` is at least ``floor``, a lower bound on the k-th exact score:

- ``floor`` only rises. It is raised (a) by the pool itself: the k-th largest ``upper`` in the
  pool minus ``delta``, where ``delta >= upper - lower`` for every entry ever pushed, since k
  entries then have ``lower`` (so exact score) at least that; (b) by the caller, with other
  proven bounds (the k-th exact score among rows already rescored; ``lower`` of a chunk's
  k-th approximate score).
- A row with ``upper < floor`` has exact score ``< floor <= `` the k-th exact score: it is in
  no top k, ties included, and is dropped (or never enters).

So the rows of the true top k (ties at the k-th score included) are always in the pool or
already rescored, and rescoring only what the pool holds at the end gives the exact result.
With a bound as tight as the float32 GEMM's, the pool ends with about ``k`` rows plus the
few inside ``2 delta`` of the k-th score.

Entries are uint64 keys (:func:`inquire.index.topk.encode_keys` of ``upper`` and the global
row index), so one integer partition finds the k-th ``upper``.
"""

from __future__ import annotations

import numpy as np

from inquire.index.topk import decode_scores, encode_keys

_PAD = np.uint64(0xFFFFFFFFFFFFFFFF)
_LOW = np.uint64(0xFFFFFFFF)


def round_down(v: np.ndarray) -> np.ndarray:
    """float32 numbers ``<= v`` (float64), one float32 step below the nearest (safe against
    float64 rounding in computing ``v``); ``-inf`` stays ``-inf``, NaN becomes ``-inf``."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.nextafter(np.asarray(v, np.float64).astype(np.float32), np.float32(-np.inf))
    out[np.isnan(out)] = -np.inf
    return out


def round_up(v: np.ndarray) -> np.ndarray:
    """float32 numbers ``>= v`` (float64), one float32 step above the nearest."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.nextafter(np.asarray(v, np.float64).astype(np.float32), np.float32(np.inf))


class CandidatePool:
    """Per query, the rows whose proven ``upper`` bound reaches ``floor`` (see module)."""

    def __init__(self, nq: int, k: int) -> None:
        self.nq, self.k = nq, k
        self.keys = np.full((nq, 0), _PAD, np.uint64)
        self.delta = np.zeros(nq, np.float64)
        self.floor = np.full(nq, -np.inf, np.float32)
        self._pending: list[np.ndarray] = []
        self._pending_width = 0

    def raise_floor(self, values: np.ndarray, where: np.ndarray | None = None) -> None:
        """``floor = max(floor, values)`` (``(nq,)`` float32 proven lower bounds of the k-th
        exact score; or ``(len(where),)`` for the queries ``where``)."""
        if where is None:
            np.maximum(self.floor, values, out=self.floor)
        else:
            self.floor[where] = np.maximum(self.floor[where], values)

    def push(self, qr: np.ndarray, rows: np.ndarray, upper: np.ndarray, width: np.ndarray) -> None:
        """Offer candidates: query ``qr (m,)`` (ascending), global row ``rows (m,)``, float32
        ``upper (m,)`` and ``width (m,) float64 >= upper - lower``."""
        if len(qr) == 0:
            return
        np.maximum.at(self.delta, qr, width)
        keep = upper >= self.floor[qr]
        if not keep.all():
            qr, rows, upper = qr[keep], rows[keep], upper[keep]
            if len(qr) == 0:
                return
        counts = np.bincount(qr, minlength=self.nq)
        width_ = int(counts.max())
        starts = np.zeros(self.nq, np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        pos = np.arange(len(qr)) - starts[qr]
        cand = np.full((self.nq, width_), _PAD, np.uint64)
        cand[qr, pos] = encode_keys(upper, rows)
        self._pending.append(cand)
        self._pending_width += width_
        if self._pending_width >= max(self.k, 256):
            self.merge()

    def merge(self) -> None:
        """Fold pending candidates in, raise ``floor`` and drop what falls below it."""
        if self._pending:
            keys = np.concatenate([self.keys, *self._pending], axis=1)
            self._pending, self._pending_width = [], 0
        else:
            keys = self.keys
        width = keys.shape[1]
        if width == 0:
            return
        if width >= self.k:
            kth = np.partition(keys, self.k - 1, axis=1)[:, self.k - 1]
            uk = decode_scores(kth).astype(np.float64)  # padding: -inf
            self.raise_floor(round_down(uk - self.delta))
        # Keys ascend as scores descend: a score >= floor is a key <= floor's largest key
        # (padding is the largest key of all).
        drop = keys > encode_keys(self.floor, np.full(self.nq, _LOW, np.uint64))[:, None]
        counts = width - drop.sum(axis=1)
        w = int(counts.max(initial=0))
        if w == 0:
            self.keys = np.full((self.nq, 0), _PAD, np.uint64)
            return
        keys = keys.copy() if keys is self.keys else keys
        keys[drop] = _PAD  # padding sorts last: the kept keys are the w smallest of each row
        if w < width:
            keys = np.partition(keys, w - 1, axis=1)[:, :w]
        self.keys = np.ascontiguousarray(keys)

    def absorb(self, other: CandidatePool) -> None:
        """Fold another pool (over other rows, the same queries and k) into this one."""
        other.merge()
        np.maximum(self.delta, other.delta, out=self.delta)
        self.raise_floor(other.floor)
        self._pending.append(other.keys)
        self._pending_width += other.keys.shape[1]
        self.merge()

    def sizes(self) -> np.ndarray:
        """``(nq,)`` entries held per query (after folding pending candidates in)."""
        self.merge()
        return (self.keys != _PAD).sum(axis=1)

    def take_best(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Remove and return, per query, the ``n`` entries of largest ``upper`` (all of a
        query that holds at most ``n``) as ``(qr, rows)``, query ascending."""
        self.merge()
        width = self.keys.shape[1]
        if n <= 0 or width == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        if width <= n:
            return self.take()
        # Keys ascend as ``upper`` descends: a query's n best are its n smallest keys.
        keys = np.partition(self.keys, n - 1, axis=1)
        best, self.keys = keys[:, :n], np.ascontiguousarray(keys[:, n:])
        return _pairs(best)

    def take(self, queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Remove and return the entries of ``queries`` (default all, ascending) as ``(qr,
        rows)``, query ascending."""
        self.merge()
        keys = self.keys if queries is None else self.keys[queries]
        r_local, rows = _pairs(keys)
        qr = r_local if queries is None else np.asarray(queries, np.int64)[r_local]
        if queries is None:
            self.keys = np.full((self.nq, 0), _PAD, np.uint64)
        else:
            self.keys[queries] = _PAD
        return qr, rows


def _pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row of keys, global row)`` int64 of the entries of ``keys (nq, w)`` that are not
    padding, row-major (queries ascending)."""
    sel = keys != _PAD
    r, _ = np.nonzero(sel)
    return r.astype(np.int64), (keys[sel] & _LOW).astype(np.int64)
