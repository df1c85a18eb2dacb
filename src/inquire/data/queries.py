"""INQUIRE query sets.

A query table is a ``pandas.DataFrame`` with exactly the columns
``query_id (int64), query_text, supercategory, category, iconic_group`` (strings), one row per
query, in file order. The upstream CSVs carry an unnamed index column (dropped) and two test
rows with an empty ``iconic_group`` (set to ``UNKNOWN_GROUP``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from inquire.errors import InputError, UnknownNameError

QUERY_COLUMNS = ["query_id", "query_text", "supercategory", "category", "iconic_group"]
SPLITS = ("val", "test")
UNKNOWN_GROUP = "Unknown"
# Columns whose empty cells are a real "unknown", not a data error.
_FILL_UNKNOWN = ("supercategory", "category", "iconic_group")


def read_queries(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a query CSV in INQUIRE's format (with or without its unnamed index column)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"query file {str(path)!r} does not exist; pass an INQUIRE query CSV")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"query file {str(path)!r} is not a readable CSV: {exc}") from exc
    df = df.drop(columns=[c for c in df.columns if c == "" or c.startswith("Unnamed:")])
    missing = [c for c in QUERY_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"query file {str(path)!r} lacks column(s) {missing}; expected columns "
            f"{QUERY_COLUMNS} (found {list(df.columns)})"
        )
    df = df[QUERY_COLUMNS].copy()
    bad_ids = df.loc[~df["query_id"].str.strip().str.fullmatch(r"-?\d+"), "query_id"]
    if len(bad_ids):
        raise InputError(
            f"query file {str(path)!r}: query_id must be an integer, got {bad_ids.iloc[0]!r} "
            f"on row {int(bad_ids.index[0]) + 2}"
        )
    df["query_id"] = df["query_id"].astype("int64")
    dup = df.loc[df["query_id"].duplicated(), "query_id"]
    if len(dup):
        raise InputError(f"query file {str(path)!r}: query_id {int(dup.iloc[0])} appears twice")
    for col in _FILL_UNKNOWN:
        df[col] = df[col].str.strip().replace("", UNKNOWN_GROUP)
    empty_text = df.loc[df["query_text"].str.strip() == "", "query_id"]
    if len(empty_text):
        raise InputError(f"query file {str(path)!r}: query {int(empty_text.iloc[0])} has no text")
    return df.reset_index(drop=True)


def load_queries(split: str) -> pd.DataFrame:
    """The INQUIRE query set of ``split`` ('val' or 'test'), downloaded into the cache."""
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    from inquire.data.download import fetch

    return read_queries(fetch(f"queries-{split}"))
