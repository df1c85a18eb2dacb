"""Builders of small photo collections on disk, and a strict test encoder.

The builders write REAL JPEG files with EXIF dates and GPS, an iNat24-style tree with
``train.json``, and a camera-trap tree of near-identical frames, in the colours that the
``toy:colour`` encoder (:mod:`inquire.embed.toy_backend`, re-exported here for tests)
tells apart. ``PixelHashEncoder`` gives every image its own random-looking vector.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from inquire.embed.base import l2_normalize
from inquire.embed.toy_backend import COLOURS, PROTOTYPES, pixels

# ---------------------------------------------------------------------------------------------
# Photo builders


@dataclass(frozen=True)
class Photo:
    """One generated photo: its file, colour and the metadata written into its EXIF."""

    path: Path
    colour: str
    date: datetime | None
    lat: float | None
    lon: float | None


def _dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    deg = int(value)
    minutes = int((value - deg) * 60)
    seconds = (value - deg - minutes / 60) * 3600
    return Fraction(deg), Fraction(minutes), Fraction(round(seconds * 1000), 1000)


def write_photo(
    path: str | os.PathLike[str],
    colour: str,
    date: datetime | None = None,
    lat: float | None = None,
    lon: float | None = None,
    seed: int = 0,
    size: tuple[int, int] = (48, 36),
) -> Photo:
    """Write a JPEG of mostly one named colour (with noise, so every file differs).

    ``date`` goes into EXIF DateTimeOriginal (tag 36867), ``lat``/``lon`` (decimal degrees)
    into the GPSInfo IFD (34853) as degrees/minutes/seconds with N/S and E/W references.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[colour], dtype=np.float32)
    w, h = size
    pixels = base + rng.normal(0, 12, size=(h, w, 3))
    # A small patch of another colour keeps the images from being trivially identical.
    other = PROTOTYPES[rng.integers(len(PROTOTYPES))]
    pixels[: h // 6, : w // 6] = other
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if date is not None:
        exif.get_ifd(0x8769)[36867] = date.strftime("%Y:%m:%d %H:%M:%S")
    if lat is not None and lon is not None:
        exif.get_ifd(0x8825).update(
            {1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W", 4: _dms(lon)}
        )
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p, format="JPEG", quality=90, exif=exif)
    return Photo(p, colour, date, lat, lon)


def make_photo_folder(root: str | os.PathLike[str], n: int = 40, seed: int = 0) -> list[Photo]:
    """A plain folder of ``n`` photos (some in sub-folders) with EXIF dates 2019-2022 and GPS
    spread over the globe; every 7th photo has no GPS and every 11th no date."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    photos = []
    for i in range(n):
        colour = names[int(rng.integers(len(names)))]
        date = None
        if i % 11 != 5:
            date = datetime(
                int(rng.integers(2019, 2023)),
                int(rng.integers(1, 13)),
                int(rng.integers(1, 29)),
                int(rng.integers(0, 24)),
                int(rng.integers(0, 60)),
            )
        lat = lon = None
        if i % 7 != 3:
            lat = round(float(rng.uniform(-60, 70)), 4)
            lon = round(float(rng.uniform(-170, 170)), 4)
        sub = "" if i % 3 else f"trip_{i % 4}/"
        photos.append(
            write_photo(Path(root) / f"{sub}IMG_{i:04d}.jpg", colour, date, lat, lon, seed + i)
        )
    return photos


# (kingdom, phylum, class, order, family, genus, specific epithet, colour of its photos)
INAT_TAXA = [
    (
        "Animalia",
        "Chordata",
        "Aves",
        "Passeriformes",
        "Cardinalidae",
        "Cardinalis",
        "cardinalis",
        "red",
    ),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Cyanocitta", "cristata", "blue"),
    (
        "Plantae",
        "Tracheophyta",
        "Magnoliopsida",
        "Asterales",
        "Asteraceae",
        "Helianthus",
        "annuus",
        "yellow",
    ),
    (
        "Animalia",
        "Arthropoda",
        "Insecta",
        "Lepidoptera",
        "Nymphalidae",
        "Danaus",
        "plexippus",
        "orange",
    ),
    (
        "Plantae",
        "Tracheophyta",
        "Polypodiopsida",
        "Polypodiales",
        "Pteridaceae",
        "Adiantum",
        "capillus-veneris",
        "green",
    ),
]


def make_inat_tree(
    root: str | os.PathLike[str], per_taxon: int = 6, seed: int = 0, first_id: int = 1000
) -> Path:
    """An iNat24-style tree ``root/train/{NNNNN_Kingdom_..._genus_epithet}/{uuid}.jpg`` with a
    COCO-like ``root/train.json`` (images with date/latitude/longitude, annotations,
    categories with the full taxonomy). The photos carry NO EXIF, so metadata must come from
    the JSON. Returns the path of ``train.json``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    images, annotations, categories = [], [], []
    image_id = first_id
    for cat_id, (k, p, c, o, f, g, s, colour) in enumerate(INAT_TAXA):
        dir_name = f"{cat_id:05d}_{k}_{p}_{c}_{o}_{f}_{g}_{s}"
        categories.append(
            {
                "id": cat_id,
                "name": f"{g} {s}",
                "common_name": "",
                "supercategory": c,
                "kingdom": k,
                "phylum": p,
                "class": c,
                "order": o,
                "family": f,
                "genus": g,
                "specific_epithet": s,
                "image_dir_name": dir_name,
            }
        )
        for j in range(per_taxon):
            uuid = f"{int(rng.integers(1 << 62)):016x}-{cat_id}-{j}"
            file_name = f"train/{dir_name}/{uuid}.jpg"
            write_photo(root / file_name, colour, seed=seed + image_id)
            month = 1 + (j * 2 + cat_id) % 12
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": 48,
                    "height": 36,
                    "date": f"{2018 + j % 4}-{month:02d}-{1 + j:02d} 10:30:00+00:00",
                    "latitude": round(float(rng.uniform(-40, 60)), 4),
                    "longitude": round(float(rng.uniform(-120, 150)), 4),
                    "location_uncertainty": 10,
                    # as iNat's train.json: a licence URL and a rights holder (not on all)
                    **(
                        {
                            "license": "http://creativecommons.org/licenses/by-nc/4.0/",
                            "rights_holder": f"observer {j}",
                        }
                        if j % 3
                        else {}
                    ),
                }
            )
            annotations.append({"id": image_id, "image_id": image_id, "category_id": cat_id})
            image_id += 1
    meta = root / "train.json"
    meta.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}),
        encoding="utf-8",
    )
    return meta


