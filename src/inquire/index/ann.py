"""Approximate nearest-neighbour indexes (faiss) built over an embedding store.

An index is named by a faiss factory string (``"IVF4096,Flat"``, ``"IVF4096,PQ64"``,
``"HNSW32"``) and always uses the inner product. It lives next to the embeddings::

    DIR/index/<name>.faiss   the faiss index (faiss row i = store row i)
    DIR/index/<name>.json    factory, metric, dim, store row count, store fingerprint, ...

The sidecar's fingerprint ties the index to the exact store it was built from; loading it
over a changed store raises :class:`StaleIndexError`. Indexes are read memory-mapped
(``faiss.IO_FLAG_MMAP``) where the index type allows it. Search-time parameters
(``nprobe``, ``efSearch``, ...) are set through ``faiss.ParameterSpace``.

:class:`AnnIndex` is a :class:`~inquire.index.base.Searcher`: ``search(queries, k, mask)``
returns ``(scores, ids)`` under the one ranking rule; a mask travels into faiss as an
``IDSelectorBitmap``, so faiss only scores selected rows (never a top k filtered afterwards).

Approximate results are judged against exact ones: :func:`recall_at_k`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inquire._io import atomic_path, write_json
from inquire.embed.folder import manifest_path, metadata_files
from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError, UnknownNameError
from inquire.index.base import check_mask
from inquire.index.exact import check_queries
from inquire.index.topk import check_k, topk

log = logging.getLogger(__name__)

INDEX_DIR = "index"
INDEX_SUFFIX = ".faiss"
SIDECAR_SUFFIX = ".json"
DEFAULT_TRAIN_SIZE = 200_000
ADD_BLOCK_ROWS = 65536
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

ProgressFn = Callable[[int, int], None]


class StaleIndexError(InputError):
    """An index was built from a different version of the embedding store."""


def store_fingerprint(store: EmbeddingStore) -> str:
    """A short hash identifying the store's contents without reading all of it.

    Covers the row count, dimension, dtype, every shard's and metadata file's name, size and
    modification time, the first and last 4 KiB of each shard, and ``manifest.json``.
    """
    h = hashlib.sha256()
    h.update(f"{len(store)}:{store.dim}:{store.dtype.str}".encode())
    for path in store.shard_paths:
        st = path.stat()
        h.update(f"|{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        with open(path, "rb") as fh:
            h.update(fh.read(4096))
            fh.seek(max(0, st.st_size - 4096))
            h.update(fh.read(4096))
    for path in sorted(metadata_files(store.root)):
        st = path.stat()
        h.update(f"|{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    manifest = manifest_path(store.root)
    if manifest.is_file():
        h.update(manifest.read_bytes())
    return h.hexdigest()[:32]


def default_name(factory: str) -> str:
    """A file-safe index name from a factory string: ``"IVF1024,Flat"`` -> ``ivf1024_flat``."""
    return re.sub(r"[^a-z0-9]+", "_", factory.lower()).strip("_") or "index"


def index_dir(store_root: str | os.PathLike[str]) -> Path:
    """Where the indexes of the embedding folder ``store_root`` live."""
    return Path(store_root) / INDEX_DIR


def list_indexes(store_root: str | os.PathLike[str]) -> list[str]:
    """Names of the indexes built for the embedding folder ``store_root``."""
    folder = index_dir(store_root)
    if not folder.is_dir():
        return []
    return sorted(
        p.stem for p in folder.glob(f"*{SIDECAR_SUFFIX}") if p.with_suffix(INDEX_SUFFIX).is_file()
    )


def index_infos(store_root: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The sidecar record (``factory``, ``count``, ``dim``, ...) of every index built for
    the embedding folder ``store_root``, by name (the order of :func:`list_indexes`)."""
    folder = index_dir(store_root)
    return {
        name: json.loads((folder / f"{name}{SIDECAR_SUFFIX}").read_text(encoding="utf-8"))
        for name in list_indexes(store_root)
    }


