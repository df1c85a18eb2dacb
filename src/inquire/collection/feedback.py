"""Relevance feedback: a better query vector learnt from a person's marks.

Every model here is *linear* in the image embedding: it turns the text query ``q (d,)`` and
the embeddings of the images marked relevant ``P (p, d)`` and not relevant ``N (n, d)``
into one vector ``w (d,)`` and ranks images by ``w . x``. A linear scorer keeps the search
exact and as fast as the first one (the same masked top-k over the float16 store), where a
non-linear scorer (nearest positive, kernel models) would need every score of every row.

Models (rows of :data:`FEEDBACK_MODELS`; all inputs are L2-normalised first):

``rocchio``
    Rocchio's update: ``w = alpha q + beta mean(P) - gamma mean(N)`` (missing terms drop
    out), with ``alpha = 1, beta = 4, gamma = 0.5``. The textbook weights (``beta = 0.75,
    gamma = 0.15``) were tuned for sparse text vectors; on image embeddings the marks must
    outweigh the text query for the ranking to leave its first neighbourhood (measured with
    the simulated verifier, :mod:`inquire.eval.feedback`, on the synthetic benchmark).
``logistic``
    L2-regularised logistic regression on the marks whose weights are pulled toward the
    query: minimise ``sum_i log(1 + exp(-y_i (s w . x_i + b))) + lam/2 ||w - q||^2`` with
    ``y = +1`` for relevant, ``-1`` for not relevant, ``s = 10`` (cosines live in a narrow
    band) and ``lam = 1``. With no marks ``w = q``; with only one kind of mark it still moves
    away from (or toward) them, held by the prior.

Images marked ``unsure`` carry no label and are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inquire.errors import InputError, UnknownNameError

DEFAULT_MODEL = "rocchio"


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def _as_matrix(x: np.ndarray | None, d: int, name: str) -> np.ndarray:
    if x is None:
        return np.zeros((0, d))
    m = np.asarray(x, np.float64)
    if m.ndim == 1 and m.size == 0:
        return np.zeros((0, d))
    if m.ndim != 2 or m.shape[1] != d:
        raise InputError(f"{name} embeddings have shape {m.shape}; expected (n, {d})")
    if not np.isfinite(m).all():
        raise InputError(f"{name} embeddings contain NaN or infinite values")
    return _unit(m)


def rocchio(
    q: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    alpha: float = 1.0,
    beta: float = 4.0,
    gamma: float = 0.5,
) -> np.ndarray:
    """Rocchio's query update; ``q (d,)``, ``pos (p, d)``, ``neg (n, d)`` -> ``(d,)``."""
    w = alpha * q
    if len(pos):
        w = w + beta * pos.mean(axis=0)
    if len(neg):
        w = w - gamma * neg.mean(axis=0)
    return w


def logistic(
    q: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    lam: float = 1.0,
    scale: float = 10.0,
    iters: int = 50,
) -> np.ndarray:
    """Logistic regression with the query as prior, solved by Newton's method.

    ``q (d,)``, ``pos (p, d)``, ``neg (n, d)`` -> ``(d,)``. The objective (see the module
    docstring) is strictly convex for ``lam > 0``, so Newton's method converges to its one
    minimum; the bias ``b`` is free (not pulled toward anything).
    """
    x = np.concatenate([pos, neg]) if len(pos) + len(neg) else np.zeros((0, len(q)))
    if len(x) == 0:
        return q.copy()
    y = np.concatenate([np.ones(len(pos)), -np.ones(len(neg))])
    d = len(q)
    # Parameters theta = (w, b); features z = (s x, 1).
    z = np.concatenate([scale * x, np.ones((len(x), 1))], axis=1)
    prior = np.concatenate([q, [0.0]])
    reg = np.full(d + 1, lam)
    reg[-1] = 1e-6  # the bias is (almost) free; the tiny term keeps the Hessian invertible

    def objective(t: np.ndarray) -> float:
        m = y * (z @ t)
        return float(np.logaddexp(0.0, -m).sum() + 0.5 * (reg * (t - prior) ** 2).sum())

    theta = prior.copy()
    f = objective(theta)
    for _ in range(iters):
        m = y * (z @ theta)
        p = 0.5 * (1.0 + np.tanh(-0.5 * m))  # sigmoid(-m), stable for large |m|
        grad = -(z.T @ (y * p)) + reg * (theta - prior)
        h = (z.T * (p * (1 - p))) @ z + np.diag(reg)
        step = np.linalg.solve(h, grad)
        # Backtracking: a full Newton step can overshoot where the loss is flat.
        t = 1.0
        while t > 1e-8:
            cand = theta - t * step
            f_cand = objective(cand)
            if f_cand <= f - 1e-4 * t * float(grad @ step):
                break
            t *= 0.5
        theta, f_prev, f = cand, f, f_cand
        if abs(f_prev - f) <= 1e-12 * max(1.0, abs(f)) or np.abs(t * step).max() < 1e-10:
            break
    return theta[:d]


@dataclass(frozen=True)
class FeedbackModel:
    """A row of :data:`FEEDBACK_MODELS`: how marks become a query vector."""

    name: str
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    summary: str


FEEDBACK_MODELS: dict[str, FeedbackModel] = {
    m.name: m
    for m in (
        FeedbackModel("rocchio", rocchio, "q + 4 mean(relevant) - 0.5 mean(not relevant)"),
        FeedbackModel("logistic", logistic, "logistic regression on the marks, query as prior"),
    )
}


def feedback_vector(
    query: np.ndarray,
    positives: np.ndarray | None = None,
    negatives: np.ndarray | None = None,
    model: str = DEFAULT_MODEL,
) -> np.ndarray:
    """The ``(d,) float32`` L2-normalised query vector of ``model`` after the marks.

    ``query``: ``(d,)`` the first search's query vector (text, examples or both);
    ``positives`` / ``negatives``: ``(p, d)`` / ``(n, d)`` embeddings of the images marked
    relevant / not relevant (any dtype; normalised here). With no marks the result is the
    normalised query.
    """
    if model not in FEEDBACK_MODELS:
        raise UnknownNameError("feedback model", model, FEEDBACK_MODELS)
    q = np.asarray(query, np.float64)
    if q.ndim != 1 or not np.isfinite(q).all() or not np.linalg.norm(q) > 0:
        raise InputError(f"the query vector must be a finite, non-zero (d,) array; got {q.shape}")
    d = len(q)
    pos = _as_matrix(positives, d, "relevant")
    neg = _as_matrix(negatives, d, "not-relevant")
    w = FEEDBACK_MODELS[model].fit(_unit(q), pos, neg)
    if not np.linalg.norm(w) > 0:  # e.g. the negatives' mean cancels the query exactly
        w = _unit(q)
    return _unit(w).astype(np.float32)
