"""Load the marks of an INQUIRE-Search export onto a collection of the same photos.

INQUIRE-Search names each photo by its iNaturalist photo id; a collection knows that id for
photos whose ``train.json`` entry carries it (iNat24: the image id is the iNaturalist photo
id). A row's ``marked`` becomes a mark by the person importing: ``1`` -> ``relevant``,
``0`` -> ``not_relevant`` (INQUIRE-Search writes ``0`` for every photo it showed that nobody
selected, so a ``0`` is a photo looked at and not chosen).

Two ways in:

- ``query``: a new saved search for that text is made whose ranking starts with the file's
  photos in the file's order (the order INQUIRE-Search showed them), scored by this
  collection's model; ranking further goes on with this collection's own search, skipping
  those photos. A search for the same text that already has results is refused (load onto it
  with ``search_id``).
- ``search_id``: marks go onto the photos that saved search has already ranked; the others
  are counted, not added.

Everything is written in one transaction: a failed import leaves no search and no marks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from inquire.cache import transaction
from inquire.collection.interop.inquire_search import read_inquire_search
from inquire.collection.search import SearchRequest
from inquire.collection.store import Collection, CollectionIndex, open_collection
from inquire.collection.verify import Verification, check_who
from inquire.embed.base import Encoder
from inquire.errors import InputError


@dataclass(frozen=True)
class ImportOutcome:
    """What :func:`import_marks` did. ``search_id``: the search the marks are on;
    ``created``: it was made by this import; ``rows``: data rows in the file; ``relevant`` /
    ``not_relevant``: marks saved; rows left out: ``not_inat`` (the photo id is not an
    iNaturalist photo id, e.g. ``local:12`` or a file name), ``not_in_collection`` (no
    searchable photo of the collection has that id), ``not_ranked`` (``search_id`` mode: the
    search has not ranked that photo), ``duplicates`` (a photo already read higher up; the
    first row counts)."""

    search_id: str
    created: bool
    rows: int
    relevant: int
    not_relevant: int
    not_inat: int
    not_in_collection: int
    not_ranked: int
    duplicates: int

    @property
    def marked(self) -> int:
        return self.relevant + self.not_relevant


def photos_by_inat_id(coll: Collection, inat_ids: list[int]) -> dict[int, int]:
    """iNaturalist photo id -> image id, for searchable photos (status ok) carrying one of
    ``inat_ids`` (the lowest image id when several files carry the same id)."""
    found: dict[int, int] = {}
    for lo in range(0, len(inat_ids), 900):  # SQLite's bound-parameter limit
        part = inat_ids[lo : lo + 900]
        rows = coll.conn.execute(
            "SELECT source_id, MIN(image_id) FROM images WHERE status = 'ok' AND source_id IN "
            f"({','.join('?' * len(part))}) GROUP BY source_id",
            part,
        )
        found.update({int(s): int(i) for s, i in rows})
    return found


def import_marks(
    name: str,
    file: str | os.PathLike[str],
    who: str,
    query: str | None = None,
    search_id: str | None = None,
    encoder: Encoder | None = None,
    root: str | os.PathLike[str] | None = None,
) -> ImportOutcome:
    """``inquire collection import-marks NAME FILE --who W (--query TEXT | --search-id ID)``:
    load the marks of INQUIRE-Search export ``file`` onto collection ``name`` as ``who``'s
    marks (see the module docstring). ``encoder``: the collection's (loaded from its model id
    when needed and not given)."""
    who = check_who(who)
    if (query is None) == (search_id is None):
        raise InputError(
            "give exactly one of --query TEXT (make a new search ranked as in the file) or "
            "--search-id ID (mark the photos an existing search has ranked)"
        )
    if query is not None and not query.strip():
        raise InputError("--query is empty; give the text that was searched in INQUIRE-Search")
    rows = read_inquire_search(Path(file))
    inat = rows[rows["photo_id"] >= 0]
    not_inat = len(rows) - len(inat)
    dup = inat["photo_id"].duplicated(keep="first")
    inat = inat[~dup]
    with open_collection(name, root) as coll, Verification(coll) as v:
        ids = photos_by_inat_id(coll, [int(x) for x in inat["photo_id"]])
        image_id = inat["photo_id"].map(ids)
        matched = inat.assign(image_id=image_id)[image_id.notna()]
        matched = matched.astype({"image_id": "int64"})
        not_in_collection = len(inat) - len(matched)
        created = False
        if search_id is not None:
            v.request(search_id)
            sid = search_id
            ranked = {
                int(r[0])
                for r in v.conn.execute("SELECT image_id FROM results WHERE search_id = ?", (sid,))
            }
            onto = matched[matched["image_id"].isin(ranked)]
            with transaction(v.conn):
                _mark_all(v, sid, onto, who)
        else:
            assert query is not None
            if matched.empty:
                raise InputError(
                    f"none of the {len(rows)} rows of {str(file)!r} names a photo of collection "
                    f"{name!r} by its iNaturalist photo id, so there is nothing to rank or mark; "
                    "import into a collection built from the same photos (e.g. iNat24 with its "
                    "train.json)"
                )
            request = SearchRequest(query)
            index = coll.index()
            emb_rows = index.rows_of(matched["image_id"].to_numpy(np.int64))
            onto = matched[emb_rows >= 0]  # a photo changed since the snapshot: left out
            not_in_collection += len(matched) - len(onto)
            matched = onto
            scores = _scores(index, request, emb_rows[emb_rows >= 0], encoder)
            with transaction(v.conn):
                sid = v.save_search(request, who)
                n = v.n_ranked(sid)
                if n:
                    raise InputError(
                        f"collection {name!r} already has a saved search for {query!r} "
                        f"({sid}, {n} results ranked); load the marks onto it with "
                        f"--search-id {sid}"
                    )
                # Verification._append is the one writer of ranked results (ranks 1..n).
                v._append(sid, pd.DataFrame({"image_id": onto["image_id"], "score": scores}), 0)
                _mark_all(v, sid, onto, who)
            created = True
    n_rel = int(onto["marked"].sum())
    return ImportOutcome(
        sid,
        created,
        len(rows),
        n_rel,
        len(onto) - n_rel,
        not_inat,
        not_in_collection,
        len(matched) - len(onto),
        int(dup.sum()),
    )


def _mark_all(v: Verification, sid: str, rows: pd.DataFrame, who: str) -> None:
    """``who``'s mark on each row's image (inside the caller's transaction)."""
    for image_id, marked in zip(rows["image_id"], rows["marked"], strict=True):
        v.mark(sid, int(image_id), who, "relevant" if marked else "not_relevant")


def _scores(
    index: CollectionIndex, request: SearchRequest, rows: np.ndarray, encoder: Encoder | None
) -> np.ndarray:
    """``(n,) float64`` similarity of the images at embedding ``rows`` to the query, as the
    search scores them."""
    from inquire.collection.search import query_vector

    if encoder is None:
        from inquire.embed.models import load_encoder

        encoder = load_encoder(index.collection.model_id)
    q = query_vector(index, encoder, request.text)
    if len(rows) == 0:
        return np.zeros(0, np.float64)
    return (index.vectors(rows) @ q).astype(np.float64)
