"""INQUIRE-Search's CSV: ``photo_id,species,marked,inat_url,latitude,longitude,month``.

INQUIRE-Search (Beery Lab) exports a verified search as this CSV, and the R scripts of its
case studies read exactly these columns (``case_studies/Data_README.md`` of its repository
describes them). Writing it lets those analyses run on a search verified here; reading it lets
marks made there be loaded onto a collection of the same photos (see
:mod:`~inquire.collection.interop.marks_import`).

Columns as written here, one row per result of :func:`~inquire.collection.interop.inspected.
inspected_results` (rank order, down to the deepest mark):

- ``photo_id``: the iNaturalist photo id when known, else ``local:<image_id>`` (the
  collection's own id; the prefix keeps it from being taken for an iNaturalist id);
- ``species``: the photo's taxon (scientific name), empty when unknown (a NUL in it, which
  would make R's ``read.csv`` drop every row, becomes a space);
- ``marked``: ``1`` when the marks' consensus is relevant, else ``0`` — results marked not
  relevant, unsure, disputed (as many relevant as not relevant marks) and results nobody
  marked above the deepest mark are all ``0``, as INQUIRE-Search writes ``0`` for every
  shown photo nobody selected. Never empty: the case studies count ``marked == 1`` rows
  with base R subsetting, which would count an ``NA`` as a row;
- ``inat_url``: ``https://www.inaturalist.org/photos/<id>`` when the iNaturalist photo id is
  known, else empty;
- ``latitude``, ``longitude``: WGS84 decimal degrees, empty when unknown;
- ``month``: 1-12 from the date the photo carries (EXIF or train.json), empty when only the
  file's time is known or there is no date.

The CSV is written by :func:`~inquire.collection.verify.results_csv` (UTF-8, CRLF line ends,
RFC 4180 quoting, text cells a spreadsheet would run as formulas prefixed with ``'``).
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from inquire.collection.interop.inspected import INAT_PHOTO_URL
from inquire.collection.verify import results_csv
from inquire.errors import InputError

COLUMNS = ("photo_id", "species", "marked", "inat_url", "latitude", "longitude", "month")
LOCAL_PREFIX = "local:"
MAX_IMPORT_BYTES = 512 * 1024 * 1024

# Values INQUIRE-Search's Data_README lists for ``marked`` (case-insensitive).
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}
_PHOTO_ID = re.compile(r"^[0-9]{1,18}$")


def inquire_search_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The INQUIRE-Search table of an :func:`inspected_results` table (see the module
    docstring for each column)."""
    inat = table["inat_photo_id"].astype("Int64")
    known = inat.notna().to_numpy()
    photo_id = [
        str(int(p)) if k else f"{LOCAL_PREFIX}{int(i)}"
        for p, k, i in zip(inat, known, table["image_id"], strict=True)
    ]
    url = [INAT_PHOTO_URL.format(p) if k else "" for p, k in zip(photo_id, known, strict=True)]
    month = pd.to_datetime(
        table["camera_date"].astype("string").str.slice(0, 10), format="%Y-%m-%d", errors="coerce"
    ).dt.month
    return pd.DataFrame(
        {
            "photo_id": pd.Series(photo_id, index=table.index, dtype=object),
            # A NUL in a cell makes R's read.csv drop every row of the file: a space instead.
            "species": table["taxon"]
            .astype(object)
            .where(table["taxon"].notna(), "")
            .map(lambda s: str(s).replace("\x00", " ")),
            "marked": (table["label"] == "relevant").astype("int64"),
            "inat_url": pd.Series(url, index=table.index, dtype=object),
            "latitude": table["lat"].astype("float64"),
            "longitude": table["lon"].astype("float64"),
            "month": month.astype("Int64"),
        },
        columns=list(COLUMNS),
    )


def inquire_search_bytes(table: pd.DataFrame) -> bytes:
    """:func:`inquire_search_frame` of ``table`` as CSV bytes (UTF-8)."""
    return results_csv(inquire_search_frame(table)).encode("utf-8")


def _separator(text: str) -> str:
    """The field separator of ``text``: ``,``, or ``;`` / a tab when the header line names
    photo_id and marked only when split by that (a spreadsheet saved in a locale whose
    decimal mark is a comma writes ``;``; one of INQUIRE-Search's case-study files has it)."""
    header = text.split("\n", 1)[0].rstrip("\r")
    for sep in (",", ";", "\t"):
        if {"photo_id", "marked"} <= {c.strip().strip('"') for c in header.split(sep)}:
            return sep
    return ","


def read_inquire_search(path: str | Path) -> pd.DataFrame:
    """Read an INQUIRE-Search export: ``row`` (its data row, 1 = the first after the header),
    ``photo_id`` (int64, or -1 where the row's id is not an iNaturalist photo id),
    ``photo_id_text`` (as written) and ``marked`` (bool), in file order.

    Needs the columns ``photo_id`` and ``marked`` (others are ignored), separated by commas
    (or semicolons or tabs, found from the header line); ``marked`` may be
    ``1``/``0``, ``TRUE``/``FALSE`` or ``yes``/``no``, as INQUIRE-Search's Data_README allows.
    A missing file, a file that is not UTF-8 CSV, a missing column or any other ``marked``
    value is an :class:`InputError` naming the file, the row and the value.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"INQUIRE-Search export {str(p)!r} does not exist; give the CSV file INQUIRE-Search "
            "downloaded (columns photo_id,species,marked,...)"
        )
    if p.stat().st_size > MAX_IMPORT_BYTES:
        raise InputError(f"{str(p)!r} is larger than {MAX_IMPORT_BYTES >> 20} MiB; split it")
    try:
        text = p.read_bytes().decode("utf-8-sig")
        sep = _separator(text)
        # index_col=False: left to itself pandas takes a first data row with more fields
        # than the header names for a row label and shifts every column by one, reading
        # "1006,1,0" as photo_id 1, marked 0. The warning it gives instead is an error here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, index_col=False
            )
    except UnicodeDecodeError as exc:
        raise InputError(f"{str(p)!r} is not UTF-8 text ({exc}); save it as UTF-8 CSV") from None
    except pd.errors.ParserWarning:
        head = next(csv.reader(io.StringIO(text, newline=""), delimiter=sep), [])
        raise InputError(
            f"{str(p)!r} data row 1 has more fields than its header line names "
            f"({len(head)}: {', '.join(head)}); give every column a name in the header line"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{str(p)!r} is not a readable CSV file: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("photo_id", "marked") if c not in df.columns]
    if missing:
        raise InputError(
            f"{str(p)!r} has no {' or '.join(missing)} column (it has {', '.join(df.columns)}); "
            "expected an INQUIRE-Search export with photo_id,species,marked,..."
        )
    ids = df["photo_id"].str.strip()
    marks = df["marked"].str.strip().str.lower()
    bad = ~marks.isin(_TRUE | _FALSE)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{str(p)!r} data row {i + 1}: marked is {df['marked'].iloc[i]!r}; expected 1/0, "
            "TRUE/FALSE or yes/no"
        )
    numeric = ids.str.fullmatch(_PHOTO_ID)
    return pd.DataFrame(
        {
            "row": np.arange(1, len(df) + 1, dtype=np.int64),
            "photo_id": np.where(numeric, pd.to_numeric(ids.where(numeric, "-1")), -1).astype(
                np.int64
            ),
            "photo_id_text": ids.to_numpy(object),
            "marked": marks.isin(_TRUE).to_numpy(bool),
        }
    )
