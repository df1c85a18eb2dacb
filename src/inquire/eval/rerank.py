"""The INQUIRE-Rerank task: re-order each query's 100 fixed candidates.

Metrics are computed over the candidate pool exactly as INQUIRE does: the ranked list is the
whole pool (k = 100) and R is the number of relevant candidates *in the pool* (not all
relevant images in iNat24). AP@50 over the same ranking (normalised by min(R, 50)) is
reported beside it.

Rankers are a reranker id (see :mod:`inquire.rerank.registry`) or a baseline row of
:data:`BASELINES`: ``clip_score`` (the given first-stage order) and ``random`` (seeded). The
expected AP of a uniformly random order is known in closed form
(:func:`expected_random_ap`) and reported with the random baseline; INQUIRE reports ~23 on
the real test split.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inquire._io import atomic_open, check_output_folder, write_json
from inquire.data.rerank_set import RerankSet
from inquire.errors import InputError, InquireError, UnknownNameError
from inquire.eval.evaluate import EvalResult, evaluate
from inquire.run import Run

log = logging.getLogger(__name__)

POOL_K = 100
SHORT_K = 50
FAILURES_FILE = "failures.csv"
# How a rerank set's query ids were obtained (RerankSet.query_ids_from), as the result says.
QUERY_ID_SOURCES = {
    "data": "the query_id column of the data",
    "query table": "INQUIRE's query table, matched on the query text",
    "numbered": "numbered 1..n in file order (the data carry no query_id and no query table "
    "was given): ids do not join with INQUIRE's, and the seeded random baseline differs",
}


class RerankFailuresError(InquireError):
    """Some candidates could not be scored (e.g. API requests kept failing)."""


def _clip_score(rs: RerankSet, query_id: int, seed: int) -> np.ndarray:
    return rs.pool(query_id)["clip_score"].to_numpy(np.float64)


def _random(rs: RerankSet, query_id: int, seed: int) -> np.ndarray:
    # One generator per (seed, query): a query's order does not depend on the others.
    rng = np.random.default_rng([seed, int(query_id)])
    return rng.random(len(rs.pool(query_id)))


@dataclass(frozen=True)
class Baseline:
    """A ranking that needs no model: ``scores(rerank_set, query_id, seed) -> (n,)``."""

    name: str
    scores: Callable[[RerankSet, int, int], np.ndarray]
    help: str


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("clip_score", _clip_score, "the first-stage CLIP order given with the set"),
        Baseline("random", _random, "a uniformly random order (seeded)"),
    )
}


def check_reranker_id(reranker: str, baselines: bool = True) -> None:
    """Fail at once, with close matches, on an id that names no baseline or reranker kind
    (:class:`UnknownNameError`); a ``vlm:`` id must name a known family.

    Meant to run before any data is read or downloaded. ``baselines``: whether
    ``clip_score`` and ``random`` are valid here (INQUIRE-Rerank only: they need the set's
    given scores).
    """
    from inquire.rerank.registry import KINDS, parse_reranker_id

    if baselines and reranker in BASELINES:
        return
    if ":" not in reranker:
        valid = [*(BASELINES if baselines else ()), *(f"{k}:" for k in KINDS)]
        raise UnknownNameError("reranker", reranker, valid)
    kind, rest = parse_reranker_id(reranker)  # unknown kinds: "did you mean" the right one
    if kind.name == "vlm":
        from inquire.rerank.vlm import FAMILIES

        family = rest.partition("/")[0]
        if family not in FAMILIES:
            raise UnknownNameError("VLM family", family, FAMILIES)


def expected_random_ap(n: int, r: int, k: int) -> float:
    """Exact expected INQUIRE AP@k of a uniformly random order of ``n`` items, ``r`` relevant.

    E[sum_{i<=k} rel_i P@i] = sum_{i<=k} (1/i) (P(rel_i) + (i-1) P(rel_i and rel_j))
                            = sum_{i<=k} (1/i) (r/n + (i-1) r(r-1) / (n(n-1))),
    divided by min(r, k).
    """
    if r <= 0 or n <= 0:
        return 0.0
    k = min(k, n)
    i = np.arange(1, k + 1, dtype=np.float64)
    pair = r * (r - 1) / (n * (n - 1)) if n > 1 else 0.0
    total = float(np.sum((r / n + (i - 1) * pair) / i))
    return total / min(r, k)


@dataclass
class RerankResult:
    """Metrics at k = 100 over the pool (``result``), AP@50 (``result_at_50``), the run, and
    the failures (one row per candidate that could not be scored)."""

    result: EvalResult
    result_at_50: EvalResult
    run: Run
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)
    expected_random: float | None = None

    def table(self, scaled: bool = True) -> pd.DataFrame:
        """Overall row: AP (pool, k=100), AP@50, nDCG, MRR, ... (scaled as tables report)."""
        df = self.result.aggregate(scaled=scaled)
        ap50 = self.result_at_50.aggregate(scaled=scaled)["ap"].iloc[0]
        df.insert(list(df.columns).index("ap") + 1, "ap@50", ap50)
        return df

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """``out_dir/{per_query.csv, summary.json, run.parquet}`` (k = 100) plus
        ``out_dir/at50/`` and ``failures.csv`` when there were failures."""
        out = Path(out_dir)
        self.result.save(out, run=self.run)
        self.result_at_50.save(out / "at50")
        if len(self.failures):
            with atomic_open(out / FAILURES_FILE, "w", encoding="utf-8", newline="") as fh:
                self.failures.to_csv(fh, index=False)
        return out


def evaluate_rerank(
    rerank_set: RerankSet,
    ranker: str | Any,
    seed: int = 0,
    cache: Any = None,
    allow_failures: bool = False,
    progress: bool = True,
    config: dict[str, Any] | None = None,
) -> RerankResult:
    """Rerank every query's pool with ``ranker`` and evaluate it INQUIRE-Rerank's way.

    ``ranker``: a baseline name (``clip_score``, ``random``) or a loaded
    :class:`~inquire.rerank.base.Reranker`. ``cache``: a :class:`~inquire.rerank.cache.ScoreCache`
    (or None: no caching). Candidates that could not be scored (NaN) raise
    :class:`RerankFailuresError` unless ``allow_failures``: then they are ranked last and the
    result is flagged (``config['failures']``) and the failures are listed.
    """
    from inquire.rerank.cache import score_candidates

    baseline: Baseline | None = None
    reranker: Any = None
    if isinstance(ranker, str):
        if ranker not in BASELINES:
            raise UnknownNameError("baseline", ranker, BASELINES)
        baseline = BASELINES[ranker]
        name = baseline.name
    else:
        reranker = ranker
        name = run_label(reranker)
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    failures: list[dict[str, Any]] = []
    qids = rerank_set.query_ids
    texts = dict(zip(rerank_set.queries["query_id"], rerank_set.queries["query_text"], strict=True))
    from inquire._progress import progress as progress_bar

    iterator = progress_bar(
        qids, description=f"rerank {name}", unit="query", show=progress and baseline is None
    )
    for q in iterator:
        pool = rerank_set.pool(q)
        ids = pool["image_id"].to_numpy(np.int64)
        if baseline is not None:
            scores = baseline.scores(rerank_set, q, seed)
        else:
            scores = score_candidates(
                reranker, texts[q], ids.tolist(), _pool_images(rerank_set, q), cache=cache
            )
        bad = np.isnan(scores)
        for i in ids[bad]:
            failures.append({"query_id": q, "image_id": int(i), "query_text": texts[q]})
        # Failed candidates rank below every scored one (only reached with allow_failures).
        scores = np.where(bad, -np.inf, scores)
        results[q] = (ids, scores)
    fail_df = pd.DataFrame(failures, columns=["query_id", "image_id", "query_text"])
    if len(fail_df) and not allow_failures:
        # A reranker that cannot compute scores itself says what would help instead.
        retry = getattr(reranker, "failure_hint", None) or (
            "run again to retry only those (scored candidates are cached)"
        )
        raise RerankFailuresError(
            f"{len(fail_df)} of {len(rerank_set.candidates)} candidates could not be scored by "
            f"{name!r} (in {fail_df['query_id'].nunique()} queries, e.g. query "
            f"{int(fail_df['query_id'].iloc[0])}); {retry}, or pass --allow-failures to rank "
            f"them last and flag the result"
        )
    run = Run(results, name=name)
    n_rel = rerank_set.n_relevant()
    qrels = rerank_set.qrels()
    # AP is undefined for a pool without relevant candidates (R = 0): such queries cannot be
    # scored, so they are left out, named in the config and logged.
    empty = [q for q in qids if n_rel[q] == 0]
    queries = rerank_set.queries
    if empty:
        log.warning(
            "%d queries have no relevant candidate in their pool and are not evaluated: %s",
            len(empty),
            empty[:10],
        )
        queries = queries[~queries["query_id"].isin(empty)].reset_index(drop=True)
        qids = [q for q in qids if n_rel[q] != 0]
    expected = None
    if baseline is not None and baseline.name == "random":
        sizes = {q: len(rerank_set.pool(q)) for q in qids}
        expected = float(np.mean([expected_random_ap(sizes[q], n_rel[q], POOL_K) for q in qids]))
    sizes_all = sorted({len(rerank_set.pool(q)) for q in rerank_set.query_ids})
    cfg = {
        "task": "rerank",
        "ranker": name,
        "seed": seed,
        # one number when every pool has the same size, else [smallest, largest]
        "candidates_per_query": (
            sizes_all[0] if len(sizes_all) == 1 else [sizes_all[0], sizes_all[-1]]
        ),
        "query_ids": QUERY_ID_SOURCES.get(
            rerank_set.query_ids_from, str(rerank_set.query_ids_from)
        ),
        # absolute, so the web page can serve the candidates' images from these files
        "files": [str(Path(p).resolve()) for p in rerank_set.paths],
        "R": "relevant candidates in the pool",
        "failures": len(fail_df),
        "excluded_queries_no_relevant": empty,
        **({"expected_random_ap": expected} if expected is not None else {}),
        **(config or {}),
    }
    if baseline is None:
        cfg["reranker"] = str(reranker.reranker_id)
        cfg["revision"] = str(reranker.revision)
        cfg["prompt_version"] = str(reranker.prompt_version)
        cfg["protocol"] = getattr(reranker, "protocol", None)
        refusals = getattr(reranker, "refusals", None)
        if isinstance(refusals, list):  # API requests refused (HTTP 400) and scored 0
            cfg["refused_scored_0"] = len(refusals)
    kept = Run({q: run[q] for q in qids}, name=name)
    res = evaluate(kept, qrels, queries, k=POOL_K, config=cfg, n_relevant=n_rel)
    res50 = evaluate(
        kept, qrels, queries, k=SHORT_K, config={**cfg, "k": SHORT_K}, n_relevant=n_rel
    )
    if len(fail_df):
        log.warning("%d candidates failed and were ranked last; result flagged", len(fail_df))
    return RerankResult(res, res50, run, fail_df, expected)


def open_score_cache(stack: ExitStack, cache: Any) -> Any:
    """The :class:`~inquire.rerank.cache.ScoreCache` a ``cache`` argument names: ``True`` the
    default cache, ``False``/``None`` none, a path a cache file there (both closed with
    ``stack``), an open cache as it is (left open)."""
    from inquire.rerank.cache import ScoreCache

    if isinstance(cache, ScoreCache):
        return cache
    if cache is False or cache is None:
        return None
    return stack.enter_context(ScoreCache(None if cache is True else cache))


def run_rerank(
    rerank_set: RerankSet,
    reranker: str | Any,
    options: Any = None,
    cache: Any = True,
    seed: int = 0,
    allow_failures: bool = False,
    progress: bool = True,
    config: dict[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> RerankResult:
    """INQUIRE-Rerank end to end (``inquire eval rerank``): load ``reranker`` (a baseline
    name, a reranker id loaded with ``options``, a
    :class:`~inquire.rerank.registry.RerankOptions`, or a loaded reranker), score every
    query's pool through the score cache and evaluate (:func:`evaluate_rerank`).

    ``cache``: ``True`` the default score cache, ``False`` none, a path a cache file there,
    or an open :class:`~inquire.rerank.cache.ScoreCache` (left open); baselines never use
    one. With ``out_dir`` the result folder is written there. Returns the result.
    """
    from inquire.rerank import load_reranker

    if out_dir is not None:  # an unusable folder fails before the reranking, not after it
        check_output_folder(out_dir, "result folder")
    ranker: Any = reranker
    use_cache: Any = False
    if not (isinstance(reranker, str) and reranker in BASELINES):
        ranker = load_reranker(reranker, options) if isinstance(reranker, str) else reranker
        use_cache = cache
    with ExitStack() as stack:
        result = evaluate_rerank(
            rerank_set,
            ranker,
            seed=seed,
            cache=open_score_cache(stack, use_cache),
            allow_failures=allow_failures,
            progress=progress,
            config=config,
        )
    if out_dir is not None:
        result.save(out_dir)
    return result


def check_import_file(npy_path: str | os.PathLike[str], trust_pickle: bool) -> Path:
    """Refuse an import before any work (reading or downloading the Rerank data): an untrusted
    pickle (``trust_pickle`` false), or ``npy_path`` that is not a file. Returns the path."""
    from inquire.rerank.cache import PICKLE_REFUSAL

    path = Path(npy_path)
    if not trust_pickle:
        raise InputError(PICKLE_REFUSAL.format(path=str(path)))
    if path.is_dir():
        raise InputError(
            f"score cache {str(path)!r} is a folder; pass the released .npy file itself "
            f"(e.g. cache/llava-hf--llava-1.5-13b-hf--cache.npy in INQUIRE's repository)"
        )
    if not path.is_file():
        raise InputError(f"score cache {str(path)!r} does not exist")
    return path


def import_and_evaluate(
    rerank_set: RerankSet,
    npy_path: str | os.PathLike[str],
    name: str,
    *,
    trust_pickle: bool = False,
    protocol: str | None = None,
    model: str | None = None,
    prompt_template: str | None = None,
    cache: Any = True,
    allow_failures: bool = False,
    progress: bool = True,
    config: dict[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> RerankResult:
    """Import INQUIRE's released model-output cache ``npy_path`` as reranker
    ``cached:<name>`` and evaluate it on ``rerank_set``, in one step (``inquire eval rerank
    --reranker cached:NAME --import-cache FILE``).

    The import is :func:`inquire.rerank.cache.import_as_cached_reranker` (a pickle: refused
    unless ``trust_pickle``; ``model`` / ``prompt_template`` map its prompts to queries) into
    ``cache`` (``True``: the default score cache; a path: a cache file there), under
    ``protocol``; the evaluation is :func:`run_rerank` reading the same cache. The result's
    config records the file and the import's counts (``imported_cache``).
    """
    from inquire.rerank.cache import import_as_cached_reranker

    if cache is False or cache is None:
        raise InputError(
            "importing a score cache needs the score cache: drop --no-cache (or pass a cache "
            "file) to evaluate imported scores"
        )
    check_import_file(npy_path, trust_pickle)
    if out_dir is not None:  # an unusable folder fails before the import, not after it
        check_output_folder(out_dir, "result folder")
    report, target = import_as_cached_reranker(
        npy_path,
        name,
        rerank_set,
        protocol=protocol,
        trust_pickle=trust_pickle,
        prompt_template=prompt_template,
        model=model,
        cache_path=None if cache is True else cache,
    )
    log.info("imported %d scores from %s as %s", report.imported, npy_path, target.reranker_id)
    if report.imported == 0:
        # nothing to evaluate: say why here, not as "every candidate failed" afterwards
        raise InputError(
            f"no score in {str(npy_path)!r} matches the candidates: "
            f"{report.skipped_image} entries name an image not in the pools, "
            f"{report.skipped_query} a prompt that names no query, {report.skipped_value} hold "
            f"no score; pass INQUIRE's released cache (a dict keyed "
            f"'{{image_name}}--{{prompt}}') for the same Rerank split"
        )
    imported = {
        "file": str(Path(npy_path).resolve()),
        "imported": report.imported,
        "skipped_image": report.skipped_image,
        "skipped_query": report.skipped_query,
        "skipped_value": report.skipped_value,
        "refused_scored_0": report.refused,
        "model": report.model,
    }
    return run_rerank(
        rerank_set,
        target,
        cache=cache,
        allow_failures=allow_failures,
        progress=progress,
        config={**(config or {}), "imported_cache": imported},
        out_dir=out_dir,
    )


def run_label(reranker: Any) -> str:
    """A reranker's run name: its id, with its protocol when it follows one
    (``vlm:llava-1.5/llava-hf/llava-1.5-13b-hf (inquire-2024)``), so tables and reports
    that show run names show the protocol."""
    protocol = getattr(reranker, "protocol", None)
    return f"{reranker.reranker_id} ({protocol})" if protocol else str(reranker.reranker_id)


def _pool_images(rerank_set: RerankSet, query_id: int) -> Callable[[Sequence[int]], list[bytes]]:
    def images(positions: Sequence[int]) -> list[bytes]:
        return rerank_set.images(query_id, positions)

    return images


def save_rerank_summary(result: RerankResult, out_dir: str | os.PathLike[str]) -> Path:
    """Save the result and a ``table.json`` with the overall row (scaled)."""
    out = result.save(out_dir)
    write_json(out / "table.json", result.table().to_dict(orient="records"))
    return out
