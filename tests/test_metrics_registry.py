"""The metric registry (inquire.metrics.METRICS): one entry per metric, read by every consumer.

A throwaway metric registered here (and removed after) must show up in evaluate()'s output,
the saved result folder, the report tables in every format and the CLI, with nothing else
edited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.errors import InputError, UnknownNameError
from inquire.eval import EvalResult, evaluate
from inquire.metrics import (
    DEFAULT_METRICS,
    METRICS,
    Metric,
    Ties,
    expected_relevance,
    format_fraction,
    get_metric,
    metric_label,
    register_metric,
    scale,
    scale_note,
    unregister_metric,
)
from inquire.report import build_report
from inquire.report.formats import render, report_formats
from inquire.report.table import metrics_table
from test_eval_evaluate import QRELS, QUERIES, RUN


def _success(rel: np.ndarray, n_rel: np.ndarray, ties: Ties | None = None) -> np.ndarray:
    """1 when the top k holds a relevant item, else 0 (no ties in the toy run)."""
    return (expected_relevance(rel, ties).sum(axis=1) > 0).astype(np.float64)


@pytest.fixture
def success() -> Iterator[Metric]:
    metric = register_metric(Metric("success", _success, "S", description="any hit in the top k"))
    yield metric
    unregister_metric("success")
    assert "success" not in METRICS


def test_the_builtin_table() -> None:
    assert DEFAULT_METRICS == ("ap", "ndcg", "mrr", "precision", "recall")
    assert list(METRICS) == [*DEFAULT_METRICS, "trec_ap"]
    assert [METRICS[m].header(50) for m in METRICS] == [
        "AP@50", "nDCG@50", "MRR", "P@50", "R@50", "trec_ap@50",
    ]  # fmt: skip
    assert [scale(m) for m in DEFAULT_METRICS] == [100.0, 100.0, 1.0, 100.0, 100.0]
    assert scale_note(DEFAULT_METRICS) == "AP, nDCG, P and R x100; MRR as a fraction"
    assert scale_note(["mrr"]) == "MRR as a fraction"
    assert format_fraction("ap", 0.1234) == "12.3" and format_fraction("mrr", 0.5) == "0.500"
    assert format_fraction("ap", float("nan")) == "-"


def test_a_registered_metric_reaches_evaluate_and_the_result_folder(
    success: Metric, tmp_path: Path
) -> None:
    res = evaluate(RUN, QRELS, QUERIES, k=2, metrics=(*DEFAULT_METRICS, "success"))
    # top 2 per query: [10, 99] hit, [98, 20] hit, [30, 31] hit, query 4 not in the run
    assert res.per_query["success"].tolist() == [1.0, 1.0, 1.0, 0.0]
    np.testing.assert_allclose(res.per_query["ap"], [0.5, 0.5, 1.0, 0.0])  # others unchanged
    assert res.summary()["overall"]["success"] == pytest.approx(0.75)
    assert res.aggregate(scaled=True)["success"].iloc[0] == pytest.approx(75.0)
    loaded = EvalResult.load(res.save(tmp_path / "r"))
    assert loaded.metrics == (*DEFAULT_METRICS, "success")
    assert "success" in loaded.aggregates().columns


def test_a_registered_metric_reaches_every_report_format_and_the_cli(
    success: Metric, tmp_path: Path
) -> None:
    res = evaluate(RUN, QRELS, QUERIES, k=2, metrics=("ap", "success"))
    folder = res.save(tmp_path / "r")
    report = build_report([folder], n_resamples=0)
    assert report.metrics == ("ap", "success")
    overall = report.table[report.table["level"] == "overall"].iloc[0]
    assert overall["success"] == pytest.approx(75.0)
    for fmt in report_formats():
        text = render(report, fmt)
        if fmt == "csv":  # machine-readable: the name, the value in %.6g
            assert text.splitlines()[0].endswith(",success,success_lo,success_hi")
            assert text.splitlines()[1] == "overall,all,toy,4,50,,,75,,"
        else:
            assert "S@2" in text and "75.0" in text, fmt
    assert "AP and S x100" in render(report, "html")
    headers = [c.header for c in metrics_table(res).columns][2:]
    assert headers == ["AP@2", "S@2"]
    assert metric_label("success", 2) == "S@2"

    cli = CliRunner().invoke(app, ["report", str(folder), "-f", "csv", "--bootstrap", "0"])
    assert cli.exit_code == 0, cli.output
    assert "success" in cli.output.splitlines()[0]


def test_registry_errors_name_the_bad_value(success: Metric) -> None:
    with pytest.raises(InputError, match="'success' is already registered"):
        register_metric(Metric("success", _success, "S2"))
    assert register_metric(Metric("success", _success, "S2"), replace=True).label == "S2"
    with pytest.raises(InputError, match="'hit rate' must be an identifier"):
        register_metric(Metric("hit rate", _success, "H"))
    with pytest.raises(UnknownNameError, match="Did you mean 'success'"):
        get_metric("sucess")
    with pytest.raises(UnknownNameError, match="unknown metric 'nope'"):
        evaluate(RUN, QRELS, QUERIES, k=2, metrics=("nope",))
