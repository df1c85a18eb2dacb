"""End to end with a real (tiny, random-weight) open_clip model: ``inquire embed`` over a
plain folder of JPEGs -> ``inquire eval fullrank`` -> two-stage with the CLIP reranker of the
same model -> free-text search in the web app.

Every step is checked against a plain numpy computation over the files the previous step
wrote: the search against a brute-force top-k over the embedding shards with the model's own
text embeddings, the reranker's scores against the cosine of the model's image and text
embeddings, the web search against :func:`inquire.index.exact.search`.

The images are embedded from ``images/train`` itself, so the embeddings record
``synthetic_{id}.jpg`` and no image ids, while the annotations say
``train/synthetic_{id}.jpg``: the evaluation must join the two on the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data.qrels import read_qrels
from inquire.data.queries import read_queries
from inquire.data.synthetic import SyntheticBenchmark, make_synthetic_benchmark
from inquire.embed import EmbeddingStore, load_encoder
from inquire.errors import InputError
from inquire.eval.fullrank import UNANNOTATED_ID_BASE, image_ids_by_path
from inquire.index.exact import search
from inquire.run import Run
from inquire.testing.embed_models import make_tiny_open_clip

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


class World:
    bench: SyntheticBenchmark
    model: str
    emb: Path
    images: Path
    home: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("e2e_embed")
    w = World()
    w.bench = make_synthetic_benchmark(
        root / "bench",
        n_images=600,
        dim=16,
        n_val=2,
        n_test=1,
        n_shards=1,
        write_images=True,
        image_size=32,
    )
    assert w.bench.images is not None
    w.images = w.bench.images / "train"
    w.model = make_tiny_open_clip(root / "model")
    w.emb = root / "EMB"
    w.home = root / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("INQUIRE_HOME", str(w.home))
    try:
        res = runner.invoke(
            app,
            [
                "embed",
                "--model",
                w.model,
                "--images",
                str(w.images),
                "--out",
                str(w.emb),
                "--workers",
                "0",
                "--batch-size",
                "64",
                "--shard-size",
                "250",
            ],
        )
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    return w


@pytest.fixture
def home(world: World, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The module's cache folder (text-embedding and top-k caches shared by its tests)."""
    monkeypatch.setenv("INQUIRE_HOME", str(world.home))
    return world.home


def _shards(emb: Path) -> tuple[np.ndarray, list[str]]:
    """All embedding rows (float32) and their metadata paths, shard by shard, in order."""
    n = len(list((emb / "img_emb").glob("img_emb_*.npy")))
    vecs = [np.load(emb / "img_emb" / f"img_emb_{i}.npy").astype(np.float32) for i in range(n)]
    paths: list[str] = []
    for i in range(n):
        meta = pq.read_table(emb / "metadata" / f"metadata_{i}.parquet").to_pandas()
        assert "image_id" not in meta.columns  # a plain folder: ids unknown
        paths += meta["image_path"].tolist()
    return np.concatenate(vecs), paths


def _synthetic_id(path: str) -> int:
    return int(Path(path).stem.removeprefix("synthetic_"))


def _file_of(image_id: int, paths: list[str]) -> str:
    """The file of a run's image id: annotated ids are synthetic ids, others base + row."""
    if image_id >= UNANNOTATED_ID_BASE:
        return paths[image_id - UNANNOTATED_ID_BASE]
    return f"synthetic_{image_id}.jpg"


def _assert_same_ranking(ids, scores, ref_ids, ref_scores, tol: float) -> None:
    """Same scores rank by rank; same ids except where neighbouring scores are within tol."""
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=tol)
    gaps = np.abs(np.diff(np.asarray(ref_scores, np.float64)))
    near = np.zeros(len(ref_ids), bool)
    near[:-1] |= gaps <= 2 * tol
    near[1:] |= gaps <= 2 * tol
    np.testing.assert_array_equal(np.asarray(ids)[~near], np.asarray(ref_ids)[~near])
    assert set(np.asarray(ids)[near].tolist()) == set(np.asarray(ref_ids)[near].tolist())


