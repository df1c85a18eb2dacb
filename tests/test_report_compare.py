"""compare(): paired tests between runs on the same queries."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from inquire.errors import InputError, UnknownNameError
from inquire.report import compare
from inquire.report.render_html import comparison_html
from inquire.report.render_text import comparison_csv, comparison_markdown
from inquire.stats import holm
from inquire.testing.report_results import make_result

A = [0.9, 0.4, 0.7, 0.3, 0.8, 0.5]
B = [0.5, 0.4, 0.2, 0.35, 0.6, 0.1]
C = [0.6, 0.45, 0.6, 0.3, 0.7, 0.4]


def _runs():
    return [make_result(n, {"ap": v}) for n, v in (("a", A), ("b", B), ("c", C))]


def test_pairs_statistics_and_holm() -> None:
    cmp = compare(_runs())
    p = cmp.pairs
    assert list(zip(p["run_a"], p["run_b"], strict=True)) == [("a", "b"), ("a", "c"), ("b", "c")]
    ab = p.iloc[0]
    d = np.array(A) - np.array(B)
    assert ab["diff"] == pytest.approx(d.mean() * 100)
    assert (ab["wins"], ab["losses"], ab["ties"]) == (4, 1, 1)
    assert ab["t_p"] == pytest.approx(float(sps.ttest_rel(A, B).pvalue))
    assert bool(ab["perm_exact"]) and ab["perm_resamples"] == 2**5
    np.testing.assert_allclose(p["perm_p_holm"], holm(p["perm_p"].to_numpy()))
    np.testing.assert_allclose(p["t_p_holm"], holm(p["t_p"].to_numpy()))
    assert (p["perm_p_holm"] >= p["perm_p"]).all()


def test_top_differences_sorted_with_query_text() -> None:
    queries = pd.DataFrame(
        {"query_id": range(1, 7), "query_text": [f"q{i} & more" for i in range(1, 7)]}
    )
    cmp = compare(_runs()[:2], queries=queries, top_n=3)
    top = cmp.top[("ap", "a", "b")]
    # |A - B| = .4 .0 .5 .05 .2 .4 -> queries 3, 1, 6 (stable order on the tie)
    assert top["query_id"].tolist() == [3, 1, 6]
    assert top["query_text"].tolist() == ["q3 & more", "q1 & more", "q6 & more"]
    assert top["diff"].tolist() == pytest.approx([50.0, 40.0, 40.0])
    md = comparison_markdown(cmp)
    assert "| 3 | q3 & more | Appearance | 70.0 | 20.0 | +50.0 |" in md
    assert "q3 &amp; more" in comparison_html(cmp)
    assert comparison_csv(cmp).startswith("metric,run_a,run_b,n_queries")


def test_different_query_sets_refused_or_intersected(caplog: pytest.LogCaptureFixture) -> None:
    a = make_result("a", {"ap": [0.1, 0.2, 0.3]}, query_ids=[1, 2, 3])
    b = make_result("b", {"ap": [0.2, 0.2, 0.5]}, query_ids=[2, 3, 4])
    with pytest.raises(InputError, match=r"different queries.*'a' has 1 extra, e.g. \[1\]"):
        compare([a, b])
    with caplog.at_level(logging.WARNING):
        cmp = compare([a, b], on_mismatch="intersect")
    assert "2 queries shared" in caplog.text
    assert cmp.pairs.iloc[0]["n_queries"] == 2
    assert cmp.pairs.iloc[0]["diff"] == pytest.approx(((0.2 + 0.3) - (0.2 + 0.2)) / 2 * 100)
    assert cmp.notes
    with pytest.raises(UnknownNameError, match="intersect"):
        compare([a, b], on_mismatch="intersecct")


def test_queries_are_aligned_by_id_not_by_row() -> None:
    a = make_result("a", {"ap": [0.1, 0.9]}, query_ids=[1, 2])
    b = make_result("b", {"ap": [0.9, 0.1]}, query_ids=[2, 1])  # same values, other order
    cmp = compare([a, b])
    assert cmp.pairs.iloc[0]["diff"] == 0.0 and cmp.pairs.iloc[0]["ties"] == 2


def test_bad_inputs(tmp_path: Path) -> None:
    a, b, _ = _runs()
    with pytest.raises(InputError, match="at least two"):
        compare([a])
    with pytest.raises(InputError, match=r"k=50.*k=20"):
        compare([a, make_result("x", {"ap": A}, k=20)])
    with pytest.raises(UnknownNameError, match="ndcg"):
        compare([a, b], metrics=["ndgc"])
    with pytest.raises(InputError, match="not an evaluation result folder"):
        compare([a, tmp_path])


def test_saved_results_and_json(tmp_path: Path) -> None:
    dirs = [r.save(tmp_path / r.name) for r in _runs()]
    cmp = compare(dirs, metrics=["ap", "mrr"], n_resamples=500, seed=1)
    assert len(cmp.pairs) == 6
    cmp.to_json(tmp_path / "cmp.json")
    doc = json.loads((tmp_path / "cmp.json").read_text())
    assert doc["n_resamples"] == 500 and len(doc["pairs"]) == 6 and len(doc["top"]) == 6


def test_monte_carlo_used_for_many_queries() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(60)
    b = np.clip(a - 0.05 + rng.normal(0, 0.1, 60), 0, 1)
    cmp = compare(
        [make_result("a", {"ap": a}), make_result("b", {"ap": b})], n_resamples=2000, seed=3
    )
    row = cmp.pairs.iloc[0]
    assert not row["perm_exact"] and row["perm_resamples"] == 2000
    assert row["perm_p"] < 0.01 and row["t_p"] < 0.01


def test_real_query_texts_and_supercategories(real_queries_dir: Path) -> None:
    from inquire.data.queries import read_queries
    from inquire.report import build_report
    from inquire.report.reference import reference_table

    qs = read_queries(real_queries_dir / "inquire_queries_test.csv")
    rng = np.random.default_rng(0)
    kw = {c: qs[c].tolist() for c in ("supercategory", "category", "iconic_group")}
    a = make_result("a", {"ap": rng.random(len(qs))}, query_ids=qs["query_id"].tolist(), **kw)
    b = make_result("b", {"ap": rng.random(len(qs))}, query_ids=qs["query_id"].tolist(), **kw)
    cmp = compare([a, b], queries=real_queries_dir / "inquire_queries_test.csv", top_n=3)
    top = cmp.top[("ap", "a", "b")]
    texts = dict(zip(qs["query_id"], qs["query_text"], strict=True))
    assert [texts[q] for q in top["query_id"]] == top["query_text"].tolist()
    assert cmp.pairs.iloc[0]["n_queries"] == len(qs) == 200
    # The published table's supercategory columns are the benchmark's own group names.
    ref = reference_table(build_report([a], n_resamples=0, reference="fullrank"))
    assert ref is not None
    mine = ref[ref["source"] == "this report"].iloc[0]
    for sc in ("Appearance", "Behavior", "Context", "Species"):
        assert mine[sc] == pytest.approx(
            a.per_query.loc[qs["supercategory"] == sc, "ap"].mean() * 100
        )
