"""The report-format registry (inquire.report.formats.FORMATS): one entry per format, read by
`inquire report --format` and `inquire compare --format`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.errors import InputError, UnknownNameError
from inquire.report import Comparison, Report, build_report, compare
from inquire.report.formats import (
    FORMATS,
    ReportFormat,
    check_comparison_fits,
    comparison_formats,
    register_format,
    render,
    render_comparison,
    report_formats,
    unregister_format,
)
from inquire.testing.report_results import make_result

runner = CliRunner()


def _tsv(
    report: Report,
    comparison: Comparison | None,
    figures: Mapping[str, str] | None,
    title: str,
) -> str:
    rows = report.level_table("overall")
    lines = ["\t".join(["run", *report.metrics])]
    lines += [
        "\t".join([r["run"], *(f"{r[m]:.2f}" for m in report.metrics)]) for _, r in rows.iterrows()
    ]
    return "\n".join(lines) + "\n"


def _pairs_tsv(comparison: Comparison) -> str:
    return comparison.pairs[["metric", "run_a", "run_b", "diff"]].to_csv(
        sep="\t", index=False, float_format="%.2f"
    )


@pytest.fixture
def tsv() -> Iterator[ReportFormat]:
    fmt = register_format(ReportFormat("tsv", ".tsv", _tsv, _pairs_tsv, description="tabs"))
    yield fmt
    unregister_format("tsv")
    assert "tsv" not in FORMATS


@pytest.fixture
def folders(tmp_path: Path) -> list[str]:
    return [
        str(make_result(name, {"ap": ap}).save(tmp_path / name))
        for name, ap in (("a", [0.1, 0.2, 0.3, 0.4]), ("b", [0.5, 0.6, 0.7, 0.9]))
    ]


def test_the_builtin_formats() -> None:
    assert report_formats() == ("terminal", "markdown", "csv", "latex", "html")
    assert comparison_formats() == ("terminal", "markdown", "csv", "json")
    assert [n for n in report_formats() if FORMATS[n].with_comparison] == [
        "terminal", "markdown", "html",
    ]  # fmt: skip


def test_a_registered_format_reaches_both_commands(
    tsv: ReportFormat, folders: list[str], tmp_path: Path
) -> None:
    res = runner.invoke(
        app, ["report", *folders, "-f", "tsv", "--bootstrap", "0", "--metrics", "ap"]
    )
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ["run\tap", "a\t25.00", "b\t67.50"]
    res = runner.invoke(app, ["compare", *folders, "-f", "tsv"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[:2] == ["metric\trun_a\trun_b\tdiff", "ap\ta\tb\t-42.50"]
    # A format without with_comparison refuses --compare before any work, naming the others.
    res = runner.invoke(app, ["report", *folders, "-f", "tsv", "--compare"])
    assert res.exit_code == 2
    assert "terminal, markdown, html reports, not to tsv" in res.output
    assert "--format tsv" in res.output
    res = runner.invoke(app, ["report", *folders, "-f", "nope"])
    assert res.exit_code == 2 and "tsv" in res.output  # the error lists registered formats


def test_registry_errors(tsv: ReportFormat) -> None:
    with pytest.raises(InputError, match="'tsv' is already registered"):
        register_format(ReportFormat("tsv", ".tsv", _tsv))
    with pytest.raises(InputError, match="renders nothing"):
        register_format(ReportFormat("empty", ".x"))
    with pytest.raises(InputError, match="'a b' must be"):
        register_format(ReportFormat("a b", ".x", _tsv))
    with pytest.raises(UnknownNameError, match="unknown report format 'json'"):
        render(build_report([make_result("r", {"ap": [0.5]})], n_resamples=0), "json")
    with pytest.raises(UnknownNameError, match="unknown comparison format 'latex'"):
        render_comparison(None, "latex")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not to csv"):
        check_comparison_fits("csv")


def test_every_format_renders_the_published_reference_and_a_comparison(
    folders: list[str], tmp_path: Path
) -> None:
    report = build_report(folders, n_resamples=0, reference="fullrank")
    comparison = compare(folders)
    for name in report_formats():
        text = render(report, name)
        assert "published" in text, name
        if FORMATS[name].with_comparison:
            assert "Paired comparison" in render(report, name, comparison=comparison), name
        else:
            with pytest.raises(InputError, match="--compare"):
                render(report, name, comparison=comparison)
    comparison.to_json(tmp_path / "c.json")
    assert render_comparison(comparison, "json") == (tmp_path / "c.json").read_text()
    assert json.loads(render_comparison(comparison, "json"))["runs"] == ["a", "b"]


def test_reference_comparison_puts_runs_beside_the_leaderboard() -> None:
    import pandas as pd

    from inquire.report.reference import reference_comparison, reference_table

    a = make_result("base", {"ap": [0.25, 0.75, 0.5, 0.0]})
    b = make_result("other", {"ap": [1.0, 0.5, 0.5, 0.5]})
    ref = reference_comparison([a, b], "fullrank")
    assert ref is not None and ref.leaderboard.task == "fullrank"
    want = reference_table(
        build_report([a, b], by=["supercategory"], n_resamples=0, reference="fullrank")
    )
    pd.testing.assert_frame_equal(ref.table, want)
    mine = ref.table[ref.table["source"] == "this report"]
    assert mine["method"].tolist() == ["base", "other"]
    assert mine["overall"].tolist() == pytest.approx([37.5, 62.5])
    assert reference_comparison([a], "no-such-task") is None
