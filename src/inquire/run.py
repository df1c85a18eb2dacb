"""Runs: for each query, a ranked list of image ids with scores.

The ranking rule used everywhere in inquire (metrics, reports, the web page):

    **score descending; items with equal scores keep their input order (stable sort).**

A ``Run`` stores each query's list already in that order. Searches produce their lists with
ties broken by image id ascending, so a run saved and read back ranks identically.

Formats:
- parquet: columns ``query_id (int64), image_id (int64), rank (int32, 1-based), score (float64)``
- TREC run file: ``qid Q0 docid rank score tag``, whitespace separated, one line per item.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inquire._io import atomic_open, atomic_path
from inquire.errors import InputError

RUN_COLUMNS = ["query_id", "image_id", "rank", "score"]
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def rank_order(scores: np.ndarray, query_id: int | None = None) -> np.ndarray:
    """Indices that sort ``scores`` by the ranking rule: descending, stable on ties."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        where = f"query {query_id}: " if query_id is not None else ""
        raise InputError(
            f"{where}scores contain NaN at position {int(np.flatnonzero(np.isnan(scores))[0])}; "
            f"a ranking needs a real-valued score for every item"
        )
    # Negating keeps the sort stable for ties; -(-inf) = inf keeps padding last.
    return np.argsort(-scores, kind="stable")


