"""The web page in a real headless Chromium (Debian's), driven by Playwright.

Loads the runs page, runs a free-text search, opens a query and checks its image grid, compares
two runs; then shows every page on a phone (390 px wide) and a laptop (1280x800) screen and
checks it: no sideways scrolling, tap targets of at least 40 px on the phone, no image over
text. The screenshots go to test-artifacts/. Nothing is downloaded: the browser is the system's.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from inquire.testing.browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORTS, layout_findings
from inquire.testing.web_fixtures import WebFixture, build_web_fixture
from inquire.web.config import WebConfig

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
WAIT_MS = 180_000  # the longest any condition is waited for (a busy machine is slow)
SERVERS: list[str] = []  # further servers of this module the page may contact

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason=f"no Chromium at {CHROMIUM} (install Debian's chromium or set INQUIRE_CHROMIUM)",
    ),
]


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> WebFixture:
    return build_web_fixture(tmp_path_factory.mktemp("browserfx"))


@pytest.fixture(scope="module")
def base_url(fx: WebFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from inquire.web.app import create_app
    from inquire.web.server import BackgroundServer

    config = WebConfig(
        results=fx.results,
        image_roots=[fx.images],
        embeddings=fx.bench.embeddings,
        model=fx.encoder,
        thumb_cache=tmp_path_factory.mktemp("thumbs"),
    )
    with BackgroundServer(create_app(config)) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def page(base_url: str) -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        # Only the app itself may be contacted: a request anywhere else fails the test.
        outside: list[str] = []

        def guard(route: object) -> None:
            url = route.request.url  # type: ignore[attr-defined]
            if url.startswith((base_url, *SERVERS)):
                route.continue_()  # type: ignore[attr-defined]
            else:
                outside.append(url)
                route.abort()  # type: ignore[attr-defined]

        context.route("**/*", guard)
        pg = context.new_page()
        pg.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        # the error page is a 404 on purpose; any other console error fails the module
        pg.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and "no-such-run" not in m.location.get("url", "")
                else None
            ),
        )
        yield pg
        context.close()
        browser.close()
        assert outside == [], f"the page contacted other hosts: {outside}"
        assert errors == [], f"browser errors: {errors}"


def _images_loaded(page: object) -> tuple[int, int]:
    """(number of grid images, how many decoded with naturalWidth > 0) after scrolling all in."""
    pg = page
    pg.evaluate(  # type: ignore[attr-defined]
        "() => document.querySelectorAll('#grid img').forEach(i => i.loading = 'eager')"
    )
    pg.wait_for_function(  # type: ignore[attr-defined]
        "() => [...document.querySelectorAll('#grid img')].every(i => i.complete)",
        timeout=WAIT_MS,
    )
    return tuple(
        pg.evaluate(  # type: ignore[attr-defined]
            "() => { const im = [...document.querySelectorAll('#grid img')];"
            " return [im.length, im.filter(i => i.naturalWidth > 0).length]; }"
        )
    )


def test_runs_search_and_query_grid(page: object, base_url: str, fx: WebFixture) -> None:
    import pandas as pd

    pg = page
    ARTIFACTS.mkdir(exist_ok=True)
    pg.goto(base_url + "/")  # type: ignore[attr-defined]
    rows = pg.locator("#runs tbody tr")  # type: ignore[attr-defined]
    assert rows.count() == 2
    assert "exact" in rows.nth(0).inner_text() and "noisy" in rows.nth(1).inner_text()
    pg.screenshot(path=str(ARTIFACTS / "web_runs.png"))  # type: ignore[attr-defined]

    # Free-text search from the home page's form.
    pg.fill("#home-search", "a puffin carrying food")  # type: ignore[attr-defined]
    pg.press("#home-search", "Enter")  # type: ignore[attr-defined]
    pg.wait_for_selector("#grid")  # type: ignore[attr-defined]
    assert "q=a+puffin+carrying+food" in pg.url  # type: ignore[attr-defined]
    n, loaded = _images_loaded(pg)
    assert n == 50 and loaded == n
    pg.screenshot(path=str(ARTIFACTS / "web_search.png"), full_page=False)  # type: ignore[attr-defined]

    # Filter the run's queries with a select (auto-submitted by app.js), then open one.
    per_query = pd.read_csv(fx.results[0] / "per_query.csv", keep_default_na=False)
    group = str(per_query["supercategory"].iloc[0])
    want = (per_query["supercategory"] == group).sum()
    pg.goto(base_url + "/runs/exact")  # type: ignore[attr-defined]
    with pg.expect_navigation():  # type: ignore[attr-defined]
        pg.select_option("select[name=supercategory]", group)  # type: ignore[attr-defined]
    assert pg.locator("#queries tbody tr").count() == want  # type: ignore[attr-defined]
    pg.locator("#queries tbody tr a").first.click()  # type: ignore[attr-defined]
    pg.wait_for_selector("#grid")  # type: ignore[attr-defined]
    assert "/runs/exact/queries/" in pg.url  # type: ignore[attr-defined]

    n, loaded = _images_loaded(pg)
    assert n == 50 and loaded == n
    n_rel = pg.locator("#grid .cell.relevant").count()  # type: ignore[attr-defined]
    n_not = pg.locator("#grid .cell.not-relevant").count()  # type: ignore[attr-defined]
    assert n_rel > 0 and n_not > 0 and n_rel + n_not == n
    assert pg.locator("#grid .mark-relevant").count() == n_rel  # type: ignore[attr-defined]
    assert pg.locator("#grid .other").first.inner_text().startswith("noisy")  # type: ignore[attr-defined]
    pg.screenshot(path=str(ARTIFACTS / "web_query.png"))  # type: ignore[attr-defined]

    # Switching the comparison off via the select reloads the grid without the other ranks.
    with pg.expect_navigation():  # type: ignore[attr-defined]
        pg.select_option("#compare", "")  # type: ignore[attr-defined]
    assert "compare=" in pg.url  # type: ignore[attr-defined]
    assert pg.locator("#grid .other").count() == 0  # type: ignore[attr-defined]


def test_compare_two_runs_from_the_runs_page(page: object, base_url: str) -> None:
    pg = page
    pg.goto(base_url + "/")  # type: ignore[attr-defined]
    pg.check("input[name=runs][value=exact]")  # type: ignore[attr-defined]
    pg.check("input[name=runs][value=noisy]")  # type: ignore[attr-defined]
    with pg.expect_navigation():  # type: ignore[attr-defined]
        pg.click("#compare-button")  # type: ignore[attr-defined]
    assert "/compare?runs=exact&runs=noisy" in pg.url  # type: ignore[attr-defined]
    assert pg.locator("#pairs-table tbody tr").count() == 5  # type: ignore[attr-defined]
    assert "Holm" in pg.inner_text("#pairs")  # type: ignore[attr-defined]


def test_every_page_fits_phone_and_desktop_screens(
    page: object, base_url: str, fx: WebFixture
) -> None:
    import pandas as pd

    pg = page
    ARTIFACTS.mkdir(exist_ok=True)
    qid = int(pd.read_csv(fx.results[0] / "per_query.csv")["query_id"].iloc[0])
    pages = {
        "runs": "/",
        "run": "/runs/exact",
        "run_filtered": "/runs/exact?supercategory="
        + str(pd.read_csv(fx.results[0] / "per_query.csv")["supercategory"].iloc[0]),
        "query": f"/runs/exact/queries/{qid}",
        "search": "/search?q=a+puffin+carrying+food",
        "search_empty": "/search",
        "compare": "/compare?runs=exact&runs=noisy",
        "error": "/runs/no-such-run",
    }
    problems = {}
    for size, width, height in VIEWPORTS:
        pg.set_viewport_size({"width": width, "height": height})  # type: ignore[attr-defined]
        for name, url in pages.items():
            pg.goto(base_url + url)  # type: ignore[attr-defined]
            if pg.locator("#grid").count():  # type: ignore[attr-defined]
                _images_loaded(pg)
            # open every collapsed table so its links are measured too
            pg.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")  # type: ignore[attr-defined]
            pg.screenshot(path=str(ARTIFACTS / f"web_{name}_{size}.png"), full_page=True)  # type: ignore[attr-defined]
            found = layout_findings(pg, phone=size == "phone")
            if found:
                problems[f"{name} @ {size}"] = found
    pg.set_viewport_size({"width": 1280, "height": 900})  # type: ignore[attr-defined]
    assert problems == {}, problems


# Names as long as real ones get (53-64 characters) and far longer, one without any break.
LONG_NAMES = [
    "clip-vit-large-patch14-336-openai-fullrank-inat24-2026-12-07-v3",
    "siglip2-so400m-" + "x" * 185,
]


@pytest.fixture(scope="module")
def long_url(fx: WebFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app over copies of the two runs named LONG_NAMES, whose queries have long texts."""
    import pandas as pd

    from inquire.web.app import create_app
    from inquire.web.server import BackgroundServer

    base = tmp_path_factory.mktemp("longnames")
    queries = pd.read_csv(fx.bench.queries_test)
    queries["query_text"] = [
        f"{t} photographed at dawn near the {'northern' * 12} ridge, " + "seen from afar " * 10
        for t in queries["query_text"]
    ]
    qfile = base / "queries.csv"
    queries.to_csv(qfile, index=False)
    results = []
    for src, name in zip(fx.results, LONG_NAMES, strict=True):
        dst = base / name[:100]
        shutil.copytree(src, dst)
        summary = json.loads((dst / "summary.json").read_text())
        summary["name"] = name
        summary["config"]["queries"] = str(qfile)
        (dst / "summary.json").write_text(json.dumps(summary))
        results.append(dst)
    config = WebConfig(
        results=results,
        image_roots=[fx.images],
        embeddings=fx.bench.embeddings,
        model=fx.encoder,
        thumb_cache=base / "thumbs",
    )
    with BackgroundServer(create_app(config)) as srv:
        SERVERS.append(srv.url + "/")
        yield srv.url


