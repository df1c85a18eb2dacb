"""The public API: the few names ``import inquire`` exposes (lazily, see ``inquire/__init__``).

    import inquire

    qrels = inquire.Qrels.from_dict({1: {10: 1, 11: 1, 12: 0}})
    run = inquire.Run.from_dict({1: {10: 0.9, 12: 0.8, 11: 0.7}})
    inquire.evaluate(qrels, run, k=50).overall    # {'n_queries': 1, 'ap': 0.833, ...}

    inquire.evaluate_rerank(my_model, data="test")              # INQUIRE-Rerank
    inquire.evaluate_fullrank(my_model, embeddings="emb/")      # INQUIRE-Fullrank

A model is a registry id (a string: ``"vit-b-32"``, ``"open_clip:ViT-B-32/openai"``, see
``inquire models``) or any object with the two methods of
:class:`~inquire.model.TextImageModel` (adapted by :class:`~inquire.model.ModelEncoder`). Every
function returns an :class:`~inquire.eval.evaluate.EvalResult` (``.overall``,
``.per_query``, ``.aggregate(by)``, ``.save(folder)``). Arguments after the first ones are
keyword-only. The full surface is documented in docs/api.md.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inquire.data.qrels import Qrels
from inquire.data.queries import UNKNOWN_GROUP
from inquire.errors import InputError
from inquire.eval.evaluate import GROUP_COLUMNS, EvalResult
from inquire.model import ModelEncoder, TextImageModel, as_encoder
from inquire.run import Run

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


def _check_k(k: Any, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


def evaluate(
    qrels: Qrels,
    run: Run,
    *,
    k: int = 50,
    metrics: Sequence[str] | str | None = None,
    groups: pd.DataFrame | None = None,
) -> EvalResult:
    """Evaluate the top ``k`` of ``run`` against ``qrels`` (INQUIRE's metric definitions).

    The queries are those of ``qrels`` with at least one relevant image (a query whose
    judgments are all 0 has no defined AP; it is left out with a warning and listed in
    ``config["excluded_queries_no_relevant"]``). A query the run does not cover scores 0;
    run queries without judgments are ignored (both logged). ``k``: any positive integer
    (memory follows the lists, not ``k``). ``metrics``: names of
    :data:`inquire.metrics.METRICS` (default ap, ndcg, mrr, precision, recall; the cut-off
    is ``k``, never part of a name: ``"ndcg@10"`` is refused with a pointer to ``k=10``).
    ``groups``: optional query metadata, a frame with ``query_id`` and any of ``supercategory``,
    ``category``, ``iconic_group`` (e.g. ``inquire.load_queries("test")``); it only adds
    those columns to ``per_query`` (queries it lacks are ``Unknown``) for
    ``result.aggregate(by)``.

    Returns an :class:`EvalResult`: ``.overall`` (``n_queries`` and the mean of each metric,
    fractions in [0, 1]) and ``.per_query`` (``query_id``, the metrics, the groups).
    """
    from inquire.eval.evaluate import evaluate as evaluate_table
    from inquire.metrics import DEFAULT_METRICS

    if not isinstance(qrels, Qrels):
        raise InputError(
            f"qrels must be an inquire.Qrels, got {type(qrels).__name__}; build one with "
            f"inquire.Qrels.from_dict({{query_id: {{image_id: relevance}}}}) or "
            f"inquire.read_qrels(csv)"
        )
    if not isinstance(run, Run):
        raise InputError(
            f"run must be an inquire.Run, got {type(run).__name__}; build one with "
            f"inquire.Run.from_dict({{query_id: {{image_id: score}}}}) or inquire.Run.read(file)"
        )
    k = _check_k(k)
    chosen = DEFAULT_METRICS if metrics is None else _metric_names(metrics, k)
    empty = [q for q in qrels if not qrels[q]]
    qids = [q for q in qrels if qrels[q]]
    if empty:
        log.warning(
            "%d queries have no relevant image in the judgments and are not evaluated: %s",
            len(empty),
            empty[:10],
        )
    if not qids:
        raise InputError(
            f"the judgments list no relevant image for any of their {len(qrels)} queries; "
            f"a relevance of 1 (or more) marks an image relevant"
        )
    table = pd.DataFrame({"query_id": np.asarray(qids, np.int64), "query_text": ""})
    table = table.join(_group_table(groups, qids))
    config = {"task": "evaluate", "excluded_queries_no_relevant": empty}
    return evaluate_table(run, qrels, table, k=k, metrics=chosen, config=config)


# Names other tools give these metrics (trec_eval, ranx, ir_measures), for the error hint.
_METRIC_ALIASES = {
    "map": "trec_ap",
    "average_precision": "ap",
    "ndcg_cut": "ndcg",
    "p": "precision",
    "r": "recall",
    "rr": "mrr",
    "recip_rank": "mrr",
}


def _metric_names(metrics: Sequence[str] | str, k: int) -> tuple[str, ...]:
    """``metrics`` as registered names, in order, each once; an unknown name is an
    :class:`~inquire.errors.UnknownNameError` that says what the name is called here."""
    import re

    from inquire.errors import UnknownNameError
    from inquire.metrics import METRICS

    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise InputError(
            f"metrics is empty; name at least one of {sorted(METRICS)} (or pass metrics=None "
            f"for the default set)"
        )
    for name in names:
        if not isinstance(name, str):
            raise InputError(f"metric names are strings; got {name!r} in metrics={metrics!r}")
        if name in METRICS:
            continue
        error = UnknownNameError("metric", name, METRICS)
        # "ndcg@10", "P_5", "ndcg_cut.10", "map_cut_100": a name and a cut-off
        match = re.fullmatch(r"(.+?)(?:_cut)?[@_.](\d+)", name)
        base, cut = (match.group(1), match.group(2)) if match else (name, "")
        key = base.lower()
        known = key if key in METRICS else _METRIC_ALIASES.get(key)
        if known is not None:
            hint = f"unknown metric {name!r}: inquire names it {known!r}"
            if known == "trec_ap":
                hint += " (trec_eval's MAP, over R; INQUIRE's AP@k, 'ap', is over min(R, k))"
            if cut:
                hint += f"; the cut-off is not part of the name: pass k={int(cut)}"
                hint += f" (this call has k={k})" if int(cut) != k else " (as this call does)"
            error.args = (f"{hint}. Valid names: {', '.join(sorted(METRICS))}",)
        raise error
    return tuple(dict.fromkeys(names))


def _group_table(groups: pd.DataFrame | None, qids: list[int]) -> pd.DataFrame:
    """The group columns of ``qids`` in order (``Unknown`` where ``groups`` says nothing)."""
    out = pd.DataFrame({c: [UNKNOWN_GROUP] * len(qids) for c in GROUP_COLUMNS})
    if groups is None:
        return out
    if not isinstance(groups, pd.DataFrame) or "query_id" not in groups.columns:
        raise InputError(
            f"groups must be a table (DataFrame) with a query_id column and any of "
            f"{list(GROUP_COLUMNS)}, e.g. inquire.load_queries('test'); got "
            f"{type(groups).__name__}"
        )
    have = [c for c in GROUP_COLUMNS if c in groups.columns]
    if not have:
        raise InputError(
            f"groups has none of the group columns {list(GROUP_COLUMNS)} (it has "
            f"{list(groups.columns)})"
        )
    ids = pd.to_numeric(groups["query_id"], errors="coerce")
    if ids.isna().any():
        raise InputError("groups: every query_id must be an integer")
    by_id = groups.assign(query_id=ids.astype(np.int64)).drop_duplicates("query_id")
    by_id = by_id.set_index("query_id")
    for col in have:
        values = by_id[col].reindex(qids)
        out[col] = values.where(values.notna(), UNKNOWN_GROUP).astype(str).to_numpy()
    return out


def _rerank_ranker(model: Any) -> tuple[Any, bool]:
    """``(ranker for run_rerank, may use the score cache)`` of a model argument."""
    from inquire.eval.rerank import BASELINES
    from inquire.rerank.clip import ClipReranker
    from inquire.rerank.registry import KINDS

    if isinstance(model, str):
        if model in BASELINES or model.partition(":")[0] in KINDS:
            return model, True  # a reranker id or a baseline, as `inquire eval rerank` takes
        return f"clip:{model}", True  # an embedding model: INQUIRE's CLIP reranking
    _, enc = as_encoder(model)
    return ClipReranker(enc), bool(enc.revision)


def evaluate_rerank(
    model: Any,
    *,
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = "test",
    queries: str | os.PathLike[str] | pd.DataFrame | None = None,
    k: int = 100,
    cache: bool = True,
    allow_failures: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 32,
    progress: bool = False,
) -> EvalResult:
    """INQUIRE-Rerank: score each query's 100 candidates with ``model``, rank them by score
    and evaluate the ranking of the pool (R = the relevant candidates in the pool).

    ``model``: an object with ``encode_text`` / ``encode_image`` (:class:`TextImageModel`;
    score = cosine similarity of the query text and each candidate image), an embedding
    model id (the same scoring, the registry's ``clip:<id>`` reranker), or any reranker id
    or baseline of ``inquire rerank list`` (``vlm:...``, ``api:...``, ``clip_score``,
    ``random``). ``data``: ``"val"`` / ``"test"`` (downloaded once) or local parquet shard(s)
    in the published layout (a file, a list of files or a folder of ``*.parquet``).
    ``queries``: query CSV file(s), a table or ``{query_id: text}`` giving the queries
    their INQUIRE ids (default: INQUIRE's tables for a split; local files without a
    ``query_id`` column are numbered 1, 2, ... in file order). ``k``: 100 (the pool:
    INQUIRE-Rerank's AP) or 50 (AP@50, normalised by min(R, 50)). ``cache``: keep scores in
    the score cache (only for models with a revision). ``device``, ``precision``,
    ``batch_size`` load a model given by id.
    """
    from inquire.data.queries import read_queries
    from inquire.data.rerank_set import load_rerank_set, read_rerank_set
    from inquire.eval.rerank import POOL_K, SHORT_K, run_rerank
    from inquire.rerank.registry import RerankOptions

    if k not in (POOL_K, SHORT_K) or isinstance(k, bool):
        raise InputError(
            f"k must be {POOL_K} (the whole pool, INQUIRE-Rerank's AP) or {SHORT_K} (AP@50), "
            f"got {k!r}"
        )
    ranker, cacheable = _rerank_ranker(model)
    if queries is None:
        table = None
    elif isinstance(queries, (pd.DataFrame, Mapping)):
        table = _query_frame(queries)
    elif isinstance(queries, (str, os.PathLike)) or _is_path_list(queries):
        files = [queries] if isinstance(queries, (str, os.PathLike)) else list(queries)
        table = pd.concat([read_queries(q) for q in files], ignore_index=True)
    else:
        raise InputError(
            f"queries must be a query CSV (or a list of them), a table with query_id and "
            f"query_text, or {{query_id: text}}; got {type(queries).__name__}"
        )
    if isinstance(data, str) and data in SPLITS:
        rerank_set = load_rerank_set(data, table)
    else:
        rerank_set = read_rerank_set(_rerank_files(data), queries=table)
    options = RerankOptions(device=device, precision=precision, batch_size=batch_size)
    result = run_rerank(
        rerank_set,
        ranker,
        options=options,
        cache=cache and cacheable,
        allow_failures=allow_failures,
        progress=progress,
    )
    return result.result if k == POOL_K else result.result_at_50


def _is_path_list(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, (str, os.PathLike)) for v in value)
    )


def _not_a_split(value: str, what: str) -> None:
    """Refuse ``value``, neither a split nor an existing path, suggesting a split when it
    looks like a misspelt one (``"tset"``, ``"Test"``)."""
    from inquire.errors import suggest

    lowered = value.strip().lower()
    hint = f" Did you mean {lowered!r}?" if lowered in SPLITS else suggest(lowered, SPLITS)
    raise InputError(
        f"{what} {value!r} is neither a split ({' or '.join(repr(s) for s in SPLITS)}) nor an "
        f"existing file.{hint}"
    )


def _rerank_files(data: Any) -> list[Path]:
    """The parquet shard(s) ``data`` names: a file, a folder of ``*.parquet`` or a list."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            files = sorted(path.glob("*.parquet"))
            if not files:
                raise InputError(
                    f"data folder {str(path)!r} holds no *.parquet file; pass 'val', 'test' or "
                    f"INQUIRE-Rerank parquet shard(s)"
                )
            return files
        if isinstance(data, str) and not path.exists() and not path.suffix:
            _not_a_split(data, "data")
        return [path]
    if _is_path_list(data):
        return [Path(p) for p in data]
    raise InputError(
        f"data must be 'val', 'test', a parquet file, a folder of them or a list of files; got "
        f"{type(data).__name__}"
    )


def _query_frame(queries: pd.DataFrame | Mapping[Any, Any]) -> pd.DataFrame:
    """A query table (``query_id``, ``query_text``, the group columns) from a table or from
    ``{query_id: text}``, checked: integer ids, each once, and texts that are non-empty."""
    from inquire.run import as_id

    if isinstance(queries, Mapping):
        table = pd.DataFrame(
            {
                "query_id": [as_id(q, "query id") for q in queries],
                "query_text": list(queries.values()),
            }
        )
    else:
        missing = [c for c in ("query_id", "query_text") if c not in queries.columns]
        if missing:
            raise InputError(
                f"the query table lacks column(s) {missing}; it needs query_id and query_text "
                f"(found {list(queries.columns)})"
            )
        table = queries.copy()
        table["query_id"] = [as_id(q, "query id") for q in table["query_id"]]
    if len(table) == 0:
        raise InputError("no queries given; pass at least one {query_id: text}")
    table["query_id"] = table["query_id"].astype(np.int64)
    twice = table["query_id"][table["query_id"].duplicated()]
    if len(twice):
        raise InputError(f"query id {int(twice.iloc[0])} appears more than once in the queries")
    for qid, text in zip(table["query_id"], table["query_text"], strict=True):
        if not isinstance(text, str) or not text.strip():
            raise InputError(
                f"query {int(qid)}: the query text is {text!r}; every query needs a non-empty "
                f"text to embed"
            )
    for col in GROUP_COLUMNS:
        if col not in table.columns:
            table[col] = UNKNOWN_GROUP
    return table


def _query_table(queries: Any) -> tuple[str, pd.DataFrame | str | os.PathLike[str] | None]:
    """``(split, queries)`` for :func:`~inquire.eval.two_stage.run_fullrank`."""
    if isinstance(queries, str) and queries in SPLITS:
        return queries, None
    if isinstance(queries, (Mapping, pd.DataFrame)):
        return "test", _query_frame(queries)
    if isinstance(queries, (str, os.PathLike)):
        path = Path(queries)
        if isinstance(queries, str) and not path.exists() and not path.suffix:
            _not_a_split(queries, "queries")
        return "test", queries  # a query CSV
    raise InputError(
        f"queries must be 'val', 'test', a query CSV, a table with query_id and query_text, "
        f"or {{query_id: text}}; got {type(queries).__name__}"
    )


def _check_qrels_arg(qrels: Any) -> None:
    if qrels is None or isinstance(qrels, (Qrels, str, os.PathLike)):
        return
    raise InputError(
        f"qrels must be an inquire.Qrels, an annotations CSV or None (INQUIRE's); got "
        f"{type(qrels).__name__}; build one with inquire.Qrels.from_dict({{query_id: "
        f"{{image_id: relevance}}}})"
    )


def evaluate_fullrank(
    model: Any,
    *,
    embeddings: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    queries: str | os.PathLike[str] | pd.DataFrame | Mapping[int, str] = "test",
    qrels: Qrels | str | os.PathLike[str] | None = None,
    k: int = 50,
    k_max: int | None = None,
    index: str | None = None,
    rerank: str | None = None,
    from_k: int = 100,
    cache: bool = True,
    out: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = False,
) -> EvalResult:
    """INQUIRE-Fullrank: embed each query with ``model``, retrieve the top ``k`` of a whole
    image collection by cosine similarity, evaluate.

    ``model``: a :class:`TextImageModel` object or a registry model id. The collection is
    ``embeddings``, a folder of image embeddings made by the same model (clip-retrieval
    layout: ``img_emb/img_emb_0.npy`` ``(n, d)`` + ``metadata/metadata_0.parquet`` with
    ``image_path`` and, if the ids are not to be joined on paths, ``image_id``; INQUIRE's
    published embeddings and ``inquire embed`` output are such folders), or ``images``, an
    image folder that is embedded with ``model`` first (into a temporary folder; its images
    get their ids by matching their paths to the judgments' ``image_path``, as INQUIRE's
    annotations carry). With both, ``images`` is the folder the embeddings' paths are
    relative to, used by ``rerank``.

    ``queries``: ``"val"`` / ``"test"`` (INQUIRE's, downloaded), a query CSV, a table
    (``query_id``, ``query_text``, optional groups) or ``{query_id: text}``. ``qrels``: a
    :class:`Qrels`, an annotations CSV, or ``None`` (INQUIRE's). ``k_max``: images retrieved
    per query (default ``k``); ``index``: a faiss index of the embeddings (default exact
    search). ``rerank``: a reranker id (``inquire rerank list``): its reranking of the top
    ``from_k`` is evaluated instead (two-stage). ``out``: write the result folder(s).
    ``workers``: image-decoding processes when embedding ``images``.
    """
    from inquire.eval.two_stage import run_fullrank

    k = _check_k(k)
    model_id, encoder = as_encoder(model)
    if embeddings is None and images is None:
        raise InputError(
            "pass embeddings=FOLDER (image embeddings of this model in the clip-retrieval "
            "layout) or images=FOLDER (images to embed with the model first)"
        )
    if embeddings is not None and images is not None and rerank is None:
        raise InputError(
            "images= with embeddings= is the image folder for rerank=; without a reranker "
            "pass only one of them"
        )
    split, query_arg = _query_table(queries)
    _check_qrels_arg(qrels)
    if embeddings is None and isinstance(qrels, Qrels) and not qrels.paths:
        # Checked before embedding a whole folder: the images' ids come from these paths.
        raise InputError(
            "images= gives the images ids by matching their paths to the judgments' image "
            "paths, and these judgments have none: pass Qrels(relevant, paths={image_id: "
            "path relative to the folder}), an annotations CSV with image_path, or "
            "embeddings= whose metadata carries image_id"
        )
    with ExitStack() as stack:
        emb = embeddings
        if emb is None:
            from inquire.embed.pipeline import embed_images

            emb = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inquire-emb-")))
            embed_images(
                encoder if encoder is not None else model_id,
                str(images),
                emb / "embeddings",
                batch_size=batch_size,
                workers=workers,
                device=None if encoder is not None else device,
                precision=None if encoder is not None else precision,
                progress=progress,
            )
            emb = emb / "embeddings"
            cache = False  # a temporary folder: nothing to look up again
        result = run_fullrank(
            model_id,
            emb,
            split=split,
            queries=query_arg,
            annotations=qrels,
            k=k,
            k_max=k_max,
            index=index,
            cache=cache,
            encoder=encoder,
            device=device,
            precision=precision,
            batch_size=batch_size,
            rerank=rerank,
            from_k=from_k,
            images=images,
            out=out,
            progress=progress,
        )
    return result.result


__all__ = [
    "ModelEncoder",
    "TextImageModel",
    "evaluate",
    "evaluate_fullrank",
    "evaluate_rerank",
]
