"""Charts of verification results: the trend chart (one matplotlib figure: inline SVG for the
web page, PNG/JPEG/SVG/PDF files for ``inquire trend --out``) and the search-efficiency curve.

The trend chart shows verified positives per group as bars (left axis, whole counts) and the
share of inspected images that were positive as points with 95% Wilson intervals (right
axis, 0-100%). Time groupings (month, year, month-of-year) are drawn on a time axis: every
period from the first to the last one gets its slot, so periods without inspected images
show as gaps instead of being skipped. Images without a date of their own (EXIF or
train.json) are not on that axis; the chart says how many were left out.
"""

from __future__ import annotations

import math
import os
import re
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from inquire._io import atomic_path
from inquire.errors import InputError

TIME_GROUPINGS = ("month", "year", "month-of-year")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# File suffix -> matplotlib format of trend_chart.
CHART_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}
_AXIS_LABELS = {
    "month": "month",
    "year": "year",
    "month-of-year": "month of the year (all years pooled)",
    "region": "region (10 x 10 degree cell)",
}


def fill_time_gaps(trend: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """``trend`` with a row for every period of a time grouping, in time order.

    ``by="month"``: every month from the first to the last group (``YYYY-MM``); ``"year"``:
    every year between; ``"month-of-year"``: the 12 months. Added periods have 0 inspected
    and 0 positives and NaN share / interval. Other groupings return ``trend`` unchanged.
    ``attrs`` are kept.
    """
    if by not in TIME_GROUPINGS or trend.empty:
        return trend
    groups = trend["group"].astype(str)
    if by == "month":
        span = pd.period_range(groups.min(), groups.max(), freq="M")
        slots = [p.strftime("%Y-%m") for p in span]
    elif by == "year":
        slots = [str(y) for y in range(int(groups.min()), int(groups.max()) + 1)]
    else:
        slots = [f"{m:02d}" for m in range(1, 13)]
    full = trend.assign(group=groups).set_index("group").reindex(slots)
    full[["inspected", "positives"]] = full[["inspected", "positives"]].fillna(0).astype(int)
    out = full.rename_axis("group").reset_index()
    out.attrs.update(trend.attrs)
    return out


# Characters XML 1.0 does not allow (a chart with one is not an SVG the page can parse, so it
# would show nothing), and lone surrogates (which cannot be written as UTF-8 at all).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: The longest group name drawn under the axis (a longer one is cut with "…"; the slot's
#: tooltip keeps up to _MAX_TIP_LABEL of it): a very long name would squeeze the plot away.
_MAX_TICK_LABEL = 40
_MAX_TIP_LABEL = 300


def _drawable(text: str, limit: int | None = None) -> str:
    """``text`` as chart text: characters XML cannot hold replaced by U+FFFD, cut at
    ``limit`` characters."""
    text = _NOT_XML.sub("\ufffd", text)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _slot_labels(groups: list[str], by: str | None, limit: int | None = None) -> list[str]:
    if by == "month-of-year":
        groups = [
            MONTH_NAMES[int(g) - 1] if g.isdigit() and 1 <= int(g) <= 12 else g for g in groups
        ]
    return [_drawable(g, limit) for g in groups]


def undated_note(trend: pd.DataFrame) -> str:
    """'N inspected images without a date of their own left out (P positives)' or ''."""
    n = int(trend.attrs.get("undated_inspected", 0))
    if not n:
        return ""
    k = int(trend.attrs.get("undated_positives", 0))
    return (
        f"{n} inspected image{'s' if n != 1 else ''} without an EXIF or train.json date left "
        f"out ({k} positive{'s' if k != 1 else ''}); file times are not used as dates"
    )


_SLOT_ID = "inquire-trend-slot-{}"


def slot_tooltips(trend: pd.DataFrame, by: str | None = None) -> list[str]:
    """One line per slot of the chart (after :func:`fill_time_gaps`), shown when the pointer
    is over the slot on the page: ``"2021-05: 12 positives of 40 inspected (30%; 95% CI
    18-45%)"`` or ``"2021-06: no inspected images"``."""
    t = fill_time_gaps(trend, by)
    out = []
    for label, (_, row) in zip(
        _slot_labels([str(g) for g in t["group"]], by, _MAX_TIP_LABEL), t.iterrows(), strict=True
    ):
        seen, pos = int(row["inspected"]), int(row["positives"])
        if seen == 0:
            out.append(f"{label}: no inspected images")
            continue
        text = f"{label}: {pos} positive{'s' if pos != 1 else ''} of {seen} inspected"
        share, lo, hi = (float(row[c]) for c in ("share", "ci_low", "ci_high"))
        if math.isfinite(share):
            text += f" ({share:.0%}"
            if math.isfinite(lo) and math.isfinite(hi):
                text += f"; 95% CI {lo:.0%}-{hi:.0%}"
            text += ")"
        out.append(text)
    return out


def _add_tooltips(svg: str, tips: list[str]) -> str:
    """A ``<title>`` (the browser's tooltip) in each slot's group of :func:`trend_figure`.

    One pass over the SVG (one replacement per slot was quadratic: seconds for a few
    thousand groups). Text in the SVG is escaped, so only the slots' own groups match."""
    slot = re.compile('<g id="' + re.escape(_SLOT_ID).replace(r"\{\}", r"(\d+)") + '">')

    def titled(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return m.group(0) + (
            f"<title>{escape(tips[i], quote=False)}</title>" if i < len(tips) else ""
        )

    return slot.sub(titled, svg)


def trend_svg(
    trend: pd.DataFrame, title: str = "", by: str | None = None, *, width: int | None = None
) -> str:
    """The chart of :func:`trend_figure` as an ``<svg>`` string for the web page (no scripts,
    no CDN): the same figure ``inquire trend --out`` writes, drawn by the same code. Each
    slot carries its numbers as a tooltip (:func:`slot_tooltips`).

    Text stays text (``svg.fonttype`` ``none``; matplotlib escapes it; characters XML cannot
    hold become U+FFFD), element ids are salted and the date left out, so the same table
    gives the same bytes. The page's content policy allows no inline CSS, so matplotlib's
    ``style`` attributes and ``<style>`` rule become SVG presentation attributes
    (:func:`_presentation_attributes`).

    ``width``: the box the page draws it in, in px. The figure is then laid out at that width
    (one SVG unit per px) with no text under 11 px, so the chart is never shrunk to fit a
    phone's screen; without it, the size of ``inquire trend --out``.
    """
    import io

    import matplotlib

    # For the page, axis labels and numbers too: no text under 11 px.
    size = 11 if width is not None else matplotlib.rcParams["font.size"]
    buf = io.StringIO()
    with matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "inquire", "font.size": size}
    ):
        fig = trend_figure(trend, title, by, width=width)
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    svg = _presentation_attributes(text[text.index("<svg") :])  # inline: no XML prolog
    svg = _add_tooltips(svg, slot_tooltips(trend, by))
    if width is not None:  # one unit per px, as laid out (matplotlib writes points)
        svg = re.sub(
            r'^(<svg[^>]*?) width="([\d.]+)pt" height="([\d.]+)pt"',
            r'\1 width="\2" height="\3"',
            svg,
        )
    return svg


