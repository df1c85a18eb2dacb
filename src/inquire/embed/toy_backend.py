"""The ``toy`` backend: ``toy:colour``, a deterministic colour encoder that needs no weights.

``ColourEncoder`` maps an image to the share of its pixels nearest to each of eleven named
colours, and a text to the colour words it contains, so that "a red flower" retrieves red
photos. It makes collection search meaningful in tests and the offline demo, and runs the
whole pipeline (embedding, search, verification) without any model download.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from inquire.embed.base import l2_normalize
from inquire.errors import InputError, UnknownNameError

# Named colour -> RGB prototype. The embedding has one dimension per row, in this order.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 30, 30),
    "orange": (235, 130, 20),
    "yellow": (235, 220, 40),
    "green": (40, 160, 50),
    "blue": (30, 70, 210),
    "purple": (120, 40, 160),
    "pink": (240, 140, 190),
    "brown": (110, 65, 30),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "black": (15, 15, 15),
}
SYNONYMS: dict[str, str] = {
    "gray": "grey",
    "violet": "purple",
    "scarlet": "red",
    "crimson": "red",
    "golden": "yellow",
    "dark": "black",
    "snowy": "white",
}
_WORD = re.compile(r"[a-z]+")
PROTOTYPES = np.array(list(COLOURS.values()), dtype=np.float32)  # (C, 3)
THUMB = 32  # images are reduced to 32x32 before counting pixels


class ColourEncoder:
    """Colour-histogram image features and colour-word text features in one 11-d space.

    ``encode_images`` accepts PIL images, file paths or ``(H, W, 3) uint8`` arrays.
    Both methods return ``(n, 11) float32`` L2-normalised rows. ``n_image_calls`` and
    ``n_images_encoded`` count the work done (tests use them to prove nothing is re-embedded).
    """

    def __init__(
        self,
        name: str = "colour",
        device: str = "cpu",
        precision: str = "fp32",
        batch_size: int = 32,
    ) -> None:
        if name not in TOY_MODELS:
            raise UnknownNameError("toy model", name, TOY_MODELS)
        self.model_id = f"toy:{name}"
        self.revision = "1"
        self.dim = len(COLOURS)
        self.device, self.precision, self.batch_size = device, precision, batch_size
        self.n_image_calls = 0
        self.n_images_encoded = 0

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        names = list(COLOURS)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                colour = SYNONYMS.get(word, word)
                if colour in COLOURS:
                    out[i, names.index(colour)] += 1.0
            if not out[i].any():
                out[i] = 1.0  # no colour named: every colour alike
        return l2_normalize(out)

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        self.n_image_calls += 1
        self.n_images_encoded += len(images)
        out = np.zeros((len(images), self.dim), np.float32)
        for i, image in enumerate(images):
            rgb = pixels(image).reshape(-1, 3).astype(np.float32)
            dist = ((rgb[:, None, :] - PROTOTYPES[None, :, :]) ** 2).sum(-1)
            out[i] = np.bincount(dist.argmin(1), minlength=self.dim) / len(rgb)
        return l2_normalize(out)


TOY_MODELS = ("colour",)


def pixels(image: Any) -> np.ndarray:
    """``image`` (PIL image, file path or ``(H, W, 3) uint8`` array) as ``(THUMB, THUMB, 3)
    uint8`` RGB pixels."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    elif isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            image = im.convert("RGB")
    elif not isinstance(image, Image.Image):
        raise InputError(
            f"cannot encode an object of type {type(image).__name__}; pass PIL images, "
            "file paths or (H, W, 3) uint8 arrays"
        )
    return np.asarray(image.convert("RGB").resize((THUMB, THUMB)), dtype=np.uint8)


def load_toy(name: str, **kwargs: Any) -> ColourEncoder:
    """Loader of the ``toy:`` backend (``toy:colour``); ``kwargs`` as :class:`ColourEncoder`."""
    return ColourEncoder(name, **kwargs)
