"""A verified search for the export tests: an iNat24-style collection whose taxon names hold
commas, quotes, line breaks, formula prefixes and non-ASCII letters, a few photos without
any metadata, and marks by two people (agreeing, disputed, unsure, and gaps)."""

from __future__ import annotations

import json
import os
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from inquire.collection import SearchRequest, create_collection
from inquire.collection.verify import Verification
from inquire.testing.collection_encoder import make_inat_tree, write_photo

# Category names of the generated train.json (make_inat_tree's five taxa, renamed).
ODD_NAMES = (
    'Cardinalis "red", cardinalis',
    "Cyanocitta\ncristata",
    '=HYPERLINK("http://example.org","x")',
    "Dánaus plexíppus ✓ 蝶",
    "-Adiantum\tcapillus",
)
N_EXTRA = 5  # photos with no EXIF, no train.json entry, no taxon


@dataclass(frozen=True)
class VerifiedSearch:
    """``name`` (collection), ``search_id``, ``train_json`` (its path), ``marks``:
    ``{rank: {who: mark}}`` as made, ``ranked``: results ranked, ``images``: ``{rank:
    image_id}``."""

    name: str
    search_id: str
    train_json: Path
    marks: dict[int, dict[str, str]]
    ranked: int
    images: dict[int, int]


def marks_plan(deepest: int) -> dict[int, dict[str, str]]:
    """Marks by rank: ana marks ranks 1..deepest (relevant unless the rank is a multiple of 3)
    except 10-12, which nobody marks; bo disputes rank 2 and 3 (a tie: neither relevant) and
    is unsure of rank 5 (ana's relevant wins)."""
    plan: dict[int, dict[str, str]] = {}
    for r in range(1, deepest + 1):
        if 10 <= r <= 12:
            continue
        plan[r] = {"ana": "relevant" if r % 3 else "not_relevant"}
    plan[2]["bo"] = "not_relevant"
    plan[3]["bo"] = "relevant"
    plan[5]["bo"] = "unsure"
    return plan


def make_verified_search(
    tmp: str | os.PathLike[str],
    name: str = "inat",
    per_taxon: int = 12,
    deepest: int = 55,
    text: str = "red",
) -> VerifiedSearch:
    """Build the collection under ``tmp`` (toy:colour encoder), save a search for ``text``
    ranked over every photo, and mark it as :func:`marks_plan` says."""
    root = Path(tmp) / "photos"
    meta = make_inat_tree(root, per_taxon=per_taxon)
    data = json.loads(meta.read_text(encoding="utf-8"))
    for cat, odd in zip(data["categories"], ODD_NAMES, strict=True):
        cat["name"] = odd
    meta.write_text(json.dumps(data), encoding="utf-8")
    for k in range(N_EXTRA):
        write_photo(root / "extra" / f"plain_{k}.jpg", "red", seed=500 + k)
    coll, _ = create_collection(name, root, "toy:colour", meta, workers=0)
    plan = marks_plan(deepest)
    with closing(coll), closing(Verification(coll)) as v:
        sid = v.save_search(SearchRequest(text))
        n = v.extend(sid, 10_000, coll.index())
        res = v.results(sid, 0, n)
        images = {int(r): int(i) for r, i in zip(res["rank"], res["image_id"], strict=True)}
        for rank, by in plan.items():
            for who, mark in by.items():
                v.mark(sid, images[rank], who, mark)
    return VerifiedSearch(name, sid, meta, plan, n, images)
