"""Render a :class:`~inquire.report.build.Report` (and a comparison) as text.

Formats are rows of :data:`FORMATS` (name -> :class:`ReportFormat`). Cells read
``mean [lo, hi]`` with the bootstrap interval, each metric on its table scale
(:class:`inquire.metrics.Metric`: AP, nDCG, P and R x100 with one decimal, MRR a fraction
with three).
The CSV is machine-readable instead: one numeric column per mean and bound.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import pandas as pd

from inquire.errors import InputError, UnknownNameError
from inquire.metrics import format_value, metric_label, scale_note
from inquire.report.build import LEVEL_TITLES, Report
from inquire.report.leaderboard import Leaderboard

if TYPE_CHECKING:
    from rich.console import RenderableType

    from inquire.eval.evaluate import EvalResult
    from inquire.report.compare import Comparison


def fmt_cell(metric: str, mean: float, lo: float, hi: float) -> str:
    """``mean [lo, hi]``, or just ``mean`` without an interval."""
    if lo is None or math.isnan(lo):
        return format_value(metric, mean)
    return f"{format_value(metric, mean)} [{format_value(metric, lo)}, {format_value(metric, hi)}]"


def fmt_p(p: float) -> str:
    """A p-value with 4 decimals, or in scientific notation below 1e-4."""
    if p is None or math.isnan(p):
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _header(report: Report) -> list[str]:
    return ["group", "run", "queries", *[metric_label(m, report.k) for m in report.metrics]]


def _cells(report: Report, level: str) -> list[list[str]]:
    rows = []
    for _, r in report.level_table(level).iterrows():
        rows.append(
            [str(r["group"]), str(r["run"]), str(int(r["n_queries"]))]
            + [fmt_cell(m, r[m], r[f"{m}_lo"], r[f"{m}_hi"]) for m in report.metrics]
        )
    return rows


def reference_table(report: Report) -> pd.DataFrame | None:
    """Published leaderboard rows followed by this report's runs (AP, overall + supercats).

    Columns: ``source`` (``published`` or ``this report``), ``method``, ``overall`` and the
    supercategories, on the x100 scale. ``None`` when the report has no reference attached.
    """
    ref = report.reference
    if ref is None:
        return None
    cols = list(ref.columns)
    pub = ref.table[["method", *cols]].copy()
    pub.insert(0, "source", "published")
    rows = []
    if ref.metric in report.metrics:
        t = report.table
        for run in report.runs:
            sub = t[(t["run"] == run) & t["level"].isin(["overall", "supercategory"])]
            vals = {
                ("overall" if g == "all" else g): v
                for g, v in zip(sub["group"], sub[ref.metric], strict=True)
            }
            rows.append(
                {"source": "this report", "method": run} | {c: vals.get(c, math.nan) for c in cols}
            )
    return pd.concat(
        [pub, pd.DataFrame(rows, columns=["source", "method", *cols])], ignore_index=True
    )


@dataclass(frozen=True)
class ReferenceComparison:
    """Runs beside a task's published leaderboard: ``table`` (:func:`reference_table`, the
    runs' rows in the order given), ``leaderboard`` and ``notes`` (the report's notes)."""

    table: pd.DataFrame
    leaderboard: Leaderboard
    notes: list[str]


def reference_comparison(results: Sequence[EvalResult], task: str) -> ReferenceComparison | None:
    """``results`` (one task's runs) beside the published leaderboard of ``task``
    (``fullrank``, ``rerank``): a report without resampling, grouped by supercategory when
    every run has it, as :func:`reference_table`. None when ``task`` has no published
    numbers or the runs lack the leaderboard's metric. Raises :class:`InputError` when the
    runs cannot be reported together (see :func:`~inquire.report.build.build_report`)."""
    from inquire.report.build import build_report
    from inquire.report.leaderboard import leaderboard_tasks

    if task not in leaderboard_tasks():
        return None
    report = build_report(
        list(results),
        by=[g for g in ("supercategory",) if all(g in r.per_query for r in results)],
        n_resamples=0,
        reference=task,
    )
    table = reference_table(report)
    if table is None or report.reference is None:
        return None
    return ReferenceComparison(table, report.reference, list(report.notes))


def _reference_title(report: Report, ref: Leaderboard) -> str:
    return (
        f"Published reference numbers: {ref.label}, {ref.metric.upper()}@{ref.k} (x100). "
        f"Rows marked 'this report' are your runs at k={report.k}."
    )


# ---------------------------------------------------------------------------- terminal


def terminal_renderables(report: Report) -> list[RenderableType]:
    """rich Tables (one per level, plus the reference table) for printing to a console."""
    from rich.table import Table
    from rich.text import Text

    out: list[RenderableType] = [Text(report.ci_description, style="dim")]
    out += [Text(f"note: {n}", style="yellow") for n in report.notes]
    for level in report.levels:
        table = Table(title=f"{LEVEL_TITLES[level]} (k={report.k})", title_justify="left")
        for i, h in enumerate(_header(report)):
            table.add_column(
                h,
                justify="left" if i < 2 else "right",
                style="bold" if i == 0 else None,
                overflow="fold",
                min_width=8 if i < 2 else None,
            )
        prev = None
        for row in _cells(report, level):
            # Interval on a second line keeps the table narrow enough for a terminal.
            cells = [c.replace(" [", "\n[", 1) for c in row[3:]]
            table.add_row(row[0] if row[0] != prev else "", row[1], row[2], *cells)
            prev = row[0]
        out.append(table)
    ref = reference_table(report)
    if ref is not None and report.reference is not None:
        table = Table(title=_reference_title(report, report.reference), title_justify="left")
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
        lines += [*_md_table(_header(report), _cells(report, level), right_from=2), ""]
    ref = reference_table(report)
    if ref is not None and report.reference is not None:
        lines += [
            "## Published reference numbers",
            "",
            _reference_title(report, report.reference),
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


# ---------------------------------------------------------------------------- CSV


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
    header = _header(report)
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
        for row in _cells(report, level):
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
            f"{_reference_title(report, report.reference)} Source: {report.reference.source}."
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


# ---------------------------------------------------------------------------- HTML

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
        parts.append(_html_table(_header(report), _cells(report, level), left=2))
        if level == fig_after:
            for caption, b64 in (figures or {}).items():
                parts.append(
                    f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{e(caption)}</figcaption></figure>"
                )
    ref = reference_table(report)
    if ref is not None and report.reference is not None:
        parts.append('<h2>Published reference numbers</h2><div class="published">')
        parts.append(f'<p class="muted">{e(_reference_title(report, report.reference))}</p>')
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


# ---------------------------------------------------------------------------- comparison


def _pair_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = [
        "metric",
        "A",
        "B",
        "queries",
        "mean A",
        "mean B",
        "A - B",
        "wins/losses/ties",
        "p (rand.)",
        "p (rand., Holm)",
        "t",
        "p (t)",
        "p (t, Holm)",
    ]
    rows = []
    for _, r in comparison.pairs.iterrows():
        m = r["metric"]
        label = metric_label(m, comparison.k)
        rand = fmt_p(r["perm_p"]) + ("" if r["perm_exact"] else "*")
        rows.append(
            [
                label,
                r["run_a"],
                r["run_b"],
                str(int(r["n_queries"])),
                format_value(m, r["mean_a"]),
                format_value(m, r["mean_b"]),
                ("+" if r["diff"] > 0 else "") + format_value(m, r["diff"]),
                f"{int(r['wins'])}/{int(r['losses'])}/{int(r['ties'])}",
                rand,
                fmt_p(r["perm_p_holm"]),
                "-" if math.isnan(r["t"]) else f"{r['t']:.2f}",
                fmt_p(r["t_p"]),
                fmt_p(r["t_p_holm"]),
            ]
        )
    return header, rows


def _top_rows(
    comparison: Comparison, key: tuple[str, str, str]
) -> tuple[list[str], list[list[str]]]:
    m, a, b = key
    df = comparison.top[key]
    header = ["query", *(["text"] if "query_text" in df else []), "supercategory", a, b, "A - B"]
    rows = []
    for _, r in df.iterrows():
        rows.append(
            [str(int(r["query_id"]))]
            + ([str(r["query_text"])] if "query_text" in df else [])
            + [
                str(r.get("supercategory", "")),
                format_value(m, r[a]),
                format_value(m, r[b]),
                ("+" if r["diff"] > 0 else "") + format_value(m, r["diff"]),
            ]
        )
    return header, rows


def _top_title(comparison: Comparison, key: tuple[str, str, str]) -> str:
    return f"Largest differences in {metric_label(key[0], comparison.k)}: {key[1]} vs {key[2]}"


def _method_lines(comparison: Comparison) -> list[str]:
    lines = [comparison.method_description]
    if (~comparison.pairs["perm_exact"]).any():
        lines.append("* Monte Carlo p-value.")
    lines += [f"Note: {n}" for n in comparison.notes]
    return lines


def comparison_renderables(comparison: Comparison) -> list[RenderableType]:
    """rich Tables: the pair tests, then the most different queries of each pair."""
    from rich.table import Table
    from rich.text import Text

    header, rows = _pair_rows(comparison)
    table = Table(title="Paired comparison", title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 3 else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    out: list[RenderableType] = [table]
    out += [Text(line, style="dim") for line in _method_lines(comparison)]
    for key in comparison.top:
        header, rows = _top_rows(comparison, key)
        t = Table(
            title=_top_title(comparison, key),
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


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison as Markdown sections."""
    header, rows = _pair_rows(comparison)
    lines = ["## Paired comparison", ""]
    lines += [*_md_table(header, rows, right_from=3), ""]
    lines += [f"{line}  " for line in _method_lines(comparison)] + [""]
    for key in comparison.top:
        lines += [
            f"### {_top_title(comparison, key)}",
            "",
        ]
        h, r = _top_rows(comparison, key)
        lines += [*_md_table(h, r, right_from=len(h) - 3), ""]
    return "\n".join(lines)


def comparison_csv(comparison: Comparison) -> str:
    """The pair table as CSV (means and differences on the table scale)."""
    buf = io.StringIO()
    comparison.pairs.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue()


def comparison_html(comparison: Comparison) -> str:
    """The comparison as an HTML fragment."""
    e = html.escape
    header, rows = _pair_rows(comparison)
    parts = ["<h2>Paired comparison</h2>", _html_table(header, rows, left=3)]
    parts += [f'<p class="muted">{e(line)}</p>' for line in _method_lines(comparison)]
    for key in comparison.top:
        parts.append(
            f"<h3>Largest differences in {e(metric_label(key[0], comparison.k))}: "
            f"{e(key[1])} vs {e(key[2])}</h3>"
        )
        h, r = _top_rows(comparison, key)
        parts.append(_html_table(h, r, left=len(h) - 3))
    return "\n".join(parts)


def comparison_text(comparison: Comparison, width: int = 160) -> str:
    """Plain text of :func:`comparison_renderables` (for ``--out`` files)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    for r in comparison_renderables(comparison):
        console.print(r)
    return console.export_text()


def comparison_json(comparison: Comparison) -> str:
    """:meth:`Comparison.as_dict` as indented JSON."""
    return json.dumps(comparison.as_dict(), indent=2) + "\n"


# ---------------------------------------------------------------------------- the registry

ReportRenderer = Callable[["Report", "Comparison | None", "Mapping[str, str] | None", str], str]
ComparisonRenderer = Callable[["Comparison"], str]


@dataclass(frozen=True)
class ReportFormat:
    """One output format: the single place a format is declared.

    ``report(report, comparison, figures, title) -> text`` renders a report (``None``: the format
    is for comparisons only); ``comparison(comparison) -> text`` renders a paired
    comparison on its own (``None``: reports only). ``with_comparison``: ``report`` can
    append a comparison; ``with_figures``: it embeds figures (``{caption: base64 PNG}``);
    ``file_only``: the text is written to a file, not printed (``--out`` required).
    ``suffix``: the usual file suffix. ``inquire report --format`` and
    ``inquire compare --format`` offer exactly the registered names.
    """

    name: str
    suffix: str
    report: ReportRenderer | None = None
    comparison: ComparisonRenderer | None = None
    with_comparison: bool = False
    with_figures: bool = False
    file_only: bool = False
    description: str = ""


def _terminal(
    report: Report, comparison: Comparison | None, figures: Mapping[str, str] | None, title: str
) -> str:
    text = render_terminal(report)
    return text if comparison is None else text + "\n" + comparison_text(comparison)


# Format name -> format. Adding a format: its renderer(s) above and one entry here
# (docs/architecture.md, "Add a report format").
FORMATS: dict[str, ReportFormat] = {}


def register_format(fmt: ReportFormat, replace: bool = False) -> ReportFormat:
    """Add ``fmt`` to :data:`FORMATS`; an existing name is an error unless ``replace``."""
    if not fmt.name or not all(c.isalnum() or c in "-_" for c in fmt.name):
        raise InputError(f"format name {fmt.name!r} must be letters, digits, '-' or '_'")
    if fmt.report is None and fmt.comparison is None:
        raise InputError(f"format {fmt.name!r} renders nothing: give it report= or comparison=")
    if fmt.name in FORMATS and not replace:
        raise InputError(f"report format {fmt.name!r} is already registered; pass replace=True")
    FORMATS[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> ReportFormat:
    """Remove the format ``name`` from :data:`FORMATS`; return it."""
    if name not in FORMATS:
        raise UnknownNameError("report format", name, FORMATS)
    return FORMATS.pop(name)


for _fmt in (
    ReportFormat(
        "terminal",
        ".txt",
        _terminal,
        comparison_text,
        with_comparison=True,
        description="rich tables (plain text with --out)",
    ),
    ReportFormat(
        "markdown",
        ".md",
        lambda r, c, f, t: render_markdown(r, c),
        lambda c: comparison_markdown(c) + "\n",
        with_comparison=True,
        description="GitHub-flavoured Markdown",
    ),
    ReportFormat(
        "csv",
        ".csv",
        lambda r, c, f, t: render_csv(r),
        comparison_csv,
        description="one numeric column per mean and bound",
    ),
    ReportFormat(
        "latex", ".tex", lambda r, c, f, t: render_latex(r), description="a booktabs table"
    ),
    ReportFormat(
        "html",
        ".html",
        lambda r, c, f, t: render_html(r, comparison=c, figures=f, title=t),
        with_comparison=True,
        with_figures=True,
        description="one self-contained page with figures",
    ),
    ReportFormat(
        "json",
        ".json",
        comparison=comparison_json,
        file_only=True,
        description="the comparison as JSON",
    ),
):
    register_format(_fmt)


def report_formats() -> tuple[str, ...]:
    """Names of the formats that render a report (``inquire report --format``)."""
    return tuple(n for n, f in FORMATS.items() if f.report is not None)


def comparison_formats() -> tuple[str, ...]:
    """Names of the formats that render a comparison (``inquire compare --format``)."""
    return tuple(n for n, f in FORMATS.items() if f.comparison is not None)


def report_format(name: str) -> ReportFormat:
    """The format ``name`` if it renders reports; :class:`UnknownNameError` else."""
    if name not in report_formats():
        raise UnknownNameError("report format", name, report_formats())
    return FORMATS[name]


def comparison_format(name: str) -> ReportFormat:
    """The format ``name`` if it renders comparisons; :class:`UnknownNameError` else."""
    if name not in comparison_formats():
        raise UnknownNameError("comparison format", name, comparison_formats())
    return FORMATS[name]


def check_comparison_fits(name: str) -> None:
    """Fail (before any work) when the report format ``name`` cannot carry a comparison."""
    if not report_format(name).with_comparison:
        able = [n for n in report_formats() if FORMATS[n].with_comparison]
        raise InputError(
            f"--compare adds the paired tests to {', '.join(able)} reports, not to {name}; for "
            f"a {name} table of the tests run `inquire compare RESULTS... --format "
            f"{name if name in comparison_formats() else 'csv'}`"
        )


def render(
    report: Report,
    fmt: str,
    comparison: Comparison | None = None,
    figures: Mapping[str, str] | None = None,
    title: str = "Retrieval report",
) -> str:
    """Render ``report`` in format ``fmt`` (a report format of :data:`FORMATS`), with
    ``comparison`` appended and ``figures`` (``{caption: base64 PNG}``) embedded where the
    format takes them (a comparison it cannot carry is an :class:`InputError`); ``title``
    heads formats that are whole pages (HTML)."""
    spec = report_format(fmt)
    if comparison is not None:
        check_comparison_fits(fmt)
    renderer = cast(ReportRenderer, spec.report)  # report_format() checked it is set
    return renderer(report, comparison, figures if spec.with_figures else None, title)


def render_comparison(comparison: Comparison, fmt: str) -> str:
    """Render ``comparison`` alone in format ``fmt`` (a comparison format of :data:`FORMATS`)."""
    renderer = cast(ComparisonRenderer, comparison_format(fmt).comparison)
    return renderer(comparison)
