"""A Darwin Core Archive of a verified search, for publishing its photos as GBIF occurrences.

The archive is a zip of ``occurrence.txt`` (the core: one occurrence per row, tab-separated,
UTF-8, one header line), ``meta.xml`` (which column holds which Darwin Core term, as the
Darwin Core text guide defines it) and ``eml.xml`` (the dataset's metadata, GBIF's EML
profile).

Which results become occurrences (rows of :func:`~inquire.collection.interop.inspected.
inspected_results`): those whose marks' consensus is relevant, as ``HumanObservation`` with
``identificationVerificationStatus`` ``verified`` and ``identifiedBy`` the people who marked
them relevant. With ``unverified=True`` the results nobody marked above the deepest mark
follow as ``MachineObservation`` / ``unverified`` (the model found them, no person looked).
Results marked not relevant, unsure or disputed are never written; neither are photos
without a taxon (an occurrence needs a scientific name: they are counted in
:attr:`DwcaExport.without_taxon`).

Tabs, line breaks and other control characters inside a value become spaces (the file
encloses no fields); numbers are written in decimal form, never as ``1e-05``; text cells
a spreadsheet would run as formulas get a leading ``'``
(:func:`~inquire.collection.verify.escape_formulas`).
"""

from __future__ import annotations

import io
import math
import re
import uuid
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from inquire.collection.interop.inspected import INAT_PHOTO_URL
from inquire.collection.verify import escape_formulas
from inquire.errors import InputError

DWC = "http://rs.tdwg.org/dwc/terms/"
DCTERMS = "http://purl.org/dc/terms/"
TEXT_NS = "http://rs.tdwg.org/dwc/text/"
OCCURRENCE = DWC + "Occurrence"
CORE_FILE = "occurrence.txt"

# The columns of occurrence.txt, in order: (header name, term URI). Column 0 is the id.
TERMS: tuple[tuple[str, str], ...] = (
    ("occurrenceID", DWC + "occurrenceID"),
    ("basisOfRecord", DWC + "basisOfRecord"),
    ("catalogNumber", DWC + "catalogNumber"),
    ("eventDate", DWC + "eventDate"),
    ("decimalLatitude", DWC + "decimalLatitude"),
    ("decimalLongitude", DWC + "decimalLongitude"),
    ("geodeticDatum", DWC + "geodeticDatum"),
    ("coordinateUncertaintyInMeters", DWC + "coordinateUncertaintyInMeters"),
    ("scientificName", DWC + "scientificName"),
    ("kingdom", DWC + "kingdom"),
    ("phylum", DWC + "phylum"),
    ("class", DWC + "class"),
    ("order", DWC + "order"),
    ("family", DWC + "family"),
    ("genus", DWC + "genus"),
    ("associatedMedia", DWC + "associatedMedia"),
    ("identificationVerificationStatus", DWC + "identificationVerificationStatus"),
    ("identifiedBy", DWC + "identifiedBy"),
    ("dateIdentified", DWC + "dateIdentified"),
    ("recordedBy", DWC + "recordedBy"),
    ("license", DCTERMS + "license"),
    ("occurrenceRemarks", DWC + "occurrenceRemarks"),
)

# Tabs, line breaks and every other control character (C0, DEL, C1; NUL would end a C
# reader's string): a field of the tab-separated core file holds one line of plain text.
_BREAKS = re.compile("\r\n|[\x00-\x1f\x7f-\x9f\u2028\u2029]")

NUMERIC = ("catalogNumber", "decimalLatitude", "decimalLongitude", "coordinateUncertaintyInMeters")


@dataclass(frozen=True)
class DwcaExport:
    """A built archive: ``data`` (the zip's bytes), ``rows`` (occurrences written),
    ``without_taxon`` (verified photos left out because their taxon is unknown)."""

    data: bytes
    rows: int
    without_taxon: int


