"""The one top-k of ``inquire``: every search selects its results here, under one rule.

**Ranking rule.** Score descending; equal scores by id ascending (``-0.0`` equals ``0.0`` and
comes back as ``0.0``); NaN scores never match. Results are ``scores (nq, k) float32`` and
``ids (nq, k) int64``; rows with fewer than ``k`` matches are padded with id ``PAD_ID``
(-1) and score ``-inf`` after the matches.

Three tools, one rule:

- :class:`TopK`: the streaming selector of exact search, fed block by block. A candidate is one
  uint64 (score order in the high 32 bits, the id's rank in the low 32 bits), so one integer
  partition applies the whole rule, ties included (~20x faster than a lexsort on (score, id)).
- :func:`topk`: the same rule over candidates already in memory (a few thousand scores per
  query: a filtered gather, faiss's answers).
- :func:`brute_force`: the slow obvious reference (every exact score, a full Python sort), which
  tests hold every searcher to.
"""

from __future__ import annotations

import numpy as np

from inquire.errors import InputError

#: Id of a padding slot (fewer than k matches); its score is ``-inf``.
PAD_ID = -1
#: A query whose candidates in one block exceed this many times k gets the block's own k-th
#: score as its bound (a linear-time partition) before the candidates are gathered.
HEAVY_FACTOR = 4

_PAD = np.uint64(0xFFFFFFFFFFFFFFFF)
_LOW = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


def encode_keys(scores: np.ndarray, id_keys: np.ndarray) -> np.ndarray:
    """uint64 keys of float32 ``scores`` and ``id_keys`` (< 2**32 - 1), ascending = ranked."""
    bits = (scores.astype(np.float32) + np.float32(0.0)).view(np.uint32)  # + 0: -0.0 -> +0.0
    ordered = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    return ((~ordered).astype(np.uint64) << _SHIFT) | id_keys.astype(np.uint64)


def decode_scores(keys: np.ndarray) -> np.ndarray:
    """float32 scores of :func:`encode_keys` keys; padding keys give ``-inf``."""
    ordered = ~(keys >> _SHIFT).astype(np.uint32)
    bits = np.where(ordered >> np.uint32(31), ordered & np.uint32(0x7FFFFFFF), ~ordered)
    out = bits.view(np.float32).copy()
    out[keys == _PAD] = -np.inf
    return out


