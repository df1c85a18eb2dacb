"""Charts of verification results: inline SVG for the web page, PNG (matplotlib) for files.

The trend chart shows verified positives per group as bars (left axis) and the share of
inspected images that were positive as points with 95% Wilson intervals (right axis, 0-100%).
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

import pandas as pd

from inquire._io import atomic_path
from inquire.collection.store import records


def trend_svg(trend: pd.DataFrame, title: str = "", width: int = 720, height: int = 300) -> str:
    """An ``<svg>`` string of :meth:`Verification.trend`'s table (no scripts, no CDN)."""
    left, right, top, bottom = 48, 48, 28, 64
    pw, ph = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title or "trend")}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#444"/>',
    ]
    n = len(trend)
    if n == 0:
        parts.append(f'<text x="{left + 10}" y="{top + ph / 2}">no marks yet</text></svg>')
        return "".join(parts)
    ymax = max(1, int(trend["positives"].max()))
    slot = pw / n
    bw = max(2.0, slot * 0.6)
    for tick in (0, 0.5, 1.0):
        y = top + ph - tick * ph
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick * ymax:g}</text>'
            f'<text x="{left + pw + 6}" y="{y + 4:.1f}">{tick:.0%}</text>'
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>'
        )
    for i, r in enumerate(records(trend)):
        x = left + i * slot + (slot - bw) / 2
        h = ph * r["positives"] / ymax
        cx = left + (i + 0.5) * slot
        label = escape(str(r["group"]))
        tip = (
            f"{label}: {r['positives']} of {r['inspected']} inspected ({r['share']:.0%}, "
            f"95% CI {r['ci_low']:.0%}-{r['ci_high']:.0%})"
        )
        y_lo, y_hi, y_p = (top + ph - v * ph for v in (r["ci_low"], r["ci_high"], r["share"]))
        parts.append(
            f'<g class="bar"><title>{tip}</title>'
            f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
            'fill="#6a9f58"/>'
            f'<line x1="{cx:.1f}" y1="{y_lo:.1f}" x2="{cx:.1f}" y2="{y_hi:.1f}" stroke="#b03a2e"/>'
            f'<circle cx="{cx:.1f}" cy="{y_p:.1f}" r="3" fill="#b03a2e"/></g>'
        )
        if n <= 24 or i % max(1, n // 24) == 0:
            parts.append(
                f'<text transform="translate({cx:.1f},{top + ph + 10}) rotate(40)" '
                f'font-size="10">{label[:18]}</text>'
            )
    parts.append(
        f'<text x="{left}" y="{height - 4}" fill="#6a9f58">bars: verified positives</text>'
        f'<text x="{left + pw}" y="{height - 4}" text-anchor="end" fill="#b03a2e">'
        "points: share of inspected, 95% Wilson CI</text></svg>"
    )
    return "".join(parts)


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


def trend_png(trend: pd.DataFrame, out: str | os.PathLike[str], title: str = "") -> Path:
    """The trend chart as a PNG file (matplotlib, Agg backend), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(trend) + 2), 4.0), dpi=120)
    x = list(range(len(trend)))
    ax.bar(x, trend["positives"], color="#6a9f58", label="verified positives")
    ax.set_ylabel("verified positives")
    ax.set_xticks(x, [str(g) for g in trend["group"]], rotation=45, ha="right", fontsize=8)
    ax2 = ax.twinx()
    share = trend["share"].astype(float)
    err = [share - trend["ci_low"].astype(float), trend["ci_high"].astype(float) - share]
    ax2.errorbar(
        x,
        share,
        yerr=err,
        fmt="o",
        color="#b03a2e",
        capsize=3,
        label="share of inspected (95% Wilson CI)",
    )
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("share of inspected images")
    ax.set_title(title or "verified positives")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
