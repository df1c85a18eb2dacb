"""One evaluation result folder as the pages show it: its name (never a server path), its
id in URLs, its per-query rows and ranked lists, read once."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from inquire.eval.evaluate import GROUP_COLUMNS, RUN_FILE, EvalResult
from inquire.run import Run


def slug_of(name: str) -> str:
    """``name`` as a run's id in URLs (letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def display_name(name: str) -> str:
    """A run's name as the pages show it: never a path of the server (a TREC tag or a file
    name given as ``/srv/runs/clip.trec`` shows as ``clip.trec``)."""
    last = re.split(r"[\\/]+", str(name).strip().rstrip("/\\"))[-1]
    return last.strip() or "run"


@dataclass
class RunEntry:
    """One evaluation result folder shown by the page; ``slug`` is its id in URLs."""

    slug: str
    path: Path
    result: EvalResult

    @property
    def name(self) -> str:
        """The run's name without any directory part (see :func:`display_name`)."""
        return display_name(self.result.name)

    @property
    def task(self) -> str | None:
        task = self.result.config.get("task")
        return str(task) if task else None

    @cached_property
    def shown_result(self) -> EvalResult:
        """The result under its display name (what reports and comparisons print)."""
        return dataclasses.replace(self.result, name=self.name)

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


__all__: Sequence[str] = ["RunEntry", "display_name", "slug_of"]