class TopK:
    """Running top ``k`` per query under (score desc, id asc), fed block by block."""

    def __init__(self, nq: int, k: int) -> None:
        self.nq, self.k = nq, k
        self.keys = np.full((nq, k), _PAD, np.uint64)  # the best k so far, unordered
        self.threshold = np.full(nq, -np.inf, np.float32)  # k-th best score so far
        self._pending: list[np.ndarray] = []  # padded (nq, w) candidate keys
        self._pending_width = 0
        self._mask: np.ndarray | None = None  # reused comparison buffer

    def add_block(self, scores: np.ndarray, id_keys: np.ndarray) -> None:
        """Offer ``scores (nq, b) float32`` of images ``id_keys (b,)``."""
        nq, b = scores.shape
        k = self.k
        bound = self.threshold
        if b > k:
            # Queries still filling their top k: bound by the block's own k-th largest score.
            empty = np.flatnonzero(np.isneginf(bound))
            if len(empty):
                bound = bound.copy()
                bound[empty] = np.maximum(bound[empty], kth_largest(scores[empty], k))
        rows, cols = self.candidates(scores, bound)
        counts = np.bincount(rows, minlength=nq)
        heavy = np.flatnonzero(counts > HEAVY_FACTOR * k)
        if len(heavy) and b > k:
            # This block beats many kept items (e.g. data sorted by score): cut it to its own
            # top k (plus ties) first, so the merge stays small.
            bound = bound.copy()
            bound[heavy] = np.maximum(bound[heavy], kth_largest(scores[heavy], k))
            rows, cols = self.candidates(scores, bound)
            counts = np.bincount(rows, minlength=nq)
        self._push(rows, scores[rows, cols], id_keys[cols], counts)

    def add_pairs(
        self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, id_keys: np.ndarray
    ) -> None:
        """Offer exact ``values (m,) float32`` of (query ``rows``, block ``cols``) pairs,
        ``rows`` ascending, for a block of images ``id_keys (b,)``."""
        keep = values >= self.threshold[rows]  # NaN never passes
        rows, cols, values = rows[keep], cols[keep], values[keep]
        self._push(rows, values, id_keys[cols], np.bincount(rows, minlength=self.nq))

    def _push(
        self, rows: np.ndarray, values: np.ndarray, keys: np.ndarray, counts: np.ndarray
    ) -> None:
        """Queue candidates: query ``rows`` (ascending), scores and id keys per candidate."""
        nq, k = self.nq, self.k
        if len(rows) == 0:
            return
        width = int(counts.max())
        starts = np.zeros(nq, np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        pos = np.arange(len(rows)) - starts[rows]
        cand = np.full((nq, width), _PAD, np.uint64)
        cand[rows, pos] = encode_keys(values, keys)
        self._pending.append(cand)
        self._pending_width += width
        if self._pending_width >= k:
            self.merge()

    def candidates(self, scores: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)`` of ``scores >= bound[row]``, row-major order."""
        nq, b = scores.shape
        mask = self._compare_buffer(nq, b)
        np.greater_equal(scores, bound[:, None], out=mask)
        # flatnonzero on the flat mask is ~15x faster than a 2-d np.nonzero.
        flat = np.flatnonzero(mask)
        return np.divmod(flat, b)

    def _compare_buffer(self, nq: int, b: int) -> np.ndarray:
        """The reused ``(nq, b) bool`` comparison buffer."""
        if self._mask is None or self._mask.size < nq * b:
            self._mask = np.empty(nq * b, bool)
        return self._mask[: nq * b].reshape(nq, b)

    def candidates_bf16(
        self, bits: np.ndarray, positive: np.ndarray, key: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`candidates` of bfloat16 scores ``bits (nq, b) uint16`` (none NaN) against
        the bounds of :func:`inquire.index.screen.bf16_cut_keys` (``positive``, ``key``): one
        comparison of the 16-bit values, no float32 copy of the scores."""
        nq, b = bits.shape
        mask = self._compare_buffer(nq, b)
        if not positive.any():
            np.less_equal(bits, key[:, None], out=mask)
        elif positive.all():
            np.greater_equal(bits.view(np.int16), key.view(np.int16)[:, None], out=mask)
        else:
            np.less_equal(bits, key[:, None], out=mask)
            pos = np.flatnonzero(positive)
            mask[pos] = bits[pos].view(np.int16) >= key[pos].view(np.int16)[:, None]
        flat = np.flatnonzero(mask)
        return np.divmod(flat, b)

    def merge(self) -> None:
        """Fold pending candidates into the top k and raise the thresholds."""
        if not self._pending:
            return
        keys = np.concatenate([self.keys, *self._pending], axis=1)
        self._pending, self._pending_width = [], 0
        self.keys = np.partition(keys, self.k - 1, axis=1)[:, : self.k]
        self.threshold = decode_scores(self.keys[:, -1])

    def absorb(self, other: TopK) -> None:
        """Fold another running top k (over other rows) into this one."""
        other.merge()
        self._pending.append(other.keys)
        self._pending_width += other.k
        self.merge()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``scores (nq, k) float32`` ranked, and the id keys ``(nq, k) int64`` (-1: none)."""
        self.merge()
        keys = np.sort(self.keys, axis=1)
        ids = (keys & _LOW).astype(np.int64)
        ids[keys == _PAD] = -1
        return decode_scores(keys), ids


def kth_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """``(n,)`` the k-th largest number of each row of ``scores (n, b)``, ``b >= k``.

    NaN counts as ``-inf``: np.partition sorts NaN above every number, and a NaN bound
    would let no candidate of the row through (NaN scores never match, the rest must).
    """
    b = scores.shape[1]
    s = np.where(np.isnan(scores), np.float32(-np.inf), scores)
    s.partition(b - k, axis=1)
    return s[:, b - k]


def rank_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Keys ``(N,) uint32-range int64`` ordered like ``ids``, and how to map keys back.

    Image ids in ``[0, 2**32 - 1)`` are their own keys (``None`` returned); otherwise keys are
    ranks of the ids, and the sorted ids map ranks back.
    """
    if len(ids) == 0 or (ids.min() >= 0 and ids.max() < 0xFFFFFFFF):
        return ids, None
    if len(ids) >= 0xFFFFFFFF:
        raise InputError(f"a store of {len(ids)} rows is too large for exact search")
    order = np.argsort(ids, kind="stable")
    ranks = np.empty(len(ids), np.int64)
    ranks[order] = np.arange(len(ids))
    return ranks, ids[order]


def check_k(k: object) -> int:
    """``k`` as an int, or :class:`InputError` unless it is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def padded(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(nq, m)`` results widened to ``(nq, k)`` (``k >= m``) with ``-inf`` / ``PAD_ID``."""
    extra = k - scores.shape[1]
    if extra <= 0:
        return scores, ids
    return (
        np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf).astype(np.float32),
        np.pad(ids, ((0, 0), (0, extra)), constant_values=PAD_ID).astype(np.int64),
    )