_STYLE_ATTR = re.compile(r' style="([^"]*)"')
_STYLE_ELEMENT = re.compile(r"<style[^>]*>(.*?)</style>", re.S)
_UNIVERSAL_RULE = re.compile(r"^\s*\*\s*\{([^}]*)\}\s*$")


def _declarations(css: str) -> str:
    """``fill: #fff; stroke-width: 0.8`` -> `` fill="#fff" stroke-width="0.8"`` (every
    property matplotlib writes is also an SVG presentation attribute)."""
    out = []
    for decl in css.split(";"):
        name, sep, value = decl.partition(":")
        if sep and name.strip():
            out.append(f' {name.strip()}="{escape(value.strip(), quote=True)}"')
    return "".join(out)


def _presentation_attributes(svg: str) -> str:
    """matplotlib's SVG without inline CSS: each ``style="..."`` becomes attributes, and its
    one ``<style>`` rule (``*{stroke-linejoin: round; stroke-linecap: butt}``) becomes
    attributes of the root, which every element inherits unless it sets its own."""
    root_attrs = ""
    for css in _STYLE_ELEMENT.findall(svg):
        rule = _UNIVERSAL_RULE.match(css)
        if rule is None:
            raise ValueError(f"unexpected CSS in matplotlib's SVG: {css[:80]!r}")
        root_attrs += _declarations(rule.group(1))
    svg = _STYLE_ELEMENT.sub("", svg)
    svg = _STYLE_ATTR.sub(lambda m: _declarations(m.group(1)), svg)
    return svg.replace("<svg ", f"<svg{root_attrs} ", 1)


def efficiency_svg(curve: list[tuple[int, int]], width: int = 360, height: int = 220) -> str:
    """Positives found against images inspected (in rank order), as an ``<svg>`` string."""
    left, top, pw, ph = 40, 12, width - 56, height - 48
    n = max(1, len(curve))
    kmax = max(1, max((k for _, k in curve), default=1))
    pts = " ".join(
        f"{left + pw * i / n:.1f},{top + ph - ph * k / kmax:.1f}" for i, k in [(0, 0), *curve]
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="10" role="img" aria-label="search efficiency">'
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#444"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#444"/>'
        f'<polyline points="{pts}" fill="none" stroke="#2e6fb0" stroke-width="2"/>'
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{kmax}</text>'
        f'<text x="{left + pw}" y="{top + ph + 14}" text-anchor="end">{len(curve)} inspected</text>'
        f'<text x="{left}" y="{top + ph + 28}">positives found vs images inspected</text></svg>'
    )


