"""One scoring thread of the exact search: approximate each chunk (float32 GEMM, or bfloat16
screening), keep in a candidate pool the rows whose proven upper bound may reach the top k,
and give the survivors their exact scores."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.index import screen as screen_mod
from inquire.index.bf16_copy import Bf16Copy
from inquire.index.blocks import Block
from inquire.index.kernels import Kernels
from inquire.index.pool import CandidatePool, round_down, round_up
from inquire.index.rescore import drop_rows, kernel_for, rescore
from inquire.index.score import exact_scores
from inquire.index.screen import (
    C_BF16,
    Bounds,
    bf16_cut_keys,
    bf16_finite,
    bf16_values,
    gamma,
    lower_bound,
    row_error_slack,
    shift_rounds_once_at,
    shift_terms,
)
from inquire.index.topk import HEAVY_FACTOR, TopK, kth_largest

# A chunk with fewer rows than this is approximated the float32 way (small bfloat16 GEMMs take
# other code paths and gain nothing).
_MIN_SCREEN_ROWS = 64
# Chunks whose ||q|| max||x|| is below this cannot overflow float32 in any GEMM (a quarter of
# the largest float32: room for the rounding of partial sums, bfloat16 inputs and output).
_OVERFLOW_SAFE = float(np.finfo(np.float32).max) / 4
# A query whose pool grows past this many times k (plus a constant) is rescored at once: the
# pool's memory stays bounded even where the bound cannot separate many rows (near ties).
_POOL_CAP_FACTOR = 4
_POOL_CAP_EXTRA = 4096
# At the end, a pool holding more than this many times k rows for some query is rescored in
# two stages (:meth:`Scorer.finish`), unless the compiled kernel rescores it.
_TWO_STAGE_WIDTH = 1.25


# Per process: an upper bound of the largest row norm of each chunk of the stores searched,
# keyed by the shard files (path, size, modification and change times, inode, device) and
# the chunk's rows, so a resident store's norms are computed once. The change time and inode
# tell a shard replaced or rewritten with its old size and modification time (``rsync -t``,
# ``cp -p``, a restore: a stale norm would narrow the bound below the true error). Cleared
# when it grows past _NORMS_MAX entries.
_norms: dict[tuple[Any, ...], float] = {}
_norms_lock = threading.Lock()
_NORMS_MAX = 1 << 20


def _store_key(store: EmbeddingStore) -> tuple[Any, ...] | None:
    """Identity of the store's shard files (None when a shard is not a file, or is not the
    file the store mapped: one renamed over it since, whose norms are not the mapped rows')."""
    try:
        key = tuple(
            (str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
            for p, st in ((p, os.stat(p)) for p in store.shard_paths)
        )
    except (OSError, AttributeError, TypeError):
        return None
    mapped = getattr(store, "shard_files", None)
    if mapped is not None and [(k[5], k[4]) for k in key] != [tuple(m) for m in mapped]:
        return None
    return key


def _slice_rows(store: EmbeddingStore, first: int, rows: int) -> np.ndarray:
    """``(rows, d) float32``: a copy of the stored global rows ``first .. first + rows`` (one
    shard), read from its memory map, whose pages are then unmapped again (else every chunk
    read this way would stay resident in this process)."""
    s = int(np.searchsorted(store.offsets, first, side="right") - 1)
    lo = first - int(store.offsets[s])
    out = np.array(store.shards[s][lo : lo + rows], np.float32)
    drop_rows(store, s, lo, lo + rows)
    return out


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


class SharedFloor:
    """The highest pool floor of the scoring threads, per query: each floor is a proven lower
    bound of the k-th exact score over the whole store (k rows seen by that thread reach it),
    so every thread may drop rows below any of them."""

    def __init__(self, nq: int) -> None:
        self.values = np.full(nq, -np.inf, np.float32)
        self._lock = threading.Lock()

    def exchange(self, pool: CandidatePool) -> None:
        """Publish ``pool``'s floor and raise it to the highest floor published."""
        with self._lock:
            np.fmax(self.values, pool.floor, out=self.values)  # a NaN floor is ignored
            best = self.values.copy()
        pool.raise_floor(best)


class Scorer:
    """One scoring thread's buffers, candidate pool and exact top k."""

    def __init__(
        self,
        store: EmbeddingStore,
        q: np.ndarray,
        k: int,
        chunk_rows: int,
        id_keys: np.ndarray,
        kernels: Kernels,
        bound: Bounds,
        mask: np.ndarray | None = None,
        copy: Bf16Copy | None = None,
        shared: SharedFloor | None = None,
        floor: np.ndarray | None = None,
    ) -> None:
        self.store, self.q, self.id_keys, self.kernels, self.mask = store, q, id_keys, kernels, mask
        self.shared = shared  # the floor shared with the other scoring threads
        self.bound = bound
        self.copy = copy  # blocks of uint16 (bfloat16 bits) come from it, with row norms
        nq, dim = q.shape
        self.top = TopK(nq, k)  # rows already given their exact score
        self.pool = CandidatePool(nq, k)  # rows that may still reach the top k
        if floor is not None:
            # A guessed floor (:mod:`inquire.index.speculate`), checked after the search.
            self.pool.raise_floor(floor)
        self.cap = _POOL_CAP_FACTOR * k + _POOL_CAP_EXTRA
        self.f32 = np.empty((chunk_rows, dim), np.float32)
        self.out = np.empty((nq, chunk_rows), np.float32)
        self.rescored = 0
        self.rescored_fused = 0  # of them, by the compiled kernel (inquire.index.fused)
        self.pooled = 0  # candidates offered to the pool (each may be dropped again later)
        self.nonfinite: list[int] = []  # store rows holding NaN / inf (never returned)
        self.gemm_seconds = 0.0
        # Time of the work a later search does not repeat: the first computation of chunks'
        # row norms (kept per process), and for chunks screened by conversion, the
        # conversions (float16 -> float32 -> bfloat16) that reading the store's bfloat16 copy
        # spares (``"auto"``'s trial leaves them out where the copy will be read:
        # :class:`~inquire.index.fanout.Chooser`).
        self.norm_seconds = 0.0
        self.copy_spares = 0.0
        self.chunks = {"bf16": 0, "fp32": 0}
        self.max_norm = 0.0  # upper bound of the norms of every pooled row
        # A chunk whose largest row norm times this may overflow float32 in a GEMM.
        self.q_norm = float(np.linalg.norm(q.astype(np.float64), axis=1).max(initial=0.0))
        self.store_key = _store_key(store)
        if bound.q_bf16 is not None:
            t = kernels.torch
            self.q_bf16 = t.from_numpy(bound.q_bf16).view(t.bfloat16)
            if copy is None:
                self.x_bf16 = t.empty((chunk_rows, dim), dtype=t.bfloat16)
            self.s_bf16 = t.empty(nq * chunk_rows, dtype=t.bfloat16)

    def score(self, block: Block, lo: int, rows: int, method: str = "fp32") -> None:
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
        t0 = screen_mod.clock()
        if src.dtype == np.float32:
            data = src
        else:
            # Through float32 on both paths: float16 -> float32 -> bfloat16 gives the same
            # bits as torch's direct float16 -> bfloat16 copy (float16 -> float32 is exact)
            # in about half its time (0.43 against 0.76 s of conversions per 1M x 1024
            # rows, side by side on an AVX512 CPU: torch's direct copy is a slow loop).
            data = self.f32[:rows]
            self.kernels.convert(src, data)
        if bf16:
            # The conversions reading the store's bfloat16 copy spares.
            self.copy_spares += screen_mod.clock() - t0
        if norm is None:
            t0 = screen_mod.clock()
            norm = self._max_norm(data)
            self.norm_seconds += screen_mod.clock() - t0
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
            s, margin, c, shift = self._approx_bf16(data, norm)
            self.chunks["bf16"] += 1
        else:
            s, margin, c, shift = self._approx_fp32(data, norm)
            self.chunks["fp32"] += 1
        if self._overflowed(s, norm, shift):
            self._score_exactly(data, first)
            return
        self._offer(s, margin, c, first, shift)

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
        t = self.kernels.torch
        s, _, c, shift = self._approx_bf16(t.from_numpy(bits).view(t.bfloat16), norm)
        assert self.bound.a_row is not None and self.bound.a_rest is not None
        margin = self.bound.a_row * err + self.bound.a_rest * norm + self.bound.slack
        margin = margin + self._shift_slack(shift)
        self.chunks["bf16"] += 1
        if self._overflowed(s, norm, shift):
            self._score_exactly(_slice_rows(self.store, first, rows), first)
            return
        self._offer(s, margin, c, first, shift)

    def _overflowed(self, s: np.ndarray, norm: float, shift: np.ndarray | None = None) -> bool:
        """Whether the GEMM may have overflowed (a partial sum past the largest float32: the
        bounds then do not hold) and did: a non-finite approximation of finite rows. Every
        partial sum is at most ``||q|| ||x||`` (plus the shift's ``|t|``, plus rounding), so a
        chunk far below the largest float32 is never checked."""
        extra = 0.0 if shift is None or not len(shift) else float(np.abs(shift).max())
        if self.q_norm * norm + extra < _OVERFLOW_SAFE:
            return False
        if s.dtype == np.uint16:  # bfloat16 bits
            return not bf16_finite(s)
        return not bool(np.isfinite(s).all())

    def _max_norm(self, data: np.ndarray) -> float:
        """An upper bound of the largest row norm of ``data (rows, d) float32``."""
        t = self.kernels.torch
        if t is not None:
            n = float(t.linalg.vector_norm(t.from_numpy(data), dim=1).max())
        else:
            n = float(np.sqrt(np.einsum("ij,ij->i", data, data).max(initial=0.0)))
        return n * self.bound.inflate

    def _approx_fp32(
        self, data: np.ndarray, norm: float
    ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
        rows = len(data)
        # A contiguous output: numpy hands strided `out=` arrays to BLAS via a temporary.
        s = self.out if rows == len(self.f32) else np.empty((len(self.q), rows), np.float32)
        t0 = time.perf_counter()
        s = self.kernels.scores(self.q, data, s)  # in `s` or in a new array (oneDNN)
        self.gemm_seconds += time.perf_counter() - t0
        return s, self.bound.a32 * norm + self.bound.slack, 0.0, None

    def _approx_bf16(
        self, data: Any, norm: float
    ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
        """``data (rows, d)``: float16 or float32 rows (writeable numpy, converted into the
        reused bfloat16 buffer), or a bfloat16 torch tensor (used as it is), screened by the
        bfloat16 GEMM. Returns ``(p~, margin, c, t)``: ``p~ (nq, rows)`` (the bits of the
        bfloat16 GEMM's output, uint16: a view of a reused buffer) approximates the scores
        minus the shift ``t (nq,) float64`` (None: no shift), ``|s - (p~ + t)| <= c
        |p~| + margin`` (:func:`~inquire.index.screen.shift_terms`). The shift is each
        query's floor rounded to bfloat16, so the output's rounding, relative to ``|p~|``,
        is small for the rows near the floor."""
        t = self.kernels.torch
        nq, rows = len(self.q), len(data)
        if isinstance(data, np.ndarray):
            t0 = screen_mod.clock()
            xb = self._to_bf16(data)
            self.copy_spares += screen_mod.clock() - t0
        else:
            xb = data
        sb = self.s_bf16[: nq * rows].view(nq, rows)
        shift = None
        if self.bound.shift and shift_rounds_once_at(nq, rows, self.q.shape[1]):
            if self.shared is not None:
                self.shared.exchange(self.pool)
            shift32 = shift_terms(self.pool.floor)
            bias = t.from_numpy(-shift32).to(t.bfloat16)[:, None]  # exact: t is bfloat16
            shift = shift32.astype(np.float64)
        t0 = time.perf_counter()
        if shift is None:
            t.matmul(self.q_bf16, xb.T, out=sb)
        else:
            t.addmm(bias, self.q_bf16, xb.T, out=sb)
        self.gemm_seconds += time.perf_counter() - t0
        # The scores stay bfloat16: compared as 16-bit integers (:meth:`TopK.candidates_bf16`),
        # only the candidates' values widened to float32.
        s = sb.view(t.int16).numpy().view(np.uint16)
        assert self.bound.a_bf16 is not None
        margin = self.bound.a_bf16 * norm + self.bound.slack + self._shift_slack(shift)
        return s, margin, C_BF16, shift

    def _shift_slack(self, shift: np.ndarray | None) -> np.ndarray | float:
        """The shift's share of the float32 accumulation error: ``gamma(d + 1) |t|``."""
        if shift is None:
            return 0.0
        return gamma(self.q.shape[1] + 1) * np.abs(shift) * (1 + 1e-9)

    def _to_bf16(self, data: np.ndarray) -> Any:
        """``data (rows, d)`` float16/float32 rounded to bfloat16 in the reused buffer."""
        xb = self.x_bf16[: len(data)]
        xb.copy_(self.kernels.torch.from_numpy(data))
        return xb

    def _offer(
        self,
        s: np.ndarray,
        margin: np.ndarray,
        c: float,
        first: int,
        shift: np.ndarray | None = None,
    ) -> None:
        """Pool the rows of ``s (nq, rows)`` (approximate scores less ``shift (nq,)``, if
        given: ``|exact - shift - s| <= c|s| + margin``; float32, or bfloat16 bits as uint16)
        whose upper bound reaches the pool's floor."""
        nq, rows = s.shape
        k, pool = self.top.k, self.pool
        t = np.zeros(nq) if shift is None else shift
        bits = s.dtype == np.uint16
        allowed = None if self.mask is None else self.mask[first : first + rows]

        def cut() -> np.ndarray:
            # The floor where s lives: shifted by t (exact in float64: t is the floor rounded
            # to bfloat16; a few float64 units at worst, which _cut_below's rounding covers).
            return _cut_below(pool.floor.astype(np.float64) - t, margin, c)

        def values(queries: np.ndarray) -> np.ndarray:
            # float32 scores of these queries' rows (a copy), NaN where the mask bars a row.
            got = bf16_values(s[queries]) if bits else s[queries]
            if allowed is not None:
                got[:, ~allowed] = np.nan
            return got

        def candidates() -> tuple[np.ndarray, np.ndarray]:
            # Rows the mask bars are never candidates.
            if bits:
                qr, cols = self.top.candidates_bf16(s, *bf16_cut_keys(cut()))
            else:
                qr, cols = self.top.candidates(s, cut())
            if allowed is not None:
                keep = allowed[cols]
                qr, cols = qr[keep], cols[keep]
            return qr, cols

        if self.shared is not None:
            self.shared.exchange(pool)
        if rows > k:
            # Queries without a proven floor yet: the chunk's own k-th approximate score (k
            # rows of the chunk have exact scores at least its lower bound).
            empty = np.flatnonzero(np.isneginf(pool.floor))
            if len(empty):
                low = lower_bound(kth_largest(values(empty), k), margin[empty], c) + t[empty]
                pool.raise_floor(round_down(low), empty)
        qr, cols = candidates()
        counts = np.bincount(qr, minlength=nq)
        heavy = np.flatnonzero(counts > HEAVY_FACTOR * k)
        if len(heavy) and rows > k:
            # This chunk beats many pooled rows (e.g. rows sorted by score): its own k-th.
            low = lower_bound(kth_largest(values(heavy), k), margin[heavy], c) + t[heavy]
            pool.raise_floor(round_down(low), heavy)
            qr, cols = candidates()
        if len(qr) == 0:
            return
        p = (bf16_values(s[qr, cols]) if bits else s[qr, cols]).astype(np.float64)
        spread = c * np.abs(p) + margin[qr]
        v = p + t[qr]
        upper = round_up(v + spread)
        lower = round_down(v - spread)
        self.pooled += len(qr)
        pool.push(qr, first + cols, upper, upper.astype(np.float64) - lower)
        if pool.keys.shape[1] > self.cap:
            self._flush(np.flatnonzero(pool.sizes() > self.cap // 2))

    def _flush(self, queries: np.ndarray) -> None:
        """Give the pooled rows of ``queries`` their exact scores now (bounded memory)."""
        self._rescore(*self.pool.take(queries), 1)

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

    def finish(self, others: list[Scorer], threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Fold the other threads' pools and top k into this one, rescore what the pool
        holds (on ``threads`` threads), and return the result keys (:meth:`TopK.result`)."""
        for other in others:
            self.top.absorb(other.top)
            self.pool.absorb(other.pool)
            self.rescored += other.rescored
            self.rescored_fused += other.rescored_fused
            self.max_norm = max(self.max_norm, other.max_norm)
        self.top.merge()
        self.pool.raise_floor(self.top.threshold)
        k = self.top.k
        # With the compiled kernel (inquire.index.fused) the products cost less than reading
        # the rows: one pass over the store for every pooled pair beats two passes for fewer
        # (measured at 1M x 1024, top 1000: 0.17-0.22 s against 0.22-0.24 s).
        if kernel_for(self.store) is None and (self.pool.sizes() > _TWO_STAGE_WIDTH * k).any():
            # In two stages where the pool holds many more rows than k for a query (a wide
            # bound): the k rows of largest upper bound first; the k-th exact score among
            # them is a floor that drops most of the rest unread.
            self._rescore(*self.pool.take_best(k), threads)
            self.pool.merge()  # the new floor drops what cannot reach it
        self._rescore(*self.pool.take(), threads)
        return self.top.result()

    def _rescore(self, qr: np.ndarray, rows: np.ndarray, threads: int) -> None:
        """Give the pairs (query ``qr`` ascending, global ``rows``) their exact scores."""
        if len(qr):
            used: list[str] = []
            values = rescore(
                self.store, self.q, qr, rows, self.kernels, self.max_norm, threads, used
            )
            if used == ["fused"]:
                self.rescored_fused += len(qr)
            self.add_exact(qr, rows, values)
