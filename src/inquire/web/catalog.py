"""The data behind the pages: evaluation runs, query texts, relevance labels, image paths and
free-text search over an embedded collection. No web framework here, so it is testable alone.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from inquire.data.qrels import Qrels, read_qrels
from inquire.data.queries import read_queries
from inquire.embed.base import Encoder
from inquire.errors import InputError, UnknownNameError
from inquire.eval.evaluate import GROUP_COLUMNS, RUN_FILE, EvalResult
from inquire.metrics import metric_label, scale
from inquire.run import Run
from inquire.web.config import WebConfig
from inquire.web.images import ImageNotFound, ImageRoots
from inquire.web.parquet_images import ParquetImage, ParquetImages

log = logging.getLogger(__name__)


def format_metric(metric: str, value: float) -> str:
    """A metric as tables show it: x100 with one decimal, or a 3-decimal fraction."""
    return f"{value:.3f}" if scale(metric) == 1.0 else f"{value * scale(metric):.1f}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


@dataclass
class RunEntry:
    """One evaluation result folder shown by the page; ``slug`` is its id in URLs."""

    slug: str
    path: Path
    result: EvalResult

    @property
    def name(self) -> str:
        return self.result.name

    @cached_property
    def run(self) -> Run | None:
        """The ranked lists (``run.parquet``), or None when the folder has none."""
        path = self.path / RUN_FILE
        return Run.read_parquet(path) if path.is_file() else None

    @cached_property
    def rank_of(self) -> dict[int, dict[int, int]]:
        """query_id -> image_id -> 1-based rank in this run."""
        run = self.run
        if run is None:
            return {}
        return {
            q: {int(i): r for r, i in enumerate(ids.tolist(), start=1)}
            for q, (ids, _) in run.items()
        }

    @cached_property
    def _overall(self) -> dict[str, float]:
        row = self.result.aggregate().iloc[0]
        return {m: float(row[m]) for m in self.result.metrics}

    def overall(self) -> dict[str, float]:
        """Mean of each metric over all queries (fractions)."""
        return dict(self._overall)

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """``per_query`` as plain dicts (query_id int, groups str, metrics float), file order;
        read on every page view, so converted from pandas once."""
        out = []
        for rec in self.result.per_query.to_dict("records"):
            out.append(
                {
                    "query_id": int(rec["query_id"]),
                    **{g: str(rec.get(g, "")) for g in GROUP_COLUMNS},
                    "metrics": {m: float(rec[m]) for m in self.result.metrics},
                }
            )
        return out

    @cached_property
    def record_of(self) -> dict[int, dict[str, Any]]:
        return {r["query_id"]: r for r in self.records}


class Catalog:
    """Everything the pages read, loaded once from a :class:`WebConfig`."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.runs: dict[str, RunEntry] = {}
        for path in config.results:
            result = EvalResult.load(path)
            slug, n = _slug(result.name), 2
            while slug in self.runs:
                slug, n = f"{_slug(result.name)}-{n}", n + 1
            self.runs[slug] = RunEntry(slug, Path(path), result)

        query_files = list(config.queries) + self._config_files("queries")
        ann_files = list(config.annotations) + self._config_files("annotations")
        self.query_text: dict[int, str] = {}
        for qf in dict.fromkeys(Path(p) for p in query_files):
            df = read_queries(qf)
            for qid, text in zip(df["query_id"].tolist(), df["query_text"], strict=True):
                self.query_text.setdefault(int(qid), str(text))
        self.qrels: Qrels | None = None
        rel: dict[int, set[int]] = {}
        paths: dict[int, str] = {}
        for af in dict.fromkeys(Path(p) for p in ann_files):
            q = read_qrels(af)
            for qid, ids in q.items():
                rel.setdefault(qid, set()).update(ids)
            for i, p in q.paths.items():
                paths.setdefault(i, p)
        if ann_files:
            self.qrels = Qrels(rel, paths)

        self.store = None
        # Image id of every store row as the runs know it (None: the store's own ids).
        self.row_ids: np.ndarray | None = None
        if config.embeddings is not None:
            from inquire.embed.store import EmbeddingStore

            self.store = EmbeddingStore(config.embeddings)
            self.row_ids = self._row_ids(self.store, paths)
        self.images = ImageRoots(list(config.image_roots))
        # Embedding metadata first (it covers the whole collection), then the annotations.
        if self.store is not None and config.image_roots:
            meta = self.store.metadata
            if "image_path" in meta.columns:
                row_ids = self.store.ids if self.row_ids is None else self.row_ids
                self.images.add_paths(row_ids, meta["image_path"].astype(str))
        if paths:
            self.images.add_paths(paths.keys(), paths.values())
        # Last resort for ids the roots cannot resolve: images inside rerank parquet files.
        self.parquet_images = ParquetImages(
            list(config.rerank_data) + self._config_files("files", task="rerank")
        )
        self._encoder: Encoder | None = None
        self._encoder_lock = threading.Lock()
        self._search_cache: OrderedDict[tuple[str, int], list[dict[str, Any]]] = OrderedDict()
        self._search_lock = threading.Lock()
        if isinstance(config.model, str):
            from inquire.embed.models import resolve

            resolve(config.model)  # unknown model ids fail at start-up, not on first search
        if config.model is not None and self.store is None:
            raise InputError(
                "a text model was given but no embeddings folder; pass --embeddings DIR with "
                "the collection embedded by that model"
            )

    @staticmethod
    def _row_ids(store: Any, paths: dict[int, str]) -> np.ndarray | None:
        """Row -> image id the way full-rank evaluation assigns them, for a store without
        ``image_id`` (INQUIRE's published embeddings, a plain folder): rows are joined to the
        annotations' paths (:func:`inquire.eval.fullrank.image_ids_by_path`), so a run's ids,
        the annotations' ids and the search's ids name the same images."""
        from inquire.eval.fullrank import image_ids_by_path, store_has_image_ids

        if not paths or store_has_image_ids(store):
            return None
        try:
            return image_ids_by_path(store, paths)
        except InputError as exc:
            log.warning("image ids of the embeddings stay their row numbers: %s", exc)
            return None

    def _config_files(self, key: str, task: str | None = None) -> list[Path]:
        """Existing files named by ``config[key]`` (a path or a list of paths; relative ones
        are relative to the folder) in the results (only those of ``task`` when given)."""
        found = []
        for entry in self.runs.values():
            if task is not None and entry.result.config.get("task") != task:
                continue
            value = entry.result.config.get(key)
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, str) and v:
                    p = Path(v)
                    p = p if p.is_absolute() else entry.path / p
                    if p.is_file():
                        found.append(p)
                    elif task is not None:
                        log.warning("%s names %s, which does not exist", entry.path, v)
        return found

    def image(self, image_id: int) -> Path | ParquetImage:
        """Image ``image_id``: its real path under an image root, else its place in a
        registered rerank parquet file; :class:`~inquire.web.images.ImageNotFound` if neither
        has it. Nothing from the request is a path: only registered files are opened."""
        try:
            return self.images.resolve_id(image_id)
        except ImageNotFound:
            if not self.parquet_images.files or self.parquet_images.locate(image_id) is None:
                raise
        return self.parquet_images.get(image_id)

    # --- runs -------------------------------------------------------------------------
    def get_run(self, slug: str) -> RunEntry:
        """The run called ``slug`` or :class:`UnknownNameError` (HTTP 404)."""
        try:
            return self.runs[slug]
        except KeyError:
            raise UnknownNameError("run", slug, self.runs) from None

    def runs_table(self) -> list[dict[str, Any]]:
        """One JSON-ready row per run: slug, name, k, n_queries, overall metrics (fractions)."""
        rows = []
        for entry in self.runs.values():
            res = entry.result
            rows.append(
                {
                    "slug": entry.slug,
                    "name": res.name,
                    "k": res.k,
                    "n_queries": len(res.per_query),
                    "metrics": entry.overall(),
                    "has_run": (entry.path / RUN_FILE).is_file(),
                    "task": res.config.get("task"),
                }
            )
        return rows

    def group_values(self, entry: RunEntry) -> dict[str, list[str]]:
        """The values of each group column present in ``entry``'s queries, sorted."""
        return {g: sorted({r[g] for r in entry.records}) for g in GROUP_COLUMNS}

    def queries_table(
        self,
        entry: RunEntry,
        filters: dict[str, str | None] | None = None,
        sort: str | None = None,
    ) -> list[dict[str, Any]]:
        """Per-query rows of ``entry`` (metrics as fractions), filtered by group values.

        ``filters``: group column -> required value (None or '' = any). ``sort``: None (file
        order), ``query_id`` (ascending) or a metric name (descending, ties by query id).
        """
        wanted = {}
        for col, value in (filters or {}).items():
            if col not in GROUP_COLUMNS:
                raise InputError(f"cannot filter by {col!r}; choose one of {GROUP_COLUMNS}")
            if value:
                wanted[col] = value
        rows = [
            rec
            | {
                "text": self.query_text.get(rec["query_id"], ""),
                "n_relevant": self.n_relevant(rec["query_id"]),
            }
            for rec in entry.records
            if all(rec[c] == v for c, v in wanted.items())
        ]
        if sort == "query_id":
            rows.sort(key=lambda r: r["query_id"])
        elif sort in entry.result.metrics:
            rows.sort(key=lambda r: (-r["metrics"][sort], r["query_id"]))
        elif sort:
            raise UnknownNameError("sort column", sort, ["query_id", *entry.result.metrics])
        return rows

    @staticmethod
    def neighbours(entry: RunEntry, query_id: int) -> tuple[int | None, int | None]:
        """The query ids before and after ``query_id`` in ``entry``'s file order."""
        ids = [r["query_id"] for r in entry.records]
        if query_id not in ids:
            return None, None
        i = ids.index(query_id)
        return (ids[i - 1] if i > 0 else None), (ids[i + 1] if i + 1 < len(ids) else None)

    def n_relevant(self, query_id: int) -> int | None:
        if self.qrels is None or query_id not in self.qrels:
            return None
        return len(self.qrels[query_id])

    def query_results(
        self, entry: RunEntry, query_id: int, k: int, other: RunEntry | None = None
    ) -> dict[str, Any]:
        """Top ``k`` of ``entry`` for ``query_id``: rank, image id, score, relevance and the
        rank of the same image in ``other`` (None when ``other`` did not retrieve it).

        ``relevant`` is True/False when the query has annotations and None otherwise.
        """
        run = entry.run
        if run is None:
            raise InputError(
                f"run {entry.slug!r} has no {RUN_FILE} in {str(entry.path)!r}; save the result "
                f"with its run (EvalResult.save(dir, run=run)) to see its images"
            )
        if query_id not in run:
            if query_id not in entry.record_of:
                raise UnknownNameError("query id", str(query_id), [str(q) for q in entry.record_of])
            ids, scores = np.empty(0, np.int64), np.empty(0, np.float64)
        else:
            ids, scores = run[query_id]
        k = max(1, min(int(k), self.config.max_k))
        judged = self.qrels is not None and query_id in self.qrels
        relevant = self.qrels[query_id] if judged and self.qrels is not None else frozenset()
        other_ranks = other.rank_of.get(query_id, {}) if other is not None else {}
        items = []
        for r, (i, s) in enumerate(zip(ids[:k].tolist(), scores[:k].tolist(), strict=True), 1):
            items.append(
                {
                    "rank": r,
                    "image_id": int(i),
                    "score": float(s),
                    "relevant": (int(i) in relevant) if judged else None,
                    "other_rank": other_ranks.get(int(i)) if other is not None else None,
                }
            )
        rec = entry.record_of.get(query_id)
        metrics = dict(rec["metrics"]) if rec else {}
        groups = {g: rec[g] for g in GROUP_COLUMNS} if rec else {}
        return {
            "run": entry.slug,
            "query_id": query_id,
            "text": self.query_text.get(query_id, ""),
            "k": k,
            "judged": judged,
            "n_relevant": len(relevant) if judged else None,
            "relevant_in_top_k": sum(1 for it in items if it["relevant"]),
            "metrics": metrics,
            **groups,
            "compare": other.slug if other is not None else None,
            "results": items,
        }

    # --- free-text search ---------------------------------------------------------------
    @property
    def can_search(self) -> bool:
        return self.store is not None and self.config.model is not None

    def encoder(self) -> Encoder:
        """The text encoder, loaded on first use (loading a model can take seconds)."""
        with self._encoder_lock:
            if self._encoder is None:
                model = self.config.model
                if model is None:
                    raise InputError("free-text search needs a model; start with --model ID")
                if isinstance(model, str):
                    from inquire.embed.models import load_encoder

                    self._encoder = load_encoder(model)
                else:
                    self._encoder = model
            return self._encoder

    def search(self, text: str, k: int) -> list[dict[str, Any]]:
        """Top ``k`` images of the embedded collection for ``text``: rank, image_id, score.

        Answers are kept in a small LRU (the encoder and exact search are deterministic).
        """
        text = text.strip()
        if not text:
            raise InputError("the search text is empty; type what the images should show")
        if len(text) > 1000:
            raise InputError(f"the search text has {len(text)} characters; use at most 1000")
        if self.store is None or self.config.model is None:
            raise InputError(
                "free-text search is off: start the server with --embeddings DIR --model ID"
            )
        k = max(1, min(int(k), self.config.max_k))
        key = (text, k)
        with self._search_lock:
            if key in self._search_cache:
                self._search_cache.move_to_end(key)
                return self._search_cache[key]
        from inquire.index.exact import search

        enc = self.encoder()
        emb = np.asarray(enc.encode_text([text]), dtype=np.float32)
        if emb.shape != (1, self.store.dim):
            raise InputError(
                f"the model {enc.model_id!r} embeds text into {emb.shape[-1]} dimensions but the "
                f"collection at {str(self.store.root)!r} has {self.store.dim}; use the model that "
                f"embedded the collection"
            )
        scores, ids = search(self.store, emb, k=k)
        if self.row_ids is not None:
            # a store without image ids searches by row; name rows as the runs do
            rows = self.store.row_of(ids.ravel(), missing="ignore").reshape(ids.shape)
            ids = np.where(rows >= 0, self.row_ids[np.maximum(rows, 0)], -1)
        items = [
            {"rank": r, "image_id": int(i), "score": float(s)}
            for r, (i, s) in enumerate(zip(ids[0].tolist(), scores[0].tolist(), strict=True), 1)
            if i >= 0
        ]
        with self._search_lock:
            self._search_cache[key] = items
            while len(self._search_cache) > 256:
                self._search_cache.popitem(last=False)
        return items


def parse_k(value: str | int | None, default: int, max_k: int) -> int:
    """A positive cut-off from a query parameter, or :class:`InputError` naming the value."""
    if value is None or value == "":
        return default
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise InputError(f"k must be a whole number, got {value!r}") from None
    if not 1 <= k <= max_k:
        raise InputError(f"k must be between 1 and {max_k}, got {k}")
    return k


__all__: Sequence[str] = ["Catalog", "RunEntry", "format_metric", "metric_label", "parse_k"]
