"""Build a report: every run's metrics overall and per group, with bootstrap intervals.

A :class:`Report` is data (a pandas table plus the settings that produced it); the
formats of :mod:`inquire.report.formats` turn it into terminal, Markdown, CSV, LaTeX or
HTML text. Values are on the scale INQUIRE reports: AP, nDCG, P and R x100, MRR a fraction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from inquire.errors import InputError, UnknownNameError
from inquire.eval.evaluate import GROUP_COLUMNS, RUN_FILE, EvalResult
from inquire.metrics import scale
from inquire.report.leaderboard import Leaderboard, load_leaderboard
from inquire.stats import bootstrap_ci

log = logging.getLogger(__name__)

OVERALL = "overall"
LEVELS = (OVERALL, *GROUP_COLUMNS)
LEVEL_TITLES = {
    OVERALL: "Overall",
    "supercategory": "Supercategory",
    "category": "Category",
    "iconic_group": "Iconic group",
}
DEFAULT_RESAMPLES = 10000
DEFAULT_CONFIDENCE = 0.95


@dataclass
class Report:
    """Every run's metrics per level and group.

    ``run_files`` maps a run to its ``run.parquet`` when its folder has one.
    ``table`` has one row per ``(level, group, run)`` with columns ``level, group, run,
    n_queries`` and, for each metric ``m``, ``m`` (the mean over the group's queries) and
    ``m_lo``, ``m_hi`` (the bootstrap interval; NaN when ``n_resamples == 0``), all on the
    table scale (:func:`inquire.metrics.scale`). ``level`` is ``overall`` (group ``all``) or
    a grouping column.
    """

    runs: tuple[str, ...]
    k: int
    metrics: tuple[str, ...]
    levels: tuple[str, ...]
    table: pd.DataFrame
    n_resamples: int
    seed: int
    confidence: float
    results: list[EvalResult] = field(default_factory=list)
    run_files: dict[str, Path] = field(default_factory=dict)
    reference: Leaderboard | None = None
    notes: list[str] = field(default_factory=list)

    def level_table(self, level: str) -> pd.DataFrame:
        """The rows of one level, in (group, run) order."""
        return self.table[self.table["level"] == level].reset_index(drop=True)

    @property
    def ci_description(self) -> str:
        """One sentence saying how the intervals were computed."""
        if self.n_resamples == 0:
            return "No confidence intervals (bootstrap disabled)."
        return (
            f"{self.confidence:.0%} percentile bootstrap confidence intervals over queries "
            f"({self.n_resamples:,} resamples, seed {self.seed}), shown as mean [lo, hi]."
        )


def load_results(paths: Sequence[str | os.PathLike[str] | EvalResult]) -> list[EvalResult]:
    """Load result folders (or pass through :class:`EvalResult` objects)."""
    if not paths:
        raise InputError("no results given; pass one or more result folders")
    return [p if isinstance(p, EvalResult) else EvalResult.load(Path(p)) for p in paths]


def unique_names(results: Sequence[EvalResult]) -> list[str]:
    """Run names made unique (``name``, ``name (2)``, ...) so tables never merge two runs."""
    seen: dict[str, int] = {}
    names = []
    for r in results:
        seen[r.name] = seen.get(r.name, 0) + 1
        names.append(r.name if seen[r.name] == 1 else f"{r.name} ({seen[r.name]})")
    return names


def check_same_k(results: Sequence[EvalResult], names: Sequence[str]) -> int:
    """The common cut-off ``k`` of ``results``; an :class:`InputError` naming them if not."""
    ks = {r.k for r in results}
    if len(ks) != 1:
        listing = ", ".join(f"{n!r} k={r.k}" for n, r in zip(names, results, strict=True))
        raise InputError(
            f"runs were evaluated at different cut-offs ({listing}); AP@k at different k are "
            f"not comparable. Re-evaluate them with the same --k"
        )
    return ks.pop()


def common_metrics(results: Sequence[EvalResult], notes: list[str]) -> tuple[str, ...]:
    """Metrics present in every result (in the first result's order)."""
    first = results[0].metrics
    shared = tuple(m for m in first if all(m in r.metrics for r in results))
    dropped = sorted({m for r in results for m in r.metrics} - set(shared))
    if dropped:
        notes.append(f"metrics {dropped} are missing from some runs and are not shown")
    if not shared:
        raise InputError("the runs share no metric; evaluate them with the same metrics")
    return shared


def build_report(
    results: Sequence[str | os.PathLike[str] | EvalResult],
    by: Sequence[str] = GROUP_COLUMNS,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    metrics: Sequence[str] | None = None,
    reference: str | None = None,
) -> Report:
    """Tabulate ``results`` overall and per ``by`` group with bootstrap intervals.

    ``results``: result folders (``EvalResult.save``) or :class:`EvalResult` objects, all
    evaluated at the same k. ``n_resamples`` bootstrap resamples of the queries per
    (run, group), seeded with ``seed`` (0 disables intervals). ``reference``: ``fullrank``
    or ``rerank`` to attach the published leaderboard.
    """
    res = load_results(results)
    names = unique_names(res)
    k = check_same_k(res, names)
    run_files = {
        name: Path(src) / RUN_FILE
        for name, src in zip(names, results, strict=True)
        if not isinstance(src, EvalResult) and (Path(src) / RUN_FILE).is_file()
    }
    notes: list[str] = []
    shown = common_metrics(res, notes)
    if metrics is not None:
        for m in metrics:
            if m not in shown:
                raise UnknownNameError("metric in these results", m, shown)
        shown = tuple(metrics)
    for level in by:
        if level not in GROUP_COLUMNS:
            raise UnknownNameError("grouping", level, GROUP_COLUMNS)
    if n_resamples < 0:
        raise InputError(f"--bootstrap must be >= 0 resamples, got {n_resamples}")
    qsets = {frozenset(r.per_query["query_id"].tolist()) for r in res}
    if len(qsets) > 1:
        notes.append(
            "the runs cover different query sets; their means are not over the same queries"
        )
    levels = (OVERALL, *by)
    rows: list[dict[str, object]] = []
    for level in levels:
        frames = {}
        for name, r in zip(names, res, strict=True):
            pq = r.per_query
            if level != OVERALL and level not in pq.columns:
                raise InputError(f"result {name!r} has no {level!r} column in per_query.csv")
            frames[name] = pq
        groups = (
            ["all"]
            if level == OVERALL
            else sorted({str(g) for pq in frames.values() for g in pq[level].astype(str)})
        )
        for group in groups:
            for name, pq in frames.items():
                sub = pq if level == OVERALL else pq[pq[level].astype(str) == group]
                if sub.empty:
                    continue
                rows.append(_row(level, group, name, sub, shown, n_resamples, seed, confidence))
    table = pd.DataFrame(rows)
    ref = load_leaderboard(reference) if reference else None
    if ref is not None and k != ref.k:
        notes.append(
            f"the published {ref.label} numbers are {ref.metric.upper()}@{ref.k}; these runs "
            f"use k={k}"
        )
    return Report(
        runs=tuple(names),
        k=k,
        metrics=shown,
        levels=levels,
        table=table,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        results=res,
        run_files=run_files,
        reference=ref,
        notes=notes,
    )


def _row(
    level: str,
    group: str,
    run: str,
    sub: pd.DataFrame,
    metrics: Sequence[str],
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, object]:
    values = sub[list(metrics)].to_numpy(np.float64)
    row: dict[str, object] = {"level": level, "group": group, "run": run, "n_queries": len(sub)}
    if n_resamples > 0:
        mean, lo, hi = bootstrap_ci(
            values, n_resamples=n_resamples, seed=seed, confidence=confidence
        )
    else:
        mean = values.mean(axis=0)
        lo = hi = np.full(len(metrics), np.nan)
    for i, m in enumerate(metrics):
        s = scale(m)
        row[m], row[f"{m}_lo"], row[f"{m}_hi"] = mean[i] * s, lo[i] * s, hi[i] * s
    return row


def curve_problems(report: Report, relevance: str | os.PathLike[str] | None) -> dict[str, str]:
    """Why each run of ``report`` that cannot get a precision-recall curve cannot, by run name.

    A curve needs the run's ranked list (``run.parquet`` in its result folder) and the
    relevance labels (``relevance``: the CSV that will be read, or None when none was given
    or found). Runs missing from the returned dict can be drawn.
    """
    problems = {}
    for name in report.runs:
        if name not in report.run_files:
            problems[name] = (
                "its result folder has no run.parquet (result folders written by "
                "`inquire evaluate --out` or `inquire eval ... --out` have one)"
            )
        elif relevance is None:
            problems[name] = (
                "no relevance labels: pass --annotations FILE.csv (none of the results names "
                "an annotations file that exists here)"
            )
    return problems
