"""Images decoded alike for encoders and rerankers (inquire.embed.base, inquire.rerank.base)."""

from __future__ import annotations

from pathlib import Path


def test_rerankers_see_images_decoded_like_the_embedding_models(tmp_path: Path) -> None:
    """EXIF orientation and transparency: the reranker's picture equals the encoder's."""
    from PIL import Image

    from inquire.embed.images import open_image
    from inquire.rerank.base import load_image

    img = Image.new("RGB", (40, 20), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90 degrees
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    for source in (path, str(path), path.read_bytes()):
        assert load_image(source).size == open_image(path).size == (20, 40)
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(clear).getpixel((0, 0)) == (255, 255, 255)
