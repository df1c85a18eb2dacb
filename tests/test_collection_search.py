from __future__ import annotations

import importlib
import io
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from inquire.cli import app
from inquire.collection import (
    CollectionSearcher,
    SearchRequest,
    create_collection,
    parse_filters,
    search,
)
from inquire.collection.store import TAXON_COLUMNS
from inquire.errors import InputError, UnknownNameError
from inquire.testing.collection_encoder import (
    PixelHashEncoder,
    make_inat_tree,
    make_photo_folder,
    write_photo,
)


@pytest.fixture
def mixed(tmp_path: Path):
    """An iNat24 tree (taxonomy from train.json) plus plain photos (EXIF), one collection."""
    meta = make_inat_tree(tmp_path / "root", per_taxon=6, seed=1)
    make_photo_folder(tmp_path / "root" / "extra", n=40, seed=2)
    enc = PixelHashEncoder(dim=16)
    coll, _ = create_collection("mixed", tmp_path / "root", enc.model_id, meta, encoder=enc)
    return coll, enc


def _lists(result):
    """``(scores, ids)`` of a search as one ``(ids, scores)`` per query, padding dropped."""
    scores, ids = result
    assert scores.shape == ids.shape and scores.dtype == np.float32 and ids.dtype == np.int64
    assert np.isneginf(scores[ids < 0]).all()
    return [(i[i >= 0], s[i >= 0]) for s, i in zip(scores, ids, strict=True)]


def brute_force(coll, q: np.ndarray, k: int, taxa=(), d0=None, d1=None, bbox=None, under=()):
    """The obvious way: every current image, filtered row by row in Python, fully sorted."""
    imgs = coll.images()
    imgs = imgs[imgs["status"] == "ok"]
    rows = coll.conn.execute("SELECT image_id, shard, row FROM images WHERE status = 'ok'")
    loc = {r["image_id"]: (r["shard"], r["row"]) for r in rows}
    shards: dict[int, np.ndarray] = {}
    keep = []
    for r in imgs.to_dict("records"):
        if taxa and not any(
            isinstance(r[c], str) and r[c].lower() == t.lower() for t in taxa for c in TAXON_COLUMNS
        ):
            continue
        day = date.fromisoformat(r["date"][:10]) if r["date"] else None
        if (d0 and (day is None or day < d0)) or (d1 and (day is None or day > d1)):
            continue
        if bbox:
            w, s, e, n = bbox
            lat, lon = r["lat"], r["lon"]
            if lat is None or np.isnan(lat) or not (s <= lat <= n):
                continue
            if not ((w <= lon <= e) if w <= e else (lon >= w or lon <= e)):
                continue
        if under and not any(r["path"].startswith(u + "/") for u in under):
            continue
        shard, row = loc[r["image_id"]]
        if shard not in shards:
            shards[shard] = np.load(coll.emb_dir / "img_emb" / f"img_emb_{shard}.npy")
        vec = shards[shard][row].astype(np.float32)
        keep.append((-float(vec @ q), int(r["image_id"])))
    keep.sort()
    return [i for _, i in keep[:k]], [-s for s, _ in keep[:k]]


search_mod = importlib.import_module("inquire.collection.search")  # the module, not the function

FILTERS = [
    dict(),
    dict(taxa=("Aves",)),
    dict(taxa=("plantae", "Danaus")),
    dict(d0=date(2020, 1, 1), d1=date(2021, 6, 30)),
    dict(bbox=(-30.0, -20.0, 60.0, 50.0)),
    dict(bbox=(150.0, -60.0, -150.0, 70.0)),  # across the antimeridian
    dict(taxa=("Animalia",), d0=date(2019, 1, 1), bbox=(-180.0, 0.0, 180.0, 90.0)),
    dict(d0=date(2030, 1, 1)),  # nothing matches
    dict(under=("extra",)),
    dict(under=("extra/trip_1", "extra/trip_3"), d0=date(2020, 1, 1)),
    dict(under=("train",), taxa=("Aves",)),
]


