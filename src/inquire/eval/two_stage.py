"""Two-stage retrieval: rerank the top ``from_k`` of a full-rank run, evaluate the top ``k``.

    from inquire.eval import run_two_stage
    from inquire.eval.fullrank import evaluate_fullrank

    _, first = evaluate_fullrank("vit-h-14-378", queries, qrels, "emb/vit-h-14-378", k_max=100)
    two = run_two_stage(
        first, "vlm:llava-1.5/llava-hf/llava-1.5-7b-hf",
        embeddings="emb/vit-h-14-378", images="/data/inat24",   # image files of the candidates
        qrels=qrels, queries=queries, k=50, from_k=100,         # default score cache
    )
    two.result.aggregate(scaled=True)

:func:`run_two_stage` is what ``inquire eval fullrank --rerank`` runs; :func:`evaluate_two_stage`
is the core for callers that resolve images themselves (``image id -> path | PIL image |
bytes``) and manage the score cache.

Unlike INQUIRE-Rerank, R here is every relevant image of the query in the collection (the
full-rank definition), so the reranker can only recover what the first stage found.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from inquire._io import check_output_folder
from inquire.data.qrels import Qrels
from inquire.errors import InputError
from inquire.eval.evaluate import EvalResult, evaluate
from inquire.eval.rerank import RerankFailuresError, open_score_cache
from inquire.rerank.base import ImageLike, Reranker
from inquire.run import Run

if TYPE_CHECKING:
    from inquire.embed.store import EmbeddingStore
    from inquire.rerank.cache import ScoreCache
    from inquire.rerank.registry import RerankOptions

log = logging.getLogger(__name__)


@dataclass
class TwoStageResult:
    """The evaluation of the reranked top ``k``, the reranked run (top ``from_k``) and the
    candidates that could not be scored."""

    result: EvalResult
    run: Run
    failures: pd.DataFrame


def rerank_run(
    run: Run,
    reranker: Reranker,
    resolve_image: Callable[[int], ImageLike],
    query_texts: dict[int, str],
    from_k: int = 100,
    cache: Any = None,
    progress: bool = True,
) -> tuple[Run, pd.DataFrame]:
    """Rerank each query's top ``from_k`` of ``run``; return the new run and the failures.

    Failed candidates (NaN scores) are ranked below the scored ones.
    """
    from inquire.rerank.cache import score_candidates

    if from_k < 1:
        raise InputError(f"from_k must be >= 1, got {from_k}")
    missing = [q for q in run if q not in query_texts]
    if missing:
        raise InputError(f"run has queries without text, e.g. {missing[:5]}; pass their texts")
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    failures: list[dict[str, Any]] = []
    from inquire._progress import progress as progress_bar

    iterator = progress_bar(
        list(run), description=f"rerank {reranker.reranker_id}", unit="query", show=progress
    )
    for q in iterator:
        ids = run[q][0][:from_k]
        scores = score_candidates(
            reranker,
            query_texts[q],
            ids.tolist(),
            _resolver(resolve_image, ids),
            cache=cache,
        )
        bad = np.isnan(scores)
        failures.extend({"query_id": q, "image_id": int(i)} for i in ids[bad])
        results[q] = (ids, np.where(bad, -np.inf, scores))
    from inquire.eval.rerank import run_label

    name = f"{run.name}+{run_label(reranker)}@{from_k}"
    return Run(results, name=name), pd.DataFrame(failures, columns=["query_id", "image_id"])


def _resolver(
    resolve_image: Callable[[int], ImageLike], ids: np.ndarray
) -> Callable[[Sequence[int]], list[ImageLike]]:
    def images(positions: Sequence[int]) -> list[ImageLike]:
        return [resolve_image(int(ids[p])) for p in positions]

    return images


def image_resolver(
    image_paths: dict[int, str], images_root: str | os.PathLike[str]
) -> Callable[[int], Path]:
    """``image_id -> images_root / path`` for :func:`evaluate_two_stage`.

    ``image_paths`` maps ids to paths relative to ``images_root``, e.g. from an embedding
    store's metadata (``dict(zip(store.metadata.image_id, store.metadata.image_path))``).
    The file looked for is the path as recorded, then, for a path without an image suffix
    (INQUIRE's metadata leaves off ``.jpg``), the path + ``.jpg``
    (:func:`inquire.embed.folder.image_path_candidates`). An id without a path, or a missing
    file, is an :class:`InputError` naming both.
    """
    from inquire.embed.folder import image_path_candidates

    root = Path(images_root)

    def resolve(image_id: int) -> Path:
        rel = image_paths.get(int(image_id))
        if rel is None:
            raise InputError(
                f"image id {image_id} has no path in the image table; the first stage ranked "
                f"an image the collection's metadata does not list"
            )
        tried = [root / name for name in image_path_candidates(rel)]
        for path in tried:
            if path.is_file():
                return path
        raise InputError(
            f"image {image_id}: {' or '.join(repr(str(p)) for p in tried)} does not exist; "
            f"point the images folder at the root the metadata paths are relative to"
        )

    return resolve


def _check_from_k(k: int, from_k: int) -> None:
    if k > from_k:
        raise InputError(
            f"k={k} is larger than from_k={from_k}: only the top from_k are reranked; use "
            f"--from-k >= --k"
        )


def evaluate_two_stage(
    run: Run,
    reranker: Reranker,
    resolve_image: Callable[[int], ImageLike],
    qrels: Qrels,
    queries: pd.DataFrame,
    k: int = 50,
    from_k: int = 100,
    cache: Any = None,
    allow_failures: bool = False,
    progress: bool = True,
) -> TwoStageResult:
    """Rerank the top ``from_k`` of the first-stage ``run`` with ``reranker`` and evaluate the
    top ``k`` (R = all relevant images of the query, as in full-rank evaluation).

    ``resolve_image(image_id) -> path | PIL image | bytes`` is called only for candidates not
    in ``cache`` (a :class:`~inquire.rerank.cache.ScoreCache`). ``queries`` has the columns
    :func:`~inquire.eval.evaluate` needs (``query_id, query_text`` + groups). Candidates that
    could not be scored raise :class:`RerankFailuresError` unless ``allow_failures``.
    """
    _check_from_k(k, from_k)
    texts = {
        int(q): str(t) for q, t in zip(queries["query_id"], queries["query_text"], strict=True)
    }
    reranked, failures = rerank_run(
        run, reranker, resolve_image, texts, from_k=from_k, cache=cache, progress=progress
    )
    if len(failures) and not allow_failures:
        raise RerankFailuresError(
            f"{len(failures)} candidates could not be scored by {reranker.reranker_id!r}; run "
            f"again to retry them (the rest is cached) or allow failures to rank them last"
        )
    cfg = {
        "task": "fullrank-two-stage",
        "first_stage": run.name,
        "reranker": reranker.reranker_id,
        "revision": reranker.revision,
        "prompt_version": reranker.prompt_version,
        "protocol": getattr(reranker, "protocol", None),
        "from_k": from_k,
        "failures": len(failures),
    }
    result = evaluate(reranked, qrels, queries, k=k, config=cfg)
    return TwoStageResult(result, reranked, failures)


def run_two_stage(
    first: Run,
    reranker: str | Reranker,
    embeddings: str | os.PathLike[str] | EmbeddingStore,
    images: str | os.PathLike[str],
    qrels: Qrels,
    queries: pd.DataFrame,
    k: int = 50,
    from_k: int = 100,
    cache: ScoreCache | str | os.PathLike[str] | bool = True,
    options: RerankOptions | None = None,
    allow_failures: bool = False,
    progress: bool = True,
    out_dir: str | os.PathLike[str] | None = None,
    config_extra: Mapping[str, Any] | None = None,
) -> TwoStageResult:
    """Two-stage retrieval from a first-stage run over an embedding folder, end to end.

    Finds the image files of ``first``'s candidates from the store's metadata
    (``embeddings``: a folder in the clip-retrieval layout or an open
    :class:`~inquire.embed.store.EmbeddingStore`; paths relative to ``images``, ids as
    full-rank evaluation assigns them, see :func:`inquire.eval.fullrank.run_image_paths`),
    loads ``reranker`` when it is an id (with ``options``), reranks each query's top
    ``from_k`` and evaluates the top ``k`` (:func:`evaluate_two_stage`).

    ``cache``: ``True`` the default score cache, ``False`` none, a path a
    :class:`~inquire.rerank.cache.ScoreCache` file there (both closed on return), or an open
    cache (left open). ``config_extra`` is merged into the result's config. With ``out_dir``,
    ``per_query.csv``, ``summary.json`` and ``run.parquet`` (the reranked top ``from_k``) are
    written there. Returns the :class:`TwoStageResult`.
    """
    from inquire.embed.store import EmbeddingStore
    from inquire.eval.fullrank import run_image_paths
    from inquire.rerank import load_reranker

    _check_from_k(k, from_k)  # before any model is loaded
    if out_dir is not None:  # an unusable folder fails before the reranking, not after it
        check_output_folder(out_dir, "result folder")
    store = embeddings if isinstance(embeddings, EmbeddingStore) else EmbeddingStore(embeddings)
    resolve = image_resolver(run_image_paths(store, qrels), images)
    ranker = load_reranker(reranker, options) if isinstance(reranker, str) else reranker
    with ExitStack() as stack:
        two = evaluate_two_stage(
            first,
            ranker,
            resolve,
            qrels,
            queries,
            k=k,
            from_k=from_k,
            cache=open_score_cache(stack, cache),
            allow_failures=allow_failures,
            progress=progress,
        )
    two.result.config.update(config_extra or {})
    if out_dir is not None:
        two.result.save(out_dir, run=two.run)
    return two


@dataclass
class FullrankResult:
    """INQUIRE-Fullrank's evaluation (``first``) and run (``run``, the top ``k_max``), and
    the two-stage result when a reranker was given (``two_stage``, else ``None``)."""

    first: EvalResult
    run: Run
    two_stage: TwoStageResult | None = None

    @property
    def result(self) -> EvalResult:
        """The final evaluation: the two-stage one when there is one, else the first stage's."""
        return self.two_stage.result if self.two_stage is not None else self.first


def run_fullrank(
    model: str,
    embeddings: str | os.PathLike[str],
    *,
    split: str = "test",
    queries: str | os.PathLike[str] | pd.DataFrame | None = None,
    annotations: str | os.PathLike[str] | Qrels | None = None,
    k: int = 50,
    k_max: int | None = None,
    index: str | None = None,
    index_params: Mapping[str, float] | None = None,
    cache: bool = True,
    encoder: Any = None,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 32,
    screen: str = "auto",
    rerank: str | Reranker | None = None,
    from_k: int = 100,
    protocol: str = "inquire-2024",
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    images: str | os.PathLike[str] | None = None,
    allow_failures: bool = False,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_first_stage: Callable[[EvalResult], None] | None = None,
) -> FullrankResult:
    """INQUIRE-Fullrank end to end, optionally followed by two-stage reranking: what
    ``inquire eval fullrank`` and :func:`inquire.evaluate_fullrank` run.

    Queries are resolved once: the table or query CSV ``queries`` when given, else INQUIRE's
    ``split`` (downloaded); relevance labels the same way (``annotations``: a :class:`Qrels`,
    an annotations CSV, or ``None`` for INQUIRE's). ``model`` names the text model (loaded
    with ``device``, ``precision``, ``batch_size`` unless ``encoder`` is given, whose
    ``model_id`` it should be). The first stage retrieves the top ``k_max`` (default ``k``;
    at least ``from_k`` when reranking) exactly or with the faiss ``index`` and evaluates the
    top ``k`` (:func:`inquire.eval.fullrank.evaluate_fullrank`). With ``rerank`` (a reranker
    id or a loaded reranker, ``protocol`` for ids; ``base_url`` / ``api_key_env`` for an
    ``api:`` reranker's server), the top ``from_k`` are reranked using the
    image files under ``images`` and the top ``k`` evaluated again (:func:`run_two_stage`).

    ``out``: the first stage's result folder; the two-stage one goes to ``out/two_stage``.
    ``on_first_stage(result)`` is called as soon as the first stage is evaluated (the CLI
    prints its table before reranking starts). Reranker ids, ``screen``, ``k``/``from_k`` and
    ``out`` are checked before any model is loaded or any data is read.
    """
    from inquire.data.qrels import load_qrels, read_qrels
    from inquire.data.queries import load_queries, read_queries
    from inquire.eval.fullrank import data_files, evaluate_fullrank
    from inquire.index.screen import check_screen

    if rerank is not None:
        if isinstance(rerank, str):
            from inquire.eval.rerank import check_reranker_id

            check_reranker_id(rerank, baselines=False)
        if images is None:
            raise InputError(
                "reranking needs the image folder (--images ROOT, images=ROOT): the folder the "
                "embeddings' image paths are relative to (for iNat24, the folder that holds "
                "train/)"
            )
        _check_from_k(k, from_k)
    check_screen(screen)
    if out is not None:
        check_output_folder(out, "result folder")
    if isinstance(queries, pd.DataFrame):
        query_df, query_source = queries, "table"
    elif queries is not None:
        query_df, query_source = read_queries(queries), str(queries)
    else:
        query_df, query_source = load_queries(split), f"inquire:{split}"
    if isinstance(annotations, Qrels):
        qrels = annotations
    else:
        qrels = read_qrels(annotations) if annotations is not None else load_qrels()
    # the files read, so reports and the web page find the labels (precision-recall curves)
    files: dict[str, Any] = {
        "queries": query_source,
        "split": None if queries is not None else split,
    }
    if not isinstance(queries, pd.DataFrame) and not isinstance(annotations, Qrels):
        files.update(data_files(files["split"], queries, annotations))
    elif annotations is not None and not isinstance(annotations, Qrels):
        files["annotations"] = str(Path(annotations).resolve())
    first_k = max(k_max or k, from_k) if rerank is not None else k_max
    first, run = evaluate_fullrank(
        model,
        query_df,
        qrels,
        embeddings,
        k=k,
        k_max=first_k,
        index=index,
        index_params=index_params,
        out_dir=out,
        cache=cache,
        encoder=encoder,
        device=device,
        precision=precision,
        batch_size=batch_size,
        screen=screen,
        config_extra=files,
    )
    if on_first_stage is not None:
        on_first_stage(first)
    if rerank is None or images is None:
        return FullrankResult(first, run)
    from inquire.rerank import RerankOptions

    two = run_two_stage(
        run,
        rerank,
        embeddings,
        images,
        qrels,
        query_df,
        k=k,
        from_k=from_k,
        options=RerankOptions(
            device=device,
            precision=precision,
            protocol=protocol,
            base_url=base_url,
            api_key_env=api_key_env,
        ),
        allow_failures=allow_failures,
        progress=progress,
        out_dir=None if out is None else Path(out) / "two_stage",
        config_extra={"first_stage_model": model, **files},
    )
    return FullrankResult(first, run, two)
