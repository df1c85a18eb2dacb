"""`inquire report --compare` (inquire.cli.report)."""

from __future__ import annotations

from pathlib import Path


def test_report_compare_is_never_silently_dropped(tmp_path: Path) -> None:
    """`inquire report --compare` used to vanish from terminal text written with --out, and
    from csv/latex output and single-run reports, without a word."""
    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.testing.report_results import make_result

    dirs = []
    for name, ap in (("a", [0.1, 0.2, 0.3, 0.4]), ("b", [0.5, 0.6, 0.7, 0.9])):
        dirs.append(str(make_result(name, {"ap": ap}).save(tmp_path / name)))
    runner = CliRunner()
    out = tmp_path / "report.txt"
    res = runner.invoke(app, ["report", *dirs, "--compare", "--bootstrap", "50", "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "Overall" in text and "Holm" in text  # the report, then the paired tests

    for args in ([*dirs, "-f", "csv"], [*dirs, "-f", "latex"], [dirs[0]]):
        res = runner.invoke(app, ["report", *args, "--compare", "--bootstrap", "0"])
        assert res.exit_code == 2, res.output
        assert "--compare" in res.output
