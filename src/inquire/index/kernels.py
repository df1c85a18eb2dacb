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
        calling thread (both restored afterwards)."""
        from threadpoolctl import threadpool_limits

        old = self.torch.get_num_threads()
        self.torch.set_num_threads(1)
        try:
            with threadpool_limits(1, user_api="blas"):
                yield
        finally:
            self.torch.set_num_threads(old)

    def choose_gemm(self, nq: int, d: int, rows: int) -> bool:
        """Run the float32 GEMM by numpy's BLAS where it is faster than torch's on this CPU for
        ``(nq, d) @ (rows, d).T`` (one thread each, best of two after a warm-up; remembered
        per process). Call inside :meth:`single_threaded`. Returns :attr:`blas_gemm`."""
        if not self._gemm_torch:
            return self.blas_gemm
        key = (nq, d, rows)
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
