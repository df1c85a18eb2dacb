"""Relevance judgments (qrels): which images are relevant to which query.

INQUIRE's annotations are binary: a listed (query_id, image_id) pair is relevant, everything
else is not. ``Qrels`` maps ``query_id -> frozenset of image ids`` (ints). Graded judgments
(:meth:`Qrels.from_dict`) are read the way trec_eval reads them at its default level: a grade
of 1 or more is relevant, 0 or less is judged not relevant; the metrics are binary, so grades
2, 3, ... count as 1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from inquire.errors import InputError, UnknownNameError

log = logging.getLogger(__name__)

ANNOTATION_COLUMNS = ["query_id", "image_id"]


class Qrels(Mapping[int, frozenset[int]]):
    """Binary relevance judgments: ``qrels[query_id]`` is the set of relevant image ids.

    ``paths`` optionally maps image_id -> image path (as in the annotations CSV).
    """

    def __init__(
        self,
        relevant: Mapping[int, Iterable[int]],
        paths: Mapping[int, str] | None = None,
    ) -> None:
        self._rel: dict[int, frozenset[int]] = {
            int(q): frozenset(int(i) for i in ids) for q, ids in relevant.items()
        }
        self.paths: dict[int, str] = dict(paths or {})

    @classmethod
    def from_dict(cls, judgments: Mapping[int, Mapping[int, int]]) -> Qrels:
        """From ``{query_id: {image_id: relevance}}`` (ranx's and pytrec_eval's shape).

        ``relevance`` is a whole number (``bool`` too): 1 or more is relevant, 0 or less
        judged not relevant (the same as not listed). INQUIRE's labels are binary and so are
        its metrics: a grade of 2 counts as 1 (a warning says so once). A query whose images
        are all judged 0 stays in the judgments with R = 0 (:func:`inquire.evaluate` leaves
        it out: no metric is defined without a relevant image). Ids as in
        :meth:`inquire.run.Run.from_dict`. Bad input is an :class:`InputError` naming the
        query and image.
        """
        from inquire.run import as_id

        if not isinstance(judgments, Mapping):
            raise InputError(
                f"Qrels.from_dict expects {{query_id: {{image_id: relevance}}}}, got "
                f"{type(judgments).__name__}"
            )
        rel: dict[int, set[int]] = {}
        graded = 0
        for q, items in judgments.items():
            qid = as_id(q, "query id")
            if not isinstance(items, Mapping):
                raise InputError(
                    f"query {qid}: expected a mapping {{image_id: relevance}}, got "
                    f"{type(items).__name__} (e.g. {{42: 1, 43: 0}})"
                )
            if qid in rel:
                raise InputError(f"query id {qid} appears twice (as {q!r} and another key)")
            rel[qid] = set()
            seen: set[int] = set()
            for i, v in items.items():
                image = as_id(i, f"query {qid}: image id")
                if image in seen:  # e.g. 10 and "10": two judgments of one image
                    raise InputError(f"query {qid}: image id {image} is judged twice (as {i!r})")
                seen.add(image)
                grade = _grade(v, qid, image)
                if grade >= 1:
                    rel[qid].add(image)
                graded += grade > 1
        if graded:
            log.warning(
                "%d judgments have a grade above 1; INQUIRE's metrics are binary, so they count "
                "as relevant (1)",
                graded,
            )
        return cls(rel)

    @classmethod
    def from_pairs(
        cls, query_ids: Iterable[int], image_ids: Iterable[int], paths: Iterable[str] | None = None
    ) -> Qrels:
        """Build from parallel sequences of relevant (query_id, image_id) pairs."""
        rel: dict[int, set[int]] = {}
        qs, ims = list(query_ids), list(image_ids)
        for q, i in zip(qs, ims, strict=True):
            rel.setdefault(int(q), set()).add(int(i))
        path_map = (
            {int(i): str(p) for i, p in zip(ims, paths, strict=True)} if paths is not None else None
        )
        return cls(rel, path_map)

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame) -> Qrels:
        """Build from a frame with ``query_id, image_id`` (and optionally ``image_path``)."""
        missing = [c for c in ANNOTATION_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(
                f"annotations lack column(s) {missing}; expected {ANNOTATION_COLUMNS} "
                f"(+ image_path), found {list(df.columns)}"
            )
        paths = df["image_path"].astype(str) if "image_path" in df.columns else None
        return cls.from_pairs(df["query_id"], df["image_id"], paths)

    def __getitem__(self, query_id: int) -> frozenset[int]:
        return self._rel[int(query_id)]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rel)

    def __len__(self) -> int:
        return len(self._rel)

    def n_relevant(self, query_id: int) -> int:
        """R: the number of relevant images for ``query_id`` in the whole collection."""
        try:
            return len(self._rel[int(query_id)])
        except KeyError:
            raise InputError(
                f"query {query_id} has no relevance annotations; check that the run and the "
                f"annotations belong to the same benchmark split"
            ) from None

    def restrict(self, query_ids: Iterable[int]) -> Qrels:
        """Only the judgments of ``query_ids`` (queries without judgments are skipped)."""
        keep = {int(q) for q in query_ids}
        return Qrels({q: s for q, s in self._rel.items() if q in keep}, self.paths)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per relevant pair: ``query_id, image_id`` (+ ``image_path`` where known)."""
        rows = [(q, i) for q in sorted(self._rel) for i in sorted(self._rel[q])]
        df = pd.DataFrame(rows, columns=ANNOTATION_COLUMNS, dtype=np.int64)
        if self.paths:
            df["image_path"] = [self.paths.get(int(i), "") for i in df["image_id"]]
        return df

    def __repr__(self) -> str:
        n = sum(len(s) for s in self._rel.values())
        return f"Qrels({len(self)} queries, {n} relevant pairs)"


