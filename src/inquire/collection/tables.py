"""The one writer of result and mark tables: CSV (formulas escaped, RFC 4180 line ends)
and parquet, to a file (atomically) or to bytes for a download."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from inquire.errors import InputError

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# RFC 4180 line ends: a cell holding a carriage return is then quoted, not split in two.
CSV_EOL = "\r\n"


def escape_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells starting with ``=``, ``+``, ``-``, ``@``, a tab or
    a carriage return get a leading ``'``, so a spreadsheet shows them as text instead of
    running them. Numbers (negative longitudes included) are left as they are."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object and not pd.api.types.is_string_dtype(out[col]):
            continue
        out[col] = [
            "'" + v if isinstance(v, str) and v.startswith(FORMULA_PREFIXES) else v
            for v in out[col]
        ]
    return out


def results_csv(df: pd.DataFrame, eol: str = CSV_EOL) -> str:
    """``df`` as CSV text with formulas escaped (:func:`escape_formulas`): the one CSV
    writer of result and mark tables (downloads, files, ``inquire search --csv``).
    ``eol``: line end, RFC 4180's CRLF by default (``"\\n"`` for a terminal)."""
    return escape_formulas(df).to_csv(index=False, lineterminator=eol)


def table_bytes(df: pd.DataFrame, fmt: str) -> bytes:
    """``df`` encoded as ``csv`` (UTF-8, CRLF line ends, formulas escaped:
    :func:`escape_formulas`) or ``parquet``."""
    import io

    if fmt == "csv":
        return results_csv(df).encode("utf-8")
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    raise InputError(f"export format {fmt!r} is not csv or parquet")


def write_table(df: pd.DataFrame, out: str | Path) -> Path:
    """Write ``df`` as CSV (formulas escaped: :func:`escape_formulas`) or parquet (by the
    suffix of ``out``), atomically."""
    from inquire._io import atomic_path

    out = Path(out)
    writers = {
        ".csv": lambda p: p.write_text(results_csv(df), encoding="utf-8", newline=""),
        ".parquet": lambda p: df.to_parquet(p, index=False),
    }
    if out.suffix.lower() not in writers:
        raise InputError(f"cannot write {str(out)!r}: use a .csv or .parquet file name")
    with atomic_path(out) as tmp:
        writers[out.suffix.lower()](tmp)
    return out
