"""Render a report and a paired comparison as text: terminal tables (rich), Markdown, CSV,
LaTeX and JSON.

The CSV is machine-readable: one numeric column per mean and bound, on the table scale.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import TYPE_CHECKING

import pandas as pd

from inquire.metrics import format_value
from inquire.report.build import LEVEL_TITLES
from inquire.report.cells import (
    method_lines,
    pair_rows,
    report_header,
    report_rows,
    top_rows,
    top_title,
)
from inquire.report.reference import reference_table, reference_title

if TYPE_CHECKING:
    from rich.console import RenderableType

    from inquire.report.build import Report
    from inquire.report.compare import Comparison


# ---------------------------------------------------------------------------- terminal


def terminal_renderables(report: Report) -> list[RenderableType]:
    """rich Tables (one per level, plus the reference table) for printing to a console."""
    from rich.table import Table
    from rich.text import Text

    out: list[RenderableType] = [Text(report.ci_description, style="dim")]
    out += [Text(f"note: {n}", style="yellow") for n in report.notes]
    for level in report.levels:
        table = Table(title=f"{LEVEL_TITLES[level]} (k={report.k})", title_justify="left")
        for i, h in enumerate(report_header(report)):
            table.add_column(
                h,
                justify="left" if i < 2 else "right",
                style="bold" if i == 0 else None,
                overflow="fold",
                min_width=8 if i < 2 else None,
            )
        prev = None
        for row in report_rows(report, level):
            # Interval on a second line keeps the table narrow enough for a terminal.
            cells = [c.replace(" [", "\n[", 1) for c in row[3:]]
            table.add_row(row[0] if row[0] != prev else "", row[1], row[2], *cells)
            prev = row[0]
        out.append(table)
    ref = reference_table(report)
    if ref is not None and report.reference is not None:
        table = Table(title=reference_title(report, report.reference), title_justify="left")
        for c in ref.columns:
            table.add_column(c, justify="left" if c in ("source", "method") else "right")
        for _, r in ref.iterrows():
            style = "bold cyan" if r["source"] == "this report" else None
            table.add_row(
                r["source"],
                r["method"],
                *[format_value(report.reference.metric, r[c]) for c in ref.columns[2:]],
                style=style,
            )
        out.append(table)
        out.append(Text(f"source: {report.reference.source}", style="dim"))
    return out


def render_terminal(report: Report, width: int = 160) -> str:
    """Plain text of :func:`terminal_renderables` (for ``--out`` files)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    for r in terminal_renderables(report):
        console.print(r)
    return console.export_text()


