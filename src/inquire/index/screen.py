"""The error bounds of exact search's approximations, and when it screens in bfloat16.

Exact search approximates every row's score with a GEMM, keeps the rows whose proven upper
bound can still reach the k-th exact score, and gives only those their exact score (the real
inner product rounded once to float32, :mod:`inquire.index.score`). Two approximations, each
with a proven bound on ``|s - s~|``, ``s`` the real inner product, ``s~`` the GEMM's value,
for a query ``q`` (float32) and a row ``x`` (float16 or float32) of width ``d``:

- **float32 GEMM** (``screen="off"``): any float32 dot product, any order, FMA or not:
  ``|s - s~| <= g ||q|| ||x||`` with ``g = gamma(d) = d 2**-24 / (1 - d 2**-24)``.
- **bfloat16 GEMM** (``screen="bf16"``), where the CPU multiplies bfloat16 much faster (AMX,
  AVX512-BF16), with ``u = 2**-8`` (unit roundoff of bfloat16):

      |s - s~| <= ||x|| * a(q) + u / (1 - u) * |s~| + eps
      a(q) = u ||q|| + (1 + u) ||q - bf16(q)|| + g ((1 + u)(||q|| + ||q - bf16(q)||) + ||q||)

  (rounding of the row; rounding of the query; float32 accumulation of the bfloat16 GEMM;
  a float32 GEMM's own error, kept so the bound also covers it; the bfloat16 rounding of the
  GEMM's output; ``eps`` covers flushed subnormals). It assumes the bfloat16 GEMM multiplies
  exactly and accumulates in float32 (true of oneDNN/AMX and of torch's own CPU kernels); a
  self-check at first use refuses a kernel that accumulates in lower precision.

Each bfloat16 GEMM is shifted by the queries' floors (``addmm``: :func:`shift_terms`), so
the output's rounding is relative to the score minus the floor, small where it matters.

``||x||`` is bounded per chunk by its largest row norm (computed in float32, inflated).
Chunks read from the store's bfloat16 copy (:mod:`inquire.index.bf16_copy`) know each row's
own rounding error ``||x - bf16(x)||`` and use it in place of ``u ||x||`` in the first term
(:func:`split_terms`). The proof is in ``docs/search.md``. Both paths rescore their
survivors the same way, so they return the same ids and scores bit for bit.

``screen="auto"`` (:func:`plan_screen`) takes the float32 GEMM where bfloat16 cannot be used
or cannot pay (no bfloat16 units listed by the CPU, a store of few chunks), and otherwise
times both on the search's own first chunks (:data:`clock`, replaceable), screening only
where bfloat16 is at most ``AUTO_MARGIN`` times the float32 time; the choice is remembered
for that search's shape, in the process and on disk for later processes on this machine
(:mod:`inquire.index.tuning`). Each path is timed as later searches run it: without
the first computation of row norms and, where the store's bfloat16 copy will be read,
without the conversions to bfloat16 (:class:`inquire.index.fanout.Chooser`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from inquire.errors import InputError
from inquire.index import tuning

log = logging.getLogger(__name__)

Screen = Literal["auto", "bf16", "off"]
SCREENS: tuple[str, ...] = ("auto", "bf16", "off")

#: Unit roundoff of bfloat16 (8 significant bits) and of float32 (24 bits).
U_BF16 = 2.0**-8
U_F32 = 2.0**-24
#: ``c`` of the bfloat16 bound: the GEMM's output is rounded to bfloat16.
C_BF16 = U_BF16 / (1 - U_BF16)
#: "auto" screens only where a bfloat16 chunk takes at most this share of a float32 chunk's time.
AUTO_MARGIN = 0.9
#: A choice is kept on disk for later processes only where the trial was clear: bfloat16 at
#: most ``AUTO_MARGIN - KEEP_BAND`` or at least ``AUTO_MARGIN + KEEP_BAND`` times float32
#: (a near call, e.g. on a busy machine, is measured again by the next process).
KEEP_BAND = 0.1
#: "auto" considers screening only for stores of at least this many chunks (the trial uses
#: the 14 first: 8 skipped, then 6).
MIN_TRIAL_CHUNKS = 16


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
    g = gamma(d + 1)  # d products and the shift (:func:`shift_rounds_once`)
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


def lower_bound(s: np.ndarray, margin: np.ndarray, c: float = C_BF16) -> np.ndarray:
    """Lower bound ``s - c|s| - margin`` (float64) of the exact score of a row approximated
    at ``s`` (``(nq,) float32``)."""
    s64 = s.astype(np.float64)
    return s64 - (c * np.abs(s64) if c else 0.0) - margin  # (0 * inf would be NaN)


# --------------------------------------------------------------------------------------------
# Checks and choices: once per process
# --------------------------------------------------------------------------------------------

_lock = threading.Lock()
_accum_ok: list[bool] = []
_choices: dict[tuple[Any, ...], str] = {}
#: Remembered choices kept at most (a server sees many query counts); then forgotten, and the
#: next search of each shape measures again.
_CHOICES_MAX = 4096

#: The clock that times ``"auto"``'s trial chunks (replaceable, e.g. by tests).
clock: Callable[[], float] = time.perf_counter


def remember_choice(key: tuple[Any, ...], method: str) -> None:
    """Keep ``"auto"``'s measured choice (``"bf16"`` or ``"fp32"``) for searches of ``key``."""
    with _lock:
        if key not in _choices and len(_choices) >= _CHOICES_MAX:
            _choices.clear()
        _choices[key] = method


