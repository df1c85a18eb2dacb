"""build_report and its renderers, checked on hand-made results."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inquire.errors import InputError, UnknownNameError
from inquire.report import build_report, load_leaderboard
from inquire.report.cells import fmt_cell
from inquire.report.formats import render
from inquire.report.render_html import render_html
from inquire.report.render_text import (
    latex_escape,
    render_csv,
    render_latex,
    render_markdown,
    render_terminal,
)
from inquire.testing.report_results import make_result


def _two_runs():
    a = make_result(
        "base",
        {"ap": [0.5, 0.25, 1.0, 0.0], "mrr": [1.0, 0.5, 1.0, 0.25]},
        category=["Food & Drink", "Life_cycle", "Food & Drink", "Life_cycle"],
    )
    b = make_result(
        "new_model",
        {"ap": [0.75, 0.25, 0.5, 0.5], "mrr": [1.0, 1.0, 0.5, 0.5]},
        category=["Food & Drink", "Life_cycle", "Food & Drink", "Life_cycle"],
    )
    return a, b


def test_means_are_scaled_as_inquire_reports() -> None:
    a, b = _two_runs()
    rep = build_report([a, b], n_resamples=0)
    t = rep.table.set_index(["level", "group", "run"])
    assert t.loc[("overall", "all", "base"), "ap"] == pytest.approx(43.75)  # x100
    assert t.loc[("overall", "all", "base"), "mrr"] == pytest.approx(0.6875)  # fraction
    # supercategory alternates Appearance / Behavior: queries 1, 3 vs 2, 4.
    assert t.loc[("supercategory", "Appearance", "new_model"), "ap"] == pytest.approx(62.5)
    assert t.loc[("supercategory", "Behavior", "base"), "n_queries"] == 2
    assert np.isnan(t.loc[("overall", "all", "base"), "ap_lo"])
    assert rep.levels == ("overall", "supercategory", "category", "iconic_group")


def test_markdown_rows_hand_checked() -> None:
    a, b = _two_runs()
    md = render_markdown(build_report([a, b], n_resamples=0, by=["supercategory"]))
    assert "| all | base | 4 | 43.8 | 50.0 | 0.688 | 50.0 | 50.0 |" in md
    assert "| Appearance | new_model | 2 | 62.5 | 50.0 | 0.750 | 50.0 | 50.0 |" in md
    assert "| group | run | queries | AP@50 | nDCG@50 | MRR | P@50 | R@50 |" in md
    assert "## Category" not in md


def test_cells_show_the_interval() -> None:
    assert fmt_cell("ap", 35.61, 33.04, 38.0) == "35.6 [33.0, 38.0]"
    assert fmt_cell("mrr", 0.5, 0.4, 0.61) == "0.500 [0.400, 0.610]"
    assert fmt_cell("ap", 35.61, float("nan"), float("nan")) == "35.6"


def test_csv_values_are_per_query_means_times_100() -> None:
    rng = np.random.default_rng(3)
    r = make_result("x", {m: rng.random(30) for m in ("ap", "ndcg", "mrr", "precision", "recall")})
    rep = build_report([r], n_resamples=200, seed=1)
    df = pd.read_csv(io.StringIO(render_csv(rep)), keep_default_na=False)
    overall = df[df["level"] == "overall"].iloc[0]
    pq = r.per_query
    for m, s in [("ap", 100), ("ndcg", 100), ("precision", 100), ("recall", 100), ("mrr", 1)]:
        assert overall[m] == pytest.approx(pq[m].mean() * s, rel=1e-5)
        assert overall[f"{m}_lo"] <= overall[m] <= overall[f"{m}_hi"]
    for cat, sub in pq.groupby("category"):
        row = df[(df["level"] == "category") & (df["group"] == cat)].iloc[0]
        assert row["ap"] == pytest.approx(sub["ap"].mean() * 100, rel=1e-5)
        assert row["n_queries"] == len(sub)


def test_bootstrap_in_report_is_seeded_and_stated() -> None:
    a, b = _two_runs()
    r1 = build_report([a, b], n_resamples=500, seed=7)
    r2 = build_report([a, b], n_resamples=500, seed=7)
    pd.testing.assert_frame_equal(r1.table, r2.table)
    assert "500 resamples, seed 7" in r1.ci_description
    assert "95%" in r1.ci_description
    t = r1.table
    assert ((t["ap_lo"] <= t["ap"] + 1e-9) & (t["ap"] <= t["ap_hi"] + 1e-9)).all()


def test_latex_escapes_special_characters() -> None:
    assert latex_escape("Food & Drink_1 50% $x# {y} ~^\\") == (
        r"Food \& Drink\_1 50\% \$x\# \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )
    a, b = _two_runs()
    tex = render_latex(build_report([a, b], n_resamples=100))
    assert r"Food \& Drink & base & 2 &" in tex
    assert r"Life\_cycle & new\_model & 2 &" in tex
    assert "Food & Drink" not in tex  # never unescaped
    assert r"95\% percentile bootstrap" in tex
    assert tex.count(r"\begin{tabular}") == 1 and r"\bottomrule" in tex


def test_html_is_self_contained() -> None:
    from inquire.report.plots import png_base64, report_figures

    a, b = _two_runs()
    rep = build_report([a, b], n_resamples=100, reference="fullrank")
    figs = {k: png_base64(f) for k, f in report_figures(rep).items()}
    page = render_html(rep, figures=figs, title="T <&>")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "T &lt;&amp;&gt;" in page
    assert page.count('src="data:image/png;base64,') == 2
    # No resource or link may point outside the file.
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!data:)[a-z]+:""", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", page, re.I)
    assert "url(" not in page and "@import" not in page and "<script" not in page
    assert "<link" not in page
    assert "Published reference numbers" in page and "35.6" in page