def comparison_renderables(comparison: Comparison) -> list[RenderableType]:
    """rich Tables: the pair tests, then the most different queries of each pair."""
    from rich.table import Table
    from rich.text import Text

    header, rows = pair_rows(comparison)
    table = Table(title="Paired comparison", title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 3 else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    out: list[RenderableType] = [table]
    out += [Text(line, style="dim") for line in method_lines(comparison)]
    for key in comparison.top:
        header, rows = top_rows(comparison, key)
        t = Table(
            title=top_title(comparison, key),
            title_justify="left",
        )
        for i, h in enumerate(header):
            t.add_column(
                h,
                justify="right" if i >= len(header) - 3 or i == 0 else "left",
                overflow="fold",
                max_width=60 if h == "text" else None,
            )
        for row in rows:
            t.add_row(*row)
        out.append(t)
    return out


def comparison_text(comparison: Comparison, width: int = 160) -> str:
    """Plain text of :func:`comparison_renderables` (for ``--out`` files)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    for r in comparison_renderables(comparison):
        console.print(r)
    return console.export_text()


# ---------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], right_from: int) -> list[str]:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |"]
    lines.append(
        "|" + "|".join("---:" if i >= right_from else "---" for i in range(len(header))) + "|"
    )
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(report: Report, comparison: Comparison | None = None) -> str:
    """GitHub-flavoured Markdown: one table per level, then the reference and comparison."""
    lines = [f"# Retrieval report (k={report.k})", "", f"Runs: {', '.join(report.runs)}.", ""]
    lines += [report.ci_description, ""]
    lines += [f"> Note: {n}" for n in report.notes] + ([""] if report.notes else [])
    for level in report.levels:
        lines += [f"## {LEVEL_TITLES[level]}", ""]
        lines += [*_md_table(report_header(report), report_rows(report, level), right_from=2), ""]
    ref = reference_table(report)
    if ref is not None and report.reference is not None:
        lines += [
            "## Published reference numbers",
            "",
            reference_title(report, report.reference),
            "",
        ]
        rows = [
            [
                r["source"],
                r["method"],
                *[format_value(report.reference.metric, r[c]) for c in ref.columns[2:]],
            ]
            for _, r in ref.iterrows()
        ]
        lines += _md_table(list(ref.columns), rows, right_from=2)
        lines += ["", f"Source: {report.reference.source}.", ""]
    if comparison is not None:
        lines += [comparison_markdown(comparison)]
    return "\n".join(lines).rstrip() + "\n"


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison as Markdown sections."""
    header, rows = pair_rows(comparison)
    lines = ["## Paired comparison", ""]
    lines += [*_md_table(header, rows, right_from=3), ""]
    lines += [f"{line}  " for line in method_lines(comparison)] + [""]
    for key in comparison.top:
        lines += [
            f"### {top_title(comparison, key)}",
            "",
        ]
        h, r = top_rows(comparison, key)
        lines += [*_md_table(h, r, right_from=len(h) - 3), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- CSV and JSON


def render_csv(report: Report) -> str:
    """``level, group, run, n_queries`` + ``m, m_lo, m_hi`` per metric (table scale).

    With a reference attached, its published values follow as rows with level
    ``published:<task>``, ``run`` = the method and only the reference metric filled.
    """
    t = report.table.copy()
    ref = report.reference
    if ref is not None:
        extra = []
        for _, r in ref.table.iterrows():
            for c in ref.columns:
                if not math.isnan(r[c]):
                    group = "all" if c == "overall" else c
                    extra.append(
                        {
                            "level": f"published:{ref.task}",
                            "group": group,
                            "run": r["method"],
                            ref.metric: r[c],
                        }
                    )
        t = pd.concat([t, pd.DataFrame(extra)], ignore_index=True)
    buf = io.StringIO()
    t.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue()


def comparison_csv(comparison: Comparison) -> str:
    """The pair table as CSV (means and differences on the table scale)."""
    buf = io.StringIO()
    comparison.pairs.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue()


def comparison_json(comparison: Comparison) -> str:
    """:meth:`Comparison.as_dict` as indented JSON."""
    return json.dumps(comparison.as_dict(), indent=2) + "\n"


# ---------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (``& % $ # _ { } ~ ^ \\``) in one pass."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], text)


def render_latex(report: Report) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    header = report_header(report)
    n = len(header)
    lines = [
        "% Generated by inquire report; needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        "\\begin{tabular}{llr" + "r" * (n - 3) + "}",
        "\\toprule",
        " & ".join(latex_escape(h.capitalize() if i < 2 else h) for i, h in enumerate(header))
        + " \\\\",
    ]
    for level in report.levels:
        lines.append("\\midrule")
        lines.append(
            f"\\multicolumn{{{n}}}{{l}}{{\\textit{{{latex_escape(LEVEL_TITLES[level])}}}}} \\\\"
        )
        for row in report_rows(report, level):
            lines.append(" & ".join(latex_escape(c) for c in row) + " \\\\")
    lines.append("\\bottomrule")
    lines.append("\\end{tabular}")
    caption = report.ci_description
    if report.notes:
        caption += " " + " ".join(f"Note: {n}." for n in report.notes)
    lines.append(f"\\caption{{Retrieval results at $k={report.k}$. {latex_escape(caption)}}}")
    lines.append("\\end{table}")
    ref = reference_table(report)
    if ref is not None and report.reference is not None:
        cols = list(ref.columns)
        lines += [
            "",
            "\\begin{table}[t]",
            "\\centering",
            "\\small",
            "\\begin{tabular}{ll" + "r" * (len(cols) - 2) + "}",
            "\\toprule",
            " & ".join(latex_escape(c) for c in cols) + " \\\\",
            "\\midrule",
        ]
        ref_caption = (
            f"{reference_title(report, report.reference)} Source: {report.reference.source}."
        )
        for _, r in ref.iterrows():
            cells = [
                r["source"],
                r["method"],
                *[format_value(report.reference.metric, r[c]) for c in cols[2:]],
            ]
            lines.append(" & ".join(latex_escape(str(c)) for c in cells) + " \\\\")
        lines += [
            "\\bottomrule",
            "\\end{tabular}",
            f"\\caption{{{latex_escape(ref_caption)}}}",
            "\\end{table}",
        ]
    return "\n".join(lines) + "\n"
