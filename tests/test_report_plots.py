"""Report figures: the precision-recall data by hand, files written and readable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inquire.data.qrels import Qrels
from inquire.errors import InputError
from inquire.report import build_report
from inquire.report.plots import mean_pr_curve, save_figure, supercategory_bars, write_plots
from inquire.run import Run
from inquire.testing.report_results import make_result


def test_mean_pr_curve_hand_computed() -> None:
    run = Run({1: ([10, 11, 12], [3.0, 2.0, 1.0]), 2: ([20, 21, 22], [3.0, 2.0, 1.0])})
    qrels = Qrels({1: [10, 12], 2: [21, 99, 98]})
    recall, precision = mean_pr_curve(run, qrels, [1, 2], k=3)
    # q1: P = 1, 1/2, 2/3; R = 1/2, 1/2, 1.  q2: P = 0, 1/2, 1/3; R = 0, 1/3, 1/3.
    np.testing.assert_allclose(precision, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(recall, [0.25, 5 / 12, 2 / 3])
    # A query the run does not cover counts as an empty list.
    r2, p2 = mean_pr_curve(Run({1: ([10], [1.0])}), qrels, [1, 2], k=2)
    np.testing.assert_allclose(p2, [0.5, 0.25])
    np.testing.assert_allclose(r2, [0.25, 0.25])
    with pytest.raises(InputError, match="no query with relevant"):
        mean_pr_curve(run, qrels, [7], k=3)


def test_plots_written_as_png_and_svg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    results = [make_result(n, {"ap": rng.random(12)}) for n in ("a", "b")]
    run = Run({q: ([q * 10, q * 10 + 1], [2.0, 1.0]) for q in range(1, 13)})
    qrels = Qrels({q: [q * 10] for q in range(1, 13)})
    dirs = []
    for r in results:
        dirs.append(r.save(tmp_path / r.name, run=run))
    rep = build_report(dirs, n_resamples=200)
    files = write_plots(rep, tmp_path / "plots", qrels=qrels)
    assert set(files) == {"supercategory_ap", "distribution_ap", "precision_recall"}
    for paths in files.values():
        png, svg = paths
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        text = svg.read_text()
        assert "<svg" in text and "<dc:date>" not in text
    # Without relevance labels there is no precision-recall figure.
    assert "precision_recall" not in write_plots(rep, tmp_path / "p2")


def test_figures_are_reproducible(tmp_path: Path) -> None:
    rep = build_report([make_result("a", {"ap": [0.1, 0.5, 0.9, 0.4]})], n_resamples=100)
    one = save_figure(supercategory_bars(rep), tmp_path / "one", ["svg"])[0].read_bytes()
    two = save_figure(supercategory_bars(rep), tmp_path / "two", ["svg"])[0].read_bytes()
    assert one == two
    with pytest.raises(InputError, match="pdf"):
        save_figure(supercategory_bars(rep), tmp_path / "x", ["pdf"])
    with pytest.raises(InputError, match="trec_ap"):
        supercategory_bars(rep, "trec_ap")
