"""Model registry and backends, on tiny random-weight models in real checkpoint formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inquire.embed import load_encoder
from inquire.embed.base import ImageEncoder
from inquire.embed.images import open_image
from inquire.embed.models import ALIAS_TABLE, ALIASES, BACKENDS, resolve
from inquire.embed.text_cache import text_embeddings
from inquire.errors import DownloadError, InputError, UnknownNameError
from inquire.testing.embed_images import random_rgb
from inquire.testing.embed_models import (
    TINY_EMBED_DIM,
    make_tiny_hf_clip,
    make_tiny_open_clip,
    make_tiny_open_clip_hub,
    use_hf_home,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_open_clip(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("hf_home")
    ids = (make_tiny_open_clip_hub(home), make_tiny_hf_clip(home))
    return home, ids


def _images(n: int = 3) -> list[Image.Image]:
    return [Image.fromarray(random_rgb(i, (40 + 4 * i, 36))) for i in range(n)]


# INQUIRE's model table (TopKPredictionStore.models in its src/utils.py): alias -> its id.
UPSTREAM_TABLE = {
    "vit-b-32": "hf_clip:openai/clip-vit-base-patch32",
    "wildclip-t1": "wildclip_vitb16_t1",
    "wildclip-t1t7-lwf": "wildclip_vitb16_t1t7_lwf",
    "bioclip": "bioclip",
    "rn50": "open_clip:RN50/openai",
    "rn50x16": "open_clip:RN50x16/openai",
    "vit-b-16": "hf_clip:openai/clip-vit-base-patch16",
    "vit-l-14": "hf_clip:openai/clip-vit-large-patch14",
    "vit-b-16-dfn": "open_clip:ViT-B-16/dfn2b",
    "vit-l-14-dfn": "open_clip:ViT-L-14-quickgelu/dfn2b",
    "vit-h-14-378": "open_clip:ViT-H-14-378-quickgelu/dfn5b",
    "siglip-vit-l-16-384": "open_clip:ViT-L-16-SigLIP-384/webli",
    "siglip-so400m-14-384": "open_clip:ViT-SO400M-14-SigLIP-384/webli",
}


def test_aliases_are_inquire_table_with_its_ids():
    assert [a.name for a in ALIAS_TABLE] == list(UPSTREAM_TABLE)
    assert {a.name: a.upstream_id for a in ALIAS_TABLE} == UPSTREAM_TABLE
    # The OpenAI ViTs go through transformers, as INQUIRE's all_clip did.
    for name in ("vit-b-32", "vit-b-16", "vit-l-14"):
        assert ALIASES[name] == UPSTREAM_TABLE[name]
    assert resolve("vit-h-14-378") == ("open_clip", "ViT-H-14-378-quickgelu/dfn5b")
    assert resolve("vit-b-16-dfn") == ("open_clip", "ViT-B-16-quickgelu/dfn2b")
    assert resolve("bioclip") == ("open_clip", "hf-hub:imageomics/bioclip")
    assert resolve("wildclip-t1") == ("wildclip", "wildclip_vitb16_t1")
    # INQUIRE's prefix-less ids are accepted too.
    assert resolve("wildclip_vitb16_t1t7_lwf") == ("wildclip", "wildclip_vitb16_t1t7_lwf")
    import open_clip

    known = set(open_clip.list_pretrained())
    for a in ALIAS_TABLE:
        backend, rest = resolve(a.name)
        assert backend in BACKENDS
        if backend == "open_clip" and not rest.startswith("hf-hub:"):
            arch, tag = rest.split("/")
            assert (arch, tag) in known, a
            # The architecture has the activation the weights were trained with.
            model_gelu = bool(open_clip.get_model_config(arch).get("quick_gelu", False))
            tag_gelu = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
            assert model_gelu == tag_gelu, a


def test_inquire_models_lists_every_upstream_id_within_80_columns():
    from typer.testing import CliRunner

    from inquire.cli import app

    res = CliRunner().invoke(app, ["models"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    for a in ALIAS_TABLE:
        assert f"  upstream  {a.upstream_id}" in lines, a.name
        assert f"  model id  {a.model_id}" in lines, a.name
    for b in BACKENDS:
        assert b in lines


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownNameError, match=r"Did you mean.*'vit-h-14-378'"):
        load_encoder("vit-h-14-37")
    with pytest.raises(UnknownNameError, match="open_clip:"):
        load_encoder("openclip:ViT-B-32/openai")
    with pytest.raises(UnknownNameError, match="ViT-B-32"):
        load_encoder("open_clip:ViT-B-33/openai")
    with pytest.raises(UnknownNameError, match=r"pretrained tag.*random"):
        load_encoder("open_clip:ViT-B-32/no-such-tag")


def test_an_alias_is_one_row(tiny):
    """A row added to the alias table is loadable by its name and its upstream id, listed by
    `inquire models` and known to `inquire reproduce`'s published-embeddings rule."""
    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.embed.models import (
        Alias,
        published_embeddings,
        register_alias,
        unregister_alias,
    )

    assert published_embeddings() == [
        "vit-b-16",
        "vit-l-14",
        "vit-h-14-378",
        "siglip-so400m-14-384",
    ]
    row = Alias("tiny-test", tiny, "tiny_test_upstream", TINY_EMBED_DIM, "a test row", True)
    register_alias(row)
    try:
        assert resolve("tiny-test") == resolve("tiny_test_upstream") == resolve(tiny)
        assert load_encoder("tiny_test_upstream").dim == TINY_EMBED_DIM
        assert published_embeddings()[-1] == "tiny-test"
        res = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
        assert (
            f"tiny-test ({TINY_EMBED_DIM}-d, iNat24 embeddings published by INQUIRE)" in res.output
        )
        with pytest.raises(InputError, match="already in use"):
            register_alias(row)
    finally:
        assert unregister_alias("tiny-test") == row
    assert "tiny-test" not in ALIASES and published_embeddings()[-1] != "tiny-test"
    with pytest.raises(UnknownNameError):
        resolve("tiny_test_upstream")
    with pytest.raises(InputError, match="must be BACKEND:REST"):
        register_alias(Alias("x", "nobackend/model", "x", 8, ""))


