"""The verification page in a real headless Chromium: mark with the keyboard, reload, export."""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from inquire.collection import create_collection
from inquire.testing.collection_encoder import make_photo_folder

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

pytestmark = pytest.mark.browser


def _inquire_serve_app():
    """The page inside the main web app (`inquire serve`), under its strict CSP."""
    from inquire.web.app import create_app
    from inquire.web.config import WebConfig
    from inquire.web.verify import make_router

    return create_app(WebConfig(routers=[make_router()], nav_links=[("Verify", "/verify")]))


@pytest.fixture(params=["verify-only", "inquire-serve"])
def server(tmp_path: Path, request: pytest.FixtureRequest):
    import uvicorn

    from inquire.web.verify import make_app

    make_photo_folder(tmp_path / "photos", n=40, seed=3)
    create_collection("walk", tmp_path / "photos", "toy:colour")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(
            make_app() if request.param == "verify-only" else _inquire_serve_app(),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_mark_reload_and_export_in_a_browser(server: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no headless browser at {CHROMIUM} (install Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on(
            "response",
            lambda r: (
                errors.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )
        page.goto(f"{server}/verify")
        page.fill("#who", "ana")
        page.press("#who", "Tab")
        page.fill("#query", "red")
        page.fill("#from", "2019-01-01")
        page.click("#go")
        page.wait_for_selector("#r0.current")
        first = page.get_attribute("#r0", "data-image-id")
        second = page.get_attribute("#r1", "data-image-id")
        page.locator("body").click(position={"x": 5, "y": 5})  # keyboard focus off the inputs
        page.keyboard.press("1")  # relevant, then the cursor moves down
        page.wait_for_selector("#r0[data-mark='relevant']")
        page.keyboard.press("n")  # not relevant on the second result
        page.wait_for_selector("#r1[data-mark='not_relevant']")
        page.keyboard.press("k")
        page.keyboard.press("k")
        assert page.get_attribute("#r0", "class").endswith("current")
        page.wait_for_function(
            "() => (document.getElementById('effort') || {}).textContent"
            "?.includes('2 images inspected')"
        )
        assert page.locator("#trend svg").count() == 1
        # Going down the ranking loads more results.
        n0 = page.locator(".result").count()
        for _ in range(n0):
            page.keyboard.press("j")
        page.wait_for_function(f"() => document.querySelectorAll('.result').length > {n0}")

        page.reload()  # the URL keeps the search; marks come back from the server
        page.wait_for_selector("#r1[data-mark='not_relevant']")
        assert page.get_attribute("#r0", "data-mark") == "relevant"
        assert page.input_value("#who") == "ana" and page.input_value("#query") == "red"

        href = page.get_attribute("#csv", "href")
        csv = page.request.get(server + href if href.startswith("/") else href)
        df = pd.read_csv(io.StringIO(csv.text()))
        marks = dict(zip(df["image_id"].astype(str), df["mark"], strict=True))
        assert marks == {first: "relevant", second: "not_relevant"}
        assert set(df["who"]) == {"ana"}
        browser.close()
    errors = [e for e in errors if not e.startswith("Failed to load resource")]
    assert not errors, errors  # e.g. a script or style refused by the content policy
