"""Check results folders against the published INQUIRE leaderboards.

A folder reproduces a row when it was made the way the row was (:func:`check_results`):

- the same model, and for a large multimodal model the same rerank protocol (the default,
  ``inquire-2024``); model and protocol are separate fields of the folder's config;
- the whole published split (its split and its number of queries), the published k, and for
  two-stage rows the same first stage and pool (``from_k``); a Rerank folder's pools hold the
  published 100 candidates;
- no candidate left unscored;

and every published value is within the published rounding: values have one decimal, so
``|ours x 100 - published| <= 0.05`` (:data:`ROUNDING`). The rows and their commands are
:mod:`inquire.report.recipes`; reading a folder is :mod:`inquire.report.result_folder`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inquire.errors import InputError, UnknownNameError
from inquire.report.recipes import (
    Recipe,
    expected_queries,
    published_pool,
    published_protocol,
    published_split,
    recipes,
    task_info,
)
from inquire.report.result_folder import (
    PER_QUERY_FILE,
    SUMMARY_FILE,
    TWO_STAGE_FOLDER,
    Made,
    fraction,
    made_from,
    per_query_ids,
    read_summary,
    whole_number,
)

ROUNDING = 0.05  # half a unit of the published last decimal
_EPS = 1e-9  # float noise on the boundary (35.65 - 35.6 is 0.05000000000000071)
# What a check concluded about one folder (Checked.status).
REPRODUCES = "reproduces"
DIFFERS = "differs"  # made as the row was, a value beyond the rounding
NOT_COMPARABLE = "not comparable"  # other split, subset, k, pool, failures
OTHER_PROTOCOL = "other protocol"  # the row's model under another rerank protocol
NO_ROW = "no published row"
UNREADABLE = "unreadable"  # no summary.json, or one that is not an inquire result summary
STATUSES = (REPRODUCES, DIFFERS, NOT_COMPARABLE, OTHER_PROTOCOL, NO_ROW, UNREADABLE)
# Reranker kinds whose scores depend on the rerank protocol.
_PROTOCOL_KINDS = ("vlm:", "api:", "cached:")


def _canonical_model(model_id: str | None) -> str | None:
    """An alias (or INQUIRE's own id) and the model id it stands for compare equal."""
    if model_id is None:
        return None
    from inquire.embed.models import ALIASES, UPSTREAM_NAMES

    return ALIASES.get(model_id) or UPSTREAM_NAMES.get(model_id, model_id)


def _canonical_reranker(reranker_id: str | None) -> str | None:
    if reranker_id is None:
        return None
    if reranker_id.startswith("clip:"):
        return "clip:" + str(_canonical_model(reranker_id[len("clip:") :]))
    return reranker_id


def _api_name(reranker: str | None) -> str | None:
    """An API model as servers name it, without the organisation and case
    (``api:Efficient-Large-Model/VILA1.5-13B`` -> ``vila1.5-13b``); ``None`` for others."""
    if not reranker or not reranker.startswith("api:"):
        return None
    return reranker[len("api:") :].rsplit("/", 1)[-1].lower()


def _same_reranker(row: str | None, made: str | None) -> bool:
    """The row's reranker and a folder's: the same id, or the same served API model."""
    if row is None or made is None:
        return False
    a, b = _canonical_reranker(row), _canonical_reranker(made)
    return a == b or (_api_name(a) is not None and _api_name(a) == _api_name(b))


def _row_task(made: Made) -> str:
    return "rerank" if made.task == "rerank" else "fullrank"


def _same_row(made: Made, r: Recipe) -> bool:
    """Whether ``made`` names the model (and first stage) of row ``r``."""
    if made.task == "fullrank":
        return (
            r.task == "fullrank"
            and r.reranker is None
            and (_canonical_model(r.model) == _canonical_model(made.model))
        )
    if made.task == "fullrank-two-stage":
        return (
            r.task == "fullrank"
            and r.reranker is not None
            and _same_reranker(r.reranker, made.reranker)
            and (made.model is None or _canonical_model(r.model) == _canonical_model(made.model))
        )
    if made.task == "rerank":
        ranker = _canonical_reranker(made.reranker)
        return r.task == "rerank" and (
            _same_reranker(r.reranker, made.reranker)
            or (r.cached is not None and ranker == f"cached:{r.cached}")
            or ranker in r.also_matches
            # INQUIRE's released cache of the row's model, imported under any cached: name
            or (
                str(ranker).startswith("cached:")
                and _same_reranker(r.reranker, made.imported_model)
            )
        )
    return False


def _other_build(made: Made, candidates: Sequence[Recipe]) -> tuple[Recipe, str] | None:
    """The row whose model ``made`` names in another build, and why that build differs."""
    mine = made.reranker if made.task != "fullrank" else made.model
    canon = _canonical_reranker(mine) if made.task != "fullrank" else _canonical_model(mine)
    for r in candidates:
        if r.task != _row_task(made) or (made.task == "fullrank") != (r.reranker is None):
            continue
        for other, why in r.other_builds:
            theirs = (
                _canonical_reranker(other) if made.task != "fullrank" else _canonical_model(other)
            )
            if theirs == canon:
                return r, why
    return None


def match_recipe(summary: dict[str, Any], candidates: Sequence[Recipe]) -> Recipe | None:
    """The published row whose model a result summary names (from its config; the protocol
    is not looked at here, see :func:`check_results`); ``None`` if none."""
    made = made_from(summary)
    return next((r for r in candidates if _same_row(made, r)), None)


@dataclass
class Checked:
    """One results folder set beside its published row.

    ``ours`` and ``diff`` are x100 per column (``diff = ours - published``). ``status`` is
    one of :data:`STATUSES`; ``within`` is true only when the folder reproduces the row
    (made as the row was, every published column within :data:`ROUNDING`); ``notes`` say
    what differs (other split, a subset of the queries, other k, other protocol, ...).
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
    status: str = NO_ROW
    model: str | None = None
    protocol: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "folder": self.folder,
            "task": self.task,
            "method": self.method,
            "status": self.status,
            "model": self.model,
            "protocol": self.protocol,
            "k": self.k,
            "n_queries": self.n_queries,
            "published": self.published,
            "ours": self.ours,
            "diff": self.diff,
            "within_rounding": self.within,
            "notes": self.notes,
        }


def _compare_values(
    checked: Checked, recipe: Recipe, summary: Mapping[str, Any], metric: str
) -> dict[str, float | None]:
    """Fill ``checked``'s published, ours and diff (rounded for display); return the exact
    differences, which decide the verdict (a rounded 0.05004 would pass as 0.05)."""
    by_super = (summary.get("by") or {}).get("supercategory") or {}
    if not isinstance(by_super, Mapping):
        raise InputError(f"'by' 'supercategory' is {by_super!r}; expected an object")
    exact: dict[str, float | None] = {}
    for col, pub in recipe.published.items():
        src = summary["overall"] if col == "overall" else by_super.get(col)
        if src is not None and not isinstance(src, Mapping):
            raise InputError(f"the {col!r} entry is {src!r}; expected an object")
        val = None
        if src is not None and metric in src:
            val = 100.0 * fraction(src[metric], f"{col!r} {metric!r}")
        checked.published[col] = pub
        checked.ours[col] = None if val is None else round(val, 4)
        diff = None if val is None or pub is None else val - pub
        exact[col] = diff
        checked.diff[col] = None if diff is None else round(diff, 6)
    return exact


def _differences(made: Made, recipe: Recipe, k: int, info: Mapping[str, Any]) -> list[str]:
    """Why a folder is not made the way ``recipe``'s row was (empty: it is)."""
    out = []
    if k != int(info["check_k"]):
        out.append(f"k = {k}, but the published numbers are at k = {info['check_k']}")
    want = published_split()
    if made.split is not None and made.split != want:
        out.append(f"split {made.split!r}; the published numbers are on the {want!r} split")
    n_want = expected_queries(recipe.task, want)
    if n_want is not None and made.n_queries != n_want:
        n = "an unknown number" if made.n_queries is None else str(made.n_queries)
        what = "a subset of it is not a reproduction" if (made.n_queries or 0) < n_want else ""
        out.append(
            f"query count: {n} of the {n_want} queries of the {want!r} split were evaluated; a "
            f"published row is the whole split" + (f" ({what})" if what else "")
        )
    if recipe.from_k is not None:
        if made.from_k is None:
            out.append(
                f"pool: the folder does not record how many first-stage results were reranked; "
                f"the row reranks the top {recipe.from_k}"
            )
        elif made.from_k != recipe.from_k:
            out.append(
                f"pool: the top {made.from_k} of the first stage were reranked; the row reranks "
                f"the top {recipe.from_k}"
            )
        if made.model is not None and _canonical_model(made.model) != _canonical_model(
            recipe.model
        ):
            out.append(f"first stage {made.model!r}; the row's is {recipe.model!r}")
    if recipe.task == "rerank":
        pool = published_pool()
        if made.pool is not None and made.pool != pool:
            out.append(f"pool: {made.pool} candidates per query; the published pools hold {pool}")
    if made.failures:
        out.append(
            f"{made.failures} candidates could not be scored and were ranked last "
            f"(--allow-failures): not the published computation"
        )
    return out


def check_results(
    folders: Sequence[str | os.PathLike[str]], method: str | None = None
) -> list[Checked]:
    """Set each results folder beside the published row it reproduces.

    The row is found from the folder's ``summary.json`` config (task, model, reranker), or
    is ``method`` (a published method name) when given. A folder whose model is the row's
    under another rerank protocol, or another build of the row's model, is reported as such
    and never matched; a matched folder made on another split, a subset of the queries, at
    another k or pool is ``not comparable`` (its notes say which). Values compared:
    ``overall`` and the four supercategories of the task's metric (AP), x100.
    """
    every = recipes()
    if method is not None and not any(r.method == method for r in every):
        raise UnknownNameError("published method", method, sorted({r.method for r in every}))
    out = []
    for folder in folders:
        try:
            out.append(_check_one(folder, method, every))
        except InputError as exc:
            # one unreadable folder is reported in its place; the others are still checked
            why = str(exc) if str(folder) in str(exc) else f"{str(folder)!r}: {exc}"
            unread = Checked(folder=str(folder), task="?", method=None, k=None, n_queries=None)
            unread.status, unread.notes = UNREADABLE, [why]
            out.append(unread)
    return out


def _query_list_differences(folder: Path, n_queries: int | None) -> list[str]:
    """What the folder's per-query table says against its summary: a query evaluated twice
    (the summary's count would then overstate the queries covered), or another count."""
    ids = per_query_ids(folder)
    if ids is None:
        return []
    out = []
    dup = sorted(q for q, n in Counter(ids).items() if n > 1)
    if dup:
        out.append(
            f"{PER_QUERY_FILE} lists {len(dup)} query id(s) more than once (e.g. {dup[:3]}): "
            f"{len(set(ids))} distinct queries, not {len(ids)}"
        )
    if n_queries is not None and len(ids) != n_queries:
        out.append(f"{PER_QUERY_FILE} has {len(ids)} queries, the summary says {n_queries}")
    return out


def _search_differences(folder: Path, summary: Mapping[str, Any], recipe: Recipe) -> list[str]:
    """An approximate index is another computation than INQUIRE's exhaustive search (its
    ``NaiveKNNIndex``: every image scored). A two-stage folder's first stage is read from the
    folder above it (``eval fullrank --rerank --out OUT`` writes OUT and OUT/two_stage)."""
    if recipe.task != "fullrank":
        return []
    cfg = summary.get("config") or {}
    if recipe.from_k is not None and folder.name == TWO_STAGE_FOLDER:
        try:
            above = json.loads((folder.parent / SUMMARY_FILE).read_text(encoding="utf-8"))
            cfg = above.get("config") or {} if isinstance(above, dict) else {}
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            cfg = {}
    search = cfg.get("search") if isinstance(cfg, Mapping) else None
    if search is None or search == "exact":
        return []
    return [f"search: {search}; INQUIRE scored every image (exact search): run without --index"]


def _check_one(
    folder: str | os.PathLike[str], method: str | None, every: Sequence[Recipe]
) -> Checked:
    """:func:`check_results` for one folder (an :class:`InputError` when it cannot be read)."""
    summary = read_summary(folder)
    if Path(folder).name == SUMMARY_FILE and Path(folder).is_file():
        folder = Path(folder).parent
    made = made_from(summary)
    auto = next((r for r in every if _same_row(made, r)), None)
    if method is not None:
        task = _row_task(made)
        rows = [r for r in every if r.method == method and r.task == task] or [
            r for r in every if r.method == method
        ]
        recipe: Recipe | None = rows[0]
    else:
        recipe = auto
    k = whole_number(summary["k"], "'k'")
    checked = Checked(
        folder=str(folder),
        task=recipe.task if recipe else _row_task(made),
        method=recipe.method if recipe else None,
        k=k,
        n_queries=made.n_queries,
        model=made.what,
        protocol=made.protocol,
    )
    if recipe is None:
        other = _other_build(made, every)
        if other is not None:
            row, why = other
            checked.notes.append(
                f"{made.what!r} is another build than the published row {row.method!r} "
                f"({row.reranker or row.model}): {why}"
            )
        elif made.model is None and made.reranker is None:
            checked.notes.append(
                f"the folder (task {made.task!r}) does not record its model, so no published "
                f"row can be found from it; name the row with --method"
            )
        else:
            checked.notes.append(
                f"no published row matches task {made.task!r} with {made.what!r}; name the "
                f"row with --method"
            )
        return checked
    wanted = published_protocol()
    uses_protocol = str(recipe.reranker or "").startswith(_PROTOCOL_KINDS)
    if uses_protocol and made.protocol is not None and made.protocol != wanted:
        checked.status = OTHER_PROTOCOL
        checked.method = None
        checked.notes.append(
            f"made under rerank protocol {made.protocol!r}; the published row "
            f"{recipe.method!r} was made under {wanted!r}, so this folder is not compared "
            f"with it"
        )
        return checked
    info = task_info(recipe.task)
    exact = _compare_values(checked, recipe, summary, info["metric"])
    cfg = summary.get("config") or {}
    expected = cfg.get("expected_random_ap")
    if recipe.reranker == "random" and expected is not None and k == int(info["check_k"]):
        # The published random baseline is an expectation, not one seeded order.
        seeded = checked.ours.get("overall")
        val = 100.0 * fraction(expected, "config 'expected_random_ap'")
        checked.ours["overall"] = round(val, 4)
        pub = recipe.published.get("overall")
        exact["overall"] = None if pub is None else val - pub
        checked.diff["overall"] = None if pub is None else round(val - pub, 6)
        checked.notes.append(
            f"overall is the expected AP of a random order; the seeded order scored "
            f"{format_value(seeded, 2)}"
        )
    if recipe.from_k is not None and made.model is None:
        checked.notes.append(
            f"the folder does not record its first stage; assumed {recipe.model!r} (the row's)"
        )
    if uses_protocol and made.protocol is None:
        checked.notes.append(f"the folder does not record its protocol; assumed {wanted!r}")
    if made.split is None:
        checked.notes.append(
            "the folder does not record its split (made from local files): judged by its "
            "query count"
        )
    differences = _differences(made, recipe, k, info)
    if method is not None and auto is not None and auto is not recipe:
        differences.append(
            f"made with {made.what!r}, the model of the published row {auto.method!r}, not of "
            f"{recipe.method!r}"
        )
    elif method is not None and auto is None:
        what = (
            "the folder does not record its model"
            if made.model is None and made.reranker is None
            else f"{made.what!r} is not the row's model as inquire names it"
        )
        checked.notes.append(f"{what}; compared with {recipe.method!r} as --method says")
    differences += _query_list_differences(Path(folder), made.n_queries)
    differences += _search_differences(Path(folder), summary, recipe)
    checked.notes.extend(differences)
    missing = [c for c, v in checked.ours.items() if v is None and recipe.published[c] is not None]
    if missing:
        checked.notes.append(f"no value for {missing} in the summary")
    # the exact differences decide: a rounded 0.05004 must not pass as 0.05
    within = not missing and all(d is None or abs(d) <= ROUNDING + _EPS for d in exact.values())
    beyond = [
        f"{c} {round(d, 6):+}"
        for c, d in exact.items()
        if d is not None and abs(d) > ROUNDING + _EPS
    ]
    if beyond:
        checked.notes.append(f"beyond the published rounding (+-{ROUNDING}): {', '.join(beyond)}")
    if differences:
        checked.status = NOT_COMPARABLE
    else:
        checked.status = REPRODUCES if within else DIFFERS
    checked.within = checked.status == REPRODUCES
    return checked


def all_reproduce(checked: Sequence[Checked]) -> bool:
    """Whether every checked folder reproduces its row (what ``--check``'s exit status says)."""
    return bool(checked) and all(c.status == REPRODUCES for c in checked)


def format_value(value: float | None, digits: int = 1) -> str:
    """``35.6`` or ``-`` for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
