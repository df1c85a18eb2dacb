"""The Ray Data engine: the pipeline's reader -> encoder -> writer stages on a Ray cluster.

Reader tasks (``map_batches`` over item indices) read and preprocess images where they run;
encoder actors (one model each, a GPU each when the encoder runs on CUDA) embed them; the
driver receives the embeddings and hands them to the caller's ``add`` (in ``inquire embed``,
the same :class:`~inquire.embed.pipeline.ShardWriter` as the local engine), so the output
layout, manifest and resume behaviour are identical. The reader stage is
:func:`inquire.embed.reader.decode_item`, as in the local engine. Ray is an optional extra
(``inquire[ray]``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inquire.embed.base import ImageEncoder
from inquire.embed.reader import decode_item
from inquire.embed.sources import ImageSource
from inquire.errors import InputError

log = logging.getLogger(__name__)

# Environment the workers need to find the same model files as the driver.
_FORWARDED_ENV = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "INQUIRE_HOME",
)


def _decode_batch(
    batch: dict[str, np.ndarray], source: ImageSource, preprocess: Any, shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Reader stage: item indices -> pixels (zeros where decoding failed), ok flags, reasons."""
    items = batch["item"].astype(np.int64)
    pixels = np.zeros((len(items), *shape), np.float32)
    ok = np.zeros(len(items), bool)
    reasons = np.empty(len(items), dtype=object)
    for j, i in enumerate(items):
        px, reason = decode_item(source, preprocess, int(i))
        if px is not None:
            pixels[j], ok[j] = px.numpy(), True
        reasons[j] = reason
    return {"item": items, "pixels": pixels, "ok": ok, "reason": reasons}


class _EncodeActor:
    """Encoder stage: one model per actor, loaded once."""

    def __init__(self, model_id: str, device: str, precision: str, batch_size: int) -> None:
        from inquire.embed.models import load_encoder

        self.encoder = load_encoder(model_id, device, precision, batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["ok"].astype(bool)
        emb = np.zeros((len(ok), self.encoder.dim), np.float32)
        if ok.any():
            emb[ok] = self.encoder.encode_pixels(batch["pixels"][ok])  # type: ignore[attr-defined]
        return {"item": batch["item"], "emb": emb, "ok": ok, "reason": batch["reason"]}


def run_ray(
    encoder: ImageEncoder,
    source: ImageSource,
    items: Sequence[int],
    add: Callable[[np.ndarray, np.ndarray, list[tuple[int, str]]], None],
    batch_size: int,
    workers: int,
    address: str | None,
    advance: Callable[[int], None],
) -> None:
    """Embed the ``items`` of ``source`` on Ray (started locally, or joined at ``address``).

    ``add(items (b,) int64, emb (b, d) float32, errors [(item, reason), ...])`` receives each
    batch in the order of ``items`` (``emb`` holds the rows of the items that decoded);
    ``advance(n)`` the number of items it covered.
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise InputError(
            "--engine ray needs Ray Data: pip install 'inquire[ray]' (ray[data])"
        ) from exc
    from PIL import Image

    started = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        started = True
    elif address is not None:
        log.warning("Ray is already initialised in this process; ignoring --address %s", address)
    try:
        shape = tuple(encoder.preprocess(Image.new("RGB", (8, 8))).shape)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # shards then complete one after another
        gpu = encoder.device.startswith("cuda")
        ds = (
            ray.data.from_items([{"item": i} for i in items])
            .map_batches(
                _decode_batch,  # type: ignore[arg-type]
                fn_kwargs={"source": source, "preprocess": encoder.preprocess, "shape": shape},
                batch_size=batch_size,
                batch_format="numpy",
            )
            .map_batches(
                _EncodeActor,
                fn_constructor_kwargs={
                    "model_id": encoder.model_id,
                    "device": "cuda" if gpu else encoder.device,
                    "precision": encoder.precision,
                    "batch_size": encoder.batch_size,
                },
                batch_size=batch_size,
                batch_format="numpy",
                concurrency=max(1, workers),
                num_gpus=1 if gpu else 0,
            )
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            ok = np.asarray(batch["ok"], bool)
            errors = [
                (int(i), str(r))
                for i, r in zip(batch["item"][~ok], batch["reason"][~ok], strict=True)
            ]
            got, emb = np.asarray(batch["item"], np.int64), np.asarray(batch["emb"], np.float32)
            add(got[ok], emb[ok], errors)
            advance(len(ok))
    finally:
        if started:
            ray.shutdown()
