"""Render a report as one self-contained HTML page, and a paired comparison as an HTML
fragment; every value is escaped."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING

from inquire.metrics import format_value, metric_label, scale_note
from inquire.report.build import LEVEL_TITLES
from inquire.report.cells import method_lines, pair_rows, report_header, report_rows, top_rows
from inquire.report.reference import reference_table, reference_title

if TYPE_CHECKING:
    from inquire.report.build import Report
    from inquire.report.compare import Comparison

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#1d2430;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #d9dee7;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.88rem}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e6e9ef;text-align:right;white-space:nowrap}
th{background:#f3f5f9}td.l,th.l{text-align:left;white-space:normal}
.scroll{overflow-x:auto}
tr.mine td{background:#eef6ff;font-weight:600}.muted{color:#5b6575;font-size:.88rem}
.note{background:#fff7e0;border-left:4px solid #e6a700;padding:.4rem .7rem;margin:.4rem 0}
.published{border-left:4px solid #5b6575;padding-left:.7rem}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #e6e9ef}
figcaption{font-size:.85rem;color:#5b6575}
"""


def _html_table(
    header: list[str], rows: list[list[str]], left: int, classes: list[str] | None = None
) -> str:
    e = html.escape
    head = "".join(
        f'<th class="l">{e(h)}</th>' if i < left else f"<th>{e(h)}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for j, row in enumerate(rows):
        cls = f' class="{classes[j]}"' if classes and classes[j] else ""
        tds = "".join(
            f'<td class="l">{e(c)}</td>' if i < left else f"<td>{e(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{tds}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def render_html(
    report: Report,
    comparison: Comparison | None = None,
    figures: Mapping[str, str] | None = None,
    title: str = "Retrieval report",
) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 PNG, no external links.

    ``figures`` maps a caption to a base64 PNG (see :func:`inquire.report.plots.png_base64`).
    """
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="muted">Runs: {e(", ".join(report.runs))}. Cut-off k = {report.k}. '
        f"{e(scale_note(report.metrics))}. {e(report.ci_description)}</p>",
    ]
    parts += [f'<p class="note">{e(n)}</p>' for n in report.notes]
    # Figures right after the overall and supercategory tables, before the long ones.
    fig_after = "supercategory" if "supercategory" in report.levels else report.levels[0]
    for level in report.levels:
        parts.append(f"<h2>{e(LEVEL_TITLES[level])}</h2>")
        parts.append(_html_table(report_header(report), report_rows(report, level), left=2))
        if level == fig_after:
            for caption, b64 in (figures or {}).items():
                parts.append(
                    f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{e(caption)}</figcaption></figure>"
                )
    ref = reference_table(report)
    if ref is not None and report.reference is not None:
        parts.append('<h2>Published reference numbers</h2><div class="published">')
        parts.append(f'<p class="muted">{e(reference_title(report, report.reference))}</p>')
        rows = [
            [
                r["source"],
                r["method"],
                *[format_value(report.reference.metric, r[c]) for c in ref.columns[2:]],
            ]
            for _, r in ref.iterrows()
        ]
        classes = ["mine" if r["source"] == "this report" else "" for _, r in ref.iterrows()]
        parts.append(_html_table(list(ref.columns), rows, left=2, classes=classes))
        parts.append(f'<p class="muted">Source: {e(report.reference.source)}.</p></div>')
    if comparison is not None:
        parts.append(comparison_html(comparison))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def comparison_html(comparison: Comparison) -> str:
    """The comparison as an HTML fragment."""
    e = html.escape
    header, rows = pair_rows(comparison)
    parts = ["<h2>Paired comparison</h2>", _html_table(header, rows, left=3)]
    parts += [f'<p class="muted">{e(line)}</p>' for line in method_lines(comparison)]
    for key in comparison.top:
        parts.append(
            f"<h3>Largest differences in {e(metric_label(key[0], comparison.k))}: "
            f"{e(key[1])} vs {e(key[2])}</h3>"
        )
        h, r = top_rows(comparison, key)
        parts.append(_html_table(h, r, left=len(h) - 3))
    return "\n".join(parts)
