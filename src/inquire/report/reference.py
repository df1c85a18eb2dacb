"""Runs beside a task's published INQUIRE leaderboard (the reference table of a report)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from inquire.report.leaderboard import Leaderboard

if TYPE_CHECKING:
    from inquire.eval.evaluate import EvalResult
    from inquire.report.build import Report


def reference_table(report: Report) -> pd.DataFrame | None:
    """Published leaderboard rows followed by this report's runs (AP, overall + supercats).

    Columns: ``source`` (``published`` or ``this report``), ``method``, ``overall`` and the
    supercategories, on the x100 scale. ``None`` when the report has no reference attached.
    """
    ref = report.reference
    if ref is None:
        return None
    cols = list(ref.columns)
    pub = ref.table[["method", *cols]].copy()
    pub.insert(0, "source", "published")
    rows = []
    if ref.metric in report.metrics:
        t = report.table
        for run in report.runs:
            sub = t[(t["run"] == run) & t["level"].isin(["overall", "supercategory"])]
            vals = {
                ("overall" if g == "all" else g): v
                for g, v in zip(sub["group"], sub[ref.metric], strict=True)
            }
            rows.append(
                {"source": "this report", "method": run} | {c: vals.get(c, math.nan) for c in cols}
            )
    return pd.concat(
        [pub, pd.DataFrame(rows, columns=["source", "method", *cols])], ignore_index=True
    )


@dataclass(frozen=True)
class ReferenceComparison:
    """Runs beside a task's published leaderboard: ``table`` (:func:`reference_table`, the
    runs' rows in the order given), ``leaderboard`` and ``notes`` (the report's notes)."""

    table: pd.DataFrame
    leaderboard: Leaderboard
    notes: list[str]


def reference_comparison(results: Sequence[EvalResult], task: str) -> ReferenceComparison | None:
    """``results`` (one task's runs) beside the published leaderboard of ``task``
    (``fullrank``, ``rerank``): a report without resampling, grouped by supercategory when
    every run has it, as :func:`reference_table`. None when ``task`` has no published
    numbers or the runs lack the leaderboard's metric. Raises :class:`InputError` when the
    runs cannot be reported together (see :func:`~inquire.report.build.build_report`)."""
    from inquire.report.build import build_report
    from inquire.report.leaderboard import leaderboard_tasks

    if task not in leaderboard_tasks():
        return None
    report = build_report(
        list(results),
        by=[g for g in ("supercategory",) if all(g in r.per_query for r in results)],
        n_resamples=0,
        reference=task,
    )
    table = reference_table(report)
    if table is None or report.reference is None:
        return None
    return ReferenceComparison(table, report.reference, list(report.notes))


def reference_title(report: Report, ref: Leaderboard) -> str:
    return (
        f"Published reference numbers: {ref.label}, {ref.metric.upper()}@{ref.k} (x100). "
        f"Rows marked 'this report' are your runs at k={report.k}."
    )
