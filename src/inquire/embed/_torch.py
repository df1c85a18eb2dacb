"""What the torch-based backends share: device/precision checks, batching, revisions."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inquire._io import file_sha256
from inquire.embed.images import open_image
from inquire.errors import InputError, UnknownNameError

log = logging.getLogger(__name__)

# precision name -> torch dtype name. One row per supported precision.
PRECISIONS: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_dtype(precision: str) -> Any:
    """The torch dtype of ``precision`` (fp32, fp16 or bf16); unknown names fail."""
    import torch

    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, PRECISIONS)
    return getattr(torch, PRECISIONS[precision])


def check_device(device: str) -> Any:
    """``torch.device(device)``, failing clearly when it does not exist on this machine."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            f"device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but torch sees no CUDA GPU; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} asked for, but MPS is not available; use cpu")
    return dev


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def revision_of(weights: str | os.PathLike[str]) -> str:
    """A revision string for a weights file.

    Files in a Hugging Face cache snapshot (``.../snapshots/<commit>/file``) get the commit
    hash; any other file gets ``local:<first 16 hex digits of its SHA-256>``.
    """
    p = Path(weights)
    if p.parent.parent.name == "snapshots":
        return p.parent.name
    return f"local:{file_sha256(p)[:16]}"


class TorchEncoder:
    """Batching and normalisation around a torch model.

    Subclasses set ``model_id``, ``revision``, ``dim``, ``preprocess`` and
    ``preprocess_info`` and implement ``_text_batch`` / ``_pixel_batch`` (raw features).
    """

    model_id: str
    revision: str
    dim: int
    preprocess: Any
    preprocess_info: dict[str, Any]

    def __init__(self, device: str, precision: str, batch_size: int) -> None:
        self._dtype = torch_dtype(precision)
        self._device = check_device(device)
        self.device = str(self._device)
        self.precision = precision
        self.batch_size = check_batch_size(batch_size)

    # Implemented by each backend: raw (unnormalised) features of one batch.
    def _text_batch(self, texts: list[str]) -> Any:
        raise NotImplementedError

    def _pixel_batch(self, pixels: Any) -> Any:
        raise NotImplementedError

    def _normalised(self, feats: Any) -> np.ndarray:
        feats = feats.float()
        feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        out: np.ndarray = feats.cpu().numpy().astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            raise InputError(
                f"{self.model_id} produced non-finite embeddings at precision "
                f"{self.precision!r}; try --precision fp32"
            )
        return out

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, d) float32`` L2-normalised text embeddings, ``batch_size`` texts at a time."""
        import torch

        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise InputError("encode_text takes a list of strings")
        out = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for lo in range(0, len(texts), self.batch_size):
                out.append(self._normalised(self._text_batch(texts[lo : lo + self.batch_size])))
        return np.concatenate(out)

    def encode_pixels(self, pixels: Any) -> np.ndarray:
        """``(n, d) float32`` L2-normalised embeddings of preprocessed ``(n, 3, H, W)`` pixels."""
        import torch

        pixels = torch.as_tensor(pixels)
        out = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for lo in range(0, len(pixels), self.batch_size):
                batch = pixels[lo : lo + self.batch_size].to(self._device, self._dtype)
                out.append(self._normalised(self._pixel_batch(batch)))
        return np.concatenate(out)

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """``(n, d) float32`` L2-normalised embeddings of PIL images or image file paths."""
        import torch

        out = [np.zeros((0, self.dim), np.float32)]
        for lo in range(0, len(images), self.batch_size):
            chunk = images[lo : lo + self.batch_size]
            pixels = torch.stack([self.preprocess(open_image(im)) for im in chunk])
            out.append(self.encode_pixels(pixels))
        return np.concatenate(out)