def test_tiny_open_clip_matches_open_clip_forward(tiny):
    import open_clip

    enc = load_encoder(tiny, batch_size=2)
    assert isinstance(enc, ImageEncoder)
    assert enc.dim == TINY_EMBED_DIM and enc.revision.startswith("local:")
    images = _images(3)
    got = enc.encode_images(images)
    assert got.shape == (3, TINY_EMBED_DIM) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    # Reference: open_clip's own model, transform and tokenizer, one image at a time.
    name = tiny.removeprefix("open_clip:")
    model, _, pre = open_clip.create_model_and_transforms(name)
    tok = open_clip.get_tokenizer(name)
    with torch.no_grad():
        ref = torch.cat([model.encode_image(pre(im)[None]) for im in images])
        ref_t = model.encode_text(tok(["a heron", "two newts"]))
    ref = (ref / ref.norm(dim=-1, keepdim=True)).numpy()
    ref_t = (ref_t / ref_t.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(enc.encode_text(["a heron", "two newts"]), ref_t, atol=1e-5)


def test_hub_models_load_offline_with_revision(hf_home):
    home, (oc_id, hf_id) = hf_home
    with use_hf_home(home):
        oc = load_encoder(oc_id)
        hf = load_encoder(hf_id)
    assert oc.revision == "1" * 40 and hf.revision == "2" * 40
    assert oc.dim == hf.dim == TINY_EMBED_DIM
    for enc in (oc, hf):
        t = enc.encode_text(["a heron", "a newt in a pond", ""])
        i = enc.encode_images(_images(2))
        assert t.shape == (3, TINY_EMBED_DIM) and i.shape == (2, TINY_EMBED_DIM)
        np.testing.assert_allclose(np.linalg.norm(np.vstack([t, i]), axis=1), 1, atol=1e-5)


def test_hf_clip_is_loaded_as_inquire_loaded_it(hf_home):
    """Reference: INQUIRE's all_clip path - CLIPModel, CLIPProcessor's image processor as
    transformers 4.x loaded it (PIL), texts through OpenAI's clip.tokenize (open_clip ships
    the same code), features without an attention mask, then L2-normalised."""
    import open_clip
    from transformers import CLIPImageProcessorPil, CLIPModel

    home, (_, hf_id) = hf_home
    with use_hf_home(home):
        enc = load_encoder(hf_id, batch_size=2)
        snap = next((home / "hub").glob("models--inquire-test--tiny-hf-clip/snapshots/*"))
        model = CLIPModel.from_pretrained(snap).eval()
        proc = CLIPImageProcessorPil.from_pretrained(snap)
    assert enc.preprocess_info["image_processor"] == "CLIPImageProcessorPil"
    images = _images(3)
    texts = [
        "A Heron  swallowing\ta FISH",
        "fish &amp; chips",  # OpenAI's cleaning unescapes HTML; the HF tokenizer does not
        "naïve café",
        "a long query " * 40,  # > 77 tokens: cut, end token kept last
        "",
    ]
    with torch.no_grad():
        pixels = torch.stack([proc(im, return_tensors="pt")["pixel_values"][0] for im in images])
        ref = model.get_image_features(pixel_values=pixels).pooler_output
        ref_t = model.get_text_features(input_ids=open_clip.tokenize(texts)).pooler_output
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_images(images), ref, atol=1e-5)
    ref_t = torch.nn.functional.normalize(ref_t, dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_text(texts), ref_t, atol=1e-5)

    from inquire.embed.hf_backend import openai_clip_token_ids

    ids = openai_clip_token_ids(enc._tokenizer, texts)  # type: ignore[attr-defined]
    assert torch.equal(ids, open_clip.tokenize(texts))
    own = enc._tokenizer("fish &amp; chips")["input_ids"]  # type: ignore[attr-defined]
    assert own != ids[1][: len(own)].tolist()  # the model's tokenizer alone would differ