def _ap(ranked: np.ndarray, relevant: frozenset[int], k: int) -> float:
    hits, total = 0, 0.0
    for i, x in enumerate(ranked[:k], start=1):
        if int(x) in relevant:
            hits += 1
            total += hits / i
    return total / min(len(relevant), k)


def test_embed_wrote_every_image_in_shards(world: World) -> None:
    vecs, paths = _shards(world.emb)
    files = sorted(p.name for p in world.images.glob("*.jpg"))
    assert sorted(paths) == files and len(files) == 600
    assert len(list((world.emb / "img_emb").glob("*.npy"))) == 3  # 600 / 250
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=2e-3)


@pytest.mark.parametrize("k", [10, 600])
def test_fullrank_equals_brute_force_and_joins_on_paths(
    world: World, home: Path, tmp_path: Path, k: int
) -> None:
    out = tmp_path / "R1"
    res = runner.invoke(
        app,
        [
            "eval",
            "fullrank",
            "--model",
            world.model,
            "--embeddings",
            str(world.emb),
            "--queries",
            str(world.bench.queries_val),
            "--annotations",
            str(world.bench.annotations),
            "--k",
            str(k),
            "--out",
            str(out),
        ],
        env=WIDE,
    )
    assert res.exit_code == 0, res.output
    run = Run.read(out / "run.parquet")
    queries = read_queries(world.bench.queries_val)
    qrels = read_qrels(world.bench.annotations)

    enc = load_encoder(world.model)
    text = enc.encode_text(queries["query_text"].tolist())
    vecs, paths = _shards(world.emb)
    # annotated images take their annotated id; the others a distinct id of their row
    annotated = set(qrels.paths)
    ids_of_row = np.array(
        [
            _synthetic_id(p) if _synthetic_id(p) in annotated else UNANNOTATED_ID_BASE + row
            for row, p in enumerate(paths)
        ],
        np.int64,
    )
    assert 0 < sum(i < UNANNOTATED_ID_BASE for i in ids_of_row) < len(paths)
    scores = text.astype(np.float64) @ vecs.astype(np.float64).T
    per_query = pd.read_csv(out / "per_query.csv").set_index("query_id")
    for qi, qid in enumerate(queries["query_id"]):
        # score descending, ties by store row (the store's id)
        order = np.lexsort((np.arange(len(paths)), -scores[qi]))[:k]
        got_ids, got_scores = run[int(qid)]
        # the run speaks the annotations' ids, found by joining on the image path
        _assert_same_ranking(got_ids, got_scores, ids_of_row[order], scores[qi][order], 1e-5)
        relevant = qrels[int(qid)]
        assert per_query.loc[qid, "ap"] == pytest.approx(_ap(got_ids, relevant, k), abs=1e-9)
        hits = np.isin(got_ids, list(relevant)).sum()
        assert per_query.loc[qid, "precision"] == pytest.approx(hits / k)
        if k == len(paths):
            # the whole collection ranked: every relevant image was found through the join
            assert per_query.loc[qid, "recall"] == 1.0


