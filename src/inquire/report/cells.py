"""What each table of a report or a comparison says, as text, before any markup: a report's
header and rows per level (``mean [lo, hi]`` on each metric's table scale:
:class:`inquire.metrics.Metric`, AP, nDCG, P and R x100 with one decimal, MRR a fraction with
three), a comparison's pair table, its largest per-query differences and its method lines.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from inquire.metrics import format_value, metric_label

if TYPE_CHECKING:
    from inquire.report.build import Report
    from inquire.report.compare import Comparison


def fmt_cell(metric: str, mean: float, lo: float, hi: float) -> str:
    """``mean [lo, hi]``, or just ``mean`` without an interval."""
    if lo is None or math.isnan(lo):
        return format_value(metric, mean)
    return f"{format_value(metric, mean)} [{format_value(metric, lo)}, {format_value(metric, hi)}]"


def fmt_p(p: float) -> str:
    """A p-value with 4 decimals, or in scientific notation below 1e-4."""
    if p is None or math.isnan(p):
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def report_header(report: Report) -> list[str]:
    return ["group", "run", "queries", *[metric_label(m, report.k) for m in report.metrics]]


def report_rows(report: Report, level: str) -> list[list[str]]:
    rows = []
    for _, r in report.level_table(level).iterrows():
        rows.append(
            [str(r["group"]), str(r["run"]), str(int(r["n_queries"]))]
            + [fmt_cell(m, r[m], r[f"{m}_lo"], r[f"{m}_hi"]) for m in report.metrics]
        )
    return rows


def pair_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = [
        "metric",
        "A",
        "B",
        "queries",
        "mean A",
        "mean B",
        "A - B",
        "wins/losses/ties",
        "p (rand.)",
        "p (rand., Holm)",
        "t",
        "p (t)",
        "p (t, Holm)",
    ]
    rows = []
    for _, r in comparison.pairs.iterrows():
        m = r["metric"]
        label = metric_label(m, comparison.k)
        rand = fmt_p(r["perm_p"]) + ("" if r["perm_exact"] else "*")
        rows.append(
            [
                label,
                r["run_a"],
                r["run_b"],
                str(int(r["n_queries"])),
                format_value(m, r["mean_a"]),
                format_value(m, r["mean_b"]),
                ("+" if r["diff"] > 0 else "") + format_value(m, r["diff"]),
                f"{int(r['wins'])}/{int(r['losses'])}/{int(r['ties'])}",
                rand,
                fmt_p(r["perm_p_holm"]),
                "-" if math.isnan(r["t"]) else f"{r['t']:.2f}",
                fmt_p(r["t_p"]),
                fmt_p(r["t_p_holm"]),
            ]
        )
    return header, rows


def top_rows(
    comparison: Comparison, key: tuple[str, str, str]
) -> tuple[list[str], list[list[str]]]:
    m, a, b = key
    df = comparison.top[key]
    header = ["query", *(["text"] if "query_text" in df else []), "supercategory", a, b, "A - B"]
    rows = []
    for _, r in df.iterrows():
        rows.append(
            [str(int(r["query_id"]))]
            + ([str(r["query_text"])] if "query_text" in df else [])
            + [
                str(r.get("supercategory", "")),
                format_value(m, r[a]),
                format_value(m, r[b]),
                ("+" if r["diff"] > 0 else "") + format_value(m, r["diff"]),
            ]
        )
    return header, rows


def top_title(comparison: Comparison, key: tuple[str, str, str]) -> str:
    return f"Largest differences in {metric_label(key[0], comparison.k)}: {key[1]} vs {key[2]}"


def method_lines(comparison: Comparison) -> list[str]:
    lines = [comparison.method_description]
    if (~comparison.pairs["perm_exact"]).any():
        lines.append("* Monte Carlo p-value.")
    lines += [f"Note: {n}" for n in comparison.notes]
    return lines
