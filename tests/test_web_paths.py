"""No server path reaches a client: every page, JSON answer, error and export of both apps,
over a world built in a temporary folder, is searched for that folder's absolute path (and
its real path). Also: a file whose name holds a backslash is served, and the name the page
keeps in its cookie (percent-encoded) is stored decoded."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from inquire.collection import SearchRequest, create_collection, open_collection
from inquire.collection.verify import Verification
from inquire.testing.collection_encoder import make_photo_folder
from inquire.testing.web_client import page_client


def _forbidden(root: Path) -> list[bytes]:
    names = {str(root), os.path.realpath(root)}
    return [n.encode() for n in names] + [json.dumps(n)[1:-1].encode() for n in names]


def _clean(body: bytes, root: Path, what: str) -> None:
    for bad in _forbidden(root):
        assert bad not in body, f"{what} names the server path {bad!r}: {body[:300]!r}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("paths")
    photos = base / "photos"
    make_photo_folder(photos, n=12, seed=4)
    first = sorted(photos.rglob("*.jpg"))[0]
    shutil.copy(first, photos / "odd\\name.jpg")  # a backslash is a legal POSIX name
    outside = base / "outside.jpg"
    shutil.copy(first, outside)
    coll, _ = create_collection("walk", photos, "toy:colour", root=base / "cols")
    images = coll.images()
    # Searches saved from the command line name example files by absolute path: one inside
    # the collection, one outside it.
    v = Verification(coll)
    idx = coll.index()
    from inquire.embed.models import load_encoder

    enc = load_encoder(coll.model_id)
    sid_in = v.start_search(SearchRequest("", (str(first),)), idx, enc, "cli", 5)
    sid_out = v.start_search(SearchRequest("", (str(outside),)), idx, enc, "cli", 5)
    v.close()
    coll.close()
    return {"base": base, "images": images, "sid_in": sid_in, "sid_out": sid_out}


def test_no_verify_answer_or_export_names_a_server_path(world: dict[str, Any]) -> None:
    from inquire.web.verify import make_app

    base = world["base"]
    c = page_client(make_app(base / "cols"))
    api = "/verify/api/c/walk"
    sid = c.post(f"{api}/searches", json={"text": "red", "who": "ana"}).json()["search_id"]
    res = c.post(f"{api}/searches/{sid}/results", json={"offset": 0, "limit": 30}).json()
    ids = [it["image_id"] for it in res["results"]]
    for i, image_id in enumerate(ids[:5]):
        mark = ["relevant", "not_relevant"][i % 2]
        body = {"image_id": image_id, "who": "ana", "mark": mark}
        assert c.put(f"{api}/searches/{sid}/marks", json=body).status_code == 200
    bodies: dict[str, bytes] = {}
    for s in (sid, world["sid_in"], world["sid_out"]):
        for url in (
            f"{api}/searches/{s}/results?offset=0&limit=50",
            f"{api}/searches/{s}/summary",
            f"{api}/searches/{s}/trend.svg",
            f"{api}/searches/{s}/efficiency.svg",
            f"{api}/searches/{s}/export.csv",
            f"{api}/searches/{s}/export.parquet",
        ):
            r = c.get(url)
            assert r.status_code == 200, (url, r.text)
            bodies[url] = r.content
    for url in ("/verify", "/verify/api/collections", f"{api}/searches"):
        bodies[url] = c.get(url).content
    # errors: a search saved with an outside example cannot be ranked further from the page
    r = c.post(f"{api}/searches/{world['sid_out']}/results", json={"offset": 5, "limit": 5})
    assert r.status_code == 400
    bodies["refused more"] = r.content
    r = c.post(f"{api}/searches", json={"like": "../outside.jpg"})
    assert r.status_code == 400
    bodies["refused like"] = r.content
    for what, body in bodies.items():
        _clean(body, base, what)
    # The export's path column: relative to the collection's images folder.
    csv = pd.read_csv(io.BytesIO(bodies[f"{api}/searches/{sid}/export.csv"]))
    rel = dict(zip(world["images"]["image_id"], world["images"]["path"], strict=True))
    assert len(csv) == 5
    assert list(csv["path"]) == [rel[i] for i in csv["image_id"]]
    pq = pd.read_parquet(io.BytesIO(bodies[f"{api}/searches/{sid}/export.parquet"]))
    assert list(pq["path"]) == list(csv["path"])
    # Saved searches show their examples relative to the collection (or by file name).
    saved = {s["search_id"]: json.loads(s["request"]) for s in c.get(f"{api}/searches").json()}
    first = sorted((base / "photos").rglob("*.jpg"))[0]
    assert saved[world["sid_in"]]["like"] == [first.relative_to(base / "photos").as_posix()]
    assert saved[world["sid_out"]]["like"] == ["(outside the collection) outside.jpg"]


def test_a_file_whose_name_holds_a_backslash_is_served(world: dict[str, Any]) -> None:
    from inquire.web.verify import make_app

    c = page_client(make_app(world["base"] / "cols"))
    images = world["images"]
    row = images[images["path"] == "odd\\name.jpg"]
    assert len(row) == 1 and row["status"].iloc[0] == "ok"
    image_id = int(row["image_id"].iloc[0])
    for url in (
        f"/verify/api/c/walk/images/{image_id}",
        f"/verify/api/c/walk/images/{image_id}?size=64",
    ):
        r = c.get(url)
        assert r.status_code == 200 and r.content.startswith(b"\xff\xd8"), (url, r.text[:200])


def test_the_name_in_the_cookie_is_stored_decoded(world: dict[str, Any]) -> None:
    from inquire.web.verify import make_app

    c = page_client(make_app(world["base"] / "cols"))
    c.cookies.set("inquire_who", "Jos%C3%A9%20M.")
    api = "/verify/api/c/walk"
    sid = c.post(f"{api}/searches", json={"text": "blue"}).json()["search_id"]
    image_id = c.get(f"{api}/searches/{sid}/results").json()["results"][0]["image_id"]
    r = c.put(f"{api}/searches/{sid}/marks", json={"image_id": image_id, "mark": "unsure"})
    assert r.status_code == 200 and r.json()["who"] == "José M."
    coll = open_collection("walk", world["base"] / "cols")
    v = Verification(coll)
    try:
        assert set(v.marks(sid)["who"]) == {"José M."}
        assert v.searches().set_index("search_id").loc[sid, "created_by"] == "José M."
    finally:
        v.close()
        coll.close()
    c.cookies.set("inquire_who", "%C3%A9" * 64)  # 64 characters once decoded: kept
    r = c.put(f"{api}/searches/{sid}/marks", json={"image_id": image_id, "mark": "unsure"})
    assert r.status_code == 200 and r.json()["who"] == "é" * 64
    c.cookies.set("inquire_who", "%41" * 65)  # 65 characters once decoded
    r = c.put(f"{api}/searches/{sid}/marks", json={"image_id": image_id, "mark": "unsure"})
    assert r.status_code == 400 and "64" in r.json()["detail"]


def test_main_app_pages_and_errors_name_no_server_path(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Every page and JSON answer of ``inquire serve`` over a world in a temporary folder,
    including a failed text search with a ``precomputed:`` model (its message used to name
    the file), is free of that folder's path."""
    from inquire.testing.web_fixtures import build_web_fixture
    from inquire.web.app import create_app
    from inquire.web.config import WebConfig

    base = tmp_path_factory.mktemp("mainpaths")
    fx = build_web_fixture(base / "fx", n_images=2000, n_test=3, k=20)
    config = WebConfig(
        results=fx.results,
        image_roots=[fx.images],
        embeddings=fx.bench.embeddings,
        model=f"precomputed:{fx.bench.text_embeddings}",
        annotations=[fx.bench.annotations],
        queries=[fx.bench.queries_test],
        thumb_cache=base / "thumbs",
    )
    c = page_client(create_app(config))
    slugs = [r["slug"] for r in c.get("/api/runs").json()]
    assert slugs
    urls = ["/", "/api/runs", "/search", "/api/health", "/compare?runs=exact&runs=noisy"]
    for slug in slugs:
        urls += [f"/runs/{slug}", f"/api/runs/{slug}/queries"]
        for q in c.get(f"/api/runs/{slug}/queries").json()[:2]:
            qid = q["query_id"]
            urls += [f"/runs/{slug}/queries/{qid}", f"/api/runs/{slug}/queries/{qid}"]
    text = str(pd.read_csv(fx.bench.queries_test)["query_text"].iloc[0])
    urls += [f"/search?q={text}", f"/api/search?q={text}"]
    for url in urls:
        r = c.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        _clean(r.content, base, url)
    for url in ("/search?q=never+embedded+text", "/api/search?q=never+embedded+text"):
        r = c.get(url)
        assert r.status_code == 400, (url, r.status_code)
        assert "precomputed:" in r.text and (
            "<server path>" in r.text or "&lt;server path&gt;" in r.text
        )
        _clean(r.content, base, url)
