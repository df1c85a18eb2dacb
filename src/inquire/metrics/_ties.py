"""Tie groups: which items of a ranked list share a score, and what that does to a metric.

INQUIRE computes AP and nDCG with scikit-learn, which treats a run of equal scores as one
threshold whatever the order of the tied items in the list. So every metric here reads a
ranked list as a sequence of *tie groups*, never as the order of the items inside a group.

``Ties`` describes the groups of a relevance matrix ``rel (nq, k)``:

- ``group (nq, k) int64``: per row ``0, 0, 1, 2, 2, 2, ...``: non-decreasing, consecutive
  ids; equal ids are tied items. A padded (missing) place is a group of its own.
- ``tail_size (nq,) int64``: how many items *after* rank k share the score of the item at
  rank k (the group straddles the cut-off), 0 when none do;
- ``tail_rel (nq,) int64``: how many of those are relevant.

For a group G of a row: ``g`` items in all (tail included for the straddling group), ``m``
of them relevant, ``c`` of its places inside the top k (``c = g`` except at the cut-off),
first place ``s`` and last place inside the top k ``e = s + c - 1`` (1-based), ``H``
relevant items ranked before it. Without ties every group is one item and every formula of
the metric modules reduces to the plain per-rank one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inquire.errors import InputError


@dataclass(frozen=True)
class Ties:
    """Tie groups of a ``(nq, k)`` relevance matrix (see the module docstring)."""

    group: np.ndarray  # (nq, k) int64, non-decreasing consecutive ids per row
    tail_size: np.ndarray  # (nq,) int64, tied items after rank k
    tail_rel: np.ndarray  # (nq,) int64, relevant ones among them

    @classmethod
    def none(cls, nq: int, k: int) -> Ties:
        """No ties: every place is its own group and nothing straddles the cut-off."""
        group = np.broadcast_to(np.arange(k, dtype=np.int64), (nq, k)).copy()
        zeros = np.zeros(nq, dtype=np.int64)
        return cls(group, zeros, zeros.copy())

    @classmethod
    def from_scores(
        cls,
        scores: np.ndarray,
        tail_size: np.ndarray | None = None,
        tail_rel: np.ndarray | None = None,
    ) -> Ties:
        """Groups of ``scores (nq, k)``, ranked (non-increasing per row); NaN marks padding.

        Adjacent equal scores are tied; a NaN never equals anything, so each padded place is
        a group of its own.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2:
            raise InputError(f"scores must be a (nq, k) matrix, got shape {scores.shape}")
        nq, k = scores.shape
        new = np.ones((nq, k), dtype=np.int64)
        if k > 1:
            new[:, 1:] = scores[:, 1:] != scores[:, :-1]
        group = np.cumsum(new, axis=1) - 1
        zeros = np.zeros(nq, dtype=np.int64)
        return cls(
            group,
            zeros if tail_size is None else np.asarray(tail_size, dtype=np.int64),
            zeros.copy() if tail_rel is None else np.asarray(tail_rel, dtype=np.int64),
        )

    def check(self, rel: np.ndarray) -> None:
        """Refuse groups that do not describe ``rel (nq, k)``."""
        nq, k = rel.shape
        if self.group.shape != (nq, k):
            raise InputError(f"tie groups {self.group.shape} do not match the matrix {rel.shape}")
        if self.tail_size.shape != (nq,) or self.tail_rel.shape != (nq,):
            raise InputError(
                f"tie tails {self.tail_size.shape} / {self.tail_rel.shape} must be ({nq},)"
            )
        steps = np.diff(self.group, axis=1)
        if (self.group[:, :1] != 0).any() or ((steps != 0) & (steps != 1)).any():
            raise InputError(
                "tie group ids must start at 0 and grow by 0 or 1 along each row "
                "(tied items are adjacent in a ranked list); build them with Ties.from_scores"
            )
        if (self.tail_size < 0).any() or (self.tail_rel < 0).any():
            raise InputError("tie tails must be >= 0")
        if (self.tail_rel > self.tail_size).any():
            raise InputError("tie tails: more relevant items than tied items after rank k")


@dataclass(frozen=True)
class GroupStats:
    """Per place ``(nq, k)`` float64: the numbers of the group that place belongs to."""

    size: np.ndarray  # g
    n_rel: np.ndarray  # m
    inside: np.ndarray  # c
    start: np.ndarray  # s (1-based)
    end: np.ndarray  # e (1-based, last place inside the top k)
    before: np.ndarray  # H


def group_stats(rel: np.ndarray, ties: Ties) -> GroupStats:
    """:class:`GroupStats` of every place of ``rel (nq, k)`` under ``ties``."""
    nq, k = rel.shape
    rows = np.arange(nq, dtype=np.int64)[:, None]
    flat = (rows * k + ties.group).ravel()
    size = np.bincount(flat, minlength=nq * k).astype(np.float64)
    n_rel = np.bincount(flat, weights=rel.ravel(), minlength=nq * k)
    inside = size.copy()
    last = rows[:, 0] * k + ties.group[:, -1]
    size[last] += ties.tail_size
    n_rel[last] += ties.tail_rel
    pos = np.broadcast_to(np.arange(k, dtype=np.int64), (nq, k))
    is_start = np.ones((nq, k), dtype=bool)
    is_start[:, 1:] = ties.group[:, 1:] != ties.group[:, :-1]
    start0 = np.maximum.accumulate(np.where(is_start, pos, 0), axis=1)
    before = np.take_along_axis(np.cumsum(rel, axis=1) - rel, start0, axis=1)
    ins = inside[flat].reshape(nq, k)
    return GroupStats(
        size=size[flat].reshape(nq, k),
        n_rel=n_rel[flat].reshape(nq, k),
        inside=ins,
        start=start0 + 1.0,
        end=start0 + ins,
        before=before,
    )


def expected_relevance(rel: np.ndarray, ties: Ties | None = None) -> np.ndarray:
    """``(nq, k)`` float64: each place's relevance averaged over the orders of its group.

    A place of group G holds ``m / g``: the chance that a relevant item sits there when the
    tied items are shuffled. Its cumulative sum is the expected number of hits at each rank.
    Without ties it is ``rel`` itself.
    """
    rel = np.asarray(rel, dtype=np.float64)
    if ties is None:
        return rel
    st = group_stats(rel, ties)
    return st.n_rel / st.size


def expected_hits(rel: np.ndarray, ties: Ties | None = None) -> np.ndarray:
    """``(nq,)`` float64: the expected number of relevant items in the top k over the orders
    of the tied items, ``expected_relevance(rel, ties).sum(axis=1)`` computed exactly.

    Only a group straddling the cut-off changes the count (a group wholly inside the top k
    brings all its ``m`` relevant items in whatever its order); it brings ``c m / g`` instead
    of the relevant items its ``c`` places hold in ``rel``. Summing ``m / g`` place by place
    would give 0.9999999999999999 for a recall that is exactly 1.
    """
    rel = np.asarray(rel, dtype=np.float64)
    hits = rel.sum(axis=1)
    if ties is None or not (ties.tail_size > 0).any():
        return hits
    last = ties.group == ties.group[:, -1:]
    c = last.sum(axis=1).astype(np.float64)
    inside = (rel * last).sum(axis=1)
    g = c + ties.tail_size
    m = inside + ties.tail_rel
    return np.where(ties.tail_size > 0, hits - inside + c * m / g, hits)
