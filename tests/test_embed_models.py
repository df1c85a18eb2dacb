"""Model registry and backends, on tiny random-weight models in real checkpoint formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from inquire.embed import load_encoder
from inquire.embed.base import ImageEncoder, open_image
from inquire.embed.models import ALIAS_TABLE, ALIASES, BACKENDS, resolve
from inquire.embed.text_cache import text_embeddings
from inquire.errors import InputError, UnknownNameError
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


def test_aliases_cover_inquire_models_and_resolve():
    names = {
        "vit-b-32", "rn50", "rn50x16", "vit-b-16", "vit-l-14", "vit-b-16-dfn", "vit-l-14-dfn",
        "vit-h-14-378", "siglip-vit-l-16-384", "siglip-so400m-14-384", "bioclip",
    }  # fmt: skip
    assert set(ALIASES) == names
    assert resolve("vit-h-14-378") == ("open_clip", "ViT-H-14-378-quickgelu/dfn5b")
    assert resolve("siglip-so400m-14-384") == ("open_clip", "ViT-SO400M-14-SigLIP-384/webli")
    assert resolve("bioclip") == ("open_clip", "hf-hub:imageomics/bioclip")
    import open_clip

    known = set(open_clip.list_pretrained())
    for a in ALIAS_TABLE:  # every alias names a real open_clip architecture + tag (or hub repo)
        backend, rest = resolve(a.name)
        assert backend in BACKENDS
        if not rest.startswith("hf-hub:"):
            assert tuple(rest.split("/")) in known, a


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownNameError, match=r"Did you mean.*'vit-h-14-378'"):
        load_encoder("vit-h-14-37")
    with pytest.raises(UnknownNameError, match="open_clip:"):
        load_encoder("openclip:ViT-B-32/openai")
    with pytest.raises(UnknownNameError, match="ViT-B-32"):
        load_encoder("open_clip:ViT-B-33/openai")
    with pytest.raises(UnknownNameError, match=r"pretrained tag.*random"):
        load_encoder("open_clip:ViT-B-32/no-such-tag")


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


def test_hf_clip_matches_transformers_forward(hf_home):
    from transformers import CLIPModel, CLIPProcessor

    home, (_, hf_id) = hf_home
    with use_hf_home(home):
        enc = load_encoder(hf_id, batch_size=1)
        snap = next((home / "hub").glob("models--inquire-test--tiny-hf-clip/snapshots/*"))
        model = CLIPModel.from_pretrained(snap).eval()
        proc = CLIPProcessor.from_pretrained(snap)
    images = _images(2)
    with torch.no_grad():
        ref = model.get_image_features(**proc(images=images, return_tensors="pt")).pooler_output
        t = proc(text=["a heron"], return_tensors="pt")
        ref_t = model.get_text_features(input_ids=t["input_ids"]).pooler_output
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_images(images), ref, atol=1e-5)
    ref_t = torch.nn.functional.normalize(ref_t, dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_text(["a heron"]), ref_t, atol=1e-5)


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
