"""Tiny random-weight CLIP models saved in the real checkpoint formats, for tests and demos.

Each builder writes a model the way a user's download lies on disk and returns the model id
that loads it through the ordinary registry path (:func:`inquire.embed.load_encoder`):

- :func:`make_tiny_open_clip` -> ``open_clip:local-dir:DIR`` (``open_clip_config.json`` +
  ``open_clip_model.safetensors``, the layout open_clip publishes);
- :func:`make_tiny_open_clip_hub` -> ``open_clip:hf-hub:ORG/NAME`` from a Hugging Face cache
  (``HF_HOME/hub/models--ORG--NAME/snapshots/<rev>/...`` + ``refs/main``);
- :func:`make_tiny_hf_clip` -> ``hf_clip:ORG/NAME``: a ``transformers`` ``CLIPModel`` written
  with ``save_pretrained`` into a Hugging Face cache, with a ``CLIPTokenizer`` built from
  open_clip's shipped BPE vocabulary and a ``CLIPImageProcessor``;
- :func:`make_tiny_wildclip_checkpoint` -> a ``.pth`` file in WildCLIP's format (a PyTorch
  Lightning checkpoint: CLIP weights under ``state_dict`` with keys prefixed
  ``model.clip_model.``, plus adapter entries), loaded with ``wildclip:BASE@PATH`` over a
  tiny open_clip base model.

Hub-cache models load offline only while ``HF_HOME`` points at the folder: set it before
``huggingface_hub`` is imported (a subprocess's environment), or wrap the loading in
:func:`use_hf_home`. Set ``HF_HUB_OFFLINE=1`` too, or each hub lookup retries the network.

All weights are random (seed 0): embeddings from these models mean nothing. Each builder
takes well under a second.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Image size, embedding dimension and widths of the tiny models. The text towers keep the
# real CLIP vocabulary (49408 tokens) and context (77) so that the real tokenizers work.
TINY_IMAGE_SIZE = 32
TINY_EMBED_DIM = 32
_CLIP_VOCAB = 49408
_CLIP_CONTEXT = 77

TINY_OPEN_CLIP_CFG: dict[str, Any] = {
    "embed_dim": TINY_EMBED_DIM,
    "vision_cfg": {
        "image_size": TINY_IMAGE_SIZE,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 8,
    },
    "text_cfg": {
        "context_length": _CLIP_CONTEXT,
        "vocab_size": _CLIP_VOCAB,
        "width": 64,
        "heads": 2,
        "layers": 2,
    },
}
_PREPROCESS_CFG = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def _write_open_clip_folder(folder: Path, seed: int) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)
    config = {"model_cfg": TINY_OPEN_CLIP_CFG, "preprocess_cfg": _PREPROCESS_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))


def make_tiny_open_clip(folder: str | os.PathLike[str], seed: int = 0) -> str:
    """Write a tiny random open_clip model (ViT 32 px, 2+2 layers, dim 32) to ``folder``.

    Returns its model id ``open_clip:local-dir:<folder>`` (load it with ``load_encoder``).
    """
    folder = Path(folder).resolve()
    _write_open_clip_folder(folder, seed)
    return f"open_clip:local-dir:{folder}"


def make_tiny_wildclip_checkpoint(
    path: str | os.PathLike[str], seed: int = 1, towers: tuple[str, ...] = ("visual", "text")
) -> Path:
    """Write a WildCLIP-format checkpoint of a tiny CLIP (the architecture of
    :func:`make_tiny_open_clip`) with random weights from ``seed``.

    ``towers`` chooses which weights it holds: ``"visual"`` (keys ``visual.*``) and/or
    ``"text"`` (every other CLIP weight). Keys are prefixed ``model.clip_model.`` inside
    ``state_dict``, next to an MLP adapter's ``model.adapter.*`` entries and Lightning's
    bookkeeping, as WildCLIP's training writes them. Returns ``path``.
    """
    import open_clip
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)
        adapter = torch.nn.Linear(TINY_EMBED_DIM, TINY_EMBED_DIM)
    state: dict[str, Any] = {}
    for k, v in model.state_dict().items():
        if ("visual" if k.startswith("visual.") else "text") in towers:
            state[f"model.clip_model.{k}"] = v.clone()
    state["model.adapter.alpha"] = torch.tensor([0.7])
    state["model.adapter.adapter.0.weight"] = adapter.weight.detach().clone()
    checkpoint = {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": state,
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    torch.save(checkpoint, path)
    return path


def _snapshot(hf_home: Path, repo: str, revision: str) -> Path:
    """Create ``HF_HOME/hub/models--ORG--NAME/snapshots/<revision>`` and ``refs/main``."""
    repo_dir = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision, encoding="utf-8")
    return snap


def make_tiny_open_clip_hub(
    hf_home: str | os.PathLike[str],
    repo: str = "inquire-test/tiny-open-clip",
    revision: str = "1" * 40,
    seed: int = 0,
) -> str:
    """Put a tiny open_clip model into a Hugging Face cache at ``hf_home`` as ``repo``.

    Returns ``open_clip:hf-hub:<repo>``; its encoder's revision is ``revision``.
    """
    _write_open_clip_folder(_snapshot(Path(hf_home), repo, revision), seed)
    return f"open_clip:hf-hub:{repo}"


def clip_tokenizer() -> Any:
    """A ``transformers.CLIPTokenizer`` built from open_clip's shipped BPE vocabulary.

    It gives the same token ids as open_clip's tokenizer (no download needed).
    """
    import gzip

    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    # CLIP's vocabulary: 256 byte symbols, the same with an end-of-word mark, 48894 merges and
    # two special tokens = 49408 entries.
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges)  # type: ignore[arg-type]


def make_tiny_hf_clip(
    hf_home: str | os.PathLike[str],
    repo: str = "inquire-test/tiny-hf-clip",
    revision: str = "2" * 40,
    seed: int = 0,
) -> str:
    """Put a tiny random ``transformers`` CLIPModel into a Hugging Face cache at ``hf_home``.

    Vision: 32 px, patch 8, 2 layers; text: 2 layers; projection dim 32. Returns
    ``hf_clip:<repo>``; its encoder's revision is ``revision``.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    snap = _snapshot(Path(hf_home), repo, revision)
    config = CLIPConfig(
        text_config={
            "vocab_size": _CLIP_VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": _CLIP_CONTEXT,
        },
        vision_config={
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=TINY_EMBED_DIM,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(snap)
    clip_tokenizer().save_pretrained(snap)
    CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
    ).save_pretrained(snap)
    return f"hf_clip:{repo}"


@contextlib.contextmanager
def use_hf_home(hf_home: str | os.PathLike[str]) -> Iterator[Path]:
    """Point ``HF_HOME`` (and an already imported ``huggingface_hub``) at ``hf_home``.

    ``huggingface_hub`` reads ``HF_HOME`` once, at import; this also patches its constants so
    that loads inside the block find the cache. Restores everything on exit.
    """
    import huggingface_hub.constants as hc

    home = Path(hf_home).resolve()
    saved_env = {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_CACHE")}
    saved = {k: getattr(hc, k) for k in ("HF_HOME", "HF_HUB_CACHE")}
    os.environ["HF_HOME"] = str(home)
    os.environ["HF_HUB_CACHE"] = str(home / "hub")
    hc.HF_HOME, hc.HF_HUB_CACHE = str(home), str(home / "hub")
    try:
        yield home
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for k, v in saved.items():
            setattr(hc, k, v)