def topk(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of in-memory candidates under the ranking rule.

    ``scores``: ``(nq, m)`` float; ``ids``: ``(m,)`` shared by every query or ``(nq, m)``,
    int64 (any values, distinct within a row; ``PAD_ID`` entries are padding and never
    match). NaN scores never match. Returns ``scores (nq, k) float32`` and ``ids (nq, k)
    int64``, padded with ``-inf`` / ``PAD_ID`` where a row has fewer than ``k`` matches.

    Linear in ``m`` per query (a partition finds the k-th score, only its ties are sorted).
    """
    k = check_k(k)
    s_all = np.asarray(scores, dtype=np.float32)
    if s_all.ndim != 2:
        raise InputError(f"topk needs (nq, m) scores, got shape {s_all.shape}")
    nq, m = s_all.shape
    i_all = np.asarray(ids, dtype=np.int64)
    if i_all.shape not in ((m,), (nq, m)):
        raise InputError(f"topk: ids of shape {i_all.shape} do not fit scores {s_all.shape}")
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), PAD_ID, np.int64)
    for r in range(nq):
        s = s_all[r] + np.float32(0.0)  # -0.0 -> 0.0, as exact search returns it
        i = i_all if i_all.ndim == 1 else i_all[r]
        ok = ~np.isnan(s)
        if i_all.ndim == 2:
            ok &= i != PAD_ID
        if not ok.all():
            s, i = s[ok], i[ok]
        if len(s) > k:
            kth = np.partition(s, len(s) - k)[len(s) - k]
            cand = np.flatnonzero(s >= kth)  # every tie of the k-th score: ids decide
            s, i = s[cand], i[cand]
        order = np.lexsort((i, -s))[:k]
        out_s[r, : len(order)] = s[order]
        out_i[r, : len(order)] = i[order]
    return out_s, out_i


def brute_force(
    queries: np.ndarray,
    vectors: np.ndarray,
    ids: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The slow obvious reference: every score, one full sort by (score desc, id asc).

    ``queries (nq, d)``, ``vectors (N, d)``, ``ids (N,) int64``, ``mask (N,) bool`` (rows that
    may be returned; None: all). Each score is the exact score of exact search
    (:func:`inquire.index.score.exact_score`: the real inner product of the float32 query and
    the float32 row, rounded once to float32); rows are ranked by that float32 value. Returns
    ``scores (nq, k) float32`` and ``ids (nq, k) int64`` padded with ``-inf`` / ``PAD_ID``.
    For tests and small arrays only.
    """
    from inquire.index.score import exact_score

    k = check_k(k)
    q = np.asarray(queries, np.float32)
    x = np.asarray(vectors, np.float32)
    id_list = [int(v) for v in np.asarray(ids, np.int64)]
    allowed = [True] * len(id_list) if mask is None else [bool(v) for v in mask]
    out_s = np.full((len(q), k), -np.inf, np.float32)
    out_i = np.full((len(q), k), PAD_ID, np.int64)
    for r in range(len(q)):
        items = []
        for row in range(len(x)):
            score = float(exact_score(q[r], x[row]))
            if allowed[row] and score == score:  # NaN never matches
                items.append((score + 0.0, id_list[row]))
        items.sort(key=lambda t: (-t[0], t[1]))
        for j, (score, image_id) in enumerate(items[:k]):
            out_s[r, j], out_i[r, j] = score, image_id
    return out_s, out_i
