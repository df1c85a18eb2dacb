"""``inquire report`` and ``inquire compare``: tables, intervals, tests and plots of results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from inquire.cli._common import friendly_errors, say


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]


@friendly_errors
def report_cmd(
    results: list[Path] = typer.Argument(
        ..., help="Result folders (per_query.csv + summary.json)."
    ),
    fmt: str = typer.Option(
        "terminal",
        "--format",
        "-f",
        help="terminal, markdown, csv, latex, html or another registered report format.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write to this file instead of stdout."
    ),
    by: str = typer.Option(
        "supercategory,category,iconic_group",
        "--by",
        help="Comma-separated groupings after the overall row ('none' for overall only).",
    ),
    bootstrap: int = typer.Option(
        10000, "--bootstrap", help="Bootstrap resamples (0: no intervals)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and the randomization test."),
    metrics: str | None = typer.Option(
        None, "--metrics", help="Comma-separated subset, e.g. ap,ndcg."
    ),
    reference: str | None = typer.Option(
        None, "--reference", help="Show published INQUIRE numbers: fullrank or rerank."
    ),
    plots: Path | None = typer.Option(None, "--plots", help="Also write PNG and SVG figures here."),
    annotations: Path | None = typer.Option(
        None, "--annotations", help="Relevance CSV, for precision-recall curves from run.parquet."
    ),
    with_compare: bool = typer.Option(
        False, "--compare", help="Add paired tests of the runs (AP) to the report."
    ),
    permutations: int = typer.Option(
        10000,
        "--permutations",
        help="--compare: Monte Carlo sign patterns of the randomization test when > 20 "
        "queries differ.",
    ),
    queries: Path | None = typer.Option(None, "--queries", help="Query CSV for query texts."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Tabulate RESULTS overall and per group, with bootstrap confidence intervals."""
    from inquire.report.write import write_report

    written = write_report(
        results,
        fmt,
        out,
        by=_split(by),
        n_resamples=bootstrap,
        seed=seed,
        metrics=_split(metrics) if metrics else None,
        reference=reference,
        plots=plots,
        annotations=annotations,
        with_compare=with_compare,
        permutations=permutations,
        queries=queries,
        overwrite=overwrite,
    )
    for line in written.warnings:
        say(f"warning: {line}", typer.colors.YELLOW)
    if plots is not None:
        typer.echo(f"wrote {len(written.figures)} figures (PNG + SVG) to {plots}", err=True)
    if written.text is None:  # terminal, no --out: tables at the terminal's width
        from rich.console import Console

        console = Console()
        print_report(console, written.report)
        if written.comparison is not None:
            print_comparison(console, written.comparison)
    elif out is None:
        typer.echo(written.text, nl=False)
    else:
        typer.echo(f"wrote {out}", err=True)


def print_report(console: Any, report: Any) -> None:
    """The report's tables at the console's width; where they would crop a column or break
    a run or group name, one block per (group, run) with a line per metric instead."""
    import io

    from rich.console import Console
    from rich.text import Text

    from inquire._render import Col, print_records
    from inquire.metrics import format_value
    from inquire.report.build import LEVEL_TITLES
    from inquire.report.cells import report_header, report_rows
    from inquire.report.reference import reference_table, reference_title
    from inquire.report.render_text import terminal_renderables

    renderables = terminal_renderables(report)
    buf = io.StringIO()
    probe = Console(file=buf, width=console.width, color_system=None, legacy_windows=False)
    wide_enough = all(probe.measure(r).minimum <= console.width for r in renderables)
    for r in renderables:
        probe.print(r)
    lines = buf.getvalue().splitlines()
    names = {str(v) for v in report.table["run"]} | {str(v) for v in report.table["group"]}
    if wide_enough and all(any(n in line for line in lines) for n in names):
        for r in renderables:
            console.print(r)
        return
    console.print(Text(report.ci_description, style="dim"))
    for note in report.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    columns = [Col(h, keep=True) for h in report_header(report)]
    for level in report.levels:
        print_records(
            console,
            columns,
            report_rows(report, level),
            f"{LEVEL_TITLES[level]} (k={report.k})",
            head=3,
            head_format=lambda v: f"{v[0]} · {v[1]} ({v[2]} queries)",
            vertical=True,
        )
    ref = reference_table(report)
    if ref is not None and report.reference is not None:
        cols = [
            Col(str(c), keep=True, justify="left" if i < 2 else "right") for i, c in enumerate(ref)
        ]
        rows = [
            [str(r["source"]), str(r["method"])]
            + [format_value(report.reference.metric, r[c]) for c in ref.columns[2:]]
            for _, r in ref.iterrows()
        ]
        print_records(
            console,
            cols,
            rows,
            reference_title(report, report.reference),
            head=2,
            head_format=lambda v: f"{v[1]} ({v[0]})",
        )
        console.print(Text(f"source: {report.reference.source}", style="dim"))


def print_comparison(console: Any, comparison: Any) -> None:
    """The paired comparison at the console's width: tables where they fit whole, else one
    block per row; run names, metrics and numbers are never cut."""
    from rich.text import Text

    from inquire._render import Col, print_records
    from inquire.report.cells import method_lines, pair_rows, top_rows, top_title

    header, rows = pair_rows(comparison)
    columns = [
        Col(h, keep=True, justify="left" if i < 3 else "right") for i, h in enumerate(header)
    ]
    print_records(
        console,
        columns,
        rows,
        "Paired comparison",
        head=3,
        head_format=lambda v: f"{v[0]}: A = {v[1]}, B = {v[2]}",
    )
    for line in method_lines(comparison):
        console.print(Text(line, style="dim"))
    for key in comparison.top:
        header, rows = top_rows(comparison, key)
        _, a, b = key
        title = top_title(comparison, key).replace(f": {a} vs {b}", f": A = {a}, B = {b}")
        # The run names are in the title: the columns are A and B, as in the pair table.
        named = [*header[:-3], "A", "B", header[-1]]
        cols = [
            Col(h, keep=h != "text", justify="right" if i >= len(named) - 3 or i == 0 else "left")
            for i, h in enumerate(named)
        ]
        print_records(console, cols, rows, title)


@friendly_errors
def compare_cmd(
    results: list[Path] = typer.Argument(..., help="Two or more result folders."),
    metric: str = typer.Option("ap", "--metric", help="Comma-separated metrics to test."),
    permutations: int = typer.Option(
        10000, "--permutations", help="Monte Carlo sign patterns when > 20 queries differ."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the randomization test."),
    intersect: bool = typer.Option(
        False, "--intersect", help="Compare on shared queries instead of refusing different sets."
    ),
    queries: Path | None = typer.Option(None, "--queries", help="Query CSV for query texts."),
    top: int = typer.Option(5, "--top", help="How many most-different queries to list per pair."),
    fmt: str = typer.Option(
        "terminal",
        "--format",
        "-f",
        help="terminal, markdown, csv, json or another registered comparison format.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write to this file instead of stdout."
    ),
) -> None:
    """Paired tests (randomization and t-test, Holm-corrected) between runs on the same queries."""
    from inquire.report.write import write_comparison

    written = write_comparison(
        results,
        fmt,
        out,
        metrics=_split(metric),
        n_resamples=permutations,
        seed=seed,
        intersect=intersect,
        queries=queries,
        top_n=top,
    )
    if written.text is None:
        from rich.console import Console

        print_comparison(Console(), written.comparison)
    elif out is None:
        typer.echo(written.text, nl=False)
    else:
        typer.echo(f"wrote {out}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``compare``."""
    app.command("report")(report_cmd)
    app.command("compare")(compare_cmd)
