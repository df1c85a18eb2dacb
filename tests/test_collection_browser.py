"""The verification page in a real headless Chromium: keyboard marking (fast keys, undo,
keys across page loads), marks saved in order, the server going away and coming back, marks
from another tab, the CSRF header on every state-changing request, reload and export, links
and names that try to inject HTML, phone width with long texts.

One browser and one server per page kind for the whole module; each test runs its own search
(a different text, so a different saved search) in a fresh browser context. Every wait is for
a condition, with a generous limit (WAIT_MS), so a busy machine makes a test slow, not red.
"""

from __future__ import annotations

import contextlib
import functools
import io
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from inquire.collection import create_collection
from inquire.testing.browser import CHROMIUM, VIEWPORTS, layout_findings
from inquire.testing.browser import CHROMIUM_ARGS as ARGS
from inquire.testing.collection_encoder import make_photo_folder

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TOKEN = "test-csrf-token-1234"
WAIT_MS = 180_000  # the longest any condition is waited for (a busy machine is slow)
KEYS = {"1": "relevant", "y": "relevant", "2": "not_relevant", "n": "not_relevant"}
KEYS |= {"3": "unsure", "u": "unsure", "0": "clear", "x": "clear"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no headless browser at {CHROMIUM}"),
]


class LiveServer:
    """uvicorn in a thread on a fixed loopback port; can be stopped and started again."""

    def __init__(self, app: Any) -> None:
        self.app = app
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Any = None
        self.kind = ""
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            if self.server.started:
                return
            time.sleep(0.025)
        raise RuntimeError("the test server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        assert self.thread is not None
        self.thread.join(timeout=WAIT_MS / 1000)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("verify")
    make_photo_folder(base / "photos", n=60, seed=3)  # three pages of results: 24, 24, 12
    create_collection("walk", base / "photos", "toy:colour", root=base / "collections")
    return base / "collections"


@pytest.fixture(scope="module", params=["inquire-serve", "verify-only"])
def server(root: Path, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    from inquire.web.app import create_app
    from inquire.web.config import WebConfig
    from inquire.web.verify import make_app, make_router

    if request.param == "verify-only":
        app = make_app(root)
    else:  # inside the main web app (`inquire serve`), under its strict CSP
        app = create_app(WebConfig(routers=[make_router(root)], nav_links=[("Verify", "/verify")]))
    srv = LiveServer(app)
    srv.kind = request.param
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


class Tab:
    """A browser context on the page that records errors and state-changing requests."""

    def __init__(self, browser: Any, server: LiveServer) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.errors: list[str] = []
        self.writes: list[tuple[str, str | None]] = []
        self.token = TOKEN
        self.tokens = {TOKEN}  # every token a page was served with (each page gets its own)
        self.context.route(f"{server.url}/verify", self._with_token)
        self.context.on("request", self._record)
        self.context.route(f"{server.url}/verify/api/token", self._fresh_token)

    def _with_token(self, route: Any) -> None:
        # The page reads the token from <meta name="csrf-token">; a server that renders one
        # keeps its own, otherwise the test adds one.
        resp = route.fetch()
        body = resp.text()
        if 'name="csrf-token"' in body:
            self.token = body.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
            self.tokens.add(self.token)
        else:
            body = body.replace("<head>", f'<head><meta name="csrf-token" content="{TOKEN}">', 1)
        route.fulfill(response=resp, body=body)

    def _fresh_token(self, route: Any) -> None:
        # A token the page asks for afresh (the server no longer knew its own) is one too.
        resp = route.fetch()
        self.tokens.add(resp.json()["token"])
        route.fulfill(response=resp)

    def _record(self, req: Any) -> None:
        if req.method in ("POST", "PUT", "DELETE", "PATCH"):
            self.writes.append((req.method, req.headers.get("x-csrf-token")))

    def page(self) -> Any:
        pg = self.context.new_page()
        pg.set_default_timeout(WAIT_MS)
        pg.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return pg

    def close(self, allow_network_errors: bool = False) -> None:
        self.context.close()
        errors = [e for e in self.errors if not e.startswith("Failed to load resource")]
        assert not errors, errors  # e.g. a script or style refused by the content policy
        assert self.writes, "no state-changing request was seen"
        assert all(tok in self.tokens for _, tok in self.writes), self.writes


def _open_as(pg: Any, server: LiveServer, who: str) -> None:
    """Open the page and type a name in it."""
    pg.goto(f"{server.url}/verify")
    pg.fill("#who", who)
    pg.press("#who", "Tab")


def _send(pg: Any, who: str, text: str) -> None:
    """Type a name and a search text in the form and send it (Enter)."""
    pg.fill("#who", who)
    pg.press("#who", "Tab")
    pg.fill("#query", text)
    pg.press("#query", "Enter")


def _search(pg: Any, server: LiveServer, who: str, text: str) -> str:
    pg.goto(f"{server.url}/verify")
    _send(pg, who, text)
    pg.wait_for_selector("#r0.current")
    pg.wait_for_function("() => document.activeElement && document.activeElement.id === 'list'")
    return str(pg.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('s')"))


def _mark_first(pg: Any) -> None:
    """Mark the first result relevant (the key `1`) and wait until the server has it."""
    pg.keyboard.press("1")
    pg.wait_for_selector("#r0[data-state='saved']")


def _server_marks(server: LiveServer, sid: str, who: str) -> dict[int, str]:
    r = httpx.get(f"{server.url}/verify/api/c/walk/searches/{sid}/results?offset=0&limit=100")
    r.raise_for_status()
    return {it["image_id"]: it["marks"][who] for it in r.json()["results"] if who in it["marks"]}


def _ids(pg: Any) -> list[int]:
    return [
        int(x) for x in pg.eval_on_selector_all(".result", "els => els.map(e => e.dataset.imageId)")
    ]


def _round_shown(pg: Any, also: str = "true", what: str = "the ranking round shown") -> None:
    """Wait until the page shows a ranking round and the JavaScript condition ``also`` holds
    (the page's state on timeout)."""
    with _state_on_timeout(pg, what):
        pg.wait_for_function(
            "() => document.getElementById('round').textContent.startsWith('ranking: round')"
            f" && ({also})"
        )


def _shows_server_ranking(pg: Any, server: LiveServer, sid: str) -> list[int]:
    """The page's results: distinct, and the first ones of the server's ranking of ``sid``."""
    ids = _ids(pg)
    r = httpx.get(f"{server.url}/verify/api/c/walk/searches/{sid}/results?offset=0&limit=100")
    r.raise_for_status()
    ranked = [it["image_id"] for it in r.json()["results"]]
    assert len(ids) == len(set(ids)), ids
    assert ids == ranked[: len(ids)], (ids, ranked)
    return ids


def _more_shows_server_ranking(pg: Any, server: LiveServer, sid: str) -> list[int]:
    """``m`` loads more results; then :func:`_shows_server_ranking`."""
    n = len(_ids(pg))
    pg.keyboard.press("m")
    pg.wait_for_function(
        "(n) => !S.loading && document.querySelectorAll('.result').length > n", arg=n
    )
    return _shows_server_ranking(pg, server, sid)


def _all_saved(pg: Any, timeout: float = WAIT_MS) -> None:
    pg.wait_for_function(
        "() => !document.querySelector('.result[data-state=pending]')", timeout=timeout
    )


def _simulate(keys: str, n: int) -> tuple[dict[int, str], int]:
    """Marks (position -> mark) and final cursor a key sequence gives, the page's rules."""
    marks: dict[int, str] = {}
    undo: list[tuple[int, str | None]] = []
    cur = 0
    for k in keys:
        if k in KEYS:
            undo.append((cur, marks.get(cur)))
            if KEYS[k] == "clear":
                marks.pop(cur, None)
            else:
                marks[cur] = KEYS[k]
            cur = min(cur + 1, n - 1)
        elif k == "j":
            cur = min(cur + 1, n - 1)
        elif k == "k":
            cur = max(cur - 1, 0)
        elif k == "z" and undo:
            i, prev = undo.pop()
            if prev is None:
                marks.pop(i, None)
            else:
                marks[i] = prev
            cur = i
    return marks, cur


def test_mark_reload_and_export_in_a_browser(browser: Any, server: LiveServer) -> None:
    tab = Tab(browser, server)
    page = tab.page()
    sid = _search(page, server, "ana", "red")
    first, second = _ids(page)[:2]
    # Focus is on the results after the search: the first key marks the first result.
    page.keyboard.press("1")
    page.wait_for_selector("#r0[data-mark='relevant'][data-state='saved']")
    page.keyboard.press("n")
    page.wait_for_selector("#r1[data-mark='not_relevant'][data-state='saved']")
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
    page.wait_for_selector(f"#r{n0}.current")  # the last key moved past the first page
    shown = page.locator(".result").count()

    page.reload()  # the URL keeps the search; marks come back from the server
    page.wait_for_selector("#r1[data-mark='not_relevant']")
    assert page.get_attribute("#r0", "data-mark") == "relevant"
    # as many results as were shown come back, the cursor where it was
    page.wait_for_selector(f"#r{n0}.current")
    assert page.locator(".result").count() >= shown > n0
    assert page.input_value("#who") == "ana" and page.input_value("#query") == "red"

    href = page.get_attribute("#csv", "href")
    csv = page.request.get(server.url + href if href.startswith("/") else href)
    df = pd.read_csv(io.StringIO(csv.text()))
    marks = dict(zip(df["image_id"].astype(int), df["mark"], strict=True))
    assert marks == {first: "relevant", second: "not_relevant"}
    assert set(df["who"]) == {"ana"}
    assert _server_marks(server, sid, "ana") == marks
    # the files other tools read are linked beside it (docs/interop.md)
    bodies = {}
    for link, kind in (("#inquire-search", "text/csv"), ("#dwca", "application/zip")):
        href = page.get_attribute(link, "href")
        got = page.request.get(server.url + href if href.startswith("/") else href)
        assert got.ok and got.headers["content-type"].startswith(kind)
        bodies[link] = got.body()
    rows = pd.read_csv(io.BytesIO(bodies["#inquire-search"]), dtype=str)
    assert rows["marked"].tolist() == ["1", "0"]  # rank 1 relevant, rank 2 not
    tab.close()


def test_learn_from_marks_key(browser: Any, server: LiveServer) -> None:
    """`l` re-ranks what nobody marked yet: results up to the cursor stay, the rest is the
    feedback ranking (never a marked image), and the page says which ranking it shows."""
    tab = Tab(browser, server)
    page = tab.page()
    # A query of its own per server, so the other server's rounds are not in the way.
    sid = _search(page, server, "bo", "blue" if server.kind == "inquire-serve" else "green")
    for key in "1n1n":
        page.keyboard.press(key)
    _all_saved(page)
    before = _ids(page)[:5]  # the four marked and the one under the cursor: all seen
    shown_before = page.text_content("#round")  # the search may have rounds already
    page.keyboard.press("l")
    page.wait_for_function(
        "(t) => document.getElementById('round').textContent.startsWith('ranking: round') "
        "&& document.getElementById('round').textContent !== t",
        arg=shown_before,
    )
    ids = _ids(page)
    assert ids[:5] == before
    assert not set(ids[5:]) & set(before)
    assert page.locator(".result .round").count() == len(ids) - 5
    assert page.get_attribute("#r5", "class").endswith("current")
    r = httpx.get(f"{server.url}/verify/api/c/walk/searches/{sid}/results?offset=0&limit=100")
    assert [it["image_id"] for it in r.json()["results"]][: len(ids)] == ids
    tab.close()


def test_fast_keys_undo_and_taps(browser: Any, server: LiveServer) -> None:
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    sid = _search(page, server, "bo", "blue")
    ids = _ids(page)
    keys = "1n3y2u1x1kkz2j0yzz1n"  # marks, moves, clears, undos; 10 ms apart
    for k in keys:
        page.keyboard.press(k)
        page.wait_for_timeout(10)
    want, cur = _simulate(keys, len(ids))
    _all_saved(page)
    assert page.get_attribute(f"#r{cur}", "class").endswith("current")
    shown = {i: page.get_attribute(f"#r{i}", "data-mark") for i in range(len(keys))}
    assert {i: m for i, m in shown.items() if m} == want
    assert _server_marks(server, sid, "bo") == {ids[i]: m for i, m in want.items()}

    # Tapping the buttons of a result marks that result (phones have no keyboard).
    page.click("#r15 .tap button[data-mark='unsure']")
    page.wait_for_selector("#r15[data-mark='unsure'][data-state='saved']")
    assert _server_marks(server, sid, "bo")[ids[15]] == "unsure"

    # A mark the server refuses shows as failed and is sent again with `r`.
    def refuse(route: Any) -> None:
        route.fulfill(status=409, content_type="application/json", body='{"detail": "busy"}')

    page.route("**/marks", refuse)
    page.click("#r16")
    page.keyboard.press("2")
    page.wait_for_selector("#r16[data-state='failed']")
    assert ids[16] not in _server_marks(server, sid, "bo")
    assert page.inner_text("#retry") == "retry 1 failed mark (r)"
    page.unroute("**/marks", refuse)
    page.keyboard.press("r")
    page.wait_for_selector("#r16[data-state='saved']")
    assert page.locator("#retry").is_hidden()
    # the same with the button (phones have no r key)
    page.route("**/marks", refuse)
    page.click("#r17 .tap button[data-mark='relevant']")
    page.wait_for_selector("#r17[data-state='failed']")
    page.unroute("**/marks", refuse)
    page.click("#retry")
    page.wait_for_selector("#r17[data-state='saved']")
    assert _server_marks(server, sid, "bo")[ids[17]] == "relevant"
    assert _server_marks(server, sid, "bo")[ids[16]] == "not_relevant"
    tab.errors.clear()  # the refused request is logged by the browser
    tab.close()


def test_server_gone_and_back(browser: Any, server: LiveServer) -> None:
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    sid = _search(page, server, "cy", "green")
    ids = _ids(page)
    _mark_first(page)
    server.stop()
    try:
        for k in "n3y":
            page.keyboard.press(k)
            page.wait_for_timeout(10)
        page.wait_for_selector("#offline:not([hidden])")
        assert "3 marks are not saved" in page.inner_text("#offline")
        # The banner is on screen wherever the list is scrolled.
        page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
        assert page.evaluate("() => window.scrollY") > 200
        box = page.locator("#offline").bounding_box()
        assert box is not None and 0 <= box["y"] < 800
        for i in (1, 2, 3):
            assert page.get_attribute(f"#r{i}", "data-state") == "pending"
        assert page.get_attribute("#r4", "class").endswith("current")
    finally:
        server.start()
    page.wait_for_selector("#offline", state="hidden")
    _all_saved(page)
    want = {ids[0]: "relevant", ids[1]: "not_relevant", ids[2]: "unsure", ids[3]: "relevant"}
    assert _server_marks(server, sid, "cy") == want
    tab.errors.clear()  # the refused connections while the server was away
    tab.close()


def test_mark_from_another_tab_shows_up(browser: Any, server: LiveServer) -> None:
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    one = tab.page()
    sid = _search(one, server, "di", "yellow")
    ids = _ids(one)
    two = tab.page()
    two.goto(one.url)
    two.wait_for_selector("#r0.current")
    one.keyboard.press("y")
    two.wait_for_selector("#r0[data-mark='relevant']")  # no reload: the other tab told it
    # A mark by someone else in another browser shows when the tab gets focus again.
    other = Tab(browser, server)
    eve = other.page()
    assert _search(eve, server, "eve", "yellow") == sid
    for k in "jjn":
        eve.keyboard.press(k)
    eve.wait_for_selector("#r2[data-state='saved']")
    assert _server_marks(server, sid, "eve") == {ids[2]: "not_relevant"}
    other.close()
    two.evaluate("() => window.dispatchEvent(new Event('focus'))")
    two.wait_for_function("() => document.querySelector('#r2 .others').textContent.includes('eve')")
    tab.close()


_PAGE_STATE = """() => ({sid: S.sid, gen: S.gen, loading: !!S.loading, done: S.done,
  items: S.items.length, loadError: S.loadError, sinceFailed: Date.now() - S.failedAt,
  retry: !!S.retry, hash: location.hash, query: document.getElementById('query').value,
  cur: KQ.cur, loaded: KQ.loaded, queued: KQ.queue.length, pending: Q.pending.length,
  failed: Q.failed.length, offline: Q.offline,
  shown: document.getElementById('list').children.length,
  current: document.querySelectorAll('.result.current').length,
  r0: (document.getElementById('r0') || {dataset: {}}).dataset.state})"""


@contextlib.contextmanager
def _state_on_timeout(page: Any, what: str) -> Iterator[None]:
    """A wait that times out fails with the page's own state in the message (a rare timeout
    here could not be explained without it)."""
    try:
        yield
    except Exception as exc:
        try:
            state = page.evaluate(_PAGE_STATE)
        except Exception as inner:  # the page itself is gone
            state = f"(page state unreadable: {inner})"
        raise AssertionError(f"waiting for {what}: {exc}\npage state: {state}") from exc


def test_a_link_to_another_search_opens_it_without_a_reload(
    browser: Any, server: LiveServer
) -> None:
    """Pasting a link to another search into an open Verify tab changes only the fragment:
    the page opens that search (its text and results), and keys mark its results."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    first = _search(page, server, "ike", "navy")
    second = _search(page, server, "ike", "lime")
    assert first != second
    page.goto(f"{server.url}/verify#c=walk&s={first}")  # same document: a hash change only
    with _state_on_timeout(page, "the hash change opens the first search"):
        page.wait_for_function("() => document.getElementById('query').value === 'navy'")
        page.wait_for_selector("#r0.current")
    page.focus("#list")
    page.keyboard.press("1")
    with _state_on_timeout(page, "the key marks the first result"):
        page.wait_for_selector("#r0[data-state='saved']")
    assert _server_marks(server, first, "ike") == {_ranking(server, first)[0]: "relevant"}
    assert _server_marks(server, second, "ike") == {}
    tab.close()


def test_two_tabs_marking_the_same_results_end_showing_what_is_saved(
    browser: Any, server: LiveServer
) -> None:
    """Two tabs of one person give conflicting marks to the same ten results, key for key:
    whichever mark the server saved last, both tabs end up showing it (a message from the
    other tab arriving after this tab's own answer must not leave a stale mark on screen)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    one = tab.page()
    sid = _search(one, server, "ida", "teal")
    two = tab.page()
    two.goto(one.url)
    two.wait_for_selector("#r0.current")
    two.focus("#list")
    for i in range(10):
        one.keyboard.press("1" if i % 2 else "2")
        two.keyboard.press("2" if i % 2 else "1")
    for pg in (one, two):
        _all_saved(pg)
    ids = _ids(one)
    saved = _server_marks(server, sid, "ida")
    assert set(saved) == set(ids[:10])
    want = [saved[i] for i in ids[:10]]
    for pg in (one, two):
        pg.wait_for_function(
            "(want) => want.every((m, i) => document.getElementById('r' + i).dataset.mark === m)",
            arg=want,
        )
    assert _server_marks(server, sid, "ida") == saved  # reading never wrote
    tab.close()


# Texts of the charts drawn level (title, legend, axis numbers) that leave their chart or
# overlap another (more than a pixel each way).
_CHART_TEXT_CLASH = """() => {
  const out = [];
  for (const svg of document.querySelectorAll('aside svg')) {
    const box = svg.getBoundingClientRect();
    const texts = [...svg.querySelectorAll('text')]
      .filter(t => t.textContent.trim() && !t.getAttribute('transform'))
      .map(t => [t.textContent.slice(0, 30), t.getBoundingClientRect()]);
    for (const [name, r] of texts) {
      if (r.left < box.left - 1 || r.right > box.right + 1) out.push(`${name} leaves its chart`);
    }
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
      const [a, ra] = texts[i], [b, rb] = texts[j];
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 1 && h > 1) out.push(`${a} overlaps ${b}`);
    }
  }
  return out;
}"""


def test_verify_page_fits_phone_and_desktop_screens(browser: Any, server: LiveServer) -> None:
    """At 390 px and 1280 px: no sideways scrolling with a long name, a long search text (an
    unbroken 150-character word) and long saved searches, tap targets of 40 px on the phone,
    and chart text of at least 11 px on screen, inside its chart, never over other text."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    ARTIFACTS.mkdir(exist_ok=True)
    tab = Tab(browser, server)
    page = tab.page()
    long_text = "purple " + "x" * 150 + " flowers beside a path " * 8
    _search(page, server, "Fay-" + "y" * 60, long_text)
    _mark_first(page)
    page.wait_for_selector("#trend svg")
    problems = {}
    for size, width, height in VIEWPORTS:
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("() => window.scrollTo(0, 0)")
        # the charts are drawn again for the new width: wait until their text is >= 11 px
        page.wait_for_function(
            f"() => {{ const px = ({_CHART_TEXT_PX})(); "
            "return px.length > 0 && Math.min(...px) >= 10.99; }"
        )
        page.screenshot(path=str(ARTIFACTS / f"verify_{size}.png"), full_page=False)
        found = layout_findings(page, phone=size == "phone")
        clash = page.evaluate(_CHART_TEXT_CLASH)  # the long search text is the chart's title
        if clash:
            found = [*found, *clash]
        if found:
            problems[size] = found
    assert problems == {}, problems
    tab.close()


def _ranking(server: LiveServer, sid: str) -> list[int]:
    r = httpx.get(f"{server.url}/verify/api/c/walk/searches/{sid}/results?offset=0&limit=500")
    r.raise_for_status()
    return [it["image_id"] for it in r.json()["results"]]


def _wait_for_marks(server: LiveServer, sid: str, who: str, want: dict[int, str]) -> None:
    """Poll the server until ``who``'s marks equal ``want`` (or WAIT_MS passed), then compare."""
    deadline = time.monotonic() + WAIT_MS / 1000
    got = _server_marks(server, sid, who)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.2)
        got = _server_marks(server, sid, who)
    assert got == want


def test_fast_keys_across_page_loads(browser: Any, server: LiveServer) -> None:
    """30 marks 10 ms apart from rank 1 (the first page holds 24), then random keys running
    down through every page to the end of the ranking: every key applies, in order, to the
    result it was meant for, as a simulation of the same keys on a fully loaded list says."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    sid = _search(page, server, "gus", "orange")
    assert page.locator(".result").count() == 24
    keys = "".join("1n3"[i % 3] for i in range(30))
    for k in keys:
        page.keyboard.press(k)
        page.wait_for_timeout(10)  # the pace of a fast typist, not a wait for anything
    ids = _ranking(server, sid)
    want, cur = _simulate(keys, 60)
    page.wait_for_selector(f"#r{cur}.current")
    _all_saved(page)
    ids = _ranking(server, sid)
    _wait_for_marks(server, sid, "gus", {ids[i]: m for i, m in want.items()})

    rng = random.Random(20)
    for n_keys in (70, 90):
        tab2 = Tab(browser, server)
        pg = tab2.page()
        text = f"orange {n_keys}"
        sid = _search(pg, server, "gus", text)
        # mostly marks and moves down, some moves up, clears and undos: past 24, 48 and 60
        keys = "".join(rng.choice("123nyu0xjjjjjjkz") for _ in range(n_keys))
        for k in keys:
            pg.keyboard.press(k)
            pg.wait_for_timeout(10)
        want, cur = _simulate(keys, 60)
        pg.wait_for_selector(f"#r{cur}.current")
        _all_saved(pg)
        ids = _ranking(server, sid)
        assert len(ids) == 60
        _wait_for_marks(server, sid, "gus", {ids[i]: m for i, m in want.items()})
        shown = {i: pg.get_attribute(f"#r{i}", "data-mark") for i in range(60)}
        assert {i: m for i, m in shown.items() if m} == want, keys
        tab2.close()
    tab.close()


def test_keys_wait_through_failed_loads(browser: Any, server: LiveServer) -> None:
    """Keys pressed past the loaded results while "more" fails stay queued and the page says
    why: a server error (500) is tried again by itself, a refusal (404) waits for the m key;
    once a load succeeds every key applies, in order, to the result it was meant for."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    posts: list[str] = []

    for status_code, value, text in ((500, "unsure", "olive 500"), (404, "relevant", "olive 404")):
        tab = Tab(browser, server)
        page = tab.page()
        sid = _search(page, server, "hal", text)
        assert page.locator(".result").count() == 24

        def refuse(route: Any, code: int = status_code) -> None:
            if route.request.method == "POST":
                posts.append(route.request.url)
                route.fulfill(
                    status=code, content_type="application/json", body='{"detail": "boom"}'
                )
            else:
                route.continue_()

        refuse_this = functools.partial(refuse, code=status_code)

        page.route("**/results", refuse_this)
        key = {"unsure": "3", "relevant": "1"}[value]
        for _ in range(30):  # the first page holds 24: six marks wait for the next
            page.keyboard.press(key)
        again = "trying again" if status_code >= 500 else "press m to try again"
        page.wait_for_function(
            "(again) => { const s = document.getElementById('status');"
            " const t = s.textContent; return s.className === 'err'"
            " && t.includes('could not load more results: boom')"
            " && t.includes('keys waiting') && t.includes(again); }",
            arg=again,
        )
        _all_saved(page)
        assert page.locator(".result").count() == 24  # nothing applied past the loaded ones
        page.unroute("**/results", refuse_this)
        if status_code < 500:
            page.keyboard.press("m")  # a refusal is not tried again until asked
        page.wait_for_selector("#r30.current")
        _all_saved(page)
        ids = _ranking(server, sid)
        _wait_for_marks(server, sid, "hal", {ids[i]: value for i in range(30)})
        tab.close()
    assert posts, "no load was refused"


INJECTED = "#evil, #evil2, meta[http-equiv]"


def test_crafted_links_and_names_inject_no_html(browser: Any, server: LiveServer) -> None:
    """A link whose fragment carries markup (the search id and collection name reach the
    exports box and requests) and names and search texts holding markup are shown as text:
    no element is injected and the page never navigates away."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    from urllib.parse import quote

    evil = (
        '"><meta http-equiv="refresh" content="0;url=http://evil.example/">'
        '<a id="evil" href="http://evil.example/">Download CSV</a><img id="evil2" src=x>'
    )
    tab = Tab(browser, server)
    page = tab.page()
    text = '<i id="inj2">cyan</i>'
    sid = _search(page, server, '<b id="inj">ivy</b>', text)
    _mark_first(page)
    page.wait_for_function("() => document.getElementById('csv')")
    for crafted in (f"{sid}/summary?x=1&{evil}#", evil, f"{sid}{evil}"):
        pg = tab.page()
        pg.goto(f"{server.url}/verify#c=walk&s={quote(crafted, safe='')}")
        pg.wait_for_function("() => document.getElementById('status').className === 'err'")
        pg.wait_for_load_state("networkidle")
        assert pg.url.startswith(server.url + "/verify")
        assert (
            pg.evaluate("() => document.querySelectorAll('#evil, #evil2, meta[http-equiv]').length")
            == 0
        )
        assert pg.locator("#csv").count() == 0
        pg.close()
    pg = tab.page()
    pg.goto(f"{server.url}/verify#c={quote('walk' + evil, safe='')}&s={sid}")
    pg.wait_for_function("() => document.getElementById('status').className === 'err'")
    assert (
        pg.evaluate("() => document.querySelectorAll('#evil, #evil2, meta[http-equiv]').length")
        == 0
    )
    # Names and texts holding markup are text: in the results, the saved list, the summary.
    other = Tab(browser, server)
    eve = other.page()
    eve.goto(page.url)
    eve.wait_for_selector("#r0.current")
    eve.fill("#who", '<b id="inj3">eve</b>')
    eve.press("#who", "Tab")
    eve.focus("#list")
    eve.keyboard.press("n")
    eve.wait_for_selector("#r0[data-state='saved']")
    other.close()
    page.evaluate("() => window.dispatchEvent(new Event('focus'))")
    page.wait_for_function(
        "() => document.querySelector('#r0 .others').textContent.includes('<b id=\"inj3\">eve</b>')"
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('#saved option')]"
        ".some(o => o.textContent.includes('<i id=\"inj2\">'))"
    )
    page.wait_for_function(
        "() => document.getElementById('summary').textContent.includes('<b id=\"inj\">ivy</b>')"
    )
    assert page.evaluate("() => document.querySelectorAll('#inj, #inj2, #inj3').length") == 0
    assert page.url.startswith(server.url + "/verify")
    tab.errors.clear()  # the crafted links' refused requests are logged by the browser
    tab.close()


_CHART_TEXT_PX = """() => {
  const out = [];
  for (const svg of document.querySelectorAll('aside svg')) {
    const scale = svg.getBoundingClientRect().width / svg.width.baseVal.value;
    for (const t of svg.querySelectorAll('text')) {
      if (!t.textContent.trim()) continue;
      out.push(parseFloat(getComputedStyle(t).fontSize) * scale);
    }
  }
  return out;
}"""


def test_a_search_sent_before_the_collections_arrive_waits_for_them(
    browser: Any, server: LiveServer
) -> None:
    """The form can be filled and sent before the page's list of collections has arrived (a
    slow server, a busy machine): the search waits for the list and then runs in the chosen
    collection, instead of failing with no collection named."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    held: list[Any] = []

    def hold(route: Any) -> None:  # the first answer waits until the test lets it go
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/verify/api/collections", hold)
    page.goto(f"{server.url}/verify")
    page.wait_for_function("() => document.readyState === 'complete'")
    assert page.evaluate("() => document.getElementById('collection').options.length") == 0
    page.fill("#who", "jo")
    page.press("#who", "Tab")
    page.fill("#query", "plum")
    deadline = time.monotonic() + WAIT_MS / 1000
    while not held and time.monotonic() < deadline:  # the request is held, not answered
        page.wait_for_timeout(20)
    assert held, "the page did not ask for its collections"
    page.press("#query", "Enter")  # the submit handler has run: no collection is known yet
    held[0].continue_()
    with _state_on_timeout(page, "the search runs once the collections arrive"):
        page.wait_for_selector("#r0.current")
    assert page.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('c')") == "walk"
    assert page.get_attribute("#status", "class") != "err", page.inner_text("#status")
    _mark_first(page)
    tab.close()


def test_with_no_collection_a_search_says_how_to_make_one(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    from inquire.web.verify import make_app

    (tmp_path / "empty").mkdir()
    empty = LiveServer(make_app(tmp_path / "empty"))
    empty.start()
    try:
        tab = Tab(browser, empty)
        page = tab.page()
        page.goto(f"{empty.url}/verify")
        _send(page, "jo", "plum")
        page.wait_for_function(
            "() => document.getElementById('status').className === 'err' && document"
            ".getElementById('status').textContent.includes('inquire collection create')"
        )
        assert tab.writes == []  # nothing was sent for a collection that is not there
        tab.context.close()
        assert not tab.errors, tab.errors
    finally:
        empty.stop()


# The page counts the answers it has read (json() or text() resolved) that a test held and then
# let go (_release marks them with a header): a test waits for the page to have read the answer
# it held; what the page does with it follows in the same turn, before the test looks.
_COUNT_READS = """(() => {
  window.__heldRead = 0;
  for (const name of ["json", "text"]) {
    const orig = Response.prototype[name];
    Response.prototype[name] = function () {
      const held = this.headers.get("x-test-held");
      return orig.call(this).then(v => { if (held) window.__heldRead++; return v; });
    };
  }
})();"""


def _release(page: Any, route: Any) -> None:
    """Let a held request go, and wait until the page has read its answer."""
    n = int(page.evaluate("() => window.__heldRead"))
    resp = route.fetch()
    route.fulfill(response=resp, headers={**resp.headers, "x-test-held": "1"})
    page.wait_for_function("(n) => window.__heldRead > n", arg=n)


def _hold_first(page: Any, pattern: Any, method: str = "GET") -> list[Any]:
    """Hold the first ``method`` request to ``pattern`` (the list fills with it) until the
    test calls ``continue_()`` on it; every other request goes through."""
    held: list[Any] = []

    def hold(route: Any) -> None:
        if held or route.request.method != method:
            route.continue_()
        else:
            held.append(route)

    page.route(pattern, hold)
    return held


def _wait_held(page: Any, held: list[Any]) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while not held and time.monotonic() < deadline:  # polls the route handler, not a timing
        page.wait_for_timeout(20)
    assert held, "the page did not send the request the test holds"


def test_a_linked_search_opened_late_does_not_replace_the_one_the_user_sent(
    browser: Any, server: LiveServer
) -> None:
    """A link to a search is opened on a slow server and, before the page got to the linked
    search, the user sends a search of their own: the page shows theirs, also when the linked
    one would be ready after it (the page must not switch to a search nobody asked for)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    linked = _search(tab.page(), server, "kim", "coral")
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    held = _hold_first(page, "**/verify/api/c/walk/searches")  # the saved list: the page waits
    page.goto(f"{server.url}/verify#c=walk&s={linked}")
    _wait_held(page, held)
    _send(page, "kim", "sand")
    page.wait_for_function(
        "() => document.getElementById('query').value === 'sand'"
        " && document.querySelector('#r0.current')"
        " && document.getElementById('saved').options.length > 1"
    )
    mine = page.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('s')")
    assert mine != linked
    _release(page, held[0])  # the saved list the page asked for first arrives now
    with _state_on_timeout(page, "the user's search stays"):
        assert page.evaluate("() => S.sid") == mine
        page.wait_for_selector("#r0.current")
    assert page.input_value("#query") == "sand"
    tab.close()


def test_a_search_left_while_loading_does_not_move_the_cursor_of_the_next(
    browser: Any, server: LiveServer
) -> None:
    """A search whose results are slow to come is left for another (the user sends a new
    one): when the first one's results come at last, the cursor of the search now shown
    stays where it is (the first search's remembered cursor is not applied to it)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    one = tab.page()
    slow = _search(one, server, "lia", "rust")
    for _ in range(5):
        one.keyboard.press("j")
    one.wait_for_selector("#r5.current")  # remembered: this search comes back at result 5
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    held = _hold_first(page, f"**/searches/{slow}/results", method="POST")
    page.goto(f"{server.url}/verify#c=walk&s={slow}")
    _wait_held(page, held)
    _send(page, "lia", "slate")
    page.wait_for_function(
        "() => document.getElementById('query').value === 'slate'"
        " && document.querySelector('#r0.current')"
    )
    _release(page, held[0])
    with _state_on_timeout(page, "the cursor stays on the first result"):
        assert page.evaluate("() => document.querySelector('.result.current').id") == "r0"
        assert page.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('s')") != slow
    tab.close()


def test_a_link_opened_while_the_server_is_away_opens_once_it_is_back(
    browser: Any, server: LiveServer
) -> None:
    """The list of collections and the linked search's results get no answer (the server
    restarts): the page says so, tries again, and once the server answers it fills the lists
    and shows the linked search, as if the first requests had been answered."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    linked = _search(tab.page(), server, "max", "amber")
    page = tab.page()
    failed: list[str] = []

    def no_answer(route: Any) -> None:
        if failed:
            route.continue_()
        else:
            failed.append(route.request.url)
            route.abort("connectionrefused")

    page.route("**/verify/api/collections", no_answer)
    lost = _hold_first(page, f"**/searches/{linked}/results", method="POST")
    page.goto(f"{server.url}/verify#c=walk&s={linked}")
    _wait_held(page, lost)
    lost[0].abort("connectionrefused")  # the linked search's first results get none either
    with _state_on_timeout(page, "the linked search opens once the server answers"):
        page.wait_for_selector("#r0.current")
    assert failed
    assert page.input_value("#query") == "amber"
    page.wait_for_selector("#offline", state="hidden")
    page.wait_for_function("() => document.getElementById('saved').options.length > 1")
    tab.errors.clear()  # the refused request is logged by the browser
    tab.close()


def test_a_link_naming_an_unknown_collection_leaves_the_search_form_usable(
    browser: Any, server: LiveServer
) -> None:
    """A link to a collection that is not there (renamed, removed, mistyped) says so; a search
    sent after it runs in a collection that is there, instead of being told that there is no
    collection at all."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    page.goto(f"{server.url}/verify#c=gone&s=abc")
    page.wait_for_function("() => document.getElementById('status').className === 'err'")
    # The refusal of the link can come before the list of collections (two requests at once).
    page.wait_for_function("() => document.getElementById('collection').options.length > 0")
    assert page.input_value("#collection") == "walk"
    _send(page, "ned", "mint")
    page.wait_for_function(
        "() => document.querySelector('#r0.current')"
        " || document.getElementById('status').textContent.includes('collection create')"
    )
    assert page.locator("#r0.current").count() == 1, page.inner_text("#status")
    tab.errors.clear()  # the refused request for the unknown collection
    tab.close()


def test_a_search_sent_twice_shows_the_last_one_sent(browser: Any, server: LiveServer) -> None:
    """Enter, then a changed text and Enter again before the first search was made: when the
    first answer comes after the second, the page still shows the second (the last asked)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    held = _hold_first(page, "**/verify/api/c/walk/searches", method="POST")
    page.goto(f"{server.url}/verify")
    _send(page, "oli", "wheat")
    _wait_held(page, held)
    page.fill("#query", "ochre")
    page.press("#query", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#r0.current') && location.hash.includes('s=')"
    )
    second = page.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('s')")
    assert page.input_value("#query") == "ochre"
    _release(page, held[0])
    with _state_on_timeout(page, "the second search stays"):
        assert page.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('s')") == second
        assert page.evaluate("() => S.sid") == second
        page.wait_for_selector("#r0.current")
    assert page.input_value("#query") == "ochre"
    tab.close()


def test_a_search_after_the_collections_failed_asks_for_them_again(
    browser: Any, server: LiveServer
) -> None:
    """The list of collections is refused once (a server error): the page says so, and a
    search sent after it asks for the list again and runs."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    refused: list[str] = []

    def refuse_once(route: Any) -> None:
        if refused:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.fulfill(status=500, content_type="application/json", body='{"detail": "boom"}')

    page.route("**/verify/api/collections", refuse_once)
    page.goto(f"{server.url}/verify")
    page.wait_for_function(
        "() => document.getElementById('status').className === 'err'"
        " && document.getElementById('status').textContent === 'boom'"
    )
    _send(page, "pia", "rose")
    with _state_on_timeout(page, "the search runs once the list is there"):
        page.wait_for_selector("#r0.current")
    assert page.input_value("#collection") == "walk"
    page.wait_for_function("() => document.getElementById('saved').options.length > 1")
    tab.errors.clear()  # the refused request is logged by the browser
    tab.close()


@pytest.mark.parametrize("failure", ["server error", "no answer", "no answer, then an error"])
def test_the_list_of_collections_is_asked_again_by_itself_after_a_failure(
    browser: Any, server: LiveServer, failure: str
) -> None:
    """The page's first requests for its list of collections fail (a server error, or no
    answer at all): the page says so and asks again by itself, a little later (never at once:
    a server that answers with errors is asked later and later), until the list arrives; the
    user does not have to send a search for it."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    asked: list[float] = []

    def fail_twice(route: Any) -> None:
        asked.append(time.monotonic())
        if len(asked) > 2:
            route.continue_()
        elif failure == "server error" or (failure.endswith("error") and len(asked) == 2):
            route.fulfill(status=500, content_type="application/json", body='{"detail": "boom"}')
        else:
            route.abort("connectionrefused")

    page.route("**/verify/api/collections", fail_twice)
    page.goto(f"{server.url}/verify")
    with _state_on_timeout(page, "the list of collections, asked for again"):
        page.wait_for_function("() => document.getElementById('collection').options.length > 0")
        page.wait_for_function("() => document.getElementById('saved').options.length > 0")
        page.wait_for_selector("#offline", state="hidden")
    assert page.input_value("#collection") == "walk"
    assert len(asked) >= 3, asked
    gaps = [asked[1] - asked[0], asked[2] - asked[1]]
    assert min(gaps) >= 0.8 * 1.5, gaps  # RETRY_MS apart at least
    if failure == "server error":  # the second wait is longer
        assert gaps[1] >= 0.8 * 3.0, gaps
    tab.errors.clear()  # the failed requests are logged by the browser
    _send(page, "ola", "teal")
    page.wait_for_selector("#r0.current")
    _mark_first(page)
    tab.close()


@pytest.fixture()
def two_collections(tmp_path: Path) -> Iterator[LiveServer]:
    """A verify-only server with two small collections, alpha and beta."""
    from inquire.web.verify import make_app

    for i, name in enumerate(("alpha", "beta")):
        make_photo_folder(tmp_path / name, n=30, seed=10 + i)
        create_collection(name, tmp_path / name, "toy:colour", root=tmp_path / "collections")
    srv = LiveServer(make_app(tmp_path / "collections"))
    srv.kind = "verify-only"
    srv.start()
    yield srv
    srv.stop()


def _search_in(pg: Any, collection: str, text: str) -> str:
    pg.select_option("#collection", collection)
    pg.fill("#query", text)
    pg.press("#query", "Enter")
    pg.wait_for_function(
        "(t) => document.getElementById('query').value === t"
        " && new URLSearchParams(location.hash.slice(1)).get('c') === document"
        ".getElementById('collection').value && document.querySelector('#r0.current')",
        arg=text,
    )
    return str(pg.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('s')"))


def test_switching_collections_shows_the_saved_searches_of_the_one_chosen(
    browser: Any, server: LiveServer, two_collections: LiveServer
) -> None:
    """The saved searches of the first collection arrive late, after the user switched to the
    second one and its list came: the saved list stays the second collection's (picking from
    it opens a search of the collection shown)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once")
    srv = two_collections
    tab = Tab(browser, srv)
    maker = tab.page()
    _open_as(maker, srv, "quin")
    in_beta = _search_in(maker, "beta", "beta things")
    _search_in(maker, "alpha", "alpha things")
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    held = _hold_first(page, "**/verify/api/c/alpha/searches")
    page.goto(f"{srv.url}/verify")
    _wait_held(page, held)
    page.select_option("#collection", "beta")
    page.wait_for_function("() => document.getElementById('saved').options.length > 1")
    _release(page, held[0])
    saved = page.eval_on_selector_all("#saved option", "os => os.map(o => o.value)")
    assert saved == ["", in_beta], saved
    tab.close()


def test_a_mark_made_while_a_new_search_is_sent_goes_to_the_search_shown(
    browser: Any, server: LiveServer, two_collections: LiveServer
) -> None:
    """A search of alpha is shown; the user picks beta and sends a new search, and while it is
    being made marks a result still shown: the mark is saved for the alpha search it was made
    on (not sent for that search under beta's name)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once")
    srv = two_collections
    tab = Tab(browser, srv)
    page = tab.page()
    _open_as(page, srv, "ray")
    in_alpha = _search_in(page, "alpha", "alpha view")
    held = _hold_first(page, "**/verify/api/c/beta/searches", method="POST")
    page.select_option("#collection", "beta")
    page.fill("#query", "beta view")
    page.press("#query", "Enter")
    _wait_held(page, held)
    page.click("#r0")
    page.keyboard.press("1")
    page.wait_for_function(
        "() => ['saved', 'failed'].includes(document.getElementById('r0').dataset.state)"
    )
    assert page.get_attribute("#r0", "data-state") == "saved", page.inner_text("#status")
    r = httpx.get(f"{srv.url}/verify/api/c/alpha/searches/{in_alpha}/results?offset=0&limit=1")
    assert r.json()["results"][0]["marks"] == {"ray": "relevant"}
    held[0].continue_()
    page.wait_for_function("() => new URLSearchParams(location.hash.slice(1)).get('c') === 'beta'")
    page.wait_for_selector("#r0.current")
    tab.close()


def _hold_script(page: Any) -> list[Any]:
    held: list[Any] = []
    page.route("**/assets/verify.js", lambda route: held.append(route))
    return held


def test_a_name_typed_before_the_page_script_ran_is_kept(browser: Any, server: LiveServer) -> None:
    """The page shows its form before its script has loaded (a slow server): a name typed
    then is kept when the script starts (not replaced by the one saved last time, or by
    nothing), and Enter then does not reload the page (losing what was typed)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    held = _hold_script(page)
    page.goto(f"{server.url}/verify", wait_until="commit")
    _wait_held(page, held)
    page.wait_for_selector("#query")
    page.fill("#who", "sam")
    page.fill("#query", "lilac")
    page.press("#query", "Enter")  # the script is not there yet: nothing can run the search
    assert page.url == f"{server.url}/verify"
    held[0].continue_()
    page.wait_for_function("() => document.getElementById('collection').options.length > 0")
    assert page.url == f"{server.url}/verify"
    assert page.input_value("#who") == "sam"
    assert page.input_value("#query") == "lilac"
    page.press("#query", "Enter")
    page.wait_for_selector("#r0.current")
    tab.close()


def test_marks_read_for_a_search_left_meanwhile_are_not_shown_on_the_next(
    browser: Any, server: LiveServer
) -> None:
    """The page reads a search's marks again when it gets focus; when that answer comes after
    the user opened another search, the marks are not put on the other search's results
    (the same images, but marks belong to a search)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    first = _search(page, server, "tom", "scarlet")
    for _ in range(10):
        page.keyboard.press("1")
    _all_saved(page)
    part = f"/searches/{first}/results?"
    held = _hold_first(page, re.compile(re.escape(part)))
    page.evaluate("() => window.dispatchEvent(new Event('focus'))")
    _wait_held(page, held)
    page.fill("#query", "indigo")
    page.press("#query", "Enter")
    page.wait_for_function(
        "(sid) => document.getElementById('query').value === 'indigo'"
        " && document.querySelector('#r0.current')"
        " && new URLSearchParams(location.hash.slice(1)).get('s') !== sid",
        arg=first,
    )
    marked = set(_ranking(server, first)[:10])
    assert marked & set(_ids(page)), "the test needs images shown in both searches"
    _release(page, held[0])
    with _state_on_timeout(page, "no mark on the new search"):
        assert page.locator(".result[data-mark='relevant']").count() == 0
    tab.close()


def test_a_ranking_round_that_comes_after_another_search_opened_is_not_applied_to_it(
    browser: Any, server: LiveServer
) -> None:
    """`l` asks for a ranking round (it can take a while); the user sends another search
    meanwhile: the round's answer is for the first search and leaves the new one's results
    as they are."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    _search(page, server, "uma", "sienna")
    for key in "1n1n":
        page.keyboard.press(key)
    _all_saved(page)
    held = _hold_first(page, "**/learn", method="POST")
    page.keyboard.press("l")
    _wait_held(page, held)
    page.fill("#query", "cobalt")
    page.press("#query", "Enter")
    page.wait_for_function(
        "() => document.getElementById('query').value === 'cobalt'"
        " && document.querySelector('#r0.current')"
    )
    ids = _ids(page)
    _release(page, held[0])
    assert _ids(page) == ids
    assert page.locator(".result .round").count() == 0
    assert page.text_content("#round") == "ranking: first search"
    tab.close()


def test_more_results_asked_during_a_ranking_round_wait_for_it(
    browser: Any, server: LiveServer
) -> None:
    """`m` (or the cursor reaching the end) while a ranking round is under way: the round
    replaces the results after the cursor, so no page of more results loads meanwhile (its
    offset would be the old list's, its results appended to the new one: duplicates)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    sid = _search(page, server, "ida", "olive")
    for key in "1n1n":
        page.keyboard.press(key)
    _all_saved(page)
    held_round = _hold_first(page, "**/learn", method="POST")
    held_more = _hold_first(page, "**/results", method="POST")
    page.keyboard.press("l")
    _wait_held(page, held_round)
    page.keyboard.press("m")
    _release(page, held_round[0])
    _round_shown(page)
    page.unroute("**/results")  # later pages go through
    if held_more:  # a page asked for before the round's answer came: the round went first
        _release(page, held_more[0])
    _shows_server_ranking(page, server, sid)
    _more_shows_server_ranking(page, server, sid)  # and more results load normally afterwards
    tab.close()


def test_a_ranking_round_after_a_deeper_mark_from_another_tab_shows_every_kept_result(
    browser: Any, server: LiveServer
) -> None:
    """Another person (another tab) marked result #30 of a search this page shows 24 results
    of: a ranking round keeps every result down to the deepest mark, so the page shows the
    kept ones it had not loaded (#25 to #30) before the new ones: none missing, none twice
    (it appended the new ones after its 24: six missing, and the next page, loaded at the
    server's offset, repeated new ones)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    sid = _search(page, server, "kim", "khaki")
    _mark_first(page)
    other = tab.page()
    other.goto(f"{server.url}/verify#c=walk&s={sid}")
    other.fill("#who", "lee")
    other.press("#who", "Tab")
    other.wait_for_selector(".result.current")  # where this browser's cursor was: #r1
    other.keyboard.press("m")
    other.click("#r29 .tap button[data-mark=not_relevant]")
    other.wait_for_selector("#r29[data-state='saved']")
    other.close()
    assert len(_ids(page)) == 24
    page.keyboard.press("l")
    _round_shown(
        page,
        "!S.loading && document.querySelectorAll('.result').length >= 30",
        "the round and the kept results",
    )
    _shows_server_ranking(page, server, sid)
    _more_shows_server_ranking(page, server, sid)
    tab.close()


def test_keys_pressed_while_a_ranking_round_runs_apply_to_the_new_ranking(
    browser: Any, server: LiveServer
) -> None:
    """Keys pressed while a ranking round runs wait for it and apply to the results it
    shows (the cursor on the first new one): a mark made meanwhile on a result after the
    cursor, one the round replaces, was sent for an image the server no longer ranks (it
    refused it: "not saved"), and a tap on such a result is dropped."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    sid = _search(page, server, "ned", "maroon")
    for key in "1n":
        page.keyboard.press(key)
    _all_saved(page)
    old = _ids(page)
    held: list[Any] = []

    def hold(route: Any) -> None:  # the server makes the round; its answer waits
        held.append((route, route.fetch()))

    page.route("**/learn", hold)
    page.keyboard.press("l")
    _wait_held(page, held)
    page.keyboard.press("j")
    page.keyboard.press("y")
    page.click("#r6 .tap button[data-mark=unsure]")  # a result the round replaces
    route, resp = held[0]
    route.fulfill(response=resp)
    _round_shown(
        page, "!KQ.queue.length && !Q.pending.length && !Q.busy", "the round, then the keys"
    )
    ids = _ids(page)
    assert ids[:3] == old[:3]
    assert page.evaluate("() => Q.failed.length") == 0, page.inner_text("#status")
    assert page.get_attribute("#r5", "class").endswith("current")
    assert _server_marks(server, sid, "ned") == {
        old[0]: "relevant",
        old[1]: "not_relevant",
        ids[4]: "relevant",
    }
    tab.close()


@pytest.mark.parametrize("failure", ["answer lost", "server error"])
def test_a_ranking_round_that_gets_no_answer_is_shown_if_the_server_made_it(
    browser: Any, server: LiveServer, failure: str
) -> None:
    """The server makes a ranking round but its answer is lost (the connection drops): the
    page asks the server which round the search is at and shows the round (it kept showing
    the old results after the cursor: more results then loaded at the server's offset
    repeated some, and a mark on an old result could be refused). A round the server did
    not make (a server error) leaves the results as they were, and says so after the keys
    pressed meanwhile have applied to them."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    sid = _search(page, server, "una", "ochre" if failure == "answer lost" else "umber")
    for key in "1n":
        page.keyboard.press(key)
    _all_saved(page)
    old = _ids(page)
    held = _hold_first(page, "**/learn", method="POST")
    page.keyboard.press("l")
    _wait_held(page, held)
    page.keyboard.press("j")  # keys pressed while the round runs
    page.keyboard.press("y")
    if failure == "answer lost":
        held[0].fetch()  # the server makes the round
        held[0].abort("connectionreset")
    else:
        held[0].fulfill(status=500, content_type="application/json", body='{"detail": "boom"}')
    with _state_on_timeout(page, "the round's outcome, then the keys"):
        page.wait_for_function("() => !S.loading && !KQ.queue.length && !Q.pending.length")
        page.wait_for_selector("#offline", state="hidden")
    assert page.evaluate("() => Q.failed.length") == 0, page.inner_text("#status")
    ids = _shows_server_ranking(page, server, sid)
    marks = _server_marks(server, sid, "una")
    if failure == "answer lost":
        assert page.text_content("#round").startswith("ranking: round")
        assert ids[:3] == old[:3] and ids[3:] != old[3:]
        assert marks == {old[0]: "relevant", old[1]: "not_relevant", ids[4]: "relevant"}
    else:
        assert page.text_content("#round") == "ranking: first search"
        assert ids[:24] == old
        assert marks == {old[0]: "relevant", old[1]: "not_relevant", old[3]: "relevant"}
        assert "boom" in page.inner_text("#status")
    _more_shows_server_ranking(page, server, sid)
    tab.errors.clear()  # the failed request is logged by the browser
    tab.close()


def test_a_ranking_round_made_after_its_search_was_opened_again_is_shown(
    browser: Any, server: LiveServer
) -> None:
    """Back and Forward while a ranking round runs: the search opens again with the results
    the server had then, and the server makes the round after that. The round's answer, for
    the search as it was before, is not applied to the search opened again, which showed the
    results the round replaced (more results then repeated some of the round's). The page
    reads the search again."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    sid = _search(page, server, "gus", "cyan")
    for key in "1n":
        page.keyboard.press(key)
    _all_saved(page)
    held = _hold_first(page, "**/learn", method="POST")
    page.keyboard.press("l")
    _wait_held(page, held)
    page.go_back()
    page.wait_for_function("() => !location.hash && !document.querySelector('.result')")
    page.go_forward()
    page.wait_for_selector(".result.current")
    page.wait_for_function("() => !S.loading")
    _release(page, held[0])  # the server makes the round now
    _round_shown(page, "!S.loading && !!document.querySelector('.result.current')")
    _shows_server_ranking(page, server, sid)
    _more_shows_server_ranking(page, server, sid)
    tab.close()


def test_back_to_the_page_without_a_search_shows_none_and_forward_shows_it_again(
    browser: Any, server: LiveServer
) -> None:
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    sid = _search(page, server, "eve", "plum")
    page.go_back()  # the page as it was opened: no fragment
    page.wait_for_function(
        "() => !location.hash && !document.querySelector('.result')"
        " && document.getElementById('status').textContent === 'no search shown'"
    )
    page.keyboard.press("1")  # no result, so no mark
    page.go_forward()
    page.wait_for_selector("#r0.current")
    assert page.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('s')") == sid
    assert page.get_attribute("#r0", "data-mark") in (None, "")
    tab.close()


def test_back_from_a_saved_search_to_no_search_clears_the_saved_list_choice(
    browser: Any, server: LiveServer
) -> None:
    """A search picked from the saved list, then Back to the page as it was opened: the list
    shows its placeholder again, so picking the same search opens it (a select whose value
    does not change fires no change event in a browser)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    sid = _search(tab.page(), server, "fay", "teal")
    page = tab.page()
    _open_as(page, server, "fay")
    page.wait_for_selector(f"#saved option[value='{sid}']", state="attached")
    page.select_option("#saved", sid)
    page.wait_for_selector("#r0.current")
    page.go_back()
    page.wait_for_function(
        "() => !location.hash && document.getElementById('status').textContent === "
        "'no search shown'"
    )
    assert page.eval_on_selector("#saved", "el => el.value") == ""
    page.select_option("#saved", sid)
    page.wait_for_selector("#r0.current")
    assert page.evaluate("() => new URLSearchParams(location.hash.slice(1)).get('s')") == sid
    tab.close()


def test_keys_pressed_with_no_search_shown_say_so_and_wait_for_nothing(
    browser: Any, server: LiveServer
) -> None:
    """Back to the page as it was opened (no search shown): a mark or a move has no result to
    apply to; the page says so (it said the keys were waiting for more results, which no
    search would bring)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    _search(page, server, "oli", "sienna")
    page.go_back()
    page.wait_for_function(
        "() => document.getElementById('status').textContent === 'no search shown'"
    )
    for key in "1j":
        page.keyboard.press(key)
    assert page.evaluate("() => KQ.queue.length") == 0
    assert page.inner_text("#status").startswith("no search shown"), page.inner_text("#status")
    page.go_forward()  # the search shown again takes keys again
    page.wait_for_selector("#r0.current")
    _mark_first(page)
    tab.close()


def test_a_key_pressed_while_a_linked_search_opens_marks_its_first_result(
    browser: Any, server: LiveServer
) -> None:
    """Keys pressed before a search's results are there wait for them (keyqueue.js); for a
    link, also while the page's lists (collections, saved searches) are still loading."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    linked = _search(tab.page(), server, "vic", "lemon")
    page = tab.page()
    held = _hold_first(page, "**/verify/api/collections")
    page.goto(f"{server.url}/verify#c=walk&s={linked}")
    _wait_held(page, held)
    page.keyboard.press("1")
    held[0].continue_()
    with _state_on_timeout(page, "the linked search's results"):
        page.wait_for_selector(".result.current")  # queued keys apply in the same turn as this
    assert page.get_attribute("#r0", "data-mark") == "relevant"
    assert page.evaluate("() => document.querySelector('.result.current').id") == "r1"
    page.wait_for_selector("#r0[data-state='saved']")
    page.wait_for_function("() => document.getElementById('saved').options.length > 1")
    tab.close()


def test_a_key_waiting_for_a_failed_first_page_applies_when_a_retry_brings_it(
    browser: Any, server: LiveServer
) -> None:
    """A linked search's first results get no answer; a key pressed then waits and the page
    tries again; the answer of that try is the first the server gives after its absence:
    the results show and the key marks the first one (the search is not opened afresh,
    which would drop the key)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    linked = _search(tab.page(), server, "wes", "peach")
    page = tab.page()
    tries: list[Any] = []
    lists: list[Any] = []

    def results(route: Any) -> None:  # the first two tries are held
        if route.request.method != "POST" or len(tries) >= 2:
            route.continue_()
        else:
            tries.append(route)

    def collections(route: Any) -> None:  # the page's list; then its check whether the server
        lists.append(route)  # is back is held: no other answer ends the absence
        if len(lists) == 1:
            route.continue_()

    page.route(f"**/searches/{linked}/results", results)
    page.route("**/verify/api/collections", collections)
    page.route(f"**/searches/{linked}/summary*", lambda route: route.abort("connectionrefused"))
    page.goto(f"{server.url}/verify#c=walk&s={linked}")
    _wait_held(page, tries)
    page.wait_for_function("() => document.getElementById('saved').options.length > 1")
    tries[0].abort("connectionrefused")  # the server is away (the lists came before)
    page.wait_for_function("() => S.loadError && S.loadError.retry && !S.loading")
    page.keyboard.press("1")
    deadline = time.monotonic() + WAIT_MS / 1000
    while len(tries) < 2 and time.monotonic() < deadline:  # polls the route handler
        page.wait_for_timeout(20)
    assert len(tries) == 2, "the page did not try again"
    page.unroute(f"**/searches/{linked}/summary*")
    tries[1].continue_()
    with _state_on_timeout(page, "the results of the second try"):
        page.wait_for_selector(".result.current")
    assert page.get_attribute("#r0", "data-mark") == "relevant"
    assert page.evaluate("() => document.querySelector('.result.current').id") == "r1"
    page.wait_for_selector("#r0[data-state='saved']")
    for route in lists[1:]:
        route.continue_()
    tab.errors.clear()  # the refused requests are logged by the browser
    tab.close()


def test_a_new_search_loads_at_once_after_a_failed_load_of_the_last(
    browser: Any, server: LiveServer
) -> None:
    """A load of more results fails (the page waits a moment before trying that search
    again); a new search sent then loads its results at once, not after that moment (the
    page's clock is held still: a wait for it would never end)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    page.clock.install()
    _search(page, server, "xan", "mauve")

    def refuse(route: Any) -> None:
        if route.request.method == "POST":
            route.fulfill(status=500, content_type="application/json", body='{"detail": "boom"}')
        else:
            route.continue_()

    page.route("**/results", refuse)
    page.keyboard.press("m")  # load more: refused
    page.wait_for_function(
        "() => S.loadError && S.loadError.message === 'boom' && !S.loading", polling=50
    )
    gen = page.evaluate("() => S.gen")
    page.clock.pause_at(page.evaluate("() => Date.now()") / 1000 + 0.05)  # seconds
    page.unroute("**/results", refuse)
    page.fill("#query", "olive grey")
    page.press("#query", "Enter")
    page.wait_for_function(
        "(gen) => S.gen > gen && (document.querySelector('#r0.current') || S.retry)",
        arg=gen,
        polling=50,
    )
    with _state_on_timeout(page, "the new search's results"):
        assert page.locator("#r0.current").count() == 1
    assert page.input_value("#query") == "olive grey"
    page.clock.resume()
    tab.errors.clear()  # the refused request is logged by the browser
    tab.close()


def test_typing_while_a_linked_search_opens_stays_typing(browser: Any, server: LiveServer) -> None:
    """A link opens its search at once, on a slow server maybe while the user already types a
    search of their own: when the linked results arrive, the field keeps the focus and the
    text typed (the linked search's text does not replace it, and the rest of the word does
    not become marks on the results)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    linked = _search(tab.page(), server, "yul", "khaki")
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    held = _hold_first(page, f"**/searches/{linked}/results", method="POST")
    page.goto(f"{server.url}/verify#c=walk&s={linked}")
    _wait_held(page, held)
    page.fill("#who", "yul")
    page.click("#query")
    page.keyboard.type("sun")
    _release(page, held[0])  # the linked results arrive while the user types
    page.keyboard.type("ny")
    with _state_on_timeout(page, "the linked results, the field still typed in"):
        page.wait_for_selector(".result.current")
        assert page.evaluate("() => document.querySelector('.result.current').id") == "r0"
        assert page.input_value("#query") == "sunny"
        assert page.evaluate("() => document.activeElement.id") == "query"
        assert page.locator(".result[data-mark='']").count() == 24  # no mark was made
    assert _server_marks(server, linked, "yul") == {}
    page.press("#query", "Enter")  # the search typed runs, and keys then mark its results
    page.wait_for_function(
        "(sid) => document.querySelector('#r0.current')"
        " && new URLSearchParams(location.hash.slice(1)).get('s') !== sid"
        " && document.activeElement.id === 'list'",
        arg=linked,
    )
    assert page.input_value("#query") == "sunny"
    _mark_first(page)
    tab.close()


def test_back_to_a_search_of_another_collection_shows_that_collections_saved_searches(
    browser: Any, server: LiveServer, two_collections: LiveServer
) -> None:
    """A search of alpha, then one of beta; the browser's Back opens the alpha search again
    (its collection chosen): the saved searches listed are alpha's too, so a search picked
    from them is one of the collection shown (not a beta search id sent under alpha's name)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once")
    srv = two_collections
    tab = Tab(browser, srv)
    page = tab.page()
    _open_as(page, srv, "zoe")
    in_alpha = _search_in(page, "alpha", "alpha back")
    in_beta = _search_in(page, "beta", "beta back")
    page.wait_for_function(
        "(sid) => [...document.querySelectorAll('#saved option')].some(o => o.value === sid)",
        arg=in_beta,
    )
    page.go_back()
    page.wait_for_function(
        "() => document.getElementById('query').value === 'alpha back'"
        " && document.querySelector('#r0.current')"
    )
    assert page.input_value("#collection") == "alpha"
    with _state_on_timeout(page, "alpha's saved searches"):
        page.wait_for_function(
            "(sid) => [...document.querySelectorAll('#saved option')].some(o => o.value === sid)",
            arg=in_alpha,
        )
    saved = page.eval_on_selector_all("#saved option", "os => os.map(o => o.value)")
    assert saved == ["", in_alpha], saved
    tab.close()


def test_a_failed_load_of_a_search_left_meanwhile_is_not_reported_on_the_next(
    browser: Any, server: LiveServer
) -> None:
    """More results of a search are asked for (m) and are slow; the user sends another search
    and it shows; then the first load fails: the error is the first search's, and the status
    line of the search shown does not report it."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    page.add_init_script(_COUNT_READS)
    first = _search(page, server, "abe", "teal")
    held = _hold_first(page, "**/results", method="POST")
    page.keyboard.press("m")
    _wait_held(page, held)
    page.fill("#query", "navy blue")
    page.press("#query", "Enter")
    page.wait_for_function(
        "(sid) => S.sid !== sid && document.querySelector('#r0.current')"
        " && document.getElementById('status').textContent.includes('results shown')",
        arg=first,
    )
    n = int(page.evaluate("() => window.__heldRead"))
    held[0].fulfill(
        status=500,
        content_type="application/json",
        body='{"detail": "boom"}',
        headers={"x-test-held": "1"},
    )
    page.wait_for_function("(n) => window.__heldRead > n", arg=n)
    assert page.get_attribute("#status", "class") != "err", page.inner_text("#status")
    assert "boom" not in page.inner_text("#status")
    tab.errors.clear()  # the refused request is logged by the browser
    tab.close()


def test_a_search_that_fails_to_open_shows_no_summary_or_exports_of_the_one_before(
    browser: Any, server: LiveServer
) -> None:
    """A search with marks shows its summary, charts and export links; a link to a search
    that cannot be opened (gone, mistyped) empties them: they would describe (and download)
    the search before, not the one the page names."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    _search(page, server, "bea", "plum red")
    page.keyboard.press("1")
    _all_saved(page)
    page.wait_for_function("() => document.getElementById('csv')")
    page.goto(f"{server.url}/verify#c=walk&s=notasearch")  # same document: a hash change only
    page.wait_for_function(
        "() => S.sid === 'notasearch' && S.loadError"
        " && document.getElementById('status').className === 'err'"
    )
    with _state_on_timeout(page, "no summary of the search before"):
        assert page.locator("#csv").count() == 0
        assert page.inner_text("#summary") == ""
        assert page.locator("#trend svg, #effsvg svg").count() == 0
    tab.errors.clear()  # the refused request is logged by the browser
    tab.close()


# Every request of a page load carries the load's own id (header x-test-load).
_MARK_LOAD = """(() => {
  const load = Math.random().toString(36).slice(2);
  const orig = window.fetch;
  window.fetch = (url, opts) => {
    const o = Object.assign({}, opts);
    o.headers = Object.assign({}, o.headers, {"x-test-load": load});
    return orig(url, o);
  };
})();"""


def test_a_refusal_after_the_server_was_away_ends_the_offline_banner(
    browser: Any, server: LiveServer
) -> None:
    """The tab is reloaded while the server is away, with a mark not saved yet: the mark and
    the list of collections get no answer (the banner says so, the page tries again); the
    next try of the mark is answered with a refusal (a restarted server refuses the page's
    old CSRF token). The server answers, so the banner that says it does not goes, and the
    page asks for its list again (it said "Retrying…" while nothing was tried again, and the
    list of collections stayed empty)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    # Each load of the page marks its requests, so the first page's own tries (it tries
    # again every RETRY_MS: on a busy machine one can come before the reload) are told apart
    # from the reloaded page's.
    page.add_init_script(_MARK_LOAD)
    _search(page, server, "cal", "azure")
    puts: list[str] = []
    lists: list[str] = []

    def mark(route: Any) -> None:  # no answer while the tab is open and after the reload;
        load = route.request.headers.get("x-test-load")  # then a refusal
        puts.append(load)
        if len(puts) == 1 or load == puts[0] or puts.count(load) == 1:
            route.abort("connectionrefused")
        else:
            route.fulfill(status=403, content_type="application/json", body='{"detail": "nope"}')

    def collections(route: Any) -> None:  # no answer to the reloaded page's first request
        lists.append(route.request.url)
        if len(lists) == 1:
            route.abort("connectionrefused")
        else:
            route.continue_()

    page.route("**/marks", mark)
    page.keyboard.press("1")
    page.wait_for_selector("#offline:not([hidden])")
    page.route("**/verify/api/collections", collections)
    page.goto(f"{server.url}/verify")  # the unsaved mark is kept by the tab
    page.wait_for_selector("#retry:not([hidden])")  # refused: the banner is drawn in this turn
    with _state_on_timeout(page, "no offline banner"):
        assert page.locator("#offline").is_hidden(), page.inner_text("#offline")
        page.wait_for_function("() => document.getElementById('collection').options.length > 0")
    assert "nope" in page.inner_text("#status")
    tab.errors.clear()  # the refused requests are logged by the browser
    tab.close()


def test_while_a_collections_saved_searches_load_the_others_are_not_offered(
    browser: Any, server: LiveServer, two_collections: LiveServer
) -> None:
    """The user switches from alpha to beta; until beta's saved searches arrive the list
    offers none (not alpha's: one picked then would be opened under beta's name)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once")
    srv = two_collections
    tab = Tab(browser, srv)
    page = tab.page()
    _open_as(page, srv, "ada")
    _search_in(page, "beta", "beta wait")
    in_alpha = _search_in(page, "alpha", "alpha wait")
    page.wait_for_function(
        "(sid) => [...document.querySelectorAll('#saved option')].some(o => o.value === sid)",
        arg=in_alpha,
    )
    held = _hold_first(page, "**/verify/api/c/beta/searches")
    page.select_option("#collection", "beta")
    _wait_held(page, held)
    saved = page.eval_on_selector_all("#saved option", "os => os.map(o => o.value)")
    assert saved == [""], saved
    held[0].continue_()
    page.wait_for_function("() => document.getElementById('saved').options.length > 1")
    tab.close()


def test_a_search_sent_while_the_server_is_away_runs_once_it_is_back(
    browser: Any, server: LiveServer
) -> None:
    """A search is sent while the page's list of collections is on its way and the server
    goes away (the list gets no answer): the page says so, and once the server answers again
    the search runs (it was asked for; it is not dropped)."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    tab = Tab(browser, server)
    page = tab.page()
    held = _hold_first(page, "**/verify/api/collections")
    page.goto(f"{server.url}/verify")
    _wait_held(page, held)
    _send(page, "bo", "fern")  # waits for the list
    held[0].abort("connectionrefused")
    with _state_on_timeout(page, "the search runs once the server is back"):
        page.wait_for_selector("#r0.current")
    assert page.input_value("#query") == "fern"
    page.wait_for_selector("#offline", state="hidden")
    _mark_first(page)
    tab.errors.clear()  # the refused request is logged by the browser
    tab.close()


def test_a_token_the_server_no_longer_knows_is_replaced_and_the_mark_saved(
    browser: Any, server: LiveServer
) -> None:
    """The server was restarted while the page stayed open (its CSRF key is made per
    process): the page's token is refused, so the page asks for a fresh one and the mark is
    saved, with no reload."""
    if server.kind != "inquire-serve":
        pytest.skip("runs once, on the main app")
    import secrets

    from inquire.web.security import guard_of

    tab = Tab(browser, server)
    page = tab.page()
    sid = _search(page, server, "uma", "peach")
    ids = _ids(page)
    _mark_first(page)
    before = set(tab.tokens)
    guard_of(server.app)._key = secrets.token_bytes(32)  # as a restarted server's
    page.keyboard.press("n")
    with _state_on_timeout(page, "the mark is sent again with a fresh token"):
        page.wait_for_selector("#r1[data-state='saved']")
    assert _server_marks(server, sid, "uma") == {ids[0]: "relevant", ids[1]: "not_relevant"}
    assert tab.tokens - before, "no fresh token was asked for"
    assert page.locator("#offline").is_hidden()
    tab.errors.clear()  # the refused request is logged by the browser
    tab.close()
