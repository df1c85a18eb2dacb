"""Bring your own model: any object with ``encode_text`` and ``encode_image``
(:class:`TextImageModel`) seen as one of inquire's encoders (:class:`ModelEncoder`), so the
full-rank and rerank evaluations take it as they take a registry model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from inquire.errors import InputError

if TYPE_CHECKING:
    from PIL import Image


@runtime_checkable
class TextImageModel(Protocol):
    """What a bring-your-own model needs: two methods into one embedding space.

    - ``encode_text(texts: list[str]) -> (n, d)`` array-like of numbers
    - ``encode_image(images: list[PIL.Image.Image]) -> (n, d)`` array-like (RGB images,
      EXIF orientation applied; resize and normalise them as your model wants)

    Rows need not be normalised: scores are cosine similarities (rows are L2-normalised
    here, in float32). Optional attributes: ``model_id`` (names the run; default the class
    name), ``revision`` (a string that pins the weights: only then are scores and top-k lists
    cached, keyed by ``model_id`` + ``revision``), ``dim`` (else found by encoding one text).
    """

    def encode_text(self, texts: list[str]) -> Any: ...

    def encode_image(self, images: list[Image.Image]) -> Any: ...


class ModelEncoder:
    """A :class:`TextImageModel` seen as inquire's encoder (``embed.base.ImageEncoder``):
    rows checked (``(n, d)``, finite) and L2-normalised, float32.

    ``preprocess`` is ``None``: the embedding pipeline hands decoded RGB PIL images to
    ``encode_pixels``, which calls the model's ``encode_image``.
    """

    preprocess = None

    def __init__(self, model: Any) -> None:
        if isinstance(model, type):
            raise InputError(
                f"model is the class {model.__name__!r}, not an instance of it; pass "
                f"{model.__name__}() (an object whose encode_text / encode_image are called)"
            )
        missing = [
            m for m in ("encode_text", "encode_image") if not callable(getattr(model, m, None))
        ]
        if missing:
            raise InputError(
                f"model {type(model).__name__!r} lacks {' and '.join(missing)}: a model is a "
                f"registry id (a string, see `inquire models`) or an object with "
                f"encode_text(list[str]) -> (n, d) and encode_image(list[PIL.Image]) -> (n, d)"
            )
        self.model = model
        self.model_id = str(getattr(model, "model_id", None) or type(model).__qualname__)
        self.revision = str(getattr(model, "revision", None) or "")
        self.precision = str(getattr(model, "precision", None) or "fp32")
        self.device = str(getattr(model, "device", None) or "cpu")
        self.batch_size = int(getattr(model, "batch_size", None) or 32)
        self.preprocess_info = {"kind": f"{self.model_id}.encode_image (RGB PIL images)"}
        dim = getattr(model, "dim", None)
        if dim is not None and (
            isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1
        ):
            raise InputError(
                f"{self.model_id}.dim is {dim!r}; it must be the embedding size, a positive "
                f"integer (or leave it out: it is then found by encoding one text)"
            )
        self._dim: int | None = None if dim is None else int(dim)

    @property
    def dim(self) -> int:
        """The embedding size: the model's ``dim``, else that of one encoded text."""
        if self._dim is None:
            self._dim = int(self.encode_text(["a photo"]).shape[1])
        return int(self._dim)

    def _rows(self, out: Any, n: int, what: str) -> np.ndarray:
        kind = type(out).__name__
        if callable(getattr(out, "detach", None)) and callable(getattr(out, "cpu", None)):
            # A torch tensor (any device or dtype, with or without grad), read without
            # importing torch: bfloat16 and CUDA tensors have no direct numpy view.
            out = out.detach().cpu().float().numpy()
        try:
            x = np.asarray(out)
            if np.iscomplexobj(x):
                raise TypeError("complex values have no cosine similarity here")
            # float64 first: normalising before the cast keeps rows of large values finite.
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"{self.model_id}.{what} returned {kind}, not an (n, d) array of real "
                f"numbers: {exc}"
            ) from exc
        if x.ndim != 2 or x.shape[0] != n or x.shape[1] == 0:
            raise InputError(
                f"{self.model_id}.{what} returned {kind} of shape {x.shape} for {n} inputs; "
                f"expected ({n}, d): one row per input"
            )
        if self._dim is not None and x.shape[1] != self._dim:
            raise InputError(
                f"{self.model_id}.{what} returned {x.shape[1]} dimensions where {self._dim} "
                f"were expected (the model's dim, or its earlier outputs); text and image "
                f"embeddings must share one space"
            )
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise InputError(
                f"{self.model_id}.{what} returned NaN or infinite values (row "
                f"{int(np.flatnonzero(bad)[0])} of {n})"
            )
        # Scaled by the largest entry first, so that squaring cannot overflow (1e300) or
        # underflow (1e-300) on the way to the norm.
        peak = np.abs(x).max(axis=1, keepdims=True)
        zero = np.flatnonzero(peak[:, 0] == 0)
        if len(zero):
            raise InputError(
                f"{self.model_id}.{what} returned an all-zero row (row {int(zero[0])} of {n}): "
                f"a zero vector has no direction, so its cosine similarity is undefined"
            )
        x = x / peak
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, d) float32`` L2-normalised text embeddings."""
        texts = [str(t) for t in texts]
        return self._rows(self.model.encode_text(texts), len(texts), "encode_text")

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """``(n, d) float32`` L2-normalised image embeddings of RGB PIL images (paths and
        bytes are opened first, as every encoder of inquire opens them)."""
        from PIL import Image as PILImage

        from inquire.rerank.base import load_image

        pil = [im if isinstance(im, PILImage.Image) else load_image(im) for im in images]
        return self._rows(self.model.encode_image(pil), len(pil), "encode_image")

    def encode_pixels(self, pixels: Sequence[Any]) -> np.ndarray:
        """The pipeline's model step (``preprocess`` is None: decoded PIL images)."""
        return self.encode_images(pixels)


def as_encoder(model: Any) -> tuple[str, Any]:
    """``(model id, encoder or None)`` of a registry id or a model object."""
    if isinstance(model, str):
        return model, None
    if (
        not callable(getattr(model, "encode_image", None))
        and callable(getattr(model, "encode_images", None))
        and callable(getattr(model, "encode_pixels", None))
        and getattr(model, "model_id", None)
    ):
        return str(model.model_id), model  # already an inquire encoder (embed.base)
    enc = ModelEncoder(model)
    return enc.model_id, enc


__all__ = ["ModelEncoder", "TextImageModel", "as_encoder"]
