"""Metadata filters of a collection search, turned into a row mask BEFORE the top-k.

A filter never drops hits after ranking (which would return too few); it decides which
embedding rows take part in the ranking at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from inquire.collection.store import TAXON_COLUMNS, CollectionIndex
from inquire.errors import InputError, UnknownNameError


@dataclass(frozen=True)
class Filters:
    """Which images a search considers.

    - ``taxa``: names matched case-insensitively against the species name and every rank
      (kingdom .. genus); an image passes if ANY name matches (``("Aves", "Insecta")``).
    - ``date_from`` / ``date_to``: inclusive calendar days; images without a date fail.
    - ``bbox``: ``(west, south, east, north)`` in degrees; ``west > east`` crosses the
      antimeridian. Images without coordinates fail.
    - ``under``: folders relative to the images root (``site_2``, ``site_2/cam_1``); an image
      passes if it lies in ANY of them or their sub-folders (camera-trap sites, trips).
    """

    taxa: tuple[str, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    bbox: tuple[float, float, float, float] | None = None
    under: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return (
            bool(self.taxa)
            or self.date_from is not None
            or self.date_to is not None
            or (self.bbox is not None)
            or bool(self.under)
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (also the key of a saved search)."""
        return {
            "taxa": list(self.taxa),
            "date_from": self.date_from.isoformat() if self.date_from else None,
            "date_to": self.date_to.isoformat() if self.date_to else None,
            "bbox": list(self.bbox) if self.bbox else None,
            "under": list(self.under),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Filters:
        return parse_filters(
            d.get("taxa") or (),
            d.get("date_from"),
            d.get("date_to"),
            d.get("bbox"),
            d.get("under") or (),
        )

    def mask(self, index: CollectionIndex) -> np.ndarray:
        """``(N,) bool``: valid rows of ``index`` that pass every filter."""
        m = index.valid.copy()
        if self.taxa:
            hit = np.zeros(len(index), bool)
            for name in self.taxa:
                found = False
                for col in TAXON_COLUMNS:
                    cat = index.taxa[col]
                    codes = [
                        i for i, c in enumerate(cat.categories) if str(c).lower() == name.lower()
                    ]
                    if codes:
                        found = True
                        hit |= np.isin(cat.codes, codes)
                if not found:
                    valid_names = {
                        str(c) for col in TAXON_COLUMNS for c in index.taxa[col].categories
                    }
                    if not valid_names:
                        raise InputError(
                            f"--taxon {name!r}: collection {index.collection.name!r} records no "
                            "taxon names (they come from an iNat24 train.json or iNat24 class "
                            "folders); search without --taxon"
                        )
                    raise UnknownNameError("taxon", name, valid_names)
            m &= hit
        if self.date_from is not None:
            m &= index.days >= _days(self.date_from)
        if self.date_to is not None:
            m &= (index.days <= _days(self.date_to)) & (index.days != np.iinfo(np.int32).min)
        if self.bbox is not None:
            w, s, e, n = self.bbox
            lat, lon = index.lat, index.lon
            in_lon = (lon >= w) & (lon <= e) if w <= e else (lon >= w) | (lon <= e)
            m &= in_lon & (lat >= s) & (lat <= n)  # NaN compares False: no coordinates fail
        if self.under:
            cats = [str(c) for c in index.folder.categories]
            codes = [
                i
                for i, c in enumerate(cats)
                if any(c == u or c.startswith(u + "/") for u in self.under)
            ]
            if not codes:
                parents = {
                    "/".join(c.split("/")[:i]) for c in cats for i in range(1, c.count("/") + 2)
                }
                raise UnknownNameError("folder", self.under[0], parents - {""} or ["(none)"])
            m &= np.isin(index.folder.codes, codes)
        return m


def _days(d: date) -> int:
    return int(np.datetime64(d.isoformat(), "D").astype(np.int64))


def _parse_date(value: str | date | None, flag: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise InputError(
            f"{flag} {value!r} is not a date; expected YYYY-MM-DD, e.g. 2020-03-01"
        ) from None


def parse_bbox(value: str | Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """``"W,S,E,N"`` (degrees) -> a checked tuple; None passes through."""
    if value is None or value == "":
        return None
    parts: Sequence[Any] = value.split(",") if isinstance(value, str) else value
    try:
        w, s, e, n = (float(x) for x in parts)
    except (TypeError, ValueError):
        raise InputError(
            f"--bbox {value!r} is not four numbers; expected W,S,E,N in degrees, "
            "e.g. -10,35,30,60 for western Europe"
        ) from None
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= n <= 90):
        raise InputError(
            f"--bbox {value!r} is out of range; longitudes must lie in [-180, 180] and "
            "latitudes in [-90, 90] with south <= north"
        )
    return (w, s, e, n)


def parse_filters(
    taxa: Sequence[str] | str = (),
    date_from: str | date | None = None,
    date_to: str | date | None = None,
    bbox: str | Sequence[float] | None = None,
    under: Sequence[str] | str = (),
) -> Filters:
    """Build :class:`Filters` from command-line or form values, with clear errors."""
    if isinstance(taxa, str):
        taxa = [taxa]
    names = tuple(t.strip() for t in taxa if t and t.strip())
    d0, d1 = _parse_date(date_from, "--from"), _parse_date(date_to, "--to")
    if d0 and d1 and d0 > d1:
        raise InputError(f"--from {d0} is after --to {d1}; swap them")
    if isinstance(under, str):
        under = [under]
    folders = []
    for u in under:
        f = str(u).replace("\\", "/").strip().strip("/")
        if f == ".." or f.startswith("../") or "/../" in f"/{f}/":
            raise InputError(f"--under {u!r} leaves the images folder; give a sub-folder path")
        if f and f != ".":
            folders.append(f)
    return Filters(names, d0, d1, parse_bbox(bbox), tuple(folders))
