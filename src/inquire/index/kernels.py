"""The float16 -> float32 conversion and the float32 GEMM of the exact search, run by torch
when it is installed and by numpy otherwise; where several can run the GEMM, the fastest on
this CPU for the search's shape (timed once per process).

Three float32 GEMMs may run: numpy's BLAS (OpenBLAS in numpy's wheels), torch's ``matmul``
(MKL in torch's wheels) and oneDNN's inner-product primitive through torch
(``torch.ops.mkldnn._linear_pointwise``, the op torch's own compiler uses for linear layers).
BLAS libraries pick their kernels by CPU vendor and model: on an AMD EPYC with AVX-512, the
two BLAS libraries ran ~120 GFLOP/s per core while oneDNN, which picks by instruction set,
ran ~245 (``benchmarks/exact_search.py`` prints the rates it measured). oneDNN is used only
where a self-check (:func:`onednn_gemm_ok`) finds it multiplies in float32: its inputs are
not rounded to bfloat16 or TF32 (torch's matmul precision settings could allow that).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from inquire.index import tuning
from inquire.index.screen import gamma

log = logging.getLogger(__name__)

#: The float32 GEMMs, in the order they are preferred when timed equal.
GEMMS = ("onednn", "numpy", "torch")

# Per process: the fastest float32 GEMM measured, per shape (gemm_key).
_fastest: dict[tuple[int, ...], str] = {}
_fastest_lock = threading.Lock()
_FASTEST_KEYS_MAX = 1024
_TIMED_QUERIES = 1024
# Per process: whether oneDNN's GEMM passed its self-check, per precision setting of torch.
_onednn_checked: dict[tuple[str, str], bool] = {}
# Per process: whether torch's GEMMs gave the exact products of the probes (_probes), per
# GEMM, shape, torch thread count and precision setting (libraries pick kernels, even
# precisions, by shape).
_gemm_shapes: dict[tuple[Any, ...], bool] = {}
_GEMM_SHAPES_MAX = 4096


def gemm_key(nq: int, d: int, rows: int, threads: int = 1) -> tuple[int, ...]:
    """The shapes one timing of :meth:`Kernels.choose_gemm` stands for: the same width and
    chunk, query counts within a power of two (a server's many batch sizes time a few), on
    one thread (a scoring thread's) or on the libraries' own ``threads``."""
    key: tuple[int, ...] = (int(nq).bit_length(), int(d), int(rows))
    return key if threads == 1 else (*key, int(threads))


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


def _precision(torch: Any) -> tuple[str, str]:
    """torch's float32 matmul precision settings: the global one (``"mixed"`` where torch
    refuses to name it, after its old and new settings were both used) and oneDNN's own
    (torch routes float32 matmuls to oneDNN in bfloat16 or TF32 where it allows that)."""
    try:
        glob = str(torch.get_float32_matmul_precision())
    except RuntimeError:
        glob = "mixed"
    mkldnn = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return glob, str(getattr(mkldnn, "fp32_precision", "none"))


def fp32_settings_ok(torch: Any) -> bool:
    """Whether torch's settings keep its float32 GEMMs in float32: oneDNN's own setting
    ``"ieee"`` or unset, and the global one ``"highest"``. Where torch refuses to name the
    global one (its old and new settings were both used: TF32 for CUDA alone, say), the
    settings oneDNN's inherits from (oneDNN's and torch's for every backend) must be
    ``"ieee"`` or unset: torch's CPU matmuls follow oneDNN's (the old setting writes it)."""
    glob, onednn = _precision(torch)
    if onednn not in ("none", "ieee"):
        return False
    if glob != "mixed":
        return glob == "highest"
    backends = torch.backends
    parents = (
        getattr(backends.mkldnn, "fp32_precision", None),
        getattr(backends, "fp32_precision", None),
    )
    return all(str(p) in ("none", "ieee") for p in parents)


def _onednn_enabled(torch: Any) -> bool:
    """Whether torch may use oneDNN (``torch.backends.mkldnn.enabled``, a user's switch)."""
    return bool(getattr(getattr(torch.backends, "mkldnn", None), "enabled", False))


def torch_gemm_ok(torch: Any, gemm: str) -> bool:
    """Whether torch's float32 GEMM ``gemm`` ("torch" or "onednn") may run now: read before
    and after each GEMM, since another thread may change torch's settings during a search."""
    return fp32_settings_ok(torch) and (gemm != "onednn" or _onednn_enabled(torch))


def _onednn_op(torch: Any) -> Any:
    """oneDNN's inner product through torch, or None where this torch has none."""
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def _onednn_gemm(torch: Any, q: Any, x: Any) -> Any:
    """``q (nq, d) @ x (rows, d).T`` as a new ``(nq, rows)`` float32 tensor, by oneDNN."""
    return _onednn_op(torch)(q, x, None, "none", [], "")


def _onednn_self_check(torch: Any) -> bool:
    """Whether oneDNN's GEMM returns float32 sums of unrounded float32 products, right shape:
    the exact products of :func:`gemm_shape_ok` on a small shape, then random rows of an odd
    shape against the float64 product, within the float32 bound ``gamma_d ||q|| ||x||``."""
    if not gemm_shape_ok(torch, "onednn", 3, 32, 4):
        return False
    gen = torch.Generator().manual_seed(0)
    d = 77
    q = torch.randn((5, d), generator=gen)
    x = torch.randn((131, d), generator=gen)
    got = _onednn_gemm(torch, q, x).double()
    exact = q.double() @ x.double().T
    g = gamma(d)
    limit = g * torch.linalg.vector_norm(q.double(), dim=1)[:, None]
    limit = limit * torch.linalg.vector_norm(x.double(), dim=1)[None, :] * (1 + 1e-9)
    return tuple(got.shape) == (5, 131) and bool(((got - exact).abs() <= limit).all())


def onednn_gemm_ok(torch: Any) -> bool:
    """Whether oneDNN's float32 GEMM may run here: torch has it, the precision settings keep
    float32 (``"highest"``; oneDNN's own ``"ieee"`` or unset) and its self-check passed (once
    per process and setting)."""
    if not torch_gemm_ok(torch, "onednn"):
        return False
    settings = _precision(torch)
    with _fastest_lock:
        known = _onednn_checked.get(settings)
    if known is None:
        if _onednn_op(torch) is None:
            known = False
        else:
            try:
                known = _onednn_self_check(torch)
            except Exception:  # an op that exists but refuses these inputs: not used
                known = False
        with _fastest_lock:
            _onednn_checked[settings] = known
    return known


_C = np.float32(1 + 2.0**-16)


def _probes(nq: int, d: int, rows: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Two GEMMs of shape ``(nq, d) @ (rows, d).T`` that every float32 GEMM computes exactly,
    and their product: signs (at most 127 of them per query row, the first and last column
    among them) against signs, one side times ``c = 1 + 2**-16``. Each product is ``+-c``,
    each partial sum ``m c`` with ``|m| <= 127`` (at most 24 significant bits), so any order
    and FMA give it exactly; inputs (either side) or sums rounded to bfloat16, TF32 or
    float16 lose the ``2**-16``."""
    rng = np.random.default_rng(0)
    sq = np.zeros((nq, d), np.float32)
    nnz = min(d, 127)
    # nnz distinct columns spread over the row from a random start; then the first and last
    cols = (rng.integers(0, d, size=(nq, 1)) + np.arange(nnz) * (d // nnz)) % d
    cols[:, 0], cols[:, -1] = 0, d - 1
    sq[np.arange(nq)[:, None], cols] = _signs(rng, (nq, nnz))
    sx = _signs(rng, (rows, d))
    want = np.matmul(sq, sx.T) * _C  # integers of at most 127: exact in any float32 GEMM
    return [(sq, sx * _C), (sq * _C, sx)], want


def _signs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Random ``-1.0``/``+1.0`` (float32) of ``shape``."""
    out = rng.integers(0, 2, size=shape, dtype=np.int8).astype(np.float32)
    out *= 2
    out -= 1
    return out


def _torch_gemm(torch: Any, gemm: str, q: np.ndarray, x: np.ndarray, out: np.ndarray) -> Any:
    """``q @ x.T`` by torch's ``gemm`` ("torch": in ``out``; "onednn": a new array)."""
    if gemm == "onednn":
        return _onednn_gemm(torch, torch.from_numpy(q), torch.from_numpy(x)).numpy()
    torch.matmul(torch.from_numpy(q), torch.from_numpy(x).T, out=torch.from_numpy(out))
    return out


def gemm_shape_ok(torch: Any, gemm: str, nq: int, d: int, rows: int) -> bool:
    """Whether torch's float32 GEMM ``gemm`` ("torch" or "onednn") of this shape (on torch's
    present thread count) multiplies in float32, as the exact products of :func:`_probes`
    show. Libraries pick their kernels by shape: oneDNN its precision too where an fpmath
    mode allows (``ONEDNN_DEFAULT_FPMATH_MODE``), and torch's matmul calls oneDNN for some
    shapes on some CPUs; the self-check's small shapes cannot show either. Checked once per
    process, GEMM and shape."""
    threads = int(torch.get_num_threads())
    key = (GEMMS.index(gemm), int(nq), int(d), int(rows), threads, *_precision(torch))
    with _fastest_lock:
        known = _gemm_shapes.get(key)
    if known is None:
        try:
            pairs, want = _probes(nq, d, rows)
            known = True
            for q, x in pairs:
                got = _torch_gemm(torch, gemm, q, x, np.full_like(want, np.nan))
                known = known and got.dtype == np.float32 and got.shape == want.shape
                known = known and bool(got.flags.c_contiguous)
                known = known and bool(np.array_equal(got, want))
        except Exception:  # an op that refuses these inputs: not used
            known = False
        if not known:
            log.warning(
                "torch's float32 GEMM %r of shape (%d, %d) @ (%d, %d).T does not multiply in "
                "float32 here; numpy's BLAS runs it",
                gemm,
                nq,
                d,
                rows,
                d,
            )
        with _fastest_lock:
            if len(_gemm_shapes) >= _GEMM_SHAPES_MAX:
                _gemm_shapes.clear()
            _gemm_shapes[key] = known
    return known


class Kernels:
    """float16 -> float32 conversion and the float32 GEMM, via torch when available.

    torch's ``copy_`` converts ~10x faster than numpy's ``astype``. The GEMM stays float32:
    torch's GEMMs are used only while its float32 matmul precision is "highest" (other
    settings may round inputs to bfloat16), and oneDNN's only after its self-check; where
    several may run, :meth:`choose_gemm` takes the fastest.
    """

    def __init__(self) -> None:
        try:
            import torch
        except ImportError:  # torch is an optional dependency; numpy is correct, only slower
            self.torch: Any = None
        else:
            self.torch = torch
        self._gemm_torch = self.torch is not None and fp32_settings_ok(self.torch)
        #: Who runs the float32 GEMM: "torch", "numpy" (its BLAS) or "onednn" (choose_gemm).
        self.gemm = "torch" if self._gemm_torch else "numpy"
        #: GEMMs numpy's BLAS ran in place of :attr:`gemm` (torch's settings or a shape's
        #: check refused it), counted over every thread using these kernels.
        self.fallbacks = 0
        self._count_lock = threading.Lock()

    @property
    def fp32_gemm(self) -> str:
        """Who runs the float32 GEMM: ``"torch"``, ``"numpy"`` (its BLAS) or ``"onednn"``."""
        return self.gemm

    def candidates(self) -> tuple[str, ...]:
        """The float32 GEMMs that may run here (in :data:`GEMMS` order)."""
        if not self._gemm_torch:
            return ("numpy",)
        if onednn_gemm_ok(self.torch):
            return GEMMS
        return ("numpy", "torch")

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

    def choose_gemm(self, nq: int, d: int, rows: int, pooled: bool = False) -> str:
        """Run the float32 GEMM by the fastest of :meth:`candidates` on this CPU for ``(nq,
        d) @ (rows, d).T`` (best of two after a warm-up; remembered per process for shapes
        of the same :func:`gemm_key`, and on disk for later processes on this machine:
        :mod:`inquire.index.tuning`): one thread each inside :meth:`single_threaded`, or,
        ``pooled``, on the libraries' own threads (torch's count). Returns :attr:`gemm`."""
        names = self.candidates()
        names = tuple(n for n in names if n == "numpy" or gemm_shape_ok(self.torch, n, nq, d, rows))
        if len(names) == 1:
            self.gemm = names[0]
            return self.gemm
        key = gemm_key(nq, d, rows, self.torch.get_num_threads() if pooled else 1)
        with _fastest_lock:
            known = _fastest.get(key)
        # What an earlier process on this machine measured (:mod:`inquire.index.tuning`), for
        # the same candidates.
        disk_key = (*key, *names)
        if known is None:
            known = tuning.recall("gemm", disk_key)
            if known in names:
                with _fastest_lock:
                    _fastest.setdefault(key, known)
        if known is None or known not in names:
            rng = np.random.default_rng(0)
            # Timed on at most _TIMED_QUERIES queries: a huge batch's timing would allocate
            # its whole (nq, rows) output again; the GEMMs' order changes little past it.
            q = rng.standard_normal((min(nq, _TIMED_QUERIES), d), dtype=np.float32)
            out = np.empty((len(q), rows), np.float32)
            x = rng.standard_normal((rows, d), dtype=np.float32)
            best = dict.fromkeys(names, float("inf"))
            for i in range(3):
                for name in names:
                    self.gemm = name
                    t0 = time.perf_counter()
                    self.scores(q, x, out)
                    if i:  # the first of each is a warm-up
                        best[name] = min(best[name], time.perf_counter() - t0)
            known = min(names, key=lambda n: best[n])  # ties: the first in GEMMS order
            with _fastest_lock:
                if len(_fastest) >= _FASTEST_KEYS_MAX:
                    _fastest.clear()
                _fastest[key] = known
            tuning.keep("gemm", disk_key, known)
        self.gemm = known
        return known

    def convert(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Write ``src`` rows into the float32 buffer ``dst`` of the same shape."""
        if self.torch is not None and src.flags.writeable and src.dtype == np.float16:
            self.torch.from_numpy(dst).copy_(self.torch.from_numpy(src))
        else:
            np.copyto(dst, src, casting="unsafe")

    def scores(self, q: np.ndarray, data: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``q (nq, d) @ data (b, d).T`` in float32: in ``out (nq, b)``, or in a new array
        (oneDNN writes its own); returns the array that holds it."""
        gemm, t = self.gemm, self.torch
        # torch's settings are read again around each GEMM: another thread may have reduced
        # its precision since the search began (the GEMM is then redone by numpy's BLAS).
        if (
            gemm != "numpy"
            and self._gemm_torch
            and data.flags.writeable
            and torch_gemm_ok(t, gemm)
            and gemm_shape_ok(t, gemm, len(q), q.shape[1], len(data))
        ):
            got = _torch_gemm(t, gemm, q, data, out)
            if torch_gemm_ok(t, gemm):
                return got
        if gemm != "numpy":
            with self._count_lock:
                self.fallbacks += 1
        # Scores past the largest float32 overflow here; the search sees them (non-finite
        # scores of finite rows) and scores those rows exactly: numpy's warning would mislead.
        with np.errstate(over="ignore", invalid="ignore"):
            np.matmul(q, data.T, out=out)
        return out
