"""The ``wildclip`` backend: WildCLIP checkpoints loaded the way INQUIRE loaded them.

WildCLIP (Gabeff et al., 2024) fine-tunes OpenAI's CLIP ViT-B/16 on camera-trap images and
publishes PyTorch Lightning checkpoints (https://zenodo.org/records/10479317): a ``.pth``
file whose ``state_dict`` holds the CLIP weights under the prefix ``model.clip_model.`` (and
training-only entries such as ``model.adapter.*``). INQUIRE builds OpenAI's ViT-B/16 with its
pretrained weights, strips that prefix and loads the result non-strictly, so:

- every entry named ``...model.clip_model.<key>`` replaces ``<key>`` of the base model;
- entries without the prefix (the adapter, optimiser state) are not used;
- base weights the checkpoint does not hold keep their OpenAI values.

This backend does the same on open_clip's build of the base model (``ViT-B-16-quickgelu/
openai``: the same architecture and weights as ``clip.load("ViT-B/16")``, same preprocessing);
it refuses a checkpoint from which no weight would load, or whose weights do not fit.

Forms of the part after ``wildclip:`` (one row each in ``ID_FORMS``):

- ``NAME``: ``NAME.pth`` in the WildCLIP folder (``$INQUIRE_WILDCLIP_DIR``, default
  ``$INQUIRE_HOME/models/wildclip``), the names INQUIRE uses: ``wildclip_vitb16_t1``,
  ``wildclip_vitb16_t1t7_lwf``;
- ``/PATH/checkpoint.pth`` (or ``./``, ``~/``): a checkpoint file;
- ``BASE@/PATH/checkpoint.pth``: another base model, any ``open_clip:`` id (e.g. a local
  folder ``local-dir:/DIR``), for other CLIP fine-tunes stored the same way.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inquire import config
from inquire.embed._torch import revision_of
from inquire.embed.open_clip_backend import OpenClipEncoder
from inquire.errors import InputError

log = logging.getLogger(__name__)

ENV_DIR = "INQUIRE_WILDCLIP_DIR"
BASE_MODEL = "ViT-B-16-quickgelu/openai"
KEY_PREFIX = "model.clip_model."
SOURCE_URL = "https://zenodo.org/records/10479317"


def wildclip_dir() -> Path:
    """The folder named checkpoints are looked up in (``$INQUIRE_WILDCLIP_DIR`` or
    ``$INQUIRE_HOME/models/wildclip``)."""
    env = os.environ.get(ENV_DIR, "").strip()
    return Path(env).expanduser() if env else config.cache_dir("models", "wildclip")


def _named(m: re.Match[str]) -> tuple[str, Path]:
    folder = wildclip_dir()
    path = folder / f"{m.group('name')}.pth"
    if not path.is_file():
        raise InputError(
            f"WildCLIP checkpoint {path.name!r} is not in {str(folder)!r}. Download WildCLIP's "
            f"checkpoints ({SOURCE_URL}) and save this one as {str(path)!r} (or set "
            f"{ENV_DIR} to the folder holding it, or pass wildclip:/path/to/checkpoint.pth)"
        )
    return BASE_MODEL, path


def _file(m: re.Match[str]) -> tuple[str, Path]:
    return BASE_MODEL, Path(m.group("path")).expanduser()


def _with_base(m: re.Match[str]) -> tuple[str, Path]:
    return m.group("base"), Path(m.group("path")).expanduser()


# (form, pattern of the id after "wildclip:", resolver -> (base open_clip id, checkpoint)).
ID_FORMS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], tuple[str, Path]]]] = [
    ("/PATH/CHECKPOINT.pth", re.compile(r"^(?P<path>[/.~].*)$"), _file),
    ("BASE@/PATH/CHECKPOINT.pth", re.compile(r"^(?P<base>[^@]+)@(?P<path>[/.~].*)$"), _with_base),
    ("NAME", re.compile(r"^(?P<name>[A-Za-z0-9][\w.-]*)$"), _named),
]


def clip_state_dict(checkpoint: Any, path: Path) -> dict[str, Any]:
    """The CLIP weights of a WildCLIP checkpoint, keys with ``model.clip_model.`` removed.

    As INQUIRE does, each key is cut after the last occurrence of the prefix; keys without it
    are left out (INQUIRE passes them on, and the non-strict load ignores them).
    """
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint)
        raise InputError(
            f"{str(path)!r} is not a WildCLIP checkpoint: expected a dict with a 'state_dict' "
            f"entry (a PyTorch Lightning checkpoint), found {keys}"
        )
    state = checkpoint["state_dict"]
    unused = [k for k in state if KEY_PREFIX not in k]
    if unused:
        log.info(
            "%s: %d state_dict entries are not CLIP weights (no %r prefix) and are not used, "
            "as in INQUIRE, e.g. %s",
            path,
            len(unused),
            KEY_PREFIX,
            unused[:3],
        )
    return {k.split(KEY_PREFIX)[-1]: v for k, v in state.items() if KEY_PREFIX in k}


class WildClipEncoder(OpenClipEncoder):
    """A CLIP base model with WildCLIP weights loaded over it (see the module docstring)."""

    def __init__(
        self, rest: str, device: str = "cpu", precision: str = "fp32", batch_size: int = 32
    ) -> None:
        import torch

        for _, pattern, fn in ID_FORMS:
            if m := pattern.match(rest):
                base, path = fn(m)
                break
        else:
            forms = ", ".join(f"wildclip:{f}" for f, _, _ in ID_FORMS)
            raise InputError(f"wildclip model id {rest!r} matches none of the forms {forms}")
        if not path.is_file():
            raise InputError(f"WildCLIP checkpoint {str(path)!r} does not exist")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(
                f"{str(path)!r} could not be read as a checkpoint of tensors ({exc}). If it "
                f"holds other pickled objects and you trust it, keep only its weights: "
                f"torch.save({{'state_dict': torch.load(p, weights_only=False)['state_dict']}}, "
                f"out)"
            ) from exc
        weights = clip_state_dict(checkpoint, path)
        super().__init__(base, device=device, precision=precision, batch_size=batch_size)
        own = self._model.state_dict()
        used = [k for k in weights if k in own]
        if not used:
            raise InputError(
                f"no weight of {str(path)!r} fits the base model open_clip:{base}: its "
                f"state_dict has {len(weights)} entries under the prefix {KEY_PREFIX!r} and "
                f"none is a weight of the base model; is it a WildCLIP (ViT-B/16) checkpoint?"
            )
        try:
            result = self._model.load_state_dict(weights, strict=False)
        except RuntimeError as exc:
            raise InputError(
                f"the weights of {str(path)!r} do not fit the base model open_clip:{base}: {exc}"
            ) from exc
        if result.missing_keys:
            log.warning(
                "%s: %d weight(s) of the base model are not in the checkpoint and keep their "
                "base values, e.g. %s",
                path,
                len(result.missing_keys),
                result.missing_keys[:3],
            )
        if result.unexpected_keys:
            log.warning(
                "%s: %d checkpoint entries match no weight of the base model and are ignored, "
                "e.g. %s",
                path,
                len(result.unexpected_keys),
                result.unexpected_keys[:3],
            )
        self._model.eval()
        self.model_id = f"wildclip:{rest}"
        self.revision = f"{revision_of(path)}+{self.revision}"
        self.preprocess_info = {**self.preprocess_info, "base_model": f"open_clip:{base}"}