@pytest.mark.parametrize("path", ["gather", "dense-numpy", "dense-torch"])
def test_filtered_search_matches_brute_force(mixed, monkeypatch, path: str) -> None:
    coll, enc = mixed
    monkeypatch.setattr(search_mod, "GATHER_BELOW", 1.01 if path == "gather" else 0.0)
    monkeypatch.setattr(search_mod, "TORCH_FROM_ROWS", 0 if path == "dense-torch" else 10**12)
    monkeypatch.setattr(search_mod, "BLOCK_ROWS", 7)  # many blocks, uneven last block
    monkeypatch.setattr(search_mod, "DENSE_BLOCK_ROWS", 5)
    index = coll.index()
    rng = np.random.default_rng(0)
    for f in FILTERS:
        filters = parse_filters(
            f.get("taxa", ()), f.get("d0"), f.get("d1"), f.get("bbox"), f.get("under", ())
        )
        for k in (1, 5, 200):
            q = rng.standard_normal(16).astype(np.float32)
            q /= np.linalg.norm(q)
            ids, scores = _lists(CollectionSearcher(index).search(q[None], k, filters.mask(index)))[
                0
            ]
            ref_ids, ref_scores = brute_force(coll, q, k, **f)
            assert ids.tolist() == ref_ids, (f, k)
            assert np.allclose(scores, ref_scores, atol=1e-5)
    # The filter is applied BEFORE the top-k: a rare taxon still fills k results.
    butterflies = parse_filters(["Danaus"])
    ids, _ = _lists(
        CollectionSearcher(index).search(enc.encode_text(["x"]), 6, butterflies.mask(index))
    )[0]
    assert len(ids) == 6


def test_ties_break_by_image_id(tmp_path: Path) -> None:
    for i in range(6):
        write_photo(tmp_path / "p" / f"{i}.jpg", "green", seed=0)  # same pixels, same vector
    coll, _ = create_collection("ties", tmp_path / "p", "toy:colour")
    df = search(coll, SearchRequest("green", k=4))
    assert df["image_id"].tolist() == [0, 1, 2, 3] and df["rank"].tolist() == [1, 2, 3, 4]
    assert df["score"].nunique() == 1


def test_search_by_example_and_combined_query(mixed) -> None:
    coll, enc = mixed
    index = coll.index()
    some = coll.images().iloc[5]
    by_id = search(index, SearchRequest("", like=(int(some["image_id"]),), k=3), enc)
    assert by_id["image_id"].iloc[0] == some["image_id"]
    assert by_id["score"].iloc[0] == pytest.approx(1.0, abs=2e-3)
    by_path = search(index, SearchRequest("", like=(some["abspath"],), k=3), enc)
    assert by_path["image_id"].tolist() == by_id["image_id"].tolist()
    # An image outside the collection is embedded with the encoder.
    outside = write_photo(Path(some["abspath"]).parent.parent / "outside.png", "red", seed=4)
    n0 = enc.n_images_encoded
    out = search(index, SearchRequest("", like=(str(outside.path),), k=2), enc)
    assert enc.n_images_encoded == n0 + 1 and len(out) == 2
    # Text + example: the normalised sum of the two normalised vectors.
    t = enc.encode_text(["orange wings"])[0]
    e = index.vectors(index.rows_of([int(some["image_id"])]))[0]
    e /= np.linalg.norm(e)
    q = (t + e) / np.linalg.norm(t + e)
    both = search(index, SearchRequest("orange wings", like=(int(some["image_id"]),), k=5), enc)
    ids, scores = _lists(CollectionSearcher(index).search(q[None], 5))[0]
    assert both["image_id"].tolist() == ids.tolist()
    assert np.allclose(both["score"], scores)