def recalled_choice(key: tuple[Any, ...]) -> str | None:
    """The choice remembered for ``key`` in this process, else the one an earlier process on
    this machine kept (:mod:`inquire.index.tuning`), or None (then the next search measures)."""
    with _lock:
        got = _choices.get(key)
    if got is None:
        kept = tuning.recall("screen", key)
        if kept in ("bf16", "fp32"):
            remember_choice(key, kept)
            got = kept
    return got


def keep_choice(key: tuple[Any, ...], method: str) -> None:
    """Keep ``"auto"``'s measured choice for later processes on this machine too."""
    remember_choice(key, method)
    tuning.keep("screen", key, method)


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


_shift_ok: list[bool] = []


def _shift_probe(nq: int, rows: int, d: int) -> bool:
    """One check of :func:`shift_rounds_once` at the GEMM shape ``(nq, d) @ (rows, d).T``."""
    import torch

    j = torch.arange(nq, dtype=torch.float32) % 3 + 1
    q = torch.zeros((nq, d), dtype=torch.bfloat16)
    x = torch.zeros((rows, d), dtype=torch.bfloat16)
    q[:, 0], q[:, d - 1], x[:, 0], x[:, d - 1] = 1.0, j * 2.0**-10, 1.0, 1.0
    bias = torch.full((nq,), -1.0, dtype=torch.bfloat16)[:, None]  # as the search passes it
    want = (j * 2.0**-10)[:, None].expand(nq, rows)
    out = torch.empty((nq, rows), dtype=torch.bfloat16)
    torch.addmm(bias, q, x.T, out=out)
    return bool(torch.equal(out.float(), want))


def shift_rounds_once() -> bool:
    """Whether torch's bfloat16 ``addmm(bias, q, x.T)`` on this CPU adds the bias to the
    float32 accumulator and rounds the sum once to bfloat16 (oneDNN's and torch's own CPU
    kernels do), so the shifted screen (:func:`shift_terms`) holds.

    ``1 + j 2**-10`` (``j`` 1 to 3, by query) shifted by ``-1`` is ``j 2**-10`` when rounded
    once; rounding to bfloat16 before the shift (ulp ``2**-7`` at 1) would give 0. Checked
    at a few shapes here, once per process; each search's own GEMM shapes are checked too
    (:func:`shift_rounds_once_at`: kernels are chosen by shape).
    """
    with _lock:
        if _shift_ok:
            return _shift_ok[0]
    ok = True
    for nq, rows, d in ((1, 8, 3), (4, 64, 1025), (32, 512, 64), (128, 1024, 256)):
        ok = ok and _shift_probe(nq, rows, d)
    with _lock:
        _shift_ok[:] = [ok]
    if not ok:
        log.info("torch's bfloat16 addmm rounds before adding the bias here; unshifted screen")
    return ok