def parse_params(items: Iterable[str] | Mapping[str, Any] | None) -> dict[str, float]:
    """``["nprobe=16", "efSearch=64"]`` (or a mapping) -> ``{"nprobe": 16.0, ...}``."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            name, sep, value = str(item).partition("=")
            if not sep or not name.strip():
                raise InputError(
                    f"search parameter {item!r} is not NAME=VALUE; e.g. nprobe=16 or efSearch=64"
                )
            pairs.append((name.strip(), value.strip()))
    out: dict[str, float] = {}
    for name, value in pairs:
        try:
            out[str(name)] = float(value)
        except (TypeError, ValueError):
            raise InputError(
                f"search parameter {name}={value!r} needs a number, e.g. {name}=16"
            ) from None
    return out


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # faiss is the optional "search" extra
        raise InputError(
            "approximate indexes need faiss: pip install 'inquire[search]' (faiss-cpu)"
        ) from exc
    return faiss


def _sample_rows(store: EmbeddingStore, n: int, seed: int) -> np.ndarray:
    """``(n, d) float32``: ``n`` store rows drawn without replacement, read shard by shard."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(store), size=n, replace=False))
    out = np.empty((n, store.dim), np.float32)
    shard_of = np.searchsorted(store.offsets, rows, side="right") - 1
    for s, shard in enumerate(store.shards):
        sel = np.flatnonzero(shard_of == s)
        if len(sel):
            out[sel] = shard[rows[sel] - store.offsets[s]]
    return out


