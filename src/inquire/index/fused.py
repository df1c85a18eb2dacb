"""The final rescoring's fused kernel: each (query, row) pair's float64 inner product computed
straight from the stored row, compiled by ``numba`` where it is installed.

Without it, :mod:`inquire.index.rescore` gathers each query's rows, converts them to float32,
then to float64, and multiplies them with the query: four passes over every element, at
~0.4 ns an element on one core (measured at d=1024, rows in cache). This kernel reads each
row once, in row order, converts in registers and accumulates in float64: ~0.1-0.2 ns an
element on rows in cache (:func:`inquire.index.rescore.rescore` runs it on each ``preadv``
run right after reading it).

**Exactness.** Every product of a float16 or float32 row value with a float32 query value is
exact in float64 (at most 24 + 24 significant bits); the kernel sums the ``d`` products in
float64 in an order of the compiler's choosing (``fastmath`` reassociation, and fused
multiply-adds, whose products are exact anyway). Any order of ``d`` exact terms errs by at
most ``gamma_d(2**-53) sum |q_i x_i|``, the bound :func:`inquire.index.score.round_once`
takes, so the rescoring's float32 results are the same bits as without the kernel.

float16 values are converted by their bits, never through a float32 subnormal (a thread in
flush-denormal mode, ``torch.set_flush_denormal(True)``, reads those as zero): a normal
float16's ``(h & 0x7fff) << 13`` plus ``112 << 23`` is the float32 of its magnitude; a
subnormal (or zero) one's plus ``113 << 23`` is ``2**-14`` more, subtracted again (exact:
``m 2**-24`` with ``m < 1024`` is a normal float32); the sign bit then negates it. A row
holding an infinity or NaN gives NaN, which the rescoring settles the slow exact way
(:func:`inquire.index.score.exact_score`).

**Cost of numba.** ``import numba`` and loading the cached kernels take ~0.3-0.5 s per
process (compiling them the first time on a machine, ~1-2 s, is cached in numba's cache
folder; where none is writable or readable, each process compiles them). A search that
will rescore many pairs starts that in a background thread (:func:`start_loading`) while it
scans; the rescoring uses the kernel only when it is loaded or the rescoring is large enough
to wait for it (:func:`loaded`), else the passes above. ``INQUIRE_NUMBA=off`` never uses it.
A fork waits for the loading thread to end (:func:`_before_fork`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ENV_NUMBA = "INQUIRE_NUMBA"

_lock = threading.Lock()
# "kernels": (float16 kernel, float32 kernel) once loaded; "failed": why they cannot load;
# "thread": the loading thread while it runs.
_state: dict[str, Any] = {}


def enabled() -> bool:
    """Whether the kernel may be used (``INQUIRE_NUMBA`` is not ``off``/``0``/``no``)."""
    value = os.environ.get(ENV_NUMBA, "").strip().lower()
    return value not in ("off", "0", "no", "false")


def _dots16(xbits, local, qp, q, out, absout, want_abs):  # type: ignore[no-untyped-def]
    """The float16 kernel (compiled by :func:`_build`): rows as their 16-bit patterns."""
    d = xbits.shape[1]
    fb = np.empty(d, np.float32)
    for p in range(local.shape[0]):
        row = xbits[local[p]]
        special = np.uint32(0)
        for i in range(d):
            h = np.uint32(row[i])
            mag = h & np.uint32(0x7FFF)
            special |= np.uint32(mag >= np.uint32(0x7C00))
            sub = mag < np.uint32(0x0400)
            bits = np.uint32(
                (mag << np.uint32(13)) + (np.uint32(0x38800000) if sub else np.uint32(0x38000000))
            )
            f = np.float32(bits.view(np.float32)) - (
                np.float32(2.0**-14) if sub else np.float32(0.0)
            )
            fb[i] = np.float32(-f) if h & np.uint32(0x8000) else np.float32(f)
        qq = q[qp[p]]
        acc = 0.0
        for i in range(d):
            acc += np.float64(fb[i]) * np.float64(qq[i])
        if special:
            out[p] = np.nan
        else:
            out[p] = acc
        if want_abs:
            tot = 0.0
            for i in range(d):
                tot += abs(np.float64(fb[i])) * abs(np.float64(qq[i]))
            absout[p] = tot


def _dots32(x, local, qp, q, out, absout, want_abs):  # type: ignore[no-untyped-def]
    """The float32 kernel (compiled by :func:`_build`)."""
    d = x.shape[1]
    for p in range(local.shape[0]):
        row = x[local[p]]
        qq = q[qp[p]]
        acc = 0.0
        for i in range(d):
            acc += np.float64(row[i]) * np.float64(qq[i])
        out[p] = acc
        if want_abs:
            tot = 0.0
            for i in range(d):
                tot += abs(np.float64(row[i])) * abs(np.float64(qq[i]))
            absout[p] = tot


def _build() -> tuple[Callable[..., None], Callable[..., None]]:
    """Compile (or load from numba's cache) the two kernels and run each once on a tiny
    case, so the first real call does not pay for it. Where numba cannot cache them (no
    writable cache folder: a read-only install, HOME and NUMBA_CACHE_DIR not writable) or
    cannot read its cache (a garbled or truncated file), they are compiled without it, in
    each process (~1-2 s, in the loading thread)."""
    try:
        return _compiled(cache=True)
    except Exception as exc:
        log.debug("the rescoring's compiled kernel is not cached: %s", exc)
        return _compiled(cache=False)


def _compiled(cache: bool) -> tuple[Callable[..., None], Callable[..., None]]:
    import numba

    jit = numba.njit(cache=cache, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})
    dots16, dots32 = jit(_dots16), jit(_dots32)
    q = np.ones((1, 4), np.float32)
    out, absout = np.empty(1), np.empty(1)
    one, zero = np.ones(1, np.int64), np.zeros(1, np.int64)
    for kern, dtype in ((dots16, np.float16), (dots32, np.float32)):
        x = np.ones((2, 4), dtype)
        x.flags.writeable = False  # the shards' windows are read-only: that type
        kern(x.view(np.uint16) if dtype == np.float16 else x, one, zero, q, out, absout, True)
        if out[0] != 4.0 or absout[0] != 4.0:
            raise RuntimeError(f"the compiled kernel gave {out[0]}, {absout[0]} for 4, 4")
    return dots16, dots32


def _load() -> None:
    try:
        built = _build()
    except Exception as exc:  # numba missing or broken: the passes without it
        with _lock:
            _state["failed"] = f"{type(exc).__name__}: {exc}"
        log.debug("the rescoring's compiled kernel is not available: %s", exc)
        return
    with _lock:
        _state["kernels"] = built


def start_loading() -> None:
    """Load the kernels in a background thread (once per process; nothing where numba is
    not installed or the kernel is turned off)."""
    if not enabled():
        return
    with _lock:
        if "kernels" in _state or "failed" in _state or "thread" in _state:
            return
        if not _numba_installed():
            _state["failed"] = "numba is not installed"
            return
        # Started before it is published, under the lock: a thread waiting in loaded() must
        # never find it unstarted (join would raise). A thread that cannot start (a limit
        # on threads): no kernel.
        t = threading.Thread(target=_load, name="inquire-numba-load", daemon=True)
        try:
            t.start()
        except RuntimeError as exc:
            _state["failed"] = f"the loading thread cannot start: {exc}"
            return
        _state["thread"] = t


def loaded(wait: bool = False) -> tuple[Callable[..., None], Callable[..., None]] | None:
    """The kernels ``(float16, float32)`` where loaded; ``wait``: load them first (or wait for
    :func:`start_loading`'s thread). None where numba is missing, broken or turned off, or
    still loading and not ``wait``."""
    if not enabled():
        return None
    with _lock:
        got, thread = _state.get("kernels"), _state.get("thread")
    if got is not None or not wait:
        return got
    if thread is None:
        start_loading()
        with _lock:
            thread = _state.get("thread")
    if thread is not None:
        thread.join()
    with _lock:
        return _state.get("kernels")


#: Seconds a fork waits at most for the loading thread to end (:func:`_before_fork`).
FORK_WAIT_S = 60.0


def _before_fork() -> None:
    """Before this process forks: wait for the loading thread to end. A child forked while
    it imports numba (and the modules numba imports) inherits those modules' import locks,
    held by a thread that does not exist in the child: the child then hangs for ever on
    importing any of them (numba itself, by another library; multiprocessing's and
    DataLoader's workers are forked)."""
    with _lock:
        t = _state.get("thread")
    if t is not None and t is not threading.current_thread() and t.is_alive():
        t.join(FORK_WAIT_S)


def _after_fork_in_child() -> None:
    """In a forked child: a fresh lock (the parent's may have been held by another thread
    at the fork), and no loading thread (it did not follow into this process)."""
    global _lock
    _lock = threading.Lock()
    if _state.pop("thread", None) is not None and "kernels" not in _state:
        # Forked while the parent still loaded them (past FORK_WAIT_S): its imports under way
        # would hang this process's own, so this process runs without the kernel.
        _state.setdefault("failed", "forked while the kernel was loading")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def _numba_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def pair_dots(
    kernels: tuple[Callable[..., None], Callable[..., None]],
    x: np.ndarray,
    local: np.ndarray,
    qp: np.ndarray,
    q: np.ndarray,
    out: np.ndarray,
    absout: np.ndarray | None = None,
) -> None:
    """``out[j] = sum_i q[qp[j], i] x[local[j], i]`` in float64 for every pair ``j`` (NaN
    where a float16 row holds an infinity or NaN), and ``absout[j] = sum_i |q_i x_i|`` when
    given. ``x``: ``(rows, d)`` float16 or float32 (other types are converted to float32,
    a strided array copied), read-only (a read-only view is taken otherwise);
    ``local``, ``qp``: ``(m,) int64``; ``q``: ``(nq, d) float32``; ``out``, ``absout``:
    ``(m,) float64``. Pairs in row order read the rows in order."""
    if x.dtype not in (np.float16, np.float32):
        x = x.astype(np.float32)
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)  # one compiled layout: a strided shard is copied
    if x.flags.writeable:
        x = x.view()
        x.flags.writeable = False
    k16, k32 = kernels
    want = absout is not None
    spare = out if absout is None else absout
    if x.dtype == np.float16:
        k16(x.view(np.uint16), local, qp, q, out, spare, want)
    else:
        k32(x, local, qp, q, out, spare, want)