_shift_shapes: dict[tuple[int, int, int, int], bool] = {}
#: Shapes whose check is remembered at most (then forgotten, and checked again).
_SHIFT_SHAPES_MAX = 1024


def shift_rounds_once_at(nq: int, rows: int, d: int) -> bool:
    """:func:`shift_rounds_once`'s check at the search's own GEMM shape ``(nq, d) @ (rows,
    d).T`` and torch's thread count (oneDNN picks kernels, AMX or not, by shape), once per
    process and shape; a shape that fails is screened without the shift."""
    import torch

    key = (nq, rows, d, torch.get_num_threads())
    with _lock:
        got = _shift_shapes.get(key)
    if got is not None:
        return got
    ok = _shift_probe(nq, rows, d)
    with _lock:
        if key not in _shift_shapes and len(_shift_shapes) >= _SHIFT_SHAPES_MAX:
            _shift_shapes.clear()
        _shift_shapes[key] = ok
    if not ok:
        log.info("torch's bfloat16 addmm rounds before adding the bias at %s; unshifted", key)
    return ok


def shift_terms(floor: np.ndarray) -> np.ndarray:
    """``(nq,) float32`` bfloat16 numbers near ``floor`` (0 where it is not finite or huge):
    per query, the shift ``t`` of the next bfloat16 GEMM, which returns ``p~ = bf16(q~.x~ -
    t)`` (``addmm``, the bias added to the float32 accumulator, one rounding).

    The output rounding then costs ``c |p~|``, small for the rows whose score is near the
    floor (the only rows it can decide), instead of ``c |s~|``: with ``s~ = p~ + t``,
    ``|s - s~| <= a(q) ||x|| + gamma(d + 1) |t| + c |p~| + eps`` (the accumulation now sums
    ``d + 1`` terms: ``gamma(d + 1)`` in ``a(q)``, and ``|t|`` besides ``sum |q~_i x~_i|``).
    Any ``t`` keeps the bound; a ``t`` near the floor makes it narrow."""
    f = np.where(np.isfinite(floor) & (np.abs(floor) < 1e30), floor, 0.0).astype(np.float32)
    return _bf16_round(f)


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


@dataclass
class Bounds:
    """Per-query terms of the proven error bounds of both approximations (see module doc).

    ``|exact - s~| <= a * max||x|| + slack`` for the float32 GEMM's ``s~`` (``a = a32``) and
    ``|exact - s~| <= a_bf16 * max||x|| + C_BF16 |s~| + slack`` for the bfloat16 GEMM's, with
    ``max||x||`` an upper bound of the chunk's largest row norm (times ``inflate``)."""

    a32: np.ndarray  # (nq,) float64
    inflate: float  # row-norm inflation factor (a float32-computed norm -> an upper bound)
    slack: float  # absolute slack
    q_bf16: np.ndarray | None = None  # (nq, d) int16 bfloat16 bits; None: no bfloat16 path
    a_bf16: np.ndarray | None = None  # (nq,) float64
    # The same bound with each row's own rounding error known (the bfloat16 copy stores
    # ||x - bf16(x)||): ``a_row * max||x - bf16(x)|| + a_rest * max||x||`` replaces
    # ``a_bf16 * max||x||`` (see :func:`split_terms`).
    a_row: np.ndarray | None = None  # (nq,) float64
    a_rest: np.ndarray | None = None  # (nq,) float64
    # Shift each bfloat16 GEMM by the queries' floors (:func:`shift_terms`).
    shift: bool = False


