"""`inquire report --compare` takes its permutation count from --permutations, not --bootstrap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import inquire.report.write
from inquire.cli import app
from inquire.testing.report_results import synthetic_results


def test_report_compare_uses_permutations_option(tmp_path: Path, monkeypatch) -> None:
    dirs, _, _ = synthetic_results(tmp_path / "s", noise=(0.0, 0.06))
    real = inquire.report.write.compare
    seen: list[int] = []

    def spy(*a: Any, **kw: Any) -> Any:
        seen.append(kw["n_resamples"])
        return real(*a, **kw)

    # write_report (what `inquire report` calls) runs the comparison
    monkeypatch.setattr(inquire.report.write, "compare", spy)
    runner = CliRunner()
    base = ["report", *map(str, dirs), "--compare", "--by", "none", "-f", "markdown"]
    res = runner.invoke(app, [*base, "--bootstrap", "0", "--permutations", "300"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    # the default is the one `inquire compare` uses, whatever --bootstrap says
    assert seen == [300, 10000]
