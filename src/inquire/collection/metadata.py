"""Per-image metadata: iNat24 ``train.json`` first, then EXIF, then the file's time.

Every record has the same fields (:data:`FIELDS`); ``date_source`` says where the date came
from (``inat``, ``exif`` or ``mtime``) and ``taxon_source`` where the taxonomy came from
(``inat`` for train.json, ``folder`` for an iNat24 class folder name, empty when unknown).
Dates are ISO strings ``YYYY-MM-DDTHH:MM:SS`` (local camera time for EXIF, UTC for the file
time); coordinates are decimal degrees, south and west negative. ``coord_uncertainty_m``
(metres), ``license`` and ``rights_holder`` come from train.json only (its
``location_uncertainty``, ``license`` and ``rights_holder``), else they are unset.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from inquire.errors import InputError

log = logging.getLogger(__name__)

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
FIELDS = (
    "source_id",
    "date",
    "date_source",
    "lat",
    "lon",
    "taxon_id",
    "taxon",
    *RANKS,
    "taxon_source",
    "coord_uncertainty_m",
    "license",
    "rights_holder",
)

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL, _DATETIME = 36867, 306
# iNat24 class folders: 00000_Animalia_Chordata_Aves_Passeriformes_Corvidae_Corvus_corax
_INAT_DIR = re.compile(
    r"^(\d{5})_([A-Z][a-z]+)_([A-Za-z]+)_([A-Za-z]+)_([A-Za-z]+)_([A-Za-z]+)_"
    r"([A-Z][a-z-]+)_([a-z][a-z-]*)$"
)


def empty_record() -> dict[str, Any]:
    """A record with every field unset."""
    return dict.fromkeys(FIELDS)


class InatMetadata:
    """Index of an iNat24/COCO-like ``train.json`` by image file path.

    Paths are matched on their last two components (class folder + file name), which are
    unique in iNat24, so the JSON's ``train/...`` prefix need not match the scanned root.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(
                f"metadata file {str(self.path)!r} does not exist; pass --metadata with the "
                "path of an iNat24-style train.json"
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"metadata file {str(self.path)!r} is not valid JSON: {exc}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
            raise InputError(
                f"metadata file {str(self.path)!r} has no 'images' list; expected the COCO-like "
                "iNat24 train.json with images, annotations and categories"
            )
        cats = {c["id"]: c for c in data.get("categories", []) if "id" in c}
        cat_of = {a["image_id"]: a.get("category_id") for a in data.get("annotations", [])}
        self.by_key: dict[str, dict[str, Any]] = {}
        for img in data["images"]:
            if "file_name" not in img or "id" not in img:
                raise InputError(
                    f"an image entry of {str(self.path)!r} lacks 'id' or 'file_name': {img!r}"
                )
            rec = empty_record()
            rec["source_id"] = int(img["id"])
            date = _iso(str(img["date"])) if img.get("date") else None
            if date:
                rec["date"], rec["date_source"] = date, "inat"
            rec["lat"], rec["lon"] = _coords(img.get("latitude"), img.get("longitude"))
            if rec["lat"] is not None:
                rec["coord_uncertainty_m"] = _metres(img.get("location_uncertainty"))
            rec["license"] = _text(img.get("license"))
            rec["rights_holder"] = _text(img.get("rights_holder"))
            cat = cats.get(cat_of.get(img["id"]))
            if cat is not None:
                rec["taxon_id"] = int(cat["id"])
                rec["taxon"] = cat.get("name") or " ".join(
                    x for x in (cat.get("genus"), cat.get("specific_epithet")) if x
                )
                for rank in RANKS:
                    rec[rank] = cat.get(rank)
                rec["taxon_source"] = "inat"
            self.by_key[_key(str(img["file_name"]))] = rec

    def __len__(self) -> int:
        return len(self.by_key)

    def get(self, relpath: str) -> dict[str, Any] | None:
        """The JSON record of the file at ``relpath`` (relative, POSIX), or None."""
        return self.by_key.get(_key(relpath))


def _key(file_name: str) -> str:
    return "/".join(PurePosixPath(file_name.replace("\\", "/")).parts[-2:])