def split_terms(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a_row, a_rest)``, each ``(nq,) float64`` rounded up: the bfloat16 bound for a row
    whose rounding error ``r_x >= ||x - bf16(x)||`` is known,

        |s - s~| <= a_row r_x + a_rest ||x|| + c |s~| + eps,
        a_row = ||q||,  a_rest = (1 + u) r_q + g ((1 + u)(||q|| + r_q) + ||q||).

    Arithmetic (notation of the module doc, ``x~ = bf16(x)``, ``q~ = bf16(q)``): ``s - p =
    q.(x - x~) + (q - q~).x~``, so ``|s - p| <= ||q|| r_x + r_q ||x~||`` and ``||x~|| <=
    (1 + u)||x||``; the float32 accumulation and the output rounding are bounded as before.
    Since ``||x - x~|| <= u ||x||`` always, this is never wider than ``a(q) ||x||`` and is
    narrower by the share of ``u ||q|| ||x||`` the row's actual rounding does not use (rounding
    errors of a real row are far from all maximal: ~0.4x here)."""
    q64 = q.astype(np.float64)
    qb = _bf16_round(q).astype(np.float64)
    nq_ = np.linalg.norm(q64, axis=1)
    rq = np.linalg.norm(q64 - qb, axis=1)
    g = gamma(q.shape[1] + 1)  # d products and the shift (:func:`shift_rounds_once`)
    a_rest = (1 + U_BF16) * rq + g * ((1 + U_BF16) * (nq_ + rq) + nq_)
    return nq_ * (1 + 1e-9), a_rest * (1 + 1e-9)


def _bf16_round(q: np.ndarray) -> np.ndarray:
    """``q`` (float32, any shape) rounded to bfloat16 by torch, as float32."""
    import torch

    qt = torch.from_numpy(np.ascontiguousarray(q, np.float32))
    return qt.to(torch.bfloat16).to(torch.float32).numpy()


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """float32 values (exact) of bfloat16 ``bits`` (uint16, any shape)."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def bf16_finite(bits: np.ndarray) -> bool:
    """Whether every bfloat16 of ``bits`` (uint16) is finite (exponent bits not all ones)."""
    return not bool((np.bitwise_and(bits, np.uint16(0x7F80)) == np.uint16(0x7F80)).any())


