"""The data behind the pages: evaluation runs (each a :class:`~inquire.web.runs.RunEntry`),
query texts, relevance labels, image paths and free-text search over an embedded collection.
No web framework here, so it is testable alone.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inquire.data.qrels import Qrels, read_qrels
from inquire.data.queries import read_queries
from inquire.embed.base import Encoder
from inquire.errors import InputError, UnknownNameError
from inquire.eval.evaluate import GROUP_COLUMNS, RUN_FILE, EvalResult
from inquire.metrics import format_fraction, metric_label
from inquire.web.config import WebConfig
from inquire.web.images import ImageNotFound, ImageRoots
from inquire.web.parquet_images import ParquetImage, ParquetImages
from inquire.web.runs import RunEntry, display_name, slug_of

if TYPE_CHECKING:
    from inquire.embed.store import EmbeddingStore

log = logging.getLogger(__name__)


class Catalog:
    """Everything the pages read, loaded once from a :class:`WebConfig`."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.runs: dict[str, RunEntry] = {}
        for path in config.results:
            result = EvalResult.load(path)
            base = slug_of(display_name(result.name))
            slug, n = base, 2
            while slug in self.runs:
                slug, n = f"{base}-{n}", n + 1
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

        # The embeddings as opened (store, its row ids, its image paths, its search answers),
        # opened again when the folder changes (:meth:`_current`).
        self._ann_paths = paths
        self._opened: _Opened | None = None
        self._reopen_lock = threading.Lock()
        self.images = ImageRoots(list(config.image_roots))
        if config.embeddings is not None:
            self._opened = self._open()
            self.images = self._opened.images
        elif paths:
            self.images.add_paths(paths.keys(), paths.values())
        # Last resort for ids the roots cannot resolve: images inside rerank parquet files.
        self.parquet_images = ParquetImages(
            list(config.rerank_data) + self._config_files("files", task="rerank")
        )
        self._lock = threading.Lock()
        self._rerank_sets: dict[str, Any] = {}
        # reports, leaderboards and comparisons by key: deterministic (seeded), so kept
        self._reports: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._encoder: Encoder | None = None
        self._encoder_lock = threading.Lock()
        self._search_lock = threading.Lock()
        if isinstance(config.model, str):
            from inquire.embed.models import resolve

            resolve(config.model)  # unknown model ids fail at start-up, not on first search
        if config.model is not None and self._opened is None:
            raise InputError(
                "a text model was given but no embeddings folder; pass --embeddings DIR with "
                "the collection embedded by that model"
            )

    @staticmethod
    def _row_ids(store: Any, paths: dict[int, str]) -> np.ndarray | None:
        """Row -> image id the way full-rank evaluation assigns them, for a store without
        ``image_id`` (INQUIRE's published embeddings, a plain folder): rows are joined to the
        annotations' paths (:func:`inquire.eval.fullrank.store_image_ids`), so a run's ids,
        the annotations' ids and the search's ids name the same images."""
        from inquire.eval.fullrank import store_image_ids

        if not paths:
            return None
        try:
            return store_image_ids(store, paths)
        except InputError as exc:
            log.warning("image ids of the embeddings stay their row numbers: %s", exc)
            return None

    # --- the embeddings, opened again when the folder changes ----------------------------
    @property
    def store(self) -> EmbeddingStore | None:
        """The embedding store as last opened (None without ``--embeddings``)."""
        return None if self._opened is None else self._opened.store

    @property
    def row_ids(self) -> np.ndarray | None:
        """Image id of every row of :attr:`store` as the runs know it (None: the store's own
        ids)."""
        return None if self._opened is None else self._opened.row_ids

    def _open(self) -> _Opened:
        """Open the embeddings folder and derive everything the pages read from it."""
        from inquire.embed.store import open_settled

        assert self.config.embeddings is not None
        store, state = open_settled(self.config.embeddings)
        row_ids = self._row_ids(store, self._ann_paths)
        images = ImageRoots(list(self.config.image_roots))
        # Embedding metadata first (it covers the whole collection), then the annotations.
        if self.config.image_roots:
            meta = store.metadata
            if "image_path" in meta.columns:
                ids = store.ids if row_ids is None else row_ids
                images.add_paths(ids, meta["image_path"].astype(str))
        if self._ann_paths:
            images.add_paths(self._ann_paths.keys(), self._ann_paths.values())
        return _Opened(store, state, row_ids, images)

    def _current(self) -> _Opened | None:
        """The embeddings as they are in the folder now: the opened ones while the folder
        is as it was when they were opened, else the folder opened again (once, under a
        lock, however many requests notice the change; each later request then uses the
        new one). A folder that cannot be opened now (a shard removed, a manifest listing a
        missing shard, emptied) is the opening's InputError, and the next request tries
        again: nothing is answered from files that are no longer there."""
        from inquire.embed.folder import folder_state

        opened = self._opened
        if opened is None or self.config.embeddings is None:
            return opened
        if folder_state(self.config.embeddings) == opened.state:
            return opened
        with self._reopen_lock:
            opened = self._opened
            assert opened is not None
            if folder_state(self.config.embeddings) != opened.state:
                log.info("the embeddings folder changed since it was opened: opening it again")
                opened = self._open()
                self._opened = opened
                self.images = opened.images
            return opened

    @staticmethod
    def _config_files_of(entry: RunEntry, key: str, warn_missing: bool = False) -> list[Path]:
        """Existing files named by ``entry``'s ``config[key]`` (a path or a list of paths;
        relative ones are relative to its folder); ``warn_missing`` logs the others."""
        value = entry.result.config.get(key)
        found = []
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v:
                p = Path(v) if Path(v).is_absolute() else entry.path / v
                if p.is_file():
                    found.append(p)
                elif warn_missing:
                    log.warning("%s names %s, which does not exist", entry.path, v)
        return found

    def _config_files(self, key: str, task: str | None = None) -> list[Path]:
        """:meth:`_config_files_of` over the results (only those of ``task`` when given, and
        then a file named but missing is logged)."""
        return [
            p
            for entry in self.runs.values()
            if task is None or entry.result.config.get("task") == task
            for p in self._config_files_of(entry, key, warn_missing=task is not None)
        ]

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
                    "name": entry.name,
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
                "text": self.query_text_of(entry, rec["query_id"]),
                "n_relevant": self.labels(entry, rec["query_id"])[1],
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

    def rerank_set(self, entry: RunEntry) -> Any:
        """The INQUIRE-Rerank set a rerank result was evaluated on (its ``config["files"]``),
        or None for other results or when the files are gone. Read once per run."""
        if entry.task != "rerank":
            return None
        with self._lock:
            if entry.slug in self._rerank_sets:
                return self._rerank_sets[entry.slug]
        from inquire.data.rerank_set import read_rerank_set

        files = [str(p) for p in self._config_files_of(entry, "files")]
        rs = None
        if files:
            try:
                rs = read_rerank_set(files, queries=self._query_table())
            except InputError as exc:
                log.warning("run %s: cannot read its rerank files: %s", entry.slug, exc)
        with self._lock:
            self._rerank_sets[entry.slug] = rs
        return rs

    def labels(
        self, entry: RunEntry, query_id: int
    ) -> tuple[frozenset[int] | None, int | None, str]:
        """The relevance labels a query page of ``entry`` shows: ``(relevant image ids, R,
        source)``; ``(None, None, "")`` when nothing judges the query.

        A rerank result uses its own pools (``source="rerank"``: R = relevant candidates in
        the query's pool, as INQUIRE-Rerank defines it); other results use the annotations
        (``source="annotations"``: R = relevant images in the whole collection).
        """
        rs = self.rerank_set(entry)
        if rs is not None and query_id in rs.query_ids:
            pool = rs.pool(query_id)
            rel = frozenset(int(i) for i in pool.loc[pool["relevant"], "image_id"])
            return rel, len(rel), "rerank"
        if self.qrels is not None and query_id in self.qrels:
            rel = frozenset(self.qrels[query_id])
            return rel, len(rel), "annotations"
        return None, None, ""

    def query_text_of(self, entry: RunEntry, query_id: int) -> str:
        """The text of ``query_id``: from ``entry``'s own rerank files first, then the query
        files."""
        rs = self.rerank_set(entry)
        if rs is not None:
            texts = dict(
                zip(rs.queries["query_id"].tolist(), rs.queries["query_text"], strict=True)
            )
            if query_id in texts:
                return str(texts[query_id])
        return self.query_text.get(query_id, "")

    def query_results(
        self, entry: RunEntry, query_id: int, k: int, other: RunEntry | None = None
    ) -> dict[str, Any]:
        """Top ``k`` of ``entry`` for ``query_id``: rank, image id, score, relevance and the
        rank of the same image in ``other`` (None when ``other`` did not retrieve it).

        ``relevant`` is True/False when the query has labels (see :meth:`labels`) and None
        otherwise. ``n_retrieved`` is the number of items shown (at most ``k``; fewer when the
        run retrieved fewer), ``relevant_in_top_k`` how many of them are relevant, and
        ``n_relevant`` is R. ``warnings`` lists disagreements between the labels shown and
        the run's stored metrics (or, for a rerank result, the annotations given).
        """
        run = entry.run
        if run is None:
            # the folder is a server path: the message names the run only
            raise InputError(
                f"run {entry.slug!r} has no {RUN_FILE} in its result folder; save the result "
                f"with its run (EvalResult.save(dir, run=run)) to see its images"
            )
        if query_id not in run:
            if query_id not in entry.record_of:
                raise UnknownNameError("query id", str(query_id), [str(q) for q in entry.record_of])
            ids, scores = np.empty(0, np.int64), np.empty(0, np.float64)
        else:
            ids, scores = run[query_id]
        k = max(1, min(int(k), self.config.max_k))
        relevant, n_rel, source = self.labels(entry, query_id)
        judged = relevant is not None
        good = relevant or frozenset()
        other_ranks = other.rank_of.get(query_id, {}) if other is not None else {}
        items = []
        for r, (i, s) in enumerate(zip(ids[:k].tolist(), scores[:k].tolist(), strict=True), 1):
            items.append(
                {
                    "rank": r,
                    "image_id": int(i),
                    "score": float(s),
                    "relevant": (int(i) in good) if judged else None,
                    "other_rank": other_ranks.get(int(i)) if other is not None else None,
                }
            )
        rec = entry.record_of.get(query_id)
        metrics = dict(rec["metrics"]) if rec else {}
        groups = {g: rec[g] for g in GROUP_COLUMNS} if rec else {}
        warnings = []
        if judged and rec:
            warnings += self._metric_mismatch(
                entry, query_id, ids, scores, good, n_rel or 0, metrics
            )
        if source == "rerank" and self.qrels is not None and query_id in self.qrels:
            ann = self.qrels[query_id]
            differ = sum(1 for it in items if (it["image_id"] in ann) != it["relevant"])
            if differ:
                warnings.append(
                    f"the annotations given label {differ} of these {len(items)} images "
                    f"differently from this run's rerank file; the marks shown are the rerank "
                    f"file's (the labels the run was evaluated with)"
                )
        return {
            "run": entry.slug,
            "query_id": query_id,
            "text": self.query_text_of(entry, query_id),
            "k": k,
            "judged": judged,
            "labels": source or None,
            "n_relevant": n_rel if judged else None,
            "n_retrieved": len(items),
            "n_ranked": len(ids),
            "relevant_in_top_k": sum(1 for it in items if it["relevant"]),
            "metrics": metrics,
            **groups,
            "compare": other.slug if other is not None else None,
            "warnings": warnings,
            "results": items,
        }

    @staticmethod
    def _metric_mismatch(
        entry: RunEntry,
        query_id: int,
        ids: np.ndarray,
        scores: np.ndarray,
        relevant: frozenset[int],
        n_rel: int,
        stored: dict[str, float],
    ) -> list[str]:
        """Evaluate the query again at the result's k with the labels shown (through
        :func:`inquire.eval.evaluate.evaluate_query`, so with the same rules as the stored numbers,
        ties included); a warning when the metrics differ from the stored ones (the labels
        are then not those the run was evaluated with)."""
        from inquire.eval.evaluate import evaluate_query

        names = tuple(m for m in entry.result.metrics if m in stored)
        try:
            fresh = evaluate_query(
                ids, scores, relevant, entry.result.k, names, n_relevant=n_rel, query_id=query_id
            )
        except InputError as exc:
            return [f"the labels shown cannot be the ones this run was evaluated with: {exc}"]
        k = entry.result.k
        off = [m for m in names if abs(float(fresh[m]) - stored[m]) > 1e-6]
        if not off:
            return []
        diffs = ", ".join(
            f"{metric_label(m, k)} stored {format_fraction(m, stored[m])}, from these labels "
            f"{format_fraction(m, float(fresh[m]))}"
            for m in off
        )
        return [
            f"the labels shown do not reproduce this run's metrics for query {query_id} "
            f"({diffs}); the run was evaluated with other labels"
        ]

    # --- reports and comparisons (inquire.report) ---------------------------------------
    def group_report(self, entry: RunEntry) -> Any:
        """``inquire report`` of ``entry`` alone: overall and per supercategory / category /
        iconic group with bootstrap intervals (10,000 resamples, seed 0); computed once."""
        from inquire.report.build import DEFAULT_RESAMPLES, build_report

        columns = entry.result.per_query.columns
        return self._memo(
            ("report", entry.slug),
            lambda: build_report(
                [entry.shown_result],
                by=[g for g in GROUP_COLUMNS if g in columns],
                n_resamples=DEFAULT_RESAMPLES,
                seed=0,
            ),
        )

    def reference(self, entry: RunEntry) -> dict[str, Any] | None:
        """The published leaderboard of ``entry``'s task beside every run of that task and
        k on this server: ``{"table", "leaderboard", "notes"}`` (see
        :func:`inquire.report.reference.reference_table`), or None when the task has no
        published numbers."""
        from inquire.report.leaderboard import leaderboard_tasks

        task = entry.task
        if task is None or task not in leaderboard_tasks():
            return None
        out: dict[str, Any] | None = self._memo(
            ("reference", entry.slug), lambda: self._reference(entry, task)
        )
        return out

    def _reference(self, entry: RunEntry, task: str) -> dict[str, Any] | None:
        """:meth:`reference` of ``entry``, whose task is ``task``, computed."""
        from inquire.report.reference import reference_comparison

        peers = [
            e
            for e in self.runs.values()
            if e.task == task and e.result.k == entry.result.k and "ap" in e.result.metrics
        ]
        out: dict[str, Any] | None = None
        try:
            ref = reference_comparison([e.shown_result for e in peers], task)
        except InputError as exc:
            log.warning("no leaderboard for run %s: %s", entry.slug, exc)
        else:
            if ref is not None:
                table = ref.table
                mine = table["source"] != "published"
                # unique_names may have suffixed equal names; rows follow the peers' order
                table.loc[mine, "slug"] = [e.slug for e in peers][: int(mine.sum())]
                out = {"table": table, "leaderboard": ref.leaderboard, "notes": ref.notes}
        return out

    def compare(self, slugs: Sequence[str], intersect: bool = False) -> Any:
        """:func:`inquire.report.compare.compare` of the runs ``slugs`` (two or more) on every
        metric they share, p-values Holm-corrected across the pairs; computed once per
        selection. ``intersect`` compares on the shared queries when the query sets differ."""
        from inquire.report.compare import compare

        entries = [self.get_run(s) for s in dict.fromkeys(slugs)]
        if len(entries) < 2:
            raise InputError(
                f"choose at least two runs to compare, got {len(entries)}; tick two or more "
                f"runs on the runs page"
            )
        return self._memo(
            ("compare", tuple(e.slug for e in entries), bool(intersect)),
            lambda: compare(
                [e.shown_result for e in entries],
                metrics=None,  # every metric the runs share
                on_mismatch="intersect" if intersect else "error",
                queries=self._query_table(),
            ),
        )

    def _memo(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """The report, leaderboard or comparison cached under ``key``, else ``compute()``
        stored under it (the oldest of more than 256 entries dropped)."""
        with self._lock:
            if key in self._reports:
                return self._reports[key]
        value = compute()
        with self._lock:
            self._reports[key] = value
            while len(self._reports) > 256:
                self._reports.popitem(last=False)
        return value

    def _query_table(self) -> Any:
        if not self.query_text:
            return None
        import pandas as pd

        return pd.DataFrame(
            {"query_id": list(self.query_text), "query_text": list(self.query_text.values())}
        )

    # --- free-text search ---------------------------------------------------------------
    @property
    def can_search(self) -> bool:
        return self._opened is not None and self.config.model is not None

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

        Searches the embeddings folder as it is now (:meth:`_current`): a new ``inquire
        embed`` into it while the server runs is opened again, with its own ids and image
        paths, by the next search."""
        text = text.strip()
        if not text:
            raise InputError("the search text is empty; type what the images should show")
        if len(text) > 1000:
            raise InputError(f"the search text has {len(text)} characters; use at most 1000")
        if self._opened is None or self.config.model is None:
            raise InputError(
                "free-text search is off: start the server with --embeddings DIR --model ID"
            )
        k = max(1, min(int(k), self.config.max_k))
        from inquire.embed.folder import folder_state

        opened = self._current()
        assert opened is not None and self.config.embeddings is not None
        try:
            return self._search(opened, text, k)
        except InputError:
            # A search on files replaced or removed while it ran (the scan reads them by
            # name) stops with an InputError: search the folder as it is now, once.
            if folder_state(self.config.embeddings) == opened.state:
                raise
        opened = self._current()
        assert opened is not None
        return self._search(opened, text, k)

    def _search(self, opened: _Opened, text: str, k: int) -> list[dict[str, Any]]:
        """:meth:`search` in the embeddings ``opened``: its store, its row ids, its answers
        (kept in a small LRU of that opening: the encoder and exact search are
        deterministic)."""
        key = (text, k)
        with self._search_lock:
            if key in opened.answers:
                opened.answers.move_to_end(key)
                return opened.answers[key]
        from inquire.eval.fullrank import search_texts

        store, row_ids = opened.store, opened.row_ids
        scores, ids = search_texts(self.encoder(), store, [text], k)
        if row_ids is not None:
            # a store without image ids searches by row; name rows as the runs do
            rows = store.row_of(ids.ravel(), missing="ignore").reshape(ids.shape)
            ids = np.where(rows >= 0, row_ids[np.maximum(rows, 0)], -1)
        items = [
            {"rank": r, "image_id": int(i), "score": float(s)}
            for r, (i, s) in enumerate(zip(ids[0].tolist(), scores[0].tolist(), strict=True), 1)
            if i >= 0
        ]
        with self._search_lock:
            opened.answers[key] = items
            while len(opened.answers) > 256:
                opened.answers.popitem(last=False)
        return items


@dataclass
class _Opened:
    """One opening of the embeddings folder and everything derived from it, replaced as a
    whole when the folder changes: a search that began on it finishes on it (or stops
    with the InputError of a file gone), so its ids, paths and answers never mix with
    another opening's."""

    store: EmbeddingStore
    #: :func:`~inquire.embed.folder.folder_state` of the folder the store holds
    state: tuple[tuple[Any, ...], ...]
    #: image id of every row as the runs know it (None: the store's own ids)
    row_ids: np.ndarray | None
    #: image id -> path: the store's metadata, then the annotations
    images: ImageRoots
    #: search answers by (text, k), guarded by the catalog's search lock
    answers: OrderedDict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=OrderedDict)


__all__: Sequence[str] = ["Catalog"]
