"""A compressed, partitioned index over an embedding store: faiss IVF-PQ + exact rescoring.

Built for collections that outgrow one machine's memory (:doc:`docs/scale.md`):

- **One trained quantizer.** A faiss ``IVF{nlist},PQ{m}x8`` index (inner product) is trained
  once on a sample of the store and saved empty (``trained.faiss``); every partition is a
  copy of it holding the codes of its rows, so codes from any partition are comparable.
- **Partitions.** A partition is a contiguous run of store rows ``[lo, hi)`` (whole shards),
  saved as ``part_{i}.faiss`` and read memory-mapped (``faiss.IO_FLAG_MMAP``): the codes stay
  on disk and in the page cache. faiss ids are rows relative to ``lo``. Adding photos appends
  codes to the last partition while it holds fewer than ``partition_rows`` rows, else opens a
  new one; deletions are the caller's row mask; nothing is rebuilt unless asked.
- **Exact rescoring.** A search takes ``k x rescore`` candidates per query from faiss and
  scores them again from the float16 shards (memory-mapped), so every returned score is an
  exact score: the float64 dot product of the stored float16 row and the float32 query,
  rounded to float32 (the rule of :func:`inquire.index.topk.brute_force`). That score does not
  depend on which rows are scored together, so one partition, many partitions, in one process
  or on Ray actors, all return the same bits.
- **A router per search.** When the mask selects at most ``exact_below`` rows, those rows are
  searched exactly (no approximation at all); otherwise faiss searches with the selection as
  an ``IDSelectorBitmap`` and ``nprobe`` widened as the selected share ``s`` falls
  (``nprobe / s``, capped at ``nlist``). A query whose probed lists hold fewer selected
  rows than it must return is answered exactly within its partition.

Ranking rule: score descending, ties by image id ascending, padding id ``-1`` / ``-inf``
(:mod:`inquire.index.topk`). A partition returns every candidate scoring at least its k-th
best (ties included), so the driver's merge under the rule equals one search over all rows.

Layout of an index folder::

    manifest.json    settings, dim, factory, partitions [{number, lo, hi}], measured recall
    trained.faiss    the trained, empty IVF-PQ index every partition copies
    part_{i}.faiss   partition i's codes (ids: row - lo)
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from inquire._io import atomic_path, write_json
from inquire.errors import InputError
from inquire.index.topk import check_k, padded, topk

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRAINED = "trained.faiss"
FORMAT = 1
ADD_BLOCK_ROWS = 65536
PQ_TRAIN_ITERATIONS = 15
PQ_TRAIN_POINTS_PER_CENTROID = 64
# Exact passes over selected rows gather and score this many rows at a time.
EXACT_BLOCK_ROWS = 32768

ProgressFn = Callable[[int, int], None]


def _faiss() -> Any:
    from inquire.index.ann import _faiss as load

    return load()


@dataclass(frozen=True)
class ScaleSettings:
    """How a partitioned index is built and searched.

    ``nlist``: IVF lists (0: chosen from the row count by :func:`default_nlist`); ``pq_m``:
    PQ sub-quantizers (bytes of code per row, 8 bits each; must divide ``dim``);
    ``partition_rows``: rows per partition (a partition closes once it holds at least this
    many; partitions hold whole shards); ``train_size``: rows sampled to train the quantizer
    (0: ``max(64 * nlist, 20000)``); ``nprobe``: lists probed per query unfiltered;
    ``rescore``: candidates per result taken from faiss and rescored exactly (``r``: ``k x
    r`` candidates); ``exact_below``: a mask selecting at most this many rows is searched
    exactly.
    """

    nlist: int = 0
    pq_m: int = 64
    partition_rows: int = 5_000_000
    train_size: int = 0
    nprobe: int = 32
    rescore: int = 10
    exact_below: int = 50_000

    def check(self, dim: int | None = None) -> ScaleSettings:
        for name in ("pq_m", "partition_rows", "nprobe", "rescore"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("nlist", "train_size", "exact_below"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if dim is not None and dim % self.pq_m:
            usual = [m for m in (8, 16, 32, 48, 64, 96, 128) if dim % m == 0]
            # no usual size divides an odd dimension: name the divisors it has
            divisors = usual or [m for m in range(1, min(dim, 128) + 1) if dim % m == 0]
            raise InputError(
                f"pq_m {self.pq_m} does not divide the embedding dimension {dim}; pass "
                f"--pq-m with one of {', '.join(map(str, divisors))} (bytes per photo)"
            )
        return self

    def factory(self, nlist: int) -> str:
        return f"IVF{nlist},PQ{self.pq_m}x8"


def default_nlist(n_rows: int) -> int:
    """IVF lists for ``n_rows`` rows: the power of two nearest ``sqrt(n_rows)``, 64..4096.

    More lists make each probe cheaper but training (k-means over ``64 x nlist`` rows) and
    adding (each row against every centroid) dearer; 4096 keeps a 10M-row build within
    minutes on two cores (docs/scale.md).
    """
    if n_rows <= 0:
        return 64
    return int(min(4096, max(64, 2 ** round(math.log2(math.sqrt(n_rows))))))


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


# -- exact scores -------------------------------------------------------------------------------


def exact_scores(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``(nq, n) float32`` exact scores: float64 dot products rounded to float32.

    ``vectors (n, d)`` (float16 rows of the store), ``queries (nq, d) float32``. The same
    value :func:`inquire.index.topk.brute_force` ranks by, whatever rows share the call.
    """
    x = np.asarray(vectors, np.float64)
    q = np.asarray(queries, np.float64)
    return (q @ x.T).astype(np.float32)