def test_wildclip_checkpoint_loads_like_inquire(tiny, tmp_path, caplog):
    import logging

    from inquire.embed.wildclip_backend import KEY_PREFIX

    caplog.set_level(logging.INFO, "inquire.embed.wildclip_backend")
    from inquire.testing.embed_models import make_tiny_wildclip_checkpoint

    base = tiny.removeprefix("open_clip:")
    ckpt = make_tiny_wildclip_checkpoint(tmp_path / "wildclip_tiny.pth", seed=1)
    tuned = load_encoder(make_tiny_open_clip(tmp_path / "seed1", seed=1))
    enc = load_encoder(f"wildclip:{base}@{ckpt}")
    images, texts = _images(2), ["a zebra at night", "two lions"]
    np.testing.assert_allclose(enc.encode_images(images), tuned.encode_images(images), atol=1e-6)
    np.testing.assert_allclose(enc.encode_text(texts), tuned.encode_text(texts), atol=1e-6)
    assert enc.model_id == f"wildclip:{base}@{ckpt}" and enc.revision.startswith("local:")
    assert "model.adapter" in caplog.text  # not part of the CLIP model: ignored, and said so

    # A checkpoint with the image tower only: the text tower keeps the base weights, as
    # INQUIRE's non-strict load does.
    vis = make_tiny_wildclip_checkpoint(tmp_path / "visual.pth", seed=1, towers=("visual",))
    half = load_encoder(f"wildclip:{base}@{vis}")
    base_enc = load_encoder(tiny)
    np.testing.assert_allclose(half.encode_images(images), tuned.encode_images(images), atol=1e-6)
    np.testing.assert_allclose(half.encode_text(texts), base_enc.encode_text(texts), atol=1e-6)

    # INQUIRE's own recipe on the base model gives the same weights.
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    fixed = {k.split(KEY_PREFIX)[-1]: v for k, v in state.items()}
    ref = load_encoder(tiny)
    ref._model.load_state_dict(fixed, strict=False)  # type: ignore[attr-defined]
    np.testing.assert_allclose(enc.encode_text(texts), ref.encode_text(texts), atol=1e-6)


def test_wildclip_refuses_what_would_not_load(tiny, tmp_path, monkeypatch):
    base = tiny.removeprefix("open_clip:")
    plain = tmp_path / "plain.pth"
    torch.save({"visual.proj": torch.zeros(2)}, plain)
    with pytest.raises(InputError, match=r"not a WildCLIP checkpoint.*'state_dict'"):
        load_encoder(f"wildclip:{base}@{plain}")
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"model.encoder.weight": torch.zeros(2)}}, foreign)
    with pytest.raises(InputError, match=r"no weight of .* fits the base model"):
        load_encoder(f"wildclip:{base}@{foreign}")
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"model.clip_model.visual.proj": torch.zeros(3, 3)}}, wrong)
    with pytest.raises(InputError, match=r"do not fit the base model"):
        load_encoder(f"wildclip:{base}@{wrong}")
    with pytest.raises(InputError, match="does not exist"):
        load_encoder(f"wildclip:{tmp_path}/missing.pth")
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": {}, "cfg": Path("/x")}, pickled)
    with pytest.raises(InputError, match=r"could not be read as a checkpoint of tensors"):
        load_encoder(f"wildclip:{base}@{pickled}")
    # INQUIRE's alias: the named file in the WildCLIP folder, then OpenAI ViT-B/16 as base.
    monkeypatch.setenv("INQUIRE_WILDCLIP_DIR", str(tmp_path / "wc"))
    with pytest.raises(InputError, match=r"'wildclip_vitb16_t1.pth' is not in .*zenodo"):
        load_encoder("wildclip-t1")
    from inquire.testing.embed_models import make_tiny_wildclip_checkpoint

    make_tiny_wildclip_checkpoint(tmp_path / "wc" / "wildclip_vitb16_t1.pth")
    with pytest.raises(DownloadError, match=r"ViT-B-16-quickgelu/openai"):
        load_encoder("wildclip-t1")  # found; the OpenAI base weights cannot download here


