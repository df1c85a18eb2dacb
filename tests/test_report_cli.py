"""`inquire report` / `inquire compare` end to end on the synthetic benchmark, and the demo step."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from inquire.cli import app
from inquire.eval.evaluate import EvalResult
from inquire.testing.report_results import synthetic_results

runner = CliRunner()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, Path]:
    return synthetic_results(tmp_path_factory.mktemp("synth"), noise=(0.0, 0.06))


def test_report_formats(synth, tmp_path: Path) -> None:
    dirs, annotations, _ = synth
    args = [str(d) for d in dirs]
    res = runner.invoke(
        app,
        ["report", *args, "--by", "supercategory", "--bootstrap", "500"],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "noise-0.06" in res.output and "500 resamples" in res.output

    out = tmp_path / "r.csv"
    res = runner.invoke(app, ["report", *args, "-f", "csv", "-o", str(out), "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out, keep_default_na=False)
    clean = EvalResult.load(dirs[0])
    row = df[(df["level"] == "overall") & (df["run"] == clean.name)].iloc[0]
    assert row["ap"] == pytest.approx(clean.per_query["ap"].mean() * 100, rel=1e-5)
    assert set(df["level"]) == {"overall", "supercategory", "category", "iconic_group"}

    html = tmp_path / "r.html"
    plots = tmp_path / "plots"
    res = runner.invoke(
        app,
        [
            "report",
            *args,
            "-f",
            "html",
            "-o",
            str(html),
            "--plots",
            str(plots),
            "--annotations",
            str(annotations),
            "--reference",
            "fullrank",
            "--compare",
            "--bootstrap",
            "300",
        ],
    )
    assert res.exit_code == 0, res.output
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 3  # bars, distribution, PR curves
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!data:)[a-z]+:""", page, re.I)
    assert "Paired comparison" in page and "Published reference numbers" in page
    assert {p.name for p in plots.iterdir()} >= {"precision_recall.png", "precision_recall.svg"}

    # The annotations file named in the results' config is found without --annotations.
    again = ["report", *args, "-f", "html", "-o", str(html), "--bootstrap", "50", "--overwrite"]
    res = runner.invoke(app, again)
    assert res.exit_code == 0 and html.read_text().count("data:image/png;base64,") == 3

    for fmt, marker in (("markdown", "## Supercategory"), ("latex", r"\toprule")):
        res = runner.invoke(app, ["report", *args, "-f", fmt, "--bootstrap", "100"])
        assert res.exit_code == 0 and marker in res.output


def test_compare_command(synth, tmp_path: Path) -> None:
    dirs, _, queries = synth
    args = [str(d) for d in dirs]
    res = runner.invoke(app, ["compare", *args, "--queries", str(queries), "-f", "markdown"])
    assert res.exit_code == 0, res.output
    assert "## Paired comparison" in res.output and "(synthetic " in res.output
    res = runner.invoke(app, ["compare", *args, "-f", "json", "-o", str(tmp_path / "c.json")])
    assert res.exit_code == 0 and (tmp_path / "c.json").is_file()


def test_cli_errors_are_one_line(synth, tmp_path: Path) -> None:
    dirs, _, _ = synth
    res = runner.invoke(app, ["report", str(dirs[0]), str(tmp_path)])
    assert res.exit_code == 2 and "not an evaluation result folder" in res.output
    res = runner.invoke(app, ["report", str(dirs[0]), "-f", "pdf"])
    assert res.exit_code == 2 and "unknown report format 'pdf'" in res.output
    res = runner.invoke(app, ["report", str(dirs[0]), "--reference", "fulrank"])
    assert res.exit_code == 2 and "fullrank" in res.output
    res = runner.invoke(app, ["compare", str(dirs[0]), str(dirs[1]), "-f", "json"])
    assert res.exit_code == 2 and "--out" in res.output
    res = runner.invoke(app, ["compare", str(dirs[0])])
    assert res.exit_code == 2 and "at least two runs" in res.output
    # Same queries but a different k: refused with both values named.
    other = EvalResult.load(dirs[1])
    other.k = 10
    other.save(tmp_path / "k10")
    res = runner.invoke(app, ["compare", str(dirs[0]), str(tmp_path / "k10")])
    assert res.exit_code == 2 and "k=50" in res.output and "k=10" in res.output


def test_demo_report(tmp_path: Path) -> None:
    from inquire.demo import run_demo
    from inquire.demo.report import demo_report

    quiet = Console(file=io.StringIO(), width=200)
    res_dir = run_demo(tmp_path / "demo", console=quiet)
    html = demo_report([res_dir], tmp_path / "demo" / "report", quiet)
    text = quiet.file.getvalue()  # type: ignore[attr-defined]
    assert html.is_file() and "Paired comparison" in text
    assert "synthetic-fullrank-noisy-text" in html.read_text()
    assert (tmp_path / "demo" / "report" / "plots" / "precision_recall.png").is_file()
    # The demo's own benchmark is reused, not regenerated elsewhere.
    assert not (tmp_path / "demo" / "report" / "benchmark").exists()
