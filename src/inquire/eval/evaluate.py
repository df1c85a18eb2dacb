"""Evaluate a :class:`~inquire.run.Run` against :class:`~inquire.data.Qrels`.

A result holds one row per query (``query_id``, the metrics as fractions, ``supercategory``,
``category``, ``iconic_group``) plus the configuration that produced it, and aggregates by
plain means over queries: overall and per group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inquire._io import atomic_path, check_output_folder, write_json
from inquire._version import __version__
from inquire.data.qrels import Qrels
from inquire.data.queries import QUERY_COLUMNS, UNKNOWN_GROUP
from inquire.errors import InputError
from inquire.metrics import (
    DEFAULT_METRICS,
    compute_metrics,
    expected_hits,
    relevance_with_ties,
    scale,
)
from inquire.run import Run

log = logging.getLogger(__name__)

GROUP_COLUMNS = ("supercategory", "category", "iconic_group")
PER_QUERY_FILE = "per_query.csv"
AGGREGATES_FILE = "aggregates.csv"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.parquet"


@dataclass
class EvalResult:
    """Per-query metrics (fractions in [0, 1]) plus the configuration that produced them."""

    per_query: pd.DataFrame
    k: int
    metrics: tuple[str, ...] = DEFAULT_METRICS
    config: dict[str, Any] = field(default_factory=dict)
    name: str = "run"

    @property
    def overall(self) -> dict[str, Any]:
        """The means over queries as ``summary.json``'s ``overall`` holds them:
        ``{"n_queries": int, "ap": float, "ndcg": ..., "mrr": ..., "precision": ...,
        "recall": ...}`` (one key per metric of :attr:`metrics`; fractions in [0, 1])."""
        return {"n_queries": len(self.per_query)} | {
            m: float(self.per_query[m].mean()) for m in self.metrics
        }

    def aggregate(self, by: str | None = None, scaled: bool = False) -> pd.DataFrame:
        """Mean of each metric overall (``by=None``, one row 'all') or per ``by`` group.

        Columns: ``group, n_queries`` + metrics. ``scaled`` multiplies as tables report.
        """
        cols = list(self.metrics)
        if by is None:
            df = pd.DataFrame([self.per_query[cols].mean()], columns=cols)
            df.insert(0, "n_queries", len(self.per_query))
            df.insert(0, "group", "all")
        else:
            if by not in GROUP_COLUMNS:
                raise InputError(f"cannot group by {by!r}; choose one of {GROUP_COLUMNS}")
            grouped = self.per_query.groupby(by, sort=True)
            df = grouped[cols].mean()
            df.insert(0, "n_queries", grouped.size())
            df = df.reset_index().rename(columns={by: "group"})
        if scaled:
            for m in cols:
                df[m] = df[m] * scale(m)
        return df

    def aggregates(self, scaled: bool = False) -> pd.DataFrame:
        """Every aggregate in one frame: ``by, group, n_queries`` + metrics.

        The first row is ``by="all", group="all"``; then one row per value of each of
        ``supercategory``, ``category`` and ``iconic_group`` (sorted within each).
        """
        frames = [self.aggregate(None, scaled)]
        frames[0].insert(0, "by", "all")
        for col in GROUP_COLUMNS:
            part = self.aggregate(col, scaled)
            part.insert(0, "by", col)
            frames.append(part)
        return pd.concat(frames, ignore_index=True)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: config, overall means and per-group means (fractions)."""

        def records(df: pd.DataFrame) -> dict[str, dict[str, float]]:
            return {
                str(r["group"]): {"n_queries": int(r["n_queries"])}
                | {m: float(r[m]) for m in self.metrics}
                for _, r in df.iterrows()
            }

        return {
            "name": self.name,
            "inquire_version": __version__,
            "k": self.k,
            "metrics": list(self.metrics),
            "n_queries": len(self.per_query),
            "overall": self.overall,
            "by": {g: records(self.aggregate(g)) for g in GROUP_COLUMNS},
            "config": self.config,
        }

    def save(self, out_dir: str | os.PathLike[str], run: Run | None = None) -> Path:
        """Write the result folder; return it.

        - ``per_query.csv``: ``query_id``, the metrics (fractions), the three group columns
        - ``aggregates.csv``: :meth:`aggregates` (fractions)
        - ``summary.json``: :meth:`summary` (config, package version, overall and per group)
        - ``run.parquet``: the run, when given

        Every file is written to a temporary file first and only then are they renamed into
        place (``summary.json`` last), so a failure while writing (a full disk, an
        interruption) leaves the folder as it was, never new tables beside an old summary. A
        ``run.parquet`` of an earlier result is removed when no run is given (before the
        summary is renamed). Two saves into the same folder at once take turns (a lock on the
        folder, where the OS has ``flock``), so the folder holds one whole result.
        """
        out = check_output_folder(out_dir, "result folder")
        out.mkdir(parents=True, exist_ok=True)
        with _folder_lock(out), contextlib.ExitStack() as stack:
            # Renamed in the reverse order of entering: the summary last.
            summary = stack.enter_context(atomic_path(out / SUMMARY_FILE))
            if run is None:  # an older result's run must not stay beside this summary
                stack.enter_context(_removed_on_success(out / RUN_FILE))
                run_tmp = None
            else:
                run_tmp = stack.enter_context(atomic_path(out / RUN_FILE))
            aggregates = stack.enter_context(atomic_path(out / AGGREGATES_FILE))
            per_query = stack.enter_context(atomic_path(out / PER_QUERY_FILE))
            with open(per_query, "w", encoding="utf-8", newline="") as fh:
                self.per_query.to_csv(fh, index=False)
            with open(aggregates, "w", encoding="utf-8", newline="") as fh:
                self.aggregates().to_csv(fh, index=False)
            if run is not None and run_tmp is not None:
                run.save_parquet(run_tmp)
            write_json(summary, self.summary())
        return out

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str]) -> EvalResult:
        """Read a folder written by :meth:`save`."""
        out = Path(out_dir)
        summary_path, pq_path = out / SUMMARY_FILE, out / PER_QUERY_FILE
        if not summary_path.is_file() or not pq_path.is_file():
            raise InputError(
                f"{str(out)!r} is not an evaluation result folder: it needs {SUMMARY_FILE} and "
                f"{PER_QUERY_FILE} (written by `inquire evaluate --out` or `inquire eval ...`)"
            )
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        per_query = pd.read_csv(pq_path, keep_default_na=False)
        return cls(
            per_query=per_query,
            k=int(summary["k"]),
            metrics=tuple(summary["metrics"]),
            config=summary.get("config", {}),
            name=summary.get("name", out.name),
        )


