"""Low-precision screening for exact search: a bfloat16 GEMM with a proven error bound.

Exact search scores every row with a float32 GEMM. Where the CPU multiplies bfloat16 much
faster than float32 (AMX, AVX512-BF16), a bfloat16 GEMM can *screen* the rows instead: every
screened score ``s~`` lies within a proven distance ``B`` of the float32 score ``f`` that
exact search would compute, so a row whose ``s~ + B`` is below a lower bound on the k-th
float32 score can never reach the top k. The surviving rows are rescored with the float32
GEMM of exact search and selected as before, so the result is the exact one: the same ids,
the same scores bit for bit, the same tie rule. The proof is in ``docs/search.md``; in short,
for a query ``q`` (float32) and a row ``x`` (float16 or float32), with ``u = 2**-8`` (unit
roundoff of bfloat16), ``g = gamma(d) = d * 2**-24 / (1 - d * 2**-24)``:

    |f - s~| <= ||x|| * a(q) + u / (1 - u) * |s~| + eps
    a(q) = u ||q|| + (1 + u) ||q - bf16(q)|| + g ((1 + u)(||q|| + ||q - bf16(q)||) + ||q||)

(rounding of the row; rounding of the query; float32 accumulation of the bfloat16 GEMM; the
float32 accumulation of exact search itself; the bfloat16 rounding of the GEMM's output;
``eps`` covers flushed subnormals). The bound assumes the bfloat16 GEMM multiplies exactly
and accumulates in float32 (true of oneDNN/AMX and of torch's own CPU kernels); a self-check
at first use refuses a kernel that accumulates in lower precision.

Whether screening is used (``screen="auto"``) is measured once per process: the bfloat16
GEMM must be several times faster than the float32 one, and the float32 GEMM must give every
score the same bits whatever the number of rows and queries in the call (rescoring a few rows
must reproduce the full pass). Otherwise exact search runs its float32 path unchanged.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from inquire.errors import InputError

log = logging.getLogger(__name__)

Screen = Literal["auto", "bf16", "off"]
SCREENS: tuple[str, ...] = ("auto", "bf16", "off")

#: Unit roundoff of bfloat16 (8 significant bits) and of float32 (24 bits).
U_BF16 = 2.0**-8
U_F32 = 2.0**-24
#: bfloat16 must screen at least this many times faster than float32 GEMM for "auto".
MIN_SPEEDUP = 3.0
#: Rescoring GEMMs get at least this many rows (small row counts take other kernel paths).
MIN_RESCORE_ROWS = 16
_GROUP_SIZES = (8, 16, 32, 64)


def check_screen(screen: str) -> Screen:
    """``screen`` validated: one of ``"auto"``, ``"bf16"``, ``"off"``."""
    if screen not in SCREENS:
        raise InputError(f"screen must be one of {', '.join(SCREENS)}; got {screen!r}")
    return screen  # type: ignore[return-value]


def gamma(n: int, u: float = U_F32) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: relative error of any n-term float sum."""
    return n * u / (1.0 - n * u)


