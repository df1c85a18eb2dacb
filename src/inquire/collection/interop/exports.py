"""The export formats read by outside tools, as rows, and one call per export.

``inquire collection export NAME --search-id ID --format F`` and the verification page's
export links both call :func:`build_export` (the page) or :func:`export_search` (a file).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from inquire.collection.interop.dwca import dwca_bytes
from inquire.collection.interop.inquire_search import inquire_search_bytes
from inquire.collection.interop.inspected import check_depth, inspected_results
from inquire.collection.store import open_collection
from inquire.collection.verify import Verification
from inquire.errors import InputError, UnknownNameError


@dataclass(frozen=True)
class ExportFile:
    """One export, built in memory: ``data`` (the file's bytes), ``filename`` (a suggested
    name), ``media_type``, ``rows`` (data rows or occurrences written), ``inspected``
    (results covered: ranks 1..inspected), ``positives`` (results whose consensus is
    relevant among them) and ``without_taxon`` (verified photos a format had to leave out
    because their taxon is unknown; Darwin Core only)."""

    data: bytes
    filename: str
    media_type: str
    rows: int
    inspected: int
    positives: int
    without_taxon: int = 0


@dataclass(frozen=True)
class ExportOptions:
    """What an export includes. ``who``: only this person's marks; ``depth``: ranks to
    cover (default: down to the deepest mark); ``inat_ids``: train.json image ids are
    iNaturalist photo ids (iNat24); ``unverified``: Darwin Core also lists the results nobody
    marked (as MachineObservation); ``media_base_url``: where the photo folder is published
    (Darwin Core ``associatedMedia`` of photos without an iNaturalist id)."""

    who: str | None = None
    depth: int | None = None
    inat_ids: bool = True
    unverified: bool = False
    media_base_url: str | None = None


@dataclass(frozen=True)
class ExportFormat:
    """A format row: ``name`` (``--format``), file ``suffix``, ``media_type``, ``help``, and
    ``build(table, collection, search_id, query, options) -> (bytes, rows, without_taxon)``."""

    name: str
    suffix: str
    media_type: str
    help: str
    build: Callable[[pd.DataFrame, str, str, str, ExportOptions], tuple[bytes, int, int]]


def _inquire_search(
    table: pd.DataFrame, collection: str, search_id: str, query: str, opts: ExportOptions
) -> tuple[bytes, int, int]:
    return inquire_search_bytes(table), len(table), 0


def _dwca(
    table: pd.DataFrame, collection: str, search_id: str, query: str, opts: ExportOptions
) -> tuple[bytes, int, int]:
    out = dwca_bytes(table, collection, search_id, query, opts.unverified, opts.media_base_url)
    return out.data, out.rows, out.without_taxon


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "inquire-search",
            ".csv",
            "text/csv; charset=utf-8",
            "INQUIRE-Search's CSV (photo_id,species,marked,inat_url,latitude,longitude,month), "
            "read by its case-study R scripts",
            _inquire_search,
        ),
        ExportFormat(
            "dwca",
            ".zip",
            "application/zip",
            "Darwin Core Archive (occurrence.txt, meta.xml, eml.xml) of the verified photos, "
            "for GBIF",
            _dwca,
        ),
    )
}


def export_format(name: str) -> ExportFormat:
    """The row of format ``name`` (an :class:`UnknownNameError` listing the formats)."""
    if name not in FORMATS:
        raise UnknownNameError("export format", name, FORMATS)
    return FORMATS[name]


def build_export(
    v: Verification, search_id: str, fmt: str, options: ExportOptions | None = None
) -> ExportFile:
    """Export saved search ``search_id`` of ``v``'s collection in format ``fmt`` (a row of
    :data:`FORMATS`), in memory. Reads only; marks made meanwhile are in or out whole."""
    f = export_format(fmt)
    opts = options or ExportOptions()
    check_depth(opts.depth)
    table = inspected_results(v, search_id, opts.who, opts.depth, opts.inat_ids)
    query = v.request(search_id).text
    data, rows, without_taxon = f.build(table, v.coll.name, search_id, query, opts)
    return ExportFile(
        data,
        f"{v.coll.name}-{search_id}-{f.name}{f.suffix}",
        f.media_type,
        rows,
        len(table),
        int((table["label"] == "relevant").sum()),
        without_taxon,
    )


def export_search(
    name: str,
    search_id: str,
    out: str | os.PathLike[str],
    fmt: str,
    options: ExportOptions | None = None,
    overwrite: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> ExportFile:
    """``inquire collection export NAME --search-id ID --format FMT --out OUT``: write the
    export of :func:`build_export` to ``out`` atomically (a reader never sees half a file).
    An unknown format, or an existing ``out`` without ``overwrite``, is refused before any
    work; a folder that cannot be written is an :class:`InputError` naming it."""
    from inquire._io import atomic_path, check_output_file

    export_format(fmt)
    out = check_output_file(out, overwrite)
    with open_collection(name, root) as coll, Verification(coll) as v:
        result = build_export(v, search_id, fmt, options)
    try:
        with atomic_path(out) as tmp:
            Path(tmp).write_bytes(result.data)
    except OSError as exc:
        raise InputError(
            f"cannot write {str(out)!r}: {exc.strerror or exc}; choose a folder you can write to"
        ) from None
    return result
