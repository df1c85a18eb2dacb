"""INQUIRE-Fullrank: embed the queries, search all images, evaluate.

``fullrank_topk`` is the retrieval stage (text embeddings -> exact or approximate search ->
a :class:`~inquire.run.Run` of the top ``k_max``), with a parquet cache so repeated
evaluations and the reranking stage reuse earlier searches. ``evaluate_fullrank`` adds
loading queries and annotations, mapping store ids to the benchmark's image ids, the metrics
and the saved results.

Image ids: a store whose metadata carries ``image_id`` is used as is. INQUIRE's published
embeddings carry only ``image_path`` (no ``.jpg``); their rows are then matched to the
annotations' ``image_path`` (``.jpg`` removed) and get the annotated image id. Rows not in
the annotations are relevant to no query; they get ``UNANNOTATED_ID_BASE + row`` so that every
ranked image keeps a distinct id.

Top-k cache: ``config.cache_dir("topk")/<key>.parquet`` with columns
``query_text, k_max, rank, image_id, score`` plus ``<key>.json`` describing the key. The key
is the encoder's :class:`~inquire.cache.OutputKey` (model id, revision, precision) digested
with the embedding folder's identity (resolved path, row count, fingerprint of sizes, mtimes
and manifest) and the searcher (exact, or index name + its build fingerprint + search
parameters). An encoder without a revision is not cached. An exact search cached for a larger
``k_max`` serves smaller ones (the ranking rule is deterministic).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inquire import config
from inquire._io import atomic_path, write_json
from inquire.cache import KEY_VERSION, OutputKey
from inquire.data.qrels import Qrels
from inquire.embed.base import Encoder
from inquire.embed.store import EmbeddingStore, path_key
from inquire.errors import InputError
from inquire.eval.evaluate import EvalResult, evaluate
from inquire.index.base import Searcher
from inquire.run import Run

log = logging.getLogger(__name__)

UNANNOTATED_ID_BASE = 10**12
CACHE_COLUMNS = ["query_text", "k_max", "rank", "image_id", "score"]
CACHE_VERSION = 2


# --------------------------------------------------------------------------------------------
# Image ids of store rows
# --------------------------------------------------------------------------------------------


def store_has_image_ids(store: EmbeddingStore) -> bool:
    """Whether the store's metadata files carry an ``image_id`` column."""
    return "image_id" in pq.read_schema(store.metadata_paths[0]).names


def check_unique_ids(store: EmbeddingStore) -> None:
    """A benchmark store lists each image once: a repeated ``image_id`` in its metadata is an
    :class:`InputError` naming the metadata file(s) (not the run the search would make)."""
    if not store_has_image_ids(store):
        return
    ids = store.ids
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts == 1).all():
        return
    dup = int(uniq[counts > 1][0])
    rows = np.flatnonzero(ids == dup)
    shard = np.searchsorted(store.offsets, rows, side="right") - 1
    files = sorted({str(store.metadata_paths[int(s)]) for s in shard})
    raise InputError(
        f"the embedding metadata lists image_id {dup} {len(rows)} times (in "
        f"{', '.join(repr(f) for f in files)}; {int((counts > 1).sum())} id(s) repeated in "
        f"all): each image must have one id; fix or regenerate those metadata files"
    )


def _drop_leading(keys: pd.Series, n: int) -> pd.Series:
    """``a/b/c`` -> ``b/c`` for ``n = 1``; keys with no more than ``n`` components -> NaN."""
    if n == 0:
        return keys
    parts = keys.str.split("/", n=n)
    return parts.map(lambda p: p[n] if len(p) > n else None)


def _unique_keys(keys: pd.Series) -> pd.Series:
    """``keys`` with every key that occurs more than once replaced by NaN (ambiguous)."""
    return keys.where(~keys.duplicated(keep=False))


