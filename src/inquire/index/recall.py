"""Recall and speed of an approximate (faiss) index against exact search.

:func:`measure_recall` is ``inquire index recall``: it searches the same queries with
:class:`~inquire.index.exact.ExactIndex` and with a saved :class:`~inquire.index.ann.AnnIndex`
under each set of search parameters, through the one
:class:`~inquire.index.base.Searcher` contract, and reports recall@k
(:func:`~inquire.index.ann.recall_at_k`) and wall-clock times.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from inquire.errors import InputError
from inquire.index.base import check_k

if TYPE_CHECKING:
    from inquire.embed.base import Encoder
    from inquire.embed.store import EmbeddingStore

RECALL_COLUMNS = ("params", "recall", "exact_s", "index_s", "speedup")


@dataclass(frozen=True)
class RecallResult:
    """What :func:`measure_recall` measured.

    ``table``: one row per parameter set, columns :data:`RECALL_COLUMNS`: ``params``
    (dict name -> value, empty for the index's defaults), ``recall`` (recall@k, a fraction
    in [0, 1]), ``exact_s`` / ``index_s`` (seconds for all queries; exact search is timed
    once and repeated on each row) and ``speedup`` (``exact_s / index_s``).
    """

    index: str
    factory: str
    n_queries: int
    k: int
    table: pd.DataFrame


def _query_vectors(
    store: EmbeddingStore, queries: np.ndarray | Sequence[str], encoder: Encoder | str | None
) -> np.ndarray:
    """``(nq, d) float32`` query vectors: ``queries`` as given, or texts embedded."""
    if isinstance(queries, np.ndarray):
        return queries
    texts = [str(t) for t in queries]
    if encoder is None:
        raise InputError("query texts need a text model to embed them; pass encoder=")
    if isinstance(encoder, str):
        from inquire.embed.models import load_encoder

        encoder = load_encoder(encoder)
    store.check_dim(encoder.dim, f"text embeddings of model {encoder.model_id!r}")
    return np.asarray(encoder.encode_text(texts), dtype=np.float32)


def measure_recall(
    store: EmbeddingStore,
    index_name: str,
    queries: np.ndarray | Sequence[str],
    k: int,
    grid: Sequence[Mapping[str, float]] = ({},),
    encoder: Encoder | str | None = None,
) -> RecallResult:
    """Recall@k of index ``index_name`` (saved next to ``store``, see
    :func:`~inquire.index.ann.build_index`) against exact search, and the speed-up.

    ``queries``: ``(nq, d) float32`` vectors, or texts embedded by ``encoder`` (an
    :class:`~inquire.embed.base.Encoder` or a model id, checked against the store's
    dimension first). ``grid``: the search-parameter sets to measure (``{"nprobe": 64}``,
    ``{"efSearch": 128}``; ``{}`` = the index's defaults), each applied per search via
    :meth:`~inquire.index.ann.AnnIndex.with_params`.

    Both sides are warmed the same way before timing: one query pages in the memory-mapped
    embeddings (exact) and the index (faiss under each parameter set), so no timing
    includes first reads from disk. Then exact search runs once over all queries and the
    index once per parameter set. Raises :class:`InputError` for an empty grid or query
    set, a bad ``k``, or a parameter the index does not take.
    """
    from inquire.index.ann import AnnIndex, recall_at_k
    from inquire.index.exact import ExactIndex

    k = check_k(k)
    grid = [dict(p) for p in grid]
    if not grid:
        raise InputError("the parameter grid is empty; give at least one set ({} = defaults)")
    q = _query_vectors(store, queries, encoder)
    if len(q) == 0:
        raise InputError("no queries to measure recall with")
    ann = AnnIndex.load(store, index_name)
    exact = ExactIndex(store)
    searchers = [ann.with_params(p) for p in grid]
    exact.search(q[:1], k)
    for s in searchers:
        s.search(q[:1], k)
    t0 = time.perf_counter()
    _, exact_ids = exact.search(q, k)
    t_exact = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    for params, s in zip(grid, searchers, strict=True):
        t0 = time.perf_counter()
        _, approx_ids = s.search(q, k)
        t_ann = time.perf_counter() - t0
        rows.append(
            {
                "params": params,
                "recall": recall_at_k(approx_ids, exact_ids, k),
                "exact_s": t_exact,
                "index_s": t_ann,
                "speedup": t_exact / max(t_ann, 1e-9),
            }
        )
    table = pd.DataFrame(rows, columns=list(RECALL_COLUMNS))
    return RecallResult(index_name, str(ann.info.get("factory")), len(q), k, table)