def make_camera_trap_tree(
    root: str | os.PathLike[str], sites: int = 2, cameras: int = 2, frames: int = 5, seed: int = 0
) -> list[Photo]:
    """Camera-trap folders ``root/site_S/cam_C/RCNX{n}.JPG``: bursts of near-identical frames
    (same colour, a few noise differences) with EXIF dates one second apart and no GPS."""
    photos = []
    colours = ["brown", "green", "grey", "black"]
    for s in range(sites):
        for c in range(cameras):
            colour = colours[(s * cameras + c) % len(colours)]
            for n in range(frames):
                date = datetime(2021, 6 + s, 10 + c, 3, 15, n)
                path = Path(root) / f"site_{s}" / f"cam_{c}" / f"RCNX{n:04d}.JPG"
                photos.append(write_photo(path, colour, date, None, None, seed + 97 * s + c + n))
    return photos


class PixelHashEncoder:
    """Random-looking but deterministic vectors: each image's vector is seeded by a hash of
    its pixels, each text's by a hash of the text. No two images tie, which makes exact
    ranking comparisons strict. ``(n, dim) float32`` L2-normalised."""

    def __init__(self, dim: int = 16) -> None:
        self.model_id = f"test:pixelhash-{dim}"
        self.revision = "1"
        self.dim = dim
        self.n_images_encoded = 0

    def _vec(self, data: bytes) -> np.ndarray:
        import hashlib

        seed = int.from_bytes(hashlib.sha1(data).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalize(np.stack([self._vec(t.encode()) for t in texts]))

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        self.n_images_encoded += len(images)
        return l2_normalize(np.stack([self._vec(pixels(im).tobytes()) for im in images]))
