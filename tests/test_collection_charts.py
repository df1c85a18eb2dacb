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