def screen_margin(queries: np.ndarray, dim: int) -> np.ndarray:
    """``(nq,)`` bound on |float32 GEMM score - exact score| for unit-norm rows (x4 slack)."""
    qn = np.linalg.norm(np.asarray(queries, np.float64), axis=1)
    return (4.0 * (dim + 2) * 2.0**-24 * qn * 1.01 + 1e-7).astype(np.float32)


class RowSource(Protocol):
    """Rows of an embedding store (:class:`inquire.embed.store.EmbeddingStore`)."""

    shards: list[np.ndarray]
    offsets: np.ndarray
    dim: int

    def __len__(self) -> int: ...


def gather(store: RowSource, rows: np.ndarray) -> np.ndarray:
    """``(len(rows), d)`` rows of the store, in the order given, in the store's dtype."""
    rows = np.asarray(rows, np.int64)
    out = np.empty((len(rows), store.dim), store.shards[0].dtype)
    if len(rows) == 0:
        return out
    shard_of = np.searchsorted(store.offsets, rows, side="right") - 1
    for s in np.unique(shard_of):
        sel = np.flatnonzero(shard_of == s)
        local = rows[sel] - int(store.offsets[s])
        order = np.argsort(local, kind="stable")  # forward reads through the memory map
        out[sel[order]] = store.shards[int(s)][local[order]]
    return out


