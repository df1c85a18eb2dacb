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
