"""Reproduce the published INQUIRE leaderboards: one recipe per row, and a check of results.

Every row of ``leaderboard.json`` (the single source of the published numbers) carries a
``reproduce`` entry: the embedding model (Fullrank), the reranker (Rerank, two-stage), an
OpenAI-compatible server when the model has no local class (VILA), and INQUIRE's released
score cache where one exists. :func:`recipes` turns them into the exact ``inquire`` commands;
:func:`check_results` sets result folders written by ``inquire eval ...`` beside the
published numbers.

Published values have one decimal, so a result reproduces a value when
``|ours x 100 - published| <= 0.05`` (:data:`ROUNDING`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inquire.errors import InputError, UnknownNameError
from inquire.report.leaderboard import _document

ROUNDING = 0.05  # half a unit of the published last decimal
_EPS = 1e-9  # float noise on the boundary (35.65 - 35.6 is 0.05000000000000071)
SUMMARY_FILE = "summary.json"
# The environment variables the commands use for the user's own paths.
PLACEHOLDERS = {
    "$INAT24": "the iNat24 folder (holding train/)",
    "$EMB": "a folder for embeddings (INQUIRE's published ones unpacked, or `inquire embed`)",
    "$INQUIRE_REPO": "a clone of github.com/inquire-benchmark/INQUIRE (its score caches)",
    "$VILA_URL": "an OpenAI-compatible server running VILA (e.g. http://localhost:8000/v1)",
}


@dataclass(frozen=True)
class Recipe:
    """How one published row is reproduced.

    ``published``: column (``overall`` and supercategories) -> value x100 (``None`` where not
    published). ``commands``: shell lines to run in order (empty when no command evaluates
    the row). ``without_gpu``: an alternative from INQUIRE's released score cache, if any.
    ``model`` / ``reranker``: what a results folder must name to match this row (or one of
    ``also_matches``, e.g. ``clip_score`` for the model that retrieved the Rerank pools).
    """

    task: str
    method: str
    kind: str
    published: dict[str, float | None]
    commands: tuple[str, ...]
    without_gpu: tuple[str, ...] = ()
    note: str | None = None
    model: str | None = None
    reranker: str | None = None
    cached: str | None = None
    from_k: int | None = None
    also_matches: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """A file-name form of the method: ``clip-vit-h-14-378-dfn``."""
        return _slug(self.method)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``inquire reproduce --json`` prints per row)."""
        return {
            "task": self.task,
            "method": self.method,
            "kind": self.kind,
            "published": self.published,
            "commands": list(self.commands),
            "without_gpu": list(self.without_gpu),
            "note": self.note,
        }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def _device(reranker: str) -> str:
    return " --device cuda" if reranker.startswith(("vlm:", "clip:")) else ""


def _fullrank_commands(
    method: str, rep: dict[str, Any], split: str, published: Sequence[str]
) -> tuple[str, ...]:
    model = rep.get("model")
    if model is None:
        return ()
    slug = _slug(method)
    emb = f"$EMB/{model if model in published else _slug(model)}"
    cmds = []
    if model not in published:
        cmds.append(
            f"inquire embed --model {model} --images $INAT24/train --out {emb} --device cuda"
        )
    reranker = rep.get("reranker")
    if reranker is None:
        cmds.append(
            f"inquire eval fullrank --model {model} --embeddings {emb} --split {split} --k 50 "
            f"--out results/fullrank/{slug}"
        )
    else:
        cmds.append(
            f"inquire eval fullrank --model {model} --embeddings {emb} --split {split} --k 50 "
            f"--k-max {rep['from_k']} --rerank {reranker} --from-k {rep['from_k']} "
            f"--images $INAT24{_device(reranker)} --out results/two-stage/{slug}"
        )
    return tuple(cmds)


