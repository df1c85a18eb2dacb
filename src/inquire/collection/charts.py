"""Charts of verification results: inline SVG for the web page, PNG/JPEG/SVG/PDF files
(matplotlib) for ``inquire trend --out``.

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
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from inquire._io import atomic_path
from inquire.collection.store import records
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


def _slot_labels(groups: list[str], by: str | None) -> list[str]:
    if by == "month-of-year":
        return [MONTH_NAMES[int(g) - 1] if g.isdigit() and 1 <= int(g) <= 12 else g for g in groups]
    return groups


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


def _count_ticks(ymax: int) -> list[int]:
    """Whole-number ticks from 0 to at least ``ymax`` (at most ~5 of them)."""
    step = max(1, math.ceil(ymax / 4))
    return list(range(0, step * math.ceil(max(ymax, 1) / step) + 1, step))


def trend_svg(
    trend: pd.DataFrame,
    title: str = "",
    width: int = 720,
    height: int = 300,
    by: str | None = None,
) -> str:
    """An ``<svg>`` string of :meth:`Verification.trend`'s table (no scripts, no CDN).

    ``by``: the grouping; time groupings get every period as a slot (gaps visible).
    """
    trend = fill_time_gaps(trend, by)
    note = undated_note(trend)
    left, right, top, bottom = 52, 52, 28, 78 + (14 if note else 0)
    pw = width - left - right
    # A narrow chart (a phone) stacks the two legend lines instead of overlapping them, and a
    # title longer than the chart is cut (with "…"): text is about 0.62 em per character.
    legend = ("bars: verified positives", "points: share of inspected, 95% Wilson CI")
    stacked = sum(len(t) for t in legend) * 11 * 0.62 + 16 > pw
    bottom += 14 if stacked else 0
    fits = max(1, int((width - left) / (13 * 0.62)))
    shown = title if len(title) <= fits else title[: fits - 1] + "…"
    ph = height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title or "trend")}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(shown)}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#444"/>',
    ]
    n = len(trend)
    if n == 0:
        parts.append(f'<text x="{left + 10}" y="{top + ph / 2}">no marks yet</text>')
        if note:
            parts.append(f'<text x="{left}" y="{height - 4}">{escape(note)}</text>')
        return "".join(parts) + "</svg>"
    ticks = _count_ticks(int(trend["positives"].max()))
    ymax = ticks[-1]
    for tick in ticks:
        y = top + ph - ph * tick / ymax
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>'
        )
    for share in (0.0, 0.5, 1.0):
        y = top + ph - share * ph
        parts.append(f'<text x="{left + pw + 6}" y="{y + 4:.1f}">{share:.0%}</text>')
    parts.append(
        f'<text transform="translate(12,{top + ph / 2}) rotate(-90)" text-anchor="middle" '
        f'fill="#4d7a40">verified positives</text>'
        f'<text transform="translate({width - 8},{top + ph / 2}) rotate(90)" '
        f'text-anchor="middle" fill="#b03a2e">share of inspected</text>'
    )
    slot = pw / n
    bw = max(2.0, slot * 0.6)
    labels = _slot_labels([str(g) for g in trend["group"]], by)
    every = max(1, math.ceil(n / 24))
    for i, r in enumerate(records(trend)):
        x = left + i * slot + (slot - bw) / 2
        h = ph * r["positives"] / ymax
        cx = left + (i + 0.5) * slot
        label = escape(labels[i])
        if r["inspected"]:
            tip = (
                f"{label}: {r['positives']} of {r['inspected']} inspected ({r['share']:.0%}, "
                f"95% CI {r['ci_low']:.0%}-{r['ci_high']:.0%})"
            )
            y_lo, y_hi, y_p = (top + ph - v * ph for v in (r["ci_low"], r["ci_high"], r["share"]))
            parts.append(
                f'<g class="bar"><title>{tip}</title>'
                f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                'fill="#6a9f58"/>'
                f'<line x1="{cx:.1f}" y1="{y_lo:.1f}" x2="{cx:.1f}" y2="{y_hi:.1f}" '
                'stroke="#b03a2e"/>'
                f'<circle cx="{cx:.1f}" cy="{y_p:.1f}" r="3" fill="#b03a2e"/></g>'
            )
        else:
            parts.append(f'<g class="gap"><title>{label}: nothing inspected</title></g>')
        if i % every == 0:
            parts.append(
                f'<text transform="translate({cx:.1f},{top + ph + 10}) rotate(40)" '
                f'font-size="10">{label[:18]}</text>'
            )
    legend_y = height - 4 - (14 if note else 0)
    second = (
        f'<text x="{left}" y="{legend_y}" fill="#b03a2e">'
        if stacked
        else f'<text x="{left + pw}" y="{legend_y}" text-anchor="end" fill="#b03a2e">'
    )
    parts.append(
        f'<text x="{left}" y="{legend_y - (14 if stacked else 0)}" fill="#4d7a40">'
        f"{legend[0]}</text>{second}{legend[1]}</text>"
    )
    if note:
        parts.append(f'<text x="{left}" y="{height - 4}">{escape(note)}</text>')
    return "".join(parts) + "</svg>"


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
    import matplotlib.pyplot as plt

    fig = trend_figure(trend, title, by)
    out = Path(out)
    with atomic_path(out) as tmp:
        kw = {"pil_kwargs": {"quality": 90}} if fmt == "jpeg" else {}
        fig.savefig(tmp, format=fmt, **kw)
    plt.close(fig)
    return out


def trend_figure(trend: pd.DataFrame, title: str = "", by: str | None = None) -> Any:
    """The matplotlib ``Figure`` of :func:`trend_chart` (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    t = fill_time_gaps(trend, by)
    n = len(t)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * n + 2), 4.6), dpi=120, layout="constrained")
    x = list(range(n))
    ax.bar(x, t["positives"].astype(int), color="#6a9f58", label="verified positives")
    ax.set_ylabel("verified positives")
    ax.set_xlabel(_AXIS_LABELS.get(by or "", by or "group"))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    top = int(t["positives"].max()) if n else 0
    ax.set_ylim(0, max(1, top) * 1.1)
    labels = _slot_labels([str(g) for g in t["group"]], by)
    every = max(1, math.ceil(n / 30))
    ax.set_xticks(x[::every], labels[::every], rotation=45, ha="right", fontsize=8)
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
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax2.set_ylabel("share of inspected images")
    note = undated_note(t)
    ax.set_title((title or "verified positives") + (f"\n{note}" if note else ""), fontsize=10)
    if n == 0:
        ax.text(0.5, 0.5, "no marks yet", ha="center", va="center", transform=ax.transAxes)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig
