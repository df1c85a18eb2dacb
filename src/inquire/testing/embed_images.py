"""Image files for pipeline tests: a few plain JPEGs and a zoo of awkward and broken files.

:func:`make_image_zoo` writes files whose decoding each test can check:

=====================  =========================================================
file                   what it is                                   expected
=====================  =========================================================
good_{i}.jpg           plain RGB JPEGs                              embedded
cmyk.jpg               CMYK JPEG                                    embedded
gray16.png             16-bit greyscale PNG                         embedded
alpha.png              RGBA PNG with transparent areas              embedded
palette.png            palette PNG with a transparent colour         embedded
exif_rotated.jpg       stored sideways, EXIF orientation 6          embedded upright
truncated.jpg          a JPEG cut in half                            error
empty.jpg              zero bytes                                    error
not_an_image.jpg       text with an image extension                  error
notes.txt              not an image extension                        skipped
=====================  =========================================================
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

ZOO_OK = ("cmyk.jpg", "gray16.png", "alpha.png", "palette.png", "exif_rotated.jpg")
ZOO_BAD = ("truncated.jpg", "empty.jpg", "not_an_image.jpg")


def random_rgb(seed: int, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    """A smooth random ``(h, w, 3) uint8`` picture (gradients + blobs, so JPEG keeps it)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.empty((h, w, 3))
    for c in range(3):
        a, b, f = rng.uniform(-1, 1, 3)
        out[..., c] = 128 + 100 * np.sin(6 * f * xx + a) * np.cos(5 * f * yy + b)
    return out.clip(0, 255).astype(np.uint8)


def write_jpegs(
    folder: str | os.PathLike[str], n: int, seed: int = 0, size: int = 48
) -> list[Path]:
    """Write ``n`` small JPEGs ``img_{i:04d}.jpg`` into ``folder``; return their paths."""
    from PIL import Image

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"img_{i:04d}.jpg"
        Image.fromarray(random_rgb(seed + i, (size, size))).save(p, quality=90)
        paths.append(p)
    return paths


def make_image_zoo(folder: str | os.PathLike[str], n_good: int = 3) -> Path:
    """Write the zoo described in the module docs into ``folder``; return ``folder``."""
    from PIL import Image

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        Image.fromarray(random_rgb(100 + i)).save(root / f"good_{i}.jpg", quality=90)
    rgb = Image.fromarray(random_rgb(7))
    rgb.convert("CMYK").save(root / "cmyk.jpg", quality=90)
    gray = (random_rgb(8)[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray).save(root / "gray16.png")
    rgba = np.dstack([random_rgb(9), np.full((40, 48), 255, np.uint8)])
    rgba[:20, :, 3] = 0  # top half transparent
    rgba[:20, :, :3] = 0  # with black stored under it
    Image.fromarray(rgba, "RGBA").save(root / "alpha.png")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(root / "palette.png", transparency=0)
    # Stored rotated by 90 degrees; EXIF orientation 6 says "rotate 270 (clockwise 90) to view".
    sideways = rgb.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(root / "exif_rotated.jpg", quality=90, exif=exif.tobytes())
    buf = io.BytesIO()
    Image.fromarray(random_rgb(10, (96, 96))).save(buf, "JPEG", quality=95)
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "not_an_image.jpg").write_text("this is not an image\n", encoding="utf-8")
    (root / "notes.txt").write_text("skipped: not an image extension\n", encoding="utf-8")
    return root
