"""No script of the pages writes HTML: every place the shipped JavaScript could turn a string
into markup (``innerHTML``, ``outerHTML``, ``insertAdjacentHTML``, ``document.write``,
``createContextualFragment``, ``DOMParser`` on ``text/html``, ``srcdoc``) is absent, so no
value from the URL, the server or the user can reach the DOM as HTML; and the server's
templates escape every value (autoescape on, no ``|safe``, no ``Markup``)."""

from __future__ import annotations

import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[1] / "src" / "inquire" / "web"
HTML_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment"
    r"|srcdoc|text/html|\.html\(|eval\(|new Function|setTimeout\(\s*['\"`]"
)


def _code(text: str) -> str:
    """JavaScript without its comments (a comment may name a sink to say it is not used)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in text.splitlines())


def test_no_script_writes_html() -> None:
    scripts = sorted((WEB / "static").glob("*.js"))
    assert {p.name for p in scripts} >= {"verify.js", "keyqueue.js", "app.js"}
    found = {
        f"{p.name}:{n}: {line.strip()}"
        for p in scripts
        for n, line in enumerate(_code(p.read_text("utf-8")).splitlines(), 1)
        if HTML_SINKS.search(line)
    }
    assert found == set(), found
    templates = sorted((WEB / "templates").glob("*.html"))
    for p in templates:  # inline script would be refused by the CSP anyway
        text = p.read_text("utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), p.name
        assert "|safe" not in text.replace(" ", "") and "Markup" not in text, p.name


def test_the_sink_check_finds_a_sink() -> None:
    """The check above is not vacuous: each way of writing HTML is caught."""
    for line in (
        'box.innerHTML = "<b>" + x;',
        "el.outerHTML = s",
        "el.insertAdjacentHTML('beforeend', s)",
        "document.write(s)",
        "new DOMParser().parseFromString(s, 'text/html')",
        "frame.srcdoc = s",
    ):
        assert HTML_SINKS.search(_code(line)), line
    assert not HTML_SINKS.search(_code("// innerHTML is never used"))


def test_the_templates_autoescape() -> None:
    from inquire.web.app import _make_templates
    from inquire.web.config import WebConfig

    env = _make_templates(WebConfig()).env
    page = env.get_template("error.html").render(
        message="<meta http-equiv=refresh content=0;url=//evil.example>",
        status=400,
        title="t",
        csrf_token="x",
        nav_links=[],
        can_search=False,
    )
    assert "<meta http-equiv" not in page and "&lt;meta http-equiv" in page
