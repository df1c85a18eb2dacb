"""Image files: which names are images, what format encoded bytes hold, how pixels are decoded.

Everything in inquire that lists, serves, sends or decodes an image file goes through this
module, so ingest, the embedding pipeline, rerankers and the web page's thumbnails agree:

- :data:`IMAGE_SUFFIXES`: the file-name suffixes treated as images (case-insensitive);
- :func:`sniff_mime`: the media type of encoded image bytes, from their first bytes;
- :func:`open_image`: the RGB picture every model is given (and every thumbnail is made of);
- :func:`open_as_stored`: ``PIL.Image.open`` as is, INQUIRE's own reranker decoding.

Pillow is imported only when an image is opened.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from inquire.errors import InputError

# The union of the formats Pillow opens that photo collections use: JPEG (also as .jfif),
# PNG, WebP, GIF, BMP and TIFF.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)

# (magic bytes at offset 0, media type); WebP is RIFF....WEBP and is checked apart.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),  # JPEG, JFIF, EXIF and MPO (multi-picture) files
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"BM", "image/bmp"),
)
MIME_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/gif", "image/tiff", "image/bmp", "image/webp"}
)
# How many leading bytes :func:`sniff_mime` needs at most.
SNIFF_BYTES = 12

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class UnknownImageFormat(InputError):
    """Bytes whose leading bytes are none of the formats in :data:`MIME_TYPES`."""


def is_image_name(name: str | os.PathLike[str]) -> bool:
    """Whether the file name ``name`` ends in one of :data:`IMAGE_SUFFIXES` (any case)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_SUFFIXES


def sniff_mime(data: bytes, name: str = "image") -> str:
    """The media type (``"image/jpeg"``, ...) of encoded image bytes, from their first bytes.

    ``data``: the file's bytes (the first :data:`SNIFF_BYTES` suffice). Raises
    :class:`UnknownImageFormat` naming ``name`` and the bytes seen when they start none of
    JPEG, PNG, GIF, TIFF, BMP or WebP. Checks only the signature: whether the rest decodes is
    :func:`open_image`'s business.
    """
    head = bytes(data[:SNIFF_BYTES])
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    raise UnknownImageFormat(
        f"{name} is not a JPEG, PNG, GIF, TIFF, BMP or WebP image (it starts with {head[:8]!r}); "
        f"convert it to one of those formats"
    )


def _pil_open(source: Any) -> Any:
    """``PIL.Image.open`` of a path, bytes or binary file (lazy: pixels not decoded yet)."""
    from PIL import Image

    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
    return Image.open(source)


def open_image(source: Any, *, draft: int | None = None) -> Any:
    """Open ``source`` (a path, bytes, a binary file or a PIL image) as an RGB PIL image.

    What every embedding backend, the pipeline and the rerankers' ``inquire`` decoding feed
    to a model, and what thumbnails are made of: EXIF orientation applied, 16-bit greyscale
    scaled to 8 bits (a plain ``convert("RGB")`` would clip it to white), palette/alpha
    images composited over white (transparent pixels would otherwise take whatever colour
    the file stores under them), CMYK and other modes converted to RGB.

    ``draft``: an edge length in pixels; a JPEG may then be decoded at 1/2, 1/4 or 1/8 scale
    as long as both sides stay at least ``draft`` (for thumbnails; orientation and colour
    handling are unchanged). Raises ``OSError``/``ValueError`` (from Pillow, e.g.
    ``PIL.UnidentifiedImageError``) for data that is not a decodable image.
    """
    from PIL import Image, ImageOps

    opened = None
    if isinstance(source, Image.Image):
        img = source
    else:
        img = opened = _pil_open(source)
        try:
            if draft is not None and img.format == "JPEG":
                img.draft(img.mode, (int(draft), int(draft)))
            img.load()  # decode now so truncated files fail here, not later in a worker
        except BaseException:
            img.close()  # the file handle too, not left to the garbage collector
            raise
    img = ImageOps.exif_transpose(img)
    if img.mode in _SIXTEEN_BIT:
        arr = np.asarray(img)
        shift = 8 if arr.max(initial=0) > 255 else 0
        img = Image.fromarray((arr.astype(np.int64) >> shift).clip(0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    if opened is not None and img is not opened:
        opened.close()  # multi-frame files (GIF, TIFF, MPO) keep their file open until closed
    return img


def open_as_stored(source: Any) -> Any:
    """A PIL image as ``PIL.Image.open`` gives it: no EXIF rotation, mode kept.

    INQUIRE's own reranking code hands such images to its VLMs (the ``pil`` decoding of a
    reranking protocol). A PIL image is returned unchanged. Raises ``OSError``/``ValueError``
    (from Pillow) for data that is not an image.
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        return source
    return _pil_open(source)
