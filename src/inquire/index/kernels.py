"""The float16 -> float32 conversion and the float32 GEMM of the exact search, run by torch
when it is installed and by numpy otherwise."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np


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
        """Each scoring thread owns one core: torch's kernels run in the calling thread."""
        old = self.torch.get_num_threads()
        self.torch.set_num_threads(1)
        try:
            yield
        finally:
            self.torch.set_num_threads(old)

    def convert(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Write ``src`` rows into the float32 buffer ``dst`` of the same shape."""
        if self.torch is not None and src.flags.writeable and src.dtype == np.float16:
            self.torch.from_numpy(dst).copy_(self.torch.from_numpy(src))
        else:
            np.copyto(dst, src, casting="unsafe")

    def scores(self, q: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
        """``out (nq, b) = q (nq, d) @ data (b, d).T`` in float32."""
        if self._gemm_torch and data.flags.writeable:
            t = self.torch
            t.matmul(t.from_numpy(q), t.from_numpy(data).T, out=t.from_numpy(out))
        else:
            np.matmul(q, data.T, out=out)
