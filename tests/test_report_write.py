"""`inquire.report.write_report` called directly (no CLI): what it writes equals the pieces
rendered by hand, and bad outputs fail before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from inquire.errors import InputError, UnknownNameError
from inquire.report import build_report, compare, write_report
from inquire.report import formats as F
from inquire.report.render_text import render_markdown
from inquire.testing.report_results import make_result


def _results():
    a = make_result("run-a", {"ap": [0.9, 0.1, 0.5, 0.7, 0.3, 0.6]})
    b = make_result("run-b", {"ap": [0.8, 0.2, 0.4, 0.9, 0.1, 0.5]})
    return [a, b]


def test_files_equal_the_pieces_rendered_by_hand(tmp_path: Path) -> None:
    results = _results()
    md, html, plots = tmp_path / "r.md", tmp_path / "r.html", tmp_path / "plots"
    written = write_report(
        results,
        "markdown",
        md,
        n_resamples=200,
        seed=3,
        plots=plots,
        with_compare=True,
        permutations=500,
        also={"html": html},
        title="My title",
    )
    report = build_report(results, n_resamples=200, seed=3)
    comparison = compare(results, n_resamples=500, seed=3)
    want = render_markdown(report, comparison)
    assert md.read_text(encoding="utf-8") == want == written.text
    page = html.read_text(encoding="utf-8")
    assert "<title>My title</title>" in page and page.count("data:image/png;base64,") == 2
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        f"{stem}.{ext}" for stem in written.figures for ext in ("png", "svg")
    )
    assert set(written.files) == {md, html, *plots.iterdir()}
    # No run.parquet beside these results: no precision-recall curves, and a line saying so.
    assert len(written.warnings) == 2 and all("run.parquet" in w for w in written.warnings)
    assert written.report.table.equals(report.table)


def test_terminal_without_file_leaves_the_printing_to_the_caller(tmp_path: Path) -> None:
    written = write_report(_results(), n_resamples=0)
    assert written.text is None and written.files == [] and written.figures == {}
    out = tmp_path / "t.txt"
    written = write_report(_results(), "terminal", out, n_resamples=0)
    assert out.read_text(encoding="utf-8") == written.text
    assert "run-a" in written.text and "run-b" in written.text


def test_bad_outputs_fail_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "exists.md"
    out.write_text("keep me", encoding="utf-8")
    plots = tmp_path / "plots"
    with pytest.raises(InputError, match="already exists"):
        write_report(_results(), "markdown", out, plots=plots)
    assert out.read_text(encoding="utf-8") == "keep me" and not plots.exists()
    with pytest.raises(UnknownNameError):
        write_report(_results(), "pdf", tmp_path / "x.pdf")
    with pytest.raises(InputError, match="not to csv"):
        write_report(_results(), "csv", tmp_path / "x.csv", with_compare=True)
    with pytest.raises(InputError, match="got 1 result folder"):
        write_report(_results()[:1], with_compare=True)
    written = write_report(_results(), "markdown", out, n_resamples=0, overwrite=True)
    assert out.read_text(encoding="utf-8") == written.text != "keep me"


def test_write_comparison_renders_writes_and_leaves_the_terminal_to_the_caller(
    tmp_path: Path,
) -> None:
    from inquire.report.write import write_comparison

    results = _results()
    want = compare(results, n_resamples=300, seed=2)
    shown = write_comparison(results, n_resamples=300, seed=2)
    assert shown.text is None and shown.comparison.pairs.equals(want.pairs)
    md = tmp_path / "c.md"
    written = write_comparison(results, "markdown", md, n_resamples=300, seed=2)
    assert written.text == F.render_comparison(want, "markdown") == md.read_text(encoding="utf-8")
    assert write_comparison(results, "csv", n_resamples=300, seed=2).text == F.render_comparison(
        want, "csv"
    )
    with pytest.raises(InputError, match="writes a file"):
        write_comparison(results, "json")
    with pytest.raises(UnknownNameError):
        write_comparison(results, "latex", tmp_path / "c.tex")
    assert not (tmp_path / "c.tex").exists()
