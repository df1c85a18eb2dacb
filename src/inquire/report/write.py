"""Write a report end to end: tables with intervals, paired tests, figures, rendered files.

:func:`write_report` builds the :class:`~inquire.report.build.Report`, optionally the
:class:`~inquire.report.compare.Comparison` of the runs, draws the figures (precision-recall
curves when relevance labels are known), writes PNG + SVG figures and the report in one or
more formats, and returns everything it made. Every file is written atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from inquire._io import atomic_open, check_output_file, check_output_folder
from inquire.errors import InputError
from inquire.eval.evaluate import GROUP_COLUMNS, EvalResult
from inquire.report import formats as F
from inquire.report.build import DEFAULT_RESAMPLES, Report, build_report, curve_problems
from inquire.report.compare import Comparison, compare

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


@dataclass
class WrittenReport:
    """What :func:`write_report` made.

    ``text``: the report rendered in the requested format (``None`` for the terminal format
    without an output file: the caller prints ``report`` and ``comparison`` at its own
    width). ``figures``: matplotlib figures by file stem. ``files``: every file written, in
    order. ``warnings``: one line per run that gets no precision-recall curve, and why.
    """

    report: Report
    comparison: Comparison | None
    figures: dict[str, Figure]
    text: str | None
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def write_report(
    results: Sequence[str | os.PathLike[str] | EvalResult],
    fmt: str = "terminal",
    out: str | os.PathLike[str] | None = None,
    *,
    by: Sequence[str] = GROUP_COLUMNS,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    reference: str | None = None,
    plots: str | os.PathLike[str] | None = None,
    annotations: str | os.PathLike[str] | None = None,
    with_compare: bool = False,
    compare_metrics: Sequence[str] = ("ap",),
    permutations: int = 10000,
    queries: pd.DataFrame | str | os.PathLike[str] | None = None,
    top_n: int = 5,
    overwrite: bool = False,
    also: Mapping[str, str | os.PathLike[str]] | None = None,
    title: str = "Retrieval report",
    captions: Mapping[str, str] | None = None,
) -> WrittenReport:
    """Report over result folders (or :class:`EvalResult` objects), rendered and written.

    ``fmt`` (a report format of :data:`inquire.report.formats.FORMATS`) is rendered into
    ``WrittenReport.text`` and written to ``out`` when given (refused if it exists, unless
    ``overwrite``); ``also`` maps further formats to files (e.g. ``{"markdown":
    "report.md"}``). ``by``, ``n_resamples``, ``seed``, ``metrics`` and ``reference`` go to
    :func:`~inquire.report.build.build_report`. ``with_compare`` adds paired tests of every
    pair of runs (:func:`~inquire.report.compare.compare` with ``compare_metrics``,
    ``permutations`` Monte Carlo sign patterns, ``seed``, ``queries`` for texts,
    ``top_n`` most different queries) to the formats that carry one (terminal, Markdown,
    HTML).

    Figures are drawn when ``plots`` (a folder; PNG + SVG per figure) is given or a format
    that embeds figures (HTML) is written (embedded as PNG, captioned by ``captions[stem]``,
    default the stem). Their precision-recall curves need each run's ``run.parquet`` and
    relevance labels: ``annotations``, else an annotations CSV named in a result's config
    that exists. ``title`` heads the HTML page. Every output location is checked before any
    work.
    """
    if fmt in (also or {}):
        raise InputError(f"format {fmt!r} is both the main output and in also=; name it once")
    outputs = {fmt: out, **dict(also or {})}
    specs = {f: F.report_format(f) for f in outputs}
    if with_compare and len(results) < 2:
        raise InputError(
            f"--compare tests pairs of runs but got {len(results)} result folder; pass two or "
            f"more, or drop --compare"
        )
    for f, path in outputs.items():
        if path is not None:  # before the bootstrap, not after it
            check_output_file(path, overwrite, "--out" if f == fmt else f"{f} output")
    if plots is not None:
        check_output_folder(plots, "--plots")
    if with_compare:
        for f in outputs:
            F.check_comparison_fits(f)
    report = build_report(
        results,
        by=list(by),
        n_resamples=n_resamples,
        seed=seed,
        metrics=list(metrics) if metrics else None,
        reference=reference,
    )
    comparison = (
        compare(
            results,
            metrics=compare_metrics,
            n_resamples=permutations,
            seed=seed,
            queries=queries,
            top_n=top_n,
        )
        if with_compare
        else None
    )
    written = WrittenReport(report, comparison, {}, None)
    if plots is not None or any(spec.with_figures for spec in specs.values()):
        written.figures, written.warnings = _figures(report, annotations)
    if plots is not None:
        from inquire.report.plots import save_figure

        Path(plots).mkdir(parents=True, exist_ok=True)
        for stem, fig in written.figures.items():
            written.files += save_figure(fig, Path(plots) / stem)
    for f, path in outputs.items():
        if f == "terminal" and path is None:
            continue
        text = render_report(report, f, comparison, written.figures, title=title, captions=captions)
        if f == fmt:
            written.text = text
        if path is not None:
            with atomic_open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            written.files.append(Path(path))
    return written


@dataclass
class WrittenComparison:
    """What :func:`write_comparison` made: the ``comparison`` and its ``text`` in the
    requested format (``None`` for the terminal format without an output file: the caller
    prints the comparison at its own width)."""

    comparison: Comparison
    text: str | None


def write_comparison(
    results: Sequence[str | os.PathLike[str] | EvalResult],
    fmt: str = "terminal",
    out: str | os.PathLike[str] | None = None,
    *,
    metrics: Sequence[str] = ("ap",),
    n_resamples: int = 10000,
    seed: int = 0,
    intersect: bool = False,
    queries: pd.DataFrame | str | os.PathLike[str] | None = None,
    top_n: int = 5,
) -> WrittenComparison:
    """``inquire compare``: paired tests between runs (:func:`~inquire.report.compare.compare`
    with ``metrics``, ``n_resamples`` sign patterns, ``seed``, on the shared queries when
    ``intersect`` else refusing different query sets, ``queries`` for texts, ``top_n``
    most different queries), rendered in comparison format ``fmt`` and written to ``out``
    (atomically) when given. A format that only writes files needs ``out``."""
    spec = F.comparison_format(fmt)
    if spec.file_only and out is None:
        raise InputError(f"--format {fmt} writes a file; add --out FILE{spec.suffix}")
    comparison = compare(
        results,
        metrics=list(metrics),
        n_resamples=n_resamples,
        seed=seed,
        on_mismatch="intersect" if intersect else "error",
        queries=queries,
        top_n=top_n,
    )
    if fmt == "terminal" and out is None:
        return WrittenComparison(comparison, None)
    text = F.render_comparison(comparison, fmt)
    if out is not None:
        with atomic_open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    return WrittenComparison(comparison, text)


def _figures(
    report: Report, annotations: str | os.PathLike[str] | None
) -> tuple[dict[str, Figure], list[str]]:
    """The report's figures and a warning per run without a precision-recall curve."""
    from inquire.data.qrels import read_qrels
    from inquire.report.plots import report_figures

    # Without annotations, use a relevance file named in a result's config if it exists.
    found = (
        Path(annotations)
        if annotations is not None
        else next(
            (
                Path(a)
                for r in report.results
                if isinstance(a := r.config.get("annotations"), str) and Path(a).is_file()
            ),
            None,
        )
    )
    qrels = read_qrels(found) if found else None
    warnings = [
        f"no precision-recall curve for run {run_name!r}: {why}"
        for run_name, why in curve_problems(report, found).items()
    ]
    return report_figures(report, qrels), warnings


def render_report(
    report: Report,
    fmt: str,
    comparison: Comparison | None = None,
    figures: Mapping[str, Figure] | None = None,
    title: str = "Retrieval report",
    captions: Mapping[str, str] | None = None,
) -> str:
    """``report`` (and ``comparison``) as text in the report format ``fmt``; formats that
    embed figures get ``figures`` as PNG, each captioned ``captions[stem]`` (default: the
    stem with spaces); ``title`` heads whole-page formats."""
    embedded: dict[str, str] = {}
    if figures and F.report_format(fmt).with_figures:
        from inquire.report.plots import png_base64

        names = captions or {}
        embedded = {
            names.get(stem, stem.replace("_", " ")): png_base64(fig)
            for stem, fig in figures.items()
        }
    return F.render(report, fmt, comparison=comparison, figures=embedded, title=title)