def _number(x: Any) -> str:
    """A float as the shortest decimal text that reads back the same, never in exponent
    form (a latitude of 1e-05 is written 0.00001: Darwin Core asks for decimal degrees);
    NaN/None as empty."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return ""
    f = float(x)
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return str(np.format_float_positional(f, trim="-"))


def _text(x: Any) -> str:
    """A value as one line of text: None/NaN empty, tabs, line breaks and other control
    characters as spaces."""
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return ""
    return _BREAKS.sub(" ", str(x))


def occurrence_frame(
    table: pd.DataFrame,
    collection: str,
    search_id: str,
    query: str,
    unverified: bool = False,
    media_base_url: str | None = None,
) -> tuple[pd.DataFrame, int]:
    """The ``occurrence.txt`` table (columns :data:`TERMS`, all text) of an
    :func:`inspected_results` table, and the number of verified photos left out for lack
    of a taxon. ``associatedMedia``: the iNaturalist photo page when the photo id is known,
    else ``media_base_url`` + the photo's path (URL-quoted) when given, else the path
    relative to the collection's photo folder."""
    keep = table["label"] == "relevant"
    if unverified:
        keep |= table["label"] == ""
    rows = table[keep]
    has_taxon = rows["taxon"].notna() & (rows["taxon"].astype(str).str.strip() != "")
    without_taxon = int((~has_taxon & (rows["label"] == "relevant")).sum())
    rows = rows[has_taxon]
    out = []
    for r in rows.to_dict("records"):
        verified = r["label"] == "relevant"
        has_xy = not (math.isnan(r["lat"]) or math.isnan(r["lon"]))
        media = (
            INAT_PHOTO_URL.format(int(r["inat_photo_id"]))
            if r["inat_photo_id"] is not pd.NA and r["inat_photo_id"] is not None
            else ""
        )
        if not media and isinstance(r["path"], str):
            media = (
                media_base_url.rstrip("/") + "/" + quote(r["path"]) if media_base_url else r["path"]
            )
        out.append(
            {
                "occurrenceID": f"inquire:{collection}:{int(r['image_id'])}",
                "basisOfRecord": "HumanObservation" if verified else "MachineObservation",
                "catalogNumber": str(int(r["image_id"])),
                "eventDate": _text(r["camera_date"]),
                "decimalLatitude": _number(r["lat"]) if has_xy else "",
                "decimalLongitude": _number(r["lon"]) if has_xy else "",
                "geodeticDatum": "WGS84" if has_xy else "",
                # Darwin Core: "Zero is not a valid value for this term".
                "coordinateUncertaintyInMeters": (
                    _number(r["coord_uncertainty_m"])
                    if has_xy and r["coord_uncertainty_m"] > 0
                    else ""
                ),
                "scientificName": _text(r["taxon"]),
                **{k: _text(r[k]) for k in ("kingdom", "phylum", "class", "order", "family")},
                "genus": _text(r["genus"]),
                "associatedMedia": _text(media),
                "identificationVerificationStatus": "verified" if verified else "unverified",
                "identifiedBy": _text(r["relevant_by"]) if verified else "",
                "dateIdentified": _text(r["last_relevant_at"]) if verified else "",
                "recordedBy": _text(r["rights_holder"]),
                "license": _text(r["license"]),
                "occurrenceRemarks": _text(
                    f"result {int(r['rank'])} of search {search_id} "
                    f"({query or 'by example'!s}) in collection {collection}"
                ),
            }
        )
    df = pd.DataFrame(out, columns=[name for name, _ in TERMS], dtype=object)
    text = [c for c in df.columns if c not in NUMERIC]  # "-33.8" is a latitude, not a formula
    df[text] = escape_formulas(df[text])
    return df, without_taxon


def meta_xml() -> bytes:
    """``meta.xml``: the core is ``occurrence.txt``, rows of ``dwc:Occurrence``, its id in
    column 0; every column named by its term URI (text guide rules: UTF-8, tab-separated,
    no enclosing character, one header line)."""
    ET.register_namespace("", TEXT_NS)
    archive = ET.Element(f"{{{TEXT_NS}}}archive", {"metadata": "eml.xml"})
    core = ET.SubElement(
        archive,
        f"{{{TEXT_NS}}}core",
        {
            "encoding": "UTF-8",
            "fieldsTerminatedBy": "\\t",
            "linesTerminatedBy": "\\n",
            "fieldsEnclosedBy": "",
            "ignoreHeaderLines": "1",
            "rowType": OCCURRENCE,
        },
    )
    files = ET.SubElement(core, f"{{{TEXT_NS}}}files")
    ET.SubElement(files, f"{{{TEXT_NS}}}location").text = CORE_FILE
    ET.SubElement(core, f"{{{TEXT_NS}}}id", {"index": "0"})
    for i, (_, term) in enumerate(TERMS):
        ET.SubElement(core, f"{{{TEXT_NS}}}field", {"index": str(i), "term": term})
    ET.indent(archive)
    return ET.tostring(archive, encoding="UTF-8", xml_declaration=True) + b"\n"