@contextlib.contextmanager
def _removed_on_success(path: Path) -> Iterator[None]:
    """Remove ``path`` (if there) when the block ends without an error."""
    yield
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` for the block; none where it cannot be had (no
    flock on Windows, a folder that cannot be opened for reading, a file system without
    locks), and the save goes on as before."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.debug("no lock on %s (%s); saving without one", folder, exc)
        yield
    finally:
        os.close(fd)  # releases the lock


def provenance() -> dict[str, Any]:
    """Package version, Python version and (when run from a checkout) the git revision."""
    info: dict[str, Any] = {"inquire_version": __version__, "python": platform.python_version()}
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if rev.returncode == 0:
            info["git_revision"] = rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def check_run_covers_queries(run: Run, query_ids: Sequence[int] | np.ndarray) -> None:
    """Fail when ``run`` is empty or shares no query id with ``query_ids``.

    Scoring such a run would give a table of zeros that looks like a (very bad) result; it is
    almost always the wrong split or the wrong query file."""
    wanted = {int(q) for q in query_ids}
    if len(run) == 0:
        raise InputError(
            f"run {run.name!r} holds no results; nothing to evaluate (check the run file)"
        )
    if not wanted & set(run):
        have, want = sorted(run), sorted(wanted)
        raise InputError(
            f"run {run.name!r} shares no query id with the query set: the run has {len(have)} "
            f"queries (e.g. {have[:5]}), the query set {len(want)} (e.g. {want[:5]}); evaluate "
            f"it against the split or --queries file it was made for"
        )


def check_queries_match_split(queries: pd.DataFrame, split: str, source: str) -> None:
    """Fail when the query table ``queries`` (read from ``source``) holds queries that are not
    in INQUIRE's ``split`` (downloaded once into the cache), instead of silently using one of
    the two."""
    from inquire.data.queries import load_queries

    split_ids = set(load_queries(split)["query_id"].astype(int))
    extra = sorted(set(queries["query_id"].astype(int)) - split_ids)
    if extra:
        raise InputError(
            f"--queries {source!r} and --split {split!r} disagree: {len(extra)} of its "
            f"{len(queries)} queries (e.g. {extra[:5]}) are not {split} queries; pass only "
            f"--queries to evaluate on that file, or only --split"
        )


def evaluate(
    run: Run,
    qrels: Qrels,
    queries: pd.DataFrame,
    k: int,
    metrics: Sequence[str] = DEFAULT_METRICS,
    config: dict[str, Any] | None = None,
    n_relevant: dict[int, int] | None = None,
) -> EvalResult:
    """Evaluate the top ``k`` of ``run`` for every query in ``queries``.

    A query the run does not cover counts as an empty list (all metrics 0). Run queries not in
    ``queries`` are ignored with a warning. A run with no query at all, or none of the query
    set's (e.g. a run of the val split scored against the test queries), is an
    :class:`InputError` (see :func:`check_run_covers_queries`). ``n_relevant`` overrides R
    per query (the Rerank task uses the relevant candidates in the pool); by default
    R = ``qrels.n_relevant``.
    Items with equal scores are tie groups: no metric depends on their order in the run.
    """
    missing_cols = [c for c in QUERY_COLUMNS if c not in queries.columns]
    if missing_cols:
        raise InputError(f"query table lacks column(s) {missing_cols}")
    if len(queries) == 0:
        raise InputError("the query table is empty; evaluate needs at least one query")
    qids = queries["query_id"].to_numpy(np.int64)
    check_run_covers_queries(run, qids)
    extra = sorted(set(run) - set(qids.tolist()))
    if extra:
        log.warning(
            "run has %d queries not in the query set (ignored), e.g. %s", len(extra), extra[:5]
        )
    uncovered = [int(q) for q in qids if int(q) not in run]
    if uncovered:
        log.warning(
            "run has no results for %d queries (scored 0), e.g. %s", len(uncovered), uncovered[:5]
        )
    empty, no_scores = np.empty(0, np.int64), np.empty(0, np.float64)
    ranked = [run[int(q)][0] if int(q) in run else empty for q in qids]
    scores = [run[int(q)][1] if int(q) in run else no_scores for q in qids]
    relevant = [qrels.get(int(q), frozenset()) for q in qids]
    if n_relevant is None:
        n_rel = np.array([len(s) for s in relevant], dtype=np.int64)
    else:
        n_rel = np.array([n_relevant.get(int(q), 0) for q in qids], dtype=np.int64)
    values = _metrics_at(k, ranked, scores, relevant, n_rel, metrics, qids)
    per_query = pd.DataFrame({"query_id": qids} | values)
    for col in GROUP_COLUMNS:
        # A missing group is a named value (as read_queries makes it): groupby would
        # silently drop NaN rows from the per-group aggregates.
        per_query[col] = queries[col].fillna(UNKNOWN_GROUP).to_numpy()
    cfg = {"k": k, "run": run.name, **(config or {}), **provenance()}
    return EvalResult(per_query=per_query, k=k, metrics=tuple(metrics), config=cfg, name=run.name)


# Metrics whose value at a cut-off k beyond every ranking and every R equals their value at
# max(longest ranking, largest R): the places past the list hold no hit and min(R, k) = R
# (AP's and nDCG's normalisation), so a matrix that wide gives the same numbers.
_WIDTH_FREE = frozenset({"ap", "ndcg", "mrr", "recall", "trec_ap"})
# Largest relevance matrix (cells, queries x k) built for a metric outside these rules.
MAX_CELLS = 50_000_000


def _metrics_at(
    k: int,
    ranked: list[np.ndarray],
    scores: list[np.ndarray],
    relevant: list[frozenset[int]],
    n_rel: np.ndarray,
    metrics: Sequence[str],
    qids: np.ndarray,
) -> dict[str, np.ndarray]:
    """``{metric: (nq,) fractions}`` at cut-off ``k``, in memory that follows the input.

    The relevance matrix is ``(nq, min(k, W))`` with ``W = max(longest ranking, largest R,
    1)``: a cut-off past every list and every R changes no hit, so the INQUIRE metrics keep
    their meaning exactly (AP@k still divides by min(R, k), which is R there), and P@k, the
    one that divides by k itself, is the hits over ``k``. Another metric needs the full
    width, which is refused beyond :data:`MAX_CELLS` cells.
    """
    longest = max((len(r) for r in ranked), default=0)
    width = min(k, max(longest, int(n_rel.max(initial=0)), 1))
    odd = [m for m in metrics if m not in _WIDTH_FREE and m != "precision"]
    if width < k and odd:
        if len(qids) * k > MAX_CELLS:
            raise InputError(
                f"--k {k:,} is too large for metric(s) {odd}: they need a {len(qids):,} x "
                f"{k:,} matrix; use a k of at most {max(MAX_CELLS // len(qids), 1):,} (the "
                f"longest ranking holds {longest:,} results)"
            )
        width = k
    # Tied scores form groups that every metric reads as a whole (see inquire.metrics).
    rel, ties = relevance_with_ties(ranked, scores, relevant, width, query_ids=qids)
    values = compute_metrics(rel, n_rel, metrics, query_ids=qids, ties=ties)
    if width < k and "precision" in values:
        # P@k = hits / k: the hits of the narrower matrix are all the hits (counted exactly)
        values["precision"] = expected_hits(rel, ties) / k
    return values


def evaluate_run_file(
    run: str | os.PathLike[str],
    k: int = 50,
    split: str | None = None,
    queries: str | os.PathLike[str] | None = None,
    annotations: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> EvalResult:
    """``inquire evaluate``: evaluate the run file ``run`` (TREC or inquire parquet, see
    :meth:`Run.read <inquire.run.Run.read>`) at ``k``.

    Queries: the CSV ``queries`` when given (checked against ``split`` when both are given:
    :func:`check_queries_match_split`), else INQUIRE's ``split`` (default ``test``).
    Labels: the CSV ``annotations``, else INQUIRE's. ``out``: a result folder to write
    (:meth:`EvalResult.save`, with the run), checked before any work
    (:func:`~inquire._io.check_output_folder`).
    """
    from inquire.data.qrels import load_qrels, read_qrels
    from inquire.data.queries import load_queries, read_queries

    if out is not None:
        check_output_folder(out)
    the_run = Run.read(run)
    split_name = split or "test"
    qs = read_queries(queries) if queries else load_queries(split_name)
    if queries and split:
        check_queries_match_split(qs, split, str(queries))
    qrels = read_qrels(annotations) if annotations else load_qrels()
    result = evaluate(
        the_run,
        qrels,
        qs,
        k=k,
        config={
            "task": "evaluate",
            "split": split_name if queries is None or split else None,
            "run_file": str(run),
            "queries": str(queries) if queries else f"inquire:{split_name}",
            "annotations": str(annotations) if annotations else "inquire:annotations",
        },
    )
    if out is not None:
        result.save(out, run=the_run)
    return result


def evaluate_query(
    ids: np.ndarray,
    scores: np.ndarray,
    relevant: Iterable[int],
    k: int,
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_relevant: int | None = None,
    query_id: int = 0,
) -> dict[str, float]:
    """The metrics (fractions) of one ranked list: ``ids`` ``(n,) int`` with ``scores``
    ``(n,) float``, the ``relevant`` image ids, R = ``n_relevant`` (default: how many
    relevant ids there are), cut-off ``k``. Same rules as :func:`evaluate`, ties included
    (it is :func:`evaluate` on a one-query run); bad input raises :class:`InputError`
    naming ``query_id``."""
    q = int(query_id)
    rel = {int(i) for i in relevant}
    one = pd.DataFrame({"query_id": [q], "query_text": [""]} | {g: [""] for g in GROUP_COLUMNS})
    result = evaluate(
        Run({q: (np.asarray(ids), np.asarray(scores))}),
        Qrels({q: rel}),
        one,
        k=k,
        metrics=metrics,
        n_relevant={q: len(rel) if n_relevant is None else int(n_relevant)},
    )
    row = result.per_query.iloc[0]
    return {m: float(row[m]) for m in metrics}