def _best(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate scoring at least the k-th best of ``scores (m,)`` (ties kept)."""
    ok = ~np.isnan(scores)
    scores, rows = scores[ok] + np.float32(0.0), rows[ok]
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        scores, rows = scores[keep], rows[keep]
    return scores, rows


def exact_over_rows(
    store: RowSource, queries: np.ndarray, rows: np.ndarray, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact top ``k`` (ties kept) of each query among ``rows`` (global store rows).

    Screens with a float32 product block by block, keeps every row within
    :func:`screen_margin` of the k-th screened score, and rescores those exactly
    (:func:`exact_scores`). Returns per query ``(rows (m,), scores (m,) float32)``.
    """
    nq = len(queries)
    if len(rows) == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(nq)]
    q32 = np.ascontiguousarray(queries, np.float32)
    margin = screen_margin(q32, store.dim)
    keep_s: list[list[np.ndarray]] = [[] for _ in range(nq)]
    keep_r: list[list[np.ndarray]] = [[] for _ in range(nq)]
    bound = np.full(nq, -np.inf, np.float32)
    for lo in range(0, len(rows), EXACT_BLOCK_ROWS):
        part = rows[lo : lo + EXACT_BLOCK_ROWS]
        s32 = q32 @ gather(store, part).astype(np.float32).T
        for i in range(nq):
            sel = np.flatnonzero(s32[i] >= bound[i] - margin[i])
            keep_s[i].append(s32[i, sel])
            keep_r[i].append(part[sel])
            cat = np.concatenate(keep_s[i])
            if len(cat) > 4 * k:  # tighten: the k-th screened score so far
                kth = np.partition(cat, len(cat) - k)[len(cat) - k]
                bound[i] = max(bound[i], kth)
                rr = np.concatenate(keep_r[i])
                keep = cat >= bound[i] - margin[i]
                keep_s[i], keep_r[i] = [cat[keep]], [rr[keep]]
    out = []
    for i in range(nq):
        s = np.concatenate(keep_s[i])
        r = np.concatenate(keep_r[i])
        if len(s) > k:
            kth = np.partition(s, len(s) - k)[len(s) - k]
            keep = s >= kth - margin[i]
            r = r[keep]
        exact = exact_scores(gather(store, r), q32[i : i + 1])[0]
        s_best, r_best = _best(exact, r, k)
        out.append((r_best, s_best))
    return out


# -- the index folder --------------------------------------------------------------------------


@dataclass
class PartitionInfo:
    """Partition ``number`` holds store rows ``[lo, hi)``."""

    number: int
    lo: int
    hi: int

    @property
    def file(self) -> str:
        return f"part_{self.number}.faiss"


@dataclass
class Manifest:
    """What ``manifest.json`` records."""

    dim: int
    nlist: int
    factory: str
    settings: ScaleSettings
    partitions: list[PartitionInfo] = field(default_factory=list)
    trained_on: int = 0
    recall: dict[str, Any] = field(default_factory=dict)
    shards: list[list[Any]] = field(default_factory=list)  # covered shards: name, rows, mtime
    format: int = FORMAT

    @property
    def rows(self) -> int:
        return self.partitions[-1].hi if self.partitions else 0

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["settings"] = asdict(self.settings)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != FORMAT:
            raise BrokenScaleIndexError(
                f"manifest format {d.get('format')!r}, this version reads {FORMAT}"
            )
        return cls(
            dim=int(d["dim"]),
            nlist=int(d["nlist"]),
            factory=str(d["factory"]),
            settings=ScaleSettings(**d["settings"]),
            partitions=[PartitionInfo(**p) for p in d["partitions"]],
            trained_on=int(d.get("trained_on", 0)),
            recall=dict(d.get("recall") or {}),
            shards=[list(x) for x in d.get("shards") or []],
        )


def shard_signature(store: Any, rows: int) -> list[list[Any]]:
    """``[name, rows, mtime_ns]`` of the store's shards holding rows ``[0, rows)``: tells
    whether those rows are still the rows the index was built from (compaction rewrites
    them)."""
    out: list[list[Any]] = []
    for path, lo, hi in zip(store.shard_paths, store.offsets[:-1], store.offsets[1:], strict=True):
        if int(lo) >= rows:
            break
        out.append([path.name, int(hi - lo), path.stat().st_mtime_ns])
    return out


class StaleScaleIndexError(InputError):
    """The store's rows are no longer the rows the index was built from."""


class BrokenScaleIndexError(InputError):
    """An index file (manifest or partition) is missing, truncated or not an index."""


def check_current(store: Any, man: Manifest) -> None:
    """:class:`StaleScaleIndexError` unless ``store``'s first rows are the indexed rows."""
    if (
        man.dim != store.dim
        or man.rows > len(store)
        or (man.shards and shard_signature(store, man.rows) != man.shards)
    ):
        raise StaleScaleIndexError(
            f"the index covers {man.rows} rows of {man.dim}-d vectors that the store "
            f"({len(store)} rows, {store.dim}-d) no longer holds as they were (rewritten or "
            "compacted shards): rebuild the index"
        )