def test_reference_table_beside_runs() -> None:
    a, b = _two_runs()
    rep = build_report([a, b], n_resamples=0, reference="fullrank")
    md = render_markdown(rep)
    assert "## Published reference numbers" in md
    assert "| published | CLIP ViT-H/14-378 (DFN) | 35.6 | 25.7 | 38.7 | 36.5 | 52.7 |" in md
    assert "| this report | base | 43.8 | 75.0 | 12.5 | - | - |" in md
    assert "arXiv:2411.02537" in md
    csv = render_csv(rep)
    assert "published:fullrank,all,CLIP ViT-H/14-378 (DFN)" in csv
    text = render_terminal(rep, width=200)
    assert "Published reference numbers" in text and "47.1" in text


def test_published_leaderboard_numbers() -> None:
    fr = load_leaderboard("fullrank")
    t = fr.table.set_index("method")
    assert fr.metric == "ap" and fr.k == 50
    assert t.loc["CLIP ViT-H/14-378 (DFN)", "overall"] == 35.6
    assert t.loc["CLIP ViT-H/14-378 (DFN) top 100 -> GPT-4o", "overall"] == 47.1
    # The best one-stage model is the DFN ViT-H/14-378.
    one = fr.table[fr.table["kind"] == "one-stage"]
    assert one.loc[one["overall"].idxmax(), "method"] == "CLIP ViT-H/14-378 (DFN)"
    rr = load_leaderboard("rerank").table.set_index("method")
    assert rr.loc["GPT-4o", "overall"] == 62.4
    assert rr.loc["Random", "overall"] == 23.0 and np.isnan(rr.loc["Random", "Species"])
    with pytest.raises(UnknownNameError, match="fullrank"):
        load_leaderboard("fullrnak")


def test_every_format_renders() -> None:
    a, b = _two_runs()
    rep = build_report([a, b], n_resamples=50)
    for fmt in ("terminal", "markdown", "csv", "html"):
        assert "new_model" in render(rep, fmt)
    assert r"new\_model" in render(rep, "latex")
    with pytest.raises(UnknownNameError, match="markdown"):
        render(rep, "markdwn")


def test_mismatched_k_is_refused() -> None:
    a = make_result("a", {"ap": [0.1, 0.2]}, k=50)
    b = make_result("b", {"ap": [0.1, 0.2]}, k=100)
    with pytest.raises(InputError, match=r"'a' k=50, 'b' k=100"):
        build_report([a, b])


def test_not_a_result_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="not an evaluation result folder"):
        build_report([tmp_path])


def test_bad_options() -> None:
    a, _ = _two_runs()
    with pytest.raises(UnknownNameError, match="supercategory"):
        build_report([a], by=["supercategroy"])
    with pytest.raises(InputError, match="bootstrap"):
        build_report([a], n_resamples=-1)
    with pytest.raises(UnknownNameError, match="ndcg"):
        build_report([a], metrics=["ndgc"])
    with pytest.raises(InputError, match="no results"):
        build_report([])


def test_duplicate_names_and_different_query_sets_are_noted() -> None:
    a = make_result("run", {"ap": [0.1, 0.2]})
    b = make_result("run", {"ap": [0.1, 0.2, 0.3]})
    rep = build_report([a, b], n_resamples=0)
    assert rep.runs == ("run", "run (2)")
    assert any("different query sets" in n for n in rep.notes)
