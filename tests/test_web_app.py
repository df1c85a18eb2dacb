"""Pages and JSON API over two synthetic runs, checked against brute-force references."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from html import unescape as html_unescape
from pathlib import Path

import pandas as pd
import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from rich.console import Console
from typer.testing import CliRunner

from inquire.data.qrels import read_qrels
from inquire.demo.web import demo_web
from inquire.embed.store import EmbeddingStore
from inquire.errors import InputError, UnknownNameError
from inquire.index.exact import search
from inquire.run import Run
from inquire.testing.web_client import page_client
from inquire.testing.web_fixtures import WebFixture, build_web_fixture
from inquire.web.app import WebContext, create_app, get_context
from inquire.web.catalog import Catalog
from inquire.web.config import WebConfig

WEB_PKG = Path(__file__).resolve().parents[1] / "src" / "inquire" / "web"


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> WebFixture:
    return build_web_fixture(tmp_path_factory.mktemp("webfx"))


@pytest.fixture(scope="module")
def config(fx: WebFixture, tmp_path_factory: pytest.TempPathFactory) -> WebConfig:
    return WebConfig(
        results=fx.results,
        image_roots=[fx.images],
        embeddings=fx.bench.embeddings,
        model=fx.encoder,
        thumb_cache=tmp_path_factory.mktemp("thumbs"),
    )


@pytest.fixture(scope="module")
def client(config: WebConfig) -> Iterator[TestClient]:
    with page_client(create_app(config)) as c:
        yield c


def _per_query(fx: WebFixture, i: int = 0) -> pd.DataFrame:
    return pd.read_csv(fx.results[i] / "per_query.csv", keep_default_na=False)


def test_runs_page_lists_every_run_with_its_metrics(client: TestClient, fx: WebFixture) -> None:
    html = client.get("/").text
    for res in fx.results:
        pq = _per_query(fx, fx.results.index(res))
        name = res.name
        assert f'href="/runs/{name}"' in html
        assert f"{100 * pq['ap'].mean():.1f}" in html  # AP@k x100, as in the terminal table
    api = client.get("/api/runs").json()
    assert [r["slug"] for r in api] == ["exact", "noisy"]
    assert api[0]["metrics"]["ap"] == pytest.approx(_per_query(fx, 0)["ap"].mean())


@pytest.mark.parametrize("col", ["supercategory", "category", "iconic_group"])
def test_query_filters_match_a_brute_force_filter(
    client: TestClient, fx: WebFixture, col: str
) -> None:
    pq = _per_query(fx)
    value = str(pq[col].iloc[0])
    want = sorted(pq.loc[pq[col] == value, "query_id"].astype(int))
    got = client.get("/api/runs/exact/queries", params={col: value}).json()
    assert sorted(r["query_id"] for r in got) == want
    html = client.get("/runs/exact", params={col: value}).text
    linked = {int(q) for q in re.findall(r'href="/runs/exact/queries/(\d+)"', html)}
    assert sorted(linked) == want
    assert len(want) < len(pq)  # the filter really narrows the list


def test_query_grid_marks_relevance_and_ranks_in_the_other_run(
    client: TestClient, fx: WebFixture
) -> None:
    qrels = read_qrels(fx.bench.annotations)
    run_a = Run.read_parquet(fx.results[0] / "run.parquet")
    run_b = Run.read_parquet(fx.results[1] / "run.parquet")
    qid = int(_per_query(fx)["query_id"].iloc[1])
    data = client.get(f"/api/runs/exact/queries/{qid}", params={"k": 20, "compare": "noisy"})
    data = data.json()
    ids_a, scores_a = run_a[qid]
    ids_b = run_b[qid][0].tolist()
    assert [it["image_id"] for it in data["results"]] == ids_a[:20].tolist()
    assert [it["score"] for it in data["results"]] == pytest.approx(scores_a[:20].tolist())
    for it in data["results"]:
        assert it["relevant"] == (it["image_id"] in qrels[qid])
        want = ids_b.index(it["image_id"]) + 1 if it["image_id"] in ids_b else None
        assert it["other_rank"] == want
    assert data["relevant_in_top_k"] == sum(i in qrels[qid] for i in ids_a[:20].tolist())
    assert any(it["relevant"] for it in data["results"])
    assert any(not it["relevant"] for it in data["results"])

    html = client.get(f"/runs/exact/queries/{qid}", params={"k": 20, "compare": "noisy"}).text
    n_rel = sum(i in qrels[qid] for i in ids_a[:20].tolist())
    assert html.count('class="cell relevant"') == n_rel
    assert html.count('class="cell not-relevant"') == 20 - n_rel
    assert html.count("<img ") == 20
    assert "noisy: <b>#" in html
    text = pd.read_csv(fx.bench.queries_test).set_index("query_id").loc[qid, "query_text"]
    assert str(text) in html  # the query text comes from the file named in the result config


def test_compare_none_and_default_other(client: TestClient, fx: WebFixture) -> None:
    qid = int(_per_query(fx)["query_id"].iloc[0])
    assert client.get(f"/api/runs/exact/queries/{qid}").json()["compare"] == "noisy"
    none = client.get(f"/api/runs/exact/queries/{qid}", params={"compare": ""}).json()
    assert none["compare"] is None
    assert all(it["other_rank"] is None for it in none["results"])


def test_search_equals_exact_search_with_the_encoder(client: TestClient, fx: WebFixture) -> None:
    text = "a puffin carrying food"
    got = client.get("/api/search", params={"q": text, "k": 12}).json()["results"]
    emb = fx.encoder.encode_text([text])
    scores, ids = search(EmbeddingStore(fx.bench.embeddings), emb, k=12)
    assert [r["image_id"] for r in got] == ids[0].tolist()
    assert [r["score"] for r in got] == pytest.approx(scores[0].tolist(), rel=1e-6)
    html = client.get("/search", params={"q": text, "k": 12}).text
    found = [int(i) for i in re.findall(r'data-image-id="(\d+)"', html)]
    assert found == ids[0].tolist()
    # Every result is resolvable to a thumbnail under the image root.
    thumb = client.get(got[0]["thumb_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def test_bad_requests_get_specific_errors(client: TestClient, fx: WebFixture) -> None:
    qid = int(_per_query(fx)["query_id"].iloc[0])
    r = client.get("/runs/nope")
    assert r.status_code == 404 and "unknown run &#39;nope&#39;" in r.text
    r = client.get("/api/runs/exact/queries/123456789")
    assert r.status_code == 404 and "123456789" in r.json()["error"]
    # a parameter of the wrong type or out of bounds: 422, naming it and what it should be
    for k, expected in (("0", "greater than or equal to 1"), ("x", "valid integer")):
        r = client.get(f"/api/runs/exact/queries/{qid}", params={"k": k})
        assert r.status_code == 422 and "'k'" in r.json()["error"] and expected in r.json()["error"]
    r = client.get(f"/api/runs/exact/queries/{qid}", params={"k": "100000"})
    assert r.status_code == 422 and "less than or equal to 500" in r.json()["error"]
    r = client.get(f"/runs/exact/queries/{qid}", params={"k": "<b>7</b>"})
    assert r.status_code == 422 and "&lt;b&gt;7" in r.text and "<b>7" not in r.text
    r = client.get("/api/runs/exact/queries/<i>1")
    assert r.status_code == 422 and "'query_id'" in r.json()["error"]
    assert client.get(f"/runs/exact/queries/{qid}", params={"k": ""}).status_code == 200
    assert (
        client.get(f"/api/runs/exact/queries/{qid}", params={"compare": "nop"}).status_code == 404
    )
    assert client.get("/api/search", params={"q": "   "}).status_code == 400
    assert client.get("/api/search", params={"q": "x" * 2000}).status_code == 400
    r = client.get("/search", params={"q": "y" * 2000})
    assert r.status_code == 400 and 'id="error-message"' in r.text


def test_pages_use_no_external_urls_and_send_a_strict_csp(client: TestClient) -> None:
    r = client.get("/")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    for f in [*WEB_PKG.joinpath("templates").iterdir(), *WEB_PKG.joinpath("static").iterdir()]:
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f.name
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_extra_routers_and_templates_plug_in(fx: WebFixture, tmp_path: Path) -> None:
    """A later feature adds its own router and pages that extend the base layout."""
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tpl / "extra.html").write_text(
        '{% extends "base.html" %}{% block content %}<p id="x">{{ n }} runs</p>{% endblock %}'
    )
    router = APIRouter()

    @router.get("/extra")
    def extra(request: __import__("fastapi").Request, ctx: WebContext = Depends(get_context)):
        return ctx.render(request, "extra.html", n=len(ctx.catalog.runs))

    cfg = WebConfig(
        results=fx.results,
        routers=[router],
        template_dirs=[tpl],
        nav_links=[("Extra", "/extra")],
        thumb_cache=tmp_path / "th",
    )
    with page_client(create_app(cfg)) as c:
        html = c.get("/extra").text
        assert '<p id="x">2 runs</p>' in html and 'href="/extra">Extra</a>' in html
        assert c.get("/search").status_code == 200  # search page says search is off
        assert "Free-text search is off" in c.get("/search", params={"q": "fox"}).text


def test_config_errors_fail_at_start_up(fx: WebFixture, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no embeddings folder"):
        Catalog(WebConfig(results=fx.results, model=fx.encoder))
    with pytest.raises(UnknownNameError, match="nosuchbackend"):
        Catalog(WebConfig(embeddings=fx.bench.embeddings, model="nosuchbackend:x"))
    with pytest.raises(InputError, match="not an evaluation result folder"):
        Catalog(WebConfig(results=[tmp_path]))
    with pytest.raises(InputError, match="not a folder"):
        Catalog(WebConfig(image_roots=[tmp_path / "missing"]))


def test_duplicate_run_names_get_distinct_slugs(fx: WebFixture) -> None:
    cat = Catalog(WebConfig(results=[fx.results[0], fx.results[0]]))
    assert list(cat.runs) == ["exact", "exact-2"]


def test_model_id_string_is_loaded_on_first_search(fx: WebFixture) -> None:
    cat = Catalog(
        WebConfig(embeddings=fx.bench.embeddings, model=f"precomputed:{fx.bench.text_embeddings}")
    )
    text = pd.read_csv(fx.bench.queries_test)["query_text"].iloc[0]
    assert len(cat.search(str(text), 5)) == 5
    with pytest.raises(InputError, match="no precomputed embedding"):
        cat.search("something never embedded", 5)


def test_annotations_give_paths_without_embeddings(fx: WebFixture, tmp_path: Path) -> None:
    """With only the annotations, relevant images still resolve (their image_path has .jpg)."""
    cat = Catalog(WebConfig(annotations=[fx.bench.annotations], image_roots=[fx.images]))
    qrels = read_qrels(fx.bench.annotations)
    some = next(iter(next(iter(qrels.values()))))
    assert cat.images.resolve_id(some).is_file()


def test_serve_cli_reports_bad_folders(tmp_path: Path) -> None:
    from inquire.cli import app

    res = CliRunner().invoke(app, ["serve", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "not an evaluation result folder" in res.output


def test_demo_step_prints_a_serve_command_that_works(fx: WebFixture) -> None:
    console = Console(record=True, width=400)
    cmd = demo_web(fx.results, fx.bench.root, console)
    out = console.export_text()
    parts = cmd.split()
    serve_at = parts.index("serve")
    assert "http://127.0.0.1:8000/" in out
    assert parts[:serve_at] in (["inquire"], [sys.executable, "-m", "inquire"])
    assert f"--images {fx.images}" in cmd and "--embeddings" in cmd and "--model" in cmd
    # The printed command builds a working app (parse it the way the CLI would).
    args = parts[serve_at + 1 :]
    results = [Path(a) for a in args[: args.index("--images")]]
    assert results == fx.results
    flag_values: dict[str, list[str]] = {}
    for flag, value in zip(args[len(results) :: 2], args[len(results) + 1 :: 2], strict=True):
        flag_values.setdefault(flag, []).append(value)
    cfg = WebConfig(
        results=results,
        image_roots=[Path(p) for p in flag_values["--images"]],
        annotations=[Path(p) for p in flag_values["--annotations"]],
        queries=[Path(p) for p in flag_values["--queries"]],
        embeddings=Path(flag_values["--embeddings"][0]),
        model=flag_values["--model"][0],
    )
    cat = Catalog(cfg)
    assert cat.can_search and cat.qrels is not None
    assert cat.store is not None
    assert all(cat.images.resolve_id(int(i)).is_file() for i in cat.store.ids[:5])


def test_result_without_run_file_shows_metrics_only(fx: WebFixture, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(fx.results[0], bare)
    (bare / "run.parquet").unlink()
    qid = int(_per_query(fx)["query_id"].iloc[0])
    with page_client(create_app(WebConfig(results=[bare], thumb_cache=tmp_path / "th"))) as c:
        assert "no run file" in c.get("/").text
        assert c.get("/runs/exact").status_code == 200
        r = c.get(f"/api/runs/exact/queries/{qid}")
        assert r.status_code == 400 and "run.parquet" in r.json()["error"]


def test_sorting_matches_pandas_and_pager_walks_file_order(
    client: TestClient, fx: WebFixture
) -> None:
    pq = _per_query(fx)
    got = client.get("/api/runs/exact/queries", params={"sort": "ap"}).json()
    want = pq.sort_values(["ap", "query_id"], ascending=[False, True])["query_id"].tolist()
    assert [r["query_id"] for r in got] == want
    html = client.get("/runs/exact", params={"sort": "ndcg"}).text
    linked = [
        int(q) for q in re.findall(r'<td class="num"><a href="/runs/exact/queries/(\d+)"', html)
    ]
    assert (
        linked == pq.sort_values(["ndcg", "query_id"], ascending=[False, True])["query_id"].tolist()
    )
    r = client.get("/api/runs/exact/queries", params={"sort": "app"})
    assert r.status_code == 404 and "Did you mean 'ap'" in r.json()["error"]

    ids = pq["query_id"].tolist()
    first = client.get(f"/runs/exact/queries/{ids[0]}").text
    assert 'id="prev"' not in first
    assert f'href="/runs/exact/queries/{ids[1]}?k=50&amp;compare=noisy"' in first
    last = client.get(f"/runs/exact/queries/{ids[-1]}", params={"compare": ""}).text
    assert 'id="next"' not in last
    assert f'href="/runs/exact/queries/{ids[-2]}?k=50&amp;compare="' in last


def test_real_inquire_query_file_gives_query_texts(real_queries_dir: Path) -> None:
    from inquire.data.queries import read_queries

    path = real_queries_dir / "inquire_queries_test.csv"
    cat = Catalog(WebConfig(queries=[path]))
    df = read_queries(path)
    assert len(cat.query_text) == len(df)
    assert cat.query_text[int(df["query_id"].iloc[0])] == df["query_text"].iloc[0]


def test_no_swagger_ui_from_a_cdn(client: TestClient) -> None:
    assert client.get("/api/docs").status_code == 404
    assert client.get("/api/openapi.json").json()["paths"]


def test_a_method_not_allowed_names_the_allowed_ones_on_pages_too(client: TestClient) -> None:
    """405 carries ``Allow`` (RFC 9110) whichever shape answers it: JSON for the API, the
    error page for a page."""
    for method, url, shape in (
        ("OPTIONS", "/", "text/html"),
        ("POST", "/search", "text/html"),
        ("DELETE", "/api/runs", "application/json"),
    ):
        r = client.request(method, url)
        assert r.status_code == 405, (method, url, r.status_code)
        assert r.headers["content-type"].startswith(shape), (url, r.headers["content-type"])
        assert r.headers.get("allow") == "GET", (method, url, dict(r.headers))


def _docs_status_table() -> dict[int, str]:
    """Status -> example message of the error table in docs/web.md (rows with one)."""
    text = (WEB_PKG.parents[2] / "docs" / "web.md").read_text(encoding="utf-8")
    table = text.split("| status | when | example message |", 1)[1].split("\n\n", 1)[0]
    rows: dict[int, str] = {}
    for line in table.strip().splitlines()[1:]:
        status, _when, example = (c.strip() for c in line.strip("|").rsplit("|", 2))
        if example:
            rows[int(status)] = example.strip("`")
    return rows


def test_the_status_table_of_the_docs_is_what_the_server_answers(
    client: TestClient, fx: WebFixture
) -> None:
    """Each example message of docs/web.md's error table is what the server answers, with
    the status the table gives it, on the JSON API and (where a page can fail so) on a page.
    The search page answers blank text with its empty form, not with an error."""
    qid = int(_per_query(fx)["query_id"].iloc[0])
    requests = {  # requests that should answer each row's example
        422: [f"/api/runs/exact/queries/{qid}?k=501", f"/runs/exact/queries/{qid}?k=501"],
        400: ["/api/search?q=%20"],
        404: ["/api/runs/nope/queries", "/runs/nope"],
    }
    rows = _docs_status_table()
    assert set(rows) == set(requests), rows
    for status, example in rows.items():
        for url in requests[status]:
            r = client.get(url)
            assert r.status_code == status, (url, r.status_code, status)
            if url.startswith("/api/"):
                shown = r.json()["error"]
            else:
                found = re.search(r'id="error-message">([^<]*)<', r.text)
                assert found, (url, r.text)
                shown = html_unescape(found.group(1))
            assert shown.startswith(example), (url, shown, example)


def test_head_is_answered_wherever_get_is(client: TestClient, fx: WebFixture) -> None:
    """HEAD gets GET's status and headers without the body (``curl -I``, link checkers), on
    pages, the API and images; a route that takes no GET still answers 405."""
    qid = int(_per_query(fx)["query_id"].iloc[0])
    image_id = client.get(f"/api/runs/exact/queries/{qid}").json()["results"][0]["image_id"]
    for url in ("/", f"/runs/exact/queries/{qid}", "/api/health", f"/images/{image_id}?size=32"):
        get, head = client.get(url), client.head(url)
        assert head.status_code == get.status_code == 200, (url, head.status_code)
        assert head.headers["content-type"] == get.headers["content-type"], url
        assert head.headers["content-length"] == get.headers["content-length"], url
        assert head.content == b"" and get.content, url
        assert "default-src 'self'" in head.headers["content-security-policy"], url
    missing = client.head("/runs/nope")
    assert missing.status_code == 404 and missing.content == b""
    assert client.head("/api/runs/exact/queries/<i>").status_code == 422


def test_errors_repeat_only_the_start_of_a_long_value(fx: WebFixture, tmp_path: Path) -> None:
    """A 12 KB image path (under the header limit) is named by its first 100 characters, and
    any message longer than ``MAX_MESSAGE`` is cut, on the API and on an error page alike."""
    from inquire.web.errors import MAX_MESSAGE

    router = APIRouter()

    @router.get("/api/long")
    @router.get("/long")
    def long() -> None:
        raise InputError("refused " + "z" * 50_000)

    cfg = WebConfig(image_roots=[fx.images], routers=[router], thumb_cache=tmp_path / "th")
    with page_client(create_app(cfg)) as c:
        for name in ("a" * 12_000 + ".jpg", "sub/" + "b" * 12_000, "x\\" + "c" * 12_000):
            r = c.get(f"/files/0/{name}")
            assert r.status_code in (400, 404), (name[:10], r.status_code)
            message = r.json()["error"]
            assert len(message) < 400 and name[2:100] in message, message[:200]
            assert "<server path>" not in message, message
            assert "12,00" in message, message  # says how long the value was
        api, page = c.get("/api/long"), c.get("/long")
        assert api.status_code == page.status_code == 400
        assert len(api.json()["error"]) == MAX_MESSAGE
        assert api.json()["error"].endswith("(50,008 characters in all)")
        assert "z" * (MAX_MESSAGE - 100) in page.text and len(page.text) < MAX_MESSAGE + 3000
