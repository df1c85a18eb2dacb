"""Read a results folder: its ``summary.json``, checked to be an inquire result summary, how
the results were made (:class:`Made`: model, reranker, protocol, split, pool, from the
summary's config), and the query ids of its ``per_query.csv``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inquire.errors import InputError, UnknownNameError

SUMMARY_FILE = "summary.json"
PER_QUERY_FILE = "per_query.csv"
TWO_STAGE_FOLDER = "two_stage"  # where `eval fullrank --rerank --out OUT` writes the result


def read_summary(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``summary.json`` of a results folder written by ``inquire evaluate`` / ``eval ...``."""
    folder = Path(folder)
    written_by = (
        "pass folders written by `inquire eval fullrank --out`, `inquire eval rerank --out` or "
        "`inquire evaluate --out`"
    )
    try:
        is_dir = folder.is_dir()
        if not is_dir and folder.name == SUMMARY_FILE and folder.is_file():
            folder, is_dir = folder.parent, True  # the summary itself: its folder is meant
        exists = is_dir or folder.exists()
    except OSError as exc:  # a symlink loop, a name too long, ...
        raise InputError(f"{str(folder)!r} cannot be read ({exc}); {written_by}") from None
    if not exists:
        if os.path.lexists(folder):
            raise InputError(
                f"{str(folder)!r} is a symbolic link to nothing (or a link loop); {written_by}"
            )
        raise InputError(f"{str(folder)!r} does not exist; {written_by}")
    if not is_dir:
        raise InputError(f"{str(folder)!r} is a file, not a results folder; {written_by}")
    path = folder / SUMMARY_FILE
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        hint = ""
        if (folder / TWO_STAGE_FOLDER / SUMMARY_FILE).is_file():
            hint = f" (its two-stage result is {str(folder / TWO_STAGE_FOLDER)!r})"
        raise InputError(f"{str(folder)!r} has no {SUMMARY_FILE}{hint}; {written_by}") from None
    except OSError as exc:
        raise InputError(f"{str(path)!r} cannot be read ({exc})") from None

    def no_constant(name: str) -> Any:  # NaN / Infinity are not JSON
        raise ValueError(f"{name} is not a JSON value")

    try:
        summary: dict[str, Any] = json.loads(raw.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # nested past any summary
        raise InputError(f"{str(path)!r} is not a readable summary: {exc}") from None
    if not isinstance(summary, dict) or "overall" not in summary or "k" not in summary:
        raise InputError(f"{str(path)!r} lacks 'overall' or 'k': not an inquire result summary")
    for key in ("overall", "by", "config"):
        value = summary.get(key)
        if not isinstance(value, dict) and (key == "overall" or value is not None):
            raise InputError(
                f"{str(path)!r}: {key!r} is a {type(value).__name__}; expected an object (an "
                f"inquire result summary)"
            )
    return summary


@dataclass(frozen=True)
class Made:
    """How a results folder was made, read from its ``summary.json`` config.

    ``model``: the embedding model (Fullrank) or the first stage (two-stage); ``reranker``:
    the reranker id without its protocol, or a baseline name; ``protocol``: the rerank
    protocol (``None`` for CLIP scorers and baselines, or when not recorded).
    """

    task: str  # fullrank | fullrank-two-stage | rerank
    model: str | None
    reranker: str | None
    protocol: str | None
    split: str | None
    n_queries: int | None
    from_k: int | None
    pool: int | list[int] | None
    failures: int
    imported_model: str | None = None  # the upstream model of an imported score cache

    @property
    def what(self) -> str:
        """The model or reranker, as the folder names it."""
        return str(self.reranker or self.model or "?")


def made_from(summary: Mapping[str, Any]) -> Made:
    """The :class:`Made` of a result summary (what :func:`read_summary` returns)."""
    cfg = summary.get("config") or {}
    if not isinstance(cfg, Mapping):
        raise InputError(f"'config' is a {type(cfg).__name__}; expected an object")

    def text(key: str) -> str | None:
        value = cfg.get(key)
        if value is None or isinstance(value, str):
            return value
        raise InputError(f"config {key!r} is {value!r}; expected a string")

    task = text("task") or ""
    model = text("model_id") if task == "fullrank" else text("first_stage_model")
    reranker: str | None = None
    protocol = text("protocol")
    if task == "rerank":
        ranker, suffix = split_protocol(text("ranker") or "")
        reranker = text("reranker") or ranker or None
        protocol = protocol or suffix
    elif task == "fullrank-two-stage":
        reranker = text("reranker")
    pool = cfg.get("candidates_per_query")
    if isinstance(pool, list):
        pool = [whole_number(v, "config 'candidates_per_query'") for v in pool]
    elif pool is not None:
        pool = whole_number(pool, "config 'candidates_per_query'")
    return Made(
        task=task,
        model=model,
        reranker=reranker,
        protocol=protocol,
        split=text("split"),
        n_queries=whole_number(summary.get("n_queries"), "'n_queries'", optional=True),
        from_k=whole_number(cfg.get("from_k"), "config 'from_k'", optional=True),
        pool=pool,
        failures=whole_number(cfg.get("failures"), "config 'failures'", optional=True) or 0,
        imported_model=_imported_model(cfg),
    )


def _imported_model(cfg: Mapping[str, Any]) -> str | None:
    """The reranker id of the upstream model whose released cache a ``cached:`` folder
    imported (``eval rerank --import-cache``, read from the file's name), if known."""
    imported = cfg.get("imported_cache")
    model = imported.get("model") if isinstance(imported, Mapping) else None
    if not isinstance(model, str):
        return None
    from inquire.rerank.protocol import upstream_model

    try:
        return upstream_model(model).reranker
    except UnknownNameError:
        return None


def split_protocol(ranker: str) -> tuple[str, str | None]:
    """``"api:gpt-4o-2024-08-06 (inquire-2024)"`` -> ``("api:gpt-4o-2024-08-06",
    "inquire-2024")``: the run name of a reranker that follows a protocol carries it."""
    m = re.fullmatch(r"(?P<id>.+?) \((?P<protocol>[\w.-]+)\)", ranker)
    return (m.group("id"), m.group("protocol")) if m else (ranker, None)


def whole_number(value: Any, what: str, optional: bool = False) -> Any:
    """``value`` as an int: a JSON integer (or a float with an integral value); ``None`` when
    ``optional`` and absent. Anything else (a string, a bool, 50.5, NaN) is an
    :class:`InputError` naming ``what``."""
    if value is None and optional:
        return None
    if (
        isinstance(value, float)
        and math.isfinite(value)
        and value.is_integer()
        and abs(value) < 2**53
    ):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InputError(f"{what} is {value!r}; expected a whole number")


def fraction(value: Any, where: str) -> float:
    """A metric value of a summary: a finite number in [0, 1] (AP and the others are
    fractions), else an :class:`InputError` naming ``where``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        x = float(value)
        if math.isfinite(x) and 0.0 <= x <= 1.0:
            return x
    raise InputError(f"{where} is {value!r}; expected a number between 0 and 1 (a fraction)")


def per_query_ids(folder: Path) -> list[str] | None:
    """The query ids listed in the folder's ``per_query.csv`` (``None`` when it has none)."""
    path = folder / PER_QUERY_FILE
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = csv.DictReader(fh)
            if "query_id" not in (rows.fieldnames or ()):
                raise InputError(f"{str(path)!r} has no 'query_id' column")
            return [str(row["query_id"]).strip() for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{str(path)!r} cannot be read ({exc})") from None
