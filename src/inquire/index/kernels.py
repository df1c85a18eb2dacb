"""The float16 -> float32 conversion and the float32 GEMM of the exact search, run by torch
when it is installed and by numpy otherwise; where both can run the GEMM, the faster one on
this CPU for the search's shape (timed once per process)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

# Per process: whether numpy's BLAS ran the float32 GEMM faster than torch, per shape.
_blas_faster: dict[tuple[int, int, int], bool] = {}
_blas_lock = threading.Lock()
_BLAS_KEYS_MAX = 1024


def gemm_key(nq: int, d: int, rows: int) -> tuple[int, int, int]:
    """The shapes one timing of :meth:`Kernels.choose_gemm` stands for: the same width and
    chunk, query counts within a power of two (a server's many batch sizes time a few)."""
    return (int(nq).bit_length(), int(d), int(rows))


# The single-threaded sections open now (several searches may run at once): the first to
# open saves the process's thread counts, the last to close restores them.
_sections_lock = threading.Lock()
_sections = 0
_saved_torch = 0  # torch's thread count before the first open section
_blas_limits: Any = None  # threadpoolctl's limiter of the open sections (restores BLAS)


def _blas_control() -> None:
    """Make the calling thread the one whose BLAS thread limits take effect: threadpoolctl
    (recent versions) lets a single thread set OpenBLAS's process-wide count and silently ignores
    the others (while that thread lives), so a search from a second thread would neither
    limit BLAS nor restore it."""
    import threadpoolctl

    clear = getattr(
        getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None
    )
    if clear is not None:
        clear(force=True)


def _limit_blas() -> Any:
    """numpy's BLAS limited to one thread; returns what :func:`_restore_blas` undoes."""
    from threadpoolctl import threadpool_limits

    _blas_control()
    return threadpool_limits(1, user_api="blas")


def _restore_blas(limits: Any) -> None:
    """Undo :func:`_limit_blas` (from any thread), leaving no thread in control of BLAS."""
    _blas_control()
    try:
        limits.restore_original_limits()
    finally:
        _blas_control()


class Kernels:
    """float16 -> float32 conversion and the float32 GEMM, via torch when available.

    torch's ``copy_`` converts ~10x faster than numpy's ``astype``, and running the GEMM in
    torch's thread pool too keeps conversion and GEMM from fighting over the two cores with a
    second (OpenBLAS) pool. The GEMM stays float32: torch is used only while its float32
    matmul precision is "highest" (other settings may round inputs to bfloat16).
    """

    def __init__(self) -> None:
        try:
            import torch
        except ImportError:  # torch is an optional dependency; numpy is correct, only slower
            self.torch: Any = None
        else:
            self.torch = torch
        self._gemm_torch = (
            self.torch is not None and self.torch.get_float32_matmul_precision() == "highest"
        )
        self.blas_gemm = False  # the float32 GEMM by numpy's BLAS (see choose_gemm)

    @property
    def fp32_gemm(self) -> str:
        """Who runs the float32 GEMM: ``"torch"`` or ``"numpy"`` (its BLAS)."""
        return "torch" if self._gemm_torch and not self.blas_gemm else "numpy"

    def workers(self, requested: int | None) -> int:
        """Scoring threads: one per core when torch runs the kernels, else one (numpy's
        OpenBLAS then threads each GEMM itself)."""
        if not self._gemm_torch:
            return 1
        if requested is None:
            requested = min(os.cpu_count() or 1, self.torch.get_num_threads())
        return max(1, int(requested))

    @contextlib.contextmanager
    def single_threaded(self) -> Iterator[None]:
        """Each scoring thread owns one core: torch's kernels and numpy's BLAS run in the
        calling thread (both restored afterwards).

        Both counts outlive a section: BLAS's is process-wide, torch's is per thread and
        process-wide (threads read it when they first run torch). With several sections open
        at once (concurrent searches), the first to open saves them and the last to close
        restores them, whatever the order in which they close (each section's own thread
        gets back the torch count it had before any section was open)."""
        global _sections, _saved_torch, _blas_limits
        t = self.torch
        with _sections_lock:
            # get_num_threads first: a thread new to torch takes the process-wide count at its
            # first torch call, which would undo a set_num_threads made before it.
            own = t.get_num_threads()
            if _sections == 0:
                _saved_torch = own
                _blas_limits = _limit_blas()
            _sections += 1
            old = own if _sections == 1 else _saved_torch
            t.set_num_threads(1)
        try:
            yield
        finally:
            with _sections_lock:
                _sections -= 1
                try:
                    if _sections == 0:
                        # The last one out leaves torch's process-wide count (read by threads
                        # started afterwards) as the first one in found it.
                        old = _saved_torch
                        limits, _blas_limits = _blas_limits, None
                        _restore_blas(limits)
                finally:
                    t.set_num_threads(old)

    def choose_gemm(self, nq: int, d: int, rows: int) -> bool:
        """Run the float32 GEMM by numpy's BLAS where it is faster than torch's on this CPU for
        ``(nq, d) @ (rows, d).T`` (one thread each, best of two after a warm-up; remembered
        per process for shapes of the same :func:`gemm_key`). Call inside
        :meth:`single_threaded`. Returns :attr:`blas_gemm`."""
        if not self._gemm_torch:
            return self.blas_gemm
        key = gemm_key(nq, d, rows)
        with _blas_lock:
            known = _blas_faster.get(key)
        if known is None:
            t = self.torch
            rng = np.random.default_rng(0)
            q = rng.standard_normal((nq, d), dtype=np.float32)
            x = rng.standard_normal((rows, d), dtype=np.float32)
            out = np.empty((nq, rows), np.float32)
            tq, tx, to = t.from_numpy(q), t.from_numpy(x), t.from_numpy(out)
            best = {"blas": float("inf"), "torch": float("inf")}
            for i in range(3):
                for name in ("blas", "torch"):
                    t0 = time.perf_counter()
                    if name == "blas":
                        np.matmul(q, x.T, out=out)
                    else:
                        t.matmul(tq, tx.T, out=to)
                    if i:  # the first of each is a warm-up
                        best[name] = min(best[name], time.perf_counter() - t0)
            known = best["blas"] < best["torch"]
            with _blas_lock:
                if len(_blas_faster) >= _BLAS_KEYS_MAX:
                    _blas_faster.clear()
                _blas_faster[key] = known
        self.blas_gemm = known
        return known

    def convert(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Write ``src`` rows into the float32 buffer ``dst`` of the same shape."""
        if self.torch is not None and src.flags.writeable and src.dtype == np.float16:
            self.torch.from_numpy(dst).copy_(self.torch.from_numpy(src))
        else:
            np.copyto(dst, src, casting="unsafe")

    def scores(self, q: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
        """``out (nq, b) = q (nq, d) @ data (b, d).T`` in float32."""
        if self._gemm_torch and not self.blas_gemm and data.flags.writeable:
            t = self.torch
            t.matmul(t.from_numpy(q), t.from_numpy(data).T, out=t.from_numpy(out))
        else:
            np.matmul(q, data.T, out=out)
