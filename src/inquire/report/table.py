"""Terminal tables of evaluation results (rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from inquire.eval.evaluate import EvalResult
from inquire.metrics import format_value, get_metric, metric_label

if TYPE_CHECKING:
    from inquire.eval.rerank import RerankResult


def metrics_table(result: EvalResult, by: str = "supercategory", title: str | None = None) -> Table:
    """Overall row plus one row per ``by`` group; AP/nDCG/P/R x100, MRR as a fraction."""
    k = result.k
    table = Table(title=title or f"{result.name} (k={k})")
    table.add_column(by.replace("_", " "), style="bold")
    table.add_column("queries", justify="right")
    for m in result.metrics:
        table.add_column(metric_label(m, k), justify="right")
    overall = result.aggregate(scaled=True)
    groups = result.aggregate(by, scaled=True)
    for i, (_, row) in enumerate([*overall.iterrows(), *groups.iterrows()]):
        cells = [format_value(m, row[m]) for m in result.metrics]
        table.add_row(str(row["group"]), str(int(row["n_queries"])), *cells, end_section=i == 0)
    return table


def rerank_table(result: RerankResult, title: str) -> Table:
    """A rich table of an INQUIRE-Rerank result: overall row + one per supercategory; AP over
    the pool and at 50, then every other metric of the result over the pool (each formatted
    by its :data:`inquire.metrics.METRICS` row)."""
    metrics = [m for m in result.result.metrics if m != "ap"]
    table = Table(title=title)
    table.add_column("group", style="bold")
    table.add_column("queries", justify="right")
    labels = ["AP (pool)", "AP@50"] + [get_metric(m).header(result.result.k) for m in metrics]
    for label in labels:
        table.add_column(label, justify="right")
    overall = result.result.aggregate(scaled=True)
    at50 = result.result_at_50.aggregate(scaled=True)
    groups = result.result.aggregate("supercategory", scaled=True)
    groups50 = result.result_at_50.aggregate("supercategory", scaled=True)
    rows = [(overall.iloc[0], at50.iloc[0])]
    rows += [(groups.iloc[i], groups50.iloc[i]) for i in range(len(groups))]
    for i, (row, row50) in enumerate(rows):
        table.add_row(
            str(row["group"]),
            str(int(row["n_queries"])),
            format_value("ap", row["ap"]),
            format_value("ap", row50["ap"]),
            *[format_value(m, row[m]) for m in metrics],
            end_section=i == 0,
        )
    return table
