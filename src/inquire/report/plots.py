"""Report figures (matplotlib, drawn off-screen; saved as PNG and SVG).

- per-supercategory bars of a metric for each run, with bootstrap-interval whiskers;
- precision-recall curves from the runs' ranked lists and the relevance labels;
- the distribution of a metric over queries (box plot with every query as a dot).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI
backend), so plotting works in threads and on machines without a display.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inquire._io import atomic_path
from inquire.data.qrels import Qrels
from inquire.errors import InputError
from inquire.metrics import expected_relevance, metric_label, relevance_with_ties, scale
from inquire.run import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from inquire.report.build import Report

log = logging.getLogger(__name__)

PLOT_FORMATS = ("png", "svg")
_DPI = 120
# Colour-blind-safe qualitative palette (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def supercategory_bars(report: Report, metric: str = "ap") -> Figure:
    """Grouped bars: overall and each supercategory on x, one bar per run, CI whiskers."""
    if metric not in report.metrics:
        raise InputError(f"metric {metric!r} is not in this report ({list(report.metrics)})")
    t = report.table
    rows = t[t["level"].isin(["overall", "supercategory"])]
    groups = ["all", *sorted(set(rows.loc[rows["level"] == "supercategory", "group"]))]
    n_runs = len(report.runs)
    fig = _figure(max(6.0, 1.1 * len(groups) * max(1, n_runs) ** 0.5 + 2), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, n_runs)
    x = np.arange(len(groups), dtype=np.float64)
    for i, run in enumerate(report.runs):
        sub = rows[rows["run"] == run].set_index("group")
        means = np.array([sub[metric].get(g, np.nan) for g in groups], dtype=np.float64)
        lo = np.array([sub[f"{metric}_lo"].get(g, np.nan) for g in groups], dtype=np.float64)
        hi = np.array([sub[f"{metric}_hi"].get(g, np.nan) for g in groups], dtype=np.float64)
        pos = x - 0.4 + width * (i + 0.5)
        yerr = None
        if report.n_resamples > 0:
            yerr = np.vstack([np.clip(means - lo, 0, None), np.clip(hi - means, 0, None)])
        ax.bar(
            pos,
            means,
            width * 0.92,
            label=run,
            color=_color(i),
            yerr=yerr,
            capsize=3,
            error_kw={"elinewidth": 1.0, "ecolor": "#333333"},
        )
    ax.set_xticks(x, ["Overall" if g == "all" else g for g in groups])
    ax.set_ylabel(_axis_label(metric, report.k))
    whisk = (
        f"whiskers: {report.confidence:.0%} bootstrap CI ({report.n_resamples:,} resamples)"
        if report.n_resamples > 0
        else "no intervals"
    )
    ax.set_title(f"{metric_label(metric, report.k)} per supercategory; {whisk}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def _axis_label(metric: str, k: int) -> str:
    """The y-axis label of ``metric`` at cut-off ``k``, with its table scale (``AP@50 (x100)``)."""
    s = scale(metric)
    return metric_label(metric, k) + (f" (x{s:g})" if s != 1 else "")


def metric_distribution(report: Report, metric: str = "ap") -> Figure:
    """Box plot of the per-query metric for each run, every query drawn as a dot."""
    if metric not in report.metrics:
        raise InputError(f"metric {metric!r} is not in this report ({list(report.metrics)})")
    s = scale(metric)
    data = [r.per_query[metric].to_numpy(np.float64) * s for r in report.results]
    fig = _figure(max(6.0, 1.6 * len(data) + 2.5), 4.4)
    ax = fig.add_subplot()
    ax.boxplot(
        data,
        showmeans=True,
        widths=0.5,
        medianprops={"color": "#222222"},
        meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "#222222"},
    )
    rng = np.random.default_rng(0)  # jitter only; fixed so figures are reproducible
    for i, vals in enumerate(data):
        xs = i + 1 + rng.uniform(-0.15, 0.15, size=len(vals))
        ax.scatter(xs, vals, s=10, alpha=0.55, color=_color(i), linewidths=0, zorder=3)
    ax.set_xticks(np.arange(1, len(data) + 1), list(report.runs))
    ax.set_ylabel(_axis_label(metric, report.k))
    ax.set_title(
        f"{metric_label(metric, report.k)} over queries, one dot per query\n"
        "box: quartiles, line: median, diamond: mean, whiskers: 1.5 IQR",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def mean_pr_curve(
    run: Run, qrels: Qrels, query_ids: Sequence[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-wise averaged precision-recall curve over the top ``k``.

    For each query ``q`` and rank ``i = 1..k``: ``P_q(i) = hits_q(i) / i`` and
    ``R_q(i) = hits_q(i) / R_q`` (``R_q`` relevant images in ``qrels``; a missing item is
    not relevant; queries without relevant images in ``qrels`` are skipped). The curve is
    ``(mean_q R_q(i), mean_q P_q(i))`` for ``i = 1..k``: the average operating point of the
    system after ``i`` results, not an interpolated curve. Items with equal scores count
    their expected hits over the orders of the tie (each place of a tie group holds the
    group's share of relevant items), so the curve does not depend on how ties are ordered.
    Returns ``(recall (k,), precision (k,))`` float64 fractions.
    """
    qids = [int(q) for q in query_ids if qrels.get(int(q))]
    if not qids:
        raise InputError("no query with relevant images to draw a precision-recall curve")
    empty, no_scores = np.empty(0, np.int64), np.empty(0, np.float64)
    ranked = [run[q][0] if q in run else empty for q in qids]
    scores = [run[q][1] if q in run else no_scores for q in qids]
    rel, ties = relevance_with_ties(ranked, scores, [qrels[q] for q in qids], k, np.array(qids))
    hits = np.cumsum(expected_relevance(rel, ties), axis=1)
    n_rel = np.array([len(qrels[q]) for q in qids], dtype=np.float64)
    precision = hits / np.arange(1, k + 1, dtype=np.float64)
    recall = hits / n_rel[:, None]
    return recall.mean(axis=0), precision.mean(axis=0)


def pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], k: int) -> Figure:
    """Plot ``{run: (recall, precision)}`` curves from :func:`mean_pr_curve`."""
    fig = _figure(6.0, 4.2)
    ax = fig.add_subplot()
    for i, (name, (rec, prec)) in enumerate(curves.items()):
        ax.plot(rec, prec, color=_color(i), label=name, lw=1.6)
        ax.plot(rec[-1:], prec[-1:], "o", color=_color(i), ms=4)
    ax.set_xlabel("mean recall@i")
    ax.set_ylabel("mean precision@i")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Precision-recall over ranks i = 1..{k} (averaged over queries)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig


def report_pr_curves(report: Report, qrels: Qrels) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Curves of every run of ``report`` whose folder holds ``run.parquet``."""
    curves = {}
    for name, r in zip(report.runs, report.results, strict=True):
        path = report.run_files.get(name)
        if path is None:
            log.info("run %s has no run.parquet; no precision-recall curve", name)
            continue
        run = Run.read(path)
        curves[name] = mean_pr_curve(run, qrels, r.per_query["query_id"].tolist(), report.k)
    return curves


def report_figures(
    report: Report, qrels: Qrels | None = None, metric: str = "ap"
) -> dict[str, Figure]:
    """All figures of a report by file stem; the PR curves only with ``qrels`` and runs."""
    use = metric if metric in report.metrics else report.metrics[0]
    figs: dict[str, Figure] = {
        f"supercategory_{use}": supercategory_bars(report, use),
        f"distribution_{use}": metric_distribution(report, use),
    }
    if qrels is not None:
        curves = report_pr_curves(report, qrels)
        if curves:
            figs["precision_recall"] = pr_curves(curves, report.k)
    return figs


def save_figure(
    fig: Figure, stem: str | os.PathLike[str], formats: Sequence[str] = PLOT_FORMATS
) -> list[Path]:
    """Write ``fig`` as ``stem.png`` / ``stem.svg`` (atomically); return the paths."""
    out = []
    for fmt in formats:
        if fmt not in PLOT_FORMATS:
            raise InputError(f"plot format {fmt!r} is not supported; use one of {PLOT_FORMATS}")
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp, _stable_ids():
            fig.savefig(tmp, format=fmt, dpi=_DPI, metadata=_metadata(fmt))
        out.append(path)
    return out


def _stable_ids() -> contextlib.AbstractContextManager[None]:
    import matplotlib

    # SVG element ids are random unless salted; a fixed salt makes files reproducible.
    return matplotlib.rc_context({"svg.hashsalt": "inquire"})


def _metadata(fmt: str) -> dict[str, str | None]:
    # Drop creation dates so the same report gives byte-identical figures.
    if fmt == "svg":
        return {"Date": None}
    return {"Software": "inquire"}


def write_plots(
    report: Report,
    out_dir: str | os.PathLike[str],
    qrels: Qrels | None = None,
    formats: Sequence[str] = PLOT_FORMATS,
) -> dict[str, list[Path]]:
    """Write every figure of :func:`report_figures` into ``out_dir``; ``{stem: paths}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        stem: save_figure(fig, out / stem, formats)
        for stem, fig in report_figures(report, qrels).items()
    }


def png_base64(fig: Figure) -> str:
    """The figure as a base64 PNG, for ``<img src="data:image/png;base64,...">``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata=_metadata("png"))
    return base64.b64encode(buf.getvalue()).decode("ascii")