class Run(Mapping[int, tuple[np.ndarray, np.ndarray]]):
    """``run[query_id] -> (image_ids int64 (n,), scores float64 (n,))``, ranked.

    Lists are re-ordered on construction by :func:`rank_order`; an image id may appear only
    once per query.
    """

    def __init__(
        self,
        results: Mapping[int, tuple[Iterable[int], Iterable[float]]],
        name: str = "run",
    ) -> None:
        self.name = name
        self._res: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for q, (ids, scores) in results.items():
            ids_a = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, np.int64)
            sc_a = np.asarray(
                list(scores) if not isinstance(scores, np.ndarray) else scores, np.float64
            )
            if ids_a.shape != sc_a.shape or ids_a.ndim != 1:
                raise InputError(
                    f"query {q}: image ids {ids_a.shape} and scores {sc_a.shape} must be "
                    f"1-d arrays of the same length"
                )
            order = rank_order(sc_a, int(q))
            ids_a, sc_a = ids_a[order], sc_a[order]
            if len(np.unique(ids_a)) != len(ids_a):
                uniq, counts = np.unique(ids_a, return_counts=True)
                raise InputError(
                    f"query {q}: image id {int(uniq[counts > 1][0])} is ranked more than once"
                )
            self._res[int(q)] = (ids_a, sc_a)

    # Mapping protocol
    def __getitem__(self, query_id: int) -> tuple[np.ndarray, np.ndarray]:
        return self._res[int(query_id)]

    def __iter__(self) -> Iterator[int]:
        return iter(self._res)

    def __len__(self) -> int:
        return len(self._res)

    def __repr__(self) -> str:
        return f"Run({self.name!r}, {len(self)} queries)"

    @classmethod
    def from_dict(cls, scores: Mapping[int, Mapping[int, float]], name: str = "run") -> Run:
        """From ``{query_id: {image_id: score}}`` (ranx's and pytrec_eval's shape).

        Ids are integers (``int``, numpy integers, or text of a whole number such as
        ``"42"``); scores finite numbers, higher ranking first (ties keep the order of the
        inner mapping, as every ``Run`` does; no metric depends on the order of ties). A
        query with an empty mapping has an empty list. Bad input is an :class:`InputError`
        naming the query and image.
        """
        if not isinstance(scores, Mapping):
            raise InputError(
                f"Run.from_dict expects {{query_id: {{image_id: score}}}}, got "
                f"{type(scores).__name__}"
            )
        res: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for q, items in scores.items():
            qid = as_id(q, "query id")
            if not isinstance(items, Mapping):
                raise InputError(
                    f"query {qid}: expected a mapping {{image_id: score}}, got "
                    f"{type(items).__name__}; Run.from_dict reads {{query_id: {{image_id: score}}}}"
                )
            ids = np.fromiter((as_id(i, f"query {qid}: image id") for i in items), np.int64)
            sc = np.empty(len(items), np.float64)
            for pos, (i, v) in enumerate(items.items()):
                try:
                    sc[pos] = float(v)
                except (TypeError, ValueError):
                    raise InputError(
                        f"query {qid}, image {i}: score {v!r} is not a number"
                    ) from None
                if not np.isfinite(sc[pos]):
                    raise InputError(
                        f"query {qid}, image {i}: score {v!r} is not a finite number; a "
                        f"ranking needs a real-valued score for every item"
                    )
            if qid in res:
                raise InputError(f"query id {qid} appears twice (as {q!r} and another key)")
            res[qid] = (ids, sc)
        return cls(res, name=name)

    @classmethod
    def from_arrays(
        cls, query_ids: Iterable[int], ids: np.ndarray, scores: np.ndarray, name: str = "run"
    ) -> Run:
        """From search output: ``ids``/``scores`` of shape (nq, k); ids < 0 are padding."""
        ids, scores = np.asarray(ids), np.asarray(scores)
        qids = list(query_ids)
        if ids.ndim != 2 or ids.shape != scores.shape or ids.shape[0] != len(qids):
            raise InputError(
                f"expected ids and scores of shape (nq, k) with nq = {len(qids)} query ids; "
                f"got ids {ids.shape} and scores {scores.shape}"
            )
        res = {}
        for row, q in enumerate(qids):
            keep = ids[row] >= 0
            res[int(q)] = (ids[row][keep], scores[row][keep])
        return cls(res, name=name)

    def truncate(self, k: int) -> Run:
        """The top ``k`` of every list."""
        return Run({q: (i[:k], s[:k]) for q, (i, s) in self._res.items()}, name=self.name)

    # I/O
    def to_dataframe(self) -> pd.DataFrame:
        """Long format: ``query_id, image_id, rank (1-based), score``."""
        frames = []
        for q, (ids, sc) in self._res.items():
            frames.append(
                pd.DataFrame(
                    {
                        "query_id": np.full(len(ids), q, np.int64),
                        "image_id": ids,
                        "rank": np.arange(1, len(ids) + 1, dtype=np.int32),
                        "score": sc,
                    }
                )
            )
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype="int64") for c in RUN_COLUMNS})
        return pd.concat(frames, ignore_index=True)

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, name: str = "run", source: str = "run") -> Run:
        """From a long frame with ``query_id, image_id, score`` (``rank`` breaks score ties).

        Ids (and ``rank``) must be whole numbers and scores finite; the first bad row is
        named (``source`` says where the frame came from, e.g. the file)."""
        missing = [c for c in ("query_id", "image_id", "score") if c not in df.columns]
        if missing:
            raise InputError(
                f"{source} lacks column(s) {missing}; expected {RUN_COLUMNS}, found "
                f"{list(df.columns)}"
            )
        df = _checked_frame(df, source)
        if "rank" in df.columns:
            df = df.sort_values(["query_id", "rank"], kind="stable")
        res = {
            int(q): (g["image_id"].to_numpy(np.int64), g["score"].to_numpy(np.float64))  # type: ignore[arg-type]
            for q, g in df.groupby("query_id", sort=False)
        }
        return cls(res, name=name)

    def save_parquet(self, path: str | os.PathLike[str]) -> None:
        """Write the run as parquet (atomically), with its name in the file metadata."""
        table = pa.Table.from_pandas(self.to_dataframe(), preserve_index=False)
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"inquire.run_name": self.name.encode()}
        )
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)

    @classmethod
    def read_parquet(cls, path: str | os.PathLike[str]) -> Run:
        """Read a run written by :meth:`save_parquet` (its name from the file metadata, else
        the file stem)."""
        path = Path(path)
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(
                f"run file {str(path)!r} is not a readable parquet file: {exc}"
            ) from exc
        meta = table.schema.metadata or {}
        name = meta.get(b"inquire.run_name", path.stem.encode()).decode()
        if table.num_rows == 0:
            raise InputError(
                f"run file {str(path)!r} has no rows; a run lists, for each query, ranked "
                f"image ids with scores (columns {RUN_COLUMNS})"
            )
        return cls.from_dataframe(table.to_pandas(), name=name, source=f"run file {str(path)!r}")

    def save_trec(self, path: str | os.PathLike[str], tag: str | None = None) -> None:
        """Write a TREC run file ``qid Q0 docid rank score tag`` (atomically)."""
        tag = (tag or self.name).replace(" ", "_")
        with atomic_open(path, "w", encoding="utf-8") as fh:
            for q, (ids, sc) in self._res.items():
                for r, (i, s) in enumerate(zip(ids, sc, strict=True), start=1):
                    # repr of a Python float is the shortest text that reads back exactly
                    # (a numpy scalar's repr would be "np.float64(...)").
                    fh.write(f"{q} Q0 {int(i)} {r} {float(s)!r} {tag}\n")

    @classmethod
    def read_trec(cls, path: str | os.PathLike[str]) -> Run:
        """Read a TREC run file; docids must be integer image ids."""
        path = Path(path)
        rows: list[tuple[int, int, int, float]] = []
        tag = path.stem
        # utf-8-sig: a byte-order mark (as some Windows editors write) is not part of qid 1.
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            for lineno, line in enumerate(fh, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 6:
                    raise InputError(
                        f"{str(path)!r} line {lineno}: expected 6 fields "
                        f"'qid Q0 docid rank score tag', got {len(parts)}: {line.strip()!r}"
                    )
                try:
                    row = (int(parts[0]), int(parts[2]), int(parts[3]), float(parts[4]))
                except ValueError:
                    raise InputError(
                        f"{str(path)!r} line {lineno}: qid, docid and rank must be integers and "
                        f"score a number: {line.strip()!r}"
                    ) from None
                if not np.isfinite(row[3]):
                    raise InputError(
                        f"{str(path)!r} line {lineno}: score {parts[4]!r} is not a finite "
                        f"number; a ranking needs a real-valued score for every item"
                    )
                rows.append(row)
                tag = parts[5]
        if not rows:
            raise InputError(
                f"run file {str(path)!r} has no result lines; expected TREC lines "
                f"'qid Q0 docid rank score tag' or an inquire run parquet"
            )
        df = pd.DataFrame(rows, columns=RUN_COLUMNS)
        return cls.from_dataframe(df, name=tag, source=f"run file {str(path)!r}")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Run:
        """Read a run: parquet (recognised by its magic bytes, whatever the file name) or
        else a TREC run file."""
        path = Path(path)
        if path.is_dir():
            raise InputError(
                f"run file {str(path)!r} is a folder; pass the run file itself (a results "
                f"folder holds it as run.parquet)"
            )
        if not path.is_file():
            raise InputError(f"run file {str(path)!r} does not exist")
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic == b"PAR1":
            return cls.read_parquet(path)
        return cls.read_trec(path)


def as_id(value: object, what: str = "id") -> int:
    """An image or query id as ``int``: ints, numpy integers and text of a whole number
    (``"42"``) are ids; anything else (``2.5``, ``True``, ``"a.jpg"``) is an
    :class:`InputError` naming ``what``."""
    if isinstance(value, bool):
        raise InputError(f"{what} {value!r} is not an integer id")
    number: int | None = None
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    if number is not None:
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise InputError(
                f"{what} {value!r} does not fit a 64-bit integer; ids are stored as int64 "
                f"(between {_INT64_MIN} and {_INT64_MAX})"
            )
        return number
    raise InputError(
        f"{what} {value!r} is not an integer id; images and queries are named by integer ids "
        f"(INQUIRE's image_id and query_id)"
    )


def _checked_frame(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """``df`` with ``query_id``/``image_id`` (and ``rank``) as int64 and ``score`` as float64,
    or an :class:`InputError` naming the first row (counting from 1) whose value is missing,
    not a whole number (2.5), or (scores) not finite."""
    df = df.reset_index(drop=True).copy()
    for col in ("query_id", "image_id", "rank"):
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{source}: row {i + 1} has {col} {_shown(df[col].iloc[i])}; {col} must be a whole "
                f"number (image and query ids are integers)"
            )
        as_num = pd.to_numeric(df[col])
        # Integer columns (or integer text) keep every digit; floats holding whole numbers
        # (e.g. written by a tool that had a NaN once) are exact up to 2**53.
        df[col] = (
            as_num.astype(np.int64)
            if pd.api.types.is_integer_dtype(as_num.dtype)
            else values.astype(np.int64)
        )
    scores = pd.to_numeric(df["score"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(scores)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{source}: row {i + 1} (query {df['query_id'].iloc[i]}, image "
            f"{df['image_id'].iloc[i]}) has score {_shown(df['score'].iloc[i])}; every score "
            f"must be a finite number"
        )
    df["score"] = scores
    return df


def _shown(value: object) -> str:
    """A cell as a message shows it: ``2.5``, ``nan``, ``'x'`` (numpy scalars as Python's)."""
    item = getattr(value, "item", None)
    return repr(item() if callable(item) else value)