def bf16_cut_keys(cut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For float32 ``cut (n,)`` (not NaN), ``(positive (n,) bool, key (n,) uint16)`` such that
    a bfloat16 ``v`` with bits ``b`` (uint16), not NaN, has ``v >= cut`` exactly when
    ``int16(b) >= int16(key)`` where ``positive``, else ``b <= key`` (unsigned).

    ``key`` holds the bits of the smallest bfloat16 ``>= cut`` (``v >= cut`` iff ``v >=`` it,
    ``v`` being a bfloat16): a float32's top 16 bits truncate its magnitude, so for ``cut >
    0`` one more unit where any lower bit is set, for ``cut <= 0`` the top bits themselves
    (and ``-0``'s for ``+0``). Positive bfloat16 bits read as int16 ascend with the value and
    negative ones are below zero; as uint16, every non-negative value (``+0 .. +inf``) is below
    ``0x8000`` and a negative value's bits grow with its magnitude, so for a key of ``-0`` or
    below, ``b <= key`` holds for exactly the values at least the key's."""
    u = np.ascontiguousarray(cut, np.float32).view(np.uint32)
    positive = np.asarray(cut, np.float32) > 0
    top = (u >> np.uint32(16)).astype(np.uint32)
    up = positive & ((u & np.uint32(0xFFFF)) != 0)
    key = top + up.astype(np.uint32)
    key = np.where(positive, key, np.maximum(key, np.uint32(0x8000)))
    return positive, key.astype(np.uint16)


def row_error_slack(d: int) -> float:
    """Added to a row's inflated float32-computed ``||x - bf16(x)||``: squares of differences
    below ``2**-63`` may underflow in float32 (each then adds less than ``2**-126`` to the
    sum), and ``sqrt(a + b) <= sqrt(a) + sqrt(b)``, so ``sqrt(d) 2**-63``, doubled."""
    return float(np.sqrt(d)) * 2.0**-62


def bounds(q: np.ndarray, bf16: bool) -> Bounds:
    """The bound terms for queries ``q (nq, d) float32`` (bfloat16 terms only if ``bf16``)."""
    d = q.shape[1]
    # Any float32 dot product, any order, FMA or not: |f - s| <= gamma_d sum|q_i x_i|
    # <= gamma_d ||q|| ||x||; float64 norms are off by ~d 2**-53 relative: inflate.
    a32 = gamma(d) * np.linalg.norm(q.astype(np.float64), axis=1) * (1 + 1e-9)
    out = Bounds(a32, norm_inflation(d), abs_slack(d))
    if bf16:
        out.q_bf16, out.a_bf16 = query_terms(q)
        out.a_row, out.a_rest = split_terms(q)
        out.shift = shift_rounds_once()
    return out


@dataclass
class ScreenPlan:
    """How a search approximates its chunks: ``method`` "fp32" or "bf16" for every chunk, or
    None for ``"auto"``'s timed trial (whose choice is remembered under ``key``)."""

    bounds: Bounds
    method: str | None
    key: tuple[Any, ...] | None = None
    copy: bool = False  # the plan expects screening to read the store's bfloat16 copy


def plan_screen(
    screen: Screen,
    q: np.ndarray,
    n_rows: int,
    k: int,
    chunk_rows: int,
    store_dtype: np.dtype,
    has_torch: bool,
    threads: int,
    masked: bool = False,
    copy: bool | Callable[[], bool] = False,
) -> ScreenPlan:
    """Decide how this search approximates its rows before the exact rescoring.

    ``"off"``: the float32 GEMM. ``"bf16"``: the bfloat16 GEMM where its bound holds (torch
    present, float16/float32 store, finite queries, a float32-accumulating kernel), else
    :class:`~inquire.errors.InputError`. ``"auto"``: the float32 GEMM where bfloat16 cannot
    run, where the store has too few rows per result or chunks for a trial, or where the CPU
    lists no bfloat16 units (``/proc/cpuinfo``: torch would emulate it, always slower);
    otherwise the choice remembered for this shape, or a timed trial on the first chunks.
    ``copy``: screening would read the store's bfloat16 copy (the trial then times bfloat16
    without its conversions); part of the shape a choice is remembered for. A callable is
    asked only where the choice depends on it (it may read the copy: a digest check).
    """
    screen = check_screen(screen)
    forced = screen == "bf16"

    def fp32(reason: str) -> ScreenPlan:
        if forced:
            raise InputError(f"screen='bf16' is not possible here: {reason}; use screen='auto'")
        if screen == "auto":
            log.debug("no bfloat16 screening: %s", reason)
        return ScreenPlan(bounds(q, False), "fp32")

    if screen == "off":
        return fp32("screen='off'")
    if not has_torch:
        return fp32("torch is not installed")
    if store_dtype not in (np.float16, np.float32):
        return fp32(f"the store holds {store_dtype}, not float16/float32")
    if not np.isfinite(q).all() or float(np.abs(q).max(initial=0.0)) > 1e30:
        return fp32("queries have non-finite or huge values")
    key: tuple[Any, ...] | None = None
    recalled: str | None = None
    expect = False  # the copy: asked only below, where the choice depends on it
    if not forced:
        if n_rows < 8 * k or n_rows < MIN_TRIAL_CHUNKS * chunk_rows:
            return fp32("too few rows per result or chunks for screening to pay")
        if cpu_has_bf16_units() is False:
            return fp32("the CPU lists no bfloat16 units (torch would emulate bfloat16)")
        expect = bool(copy()) if callable(copy) else bool(copy)
        # Plain Python values (a numpy integer would key apart from the same int on disk).
        key = (
            tuple(int(n) for n in q.shape),
            int(k),
            int(chunk_rows),
            str(np.dtype(store_dtype)),
            int(threads),
            bool(masked),
            expect,
        )
        recalled = recalled_choice(key)
        if recalled == "fp32":
            return fp32("measured slower for this shape earlier (in this process or on disk)")
    if not bf16_accumulates_in_fp32():
        return fp32("torch's bfloat16 matmul does not accumulate in float32 on this CPU")
    method = "bf16" if forced or recalled == "bf16" else None
    return ScreenPlan(bounds(q, True), method, key, expect)
