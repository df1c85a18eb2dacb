"""The encoder interface every embedding backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """A CLIP-style model that maps texts and images into one space.

    Both methods return ``(n, d) float32`` arrays with L2-normalised rows.
    """

    model_id: str
    revision: str
    dim: int

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Any]) -> np.ndarray: ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


@runtime_checkable
class ImageEncoder(Encoder, Protocol):
    """An :class:`Encoder` whose image preprocessing can run apart from the model.

    The embedding pipeline decodes and preprocesses images in worker processes with
    ``preprocess`` and runs only ``encode_pixels`` on the model.

    - ``preprocess(image: PIL.Image.Image (RGB)) -> torch.Tensor (3, H, W) float32``
    - ``encode_pixels(pixels: torch.Tensor (n, 3, H, W)) -> (n, d) float32``, L2-normalised
    - ``preprocess_info``: a JSON-able description of the preprocessing (for manifests)
    """

    device: str
    precision: str
    batch_size: int
    preprocess: Any
    preprocess_info: dict[str, Any]

    def encode_pixels(self, pixels: Any) -> np.ndarray: ...


def open_image(source: Any) -> Any:
    """Open ``source`` (a path, bytes, a binary file or a PIL image) as an RGB PIL image.

    What every backend and the pipeline feed to ``preprocess``: EXIF orientation applied,
    16-bit greyscale scaled to 8 bits (a plain ``convert("RGB")`` would clip it to white),
    palette/alpha images composited over white (transparent pixels would otherwise take
    whatever colour the file stores under them), CMYK and other modes converted to RGB.
    Raises ``OSError``/``ValueError`` (from Pillow) for data that is not a decodable image.
    """
    import io
    import os

    from PIL import Image, ImageOps

    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            source = os.fspath(source)
        img = Image.open(source)
        img.load()  # decode now so truncated files fail here, not later in a worker
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
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
    return img
