"""Regression tests for defects found while reading the code base module by module."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest


class _FakeEncoder:
    """A deterministic text encoder with a pinned revision (enough for the text cache)."""

    model_id = "fake:text"
    revision = "r1"
    precision = "fp32"
    dim = 4

    def encode_text(self, texts: list[str]) -> np.ndarray:
        out = np.array([[len(t), 1.0, 0.0, 0.0] for t in texts], np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_images(self, images: list[object]) -> np.ndarray:
        raise NotImplementedError


def test_text_cache_closes_its_sqlite_connection(tmp_path: Path, monkeypatch) -> None:
    from inquire.embed import text_cache

    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        con = real_connect(*args, **kwargs)
        opened.append(con)
        return con

    monkeypatch.setattr(sqlite3, "connect", connect)
    db = tmp_path / "t.sqlite"
    first = text_cache.text_embeddings(_FakeEncoder(), ["a", "bb"], path=db)
    again = text_cache.text_embeddings(_FakeEncoder(), ["bb"], path=db)
    np.testing.assert_array_equal(again[0], first[1])
    assert len(opened) == 2
    for con in opened:
        with pytest.raises(sqlite3.ProgrammingError):  # closed, not merely committed
            con.execute("SELECT 1")


def _eval_result(k: int):
    import pandas as pd

    from inquire.eval.evaluate import EvalResult

    per_query = pd.DataFrame(
        {"query_id": [1], "ap": [0.5], "ndcg": [0.5], "mrr": [1.0], "precision": [0.1]}
        | {"recall": [0.5], "supercategory": ["A"], "category": ["B"], "iconic_group": ["C"]}
    )
    return EvalResult(per_query=per_query, k=k)


def test_rerank_failures_file_is_written_atomically(tmp_path: Path, monkeypatch) -> None:
    import pandas as pd

    from inquire.eval.rerank import FAILURES_FILE, RerankResult
    from inquire.run import Run

    failures = pd.DataFrame({"query_id": [1], "image_id": [7], "query_text": ["q"]})
    res = RerankResult(_eval_result(100), _eval_result(50), Run({1: ([7], [0.1])}), failures)
    out = tmp_path / "res"
    res.save(out)
    before = (out / FAILURES_FILE).read_text()
    assert "7" in before

    real_to_csv = pd.DataFrame.to_csv

    def broken_to_csv(self, path_or_buf=None, *args, **kwargs):
        if "query_text" not in self.columns:
            return real_to_csv(self, path_or_buf, *args, **kwargs)
        if hasattr(path_or_buf, "write"):
            path_or_buf.write("query_id,ima")
        else:
            Path(path_or_buf).write_text("query_id,ima")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    with pytest.raises(OSError, match="disk full"):
        res.save(out)
    assert (out / FAILURES_FILE).read_text() == before  # never half-written


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path: Path, mask: int) -> None:
    import os
    import stat

    from inquire._io import atomic_open, write_json

    old = os.umask(mask)
    try:
        with atomic_open(tmp_path / "a.csv", "w") as fh:
            fh.write("x\n")
        write_json(tmp_path / "b.json", {"x": 1})
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x\n")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~mask
    for name in ("a.csv", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_fullrank_joins_paths_with_the_stores_own_rule(tmp_path: Path) -> None:
    """Annotations and embedding metadata join on one path key everywhere (any image
    extension, leading ./, backslashes), as EmbeddingStore.ids_for_paths does."""
    from inquire.embed.store import EmbeddingStore
    from inquire.eval.fullrank import UNANNOTATED_ID_BASE, image_ids_by_path
    from inquire.testing.search_stores import random_unit, write_store

    root = write_store(
        tmp_path / "emb",
        random_unit(3, 8),
        paths=["train/a/1", "train/a/2", "train/b/3"],
        with_image_id=False,
    )
    store = EmbeddingStore(root)
    annotated = {101: "train/a/1.JPEG", 102: "./train\\a\\2.png"}
    ids = image_ids_by_path(store, annotated)
    assert ids.tolist() == [101, 102, UNANNOTATED_ID_BASE + 2]
    # The store's own lookup agrees with the full-rank join.
    by_store = store.ids_for_paths(list(annotated.values()))
    assert [int(ids[i]) for i in by_store] == [101, 102]


def test_annotations_with_whole_float_ids_load(tmp_path: Path) -> None:
    from inquire.data.qrels import read_qrels
    from inquire.errors import InputError

    path = tmp_path / "a.csv"
    path.write_text("query_id,image_id,image_path\n1,5.0,a.jpg\n1,6,b.jpg\n2.0,7.0,c.jpg\n")
    qrels = read_qrels(path)
    assert dict(qrels) == {1: frozenset({5, 6}), 2: frozenset({7})}
    path.write_text("query_id,image_id\n1,5.5\n")
    with pytest.raises(InputError, match=r"'5\.5' on row 2"):
        read_qrels(path)
    path.write_text("query_id,image_id\n1,5\n2,\n")
    with pytest.raises(InputError, match="an empty cell on row 3"):
        read_qrels(path)


def test_vlm_reranker_checks_device_before_loading() -> None:
    """A device that does not exist fails clearly (not as a torch error after loading)."""
    import torch

    from inquire.errors import InputError
    from inquire.rerank.vlm import FAMILIES, VLMReranker

    missing_gpu = f"cuda:{torch.cuda.device_count()}"
    for device in ("gpu0", missing_gpu):
        with pytest.raises(InputError, match="device"):
            VLMReranker(FAMILIES["llava-1.5"], "no/such-model", device=device)


def test_eval_fullrank_passes_device_precision_batch_size_and_short_options(
    tmp_path: Path, monkeypatch
) -> None:
    """`inquire eval fullrank` loads its text model with the options given (they used to be
    dropped: the model always ran on cpu in fp32), and takes -m/-k/-o like other commands."""
    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import models

    bench = make_synthetic_benchmark(tmp_path / "b", n_images=1200, dim=16, n_val=2, n_test=4)
    seen: dict[str, object] = {}
    real = models.load_encoder

    def spy(model_id: str, **kwargs):
        seen.update(kwargs)
        return real(model_id, **kwargs)

    monkeypatch.setattr(models, "load_encoder", spy)
    out = tmp_path / "res"
    args = [
        "eval", "fullrank", "-m", f"precomputed:{bench.text_embeddings}",
        "--embeddings", str(bench.embeddings), "--queries", str(bench.queries_test),
        "--annotations", str(bench.annotations), "-k", "10", "-o", str(out),
        "--device", "cpu", "--precision", "fp16", "--batch-size", "7",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert seen == {"device": "cpu", "precision": "fp16", "batch_size": 7}
    assert (out / "per_query.csv").is_file()


def test_cli_spells_shared_options_alike() -> None:
    """Every --k/--out/--model option also answers to -k/-o/-m (where the command has it),
    and a reranker id is --rerank everywhere."""
    import typer

    from inquire.cli import app

    short = {"--k": "-k", "--out": "-o", "--model": "-m", "--reranker": "--rerank"}
    missing = []

    def walk(cmd, path):
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, [*path, name])
        for p in cmd.params:
            for long, s in short.items():
                if long in getattr(p, "opts", []) and s not in p.opts:
                    missing.append(f"inquire {' '.join(path)} {long}")

    walk(typer.main.get_command(app), [])
    assert missing == ["inquire demo --out"]  # demo's option is not this module's to change


def test_report_compare_is_never_silently_dropped(tmp_path: Path) -> None:
    """`inquire report --compare` used to vanish from terminal text written with --out, and
    from csv/latex output and single-run reports, without a word."""
    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.testing.report_results import make_result

    dirs = []
    for name, ap in (("a", [0.1, 0.2, 0.3, 0.4]), ("b", [0.5, 0.6, 0.7, 0.9])):
        dirs.append(str(make_result(name, {"ap": ap}).save(tmp_path / name)))
    runner = CliRunner()
    out = tmp_path / "report.txt"
    res = runner.invoke(app, ["report", *dirs, "--compare", "--bootstrap", "50", "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "Overall" in text and "Holm" in text  # the report, then the paired tests

    for args in ([*dirs, "-f", "csv"], [*dirs, "-f", "latex"], [dirs[0]]):
        res = runner.invoke(app, ["report", *args, "--compare", "--bootstrap", "0"])
        assert res.exit_code == 2, res.output
        assert "--compare" in res.output


def test_one_metric_label_table_serves_tables_plots_and_the_web_page() -> None:
    from inquire.metrics import METRICS, metric_label
    from inquire.report import plots
    from inquire.report.table import metrics_table
    from inquire.testing.report_results import make_result
    from inquire.web import catalog

    assert [metric_label(m, 50) for m in ("ap", "ndcg", "mrr", "precision", "recall")] == [
        "AP@50", "nDCG@50", "MRR", "P@50", "R@50",
    ]  # fmt: skip
    assert metric_label("trec_ap", 10) == "trec_ap@10"
    assert plots.metric_label is metric_label and catalog.metric_label is metric_label
    result = make_result("r", {"ap": [0.5, 0.25]}, k=20)
    headers = [c.header for c in metrics_table(result).columns][2:]
    assert headers == [metric_label(m, 20) for m in result.metrics]
    assert set(result.metrics) <= set(METRICS)


def test_verify_page_images_stay_under_the_collection_folder(tmp_path: Path) -> None:
    """The verify page's image route resolves files like every other image route: a photo
    replaced by a symlink out of the collection folder, or by a non-image, is refused."""
    from inquire.collection import create_collection
    from inquire.testing.collection_encoder import make_photo_folder
    from inquire.testing.web_client import page_client
    from inquire.web.verify import make_app

    photos = tmp_path / "photos"
    make_photo_folder(photos, n=4, seed=1)
    coll, _ = create_collection("sym", photos, "toy:colour", root=tmp_path / "cols")
    images = coll.images()
    coll.close()
    client = page_client(make_app(tmp_path / "cols"))
    first, second = (int(i) for i in images["image_id"][:2])
    ok = client.get(f"/verify/api/c/sym/images/{first}")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
    assert client.get(f"/verify/api/c/sym/images/{first}?size=32").status_code == 200

    outside = tmp_path / "outside.jpg"
    outside.write_bytes(Path(images["abspath"][0]).read_bytes())
    target = Path(images["abspath"][0])
    target.unlink()
    target.symlink_to(outside)
    assert client.get(f"/verify/api/c/sym/images/{first}").status_code == 403

    Path(images["abspath"][1]).write_text("not an image")
    assert client.get(f"/verify/api/c/sym/images/{second}").status_code == 415


def test_web_page_names_published_embedding_rows_by_their_annotated_ids(tmp_path: Path) -> None:
    """INQUIRE's published embeddings have no image_id: full-rank runs name their rows by the
    annotations' ids (joined on image_path). The page must do the same, or /images/X shows the
    image of row X and free-text search returns row numbers."""
    from PIL import Image

    from inquire.testing.search_stores import random_unit, write_store
    from inquire.testing.web_client import page_client
    from inquire.web.app import create_app
    from inquire.web.config import WebConfig

    vecs = random_unit(3, 8, seed=3)
    emb = write_store(
        tmp_path / "emb", vecs, paths=[f"train/x/r{i}" for i in range(3)], with_image_id=False
    )
    images = tmp_path / "images"
    (images / "train" / "x").mkdir(parents=True)
    for i, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (8, 8), colour).save(images / "train" / "x" / f"r{i}.jpg")
    ann = tmp_path / "ann.csv"
    ann.write_text("query_id,image_id,image_path\n1,0,train/x/r2.jpg\n1,7,train/x/r0.jpg\n")

    class RowEncoder:
        model_id, revision, dim = "test:row2", "r", 8

        def encode_text(self, texts: list[str]) -> np.ndarray:
            return np.repeat(vecs[2:3].astype(np.float32), len(texts), axis=0)

        def encode_images(self, images: list[object]) -> np.ndarray:
            raise NotImplementedError

    config = WebConfig(image_roots=[images], annotations=[ann], embeddings=emb, model=RowEncoder())
    client = page_client(create_app(config))
    served = client.get("/images/0")
    assert served.status_code == 200
    expected = (images / "train" / "x" / "r2.jpg").read_bytes()
    assert served.content == expected  # annotated image 0 is row 2, not row 0
    top = client.get("/api/search", params={"q": "blue", "k": 3}).json()["results"]
    assert top[0]["image_id"] == 0  # row 2, under its annotated id
    assert {r["image_id"] for r in top} == {0, 7, 10**12 + 1}  # row 1 is not annotated


def _tiny_rerank_shard(path: Path) -> Path:
    """Two queries of two candidates in the upstream INQUIRE-Rerank columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 4
    table = pa.table(
        {
            "image": pa.array([{"bytes": b"x", "path": "p"}] * n),
            "query": ["a fox", "a fox", "a toad", "a toad"],
            "relevant": [1, 0, 0, 1],
            "clip_score": [0.4, 0.3, 0.2, 0.1],
            "inat24_image_id": [1, 2, 3, 4],
            "inat24_file_name": [f"train/{i}.jpg" for i in range(n)],
            "supercategory": ["Appearance", "Appearance", " Context ", " Context "],
            "category": ["Health", "Health", "", ""],
            "iconic_group": [" ", " ", None, None],
        }
    )
    pq.write_table(table, path)
    return path


