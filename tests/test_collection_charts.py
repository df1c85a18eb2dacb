"""The trend chart: one matplotlib figure behind the page's SVG and the CLI's files, drawn
without touching the caller's matplotlib state."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from inquire.collection.charts import trend_chart, trend_figure, trend_svg

TREND = pd.DataFrame(
    {
        "group": ["2021-11", "2022-01"],
        "inspected": [4, 3],
        "positives": [1, 3],
        "share": [0.25, 1.0],
        "ci_low": [0.05, 0.44],
        "ci_high": [0.7, 1.0],
    }
)


def test_charts_leave_the_global_matplotlib_state_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    open_before = plt.get_fignums()

    def no_switch(*args: object, **kwargs: object) -> None:
        raise AssertionError("library code switched the matplotlib backend")

    monkeypatch.setattr(matplotlib, "use", no_switch)
    fig = trend_figure(TREND, "herons", by="month")
    svg = trend_svg(TREND, "herons", by="month")
    out = trend_chart(TREND, tmp_path / "trend.png", "herons", by="month")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == open_before  # nothing registered with pyplot
    assert matplotlib.get_backend() == backend
    assert len(fig.axes) == 2 and svg.startswith("<svg")


def test_page_svg_is_the_file_chart_with_text_escaped(tmp_path: Path) -> None:
    title = 'herons <script>alert("x")</script> & egrets'
    svg = trend_svg(TREND, title, by="month")
    assert "<script" not in svg and "&lt;script&gt;" in svg and "&amp; egrets" in svg
    assert svg == trend_svg(TREND, title, by="month")  # reproducible bytes
    # The page allows no inline CSS (style-src 'self'): presentation attributes instead.
    assert "<style" not in svg and ' style="' not in svg
    assert 'fill="#6a9f58"' in svg and 'stroke-linejoin="round"' in svg.split(">", 1)[0]
    # The file written for `inquire trend --out x.svg` is the same drawing.
    trend_chart(TREND, tmp_path / "t.svg", title, by="month")
    file_svg = (tmp_path / "t.svg").read_text(encoding="utf-8")
    assert file_svg.count('<g id="patch_') == svg.count('<g id="patch_') > 3  # frame + bars
    # Every month from the first to the last one has its slot (a gap shows as no bar).
    assert "2021-12" in svg and "no marks yet" in trend_svg(TREND.head(0))


def test_every_slot_of_the_page_chart_has_its_numbers_as_a_tooltip() -> None:
    import re

    svg = trend_svg(TREND, "herons", by="month", width=360)
    tips = re.findall(r'<g id="inquire-trend-slot-(\d+)"><title>([^<]*)</title>', svg)
    assert tips == [
        ("0", "2021-11: 1 positive of 4 inspected (25%; 95% CI 5%-70%)"),
        ("1", "2021-12: no inspected images"),  # a gap: no bar, still a tooltip
        ("2", "2022-01: 3 positives of 3 inspected (100%; 95% CI 44%-100%)"),
    ]
    # One more slot than a page of tick labels: every slot keeps its tooltip.
    long = pd.DataFrame(
        {
            "group": [f"{y}-{m:02d}" for y in (2019, 2020, 2021) for m in range(1, 13)],
            "inspected": [2] * 36,
            "positives": [1] * 36,
            "share": [0.5] * 36,
            "ci_low": [0.09] * 36,
            "ci_high": [0.91] * 36,
        }
    )
    svg = trend_svg(long, by="month", width=320)
    assert len(re.findall(r'<g id="inquire-trend-slot-\d+"><title>', svg)) == 36
    # Group names are data: escaped in the tooltip, never markup.
    odd = TREND.assign(group=['Ardea <b>alba</b> & "co"', "x"])
    svg = trend_svg(odd, by="taxon", width=360)
    assert "<b>" not in svg
    assert '<title>Ardea &lt;b&gt;alba&lt;/b&gt; &amp; "co": 1 positive of 4' in svg


def test_hostile_group_names_keep_the_page_chart_a_well_formed_svg() -> None:
    """Group names come from the user's metadata: markup, the slot's own id, characters XML
    cannot hold (the page's parser would show no chart at all) and a very long name."""
    import re
    import warnings
    import xml.etree.ElementTree as ET

    names = [
        '<g id="inquire-trend-slot-1"><script>x</script>',
        'a "quoted" & <b>]]>\nname',
        "bell\x07tab\x0bnul\x00",
        "x" * 1000,
    ]
    n = len(names)
    trend = pd.DataFrame(
        {
            "group": names,
            "inspected": [2] * n,
            "positives": [1] * n,
            "share": [0.5] * n,
            "ci_low": [0.1] * n,
            "ci_high": [0.9] * n,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a squeezed layout warns: the long name is cut
        svg = trend_svg(trend, "herons\x0c", by="site", width=480)
    root = ET.fromstring(svg)  # well-formed: the page's DOMParser takes it
    assert "<script" not in svg
    ns = "{http://www.w3.org/2000/svg}"
    slots = {
        g.get("id"): g for g in root.iter(f"{ns}g") if "inquire-trend-slot" in (g.get("id") or "")
    }
    assert sorted(slots) == [f"inquire-trend-slot-{i}" for i in range(n)]
    tips = [slots[f"inquire-trend-slot-{i}"].find(f"{ns}title").text for i in range(n)]
    assert tips[0].startswith(names[0]) and tips[1].startswith(names[1])
    assert tips[2].startswith("bell\ufffdtab\ufffdnul\ufffd:")
    assert len(tips[3]) < 400 and tips[3].startswith("x" * 299 + "…")
    assert re.search(">x{39}…<", svg)  # the tick label, cut
