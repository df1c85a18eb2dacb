"""The embedding pipeline: layout, equality with single-image forwards, resume, bad images,
tar and iNat-style inputs, and the Ray engine."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from inquire.cli import app
from inquire.embed import EmbeddingStore, load_encoder
from inquire.embed.pipeline import ShardWriter, embed_images
from inquire.errors import InputError
from inquire.testing.embed_images import ZOO_BAD, ZOO_OK, make_image_zoo, write_jpegs
from inquire.testing.embed_models import make_tiny_open_clip

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_id(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_open_clip(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jpegs")
    write_jpegs(root / "a", 13, seed=0)
    write_jpegs(root / "b", 12, seed=50, size=40)
    return root


def _read(out: Path) -> tuple[np.ndarray, pd.DataFrame]:
    store = EmbeddingStore(out)
    return np.vstack([np.asarray(s) for s in store.shards]), store.metadata


def test_layout_and_equality_with_single_image_forward(model_id, jpegs, tmp_path):
    out = tmp_path / "out"
    s = embed_images(model_id, jpegs, out, batch_size=4, shard_size=10, workers=2, progress=False)
    assert (s.count, s.n_shards, s.n_errors) == (25, 3, 0)
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == [
        "img_emb_0.npy",
        "img_emb_1.npy",
        "img_emb_2.npy",
    ]
    assert sorted(p.name for p in (out / "metadata").iterdir()) == [
        f"metadata_{i}.parquet" for i in range(3)
    ]
    shard0 = np.load(out / "img_emb" / "img_emb_0.npy")
    assert shard0.dtype == np.float16 and shard0.shape == (10, 32)
    man = json.loads((out / "manifest.json").read_text())
    enc = load_encoder(model_id)
    assert man["model_id"] == model_id and man["revision"] == enc.revision
    assert (man["dim"], man["count"], man["precision"], man["complete"]) == (32, 25, "fp32", True)
    assert man["preprocessing"]["mean"] and "Resize" in man["preprocessing"]["transform"]
    from inquire._io import file_sha256

    for sh in man["shards"]:
        assert sh["sha256_img_emb"] == file_sha256(out / sh["img_emb"])
        assert sh["sha256_metadata"] == file_sha256(out / sh["metadata"])
    emb, meta = _read(out)
    paths = sorted(p.relative_to(jpegs).as_posix() for p in jpegs.rglob("*.jpg"))
    assert meta["image_path"].tolist() == paths
    # Reference: the model's own forward on each image alone.
    ref = np.vstack([enc.encode_images([jpegs / p]) for p in paths])
    np.testing.assert_allclose(emb.astype(np.float32), ref, atol=2e-3)  # float16 storage
    store = EmbeddingStore(out)
    store.check_normalized()
    assert store.ids.tolist() == list(range(25))  # a folder has no ids: rows in order


class _Killed(Exception):
    pass


@pytest.mark.parametrize("where", ["after_commit", "before_manifest"])
def test_resume_after_kill_equals_uninterrupted_run(model_id, jpegs, tmp_path, monkeypatch, where):
    ref_out = tmp_path / "ref"
    embed_images(model_id, jpegs, ref_out, batch_size=4, shard_size=7, workers=0, progress=False)
    out = tmp_path / "out"
    commit, write_manifest = ShardWriter.commit, ShardWriter._write_manifest
    calls = {"n": 0}

    def dying_commit(self, shard):
        calls["n"] += 1
        if where == "after_commit" and calls["n"] == 3:
            raise _Killed  # shards 0, 1 committed; dies while handing over shard 2
        commit(self, shard)

    def dying_manifest(self, complete=False):
        # Shard 1's files are renamed into place, but the manifest never records them.
        if len(self.manifest["shards"]) == 2 and not complete:
            raise _Killed
        write_manifest(self, complete)

    monkeypatch.setattr(ShardWriter, "commit", dying_commit)
    monkeypatch.setattr(ShardWriter, "_write_manifest", dying_manifest)
    if where == "after_commit":
        monkeypatch.setattr(ShardWriter, "_write_manifest", write_manifest)
    with pytest.raises(_Killed):
        embed_images(model_id, jpegs, out, batch_size=4, shard_size=7, workers=2, progress=False)
    monkeypatch.setattr(ShardWriter, "commit", commit)
    monkeypatch.setattr(ShardWriter, "_write_manifest", write_manifest)
    man = json.loads((out / "manifest.json").read_text())
    done = [sh["index"] for sh in man["shards"]]
    assert done == ([0, 1] if where == "after_commit" else [0])
    partial = EmbeddingStore(out)  # only committed shards are visible
    assert len(partial) == 7 * len(done)
    assert not list(out.rglob(".*.tmp"))
    s = embed_images(model_id, jpegs, out, batch_size=4, shard_size=7, workers=2, progress=False)
    assert s.new_images == 25 - 7 * len(done)
    emb, meta = _read(out)
    ref_emb, ref_meta = _read(ref_out)
    np.testing.assert_array_equal(emb, ref_emb)
    pd.testing.assert_frame_equal(meta, ref_meta)
    assert (
        json.loads((out / "manifest.json").read_text())["shards"]
        == json.loads((ref_out / "manifest.json").read_text())["shards"]
    )
    # Nothing left to do; a different run into the same folder is refused.
    assert embed_images(model_id, jpegs, out, shard_size=7, progress=False).new_images == 0
    with pytest.raises(InputError, match="shard_size: '7' there, '5' now"):
        embed_images(model_id, jpegs, out, shard_size=5, progress=False)
    s = embed_images(model_id, jpegs, out, shard_size=5, overwrite=True, progress=False)
    assert s.n_shards == 5 and len(EmbeddingStore(out)) == 25


def test_bad_images_are_reported_and_the_rest_embedded(model_id, tmp_path):
    zoo = make_image_zoo(tmp_path / "zoo")
    out = tmp_path / "out"
    s = embed_images(model_id, zoo, out, batch_size=3, shard_size=4, workers=2, progress=False)
    n_ok = 3 + len(ZOO_OK)
    assert (s.count, s.n_errors) == (n_ok, len(ZOO_BAD))
    errors = pd.read_csv(out / "errors.csv")
    assert sorted(errors["path"]) == sorted(ZOO_BAD)
    reasons = dict(zip(errors["path"], errors["reason"], strict=True))
    assert "0 bytes" in reasons["empty.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["not_an_image.jpg"]
    emb, meta = _read(out)
    assert "notes.txt" not in meta["image_path"].tolist()
    enc = load_encoder(model_id)
    from PIL import Image

    from inquire.embed.images import open_image

    ref = enc.encode_images([open_image(zoo / p) for p in meta["image_path"]])
    np.testing.assert_allclose(emb.astype(np.float32), ref, atol=2e-3)
    # The EXIF-rotated file is embedded upright: like the picture saved without rotation.
    stored = np.asarray(Image.open(zoo / "exif_rotated.jpg"))  # pixels only, no EXIF
    upright = Image.fromarray(stored).transpose(Image.Transpose.ROTATE_270)
    row = meta["image_path"].tolist().index("exif_rotated.jpg")
    sideways = enc.encode_images([Image.fromarray(stored)])[0]
    np.testing.assert_allclose(emb[row], enc.encode_images([upright])[0], atol=2e-3)
    assert np.abs(emb[row] - sideways).max() > 1e-2


def test_tar_input_equals_folder_input(model_id, jpegs, tmp_path):
    tar_path = tmp_path / "images.tar"
    with tarfile.open(tar_path, "w") as tf:
        for p in sorted(jpegs.rglob("*.jpg")):
            tf.add(p, arcname=p.relative_to(jpegs).as_posix())
        tf.add(make_image_zoo(tmp_path / "zoo", n_good=0) / "empty.jpg", arcname="zz/empty.jpg")
    a, b = tmp_path / "tar_out", tmp_path / "dir_out"
    s = embed_images(model_id, tar_path, a, batch_size=8, shard_size=9, workers=2, progress=False)
    assert (s.count, s.n_errors) == (25, 1)
    embed_images(model_id, jpegs, b, batch_size=8, shard_size=9, workers=0, progress=False)
    ea, ma = _read(a)
    eb, mb = _read(b)
    np.testing.assert_array_equal(ea[:25], eb)
    assert ma["image_path"].tolist() == mb["image_path"].tolist()
    gz = tmp_path / "images.tar.gz"
    with tarfile.open(gz, "w:gz") as tf:
        tf.add(tar_path, arcname="x.jpg")
    with pytest.raises(InputError, match="decompress"):
        embed_images(model_id, gz, tmp_path / "gz_out", progress=False)


def test_inat_style_tree_uses_ids_from_json(model_id, tmp_path):
    root = tmp_path / "inat24"
    train = root / "train"
    files = write_jpegs(train / "00001_Animalia_Chordata_Aves_Ardeidae_Ardea_herodias", 5)
    files += write_jpegs(train / "00002_Plantae_Tracheophyta_Magnoliopsida_Rosales_Rosa", 4)
    ids = [5_000_000 + 37 * k for k in range(len(files))][::-1]
    doc = {
        "images": [
            {"id": i, "file_name": p.relative_to(root).as_posix(), "width": 48, "height": 48}
            for i, p in zip(ids, files, strict=True)
        ]
        + [{"id": 1, "file_name": "train/missing/gone.jpg"}],
        "annotations": [],
        "categories": [],
    }
    (root / "train.json").write_text(json.dumps(doc))
    for path in (train, root, root / "train.json"):  # the tree, its parent, or the JSON
        out = tmp_path / f"out_{path.name}"
        s = embed_images(model_id, path, out, batch_size=4, shard_size=4, progress=False)
        assert (s.count, s.n_errors) == (9, 1)
        store = EmbeddingStore(out)
        assert store.ids.tolist() == ids
        assert store.metadata["image_path"].tolist() == [d["file_name"] for d in doc["images"][:9]]
        assert pd.read_csv(out / "errors.csv")["path"].tolist() == ["train/missing/gone.jpg"]
    rows = store.row_of([ids[3], ids[0]])
    assert rows.tolist() == [3, 0]


def test_cli_embed_and_models(model_id, jpegs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli_out"
    args = ["embed", "--model", model_id, "--images", str(jpegs), "--out", str(out)]
    res = runner.invoke(app, [*args, "--shard-size", "10", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "25 embeddings in 3 shard(s)" in res.output
    assert len(EmbeddingStore(out)) == 25
    res = runner.invoke(app, ["embed", "--model", "vit-b-3", "--images", str(jpegs), "--out", "x"])
    assert res.exit_code == 2 and "Did you mean" in res.output
    res = runner.invoke(app, [*args, "--engine", "spark"])
    assert res.exit_code == 2 and "unknown engine 'spark'" in res.output
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "ViT-H-14-378-quickgelu/dfn5b" in res.output


@pytest.mark.slow
@pytest.mark.private_network
def test_ray_engine_equals_local(model_id, jpegs, tmp_path):
    ray = pytest.importorskip("ray")
    zoo = make_image_zoo(jpegs.parent / "ray_zoo" / "zoo", n_good=1)
    src = tmp_path / "src"
    src.mkdir()  # copies: symlinked folders are not entered (one scanning rule)
    shutil.copytree(jpegs, src / "jpegs")
    shutil.copytree(zoo, src / "zoo")
    local, remote = tmp_path / "local", tmp_path / "ray"
    embed_images(model_id, src, local, batch_size=4, shard_size=8, workers=0, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = embed_images(
            model_id, src, remote, batch_size=4, shard_size=8, workers=1, engine="ray",
            progress=False,
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert s.n_errors == len(ZOO_BAD)
    el, ml = _read(local)
    er, mr = _read(remote)
    pd.testing.assert_frame_equal(ml, mr)
    np.testing.assert_allclose(el.astype(np.float32), er.astype(np.float32), atol=1e-3)
    assert pd.read_csv(local / "errors.csv").equals(pd.read_csv(remote / "errors.csv"))
    ml_man = json.loads((local / "manifest.json").read_text())
    mr_man = json.loads((remote / "manifest.json").read_text())
    assert [sh["count"] for sh in ml_man["shards"]] == [sh["count"] for sh in mr_man["shards"]]


def test_bad_arguments_fail_with_specific_errors(model_id, jpegs, tmp_path):
    from inquire.errors import DownloadError, UnknownNameError
    from inquire.testing.embed_models import use_hf_home

    out = tmp_path / "out"
    with pytest.raises(InputError, match="does not exist"):
        embed_images(model_id, tmp_path / "nowhere", out, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        embed_images(model_id, tmp_path / "empty", out, progress=False)
    (tmp_path / "bad.json").write_text('{"images": [{"file_name": "a.jpg"}]}')
    with pytest.raises(InputError, match="COCO-style"):
        embed_images(model_id, tmp_path / "bad.json", out, progress=False)
    with pytest.raises(InputError, match="--engine ray"):
        embed_images(model_id, jpegs, out, address="ray://10.0.0.1:10001", progress=False)
    with pytest.raises(UnknownNameError, match="engine"):
        embed_images(model_id, jpegs, out, engine="dask", progress=False)
    with pytest.raises(InputError, match="workers"):
        embed_images(model_id, jpegs, out, workers=-1, progress=False)
    with pytest.raises(InputError, match="shard_size"):
        embed_images(model_id, jpegs, out, shard_size=0, progress=False)
    with pytest.raises(InputError, match="cannot embed images"):
        text_only = tmp_path / "t.parquet"
        pd.DataFrame({"query_text": ["a"], "embedding": [[1.0, 0.0]]}).to_parquet(text_only)
        embed_images(f"precomputed:{text_only}", jpegs, out, progress=False)
    foreign = tmp_path / "foreign"
    (foreign / "img_emb").mkdir(parents=True)
    np.save(foreign / "img_emb" / "img_emb_0.npy", np.zeros((1, 4), np.float16))
    with pytest.raises(InputError, match=r"no manifest\.json"):
        embed_images(model_id, jpegs, foreign, progress=False)
    # Weights that are not in the (empty) cache while downloads are off: a clear error, fast.
    with use_hf_home(tmp_path / "hf"), pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        load_encoder("vit-b-32")


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted_run(model_id, tmp_path):
    """The real thing: ``inquire embed`` killed with SIGKILL mid-run, then run again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    images = tmp_path / "images"
    write_jpegs(images, 300, size=32)
    ref, out = tmp_path / "ref", tmp_path / "out"
    embed_images(model_id, images, ref, batch_size=2, shard_size=10, workers=0, progress=False)
    cmd = [sys.executable, "-m", "inquire", "embed", "--model", model_id, "--images", str(images)]
    cmd += ["--out", str(out), "--batch-size", "2", "--shard-size", "10", "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    done = len(json.loads(manifest.read_text())["shards"])
    assert 3 <= done < 30
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "300 embeddings in 30 shard(s)" in res.stderr
    emb, meta = _read(out)
    ref_emb, ref_meta = _read(ref)
    np.testing.assert_array_equal(emb, ref_emb)
    pd.testing.assert_frame_equal(meta, ref_meta)
    assert not list(out.rglob(".*.tmp"))


def test_hf_clip_model_through_the_pipeline(jpegs, tmp_path):
    from inquire.testing.embed_models import make_tiny_hf_clip, use_hf_home

    home = tmp_path / "hf"
    hf_id = make_tiny_hf_clip(home)
    with use_hf_home(home):
        enc = load_encoder(hf_id, precision="bf16", batch_size=3)
        with pytest.raises(InputError, match="precision='fp32' asked for"):
            embed_images(enc, jpegs, tmp_path / "x", precision="fp32", progress=False)
        out = tmp_path / "out"
        s = embed_images(enc, jpegs, out, batch_size=8, shard_size=16, workers=2, progress=False)
    assert s.count == 25
    man = json.loads((out / "manifest.json").read_text())
    assert (man["model_id"], man["revision"], man["precision"]) == (hf_id, "2" * 40, "bf16")
    assert man["preprocessing"]["processor"]["crop_size"] == {"height": 32, "width": 32}
    emb, meta = _read(out)
    ref = enc.encode_images([jpegs / p for p in meta["image_path"]])
    np.testing.assert_allclose(emb.astype(np.float32), ref, atol=2e-3)