def eml_xml(
    collection: str,
    search_id: str,
    query: str,
    people: list[str],
    occurrences: pd.DataFrame,
    today: date | None = None,
) -> bytes:
    """``eml.xml`` (EML 2.1.1, GBIF metadata profile): title, the people who verified as
    creators and contacts, an abstract saying how the records were made, the bounding box of
    the occurrences, and a note that the publisher must choose the dataset's licence."""
    eml_ns = "eml://ecoinformatics.org/eml-2.1.1"
    ET.register_namespace("eml", eml_ns)
    package = str(uuid.uuid5(uuid.NAMESPACE_URL, f"inquire:{collection}:{search_id}"))
    root = ET.Element(
        f"{{{eml_ns}}}eml",
        {"packageId": package, "system": "inquire", "scope": "system", "xml:lang": "en"},
    )
    ds = ET.SubElement(root, "dataset")
    ET.SubElement(ds, "alternateIdentifier").text = package
    ET.SubElement(
        ds, "title", {"xml:lang": "en"}
    ).text = f"Verified photos of search {query or 'by example'!r} in collection {collection}"
    for tag in ("creator", "metadataProvider"):
        for who in people or ["inquire"]:
            party = ET.SubElement(ds, tag)
            if people:
                ET.SubElement(ET.SubElement(party, "individualName"), "surName").text = who
            else:
                ET.SubElement(party, "organizationName").text = who
    ET.SubElement(ds, "pubDate").text = (today or datetime.now(timezone.utc).date()).isoformat()
    ET.SubElement(ds, "language").text = "en"
    ET.SubElement(ET.SubElement(ds, "abstract"), "para").text = (
        f"Photos of collection {collection} returned by the text-to-image search "
        f"{query or 'by example'!r} (saved search {search_id}) and checked by people: "
        "HumanObservation records were marked relevant by more people than marked them not "
        "relevant; MachineObservation records were ranked by the model and not inspected."
    )
    ET.SubElement(ET.SubElement(ds, "intellectualRights"), "para").text = (
        "Not set by inquire: choose the dataset's licence (CC0 1.0, CC BY 4.0 or CC BY-NC 4.0) "
        "before publishing. Per-record photo licences are in the license column."
    )
    lat = pd.to_numeric(occurrences["decimalLatitude"], errors="coerce").dropna()
    lon = pd.to_numeric(occurrences["decimalLongitude"], errors="coerce").dropna()
    if len(lat):
        geo = ET.SubElement(ET.SubElement(ds, "coverage"), "geographicCoverage")
        ET.SubElement(geo, "geographicDescription").text = "bounding box of the records"
        box = ET.SubElement(geo, "boundingCoordinates")
        for tag, val in (
            ("westBoundingCoordinate", lon.min()),
            ("eastBoundingCoordinate", lon.max()),
            ("northBoundingCoordinate", lat.max()),
            ("southBoundingCoordinate", lat.min()),
        ):
            ET.SubElement(box, tag).text = _number(val)
    contact = ET.SubElement(ds, "contact")
    if people:
        ET.SubElement(ET.SubElement(contact, "individualName"), "surName").text = people[0]
    else:
        ET.SubElement(contact, "organizationName").text = "inquire"
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def _zip_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def dwca_bytes(
    table: pd.DataFrame,
    collection: str,
    search_id: str,
    query: str,
    unverified: bool = False,
    media_base_url: str | None = None,
) -> DwcaExport:
    """The Darwin Core Archive (zip bytes) of an :func:`inspected_results` table."""
    if media_base_url is not None and not media_base_url.startswith(("https://", "http://")):
        raise InputError(
            f"media base URL {media_base_url!r} is not an http(s) URL; give the address the "
            "photo folder is published at, e.g. https://example.org/photos/"
        )
    occ, without_taxon = occurrence_frame(
        table, collection, search_id, query, unverified, media_base_url
    )
    header = "\t".join(name for name, _ in TERMS)
    lines = [header, *("\t".join(map(str, row)) for row in occ.itertuples(index=False))]
    people = sorted({p for s in table["relevant_by"] for p in str(s).split(" | ") if p and str(s)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _zip_entry(zf, CORE_FILE, ("\n".join(lines) + "\n").encode("utf-8"))
        _zip_entry(zf, "meta.xml", meta_xml())
        _zip_entry(zf, "eml.xml", eml_xml(collection, search_id, query, people, occ))
    return DwcaExport(buf.getvalue(), len(occ), without_taxon)