def image_ids_by_path(store: EmbeddingStore, paths: Mapping[int, str]) -> np.ndarray:
    """``(N,) int64`` benchmark image id of every store row, by matching image paths.

    ``paths``: image id -> image path as in INQUIRE's annotations (``train/.../x.jpg``).
    Paths are compared as :func:`~inquire.embed.store.path_key` keys (no extension). When no
    path matches as it is, the paths are
    aligned on their last components: an embedding of the ``train/`` folder itself records
    ``<taxon dir>/x.jpg`` where the annotations say ``train/<taxon dir>/x.jpg`` (and an
    embedding of the folder above it records one component more). The number of leading
    components dropped (from the annotations' or the store's paths) is the one that matches
    most rows; paths that become ambiguous are not matched. Unmatched rows get
    ``UNANNOTATED_ID_BASE + row``. Raises when no annotated path is found in the store.
    """
    if not paths:
        raise InputError(
            f"the embeddings in {str(store.root)!r} carry no image_id column, so their rows "
            f"must be matched to the annotations by image_path, but the annotations have no "
            f"image_path column; use INQUIRE's annotations CSV (query_id, image_id, image_path)"
        )
    store_paths = pd.Series(path_key(store.metadata["image_path"]), dtype=object)
    ann_ids = np.fromiter(paths.keys(), np.int64, len(paths))
    ann_paths = pd.Series(path_key(pd.Series(list(paths.values()), dtype=object)), dtype=object)

    def attempt(drop_ann: int, drop_store: int) -> pd.Series:
        ann_keys = _drop_leading(ann_paths, drop_ann)
        keys = ann_keys if drop_ann == 0 else _unique_keys(ann_keys)
        ok = keys.notna().to_numpy()
        wanted = pd.Series(ann_ids[ok], index=pd.Index(keys[ok]))
        wanted = wanted[~wanted.index.duplicated()]
        mine = _drop_leading(store_paths, drop_store)
        mine = mine if drop_store == 0 else _unique_keys(mine)
        return mine.map(wanted)

    matched = attempt(0, 0)
    if not matched.notna().any():
        # Align on trailing components (bounded by the deepest path; a few string passes).
        depth = int(ann_paths.str.count("/").max())
        store_depth = int(store_paths.str.count("/").max())
        best, how = matched, (0, 0)
        for drop_ann, drop_store in [
            *((d, 0) for d in range(1, depth + 1)),
            *((0, d) for d in range(1, store_depth + 1)),
        ]:
            trial = attempt(drop_ann, drop_store)
            if int(trial.notna().sum()) > int(best.notna().sum()):
                best, how = trial, (drop_ann, drop_store)
        if best.notna().any():
            log.info(
                "matched embedding paths to annotated paths after dropping %d leading "
                "component(s) of the annotations' paths and %d of the embeddings' paths",
                *how,
            )
        matched = best
    hit = matched.notna().to_numpy()
    if not hit.any():
        raise InputError(
            f"none of the {len(paths)} annotated image paths (e.g. {next(iter(paths.values()))!r}) "
            f"occurs in the embeddings' metadata (e.g. {store_paths.iloc[0]!r}), not even when "
            f"aligned on their last path components; the embeddings and the annotations belong "
            f"to different collections"
        )
    n_missing = len(set(ann_ids.tolist())) - int(hit.sum())
    if n_missing > 0:
        log.warning(
            "%d of %d annotated images are not in the embeddings at %s; they cannot be retrieved",
            n_missing,
            len(paths),
            store.root,
        )
    rows = np.arange(len(store), dtype=np.int64)
    ids = np.where(hit, matched.fillna(-1).to_numpy(np.int64), UNANNOTATED_ID_BASE + rows)
    return ids.astype(np.int64)


def map_run_ids(run: Run, store_ids: np.ndarray, image_ids: np.ndarray) -> Run:
    """``run`` with every store id replaced by ``image_ids[row of that store id]``."""
    order = np.argsort(store_ids, kind="stable")
    sorted_ids = store_ids[order]
    out = {}
    for q, (ids, scores) in run.items():
        pos = np.searchsorted(sorted_ids, ids)
        pos = np.minimum(pos, len(sorted_ids) - 1)
        if len(ids) and not np.array_equal(sorted_ids[pos], ids):
            raise InputError(f"query {q}: the run holds ids that are not in the embedding store")
        out[q] = (image_ids[order[pos]], scores)
    return Run(out, name=run.name)


# --------------------------------------------------------------------------------------------
# The top-k cache
# --------------------------------------------------------------------------------------------