def _rerank_commands(
    method: str, rep: dict[str, Any], split: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    reranker = rep["reranker"]
    slug = _slug(method)
    server = " --base-url $VILA_URL" if rep.get("server") else ""
    main = (
        f"inquire eval rerank --reranker {reranker} --split {split}{_device(reranker)}{server} "
        f"--out results/rerank/{slug}",
    )
    cache = rep.get("cache")
    if not cache:
        return main, ()
    alt = (
        f"inquire rerank import-cache $INQUIRE_REPO/{cache['file']} --name {cache['name']} "
        f"--trust-pickle --split {split}",
        f"inquire eval rerank --reranker cached:{cache['name']} --split {split} "
        f"--out results/rerank/{slug}-cached",
    )
    return main, alt


def task_info(task: str) -> dict[str, Any]:
    """The leaderboard entry of ``task`` (``fullrank`` or ``rerank``), rows included."""
    tasks = _document()["tasks"]
    if task not in tasks:
        raise UnknownNameError("leaderboard task", task, tasks)
    info: dict[str, Any] = tasks[task]
    return info


def recipes(task: str | None = None) -> list[Recipe]:
    """One :class:`Recipe` per published row, in leaderboard order (``task`` = one task)."""
    doc = _document()
    split = doc.get("reproduce", {}).get("split", "test")
    from inquire.embed.models import published_embeddings

    published = published_embeddings()
    names = list(doc["tasks"]) if task is None else [task]
    out = []
    for name in names:
        info = task_info(name)
        for row in info["rows"]:
            rep = row.get("reproduce", {})
            without_gpu: tuple[str, ...] = ()
            if name == "rerank":
                commands, without_gpu = _rerank_commands(row["method"], rep, split)
            else:
                commands = _fullrank_commands(row["method"], rep, split, published)
            cache = rep.get("cache") or {}
            out.append(
                Recipe(
                    task=name,
                    method=row["method"],
                    kind=row["kind"],
                    published={c: row.get(c) for c in info["columns"]},
                    commands=commands,
                    without_gpu=without_gpu,
                    note=rep.get("note"),
                    model=rep.get("model"),
                    reranker=rep.get("reranker"),
                    cached=cache.get("name"),
                    from_k=rep.get("from_k"),
                    also_matches=tuple(rep.get("also_matches", ())),
                )
            )
    return out


def _canonical_model(model_id: str | None) -> str | None:
    """An alias and the model id it stands for compare equal."""
    if model_id is None:
        return None
    from inquire.embed.models import ALIASES

    return ALIASES.get(model_id, model_id)


def _canonical_reranker(reranker_id: str | None) -> str | None:
    if reranker_id is None:
        return None
    if reranker_id.startswith("clip:"):
        return "clip:" + str(_canonical_model(reranker_id[len("clip:") :]))
    return reranker_id


@dataclass
class Checked:
    """One results folder set beside its published row.

    ``ours`` and ``diff`` are x100 per column (``diff = ours - published``); ``within`` is
    true when every published column is within :data:`ROUNDING`; ``notes`` say why a folder
    is not comparable (other split, other k, ...), in which case ``within`` is ``False``.
    """

    folder: str
    task: str
    method: str | None
    k: int | None
    n_queries: int | None
    published: dict[str, float | None] = field(default_factory=dict)
    ours: dict[str, float | None] = field(default_factory=dict)
    diff: dict[str, float | None] = field(default_factory=dict)
    within: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "folder": self.folder,
            "task": self.task,
            "method": self.method,
            "k": self.k,
            "n_queries": self.n_queries,
            "published": self.published,
            "ours": self.ours,
            "diff": self.diff,
            "within_rounding": self.within,
            "notes": self.notes,
        }