def test_two_stage_clip_reranker_is_consistent_with_the_first_stage(
    world: World, home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "R2"
    res = runner.invoke(
        app,
        [
            "eval",
            "fullrank",
            "--model",
            world.model,
            "--embeddings",
            str(world.emb),
            "--queries",
            str(world.bench.queries_val),
            "--annotations",
            str(world.bench.annotations),
            "--k",
            "10",
            "--rerank",
            f"clip:{world.model}",
            "--from-k",
            "20",
            "--images",
            str(world.images),
            "--out",
            str(out),
        ],
        env=WIDE,
    )
    assert res.exit_code == 0, res.output
    assert "Two-stage" in res.output
    first = Run.read(out / "run.parquet")
    second = Run.read(out / "two_stage" / "run.parquet")
    queries = read_queries(world.bench.queries_val)
    enc = load_encoder(world.model)
    text = enc.encode_text(queries["query_text"].tolist())
    _, paths = _shards(world.emb)
    for qi, qid in enumerate(queries["query_id"]):
        f_ids, f_scores = first[int(qid)]
        s_ids, s_scores = second[int(qid)]
        assert len(f_ids) == 20
        assert sorted(s_ids.tolist()) == sorted(f_ids.tolist())
        # the reranker's score is the cosine of the model's own image and text embeddings
        files = [world.images / _file_of(int(i), paths) for i in s_ids]
        cos = enc.encode_images(files).astype(np.float64) @ text[qi].astype(np.float64)
        np.testing.assert_allclose(s_scores, cos, rtol=0, atol=1e-5)
        # ... and agrees with the first-stage score from the float16 shards
        first_score = dict(zip(f_ids.tolist(), f_scores.tolist(), strict=True))
        diff = np.abs(s_scores - np.array([first_score[int(i)] for i in s_ids]))
        assert diff.max() < 2e-3
        # so the reranked order is the first-stage order, up to near-ties
        fs = np.array([first_score[int(i)] for i in s_ids])
        for a in range(len(fs)):
            for b in range(a + 1, len(fs)):
                assert fs[a] >= fs[b] - 2 * float(diff.max()) - 1e-9, (qid, a, b)


def test_web_search_with_a_real_model_id(world: World, home: Path) -> None:
    from inquire.testing.web_client import page_client
    from inquire.web import WebConfig
    from inquire.web.app import create_app

    app_ = create_app(
        WebConfig(embeddings=world.emb, model=world.model, image_roots=[world.images])
    )
    text = "a bird perched on a branch"
    enc = load_encoder(world.model)
    want_scores, want_ids = search(EmbeddingStore(world.emb), enc.encode_text([text]), 12)
    with page_client(app_) as client:
        res = client.get("/api/search", params={"q": text, "k": 12})
        assert res.status_code == 200, res.text
        items = res.json()["results"]
        assert [it["image_id"] for it in items] == want_ids[0].tolist()
        np.testing.assert_allclose([it["score"] for it in items], want_scores[0], atol=1e-6)
        page = client.get("/search", params={"q": text, "k": 12})
        assert page.status_code == 200
        _, paths = _shards(world.emb)
        for it in items[:4]:
            assert it["thumb_url"] in page.text  # the page's grid shows the same images
            for url in (it["thumb_url"], f"/images/{it['image_id']}"):
                img = client.get(url)
                assert img.status_code == 200, (url, img.text)
                assert img.headers["content-type"].startswith("image/")
                assert img.content[:3] == b"\xff\xd8\xff"  # JPEG
            full = client.get(f"/images/{it['image_id']}").content
            assert full == (world.images / paths[it["image_id"]]).read_bytes()


# --- the path join on its own ----------------------------------------------------------------


def _store(root: Path, paths: list[str]) -> EmbeddingStore:
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    vecs = np.eye(len(paths), 4, dtype=np.float16)
    np.save(root / "img_emb" / "img_emb_0.npy", vecs)
    pd.DataFrame({"image_path": paths}).to_parquet(root / "metadata" / "metadata_0.parquet")
    return EmbeddingStore(root)


def test_path_join_aligns_trailing_components(tmp_path: Path) -> None:
    ann = {11: "train/01_Aves/a.jpg", 12: "train/02_Mammalia/b.jpg", 13: "train/01_Aves/zz.jpg"}
    # embedded train/ itself: one component fewer; ".jpg" kept or not
    ids = image_ids_by_path(
        _store(tmp_path / "a", ["01_Aves/a.jpg", "02_Mammalia/b", "x/c.jpg"]), ann
    )
    assert ids.tolist() == [11, 12, UNANNOTATED_ID_BASE + 2]
    # embedded the folder above: one component more
    ids = image_ids_by_path(_store(tmp_path / "b", ["inat/train/01_Aves/a", "inat/x/q.jpg"]), ann)
    assert ids.tolist() == [11, UNANNOTATED_ID_BASE + 1]
    # as they are (INQUIRE's published layout)
    ids = image_ids_by_path(_store(tmp_path / "c", ["train/02_Mammalia/b"]), ann)
    assert ids.tolist() == [12]


def test_path_join_never_matches_ambiguous_names(tmp_path: Path) -> None:
    # two annotated images share the file name: after dropping the folders, "a" is ambiguous
    ann = {1: "train/x/a.jpg", 2: "train/y/a.jpg", 3: "train/y/b.jpg"}
    ids = image_ids_by_path(_store(tmp_path / "a", ["a.jpg", "b.jpg"]), ann)
    assert ids.tolist() == [UNANNOTATED_ID_BASE, 3]
    with pytest.raises(InputError, match="different collections"):
        image_ids_by_path(_store(tmp_path / "b", ["q.jpg"]), ann)


def test_web_shows_the_right_images_of_a_run_over_a_store_without_ids(
    world: World, home: Path, tmp_path: Path
) -> None:
    """A run over a store without image ids speaks the annotations' ids (joined on paths);
    the page must show each id's own image, mark relevance by the annotations, and search
    must name images the same way."""
    from inquire.testing.web_client import page_client
    from inquire.web import WebConfig
    from inquire.web.app import create_app

    out = tmp_path / "R"
    res = runner.invoke(
        app,
        [
            *("eval", "fullrank", "--model", world.model, "--embeddings", str(world.emb)),
            *("--queries", str(world.bench.queries_val)),
            *("--annotations", str(world.bench.annotations), "--k", "600", "--out", str(out)),
        ],
    )
    assert res.exit_code == 0, res.output
    qrels = read_qrels(world.bench.annotations)
    _, paths = _shards(world.emb)
    config = WebConfig(
        results=[out],
        embeddings=world.emb,
        model=world.model,
        annotations=[world.bench.annotations],
        queries=[world.bench.queries_val],
        image_roots=[world.images],
        max_k=600,
    )
    qid = int(read_queries(world.bench.queries_val)["query_id"].iloc[0])
    with page_client(create_app(config)) as client:
        (run,) = client.get("/api/runs").json()
        grid = client.get(f"/api/runs/{run['slug']}/queries/{qid}", params={"k": 600})
        assert grid.status_code == 200, grid.text
        items = grid.json()["results"]
        assert [it["relevant"] for it in items] == [it["image_id"] in qrels[qid] for it in items]
        assert sum(it["relevant"] for it in items) == len(qrels[qid])
        shown = [it for it in items if it["relevant"]][:3] + [it for it in items[:3]]
        for it in shown:
            img = client.get(f"/images/{it['image_id']}")
            assert img.status_code == 200, (it, img.text)
            assert img.content == (world.images / _file_of(it["image_id"], paths)).read_bytes()
            assert client.get(it["thumb_url"]).status_code == 200
        # free-text search names the same images with the same ids as the run
        text = "a bird perched on a branch"
        enc = load_encoder(world.model)
        _, rows = search(EmbeddingStore(world.emb), enc.encode_text([text]), 600)
        found = client.get("/api/search", params={"q": text, "k": 600}).json()["results"]
        want = [
            _synthetic_id(paths[r])
            if _synthetic_id(paths[r]) in qrels.paths
            else UNANNOTATED_ID_BASE + int(r)
            for r in rows[0]
        ]
        assert [it["image_id"] for it in found] == want


def _json_list(output: str) -> list[dict[str, Any]]:
    """The JSON array a command printed (progress lines may come before it)."""
    import json

    return list(json.loads(output[output.index("[\n") :]))


def test_collection_search_with_a_real_model_id(world: World, home: Path) -> None:
    """``inquire collection create`` + ``inquire search`` with the tiny open_clip model: the
    ranking is a brute-force cosine ranking of the model's own embeddings of the files, and
    ``--rerank clip:<same model>`` scores are exactly those cosines."""
    res = runner.invoke(
        app, ["collection", "create", "e2e", "--images", str(world.images), "--model", world.model]
    )
    assert res.exit_code == 0, res.output
    text = "a bird perched on a branch"
    res = runner.invoke(app, ["search", "e2e", text, "-k", "10", "--json"])
    assert res.exit_code == 0, res.output
    hits = _json_list(res.output)

    enc = load_encoder(world.model)
    files = sorted(world.images.glob("*.jpg"))
    cos = enc.encode_images(files).astype(np.float64) @ enc.encode_text([text])[0]
    score_of = {f.name: float(c) for f, c in zip(files, cos, strict=True)}
    order = np.lexsort((np.arange(len(files)), -cos))[:10]
    got_names = [Path(str(h["path"])).name for h in hits]
    got_scores = np.array([float(h["score"]) for h in hits])
    # stored float16 embeddings: scores within fp16 error, the order up to near-ties
    _assert_same_ranking(
        np.array(got_names), got_scores, np.array([files[i].name for i in order]), cos[order], 2e-3
    )

    res = runner.invoke(
        app,
        [
            "search",
            "e2e",
            text,
            "-k",
            "5",
            "--rerank",
            f"clip:{world.model}",
            "--from-k",
            "20",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    reranked = _json_list(res.output)
    assert len(reranked) == 5
    for h in reranked:
        name = Path(str(h["path"])).name
        assert float(h["rerank_score"]) == pytest.approx(score_of[name], abs=1e-5)
    best20 = sorted(score_of.values(), reverse=True)[:20]
    assert min(float(h["rerank_score"]) for h in reranked) >= best20[4] - 4e-3


def test_two_stage_over_a_folder_of_png_and_jpeg_files(
    world: World, home: Path, tmp_path: Path
) -> None:
    """``inquire embed`` records every image file with its own extension; reranking the
    first stage must find those files (not only ``.jpg`` ones)."""
    from PIL import Image

    train = tmp_path / "photos" / "train"
    (train / "sub").mkdir(parents=True)
    names = ["a.png", "b.jpeg", "c.JPG", "sub/d.png", "e.jpg", "f.webp"]
    rng = np.random.default_rng(0)
    for name in names:
        pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(train / name)
    queries = tmp_path / "q.csv"
    pd.DataFrame(
        {
            "query_id": [1],
            "query_text": ["a striped lizard"],
            "supercategory": ["Appearance"],
            "category": ["Color"],
            "iconic_group": ["Reptiles"],
        }
    ).to_csv(queries)
    annotations = tmp_path / "a.csv"
    pd.DataFrame(
        {"query_id": [1, 1], "image_id": [7, 8], "image_path": ["train/a.png", "train/sub/d.png"]}
    ).to_csv(annotations, index=False)
    emb = tmp_path / "emb"
    res = runner.invoke(
        app,
        [
            "embed",
            "--model",
            world.model,
            "--images",
            str(train),
            "--out",
            str(emb),
            "--workers",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "R"
    res = runner.invoke(
        app,
        [
            *("eval", "fullrank", "--model", world.model, "--embeddings", str(emb)),
            *("--queries", str(queries), "--annotations", str(annotations), "--k", "3"),
            *("--rerank", f"clip:{world.model}", "--from-k", "6", "--images", str(train)),
            *("--out", str(out)),
        ],
        env=WIDE,
    )
    assert res.exit_code == 0, res.output
    ids, scores = Run.read(out / "two_stage" / "run.parquet")[1]
    assert len(ids) == len(names) and {7, 8} <= set(ids.tolist())
    _, paths = _shards(emb)
    enc = load_encoder(world.model)
    by_id = {7: "a.png", 8: "sub/d.png"}
    rel = [by_id[i] if i in by_id else paths[i - UNANNOTATED_ID_BASE] for i in ids.tolist()]
    files = [train / r for r in rel]
    cos = enc.encode_images(files).astype(np.float64) @ enc.encode_text(["a striped lizard"])[0]
    np.testing.assert_allclose(scores, cos, atol=1e-5)
