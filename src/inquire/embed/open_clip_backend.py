"""The ``open_clip`` backend: every model open_clip can build, however its weights are stored.

Forms of the part after ``open_clip:`` (one row each in ``ID_FORMS``):

- ``ARCH/TAG``: an open_clip architecture and pretrained tag, e.g. ``ViT-B-16/dfn2b``
  (weights fetched by open_clip into the Hugging Face cache). ``ARCH/random`` builds the
  architecture with random weights (seed 0) for benchmarks and tests.
- ``hf-hub:ORG/NAME``: a Hugging Face repository holding ``open_clip_config.json`` and
  open_clip weights, e.g. ``hf-hub:imageomics/bioclip``.
- ``local-dir:/path``: a folder with ``open_clip_config.json`` and a weights file
  (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``), the layout open_clip
  writes and publishes to the hub.
- ``ARCH@/path/to/checkpoint.pt``: a built-in architecture with weights from a local file (a
  fine-tuned checkpoint, ``.pt``/``.bin``/``.safetensors``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inquire.embed._torch import TorchEncoder, revision_of
from inquire.errors import DownloadError, InputError, UnknownNameError

log = logging.getLogger(__name__)

RANDOM_TAG = "random"


@dataclass(frozen=True)
class _Resolved:
    """What open_clip's factory needs, and the revision we record."""

    model_name: str  # passed to open_clip.create_model_and_transforms
    pretrained: str | None
    revision: str


def _offline_hint() -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (
        f" (Hugging Face cache: {cache}; downloads are "
        f"{'off: HF_HUB_OFFLINE is set' if offline else 'on'})"
    )


def _from_tag(m: re.Match[str]) -> _Resolved:
    import open_clip

    arch, tag = m.group("arch"), m.group("tag")
    if arch not in open_clip.list_models():
        raise UnknownNameError("open_clip architecture", arch, open_clip.list_models())
    if tag == RANDOM_TAG:
        return _Resolved(arch, None, "random-init:seed0")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = [*open_clip.list_pretrained_tags_by_model(arch), RANDOM_TAG]
        raise UnknownNameError(f"open_clip pretrained tag for {arch}", tag, tags)
    try:
        weights = open_clip.download_pretrained(cfg)
    except Exception as exc:
        raise DownloadError(
            f"could not get the weights of open_clip:{arch}/{tag}: {exc}{_offline_hint()}"
        ) from exc
    return _Resolved(arch, tag, revision_of(weights))


def _from_hf_hub(m: re.Match[str]) -> _Resolved:
    from huggingface_hub import hf_hub_download
    from open_clip.pretrained import download_pretrained_from_hf

    repo = m.group("repo")
    try:
        config = hf_hub_download(repo, "open_clip_config.json")
        weights = download_pretrained_from_hf(repo)
    except Exception as exc:
        raise DownloadError(
            f"could not get open_clip_config.json and weights of hf-hub:{repo}: {exc}"
            f"{_offline_hint()}"
        ) from exc
    if Path(config).parent != Path(weights).parent:
        raise DownloadError(f"hf-hub:{repo}: config and weights come from different revisions")
    # Load through open_clip's local-dir form on the cached snapshot: the same files, and no
    # second round of hub requests.
    return _Resolved(f"local-dir:{Path(weights).parent}", None, revision_of(weights))


def _from_local_dir(m: re.Match[str]) -> _Resolved:
    from open_clip.factory import _find_checkpoint_in_dir

    folder = Path(m.group("dir")).expanduser()
    if not (folder / "open_clip_config.json").is_file():
        raise InputError(
            f"{str(folder)!r} is not an open_clip model folder: it has no open_clip_config.json"
        )
    weights = _find_checkpoint_in_dir(folder)
    if weights is None:
        raise InputError(
            f"{str(folder)!r} has no weights file (open_clip_model.safetensors, "
            f"open_clip_pytorch_model.bin, *.pth)"
        )
    return _Resolved(f"local-dir:{folder}", None, revision_of(weights))


def _from_checkpoint(m: re.Match[str]) -> _Resolved:
    import open_clip

    arch, path = m.group("arch"), Path(m.group("path")).expanduser()
    if arch not in open_clip.list_models():
        raise UnknownNameError("open_clip architecture", arch, open_clip.list_models())
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} for open_clip:{arch}@... does not exist")
    return _Resolved(arch, str(path), revision_of(path))


# (form, pattern of the id after "open_clip:", resolver). First match wins.
ID_FORMS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], _Resolved]]] = [
    ("hf-hub:ORG/NAME", re.compile(r"^hf-hub:(?P<repo>[^/\s]+/[^/\s]+)$"), _from_hf_hub),
    ("local-dir:/PATH", re.compile(r"^local-dir:(?P<dir>.+)$"), _from_local_dir),
    ("ARCH@/PATH/CHECKPOINT", re.compile(r"^(?P<arch>[^@/\s]+)@(?P<path>.+)$"), _from_checkpoint),
    ("ARCH/TAG", re.compile(r"^(?P<arch>[^@/\s]+)/(?P<tag>[^/\s]+)$"), _from_tag),
]


def _resolve(rest: str) -> _Resolved:
    for _, pattern, fn in ID_FORMS:
        if m := pattern.match(rest):
            return fn(m)
    forms = ", ".join(f"open_clip:{f}" for f, _, _ in ID_FORMS)
    raise InputError(f"open_clip model id {rest!r} matches none of the forms {forms}")


class OpenClipEncoder(TorchEncoder):
    """An open_clip model behind the :class:`~inquire.embed.base.ImageEncoder` interface."""

    def __init__(
        self, rest: str, device: str = "cpu", precision: str = "fp32", batch_size: int = 32
    ) -> None:
        super().__init__(device, precision, batch_size)
        import open_clip
        import torch

        resolved = _resolve(rest)
        log.info("loading open_clip model %s (%s)", rest, resolved.revision)
        # Random weights are seeded without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(
                resolved.model_name,
                pretrained=resolved.pretrained,
                precision=precision,
                device=self._device,
            )
        model.eval()
        self._model = model
        self._tokenizer = open_clip.get_tokenizer(resolved.model_name)
        self.model_id = f"open_clip:{rest}"
        self.revision = resolved.revision
        self.preprocess = preprocess
        cfg = getattr(model.visual, "preprocess_cfg", None) or {}
        self.preprocess_info = {
            "library": "open_clip",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "transform": repr(preprocess),
        }
        with torch.inference_mode():
            self.dim = int(self._text_batch([""]).shape[-1])

    def _text_batch(self, texts: list[str]) -> Any:
        tokens = self._tokenizer(texts).to(self._device)
        return self._model.encode_text(tokens)

    def _pixel_batch(self, pixels: Any) -> Any:
        return self._model.encode_image(pixels)