def build_index(
    store: EmbeddingStore,
    factory: str,
    name: str | None = None,
    train_size: int = DEFAULT_TRAIN_SIZE,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Build the faiss index ``factory`` (inner product) over ``store``; return its path.

    Trains on ``min(train_size, N)`` random rows, then adds the store in blocks of
    ``ADD_BLOCK_ROWS`` converted to float32 (faiss keeps its own copy or codes; no float32
    copy of the whole store is made here). ``progress(done_rows, total_rows)`` is called
    after each block.
    """
    faiss = _faiss()
    name = name or default_name(factory)
    if not _NAME_RE.match(name):
        raise InputError(
            f"index name {name!r} must be letters, digits, '_', '-' or '.', e.g. ivf1024_flat"
        )
    path = index_dir(store.root) / f"{name}{INDEX_SUFFIX}"
    if path.exists() and not overwrite:
        raise InputError(
            f"index {name!r} already exists at {str(path)!r}; pick another --name or overwrite"
        )
    try:
        index = faiss.index_factory(store.dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise InputError(
            f"faiss cannot build factory string {factory!r} for {store.dim}-d vectors "
            f"({first}); examples: 'IVF1024,Flat', 'IVF4096,PQ64', 'HNSW32', 'Flat'"
        ) from None
    n = len(store)
    n_train = 0
    if not index.is_trained:
        n_train = min(int(train_size), n)
        log.info("training %s on %d of %d rows", factory, n_train, n)
        try:
            index.train(_sample_rows(store, n_train, seed))
        except RuntimeError as exc:
            raise InputError(
                f"training {factory!r} on {n_train} vectors failed: "
                f"{str(exc).strip().splitlines()[-1]}; use fewer lists (e.g. IVF{max(1, n // 40)}) "
                f"or a larger train_size"
            ) from None
    done = 0
    for _, block in store.iter_blocks(ADD_BLOCK_ROWS):
        index.add(np.ascontiguousarray(block, dtype=np.float32))
        done += len(block)
        if progress is not None:
            progress(done, n)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    write_json(
        path.with_suffix(SIDECAR_SUFFIX),
        {
            "name": name,
            "factory": factory,
            "metric": "inner_product",
            "dim": store.dim,
            "count": n,
            "store_fingerprint": store_fingerprint(store),
            "train_size": n_train,
            "seed": seed,
            "faiss_version": getattr(faiss, "__version__", ""),
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return path


@dataclass
class AnnIndex:
    """A faiss index loaded for a store; :meth:`search` returns ``(scores, image ids)``."""

    store: EmbeddingStore
    name: str
    info: dict[str, Any]
    index: Any
    path: Path
    #: Search parameters applied so far. faiss keeps them on the index, so a later search
    #: without parameters still uses them; caches key on this, not on one call's arguments.
    params: dict[str, float] = field(default_factory=dict)
    # faiss keeps search parameters on the shared index object, so setting them and
    # searching must happen together: a search from another thread with other parameters
    # in between would otherwise run (or leave the index) with the wrong ones.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @classmethod
    def load(cls, store: EmbeddingStore, name: str, mmap: bool = True) -> AnnIndex:
        """Open index ``name`` of ``store``, checking that it was built from this store."""
        faiss = _faiss()
        folder = index_dir(store.root)
        path = folder / f"{name}{INDEX_SUFFIX}"
        sidecar = path.with_suffix(SIDECAR_SUFFIX)
        if not path.is_file() or not sidecar.is_file():
            raise UnknownNameError(f"index of {str(store.root)!r}", name, list_indexes(store.root))
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        if info.get("count") != len(store) or info.get("dim") != store.dim:
            raise StaleIndexError(
                f"index {name!r} was built for {info.get('count')} x {info.get('dim')} "
                f"embeddings but {str(store.root)!r} now holds {len(store)} x {store.dim}; "
                f"rebuild it: inquire index build --embeddings {store.root} "
                f"--factory {info.get('factory')!r} --name {name} --overwrite"
            )
        if info.get("store_fingerprint") != store_fingerprint(store):
            raise StaleIndexError(
                f"index {name!r} is stale: the embeddings in {str(store.root)!r} changed since it "
                f"was built ({info.get('built_at')}); rebuild it: inquire index build "
                f"--embeddings {store.root} --factory {info.get('factory')!r} --name {name} "
                f"--overwrite"
            )
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError:
            # Some index types (e.g. HNSW in older faiss) cannot be memory-mapped.
            log.info("index %s cannot be memory-mapped; reading it into memory", name)
            index = faiss.read_index(str(path))
        return cls(store=store, name=name, info=info, index=index, path=path)

    def set_params(self, params: Mapping[str, float]) -> None:
        """Apply search-time parameters (``nprobe``, ``efSearch``, ...) via ParameterSpace."""
        faiss = _faiss()
        space = faiss.ParameterSpace()
        with self._lock:
            for key, value in params.items():
                try:
                    space.set_index_parameter(self.index, key, value)
                except RuntimeError:
                    raise InputError(
                        f"index {self.name!r} ({self.info.get('factory')}) has no search "
                        f"parameter {key!r}; IVF indexes take nprobe, HNSW indexes take efSearch"
                    ) from None
                self.params[str(key)] = float(value)

    def with_params(self, params: Mapping[str, float]) -> AnnSearch:
        """This index as a :class:`~inquire.index.base.Searcher` whose every search applies
        ``params`` first (under the index's lock, like ``search(..., params=)``)."""
        return AnnSearch(self, dict(params))

    @property
    def nlist(self) -> int:
        """Inverted lists of an IVF index (0 for other index types)."""
        faiss = _faiss()
        try:
            return int(faiss.extract_index_ivf(self.index).nlist)
        except RuntimeError:
            return 0

    def search(
        self,
        queries: np.ndarray,
        k: int,
        mask: np.ndarray | None = None,
        *,
        params: Mapping[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``scores (nq, k) float32`` descending and image ``ids (nq, k) int64``.

        ``queries``: ``(nq, d) float32``; ``mask``: ``(N,) bool`` store rows that may be
        returned (None: all), applied inside faiss. ``params`` (``nprobe``, ``efSearch``) are
        applied first and stay on the index (see :meth:`set_params`).

        The ranking rule of exact search: equal scores ordered by id ascending, and a tie
        group straddling the k-th place is completed before the cut (faiss is asked for more
        results until the last one scores below the k-th), so a ``Flat`` index returns exactly
        what exact search returns. Missing results (too few selected rows in the probed lists)
        are padded with id ``-1`` and score ``-inf``. Safe to call from several threads at
        once, with different ``params``: each search runs with its own (searches are
        serialised).
        """
        q = check_queries(self.store, queries)
        k = check_k(k)
        mask = check_mask(mask, len(self.store))
        n = int(self.index.ntotal)
        if mask is not None and len(mask) != n:
            raise InputError(
                f"the mask has {len(mask)} rows but index {self.name!r} holds {n}; rebuild it"
            )
        with self._lock:
            if params:
                self.set_params(params)
            # One more than k: a (k+1)-th answer tied with the k-th means the tie group may
            # go on, and those queries are asked again, twice as deep (the rule needs every
            # tie to choose by id).
            width = max(1, min(n, k + 1))
            scores, rows = self._search_rows(q, width, mask)
            while width < n:
                open_ = (rows[:, -1] >= 0) & (scores[:, -1] == scores[:, k - 1])
                if not open_.any():
                    break
                width = min(n, 2 * width)
                more_s, more_r = self._search_rows(q[open_], width, mask)
                extra = ((0, 0), (0, width - scores.shape[1]))
                scores = np.pad(scores, extra, constant_values=-np.inf)
                rows = np.pad(rows, extra, constant_values=-1)
                scores[open_], rows[open_] = more_s, more_r
        ids = np.where(rows < 0, -1, self.store.ids[np.maximum(rows, 0)])
        return topk(np.where(rows < 0, np.float32(np.nan), scores), ids, k)

    def _search_rows(
        self, q: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """faiss's ``(scores (nq, k) float32, store rows (nq, k) int64)``, -1 for none."""
        if mask is None:
            scores, rows = self.index.search(q, int(k))
        else:
            faiss = _faiss()
            bitmap = np.packbits(mask, bitorder="little")  # bit i%8 of byte i//8 = row i
            sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            sp = _selector_params(faiss, self.index, sel, k)
            scores, rows = self.index.search(q, int(k), params=sp)
            del sel, bitmap  # kept alive until faiss returned
        return np.asarray(scores, np.float32), np.asarray(rows, np.int64)


@dataclass(frozen=True)
class AnnSearch:
    """An :class:`AnnIndex` with search parameters, as a :class:`~inquire.index.base.Searcher`."""

    ann: AnnIndex
    params: dict[str, float]

    def search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``self.ann.search(queries, k, mask, params=self.params)``."""
        return self.ann.search(queries, k, mask, params=self.params)


def _selector_params(faiss: Any, index: Any, sel: Any, k: int) -> Any:
    """faiss ``SearchParameters`` carrying ``sel`` and the index's current settings (a
    ``SearchParameters`` object replaces them for the call: nprobe would fall back to 1)."""
    if isinstance(index, faiss.IndexPreTransform):
        inner = _selector_params(faiss, faiss.downcast_index(index.index), sel, k)
        return faiss.SearchParametersPreTransform(index_params=inner)
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=sel, nprobe=int(index.nprobe))
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=sel, efSearch=max(k, int(index.hnsw.efSearch)))
    return faiss.SearchParameters(sel=sel)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int | None = None) -> float:
    """Mean over queries of ``|approx top-k ∩ exact top-k| / |exact top-k|``.

    Both ``(nq, >=k) int64``; ids ``< 0`` are padding and never count. Queries whose exact
    list is empty are skipped.
    """
    a, e = np.asarray(approx_ids), np.asarray(exact_ids)
    if a.ndim != 2 or e.ndim != 2 or a.shape[0] != e.shape[0]:
        raise InputError(
            f"recall needs two (nq, k) id arrays with the same nq, got {a.shape} and {e.shape}"
        )
    k = k or e.shape[1]
    vals = []
    for ra, re_ in zip(a[:, :k], e[:, :k], strict=True):
        truth = set(re_[re_ >= 0].tolist())
        if truth:
            vals.append(len(truth & set(ra[ra >= 0].tolist())) / len(truth))
    return float(np.mean(vals)) if vals else 0.0
