"""Search a collection: text, an example image, or both, with filters inside the ranking.

Ranking rule: score descending, ties by image id ascending (the project's one rule, applied
by :mod:`inquire.index.topk`). :class:`CollectionSearcher` is the collection's
:class:`~inquire.index.base.Searcher`: the filters inside the ranking, faiss or exact behind.

Query + example: the text embedding and each example embedding are L2-normalised, summed and
normalised again, so every part weighs the same whatever its length; an example that belongs
to the collection uses its stored vector (no encoder call), any other image file is embedded.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from inquire.collection.ann import DEFAULT_NPROBE
from inquire.collection.filters import Filters
from inquire.collection.store import TAXON_COLUMNS, Collection, CollectionIndex
from inquire.embed.base import Encoder, l2_normalize
from inquire.errors import InputError
from inquire.index.base import check_k, check_mask
from inquire.index.ivfpq import ScaleIndex
from inquire.index.topk import padded, topk

if TYPE_CHECKING:
    from inquire.rerank.cache import ScoreCache

log = logging.getLogger(__name__)

# Below this share of selected rows, gather the selected rows; above it, score every row and
# mask (a gather from a memory map costs more per row than a streamed pass).
GATHER_BELOW = 0.25
BLOCK_ROWS = 65536
# Dense passes convert and score this many rows at a time: 4096 x 512 float32 (8 MiB) stays in
# cache between the conversion and the product, ~3-5x faster than 64k-row blocks here.
DENSE_BLOCK_ROWS = 4096
DENSE_THREADS = 1
# Dense passes over at least this many rows convert float16 with torch (~10x numpy's speed).
TORCH_FROM_ROWS = 200_000
RESULT_COLUMNS = ["rank", "score", "image_id", "path", "taxon", "date", "lat", "lon"]


def _scores_dense(index: CollectionIndex, q: np.ndarray) -> np.ndarray:
    """``(nq, N) float32`` inner products of every row with ``q (nq, d)``."""
    store = index.store
    n = len(store)
    out = np.empty((q.shape[0], n), np.float32)
    torch: Any = None
    if n >= TORCH_FROM_ROWS:
        try:
            import torch
        except ImportError:  # numpy does the same, only slower
            torch = None
    if torch is not None:
        # The pass is memory-bound: one thread is nearly as fast as two on a quiet machine and
        # stays fast when the other core is busy, where two threads stall each other (4-20x
        # slower, measured). The previous setting is restored afterwards.
        prev = torch.get_num_threads()
        torch.set_num_threads(DENSE_THREADS)
        try:
            buf = torch.empty((DENSE_BLOCK_ROWS, store.dim), dtype=torch.float32)
            qt = torch.from_numpy(np.ascontiguousarray(q.T))
            for start, block in store.iter_blocks(DENSE_BLOCK_ROWS):
                b = len(block)
                with warnings.catch_warnings():  # the memory map is read-only; torch only reads
                    warnings.simplefilter("ignore", UserWarning)
                    src = torch.from_numpy(np.ascontiguousarray(block))
                buf[:b].copy_(src)
                out[:, start : start + b] = torch.mm(buf[:b], qt).numpy().T
        finally:
            torch.set_num_threads(prev)
        return out
    for start, block in store.iter_blocks(DENSE_BLOCK_ROWS):
        out[:, start : start + len(block)] = (np.asarray(block, np.float32) @ q.T).T
    return out


@dataclass
class CollectionSearcher:
    """A collection's filtered search, as a :class:`~inquire.index.base.Searcher`.

    ``search(queries, k, mask)`` returns the top ``k`` among the valid rows where ``mask``
    (the filters, ``(N,) bool``; None: every valid row) is True, as ``scores (nq, k)
    float32`` and image ``ids (nq, k) int64`` under the one ranking rule (score desc, id
    asc; NaN scores never match), padded with id ``-1`` / score ``-inf`` after the
    ``min(k, rows passing the mask)`` matches.

    With the partitioned IVF-PQ index (setting ``"scale"``, :mod:`inquire.index.ivfpq`) and
    ``exact`` False, it answers: exact over a selection of at most its ``exact_below`` rows,
    else ``k x rescore`` faiss candidates (the selection inside faiss, ``nprobe`` widened as
    the selected share falls) rescored exactly, so every score returned is exact. With a
    single faiss index (``index.ann``) and ``exact`` False, faiss searches with the mask as
    its ID selector (``nprobe`` lists per query for IVF indexes, default
    :data:`~inquire.collection.ann.DEFAULT_NPROBE`); a query for which the probed lists hold
    fewer selected rows than it should return is answered exactly instead. Otherwise the
    search is exact: over a small share of the rows, a gather of those rows; over a large
    share, every row scored (``screen`` "auto", "bf16", "off": exact search's bfloat16
    screening where it pays, the same result).
    """

    index: CollectionIndex
    exact: bool = False
    nprobe: int | None = None
    screen: str = "auto"

    def search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of ``queries (nq, d) float32`` among valid rows where ``mask`` allows."""
        index = self.index
        q = np.asarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != index.store.dim:
            raise InputError(
                f"query shape {q.shape} does not match the collection's {index.store.dim}-d "
                "embeddings; embed queries with the collection's model"
            )
        if not np.isfinite(q).all():
            raise InputError(
                "queries contain NaN or infinite values; check the text encoder's output"
            )
        k = check_k(k)
        if self.nprobe is not None and self.nprobe < 1:
            raise InputError(f"nprobe must be at least 1, got {self.nprobe}")
        mask = check_mask(mask, len(index.valid))
        mask = index.valid if mask is None else mask & index.valid
        rows = np.flatnonzero(mask)
        if len(rows) == 0 or index.ann is None or self.exact:
            return self._exact(q, k, rows, mask)
        ann = index.ann
        if isinstance(ann, ScaleIndex):
            # The partitioned IVF-PQ index (setting "scale"): its own router (exact over a
            # small selection, faiss with the selection inside otherwise) and exact scores.
            scores, ids = ann.search(q, k, mask, nprobe=self.nprobe, ids=index.image_id)
            return scores, ids
        nlist = ann.nlist
        params = {"nprobe": float(min(self.nprobe or DEFAULT_NPROBE, nlist))} if nlist else None
        scores, ids = ann.search(q, k, mask, params=params)
        short = np.flatnonzero((ids >= 0).sum(axis=1) < min(k, len(rows)))
        if len(short):
            # Too few selected rows in the probed lists: a rare filter, cheap to do exactly.
            scores[short], ids[short] = self._exact(q[short], k, rows, mask)
        return scores, ids

    def results(self, query: np.ndarray, k: int, mask: np.ndarray | None = None) -> pd.DataFrame:
        """The top ``k`` of one ``query (d,)`` (:meth:`search`) as a result table
        (:func:`results_frame`; the padding left out, so ``min(k, matches)`` rows)."""
        # No more results than rows: memory follows the collection, not k.
        k = min(check_k(k), max(len(self.index), 1))
        scores, ids = self.search(query[None, :], k, mask)
        keep = ids[0] >= 0
        return results_frame(self.index, ids[0][keep], scores[0][keep])

    def _exact(
        self, q: np.ndarray, k: int, rows: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` of ``q (nq, d)`` among ``rows`` (ascending, all valid; ``mask`` is
        the same selection as ``(N,) bool``)."""
        from inquire.index.exact import ExactIndex, check_screen

        index = self.index
        if len(rows) == 0:
            return padded(np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), k)
        depth = min(k, len(rows))
        dense = len(rows) >= GATHER_BELOW * len(index)
        exact = ExactIndex(index.store, screen=check_screen(self.screen))
        if dense and exact.screens(q, depth, mask):
            # Where bfloat16 screening pays: exact search's streamed pass, screened, masked.
            return padded(*exact.search(q, depth, mask), k)
        if not dense:
            scores = np.empty((len(q), len(rows)), np.float32)
            for lo in range(0, len(rows), BLOCK_ROWS):
                part = rows[lo : lo + BLOCK_ROWS]
                scores[:, lo : lo + len(part)] = (index.vectors(part) @ q.T).T
        else:
            scores = _scores_dense(index, q)[:, rows]
        return topk(scores, index.image_id[rows], k)


@dataclass
class SearchRequest:
    """One search: text and/or examples, filters, depth, optional reranking."""

    text: str = ""
    like: Sequence[str | int] = ()
    filters: Filters = field(default_factory=Filters)
    k: int = 100
    rerank: str | None = None
    from_k: int = 200
    exact: bool = False  # ignore the collection's faiss index
    nprobe: int | None = None  # IVF lists probed per query (faiss path only)
    screen: str = "auto"  # bfloat16 screening of exact search: auto, bf16, off (same result)
    # How a local reranker model runs (see inquire.rerank.RerankOptions).
    rerank_device: str = "cpu"
    rerank_precision: str = "fp32"
    rerank_batch_size: int = 8
    rerank_protocol: str | None = None  # None: the default (inquire.rerank.protocol)

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "like": [str(x) for x in self.like],
            "filters": self.filters.as_dict(),
        }


def query_vector(
    index: CollectionIndex, encoder: Encoder | None, text: str, like: Sequence[str | int] = ()
) -> np.ndarray:
    """``(d,) float32`` L2-normalised query: normalised sum of the text and example vectors.

    ``like`` items: an image id of the collection, or a path (a collection file uses its
    stored vector; any other image file is embedded with ``encoder``).
    """
    parts: list[np.ndarray] = []
    coll = index.collection
    if text.strip():
        if encoder is None:
            raise InputError("a text query needs the collection's encoder")
        parts.append(l2_normalize(encoder.encode_text([text]))[0])
    for item in like:
        image_id = _as_image_id(coll, item)
        if image_id is not None:
            row = int(index.rows_of([image_id])[0])
            if row < 0:
                raise InputError(
                    f"--like {item!r}: image {image_id} is not (or no longer) in collection "
                    f"{coll.name!r}; pass an id shown in its search results or an image file"
                )
            parts.append(l2_normalize(index.vectors(np.array([row])))[0])
            continue
        path = Path(str(item)).expanduser()
        if not path.is_file():
            raise InputError(
                f"--like {item!r} is neither an image id of collection {coll.name!r} nor an "
                "image file; pass an id from the results or a path to a photo"
            )
        if encoder is None:
            raise InputError("an example image outside the collection needs the encoder")
        from inquire.collection.embedding import embed_files

        vec, ok, reasons = embed_files(encoder, [path], batch_size=1, workers=0)
        if not ok[0]:
            raise InputError(
                f"--like {str(path)!r} is not an image that can be read ({reasons[0]}); "
                "pass a JPEG/PNG photo or an image id of the collection"
            )
        parts.append(l2_normalize(vec)[0])
    if not parts:
        raise InputError("nothing to search for: give a text query, --like, or both")
    return l2_normalize(np.sum(parts, axis=0)[None, :])[0]


def _as_image_id(coll: Collection, item: str | int) -> int | None:
    if isinstance(item, (int, np.integer)):
        return int(item)
    s = str(item).strip()
    if re.fullmatch(r"-?[0-9]+", s) and not Path(s).exists():  # not "--5", not "٣"
        return int(s)
    return coll.image_id_for_path(s)


def results_frame(index: CollectionIndex, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """The result table: rank (1-based), score, image_id, path, taxon, date, lat, lon, ..."""
    info = index.collection.images(ids.tolist())
    df = pd.DataFrame(
        {
            "rank": np.arange(1, len(ids) + 1),
            "score": scores.astype(np.float64),
            "image_id": ids.astype(np.int64),
            "path": info["abspath"].to_numpy(),
            "taxon": info["taxon"].to_numpy(),
            "date": info["date"].to_numpy(),
            "lat": info["lat"].to_numpy(np.float64, na_value=np.nan),
            "lon": info["lon"].to_numpy(np.float64, na_value=np.nan),
        }
    )
    for c in TAXON_COLUMNS[1:]:
        df[c] = info[c].to_numpy()
    df["date_source"] = info["date_source"].to_numpy()
    return df


def rerank_results(
    df: pd.DataFrame,
    text: str,
    reranker_id: str,
    cache: ScoreCache | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 8,
    protocol: str | None = None,
) -> pd.DataFrame:
    """Re-order ``df`` by ``load_reranker(reranker_id).score(text, images)`` (desc, ties by
    the first-stage rank); adds ``rerank_score`` and keeps the first-stage ``score``.

    ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``), ``precision`` (``fp32``, ``bf16``,
    ``fp16``) and ``batch_size`` (images per forward pass) are how a local model runs;
    ``protocol`` is the reranking protocol (None: the default, ``inquire-2024``).

    Scores are cached (default: the shared :class:`~inquire.rerank.cache.ScoreCache`) under
    the file's path, size and modification time, so a changed photo is scored again and two
    collections never share an entry. Images the reranker failed on rank last.
    """
    from inquire.rerank import load_reranker
    from inquire.rerank.cache import ScoreCache, score_candidates

    if not text.strip():
        raise InputError("--rerank needs a text query to score the images against")
    reranker = load_reranker(
        reranker_id, device=device, precision=precision, batch_size=batch_size, protocol=protocol
    )
    paths = [Path(p) for p in df["path"]]
    keys = []
    for p in paths:
        st = p.stat()
        keys.append(f"file:{p.resolve()}@{st.st_size}:{st.st_mtime_ns}")
    # A cache opened here is closed here; a caller's cache stays open for its next use.
    with ExitStack() as stack:
        if cache is None:
            cache = stack.enter_context(ScoreCache())
        scores = score_candidates(
            reranker, text, keys, lambda positions: [paths[i] for i in positions], cache=cache
        )
    failed = int(np.isnan(scores).sum())
    if failed:
        log.warning(
            "reranker %s failed on %d of %d images; ranked last", reranker_id, failed, len(df)
        )
    out = df.assign(rerank_score=np.where(np.isnan(scores), -np.inf, scores), first_rank=df["rank"])
    out = out.sort_values(["rerank_score", "first_rank"], ascending=[False, True], kind="stable")
    out["rank"] = np.arange(1, len(out) + 1)
    return out.reset_index(drop=True)


def search(
    coll: Collection | CollectionIndex,
    request: SearchRequest,
    encoder: Encoder | None = None,
) -> pd.DataFrame:
    """Run ``request`` on a collection (or an already-loaded index).

    Returns the result table (:func:`results_frame`), at most ``request.k`` rows.
    """
    index = coll if isinstance(coll, CollectionIndex) else coll.index()
    if encoder is None and (
        request.text.strip() or any(_needs_encoder(index, x) for x in request.like)
    ):
        from inquire.embed.models import load_encoder

        encoder = load_encoder(index.collection.model_id)
    q = query_vector(index, encoder, request.text, request.like)
    depth = max(request.k, request.from_k) if request.rerank else request.k
    searcher = CollectionSearcher(index, request.exact, request.nprobe, request.screen)
    df = searcher.results(q, depth, request.filters.mask(index))
    if request.rerank:
        df = rerank_results(
            df,
            request.text,
            request.rerank,
            device=request.rerank_device,
            precision=request.rerank_precision,
            batch_size=request.rerank_batch_size,
            protocol=request.rerank_protocol,
        )
    return df.head(request.k).reset_index(drop=True)


def _needs_encoder(index: CollectionIndex, item: str | int) -> bool:
    return _as_image_id(index.collection, item) is None


def open_search_index(name: str, root: str | os.PathLike[str] | None = None) -> CollectionIndex:
    """Shortcut: ``open_collection(name, root).index()``."""
    from inquire.collection.store import open_collection

    return open_collection(name, root).index()