def read_manifest(folder: str | os.PathLike[str]) -> Manifest | None:
    """The manifest of the index in ``folder``, or None if there is none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError) as exc:
        raise BrokenScaleIndexError(
            f"index manifest {str(path)!r} is unreadable ({type(exc).__name__}: "
            f"{str(exc)[:120]}); rebuild the index"
        ) from None


def index_file_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes of the index's own files in ``folder``: manifest, quantizer, partitions (not
    the temporary file of a write in progress or killed)."""
    return sum(
        p.stat().st_size
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith((".faiss", ".json"))
    )


def write_manifest(folder: str | os.PathLike[str], man: Manifest) -> None:
    write_json(Path(folder) / MANIFEST, man.as_json())


def train(
    store: RowSource, folder: str | os.PathLike[str], settings: ScaleSettings, seed: int = 0
) -> Manifest:
    """Train the quantizer on a sample of ``store`` and start an empty index in ``folder``.

    Writes ``trained.faiss`` and a manifest with no partitions. Needs at least ``nlist``
    rows and 256 (PQ centroids per sub-quantizer)."""
    faiss = _faiss()
    settings = settings.check(store.dim)
    n = len(store)
    nlist = settings.nlist or default_nlist(n)
    if n < 256:  # 2**8 centroids per PQ sub-quantizer, whatever nlist is
        raise InputError(
            f"an IVF-PQ index needs at least 256 rows to train its codebooks, the store has "
            f"{n}; searches this small are exact without an index"
        )
    if n < nlist:
        raise InputError(
            f"an IVF-PQ index with {nlist} lists needs at least {nlist} rows to train, the "
            f"store has {n}; use a smaller nlist (at most {n}) or exact search"
        )
    size = min(n, settings.train_size or max(64 * nlist, 20_000))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=size, replace=False))
    sample = np.ascontiguousarray(gather(store, rows), np.float32)
    factory = settings.factory(nlist)
    index = faiss.index_factory(store.dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    # Polysemous training (a Hamming-order of the codes for a search mode not used here) cost
    # more than all the rest of training together (measured); PQ k-means in 2..8 dims is
    # memory-bound, so it sees at most 64 rows per centroid, 15 rounds: the rescoring makes
    # up for the small loss in code quality.
    ivf.do_polysemous_training = False
    ivf.pq.cp.niter = PQ_TRAIN_ITERATIONS
    ivf.pq.cp.max_points_per_centroid = PQ_TRAIN_POINTS_PER_CENTROID
    log.info("training %s on %d of %d rows", factory, size, n)
    index.train(sample)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / TRAINED) as tmp:
        faiss.write_index(index, str(tmp))
    man = Manifest(store.dim, nlist, factory, settings, [], size)
    write_manifest(folder, man)
    return man


def plan_partitions(
    offsets: Sequence[int], start_row: int, partition_rows: int, first_number: int
) -> list[PartitionInfo]:
    """Ranges of whole shards from ``start_row`` on, each closing at ``partition_rows``."""
    ends = [int(o) for o in offsets[1:] if int(o) > start_row]
    out: list[PartitionInfo] = []
    lo = start_row
    for end in ends:
        if end - lo >= partition_rows:
            out.append(PartitionInfo(first_number + len(out), lo, end))
            lo = end
    if ends and lo < ends[-1]:
        out.append(PartitionInfo(first_number + len(out), lo, ends[-1]))
    return out