def store_identity(store: EmbeddingStore) -> dict[str, Any]:
    """What identifies an embedding folder's contents for caching."""
    from inquire.index.ann import store_fingerprint

    return {
        "path": str(store.root.resolve()),
        "count": len(store),
        "dim": store.dim,
        "fingerprint": store_fingerprint(store),
    }


def _searcher_identity(index: Any, params: Mapping[str, float] | None) -> dict[str, Any]:
    if index is None:
        return {"kind": "exact"}
    return {
        "kind": "index",
        "name": index.name,
        "factory": index.info.get("factory"),
        "built_at": index.info.get("built_at"),
        # what the search will really use: parameters set earlier stay on a faiss index
        "params": {
            str(k): float(v)
            for k, v in sorted({**getattr(index, "params", {}), **(params or {})}.items())
        },
    }


class TopKCache:
    """Cached top-k lists of one (model key, store, searcher), one parquet file.

    ``key``: the encoder's :class:`~inquire.cache.OutputKey`; ``extra``: what else the lists
    depend on (the store's identity, the searcher). The file is named by
    :meth:`OutputKey.digest` of both and :data:`CACHE_VERSION`; a ``.json`` beside it holds
    them in clear.
    """

    def __init__(self, key: OutputKey, extra: Mapping[str, Any], root: Path | None = None) -> None:
        full = {"version": CACHE_VERSION, **extra}
        self.key = {**key.as_dict(), "key_version": KEY_VERSION, "extra": full}
        folder = root or config.cache_dir("topk")
        self.path = folder / f"{key.digest(full)}.parquet"
        self._frame: pd.DataFrame | None = None

    def _load(self) -> pd.DataFrame:
        if self._frame is None:
            if self.path.is_file():
                try:
                    self._frame = pq.read_table(self.path).to_pandas()
                except (OSError, pa.ArrowInvalid) as exc:
                    log.warning("ignoring unreadable top-k cache %s: %s", self.path, exc)
                    self._frame = None
            if self._frame is None:
                self._frame = pd.DataFrame({c: pd.Series(dtype="object") for c in CACHE_COLUMNS})
        return self._frame

    def get(
        self, texts: list[str], k_max: int, allow_larger: bool
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Cached ``text -> (ids, scores)`` (top ``k_max``) for the texts found."""
        frame = self._load()
        if frame.empty:
            return {}
        sub = frame[frame["query_text"].isin(texts)]
        sub = sub[(sub["k_max"] >= k_max) if allow_larger else (sub["k_max"] == k_max)]
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for text, g in sub.groupby("query_text", sort=False):
            g = g[g["k_max"] == g["k_max"].min()].sort_values("rank")
            out[str(text)] = (
                g["image_id"].to_numpy(np.int64)[:k_max],
                g["score"].to_numpy(np.float64)[:k_max],
            )
        return out

    def put(self, entries: dict[str, tuple[np.ndarray, np.ndarray]], k_max: int) -> None:
        """Add ``text -> (ids, scores)`` lists for ``k_max``; rewrites the file atomically."""
        if not entries:
            return
        frames = [
            pd.DataFrame(
                {
                    "query_text": [text] * len(ids),
                    "k_max": np.full(len(ids), k_max, np.int64),
                    "rank": np.arange(1, len(ids) + 1, dtype=np.int64),
                    "image_id": np.asarray(ids, np.int64),
                    "score": np.asarray(scores, np.float64),
                }
            )
            for text, (ids, scores) in entries.items()
        ]
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One writer at a time, reading what others wrote meanwhile: no lists are lost.
        with FileLock(f"{self.path}.lock"):
            self._frame = None
            old = self._load()
            keep = old[~(old["query_text"].isin(list(entries)) & (old["k_max"] == k_max))]
            frame = (
                pd.concat([keep, *frames], ignore_index=True) if len(keep) else pd.concat(frames)
            )
            frame = frame.astype({"k_max": "int64", "rank": "int64", "image_id": "int64"})
            with atomic_path(self.path) as tmp:
                pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
            write_json(self.path.with_suffix(".json"), self.key)
        self._frame = frame.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Retrieval stage
# --------------------------------------------------------------------------------------------


def check_dims(encoder: Encoder, store: EmbeddingStore) -> None:
    """Raise when the encoder's embedding size differs from the store's."""
    store.check_dim(encoder.dim, f"text embeddings of model {encoder.model_id!r}")


def search_texts(
    encoder: Encoder,
    store: EmbeddingStore,
    texts: Sequence[str],
    k: int,
    searcher: Searcher | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed ``texts`` with ``encoder`` and search ``store`` for each: the text search of
    ``inquire eval fullrank`` and of the web page.

    ``searcher``: any :class:`~inquire.index.base.Searcher` over ``store`` (default: exact
    search). Returns ``scores (len(texts), k) float32`` and ``ids (len(texts), k) int64``,
    padded with ``-inf`` / ``-1``. Raises :class:`InputError` when the encoder's embeddings
    do not fit the store.
    """
    from inquire.index.exact import ExactIndex

    q = np.asarray(encoder.encode_text(list(texts)), dtype=np.float32)
    if q.shape != (len(texts), store.dim):
        raise InputError(
            f"model {encoder.model_id!r} embeds text into {q.shape[-1] if q.ndim else 0} "
            f"dimensions (shape {q.shape} for {len(texts)} texts) but the embeddings at "
            f"{str(store.root)!r} have {store.dim}; use the model that embedded them"
        )
    return (searcher or ExactIndex(store)).search(q, k, mask)


def fullrank_topk(
    encoder: Encoder,
    queries: pd.DataFrame,
    store: EmbeddingStore,
    k_max: int,
    index: Any = None,
    index_params: Mapping[str, float] | None = None,
    cache: bool = True,
    image_ids: np.ndarray | None = None,
    name: str | None = None,
    screen: str = "auto",
) -> Run:
    """Top ``k_max`` images of ``store`` for every query, as a :class:`Run`.

    ``queries``: a frame with ``query_id`` and ``query_text``. ``index``: an
    :class:`~inquire.index.ann.AnnIndex` (with ``index_params``), or ``None`` for exact search.
    Ids in the run are the store's ids, or ``image_ids[row]`` when ``image_ids (N,)`` is
    given. Only texts missing from the cache are embedded and searched. ``screen``: bfloat16
    screening of exact search (``"auto"``, ``"bf16"``, ``"off"``; the same result).
    """
    from inquire.index.exact import ExactIndex

    missing_cols = {"query_id", "query_text"} - set(queries.columns)
    if missing_cols:
        raise InputError(f"query table lacks column(s) {sorted(missing_cols)}")
    if isinstance(k_max, bool) or not isinstance(k_max, (int, np.integer)) or k_max < 1:
        raise InputError(f"k_max must be a positive integer, got {k_max!r}")
    # Never more than the store holds: the top k_max of N rows is the top N, and asking the
    # search for more would allocate (queries x k_max) of padding (k = 10**12: terabytes).
    k_max = max(1, min(int(k_max), len(store)))
    check_dims(encoder, store)
    texts = [str(t) for t in queries["query_text"]]
    unique = list(dict.fromkeys(texts))
    store_cache = None
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    key = OutputKey.of(encoder)  # fp16/bf16 text embeddings rank slightly differently
    if cache and key.pinned:
        identity = {
            "store": store_identity(store),
            "searcher": _searcher_identity(index, index_params),
        }
        store_cache = TopKCache(key, identity)
        found = store_cache.get(unique, k_max, allow_larger=index is None)
    todo = [t for t in unique if t not in found]
    log.info("top-%d: %d cached, %d to search", k_max, len(found), len(todo))
    if todo:
        searcher: Searcher
        if index is None:
            searcher = ExactIndex(store, screen=screen)  # type: ignore[arg-type]
        else:
            searcher = index.with_params(index_params or {})
        scores, ids = search_texts(encoder, store, todo, k_max, searcher)
        fresh = {}
        for row, text in enumerate(todo):
            keep = ids[row] >= 0
            fresh[text] = (ids[row][keep], scores[row][keep].astype(np.float64))
        if store_cache is not None:
            store_cache.put(fresh, k_max)
        found.update(fresh)
    results = {}
    for qid, text in zip(queries["query_id"], texts, strict=True):
        ids_q, sc_q = found[text]
        results[int(qid)] = (ids_q, sc_q)
    run = Run(results, name=name or f"fullrank:{encoder.model_id}")
    if image_ids is not None:
        run = map_run_ids(run, store.ids, image_ids)
    return run


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def store_image_ids(store: EmbeddingStore, paths: Mapping[int, str]) -> np.ndarray | None:
    """``(N,) int64`` image id of every store row as full-rank evaluation assigns them, or
    ``None`` when the store's metadata carries ``image_id`` (its own ids are used).

    ``paths``: image id -> image path of the annotations; rows are joined to them by
    :func:`image_ids_by_path` (which raises when no annotated path is in the store).
    """
    if store_has_image_ids(store):
        return None
    return image_ids_by_path(store, paths)


def run_image_paths(store: EmbeddingStore, qrels: Qrels) -> dict[int, str]:
    """``image id -> image_path`` for the ids a full-rank run over ``store`` holds.

    The ids are the store's own when its metadata has ``image_id``, else the ids joined on
    ``image_path`` from the annotations (see :func:`image_ids_by_path`). Used to find the image
    files of first-stage candidates for reranking.
    """
    meta_paths = store.metadata["image_path"].astype(str).tolist()
    joined = store_image_ids(store, qrels.paths)
    ids = store.ids if joined is None else joined
    return {int(i): p for i, p in zip(ids.tolist(), meta_paths, strict=True)}


def evaluate_fullrank(
    model_id: str,
    queries: str | pd.DataFrame,
    qrels: Qrels | None,
    embeddings: str | os.PathLike[str],
    k: int = 50,
    k_max: int | None = None,
    index: str | None = None,
    index_params: Mapping[str, float] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    encoder: Encoder | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    precision: str = "fp32",
    config_extra: Mapping[str, Any] | None = None,
    name: str | None = None,
    screen: str = "auto",
) -> tuple[EvalResult, Run]:
    """INQUIRE-Fullrank for ``model_id`` over the embeddings in ``embeddings``.

    ``queries``: a split name (``"val"``/``"test"``, downloaded) or a query table.
    ``qrels``: the annotations (``None``: INQUIRE's, downloaded). Retrieves the top
    ``k_max`` (default ``k``) per query, exactly or with the faiss ``index`` of that name,
    evaluates the top ``k`` and, when ``out_dir`` is given, writes ``per_query.csv``,
    ``summary.json`` and ``run.parquet`` there. ``name`` names the run (default
    ``fullrank:MODEL_ID``). ``device``, ``precision`` and ``batch_size`` load the text model
    (unused when ``encoder`` is given). ``screen`` is passed to exact search (see
    :func:`inquire.index.exact.search`). Returns the result and the run.
    """
    from inquire.data.qrels import load_qrels
    from inquire.data.queries import load_queries
    from inquire.embed.models import load_encoder
    from inquire.index.ann import AnnIndex

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    k_max = int(k_max) if k_max is not None else int(k)
    if k_max < k:
        raise InputError(f"k_max ({k_max}) must be at least k ({k}) to evaluate the top {k}")
    split = queries if isinstance(queries, str) else None
    query_df = load_queries(queries) if isinstance(queries, str) else queries
    qrels = qrels if qrels is not None else load_qrels()
    store = EmbeddingStore(embeddings)
    check_unique_ids(store)
    enc = encoder or load_encoder(
        model_id, device=device, precision=precision, batch_size=batch_size
    )
    ann = AnnIndex.load(store, index) if index else None
    image_ids = store_image_ids(store, qrels.paths)
    run = fullrank_topk(
        enc,
        query_df,
        store,
        k_max,
        index=ann,
        index_params=index_params,
        cache=cache,
        image_ids=image_ids,
        name=name or f"fullrank:{model_id}",
        screen=screen,
    )
    cfg = {
        "task": "fullrank",
        "model_id": model_id,
        "model_revision": getattr(enc, "revision", ""),
        "split": split,
        "embeddings": str(Path(embeddings).resolve()),
        "n_images": len(store),
        "k_max": k_max,
        "search": "exact" if ann is None else f"index:{ann.name} ({ann.info.get('factory')})",
        "index_params": dict(index_params or {}),
        "image_ids": "metadata" if image_ids is None else "joined on image_path",
        **dict(config_extra or {}),
    }
    result = evaluate(run, qrels, query_df, k=k, config=cfg)
    if out_dir is not None:
        result.save(out_dir, run=run)
    return result, run
