"""The exact score of exact search, defined independently of any GEMM.

**Definition.** The score of a stored row ``x`` (float16 or float32) for a query ``q``
(float32) is the real inner product ``sum_i q_i x_i``, computed without error, then rounded
once to the nearest float32 (ties to even). It depends on nothing but the two vectors: not on
the number of rows or queries in a call, the BLAS library, the CPU, the thread count or the
summation order. Exact search (screened or not) returns exactly these scores, and
:func:`inquire.index.topk.brute_force` computes them the slow obvious way.

Two ways to compute it:

- :func:`exact_score`: the reference, one pair at a time. Every product ``q_i x_i`` is exact
  in float64 (24 + 24 significant bits <= 53); ``math.fsum`` returns their exact sum rounded
  once to float64; the only remaining error, rounding that float64 to float32 a second time,
  can matter only when it lands exactly halfway between two float32 numbers, and then the
  sign of the exact remainder (``fsum`` again) decides.
- :func:`exact_scores`: the fast one, for the few (query, row) pairs exact search rescores.
  A float64 matrix-vector product gives ``s`` with ``|s - sum| <= gamma_d(2**-53) sum |q_i
  x_i|`` whatever the kernel's order; when both ends of that interval round to the same
  float32 (all but ~1 in 10**5 pairs), that float32 is the correctly rounded sum (rounding is
  monotonic); the other pairs go to :func:`exact_score`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: Unit roundoff of float64.
U_F64 = 2.0**-53
#: The largest float32, and where rounding to float32 overflows (halfway to 2**128).
F32_MAX = float(np.finfo(np.float32).max)
_F32_OVERFLOW = 2.0**128 - 2.0**103


def exact_score(q: np.ndarray, x: np.ndarray) -> np.float32:
    """The exact score of row ``x (d,)`` for query ``q (d,)``: their real inner product,
    rounded once to float32. NaN where a product is NaN; +-inf where the sum overflows."""
    p = np.asarray(q, np.float32).astype(np.float64) * np.asarray(x, np.float32).astype(np.float64)
    if not np.isfinite(p).all():
        with np.errstate(invalid="ignore"):
            return np.float32(p.sum())  # NaN, or an infinity the float32 sum keeps too
    terms = p.tolist()
    f = math.fsum(terms)  # the exact sum, rounded once to float64
    with np.errstate(over="ignore"):
        r = np.float32(f)
    if not math.isfinite(f) or float(r) == f:
        return r
    # f lies between two float32 numbers; double rounding can only err when f is their
    # midpoint exactly (then the exact sum may lie on either side of it).
    if math.isinf(r):
        # f overflowed float32: it is at least the threshold (halfway between the largest
        # float32 and 2**128, where rounding turns to inf), the exact sum maybe a hair below.
        other = np.float32(math.copysign(F32_MAX, f))
        mid = math.copysign(_F32_OVERFLOW, f)
    else:
        other = np.nextafter(r, np.float32(np.inf) if f > float(r) else np.float32(-np.inf))
        mid = (float(r) + float(other)) / 2  # exact in float64 (one more bit than float32)
    if f != mid:
        return r
    rest = math.fsum([*terms, -mid])  # the sign of exact sum - mid
    if rest == 0:
        return r  # exactly halfway: numpy rounded half to even already
    hi, lo = (r, other) if float(r) > float(other) else (other, r)
    return hi if rest > 0 else lo


def gamma64(d: int) -> float:
    """``gamma_d`` of float64: ``|s - sum| <= gamma64(d) sum |q_i x_i|`` for any float64 sum
    of ``d`` products of float32 numbers (the products are exact), any order."""
    return d * U_F64 / (1 - d * U_F64)


def norm_bounds(q64: np.ndarray, max_norm: float | None) -> np.ndarray | None:
    """``(nq,)``: per query, a bound of ``|s - sum|`` for a float64 dot product ``s`` with any
    row of norm at most ``max_norm`` (``gamma_d ||q|| max_norm``: ``sum |q_i x_i| <= ||q||
    ||x||``), inflated for the float64 evaluation of the bound itself (low by ~``gamma_d``
    relative); None without ``max_norm``."""
    if max_norm is None:
        return None
    g = gamma64(q64.shape[1])
    return g * np.linalg.norm(q64, axis=1) * (1 + 4 * g) * max_norm


def row_bounds(x64: np.ndarray, q64r: np.ndarray, out: np.ndarray) -> None:
    """``out (n,)``: each row's own bound ``gamma_d sum |q_i x_i|`` of ``|s - sum|`` for rows
    ``x64 (n, d) float64`` and one query ``q64r (d,)``, inflated like :func:`norm_bounds`.
    ``x64`` is overwritten (by its absolute values)."""
    g = gamma64(x64.shape[1])
    np.abs(x64, out=x64)
    np.matmul(x64, np.abs(q64r), out=out)
    out *= g * (1 + 4 * g)


#: Rows converted to float64 at a time (stays in cache: 256 x 1024 x 8 bytes = 2 MiB).
_PIECE_ROWS = 256


def exact_scores(
    q: np.ndarray,
    qr: np.ndarray,
    x: np.ndarray,
    max_norm: float | None = None,
    index: np.ndarray | None = None,
) -> np.ndarray:
    """Exact scores ``(m,) float32`` of pairs (query ``qr[j]``, row ``x[j]``), or row
    ``x[index[j]]`` when ``index (m,)`` is given (rows shared by several pairs).

    ``q``: ``(nq, d) float32`` queries; ``qr``: ``(m,)`` query of each pair, ascending;
    ``x``: ``(m, d)`` (or ``(rows, d)`` with ``index``) float16/float32 rows (float32 is
    fastest); ``max_norm``: an upper bound of every row's L2 norm (None: each pair's own
    ``sum |q_i x_i|`` is computed). Each value is :func:`exact_score` of its pair, bit for bit.
    """
    m = len(qr) if index is not None else len(x)
    d = x.shape[1]
    if m == 0:
        return np.empty(0, np.float32)
    q64 = np.asarray(q, np.float32).astype(np.float64)
    bound = norm_bounds(q64, max_norm)
    starts = np.searchsorted(qr, np.arange(len(q) + 1))
    s = np.empty(m, np.float64)
    err = np.empty(m, np.float64)
    buf = np.empty((min(_PIECE_ROWS, m), d), np.float64)
    for r in np.flatnonzero(np.diff(starts)):
        for a in range(int(starts[r]), int(starts[r + 1]), _PIECE_ROWS):
            b = min(a + _PIECE_ROWS, int(starts[r + 1]))
            x64 = buf[: b - a]
            np.copyto(x64, x[a:b] if index is None else x[index[a:b]])
            np.matmul(x64, q64[r], out=s[a:b])
            if bound is None:
                row_bounds(x64, q64[r], err[a:b])
            else:
                err[a:b] = bound[r]

    def slow(js: np.ndarray) -> np.ndarray:
        at = js if index is None else index[js]
        return np.array([exact_score(q[qr[j]], x[i]) for j, i in zip(js, at, strict=True)])

    return round_once(s, err, slow)


def round_once(
    s: np.ndarray, err: np.ndarray, exact: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``(m,) float32``: each float64 value ``s`` (``|s - sum| <= err``, ``err`` rounded up)
    rounded to the float32 its exact sum rounds to: where both ends of the interval round to
    the same float32, that one (rounding is monotonic); else ``exact(js)`` for the indices
    ``js`` of those pairs (computed the slow exact way, :func:`exact_score`). ``err`` is
    modified."""
    out = np.empty(len(s), np.float32)
    err += 2.0**-1000  # the smallest normal numbers against underflow of the bound
    with np.errstate(invalid="ignore", over="ignore"):
        lo32 = np.nextafter(s - err, -np.inf).astype(np.float32)
        hi32 = np.nextafter(s + err, np.inf).astype(np.float32)
    # NaN and intervals that straddle a rounding boundary fail, and so do those rounding to
    # -0.0 at one end and 0.0 at the other (the sign of a zero is decided too).
    ok = (lo32 == hi32) & (np.signbit(lo32) == np.signbit(hi32))
    out[ok] = lo32[ok]
    undecided = np.flatnonzero(~ok)
    if len(undecided):
        out[undecided] = exact(undecided)
    return out