_TABLE_CUES = """() => [...document.querySelectorAll('.table-wrap')]
  .filter(w => w.scrollWidth > w.clientWidth + 1)
  .map(w => {
    const hint = w.previousElementSibling;
    const shown = hint && hint.classList.contains('scroll-hint') && !hint.hidden
      && hint.getBoundingClientRect().height > 0;
    return {table: (w.querySelector('table') || {}).id || '?', cue: !!shown,
            scrolls: getComputedStyle(w).overflowX};
  })"""


def test_long_run_names_and_query_texts_fit_a_phone(
    page: object, long_url: str, fx: WebFixture
) -> None:
    """At 390 px no page is wider than the screen with run names of 64 and 200 characters and
    long query texts (the "compare with" select once sized itself to its longest option);
    tables wider than the screen scroll inside their box and say so."""
    import pandas as pd

    pg = page
    ARTIFACTS.mkdir(exist_ok=True)
    pg.goto(long_url + "/")  # type: ignore[attr-defined]
    slugs = pg.eval_on_selector_all(  # type: ignore[attr-defined]
        "input[name=runs]", "els => els.map(e => e.value)"
    )
    assert len(slugs) == 2
    qid = int(pd.read_csv(fx.results[0] / "per_query.csv")["query_id"].iloc[0])
    long_q = "a " + "puffin" * 40 + " carrying food " * 6
    pages = {
        "runs": "/",
        "run": f"/runs/{slugs[0]}",
        "run_other": f"/runs/{slugs[1]}",
        "query": f"/runs/{slugs[0]}/queries/{qid}",
        "query_other": f"/runs/{slugs[1]}/queries/{qid}?compare={slugs[0]}",
        "search": f"/search?q={long_q}",
        "compare": f"/compare?runs={slugs[0]}&runs={slugs[1]}",
        "error": f"/runs/{'no-such-run' * 20}",
    }
    pg.set_viewport_size({"width": 390, "height": 844})  # type: ignore[attr-defined]
    problems: dict[str, object] = {}
    cues: dict[str, object] = {}
    try:
        for name, url in pages.items():
            pg.goto(long_url + url)  # type: ignore[attr-defined]
            pg.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")  # type: ignore[attr-defined]
            if pg.locator("#grid").count():  # type: ignore[attr-defined]
                _images_loaded(pg)
            pg.screenshot(path=str(ARTIFACTS / f"web_long_{name}_phone.png"), full_page=True)  # type: ignore[attr-defined]
            found = layout_findings(pg, phone=True)
            if found:
                problems[name] = found
            wide = pg.evaluate(_TABLE_CUES)  # type: ignore[attr-defined]
            if any(not w["cue"] or w["scrolls"] not in ("auto", "scroll") for w in wide):
                cues[name] = wide
            if name in ("run", "compare", "runs"):  # these tables are wider than a phone
                assert wide, f"{name}: expected a table wider than 390 px"
    finally:
        pg.set_viewport_size({"width": 1280, "height": 900})  # type: ignore[attr-defined]
    assert problems == {}, problems
    assert cues == {}, cues
