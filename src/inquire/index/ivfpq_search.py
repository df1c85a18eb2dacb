"""Searching the partitioned IVF-PQ index: the router, one partition, the merge, the backends.

:class:`ScaleIndex` routes each search (exact over a small selection, else IVF with the
selection inside faiss and ``nprobe`` widened), asks a :class:`Backend` (every partition in
this process, :class:`LocalBackend`, or one Ray actor per partition) for each partition's
candidates with exact scores, and merges them under the one ranking rule.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from inquire.errors import InputError
from inquire.index.ivfpq_exact import (
    RowSource,
    _best,
    advise_random,
    exact_over_rows,
    exact_scores,
    gather,
)
from inquire.index.ivfpq_manifest import (
    MANIFEST,
    BrokenScaleIndexError,
    Manifest,
    PartitionInfo,
    StaleScaleIndexError,
    check_current,
    index_file_bytes,
    read_manifest,
    write_manifest,
)
from inquire.index.topk import check_k, padded, topk

log = logging.getLogger(__name__)


def _faiss() -> Any:
    from inquire.index.ann import _faiss as load

    return load()


#: One row scored on the exact route costs about as much as this many codes scanned on the
#: IVF route (measured on the 2-core AMD EPYC, benchmarks/collection_scale.py: 3-6 us per
#: exact row gathered from the memory-mapped shards, ~0.1 us per scanned PQ64 code).
EXACT_ROW_COST = 40


def widened_nprobe(nprobe: int, nlist: int, share: float) -> int:
    """``nprobe`` for a selection of ``share`` of the rows: ``nprobe / share``, capped.

    A selector hides the unselected rows of each probed list, so a search probing ``nprobe /
    share`` lists visits as many selected rows as an unfiltered one probing ``nprobe``. A
    selection uncorrelated with the space (a date window) spreads its true top k over many
    lists: ``nprobe / sqrt(share)`` kept only 0.95-0.98 of them at 1% (measured,
    benchmarks/collection_scale.py, 1M-2M rows), while the extra lists cost little (faiss
    skips unselected codes with one bitmap test each).
    """
    if share <= 0:
        return nlist
    return int(min(nlist, max(nprobe, math.ceil(nprobe / min(1.0, share)))))


@dataclass
class Route:
    """How every partition answers one search (decided once, from the whole selection)."""

    exact: bool
    nprobe: int
    candidates: int  # faiss results per query (k x rescore)


def choose_route(
    man: Manifest,
    k: int,
    selected: int,
    total: int,
    nprobe: int | None,
    exact_below: int | None = None,
) -> Route:
    """The router: exact over the selection when it is small, IVF with a widened nprobe else.

    Exact when the selection holds at most ``exact_below`` rows, and also when the IVF route
    would cost more: its widened ``nprobe`` scans ``total * nprobe / nlist`` codes, and one
    exact row costs about ``EXACT_ROW_COST`` scanned codes, so a 1% filter over 10M rows
    (nprobe widened to most lists) is answered exactly, faster and with recall 1.
    ``exact_below``: the threshold in place of the manifest's; given (or 0 in the settings),
    only the threshold decides (0: the IVF route whenever the selection holds more than
    ``k`` rows, as the recall measurement asks)."""
    s = man.settings
    below = s.exact_below if exact_below is None else exact_below
    if selected <= max(below, k):
        return Route(True, 0, 0)
    base = min(man.nlist, nprobe or s.nprobe)
    share = selected / max(total, 1)
    probe = widened_nprobe(base, man.nlist, share)
    if exact_below is None and below > 0:
        scanned = total * probe / max(man.nlist, 1)
        if selected * EXACT_ROW_COST <= scanned:
            return Route(True, 0, 0)
    return Route(False, probe, k * s.rescore)


class Partition:
    """One partition, loaded: its codes (memory-mapped) and the store it rescores from."""

    def __init__(self, store: RowSource, folder: str | os.PathLike[str], info: PartitionInfo):
        faiss = _faiss()
        self.store, self.info = store, info
        path = Path(folder) / info.file
        try:
            try:
                self.index = faiss.read_index(
                    str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
                )
            except RuntimeError:  # an index type faiss cannot map: read it whole
                self.index = faiss.read_index(str(path))
            self.ivf = faiss.extract_index_ivf(self.index)
        except RuntimeError as exc:
            raise BrokenScaleIndexError(
                f"partition file {str(path)!r} is missing or unreadable "
                f"({_faiss_reason(exc)}); rebuild the index"
            ) from None
        advise_random(store)  # rows are only ever gathered at random
        if int(self.ivf.d) != int(store.dim) or int(self.index.ntotal) < info.hi - info.lo:
            raise BrokenScaleIndexError(
                f"partition file {str(path)!r} holds {int(self.index.ntotal)} rows of "
                f"{int(self.ivf.d)}-d codes, not rows {info.lo}..{info.hi} of {store.dim}-d; "
                "rebuild the index"
            )
        self._lock = threading.Lock()

    def _rows(self, selected: np.ndarray | None) -> np.ndarray:
        """The store rows an exact pass over this partition scores (made only when one runs:
        a partition of millions of rows would otherwise cost an array per search)."""
        return np.arange(self.info.lo, self.info.hi) if selected is None else selected

    def code_bytes(self) -> int:
        """Bytes of codes and ids this partition keeps."""
        return int(self.index.ntotal) * (int(self.ivf.code_size) + 8)

    def search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None, route: Route
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, ``(rows, exact scores)`` of every candidate scoring at least the k-th
        best of this partition (ties kept); rows are global store rows.

        ``mask``: ``(hi - lo,) bool`` over this partition's rows, or None (all)."""
        lo, hi = self.info.lo, self.info.hi
        sel_rows = None if mask is None else np.flatnonzero(mask) + lo
        n_sel = hi - lo if sel_rows is None else len(sel_rows)
        nq = len(queries)
        if n_sel == 0:
            return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(nq)]
        if route.exact:
            return exact_over_rows(self.store, queries, self._rows(sel_rows), k)
        faiss = _faiss()
        q32 = np.ascontiguousarray(queries, np.float32)
        nprobe = min(route.nprobe, int(self.ivf.nlist))
        cand = min(route.candidates, n_sel)
        if mask is None:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            with self._lock:
                _, local = self.index.search(q32, cand, params=params)
        else:
            bitmap = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # n: bytes
            params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
            with self._lock:
                _, local = self.index.search(q32, cand, params=params)
            del sel, bitmap
        out: list[tuple[np.ndarray, np.ndarray]] = []
        short: list[int] = []
        for i in range(nq):
            # A file longer than its recorded range (an append cut short) keeps rows past hi:
            # those are searched as the store's tail, never twice.
            got = local[i][(local[i] >= 0) & (local[i] < hi - lo)]
            if len(got) < min(k, n_sel):
                short.append(i)  # too few selected rows in the probed lists
                out.append((np.zeros(0, np.int64), np.zeros(0, np.float32)))
                continue
            rows = got + lo
            exact = exact_scores(gather(self.store, rows), q32[i : i + 1])[0]
            s_best, r_best = _best(exact, rows, k)
            out.append((r_best, s_best))
        if short:
            fixed = exact_over_rows(self.store, q32[short], self._rows(sel_rows), k)
            for i, res in zip(short, fixed, strict=True):
                out[i] = res
        return out