def test_rerank_set_groups_follow_the_query_table_rule(tmp_path: Path) -> None:
    """Blank or missing groups in INQUIRE-Rerank shards become UNKNOWN_GROUP, as they do in
    the query CSVs (a blank string used to stay a group of its own)."""
    from inquire.data.queries import UNKNOWN_GROUP
    from inquire.data.rerank_set import read_rerank_set

    path = _tiny_rerank_shard(tmp_path / "test-00000-of-00001.parquet")
    queries = read_rerank_set([path]).queries.set_index("query_text")
    assert queries.loc["a fox", "iconic_group"] == UNKNOWN_GROUP
    assert queries.loc["a toad", "iconic_group"] == UNKNOWN_GROUP
    assert queries.loc["a toad", "category"] == UNKNOWN_GROUP
    assert queries.loc["a toad", "supercategory"] == "Context"


def test_eval_rerank_closes_its_score_cache(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.rerank import cache as cache_mod

    closed: list[bool] = []

    class Spy(cache_mod.ScoreCache):
        def close(self) -> None:
            closed.append(True)
            super().close()

    monkeypatch.setattr(cache_mod, "ScoreCache", Spy)
    path = _tiny_rerank_shard(tmp_path / "test-00000-of-00001.parquet")
    args = ["eval", "rerank", "--rerank", "cached:none", "--data", str(path)]
    res = CliRunner().invoke(app, [*args, "--allow-failures"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, args)  # every candidate fails: the error path closes it too
    assert res.exit_code == 2 and "--allow-failures" in res.output
    assert closed == [True, True]


def test_reranker_scores_are_cached_per_precision(tmp_path: Path) -> None:
    """A bf16 run must not read scores cached by the fp32 run of the same model (or back)."""
    from inquire.rerank.cache import ScoreCache, reranker_key, score_candidates

    class Scorer:
        reranker_id, revision, prompt_version = "test:m", "rev1", "p1"
        needs_images = False

        def __init__(self, precision: str, value: float) -> None:
            self.precision, self.value, self.calls = precision, value, 0

        def score(self, query_text: str, images: list[object]) -> np.ndarray:
            self.calls += 1
            return np.full(len(images), self.value)

    full, half = Scorer("fp32", 0.25), Scorer("bf16", 0.75)
    assert reranker_key(full).values == ("test:m", "rev1", "fp32", "p1")
    assert reranker_key(half).values == ("test:m", "rev1", "bf16", "p1")
    with ScoreCache(tmp_path / "s.sqlite") as cache:
        assert score_candidates(full, "q", [1, 2], [None, None], cache=cache).tolist() == [
            0.25, 0.25,
        ]  # fmt: skip
        assert score_candidates(half, "q", [1, 2], [None, None], cache=cache).tolist() == [
            0.75, 0.75,
        ]  # fmt: skip
        again = score_candidates(Scorer("fp32", 9.0), "q", [1, 2], [None, None], cache=cache)
    assert again.tolist() == [0.25, 0.25] and full.calls == half.calls == 1


def test_topk_cache_is_keyed_by_text_model_precision(tmp_path: Path) -> None:
    from inquire.data.queries import read_queries
    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import EmbeddingStore, load_encoder
    from inquire.eval.fullrank import fullrank_topk

    bench = make_synthetic_benchmark(tmp_path / "b", n_images=1200, dim=16, n_val=2, n_test=4)
    queries = read_queries(bench.queries_test)
    store = EmbeddingStore(bench.embeddings)
    enc = load_encoder(f"precomputed:{bench.text_embeddings}")
    enc.revision = "pinned"
    calls: list[int] = []
    real = enc.encode_text
    enc.encode_text = lambda texts: calls.append(len(texts)) or real(texts)  # type: ignore[method-assign]
    fullrank_topk(enc, queries, store, 10)
    fullrank_topk(enc, queries, store, 10)  # cached
    enc.precision = "fp16"
    fullrank_topk(enc, queries, store, 10)  # another precision: searched again
    assert calls == [4, 4]


def test_rerankers_see_images_decoded_like_the_embedding_models(tmp_path: Path) -> None:
    """EXIF orientation and transparency: the reranker's picture equals the encoder's."""
    from PIL import Image

    from inquire.embed.images import open_image
    from inquire.rerank.base import load_image

    img = Image.new("RGB", (40, 20), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90 degrees
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    for source in (path, str(path), path.read_bytes()):
        assert load_image(source).size == open_image(path).size == (20, 40)
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(clear).getpixel((0, 0)) == (255, 255, 255)


# uvicorn ends its thread with SystemExit when it cannot bind; that is the case under test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_web_server_on_a_busy_port_says_how_to_fix_it() -> None:
    import socket

    from fastapi import FastAPI

    from inquire.errors import InputError
    from inquire.web.server import BackgroundServer

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match="another --port"):
            BackgroundServer(FastAPI(), port=port, timeout_s=10).start()


def test_topk_cache_keys_the_index_parameters_really_in_use(tmp_path: Path) -> None:
    """faiss keeps search parameters on the index: a later search without parameters still
    uses them, so the cache must not file its lists under "no parameters"."""
    from inquire.data.queries import read_queries
    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import EmbeddingStore, load_encoder
    from inquire.eval.fullrank import fullrank_topk
    from inquire.index.ann import AnnIndex, build_index

    bench = make_synthetic_benchmark(tmp_path / "b", n_images=1200, dim=16, n_val=2, n_test=4)
    queries = read_queries(bench.queries_test)
    store = EmbeddingStore(bench.embeddings)
    build_index(store, "IVF8,Flat", name="ivf")
    enc = load_encoder(f"precomputed:{bench.text_embeddings}")
    enc.revision = "pinned"
    calls: list[int] = []
    real = enc.encode_text
    enc.encode_text = lambda texts: calls.append(len(texts)) or real(texts)  # type: ignore[method-assign]
    ix = AnnIndex.load(store, "ivf")
    fullrank_topk(enc, queries, store, 10, index=ix, index_params={"nprobe": 1})
    fullrank_topk(enc, queries, store, 10, index=ix)  # still nprobe=1: the same cached lists
    assert len(calls) == 1 and ix.params == {"nprobe": 1.0}
    fresh = AnnIndex.load(store, "ivf")  # faiss defaults: another searcher, searched again
    fullrank_topk(enc, queries, store, 10, index=fresh)
    assert len(calls) == 2


def test_verify_page_thumbnails_are_upright_and_cached(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from inquire.collection import create_collection
    from inquire.config import cache_dir
    from inquire.testing.web_client import page_client
    from inquire.web.verify import make_app

    photos = tmp_path / "photos"
    photos.mkdir()
    img = Image.new("RGB", (64, 32), "green")
    exif = img.getexif()
    exif[0x0112] = 6  # a phone photo taken upright, stored sideways
    img.save(photos / "phone.jpg", exif=exif.tobytes())
    coll, _ = create_collection("rot", photos, "toy:colour", root=tmp_path / "cols")
    image_id = int(coll.images()["image_id"].iloc[0])
    coll.close()
    client = page_client(make_app(tmp_path / "cols"))
    res = client.get(f"/verify/api/c/rot/images/{image_id}?size=32")
    assert res.status_code == 200
    assert Image.open(io.BytesIO(res.content)).size == (16, 32)  # upright, longest side 32
    assert any(cache_dir("web", "thumbs").rglob("*.jpg"))
    assert client.get(f"/verify/api/c/rot/images/{image_id}?size=4").status_code == 422
