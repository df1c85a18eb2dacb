"""Terminal tables of evaluation results (rich)."""

from __future__ import annotations

from rich.table import Table

from inquire.eval.evaluate import EvalResult
from inquire.metrics import format_value, metric_label


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