def _faiss_reason(exc: BaseException) -> str:
    """The last line of a faiss error, without its C++ location."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text.split("failed: ")[-1][:160]


def merge(
    partials: Sequence[list[tuple[np.ndarray, np.ndarray]]], ids: np.ndarray, nq: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` under the ranking rule of every partition's candidates.

    ``partials``: per partition, per query ``(rows, scores)``; ``ids (N,) int64``: the image id
    of each store row. Returns ``scores (nq, k) float32``, ``ids (nq, k) int64`` (padded)."""
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    for i in range(nq):
        rows = np.concatenate([p[i][0] for p in partials]) if partials else np.zeros(0, np.int64)
        if len(rows) == 0:
            continue
        scores = np.concatenate([p[i][1] for p in partials])
        s, r = topk(scores[None, :], ids[rows], k)
        out_s[i], out_i[i] = s[0], r[0]
    return out_s, out_i


# -- serving: the same code with or without Ray ----------------------------------------------


class Backend(Protocol):
    """Runs one search on every partition; returns the partials in partition order."""

    def search(
        self,
        queries: np.ndarray,
        k: int,
        masks: list[np.ndarray | None],
        route: Route,
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]: ...

    def close(self) -> None: ...


_POOL: list[ThreadPoolExecutor] = []  # the partition threads, made on first use
_POOL_LOCK = threading.Lock()


def _partition_pool() -> ThreadPoolExecutor:
    """One pool per process for searching partitions side by side (faiss and the memory-mapped
    reads release the GIL), as many threads as cores (at most 8)."""
    with _POOL_LOCK:
        if not _POOL:
            workers = max(1, min(8, os.cpu_count() or 1))
            _POOL.append(ThreadPoolExecutor(workers, thread_name_prefix="inquire-partition"))
        return _POOL[0]