def chart_format(out: str | os.PathLike[str]) -> str:
    """The matplotlib format for ``out``'s suffix; an :class:`InputError` for any other."""
    suffix = Path(out).suffix.lower()
    if suffix not in CHART_FORMATS:
        raise InputError(
            f"cannot write a chart to {str(out)!r}: the file name must end in one of "
            f"{', '.join(CHART_FORMATS)} (e.g. trend.png)"
        )
    return CHART_FORMATS[suffix]


def trend_chart(
    trend: pd.DataFrame, out: str | os.PathLike[str], title: str = "", by: str | None = None
) -> Path:
    """Write the trend chart to ``out`` (PNG, JPEG, SVG or PDF by its suffix), atomically.

    ``by``: the grouping (its name labels the x axis; time groupings get a time axis with
    every period, so gaps are visible). Counts get whole-number ticks; the legend sits below
    the axes, clear of the data. Returns ``out``.
    """
    fmt = chart_format(out)
    fig = trend_figure(trend, title, by)
    out = Path(out)
    with atomic_path(out) as tmp:
        kw = {"pil_kwargs": {"quality": 90}} if fmt == "jpeg" else {}
        fig.savefig(tmp, format=fmt, **kw)
    return out


def trend_figure(
    trend: pd.DataFrame, title: str = "", by: str | None = None, *, width: int | None = None
) -> Any:
    """The matplotlib ``Figure`` of :func:`trend_chart` and :func:`trend_svg`.

    Built as a :class:`~matplotlib.figure.Figure` with its own Agg canvas: no pyplot state, no
    backend switch (a caller's ``matplotlib`` settings stay as they were), nothing to close.
    ``width`` (px, for the page: see :func:`trend_svg`) sets the figure's width at 72 dpi,
    so one point is one px, and raises every text to at least 11 px.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    t = fill_time_gaps(trend, by)
    n = len(t)
    if width is None:
        fig = Figure(figsize=(max(6.0, 0.35 * n + 2), 4.6), dpi=120, layout="constrained")
        small, medium = 8, 10
    else:
        fig = Figure(figsize=(width / 72, 330 / 72), dpi=72, layout="constrained")
        small = medium = 11
        every_max = max(4, width // 40)  # tick labels that fit the width
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = list(range(n))
    ax.bar(x, t["positives"].astype(int), color="#6a9f58", label="verified positives")
    ax.set_ylabel("verified positives")
    ax.set_xlabel(_AXIS_LABELS.get(by or "", by or "group"))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    top = int(t["positives"].max()) if n else 0
    ax.set_ylim(0, max(1, top) * 1.1)
    labels = _slot_labels([str(g) for g in t["group"]], by, _MAX_TICK_LABEL)
    every = max(1, math.ceil(n / (30 if width is None else every_max)))
    ax.set_xticks(x[::every], labels[::every], rotation=45, ha="right", fontsize=small)
    ax.set_xlim(-0.6, max(n, 1) - 0.4)
    ax2 = ax.twinx()
    seen = t[t["inspected"] > 0]
    pos = [i for i, k in enumerate(t["inspected"]) if k > 0]
    share = seen["share"].to_numpy(float)
    # (clipped: rounding can put an interval end a hair inside its point)
    err = [
        (share - seen["ci_low"].to_numpy(float)).clip(0),
        (seen["ci_high"].to_numpy(float) - share).clip(0),
    ]
    ax2.errorbar(
        pos,
        share,
        yerr=err,
        fmt="o",
        color="#b03a2e",
        capsize=3,
        label="share of inspected images (95% Wilson CI)",
    )
    ax2.set_ylim(0, 1.05)  # a point at 100% stays inside the frame
    # One invisible box per slot, over everything: on the page it carries the slot's
    # tooltip (a <title>, see trend_svg), so a month with no bar can be pointed at too.
    for i in x:
        ax2.axvspan(i - 0.5, i + 0.5, alpha=0, zorder=10, gid=_SLOT_ID.format(i))
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax2.set_ylabel("share of inspected images")
    note = undated_note(t)
    heading = _drawable(title) or "verified positives"
    if width is not None:  # a title wider than the chart is cut (text ~0.62 em a character)
        fits = max(8, int(width / (medium * 0.62)))
        heading = heading if len(heading) <= fits else heading[: fits - 1] + "…"
    ax.set_title(heading + (f"\n{note}" if note else ""), fontsize=medium)
    if n == 0:
        ax.text(0.5, 0.5, "no marks yet", ha="center", va="center", transform=ax.transAxes)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(
        h1 + h2,
        l1 + l2,
        loc="outside lower center",
        ncols=2 if width is None or width >= 640 else 1,  # a phone: one entry a line
        fontsize=small,
        frameon=False,
    )
    return fig
