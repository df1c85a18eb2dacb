"""inquire.embed.images: one suffix list, one media-type sniffer, one decoder for models and
thumbnails."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from inquire.embed.images import (
    IMAGE_SUFFIXES,
    UnknownImageFormat,
    is_image_name,
    open_as_stored,
    open_image,
    sniff_mime,
)
from inquire.testing.embed_images import ZOO_OK, make_image_zoo, random_rgb

# Pillow's writer for each suffix.
FORMAT_OF = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jfif": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
MIME_OF = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}


def _encoded(fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(random_rgb(3, (24, 16))).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_every_suffix_has_a_writer() -> None:
    assert set(FORMAT_OF) == set(IMAGE_SUFFIXES)
    assert is_image_name("a/B.JPG") and is_image_name("x.Tiff") and is_image_name("y.jfif")
    assert not is_image_name("notes.txt") and not is_image_name("jpg") and not is_image_name("a.")


@pytest.mark.parametrize("fmt", sorted(MIME_OF))
def test_sniff_mime_on_each_format(fmt: str) -> None:
    data = _encoded(fmt)
    assert sniff_mime(data) == MIME_OF[fmt]
    assert sniff_mime(data[:12]) == MIME_OF[fmt]  # the leading bytes are enough


def test_sniff_mime_big_endian_tiff_gif87_and_phone_mpo() -> None:
    assert sniff_mime(b"MM\x00*" + b"\x00" * 8) == "image/tiff"
    assert sniff_mime(b"GIF87a" + b"\x00" * 6) == "image/gif"
    rgb = Image.fromarray(random_rgb(4))
    buf = io.BytesIO()
    rgb.save(buf, format="MPO", save_all=True, append_images=[rgb])
    assert sniff_mime(buf.getvalue()) == "image/jpeg"


SIGNATURES = {
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"II*\x00": "image/tiff",
    b"MM\x00*": "image/tiff",
    b"BM": "image/bmp",
}


@given(st.sampled_from(sorted(SIGNATURES)), st.binary(max_size=40))
def test_sniff_mime_reads_only_the_signature(magic: bytes, tail: bytes) -> None:
    assert sniff_mime(magic + tail) == SIGNATURES[magic]
    assert sniff_mime(b"RIFF" + tail[:4].ljust(4, b"\x00") + b"WEBP" + tail) == "image/webp"


@given(st.binary(max_size=40))
def test_sniff_mime_names_a_type_only_for_a_known_signature(data: bytes) -> None:
    known = any(data.startswith(m) for m in SIGNATURES) or (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    )
    if known:
        assert sniff_mime(data) in set(SIGNATURES.values()) | {"image/webp"}
    else:
        with pytest.raises(UnknownImageFormat):
            sniff_mime(data)


@pytest.mark.parametrize(
    "data", [b"", b"this is text", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x00\x00\x01\x00ico"]
)
def test_sniff_mime_refuses_other_bytes_naming_them(data: bytes) -> None:
    with pytest.raises(UnknownImageFormat, match=r"pic\.bin") as err:
        sniff_mime(data, "pic.bin")
    assert repr(data[:8]) in str(err.value)


def test_open_as_stored_keeps_mode_and_orientation(tmp_path: Path) -> None:
    zoo = make_image_zoo(tmp_path)
    with open_as_stored(zoo / "exif_rotated.jpg") as im:
        assert im.size == (40, 48)  # as stored: sideways
    with open_as_stored((zoo / "cmyk.jpg").read_bytes()) as im:
        assert im.mode == "CMYK"
    assert open_image(zoo / "exif_rotated.jpg").size == (48, 40)


@pytest.mark.parametrize("name", ZOO_OK)
def test_thumbnails_show_exactly_what_the_model_sees(tmp_path: Path, name: str) -> None:
    """A thumbnail no smaller than the image is the model's input, encoded as the thumbnail
    JPEG: same size, same pixels (CMYK, 16-bit, alpha, palette and EXIF-rotated files)."""
    from inquire.web.images import ThumbnailCache

    zoo = make_image_zoo(tmp_path / "zoo", n_good=0)
    model_input = open_image(zoo / name)
    assert model_input.mode == "RGB"
    buf = io.BytesIO()
    model_input.save(buf, format="JPEG", quality=85)
    expected = np.asarray(Image.open(buf))
    thumb = ThumbnailCache(tmp_path / "thumbs").get(zoo / name, 64)
    with Image.open(thumb) as im:
        assert im.size == model_input.size
        got = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(got, expected)
    # the same from encoded bytes (rerank parquet cells take this path)
    thumb2 = ThumbnailCache(tmp_path / "thumbs2").get_bytes(
        "k", lambda: (zoo / name).read_bytes(), name, 64
    )
    with Image.open(thumb2) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), expected)


def test_drafted_thumbnail_of_a_large_rotated_jpeg_matches_the_model_view(tmp_path: Path) -> None:
    """Large JPEGs are decoded at reduced scale for thumbnails: the result is upright and the
    model's picture, shrunk (no more than JPEG-level differences)."""
    from inquire.web.images import ThumbnailCache

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), np.ones((80, 80, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "big.jpg"
    Image.fromarray(smooth.astype(np.uint8)).save(src, quality=95, exif=exif.tobytes())
    thumb = ThumbnailCache(tmp_path / "thumbs").get(src, 64)
    reference = open_image(src)
    assert reference.size == (480, 640)  # upright: stored 640x480 sideways
    reference.thumbnail((64, 64), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    reference.save(buf, format="JPEG", quality=85)
    with Image.open(thumb) as im, Image.open(buf) as ref:
        assert im.size == ref.size == (48, 64)
        diff = np.abs(np.asarray(im, np.int16) - np.asarray(ref, np.int16))
    assert diff.mean() < 3
    # a thumbnail of the sideways-stored pixels would be far off
    sideways = np.asarray(open_as_stored(src).convert("RGB").resize((48, 64)), np.int16)
    assert np.abs(np.asarray(Image.open(thumb), np.int16) - sideways).mean() > 20


def test_every_suffix_is_ingested_and_served(tmp_path: Path) -> None:
    """One file per suffix (and an upper-case one): the embedding pipeline's folder source,
    collection ingest and the web image server all take every one of them."""
    from inquire.collection.store import scan_images
    from inquire.embed.sources import open_source
    from inquire.web.images import ImageRoots, image_format

    root = tmp_path / "photos"
    root.mkdir()
    names = []
    for i, suffix in enumerate(sorted(IMAGE_SUFFIXES)):
        name = f"img{i}{suffix.upper() if i == 0 else suffix}"
        (root / name).write_bytes(_encoded(FORMAT_OF[suffix.lower()]))
        names.append(name)
    (root / "notes.txt").write_text("not an image")
    assert open_source(root).paths == sorted(names)
    assert sorted(scan_images(root)) == sorted(names)
    roots = ImageRoots([root])
    for name in names:
        real = roots.resolve(name)
        data = real.read_bytes()
        assert image_format(real) == image_format(data) == sniff_mime(data)
        assert open_image(real).mode == "RGB"


def test_api_payloads_pass_web_formats_through_and_re_encode_others(tmp_path: Path) -> None:
    from inquire.errors import InputError
    from inquire.rerank.base import image_bytes

    png = _encoded("PNG")
    assert image_bytes(png) == (png, "image/png")
    tiff = tmp_path / "a.tif"
    tiff.write_bytes(_encoded("TIFF"))
    data, mime = image_bytes(tiff)
    assert mime == "image/jpeg" and sniff_mime(data) == "image/jpeg"
    with pytest.raises(InputError, match="cannot read image"):
        image_bytes(b"not an image at all")