class LocalBackend:
    """Every partition loaded in this process; a search runs them side by side in threads
    (each partition's faiss index is searched under its own lock) and returns the partials in
    partition order, so results do not depend on which finished first."""

    def __init__(self, store: RowSource, folder: str | os.PathLike[str], man: Manifest):
        self.parts = [Partition(store, folder, p) for p in man.partitions]

    def search(
        self, queries: np.ndarray, k: int, masks: list[np.ndarray | None], route: Route
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        pairs = list(zip(self.parts, masks, strict=True))
        if len(pairs) <= 1 or (os.cpu_count() or 1) <= 1:
            return [p.search(queries, k, m, route) for p, m in pairs]
        pool = _partition_pool()
        futures = [pool.submit(p.search, queries, k, m, route) for p, m in pairs]
        return [f.result() for f in futures]

    def code_bytes(self) -> int:
        return sum(p.code_bytes() for p in self.parts)

    def close(self) -> None:
        self.parts = []


BackendFactory = Callable[[RowSource, Path, Manifest], Backend]
_factory: list[BackendFactory] = []  # the active one, if any (process-wide: a server's threads)
_factory_lock = threading.Lock()


@contextmanager
def backend_factory(factory: BackendFactory) -> Iterator[None]:
    """Inside the block, :meth:`ScaleIndex.open` without a ``backend`` serves the index with
    ``factory(store, folder, manifest)`` (e.g. Ray actors) instead of :class:`LocalBackend`.

    Process-wide, so an index opened by any thread (a web server's requests) gets it; one
    factory at a time. The factory owns what it starts: closing it is the caller's job."""
    with _factory_lock:
        if _factory:
            raise RuntimeError("another index backend is already active in this process")
        _factory.append(factory)
    try:
        yield
    finally:
        with _factory_lock:
            _factory.clear()


@dataclass
class ScaleIndex:
    """A partitioned IVF-PQ index over a store, searched under the one ranking rule.

    ``ids (N,) int64``: the image id of each store row (the tie-breaker and what is
    returned); ``backend``: :class:`LocalBackend` (default) or a Ray backend
    (:mod:`inquire.index.ray_serve`), both returning the same results.
    """

    store: RowSource
    folder: Path
    manifest: Manifest
    row_ids: np.ndarray | None
    backend: Backend

    @property
    def ids(self) -> np.ndarray:
        """``(N,) int64`` image id of each store row (read from the store when not given)."""
        if self.row_ids is None:
            self.row_ids = np.asarray(cast(Any, self.store).ids, np.int64)
        return self.row_ids

    @classmethod
    def open(
        cls,
        store: RowSource,
        folder: str | os.PathLike[str],
        ids: np.ndarray | None = None,
        backend: Backend | None = None,
    ) -> ScaleIndex:
        man = read_manifest(folder)
        if man is None:
            raise InputError(f"{str(folder)!r} holds no partitioned index (no {MANIFEST})")
        if hasattr(store, "shard_paths"):
            check_current(store, man)
        elif man.dim != store.dim or man.rows > len(store):
            raise StaleScaleIndexError(
                f"the index covers {man.rows} rows of {man.dim}-d vectors; the store has "
                f"{len(store)} rows of {store.dim}-d: rebuild the index"
            )
        if backend is None:
            factory = _factory[0] if _factory else None
            backend = (
                LocalBackend(store, folder, man)
                if factory is None
                else factory(store, Path(folder), man)
            )
        row_ids = None if ids is None else np.asarray(ids, np.int64)
        return cls(store, Path(folder), man, row_ids, backend)

    def route(
        self,
        k: int,
        mask: np.ndarray | None,
        nprobe: int | None = None,
        exact_below: int | None = None,
    ) -> Route:
        """How a search of ``k`` under ``mask`` is answered (:func:`choose_route`)."""
        n = self.manifest.rows
        selected = n if mask is None else int(np.count_nonzero(mask[:n]))
        return choose_route(self.manifest, k, selected, n, nprobe, exact_below)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        mask: np.ndarray | None = None,
        nprobe: int | None = None,
        exact: bool = False,
        ids: np.ndarray | None = None,
        ivf: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of ``queries (nq, d) float32`` among rows where ``mask (N,) bool`` is
        True (None: all), as ``scores (nq, k) float32`` (exact scores) and image ``ids (nq,
        k) int64``, padded with ``-inf`` / ``-1``. Rows past the index (added to the store
        since it was last updated) are searched exactly. ``exact``: force the exact route;
        ``ivf``: the IVF route even for a selection under ``exact_below`` rows.
        ``ids (N,) int64``: image id per row for this search (default :attr:`ids`)."""
        k = check_k(k)
        if mask is not None and len(mask) != len(self.store):
            raise InputError(f"mask of {len(mask)} rows for a store of {len(self.store)} rows")
        q = np.ascontiguousarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != self.manifest.dim:
            raise InputError(f"queries of shape {q.shape}; expected (nq, {self.manifest.dim})")
        n_index = self.manifest.rows
        route = self.route(k, mask, nprobe, 0 if ivf else None)
        if exact:
            route = replace(route, exact=True)
        # Every indexed row selected: no selector (faiss then skips a bitmap test per code).
        part_mask = None if mask is None or mask[:n_index].all() else mask
        masks = [
            None if part_mask is None else part_mask[p.lo : p.hi] for p in self.manifest.partitions
        ]
        partials = self.backend.search(q, k, masks, route) if masks else []
        tail = len(self.store) - n_index
        if tail > 0:  # rows not in any partition yet: exact
            rows = np.arange(n_index, len(self.store))
            if mask is not None:
                rows = rows[mask[n_index:]]
            partials = [*partials, exact_over_rows(self.store, q, rows, k)]
        if not partials:
            return padded(np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), k)
        return merge(partials, self.ids if ids is None else ids, len(q), k)

    def index_bytes(self) -> int:
        """Bytes of the index files on disk (codes, ids, centroids, manifest)."""
        return index_file_bytes(self.folder)

    def close(self) -> None:
        self.backend.close()


# -- measured recall ---------------------------------------------------------------------------

RECALL_K = 100
RECALL_QUERIES = 50


def measure_recall(
    scale: ScaleIndex,
    valid: np.ndarray,
    ids: np.ndarray,
    seed: int = 0,
    k: int = RECALL_K,
    n_queries: int = RECALL_QUERIES,
) -> dict[str, Any]:
    """recall@``k`` against exact search, of what a search gets and of the IVF route alone.

    Queries: ``n_queries`` valid rows of the store (``valid (N,) bool``), moved a little off
    the photos (Gaussian noise, sigma 0.05, renormalised). For the unfiltered search and for a
    random 1% selection: ``{name}`` is the recall of the search as the router answers it,
    ``{name}_route`` which route that is ("exact" below ``exact_below`` selected rows, else
    "ivf"), and ``{name}_ivf`` the recall of the IVF route forced at the configured
    ``nprobe`` (widened under the filter), which below the threshold the router does not
    take, so a small collection reports what its index would do. A selection with no rows
    (the 1% of a small collection, or every photo deleted) is left out, not reported as 0.
    Also records ``k``, ``queries``, ``rows``, ``nprobe`` and ``rescore``. ``ids (N,) int64``:
    image id per row.
    """
    from inquire.index.ann import recall_at_k

    rows = np.flatnonzero(valid)
    if len(rows) == 0:
        return {}
    rng = np.random.default_rng(seed)
    pick = rng.choice(rows, size=min(n_queries, len(rows)), replace=False)
    q = gather(scale.store, np.sort(pick)).astype(np.float32)
    q += rng.normal(0, 0.05, q.shape).astype(np.float32)  # beside the photos, not on them
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    s = scale.manifest.settings
    out: dict[str, Any] = {
        "k": k,
        "queries": len(q),
        "rows": scale.manifest.rows,
        "nprobe": s.nprobe,
        "rescore": s.rescore,
    }
    one_pct = valid & (rng.random(len(valid)) < 0.01)
    for name, mask in (("unfiltered", valid), ("filter_1pct", one_pct)):
        if not mask.any():  # no row selected (a small collection): nothing to measure, and
            continue  # recall_at_k would call it 0 even on the exact route
        _, exact = scale.search(q, k, mask, ids=ids, exact=True)
        _, routed = scale.search(q, k, mask, ids=ids)
        is_exact = scale.route(k, mask).exact
        _, ivf = scale.search(q, k, mask, ids=ids, ivf=True) if is_exact else (None, routed)
        out[name] = round(float(recall_at_k(routed, exact, k)), 4)
        out[f"{name}_route"] = "exact" if is_exact else "ivf"
        out[f"{name}_ivf"] = round(float(recall_at_k(ivf, exact, k)), 4)
    return out


def record_recall(
    store: RowSource,
    folder: str | os.PathLike[str],
    valid: np.ndarray | None = None,
    ids: np.ndarray | None = None,
) -> dict[str, Any]:
    """Measure the index in ``folder`` in this process (:func:`measure_recall`) and store
    the figures in its manifest; returns them. A manifest that cannot be rewritten (read-only
    folder) is logged, not raised: the index itself is complete.

    ``valid (N,) bool``: the rows queries are drawn from and searched (None: every store
    row); ``ids (N,) int64``: image id per row (None: the store's own)."""
    man = read_manifest(folder)
    if man is None:
        raise InputError(f"{str(folder)!r} holds no partitioned index (no {MANIFEST})")
    scale = ScaleIndex.open(store, folder, ids, LocalBackend(store, folder, man))
    try:
        rows = np.ones(len(store), bool) if valid is None else valid
        man.recall = measure_recall(scale, rows, scale.ids if ids is None else ids)
    finally:
        scale.close()
    try:
        write_manifest(folder, man)
    except OSError as exc:  # a read-only index folder: the index is fine, the figure unsaved
        log.warning("recall of the index in %s not recorded (%s)", folder, exc)
    return man.recall