def query_terms(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(bf16 bits of q (nq, d) uint16 view-able, a (nq,) float64)``: the per-query part
    ``a(q)`` of the bound, rounded up. ``q`` is ``(nq, d) float32``."""
    import torch

    qt = torch.from_numpy(np.ascontiguousarray(q, np.float32))
    qb = qt.to(torch.bfloat16)
    q64 = q.astype(np.float64)
    qb64 = qb.to(torch.float32).numpy().astype(np.float64)
    nq_ = np.linalg.norm(q64, axis=1)
    rq = np.linalg.norm(q64 - qb64, axis=1)
    d = q.shape[1]
    g = gamma(d)
    a = U_BF16 * nq_ + (1 + U_BF16) * rq + g * ((1 + U_BF16) * (nq_ + rq) + nq_)
    # float64 norms are off by ~d * 2**-53 relative: inflate generously.
    return qb.contiguous().view(torch.int16).numpy(), a * (1 + 1e-9)


def norm_inflation(d: int) -> float:
    """Factor that turns a float32-computed row norm into an upper bound of the true norm
    (any order of summing d exact squares, then a rounded square root)."""
    # computed sum >= (1 - gamma) * true sum; the square root is rounded to nearest.
    return 1.0 / ((1 - U_F32) * (1 - gamma(d)) ** 0.5) * (1 + 1e-9)


def abs_slack(d: int) -> float:
    """Absolute term of the bound: subnormal products a kernel may flush (d * 2**-126 each
    side) plus float32 rounding in evaluating the bound itself, far below any score gap."""
    return 4 * d * 2.0**-126 + 2.0**-60


def upper_inverse(t: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Smallest screened score ``s~`` with ``s~ + c|s~| + margin >= t`` (c = u/(1-u)), per
    query, rounded down to float32: rows screened below it cannot reach score ``t``.

    ``t``, ``margin``: ``(nq,) float64``. ``-inf`` in ``t`` gives ``-inf``.
    """
    c = U_BF16 / (1 - U_BF16)
    v = t - margin
    with np.errstate(invalid="ignore"):
        s = np.where(v >= 0, v / (1 + c), v / (1 - c))
    s = np.where(np.isneginf(t), -np.inf, s)
    out = s.astype(np.float32)
    # float64 -> float32 rounds to nearest: step down where that went up.
    up = out.astype(np.float64) > s
    out[up] = np.nextafter(out[up], np.float32(-np.inf))
    return out


def lower_bound(s: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Lower bound of the float32 score of a row screened at ``s`` (``(nq,) float32``)."""
    c = U_BF16 / (1 - U_BF16)
    s64 = s.astype(np.float64)
    return s64 - c * np.abs(s64) - margin


# --------------------------------------------------------------------------------------------
# Calibration: once per process
# --------------------------------------------------------------------------------------------

_lock = threading.Lock()
_speed: dict[tuple[int, int], float] = {}
_group: dict[tuple[int, int, int], int | None] = {}
_accum_ok: list[bool] = []


def bf16_accumulates_in_fp32() -> bool:
    """Whether torch's bfloat16 matmul on this CPU accumulates in float32 (or better).

    A row ``[1, 2**-9, ...]`` against ones sums to ~3; accumulating in bfloat16 (ulp 2**-7
    at 1) would lose every small term and return 1.
    """
    with _lock:
        if _accum_ok:
            return _accum_ok[0]
    import torch

    d = 1025
    x = torch.full((4, d), 2.0**-9, dtype=torch.bfloat16)
    x[:, 0] = 1.0
    ones = torch.ones((d, 8), dtype=torch.bfloat16)
    got = (x @ ones).float()
    want = 1.0 + (d - 1) * 2.0**-9
    ok = bool(torch.all((got - want).abs() <= U_BF16 * want + gamma(d) * want).item())
    with _lock:
        _accum_ok[:] = [ok]
    if not ok:
        log.warning("torch's bfloat16 matmul does not accumulate in float32 here; no screening")
    return ok


def cpu_has_bf16_units() -> bool | None:
    """Whether the CPU advertises bfloat16 dot-product units (``amx_bf16`` or
    ``avx512_bf16`` in ``/proc/cpuinfo``); ``None`` where that cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        return None
    return None


def bf16_speedup(d: int, threads: int) -> float:
    """Measured bfloat16 / float32 GEMM throughput ratio on this CPU at width ``d``.

    0 without a look where the CPU lists no bfloat16 units (torch then emulates bfloat16,
    always slower). Otherwise a small probe first and a larger one only when the small one is
    promising. Cached per process.
    """
    key = (d, threads)
    with _lock:
        if key in _speed:
            return _speed[key]
    if cpu_has_bf16_units() is False:
        log.info("no bfloat16 units listed in /proc/cpuinfo: no screening")
        with _lock:
            _speed[key] = 0.0
        return 0.0
    import torch

    def rate(m: int, n: int, dtype: Any, reps: int) -> float:
        a = torch.randn(m, d).to(dtype)
        b = torch.randn(n, d).to(dtype)
        out = torch.empty(m, n, dtype=dtype)
        torch.matmul(a, b.T, out=out)
        best = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.matmul(a, b.T, out=out)
            best = min(best, time.perf_counter() - t0)
        return 2.0 * m * n * d / max(best, 1e-9)

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        ratio = rate(32, 256, torch.bfloat16, 2) / rate(32, 256, torch.float32, 2)
        if ratio >= MIN_SPEEDUP / 2:
            ratio = rate(64, 2048, torch.bfloat16, 3) / rate(64, 2048, torch.float32, 3)
    finally:
        torch.set_num_threads(old)
    log.info("bfloat16 / float32 GEMM throughput at d=%d: %.2fx", d, ratio)
    with _lock:
        _speed[key] = ratio
    return ratio


def rescore_group_size(nq: int, d: int, chunk_rows: int) -> int | None:
    """Smallest number of queries per rescoring GEMM whose float32 scores equal, bit for
    bit, those of the full ``(nq, d) @ (chunk_rows, d).T`` GEMM of exact search (for row
    counts from ``MIN_RESCORE_ROWS`` up); ``None`` when no size does. Cached per process.

    Run with the thread settings of the search (torch single-threaded per scoring thread).
    """
    key = (nq, d, chunk_rows)
    with _lock:
        if key in _group:
            return _group[key]
    import torch

    rng = np.random.default_rng(12345)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    x = rng.standard_normal((chunk_rows, d)).astype(np.float16).astype(np.float32)
    full = np.empty((nq, chunk_rows), np.float32)
    torch.matmul(torch.from_numpy(q), torch.from_numpy(x).T, out=torch.from_numpy(full))
    found: int | None = None
    sizes = [g for g in _GROUP_SIZES if g < nq] + [nq]
    for g in sizes:
        ok = True
        for n in sorted({MIN_RESCORE_ROWS, 17, 33, 100, 257, min(1000, chunk_rows)}):
            if n > chunk_rows:
                continue
            rows = np.sort(rng.choice(chunk_rows, n, replace=False))
            qs = rng.choice(nq, g, replace=nq < g)
            got = np.empty((g, n), np.float32)
            torch.matmul(
                torch.from_numpy(np.ascontiguousarray(q[qs])),
                torch.from_numpy(np.ascontiguousarray(x[rows])).T,
                out=torch.from_numpy(got),
            )
            if not np.array_equal(got.view(np.uint32), full[np.ix_(qs, rows)].view(np.uint32)):
                ok = False
                break
        if ok:
            found = g
            break
    if found is None:
        log.info("float32 GEMM scores depend on the call's shape here: full-chunk rescoring")
    with _lock:
        _group[key] = found
    return found


@dataclass
class ScreenPlan:
    """What a screened search needs: the bfloat16 queries, the per-query bound terms and the
    query-group size of rescoring GEMMs."""

    q_bf16: np.ndarray  # (nq, d) int16: bfloat16 bit patterns of the queries
    a: np.ndarray  # (nq,) float64 per-query bound terms a(q)
    group: int | None  # queries per rescoring GEMM; None: full-chunk GEMMs only
    inflate: float  # row-norm inflation factor
    slack: float  # absolute slack


def plan_screen(
    screen: Screen,
    q: np.ndarray,
    n_rows: int,
    k: int,
    chunk_rows: int,
    store_dtype: np.dtype,
    torch_gemm: bool,
    threads: int,
) -> ScreenPlan | None:
    """Decide whether this search screens in bfloat16; ``None`` for the float32 path.

    ``"off"``: never. ``"bf16"``: always where it can be exact (torch's float32 GEMM in use,
    float16/float32 store, float32-accumulating bfloat16 kernel, shape-independent float32
    scores), else :class:`~inquire.errors.InputError`. ``"auto"``: as ``"bf16"`` when also
    the bfloat16 GEMM is at least ``MIN_SPEEDUP`` times faster here and the store has many
    more rows than ``k``; otherwise the float32 path, silently.
    """
    if screen == "off":
        return None
    forced = screen == "bf16"

    def no(reason: str) -> ScreenPlan | None:
        if forced:
            raise InputError(f"screen='bf16' is not possible here: {reason}; use screen='auto'")
        log.debug("no bfloat16 screening: %s", reason)
        return None

    if not torch_gemm:
        return no(
            "exact search does not use torch's float32 GEMM (torch missing, or its "
            "float32 matmul precision is not 'highest')"
        )
    if store_dtype not in (np.float16, np.float32):
        return no(f"the store holds {store_dtype}, not float16/float32")
    if not np.isfinite(q).all() or float(np.abs(q).max(initial=0.0)) > 1e30:
        return no("queries have non-finite or huge values")
    if not forced:
        if n_rows < 8 * k or n_rows < 4 * chunk_rows:
            return no("too few rows per result for screening to pay")
        if bf16_speedup(q.shape[1], threads) < MIN_SPEEDUP:
            return no("bfloat16 GEMM is not fast enough on this CPU")
    if not bf16_accumulates_in_fp32():
        return no("torch's bfloat16 matmul does not accumulate in float32 on this CPU")
    # None: scores depend on the GEMM's shape here, so chunks with survivors are rescored by
    # the float32 path's own full-chunk GEMM (bit-identical by construction, less saving).
    group = rescore_group_size(q.shape[0], q.shape[1], chunk_rows)
    qb, a = query_terms(q)
    d = q.shape[1]
    return ScreenPlan(qb, a, group, norm_inflation(d), abs_slack(d))
