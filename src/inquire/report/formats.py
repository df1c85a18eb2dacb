"""The report formats: one :class:`ReportFormat` row per format in :data:`FORMATS`, and the
dispatch of a report or a comparison to its format's renderer.

Adding a format: its renderer(s) (:mod:`inquire.report.render_text`,
:mod:`inquire.report.render_html`, or a module of their own) and one row here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from inquire.errors import InputError, UnknownNameError
from inquire.report.render_html import render_html
from inquire.report.render_text import (
    comparison_csv,
    comparison_json,
    comparison_markdown,
    comparison_text,
    render_csv,
    render_latex,
    render_markdown,
    render_terminal,
)

if TYPE_CHECKING:
    from inquire.report.build import Report
    from inquire.report.compare import Comparison


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


# Format name -> format. Adding a format: its renderer(s) and one entry here
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
