"""One recipe per published INQUIRE leaderboard row: the exact ``inquire`` commands that
reproduce it, and what a results folder must name to be compared with it.

Every row of ``leaderboard.json`` (the single source of the published numbers) carries a
``reproduce`` entry: the embedding model (Fullrank), the reranker (Rerank, two-stage), an
OpenAI-compatible server when the model has no local class (VILA), INQUIRE's released
score cache where one exists, and the ids of other builds of the same model that do not give
the published numbers (``other_builds``). :func:`recipes` turns them into :class:`Recipe` s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inquire.errors import UnknownNameError
from inquire.report.leaderboard import _document
from inquire.report.result_folder import TWO_STAGE_FOLDER

# The environment variables the commands use for the user's own paths.
PLACEHOLDERS = {
    "$INAT24": "the iNat24 folder (holding train/)",
    "$EMB": "a folder for embeddings (INQUIRE's published ones unpacked, or `inquire embed`)",
    "$INQUIRE_REPO": "a clone of github.com/inquire-benchmark/INQUIRE (its score caches)",
    "$VILA_URL": "an OpenAI-compatible server running VILA (e.g. http://localhost:8000/v1)",
    "$INQUIRE_WILDCLIP_DIR": "read by inquire: the folder holding WildCLIP's checkpoints "
    "(wildclip_vitb16_t1.pth, wildclip_vitb16_t1t7_lwf.pth)",
}


@dataclass(frozen=True)
class Recipe:
    """How one published row is reproduced.

    ``published``: column (``overall`` and supercategories) -> value x100 (``None`` where not
    published). ``commands``: shell lines to run in order (empty when no command evaluates
    the row). ``without_gpu``: an alternative from INQUIRE's released score cache, if any.
    ``check``: the results folder the commands write, to pass to ``inquire reproduce --check``.
    ``model`` / ``reranker``: what a results folder must name to match this row (or one of
    ``also_matches``, e.g. ``clip_score`` for the model that retrieved the Rerank pools);
    ``other_builds``: ids of other builds of the model, which do not give the published
    numbers, and why.
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
    other_builds: tuple[tuple[str, str], ...] = ()
    check: tuple[str, ...] = ()

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
            "check": list(self.check),
            "note": self.note,
        }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def _device(reranker: str) -> str:
    return " --device cuda" if reranker.startswith(("vlm:", "clip:")) else ""


def _fullrank_commands(
    method: str, rep: dict[str, Any], split: str, published: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The commands of a Fullrank row and the folder they write."""
    model = rep.get("model")
    if model is None:
        return (), ()
    slug = _slug(method)
    emb = f"$EMB/{model if model in published else _slug(model)}"
    cmds = []
    if model not in published:
        cmds.append(
            f"inquire embed --model {model} --images $INAT24/train --out {emb} --device cuda"
        )
    reranker = rep.get("reranker")
    if reranker is None:
        out = f"results/fullrank/{slug}"
        cmds.append(
            f"inquire eval fullrank --model {model} --embeddings {emb} --split {split} --k 50 "
            f"--out {out}"
        )
        return tuple(cmds), (out,)
    out = f"results/two-stage/{slug}"
    server = " --base-url $VILA_URL" if rep.get("server") else ""
    cmds.append(
        f"inquire eval fullrank --model {model} --embeddings {emb} --split {split} --k 50 "
        f"--k-max {rep['from_k']} --rerank {reranker} --from-k {rep['from_k']} "
        f"--images $INAT24{_device(reranker)}{server} --out {out}"
    )
    return tuple(cmds), (f"{out}/{TWO_STAGE_FOLDER}",)


def _rerank_commands(
    method: str, rep: dict[str, Any], split: str
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The commands of a Rerank row, the released-cache alternative, the folders written."""
    reranker = rep["reranker"]
    slug = _slug(method)
    server = " --base-url $VILA_URL" if rep.get("server") else ""
    out = f"results/rerank/{slug}"
    main = (
        f"inquire eval rerank --reranker {reranker} --split {split}{_device(reranker)}{server} "
        f"--out {out}",
    )
    cache = rep.get("cache")
    if not cache:
        return main, (), (out,)
    # One command: import INQUIRE's released outputs into the score cache, then evaluate.
    alt = (
        f"inquire eval rerank --reranker cached:{cache['name']} --import-cache "
        f"$INQUIRE_REPO/{cache['file']} --trust-pickle --split {split} --out {out}-cached",
    )
    return main, alt, (out, f"{out}-cached")


def task_info(task: str) -> dict[str, Any]:
    """The leaderboard entry of ``task`` (``fullrank`` or ``rerank``), rows included."""
    tasks = _document()["tasks"]
    if task not in tasks:
        raise UnknownNameError("leaderboard task", task, tasks)
    info: dict[str, Any] = tasks[task]
    return info


def _reproduce_doc() -> dict[str, Any]:
    rep: dict[str, Any] = _document().get("reproduce", {})
    return rep


def published_split() -> str:
    """The split the published numbers are on (``test``)."""
    return str(_reproduce_doc().get("split", "test"))


def published_protocol() -> str:
    """The rerank protocol the published LMM rows were made under (``inquire-2024``)."""
    from inquire.rerank.protocol import DEFAULT_PROTOCOL

    return str(_reproduce_doc().get("protocol", DEFAULT_PROTOCOL))


def published_pool() -> int:
    """How many candidates each published Rerank pool holds (100)."""
    return int(_reproduce_doc().get("pool", 100))


def expected_queries(task: str, split: str) -> int | None:
    """How many queries a whole ``split`` of ``task`` (fullrank / rerank) has."""
    n = _reproduce_doc().get("queries", {}).get(task, {}).get(split)
    return None if n is None else int(n)


def recipes(task: str | None = None) -> list[Recipe]:
    """One :class:`Recipe` per published row, in leaderboard order (``task`` = one task)."""
    doc = _document()
    split = published_split()
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
                commands, without_gpu, check = _rerank_commands(row["method"], rep, split)
            else:
                commands, check = _fullrank_commands(row["method"], rep, split, published)
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
                    other_builds=tuple((rep.get("other_builds") or {}).items()),
                    check=check,
                )
            )
    return out