def test_precision_device_and_batch_size_are_honoured(tiny, monkeypatch):
    fp32 = load_encoder(tiny)
    images = _images(5)
    ref = fp32.encode_images(images)
    for precision, dtype, tol in (("bf16", torch.bfloat16, 0.05), ("fp16", torch.float16, 5e-3)):
        enc = load_encoder(tiny, precision=precision)
        assert enc._model.visual.conv1.weight.dtype == dtype  # type: ignore[attr-defined]
        got = enc.encode_images(images)
        assert got.dtype == np.float32
        assert not np.array_equal(got, ref)  # really computed in lower precision
        np.testing.assert_allclose(got, ref, atol=tol)
    with pytest.raises(UnknownNameError, match="Did you mean 'fp16'"):
        load_encoder(tiny, precision="fp61")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            load_encoder(tiny, device="cuda")
    with pytest.raises(InputError, match="not a torch device"):
        load_encoder(tiny, device="gpu0")
    with pytest.raises(InputError, match="batch_size"):
        load_encoder(tiny, batch_size=0)
    enc = load_encoder(tiny, batch_size=2)
    sizes: list[int] = []
    forward = enc._model.encode_image  # type: ignore[attr-defined]
    monkeypatch.setattr(enc._model, "encode_image", lambda x: sizes.append(len(x)) or forward(x))
    np.testing.assert_allclose(enc.encode_images(images), ref, atol=1e-5)
    assert sizes == [2, 2, 1]


def test_local_checkpoint_forms(tiny, tmp_path):
    import open_clip

    folder = tiny.removeprefix("open_clip:local-dir:")
    with pytest.raises(InputError, match=r"no open_clip_config.json"):
        load_encoder(f"open_clip:local-dir:{tmp_path}")
    # ARCH@CHECKPOINT: a registered architecture with weights from a file.
    import json

    from inquire.testing.embed_models import TINY_OPEN_CLIP_CFG

    (tmp_path / "inquire-tiny-vit.json").write_text(json.dumps(TINY_OPEN_CLIP_CFG))
    open_clip.add_model_config(tmp_path / "inquire-tiny-vit.json")
    enc = load_encoder(f"open_clip:inquire-tiny-vit@{folder}/open_clip_model.safetensors")
    ref = load_encoder(tiny)
    assert enc.revision == ref.revision
    np.testing.assert_allclose(enc.encode_text(["x"]), ref.encode_text(["x"]), atol=1e-6)
    with pytest.raises(InputError, match="does not exist"):
        load_encoder(f"open_clip:ViT-B-32@{tmp_path}/missing.pt")


def test_open_image_modes(tmp_path):
    from inquire.testing.embed_images import make_image_zoo

    zoo = make_image_zoo(tmp_path)
    for name in ("cmyk.jpg", "gray16.png", "alpha.png", "palette.png", "exif_rotated.jpg"):
        im = open_image(zoo / name)
        assert im.mode == "RGB", name
    g = np.asarray(open_image(zoo / "gray16.png"))
    assert 0 < g.mean() < 250  # scaled to 8 bits, not clipped to white
    a = np.asarray(open_image(zoo / "alpha.png"))
    assert (a[:20] == 255).all()  # transparent top half over white, not the stored black
    assert open_image(zoo / "exif_rotated.jpg").size == (48, 40)  # upright again
    for bad in ("truncated.jpg", "empty.jpg", "not_an_image.jpg"):
        with pytest.raises((OSError, ValueError)):
            open_image(zoo / bad)


def test_text_embeddings_cached_by_model_revision_and_text(tiny, tmp_path, monkeypatch):
    enc = load_encoder(tiny)
    calls: list[list[str]] = []
    encode = enc.encode_text
    monkeypatch.setattr(
        enc, "encode_text", lambda texts: calls.append(list(texts)) or encode(texts)
    )
    db = tmp_path / "cache.sqlite"
    first = text_embeddings(enc, ["a", "b", "a"], path=db)
    again = text_embeddings(enc, ["b", "c"], path=db)
    assert calls == [["a", "b"], ["c"]]  # only new texts are computed
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_allclose(again, encode(["b", "c"]), atol=1e-6)
    enc.revision = "another-revision"  # new weights under the same name -> recomputed
    text_embeddings(enc, ["a"], path=db)
    assert calls[-1] == ["a"]
    # Default location: the inquire cache.
    text_embeddings(enc, ["a"])
    from inquire.embed.text_cache import cache_path

    assert cache_path().is_file()