def _grade(value: object, query_id: int, image_id: int) -> int:
    """A relevance judgment as an ``int`` (whole numbers and bools), else an InputError."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number != round(number):
        raise InputError(
            f"query {query_id}, image {image_id}: relevance {value!r} is not a whole number; "
            f"use 1 (relevant) or 0 (not relevant)"
        )
    return int(number)


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read an annotations CSV (``query_id, image_id[, image_path]``) into ``Qrels``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotations file {str(path)!r} does not exist")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"annotations file {str(path)!r} is not a readable CSV: {exc}") from exc
    df = df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed:")])
    for col in ANNOTATION_COLUMNS:
        if col in df.columns and not pd.api.types.is_integer_dtype(df[col]):
            text = df[col].astype(str).str.strip()
            bad = np.flatnonzero(~text.str.fullmatch(r"-?\d+(\.0)?").to_numpy(bool))
            if not len(bad):  # whole numbers written as floats (e.g. "5.0") are fine
                df[col] = text.str.removesuffix(".0").astype(np.int64)
                continue
            row = int(bad[0])
            value = df[col].iloc[row]
            shown = "an empty cell" if pd.isna(value) else repr(str(value))
            raise InputError(
                f"annotations file {str(path)!r}: column {col!r} must hold integers; "
                f"found {shown} on row {row + 2}"
            )
    return Qrels.from_dataframe(df)


def load_qrels(split: str | None = None) -> Qrels:
    """INQUIRE's relevance annotations, downloaded into the cache: both splits, or only the
    queries of ``split`` (``"val"`` / ``"test"``) when given."""
    from inquire.data.download import fetch
    from inquire.data.queries import SPLITS

    if split is not None and split not in SPLITS:  # before a download, not after it
        raise UnknownNameError("split", split, SPLITS)
    qrels = read_qrels(fetch("annotations"))
    if split is None:
        return qrels
    from inquire.data.queries import load_queries

    return qrels.restrict(load_queries(split)["query_id"])
