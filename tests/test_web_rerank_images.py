"""The web page shows INQUIRE-Rerank results' images, which live only inside the parquet files."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from inquire.cli import app as cli_app
from inquire.data.rerank_set import write_synthetic_rerank_set
from inquire.errors import InputError
from inquire.testing.web_client import page_client
from inquire.web import WebConfig
from inquire.web.app import create_app
from inquire.web.parquet_images import ParquetImages


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A synthetic rerank set evaluated with ``clip_score`` through the CLI, given a relative
    ``--data`` path (the result must still find its files from anywhere)."""
    root = tmp_path_factory.mktemp("rr")
    paths = write_synthetic_rerank_set(root / "set", n_val=1, n_test=2, pool=30, image_size=16)
    parquet = paths["test"][0]
    out = root / "result"
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        res = CliRunner().invoke(
            cli_app,
            [
                "eval",
                "rerank",
                "--reranker",
                "clip_score",
                "--data",
                str(parquet.relative_to(root)),
                "--out",
                str(out),
            ],
        )
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    table = pq.read_table(parquet, columns=["inat24_image_id", "image"]).to_pylist()
    truth: dict[int, bytes] = {}
    for row in table:
        truth.setdefault(int(row["inat24_image_id"]), row["image"]["bytes"])
    return {"parquet": parquet, "result": out, "truth": truth}


@pytest.fixture()
def client(world: dict[str, Any], tmp_path: Path) -> Iterator[TestClient]:
    cfg = WebConfig(results=[world["result"]], thumb_cache=tmp_path / "thumbs")
    with page_client(create_app(cfg)) as c:
        yield c


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def _reference_thumb(data: bytes, size: int) -> bytes:
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as img:
        small = img.convert("RGB")
        small.thumbnail((size, size), Image.Resampling.LANCZOS)
        small.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _grid_urls(client: TestClient, world: dict[str, Any]) -> tuple[list[str], int]:
    runs = client.get("/api/runs").json()
    assert [r["task"] for r in runs] == ["rerank"]
    slug = runs[0]["slug"]
    qid = client.get(f"/api/runs/{slug}/queries").json()[0]["query_id"]
    page = client.get(f"/runs/{slug}/queries/{qid}")
    assert page.status_code == 200
    urls = re.findall(r'src="(/images/[^"]+)"', page.text)
    return [u.replace("&amp;", "&") for u in urls], qid


def test_result_records_its_parquet_files_as_absolute_paths(world: dict[str, Any]) -> None:
    config = json.loads((world["result"] / "summary.json").read_text())["config"]
    assert config["files"] == [str(world["parquet"].resolve())]


def test_every_grid_image_is_the_parquet_image(
    client: TestClient, world: dict[str, Any], tmp_path: Path
) -> None:
    urls, _ = _grid_urls(client, world)
    truth = world["truth"]
    ids = [int(re.match(r"/images/(\d+)", u).group(1)) for u in urls]  # type: ignore[union-attr]
    # the grid shows the whole pool (k = 100 > 30 candidates), each a rerank image
    assert len(ids) == 30 and set(ids) <= set(truth)
    for url, iid in zip(urls, ids, strict=True):
        thumb = client.get(url)
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        # the parquet's image thumbnailed independently (Pillow, the documented recipe):
        # the same decoded pixels; 16 px images are not enlarged
        want = _pixels(truth[iid])
        got = _pixels(thumb.content)
        assert np.array_equal(got, _pixels(_reference_thumb(truth[iid], 256)))
        assert got.shape == want.shape
        full = client.get(f"/images/{iid}")
        assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
        assert full.content == truth[iid]
        assert np.array_equal(_pixels(full.content), want)


def test_unknown_and_bad_ids_are_refused(client: TestClient, world: dict[str, Any]) -> None:
    missing = max(world["truth"]) + 12345
    for url in (f"/images/{missing}", f"/images/{missing}?size=64", "/images/-1"):
        res = client.get(url)
        assert res.status_code == 404 and "unknown" in res.json()["error"]
        assert str(world["parquet"]) not in res.text  # never a server path
    for bad in ("/images/..%2fset", "/images/set.parquet", "/images/1.5"):
        res = client.get(bad)
        # not a whole number: refused by the route's typed parameter, naming it
        assert res.status_code in (404, 422) and not res.content.startswith(b"\xff\xd8")
        assert res.status_code == 404 or "'image_id'" in res.json()["error"]
    assert client.get(f"/images/{next(iter(world['truth']))}?size=5000").status_code == 422


def test_thumbnails_are_cached_and_not_read_again(
    client: TestClient, world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls, _ = _grid_urls(client, world)
    first = [client.get(u).content for u in urls]
    cached = sorted((tmp_path / "thumbs").rglob("*.jpg"))
    assert len(cached) == len(urls)

    def no_read(*args: object) -> object:
        raise AssertionError("a cached thumbnail read the parquet file")

    monkeypatch.setattr(ParquetImages, "_cell", no_read)
    assert [client.get(u).content for u in urls] == first
    assert sorted((tmp_path / "thumbs").rglob("*.jpg")) == cached


def test_rerank_data_option_and_bad_files(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Any] = []
    monkeypatch.setattr("inquire.web.server.serve", lambda app, **kw: started.append(app))
    res = CliRunner().invoke(
        cli_app,
        ["serve", "--rerank-data", str(world["parquet"]), "--thumb-cache", str(tmp_path / "t")],
    )
    assert res.exit_code == 0, res.output
    iid = sorted(world["truth"])[3]
    source = started[0].state.inquire.catalog.parquet_images
    assert source._index is None  # the id index is built on the first image request
    with page_client(started[0]) as c:
        got = c.get(f"/images/{iid}")
        assert got.status_code == 200 and got.content == world["truth"][iid]
    assert len(source) == len(world["truth"])

    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_bytes(b"not parquet")
    no_image = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"inat24_image_id": [1, 2]}), no_image)
    for bad in (tmp_path / "missing.parquet", not_parquet, no_image):
        with pytest.raises(InputError, match=re.escape(bad.name)):
            create_app(WebConfig(rerank_data=[bad], thumb_cache=tmp_path / "t"))


def test_non_image_bytes_in_the_parquet_are_415(tmp_path: Path) -> None:
    img = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(img, format="PNG")
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array(
        [{"bytes": img.getvalue(), "path": "a.png"}, {"bytes": b"<svg/>", "path": "b.svg"}],
        type=struct,
    )
    path = tmp_path / "two.parquet"
    pq.write_table(pa.table({"image": images, "inat24_image_id": [5, 6]}), path)
    cfg = WebConfig(rerank_data=[path], thumb_cache=tmp_path / "t")
    with page_client(create_app(cfg)) as c:
        ok = c.get("/images/5")
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
        for url in ("/images/6", "/images/6?size=64"):
            assert c.get(url).status_code == 415
        assert c.get("/images/7").status_code == 404