def _iso(text: str) -> str | None:
    """``2021-04-05 10:11:12+00:00`` / ``2021:04:05 10:11:12`` / ``2021-04-05`` -> ISO."""
    text = text.strip()
    for fmt, n in (
        ("%Y-%m-%d %H:%M:%S", 19),
        ("%Y:%m:%d %H:%M:%S", 19),
        ("%Y-%m-%dT%H:%M:%S", 19),
        ("%Y-%m-%d", 10),
    ):
        try:
            dt = datetime.strptime(text[:n], fmt)
        except ValueError:
            continue
        if dt.year < 1800:  # cameras write 0000:00:00 or 1900 when their clock was never set
            return None
        return dt.strftime("%Y-%m-%dT%H:%M:%S")
    return None


def _coords(lat: Any, lon: Any) -> tuple[float | None, float | None]:
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError):
        return None, None
    if not (math.isfinite(la) and math.isfinite(lo) and -90 <= la <= 90 and -180 <= lo <= 180):
        return None, None
    return la, lo


def _metres(value: Any) -> float | None:
    """A non-negative, finite distance in metres, or None."""
    if isinstance(value, bool):
        return None
    try:
        m = float(value)
    except (TypeError, ValueError):
        return None
    return m if math.isfinite(m) and m >= 0 else None


def _text(value: Any) -> str | None:
    """A non-empty string with surrounding spaces removed, or None."""
    return (value.strip() or None) if isinstance(value, str) else None


def _dms_to_degrees(dms: Any, ref: Any) -> float | None:
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60 + s / 3600
    if not math.isfinite(value):
        return None
    ref = ref.decode() if isinstance(ref, bytes) else str(ref or "")
    return -value if ref.strip().upper() in ("S", "W") else value


def read_exif(path: str | os.PathLike[str]) -> dict[str, Any]:
    """EXIF DateTimeOriginal (falling back to DateTime) and GPS of an image file.

    Returns ``{"date": ISO or None, "lat": float or None, "lon": float or None}``; raises
    ``OSError`` if the file is not an image Pillow can open.
    """
    from PIL import Image

    with Image.open(path) as im:
        exif = im.getexif()
    date = None
    raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    if raw:
        date = _iso(raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))
    gps = exif.get_ifd(_GPS_IFD)
    lat = _dms_to_degrees(gps.get(2), gps.get(1)) if gps.get(2) else None
    lon = _dms_to_degrees(gps.get(4), gps.get(3)) if gps.get(4) else None
    lat, lon = _coords(lat, lon) if lat is not None and lon is not None else (None, None)
    return {"date": date, "lat": lat, "lon": lon}


def folder_taxonomy(relpath: str) -> dict[str, Any] | None:
    """Taxonomy parsed from an iNat24 class folder name in ``relpath``, or None."""
    for part in reversed(PurePosixPath(relpath).parts[:-1]):
        m = _INAT_DIR.match(part)
        if m:
            rec: dict[str, Any] = {"taxon_id": int(m.group(1))}
            rec.update(zip(RANKS, m.groups()[1:7], strict=True))
            rec["taxon"] = f"{m.group(7)} {m.group(8)}"
            rec["taxon_source"] = "folder"
            return rec
    return None


def describe(path: Path, relpath: str, mtime_ns: int, inat: InatMetadata | None) -> dict[str, Any]:
    """The metadata record of one image file: train.json, else EXIF, else the file time.

    Fields the JSON leaves empty are filled from EXIF (e.g. a photo the JSON lists without
    coordinates); a file Pillow cannot read simply has no EXIF.
    """
    rec = empty_record()
    if inat is not None and (found := inat.get(relpath)) is not None:
        rec.update(found)
    if rec["taxon"] is None and (tax := folder_taxonomy(relpath)) is not None:
        rec.update(tax)
    if rec["date"] is None or rec["lat"] is None:
        try:
            exif = read_exif(path)
        except (OSError, ValueError, SyntaxError) as exc:
            log.debug("no EXIF from %s: %s", path, exc)
            exif = {"date": None, "lat": None, "lon": None}
        if rec["date"] is None and exif["date"]:
            rec["date"], rec["date_source"] = exif["date"], "exif"
        if rec["lat"] is None and exif["lat"] is not None:
            rec["lat"], rec["lon"] = exif["lat"], exif["lon"]
    if rec["date"] is None:
        when = datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)
        rec["date"], rec["date_source"] = when.strftime("%Y-%m-%dT%H:%M:%S"), "mtime"
    return rec