def test_search_errors(mixed) -> None:
    coll, enc = mixed
    index = coll.index()
    with pytest.raises(InputError, match="nothing to search for"):
        search(index, SearchRequest(""), enc)
    with pytest.raises(InputError, match="neither an image id"):
        search(index, SearchRequest("", like=("no/such/file.jpg",)), enc)
    with pytest.raises(InputError, match="neither an image id"):  # not a number, not a file
        search(index, SearchRequest("", like=("--5",)), enc)
    with pytest.raises(InputError, match="not \\(or no longer\\) in collection"):
        search(index, SearchRequest("", like=(999999,)), enc)
    with pytest.raises(UnknownNameError, match="Did you mean 'Aves'"):
        search(index, SearchRequest("x", filters=parse_filters(["Avez"])), enc)
    with pytest.raises(UnknownNameError, match="unknown reranker"):
        search(index, SearchRequest("x", rerank="some-reranker"), enc)
    with pytest.raises(InputError, match="YYYY-MM-DD"):
        parse_filters([], "2020-13-01")
    with pytest.raises(InputError, match="after --to"):
        parse_filters([], "2021-01-01", "2020-01-01")
    with pytest.raises(InputError, match="four numbers"):
        parse_filters([], bbox="1,2,3")
    with pytest.raises(InputError, match="out of range"):
        parse_filters([], bbox="-200,0,10,10")
    with pytest.raises(UnknownNameError, match=r"Did you mean .*'extra/trip_1'"):
        search(index, SearchRequest("x", filters=parse_filters(under="extra/trip_9")), enc)
    with pytest.raises(InputError, match="leaves the images folder"):
        parse_filters(under="../elsewhere")
    with pytest.raises(InputError, match="k must be a positive integer"):
        CollectionSearcher(index).search(enc.encode_text(["a"]), 0)


def test_cli_search_outputs(tmp_path: Path) -> None:
    photos = make_photo_folder(tmp_path / "photos", n=20, seed=5)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "collection",
            "create",
            "cli",
            "--images",
            str(tmp_path / "photos"),
            "--model",
            "toy:colour",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["search", "cli", "red", "-k", "3", "--json", "--from", "2019-01-01"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert all(r["date"] >= "2019-01-01" for r in rows)
    res = runner.invoke(
        app, ["search", "cli", "red", "-k", "4", "--csv", "--bbox", "-180,0,180,90"]
    )
    df = pd.read_csv(io.StringIO(res.stdout))
    assert len(df) <= 4 and (df["lat"] >= 0).all()
    res = runner.invoke(app, ["search", "cli", "blue", "-k", "2", "--copy-to", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    copied = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert len(copied) == 3 and copied[-1] == "results.csv" and copied[0].startswith("0001_")
    res = runner.invoke(app, ["search", "cli", "red"])
    assert res.exit_code == 0 and "rank" in res.stdout
    res = runner.invoke(app, ["search", "cli", "red", "--taxon", "Aves"])
    assert res.exit_code == 2 and "records no taxon names" in res.output
    res = runner.invoke(app, ["search", "nope", "red"])
    assert res.exit_code == 2 and "unknown collection 'nope'" in res.output
    res = runner.invoke(app, ["search", "cli", "red", "--rerank", "vlm"])
    assert res.exit_code == 2 and "unknown reranker" in res.output
    assert len(photos) == 20


def test_rerank_reorders_the_first_stage_top(tmp_path: Path, monkeypatch) -> None:
    import inquire.rerank
    from inquire.rerank.cache import ScoreCache

    make_photo_folder(tmp_path / "p", n=30, seed=9)
    coll, _ = create_collection("rr", tmp_path / "p", "toy:colour")
    calls: list[tuple[str, int]] = []

    class BlueFirst:
        reranker_id, revision, prompt_version = "test:blue-first", "1", "1"

        def score(self, text: str, images) -> np.ndarray:
            calls.append((text, len(images)))
            return np.array([float(np.asarray(Image.open(im))[..., 2].mean()) for im in images])

    monkeypatch.setattr(inquire.rerank, "load_reranker", lambda rid, **kw: BlueFirst())
    first = search(coll, SearchRequest("red", k=12))
    out = search(coll, SearchRequest("red", k=5, rerank="blue-first", from_k=12))
    assert calls == [("red", 12)]
    # Scores are cached: the same search again scores nothing.
    again = search(coll, SearchRequest("red", k=5, rerank="blue-first", from_k=12))
    assert calls == [("red", 12)] and again["image_id"].tolist() == out["image_id"].tolist()
    with ScoreCache() as cache:
        assert cache.count() == 12
    assert len(out) == 5 and out["rank"].tolist() == [1, 2, 3, 4, 5]
    assert (np.diff(out["rerank_score"]) <= 0).all()
    assert set(out["image_id"]) <= set(first["image_id"])

    blue = [float(np.asarray(Image.open(p))[..., 2].mean()) for p in first["path"]]
    best = first.assign(b=blue)
    expected = best.sort_values(["b", "rank"], ascending=[False, True])["image_id"].head(5)
    assert out["image_id"].tolist() == expected.tolist()
