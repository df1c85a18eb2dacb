"""Metric labels and table scales (inquire.metrics)."""

from __future__ import annotations


def test_one_metric_label_table_serves_tables_plots_and_the_web_page() -> None:
    from inquire.metrics import METRICS, metric_label
    from inquire.report import plots
    from inquire.report.table import metrics_table
    from inquire.testing.report_results import make_result
    from inquire.web import catalog

    assert [metric_label(m, 50) for m in ("ap", "ndcg", "mrr", "precision", "recall")] == [
        "AP@50", "nDCG@50", "MRR", "P@50", "R@50",
    ]  # fmt: skip
    assert metric_label("trec_ap", 10) == "trec_ap@10"
    assert plots.metric_label is metric_label and catalog.metric_label is metric_label
    result = make_result("r", {"ap": [0.5, 0.25]}, k=20)
    headers = [c.header for c in metrics_table(result).columns][2:]
    assert headers == [metric_label(m, 20) for m in result.metrics]
    assert set(result.metrics) <= set(METRICS)