def encode_partition(
    store: RowSource,
    folder: str | os.PathLike[str],
    part: PartitionInfo,
    existing: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``part_{number}.faiss`` holding the codes of rows ``[lo, hi)``.

    ``existing``: the partition file holds a prefix of these rows already (an append); only
    the rows past it are encoded. Returns the rows encoded. The file is replaced atomically,
    so an interrupted run leaves the old partition (or none) in place.
    """
    faiss = _faiss()
    folder = Path(folder)
    path = folder / part.file
    if existing and path.is_file():
        index = faiss.read_index(str(path))
    else:
        index = faiss.read_index(str(folder / TRAINED))
    start = part.lo + int(index.ntotal)
    done = 0
    for lo in range(start, part.hi, ADD_BLOCK_ROWS):
        hi = min(part.hi, lo + ADD_BLOCK_ROWS)
        block = np.ascontiguousarray(gather(store, np.arange(lo, hi)), np.float32)
        index.add_with_ids(block, np.arange(lo - part.lo, hi - part.lo, dtype=np.int64))
        done += hi - lo
        if progress is not None:
            progress(hi - lo)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return done


# -- searching one partition -------------------------------------------------------------------


@dataclass
class Route:
    """How every partition answers one search (decided once, from the whole selection)."""

    exact: bool
    nprobe: int
    candidates: int  # faiss results per query (k x rescore)


def choose_route(man: Manifest, k: int, selected: int, total: int, nprobe: int | None) -> Route:
    """The router: exact over the selection when it is small, IVF with a widened nprobe else."""
    s = man.settings
    if selected <= max(s.exact_below, k):
        return Route(True, 0, 0)
    base = min(man.nlist, nprobe or s.nprobe)
    share = selected / max(total, 1)
    return Route(False, widened_nprobe(base, man.nlist, share), k * s.rescore)


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
        if int(self.ivf.d) != int(store.dim) or int(self.index.ntotal) < info.hi - info.lo:
            raise BrokenScaleIndexError(
                f"partition file {str(path)!r} holds {int(self.index.ntotal)} rows of "
                f"{int(self.ivf.d)}-d codes, not rows {info.lo}..{info.hi} of {store.dim}-d; "
                "rebuild the index"
            )
        self._lock = threading.Lock()

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
        rows_all = np.arange(lo, hi) if sel_rows is None else sel_rows
        if route.exact:
            return exact_over_rows(self.store, queries, rows_all, k)
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
            fixed = exact_over_rows(self.store, q32[short], rows_all, k)
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


class LocalBackend:
    """Every partition loaded in this process, searched one after the other."""

    def __init__(self, store: RowSource, folder: str | os.PathLike[str], man: Manifest):
        self.parts = [Partition(store, folder, p) for p in man.partitions]

    def search(
        self, queries: np.ndarray, k: int, masks: list[np.ndarray | None], route: Route
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        return [p.search(queries, k, m, route) for p, m in zip(self.parts, masks, strict=True)]

    def code_bytes(self) -> int:
        return sum(p.code_bytes() for p in self.parts)

    def close(self) -> None:
        self.parts = []


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
            backend = LocalBackend(store, folder, man)
        row_ids = None if ids is None else np.asarray(ids, np.int64)
        return cls(store, Path(folder), man, row_ids, backend)

    def route(self, k: int, mask: np.ndarray | None, nprobe: int | None = None) -> Route:
        n = self.manifest.rows
        selected = n if mask is None else int(np.count_nonzero(mask[:n]))
        return choose_route(self.manifest, k, selected, n, nprobe)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        mask: np.ndarray | None = None,
        nprobe: int | None = None,
        exact: bool = False,
        ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of ``queries (nq, d) float32`` among rows where ``mask (N,) bool`` is
        True (None: all), as ``scores (nq, k) float32`` (exact scores) and image ``ids (nq,
        k) int64``, padded with ``-inf`` / ``-1``. Rows past the index (added to the store
        since it was last updated) are searched exactly. ``exact``: force the exact route.
        ``ids (N,) int64``: image id per row for this search (default :attr:`ids`)."""
        k = check_k(k)
        if mask is not None and len(mask) != len(self.store):
            raise InputError(f"mask of {len(mask)} rows for a store of {len(self.store)} rows")
        q = np.ascontiguousarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != self.manifest.dim:
            raise InputError(f"queries of shape {q.shape}; expected (nq, {self.manifest.dim})")
        n_index = self.manifest.rows
        route = self.route(k, mask, nprobe)
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


# -- building ----------------------------------------------------------------------------------


class PartitionRunner(Protocol):
    """Encodes a list of partitions (in this process, or as Ray Data tasks)."""

    def __call__(
        self,
        store_root: str,
        folder: str,
        parts: list[PartitionInfo],
        existing: set[int],
        progress: Callable[[int], None] | None,
    ) -> None: ...


def run_local(
    store_root: str,
    folder: str,
    parts: list[PartitionInfo],
    existing: set[int],
    progress: Callable[[int], None] | None,
) -> None:
    """Encode ``parts`` one after the other in this process."""
    from inquire.embed.store import EmbeddingStore

    store = EmbeddingStore(store_root)
    for p in parts:
        encode_partition(store, folder, p, existing=p.number in existing, progress=progress)


def build(
    store: Any,
    folder: str | os.PathLike[str],
    settings: ScaleSettings | None = None,
    *,
    rebuild: bool = False,
    runner: PartitionRunner | None = None,
    progress: ProgressFn | None = None,
    seed: int = 0,
) -> Manifest:
    """Build or extend the partitioned index of ``store`` (an EmbeddingStore) in ``folder``.

    Trains the quantizer if the folder has none (or ``rebuild``), then encodes every store row
    not in a partition yet: the last partition grows until it holds ``partition_rows`` rows,
    further rows open new partitions. Each finished partition is recorded in the manifest at
    once, so an interrupted build resumes where it stopped. ``runner``: how partitions are
    encoded (:func:`run_local` by default; :func:`inquire.index.ray_serve.run_ray` runs them
    as Ray Data tasks in parallel). ``progress(done_rows, total_rows)``.
    """
    folder = Path(folder)
    # Temporary files of a build that was killed (SIGKILL, power loss) while writing; the
    # caller is the collection's one writer, so none of them is being written now.
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
        tmp.unlink(missing_ok=True)
    man = None if rebuild else read_manifest(folder)
    if (
        man is not None
        and settings is not None
        and _build_keys(settings) != _build_keys(man.settings)
    ):
        raise InputError(
            f"the index in {str(folder)!r} was built with {_build_keys(man.settings)}, not "
            f"{_build_keys(settings)}; rebuild it to change how it is built"
        )
    if man is not None:
        check_current(store, man)
    if man is None:
        if rebuild and folder.is_dir():
            # The manifest first: a rebuild killed from here on leaves no manifest naming
            # deleted partitions (searches are exact until the rebuild is run again).
            (folder / MANIFEST).unlink(missing_ok=True)
            for p in folder.glob("*.faiss"):
                p.unlink()
        man = train(store, folder, settings or ScaleSettings(), seed=seed)
    elif settings is not None:
        man.settings = replace(
            man.settings,
            nprobe=settings.nprobe,
            rescore=settings.rescore,
            exact_below=settings.exact_below,
        )
    parts = list(man.partitions)
    old_rows = man.rows
    existing: set[int] = set()
    first = len(parts)
    start = old_rows
    if parts and start < len(store) and parts[-1].hi - parts[-1].lo < man.settings.partition_rows:
        last = parts.pop()  # still open: the new rows go on growing it
        start, first = last.lo, last.number
        existing.add(last.number)
    plan = plan_partitions(store.offsets, start, man.settings.partition_rows, first)
    total = len(store) - old_rows
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    if runner is not None and plan:  # all at once, in parallel; recorded when all are written
        runner(str(store.root), str(folder), plan, existing, None)
        advance(total)
        plan_done = plan
    else:
        plan_done = []
        for part in plan:  # one by one, each recorded at once: a rerun resumes after it
            run_local(str(store.root), str(folder), [part], existing, advance)
            plan_done.append(part)
            man.partitions = parts + plan_done
            man.shards = shard_signature(store, man.rows)
            write_manifest(folder, man)
    man.partitions = parts + plan_done
    man.shards = shard_signature(store, man.rows)
    write_manifest(folder, man)
    return man


def _build_keys(s: ScaleSettings) -> dict[str, int]:
    return {"nlist": s.nlist, "pq_m": s.pq_m, "partition_rows": s.partition_rows}
