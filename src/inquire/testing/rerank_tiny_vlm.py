"""Tiny randomly initialised vision-language models, saved like downloaded checkpoints.

Each builder writes a model (``save_pretrained``: ``config.json`` + safetensors) and its
processor (tokenizer + image processor) into a folder, so the folder loads through the same
``from_pretrained(..., local_files_only=True)`` code path as a model from the hub. Weights are
random: the scores they give exercise the code, they mean nothing.

Tokenizers are trained in code (byte-level BPE over a small corpus that contains the prompt
words and ``Yes``/``No``) and wrapped in ``PreTrainedTokenizerFast``. Like the tokenizers of
the published checkpoints, the Llama-style ones put ``<s>`` before every text and the T5-style
ones ``</s>`` after it (INQUIRE reads its answer token ids at positions that depend on this).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CORPUS = [
    'USER: ASSISTANT: Does this picture show a fox? Answer the question with either "Yes" or '
    '"No" and nothing else. Respond with yes or no.',
    "Q: A: Question: Answer: User: Assistant: system user assistant answer questions.",
    "Yes No yes no Yes. No. yes no YES NO",
    " Yes No yes no",
    "a male meadowlark in breeding plumage, a mongoose with mange, a heron carrying food",
]


def tiny_tokenizer(
    special_tokens: list[str],
    vocab_size: int = 400,
    extra: dict[str, str] | None = None,
    add: str | None = None,
) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ``special_tokens`` as single tokens.

    The first four special tokens are used as pad, bos, eos and unk. ``extra`` names further
    special tokens as attributes (e.g. ``{"image_token": "<image>"}``). ``add``: ``"bos"``
    puts the bos token before every encoded text, ``"eos"`` the eos token after it (when
    special tokens are added), as Llama and T5 tokenizers do.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    pad, bos, eos, unk = special_tokens[:4]
    if add == "bos":
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))],
        )
    elif add == "eos":
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}",
            pair=f"$A {eos} $B {eos}",
            special_tokens=[(eos, tok.token_to_id(eos))],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        extra_special_tokens=extra or {},
    )


# The size every tiny tower shares (vision, Q-Former and language model alike).
_TINY: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}


def _vision_clip(image_size: int = 32, patch: int = 8) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        **_TINY,
        image_size=image_size,
        patch_size=patch,
        projection_dim=32,
    )


def _llama(tok: Any, **kw: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        **_TINY,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **kw,
    )


def _clip_image_processor(size: int) -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )


def _save(model: Any, processor: Any, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_llava(out: Path) -> Path:
    """LLaVA-1.5 layout: CLIP vision tower + projector + Llama, ``LlavaProcessor``."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = tiny_tokenizer(
        ["<pad>", "<s>", "</s>", "<unk>", "<image>"], extra={"image_token": "<image>"}, add="bos"
    )
    cfg = LlavaConfig(
        vision_config=_vision_clip(),
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    proc = LlavaProcessor(
        image_processor=_clip_image_processor(32),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return _save(LlavaForConditionalGeneration(cfg).eval(), proc, out)


def build_llava_next(out: Path) -> Path:
    """LLaVA-1.6 layout (any-resolution tiles): CLIP tower + Llama, ``LlavaNextProcessor``."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = tiny_tokenizer(
        [
            "<pad>",
            "<s>",
            "</s>",
            "<unk>",
            "<image>",
            "[INST]",
            "[/INST]",
            "<|im_start|>",
            "<|im_end|>",
        ],
        extra={"image_token": "<image>"},
        add="bos",
    )
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    cfg = LlavaNextConfig(
        vision_config=_vision_clip(),
        text_config=_llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    ip = LlavaNextImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=pinpoints,
    )
    proc = LlavaNextProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return _save(LlavaNextForConditionalGeneration(cfg).eval(), proc, out)


def build_paligemma(out: Path) -> Path:
    """PaliGemma layout: SigLIP vision tower + Gemma, ``PaliGemmaProcessor``."""
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    tok = tiny_tokenizer(
        ["<pad>", "<bos>", "<eos>", "<unk>", "<image>"], extra={"image_token": "<image>"}
    )
    vc = SiglipVisionConfig(
        **_TINY,
        image_size=32,
        patch_size=8,
    )
    tc = GemmaConfig(
        vocab_size=len(tok),
        **_TINY,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    cfg = PaliGemmaConfig(
        vision_config=vc,
        text_config=tc,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=32,
        hidden_size=32,
    )
    ip = SiglipImageProcessor(size={"height": 32, "width": 32})
    # the processor reads the number of image tokens from its image processor
    ip.image_seq_length = 16  # type: ignore[attr-defined]
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    return _save(PaliGemmaForConditionalGeneration(cfg).eval(), proc, out)


def build_idefics3(out: Path) -> Path:
    """Idefics3 / SmolVLM layout: SigLIP-style tower + pixel shuffle + Llama."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    specials = [
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
        "<image>",
        "<fake_token_around_image>",
        "<global-img>",
        "<end_of_utterance>",
        "<|im_start|>",
    ]
    specials += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = tiny_tokenizer(
        specials,
        extra={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    vc = Idefics3VisionConfig(
        **_TINY,
        image_size=32,
        patch_size=8,
    )
    cfg = Idefics3Config(
        vision_config=vc,
        text_config=_llama(tok),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
    )
    ip = Idefics3ImageProcessor(
        size={"longest_edge": 32},
        max_image_size={"longest_edge": 32},
        do_image_splitting=False,
    )
    # (32/8)^2 patches / scale_factor^2 = 4 image tokens per image
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4)
    return _save(Idefics3ForConditionalGeneration(cfg).eval(), proc, out)


def _t5_config(tok: Any) -> Any:
    from transformers import T5Config

    kwargs: dict[str, Any] = {
        "decoder_start_token_id": tok.pad_token_id,
        "tie_word_embeddings": False,
    }
    return T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        **kwargs,
    )


def build_blip2(out: Path) -> Path:
    """BLIP-2 (FLAN-T5) layout: BLIP vision tower + Q-Former + T5 encoder-decoder."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
    )

    tok = tiny_tokenizer(["<pad>", "<s>", "</s>", "<unk>"], add="eos")
    ip = BlipImageProcessor(size={"height": 32, "width": 32})
    # The processor adds the <image> token to a tokenizer that lacks one, as for the
    # published checkpoints; the model's vocabulary is sized after that.
    proc = Blip2Processor(image_processor=ip, tokenizer=tok, num_query_tokens=4)
    vc = Blip2VisionConfig(
        **_TINY,
        image_size=32,
        patch_size=8,
    )
    qc = Blip2QFormerConfig(
        **_TINY,
        encoder_hidden_size=32,
        vocab_size=64,
    )
    cfg = Blip2Config(
        vision_config=vc.to_dict(),
        qformer_config=qc.to_dict(),
        text_config=_t5_config(tok).to_dict(),
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    return _save(Blip2ForConditionalGeneration(cfg).eval(), proc, out)


def build_instructblip(out: Path) -> Path:
    """InstructBLIP (FLAN-T5) layout: as BLIP-2 plus an instruction-aware Q-Former."""
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )

    tok = tiny_tokenizer(["<pad>", "<s>", "</s>", "<unk>"], add="eos")
    qtok = tiny_tokenizer(["[PAD]", "[CLS]", "[SEP]", "[UNK]"], vocab_size=300)
    ip = BlipImageProcessor(size={"height": 32, "width": 32})
    proc = InstructBlipProcessor(
        image_processor=ip, tokenizer=tok, qformer_tokenizer=qtok, num_query_tokens=4
    )
    vc = InstructBlipVisionConfig(
        **_TINY,
        image_size=32,
        patch_size=8,
    )
    qc = InstructBlipQFormerConfig(
        **_TINY,
        encoder_hidden_size=32,
        vocab_size=len(qtok),
        pad_token_id=qtok.pad_token_id,
    )
    cfg = InstructBlipConfig(
        vision_config=vc.to_dict(),
        qformer_config=qc.to_dict(),
        text_config=_t5_config(tok).to_dict(),
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    return _save(InstructBlipForConditionalGeneration(cfg).eval(), proc, out)


def build_qwen2_vl(out: Path) -> Path:
    """Qwen2-VL layout: ViT with 2-D rotary positions + patch merger + Qwen2 with M-RoPE."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<unk>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<|vision_start|>",
        "<|vision_end|>",
    ]
    tok = tiny_tokenizer(
        specials,
        extra={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    vision = {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 32,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 8,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    text = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        # M-RoPE: (temporal, height, width) sections of the 16/2 rotary frequencies
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 2, 4],
        },
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    cfg = Qwen2VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    pixels = {"min_pixels": 32 * 32, "max_pixels": 64 * 64, "patch_size": 8}
    pixels |= {"temporal_patch_size": 2, "merge_size": 2}
    proc = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(**pixels),
    )
    return _save(Qwen2VLForConditionalGeneration(cfg).eval(), proc, out)


# family name (as in inquire.rerank.families.FAMILIES) -> builder
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "llava-1.5": build_llava,
    "llava-1.6-mistral": build_llava_next,
    "llava-1.6-34b": build_llava_next,
    "paligemma": build_paligemma,
    "idefics3": build_idefics3,
    "blip2": build_blip2,
    "instructblip": build_instructblip,
    "qwen2-vl": build_qwen2_vl,
}


def build_tiny_vlm(family: str, out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random-weight model of ``family`` to ``out_dir``; return the folder."""
    import torch

    from inquire.errors import UnknownNameError

    if family not in BUILDERS:
        raise UnknownNameError("tiny model family", family, BUILDERS)
    torch.manual_seed(seed)
    return BUILDERS[family](Path(out_dir))