def read_summary(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``summary.json`` of a results folder written by ``inquire evaluate`` / ``eval ...``."""
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        raise InputError(
            f"{str(folder)!r} has no {SUMMARY_FILE}; pass folders written by `inquire eval "
            f"fullrank --out`, `inquire eval rerank --out` or `inquire evaluate --out`"
        )
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{str(path)!r} is not a readable summary: {exc}") from exc
    if not isinstance(summary, dict) or "overall" not in summary or "k" not in summary:
        raise InputError(f"{str(path)!r} lacks 'overall' or 'k': not an inquire result summary")
    return summary


def match_recipe(summary: dict[str, Any], candidates: Sequence[Recipe]) -> Recipe | None:
    """The published row a result summary reproduces, from its config; ``None`` if none."""
    cfg = summary.get("config") or {}
    task = cfg.get("task")
    if task == "fullrank":
        model = _canonical_model(cfg.get("model_id"))
        for r in candidates:
            if r.task == "fullrank" and r.reranker is None and _canonical_model(r.model) == model:
                return r
    elif task == "fullrank-two-stage":
        reranker = _canonical_reranker(cfg.get("reranker"))
        first = _canonical_model(cfg.get("first_stage_model"))
        for r in candidates:
            if r.task != "fullrank" or r.reranker is None:
                continue
            if _canonical_reranker(r.reranker) == reranker and (
                first is None or _canonical_model(r.model) == first
            ):
                return r
    elif task == "rerank":
        ranker = _canonical_reranker(cfg.get("ranker"))
        for r in candidates:
            if r.task != "rerank":
                continue
            if (
                _canonical_reranker(r.reranker) == ranker
                or (r.cached is not None and ranker == f"cached:{r.cached}")
                or ranker in r.also_matches
            ):
                return r
    return None


def _task_of(summary: dict[str, Any]) -> str:
    task = (summary.get("config") or {}).get("task", "")
    return "rerank" if task == "rerank" else "fullrank"


def check_results(
    folders: Sequence[str | os.PathLike[str]], method: str | None = None
) -> list[Checked]:
    """Set each results folder beside the published row it reproduces.

    The row is found from the folder's ``summary.json`` config (task, model, reranker), or
    is ``method`` (a published method name) when given. Values compared: ``overall`` and
    the four supercategories of the task's metric (AP), x100.
    """
    every = recipes()
    if method is not None and not any(r.method == method for r in every):
        raise UnknownNameError("published method", method, sorted({r.method for r in every}))
    out = []
    for folder in folders:
        summary = read_summary(folder)
        cfg = summary.get("config") or {}
        if method is not None:
            task = _task_of(summary)
            rows = [r for r in every if r.method == method and r.task == task] or [
                r for r in every if r.method == method
            ]
            recipe: Recipe | None = rows[0]
        else:
            recipe = match_recipe(summary, every)
        k = int(summary["k"])
        checked = Checked(
            folder=str(folder),
            task=recipe.task if recipe else _task_of(summary),
            method=recipe.method if recipe else None,
            k=k,
            n_queries=summary.get("n_queries"),
        )
        out.append(checked)
        if recipe is None:
            what = cfg.get("model_id") or cfg.get("reranker") or cfg.get("ranker") or "?"
            checked.notes.append(
                f"no published row matches task {cfg.get('task')!r} with {what!r}; name the "
                f"row with --method"
            )
            continue
        info = task_info(recipe.task)
        metric = info["metric"]
        by_super = (summary.get("by") or {}).get("supercategory") or {}
        for col, pub in recipe.published.items():
            src = summary["overall"] if col == "overall" else by_super.get(col)
            val = None if src is None or metric not in src else 100.0 * float(src[metric])
            checked.published[col] = pub
            checked.ours[col] = None if val is None else round(val, 4)
            checked.diff[col] = None if val is None or pub is None else round(val - pub, 4)
        expected = cfg.get("expected_random_ap")
        if recipe.reranker == "random" and expected is not None and k == int(info["check_k"]):
            # The published random baseline is an expectation, not one seeded order.
            seeded = checked.ours.get("overall")
            val = 100.0 * float(expected)
            checked.ours["overall"] = round(val, 4)
            pub = recipe.published.get("overall")
            checked.diff["overall"] = None if pub is None else round(val - pub, 4)
            checked.notes.append(
                f"overall is the expected AP of a random order; the seeded order scored "
                f"{format_value(seeded, 2)}"
            )
        comparable = True
        if k != int(info["check_k"]):
            comparable = False
            checked.notes.append(f"k = {k}, but the published numbers are at k = {info['check_k']}")
        split = cfg.get("split")
        want_split = _document().get("reproduce", {}).get("split", "test")
        if split is not None and split != want_split:
            comparable = False
            checked.notes.append(f"split {split!r}; the published numbers are on {want_split!r}")
        if recipe.from_k is not None and cfg.get("from_k") not in (None, recipe.from_k):
            comparable = False
            checked.notes.append(f"from_k = {cfg.get('from_k')}, published with {recipe.from_k}")
        missing = [c for c, v in checked.ours.items() if v is None and recipe.published[c]]
        if missing:
            checked.notes.append(f"no value for {missing} in the summary")
        checked.within = (
            comparable
            and not missing
            and all(d is None or abs(d) <= ROUNDING + _EPS for d in checked.diff.values())
        )
    return out


def format_value(value: float | None, digits: int = 1) -> str:
    """``35.6`` or ``-`` for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
