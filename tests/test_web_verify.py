"""The verification page's routes (inquire.web.verify)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from inquire.collection import create_collection
from inquire.collection.store import Collection
from inquire.testing.collection_encoder import make_photo_folder
from inquire.testing.web_client import page_client


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


def test_collections_list_closes_a_collection_that_fails(tmp_path: Path, monkeypatch) -> None:
    from inquire.web.verify import make_app

    make_photo_folder(tmp_path / "p", n=6, seed=7)
    create_collection("wl", tmp_path / "p", "toy:colour")
    closed: list[str] = []
    real_close = Collection.close

    def spy_close(self: Collection) -> None:
        closed.append(self.name)
        real_close(self)

    def broken_counts(self: Collection) -> dict[str, int]:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Collection, "close", spy_close)
    client = page_client(make_app(), raise_server_exceptions=False)
    assert client.get("/verify/api/collections").json()[0]["name"] == "wl"
    assert closed == ["wl"]
    monkeypatch.setattr(Collection, "counts", broken_counts)
    closed.clear()
    assert client.get("/verify/api/collections").status_code == 500
    assert closed == ["wl"]


def test_verify_app_answers_every_error_in_one_shape(tmp_path: Path) -> None:
    """Bad parameters (422, naming the parameter and its bound), unknown names and routes
    (404) and library refusals all answer ``{"error", "detail"}`` with one message, as the
    main app's JSON routes do; the page is rendered with its CSRF token and asset folder."""
    import re

    from inquire.web.verify import make_app

    make_photo_folder(tmp_path / "p", n=3, seed=2)
    coll, _ = create_collection("shape", tmp_path / "p", "toy:colour", root=tmp_path / "cols")
    image_id = int(coll.images()["image_id"].iloc[0])
    coll.close()
    client = page_client(make_app(tmp_path / "cols"))
    api = "/verify/api/c/shape"
    cases = {
        f"{api}/images/{image_id}?size=5000": (422, "'size'", "less than or equal to 1024"),
        f"{api}/images/<b>1": (422, "'image_id'", "valid integer"),
        f"{api}/images/{image_id}?size=4": (422, "thumbnail size 4", "16..1024"),
        "/verify/api/c/nosuch/searches": (404, "nosuch", ""),
        "/verify/api/nothing-here": (404, "Not Found", ""),
    }
    for url, (status, name, expected) in cases.items():
        r = client.get(url)
        body = r.json()
        assert r.status_code == status, (url, r.status_code, body)
        assert set(body) == {"error", "detail"} and body["error"] == body["detail"], url
        assert name in body["error"] and expected in body["error"], (url, body)
        assert str(tmp_path) not in r.text
    page = client.get("/verify").text
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert token and client.app.state.web_guard.token_ok(token.group(1))
    assert 'href="/verify/assets/verify.css"' in page and "{{" not in page
    head = client.head("/verify")  # HEAD as GET, without the body
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/html")


def test_a_fresh_token_is_given_only_to_this_server_and_never_cached(tmp_path: Path) -> None:
    """``/verify/api/token``: what a page whose token the server no longer knows (it was
    restarted) asks for. It is a token of this server, made anew each time, never cached,
    readable by no other origin (no CORS headers), and refused to a foreign Host."""
    from fastapi.testclient import TestClient

    from inquire.web.security import guard_of
    from inquire.web.verify import make_app

    (tmp_path / "cols").mkdir()
    app = make_app(tmp_path / "cols")
    client = page_client(app)
    one = client.get("/verify/api/token", headers={"origin": "http://evil.example"})
    two = client.get("/verify/api/token")
    assert one.status_code == two.status_code == 200
    assert one.headers["cache-control"] == "no-store"
    assert not any(h.startswith("access-control-") for h in one.headers)
    tokens = [one.json()["token"], two.json()["token"]]
    assert tokens[0] != tokens[1] and all(guard_of(app).token_ok(t) for t in tokens)
    foreign = TestClient(app, base_url="http://evil.example")
    assert foreign.get("/verify/api/token").status_code == 400
