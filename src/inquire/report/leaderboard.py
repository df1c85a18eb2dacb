"""The published INQUIRE leaderboards, shipped as package data (``leaderboard.json``).

These are reference numbers copied from the INQUIRE publication (arXiv:2411.02537), never
computed here. A report can show them beside its own runs, always labelled as published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import pandas as pd

from inquire.errors import UnknownNameError

LEADERBOARD_FILE = "leaderboard.json"


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    text = resources.files("inquire.report").joinpath(LEADERBOARD_FILE).read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@dataclass(frozen=True)
class Leaderboard:
    """One task's published table.

    ``table`` has columns ``method, size, kind`` plus ``columns`` (``overall`` and the four
    supercategories), values on the x100 scale, ``None``/NaN where not published.
    """

    task: str
    label: str
    metric: str
    k: int
    description: str
    columns: tuple[str, ...]
    table: pd.DataFrame
    source: str


def leaderboard_tasks() -> tuple[str, ...]:
    """Task names with published numbers (``fullrank``, ``rerank``)."""
    return tuple(_document()["tasks"])


def load_leaderboard(task: str) -> Leaderboard:
    """The published leaderboard of ``task`` (``fullrank`` or ``rerank``)."""
    doc = _document()
    tasks = doc["tasks"]
    if task not in tasks:
        raise UnknownNameError("reference leaderboard", task, tasks)
    entry = tasks[task]
    columns = tuple(entry["columns"])
    table = pd.DataFrame(entry["rows"], columns=["method", "size", "kind", *columns])
    table[list(columns)] = table[list(columns)].astype(float)
    src = doc["source"]
    return Leaderboard(
        task=task,
        label=entry["label"],
        metric=entry["metric"],
        k=int(entry["k"]),
        description=entry["description"],
        columns=columns,
        table=table,
        source=f"{src['paper']}; {src['tables']}",
    )
