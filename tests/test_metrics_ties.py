"""Metrics with tied scores: hand-computed cases, scikit-learn used as INQUIRE uses it,
brute force over the orders of tied items, and a property test (shuffling ties never matters)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inquire.errors import InputError
from inquire.eval import evaluate
from inquire.metrics import (
    DEFAULT_METRICS,
    METRICS,
    Ties,
    compute_metrics,
    expected_relevance,
    relevance_matrix,
    relevance_with_ties,
)
from inquire.run import Run

TIE_AWARE = DEFAULT_METRICS  # every metric but trec_ap


def _metrics(
    labels: list[int], scores: list[float], n_rel: int, k: int, names=TIE_AWARE
) -> dict[str, float]:
    """Metrics of one list given as labels + scores (ids are the positions)."""
    ids = np.arange(len(labels))
    good = frozenset(int(i) for i in ids[np.asarray(labels, dtype=bool)])
    rel, ties = relevance_with_ties([ids], [np.asarray(scores, float)], [good], k)
    out = compute_metrics(rel, np.array([n_rel]), list(names), ties=ties)
    return {m: float(v[0]) for m, v in out.items()}


# --- hand-computed cases -------------------------------------------------------------------


@pytest.mark.parametrize("labels", [[1, 0], [0, 1]])
def test_two_tied_items_either_order(labels: list[int]) -> None:
    # One threshold holding 1 relevant of 2 items: AP = 1 * (1/2) / min(1, 2) = 0.5.
    # nDCG: mean gain 1/2 over discounts 1 and 1/log2(3): (1 + 1/log2 3) / 2 = 0.8155.
    # RR: the relevant item is first or second with probability 1/2: (1 + 1/2) / 2 = 0.75.
    got = _metrics(labels, [0.5, 0.5], n_rel=1, k=2)
    assert got["ap"] == pytest.approx(0.5)
    assert got["ndcg"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert got["ndcg"] == pytest.approx(0.8155, abs=1e-4)
    assert got["mrr"] == pytest.approx(0.75)
    assert got["precision"] == pytest.approx(0.5)
    assert got["recall"] == pytest.approx(1.0)


def test_group_in_the_middle_by_hand() -> None:
    # scores 3 | 2 2 2 | 1, labels 1 | 1 0 1 | 0, R = 4, k = 5.
    # AP thresholds: t=3: 1 relevant, precision 1/1; t=2: 2 relevant, precision 3/4;
    #   t=1: none relevant. AP = (1 * 1 + 2 * 3/4) / min(4, 5) = 2.5 / 4 = 0.625
    # nDCG: 1/log2 2 + (2/3) (1/log2 3 + 1/log2 4 + 1/log2 5), IDCG over 4 ones.
    got = _metrics([1, 1, 0, 1, 0], [3, 2, 2, 2, 1], n_rel=4, k=5)
    assert got["ap"] == pytest.approx(0.625)
    dcg = 1 + (2 / 3) * (1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5))
    idcg = sum(1 / math.log2(i + 1) for i in range(1, 5))
    assert got["ndcg"] == pytest.approx(dcg / idcg)
    assert got["mrr"] == 1.0
    assert got["precision"] == pytest.approx(3 / 5)
    assert got["recall"] == pytest.approx(3 / 4)


def test_mrr_expected_over_the_first_relevant_group() -> None:
    # scores 2 | 1 1 1, labels 0 | 0 1 0: the relevant item is at rank 2, 3 or 4 with
    # probability 1/3 each: RR = (1/2 + 1/3 + 1/4) / 3 = 13/36.
    assert _metrics([0, 0, 1, 0], [2, 1, 1, 1], 1, 4)["mrr"] == pytest.approx(13 / 36)
    # Two relevant of three tied at ranks 1..3: first relevant at place 1 w.p. 2/3,
    # place 2 w.p. (1/3)(2/2) = 1/3: RR = 2/3 + (1/3)(1/2) = 5/6.
    assert _metrics([1, 0, 1], [1, 1, 1], 2, 3)["mrr"] == pytest.approx(5 / 6)


def test_group_straddling_the_cut_off_by_hand() -> None:
    # scores 5 | 2 2 2 2, labels 1 | 1 0 1 0, R = 3, k = 3: the group of four (2 relevant)
    # has c = 2 places inside the top 3 and H = 1 relevant before it.
    # X = relevant landing inside ~ hypergeometric(4, 2, 2): P(0) = 1/6, P(1) = 4/6, P(2) = 1/6
    # AP contribution of the group E[X (1 + X)] / 3 = (E[X] + E[X^2]) / 3 = (1 + 4/3) / 3 = 7/9
    # AP = (1 + 7/9) / min(3, 3) = 16/27
    #   (by orders: X=0 -> 1/3, X=1 -> (1 + 2/3)/3 = 5/9, X=2 -> 1; 1/18 + 20/54 + 1/6 = 16/27)
    # P@3 = (1 + 2 * 2/4) / 3 = 2/3, R@3 = 2/3
    # nDCG: 1 + (2/4) (1/log2 3 + 1/log2 4), IDCG over 3 ones.
    # RR = 1 (rank 1 is relevant).
    got = _metrics([1, 1, 0, 1, 0], [5, 2, 2, 2, 2], n_rel=3, k=3)
    assert got["ap"] == pytest.approx(16 / 27)
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["recall"] == pytest.approx(2 / 3)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert got["ndcg"] == pytest.approx((1 + 0.5 * (1 / math.log2(3) + 0.5)) / idcg)
    assert got["mrr"] == 1.0


def test_straddling_group_holding_the_first_relevant() -> None:
    # scores 3 | 1 1 1, labels 0 | 1 0 0, R = 1, k = 2: only one of the three tied items fits.
    # RR = P(relevant lands at rank 2) / 2 = (1/3) / 2 = 1/6; AP = (1/3) * (1/2) / 1 = 1/6;
    # P@2 = (1/3) / 2 = 1/6; R@2 = 1/3; nDCG = (1/3) / log2 3.
    got = _metrics([0, 1, 0, 0], [3, 1, 1, 1], n_rel=1, k=2)
    assert got["mrr"] == pytest.approx(1 / 6)
    assert got["ap"] == pytest.approx(1 / 6)
    assert got["precision"] == pytest.approx(1 / 6)
    assert got["recall"] == pytest.approx(1 / 3)
    assert got["ndcg"] == pytest.approx((1 / 3) / math.log2(3))


def test_trec_ap_reads_the_list_order() -> None:
    # trec_ap keeps its plain formula: [1, 0] tied gives 1, [0, 1] tied gives 1/2.
    a = _metrics([1, 0], [1, 1], 1, 2, ["trec_ap"])["trec_ap"]
    b = _metrics([0, 1], [1, 1], 1, 2, ["trec_ap"])["trec_ap"]
    assert (a, b) == (1.0, 0.5)


def test_expected_relevance_and_short_lists() -> None:
    # A list of 3 in a matrix of width 5: two padded places, each its own group with 0.
    rel, ties = relevance_with_ties(
        [np.array([7, 8, 9])], [np.array([1.0, 1.0, 0.0])], [frozenset({8})], 5
    )
    assert rel.tolist() == [[0, 1, 0, 0, 0]]
    assert ties.group.tolist() == [[0, 0, 1, 2, 3]]
    assert expected_relevance(rel, ties).tolist() == [[0.5, 0.5, 0, 0, 0]]
    assert expected_relevance(rel) is not None


# --- scikit-learn as INQUIRE's metrics.py uses it ------------------------------------------


def _upstream(y_true: np.ndarray, y_pred: np.ndarray, count_pos: int, k: int) -> dict[str, float]:
    """INQUIRE's AP@k, nDCG@k, P@k, R@k: scikit-learn on the top k as upstream calls it."""
    from sklearn.metrics import average_precision_score, ndcg_score

    top_t, top_p = y_true[:k], y_pred[:k]
    hits = int(top_t.sum())
    ap = average_precision_score(top_t, top_p) * hits / min(count_pos, k) if hits else 0.0
    unknown = count_pos - int(y_true.sum())
    padded_true = [*y_true.tolist(), *([1] * unknown)]
    padded_pred = [*y_pred.tolist(), *([-100.0] * unknown)]
    # sklearn refuses a single document; then the list is one relevant item (R = 1): 1.0
    ndcg = ndcg_score([padded_true], [padded_pred], k=k) if len(padded_true) > 1 else 1.0
    return {"ap": ap, "ndcg": ndcg, "precision": hits / k, "recall": hits / count_pos}


def _ranked_case(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    scores = np.sort(rng.integers(0, 4, n).astype(float))[::-1]  # many ties
    labels = (rng.random(n) < 0.4).astype(int)
    n_rel = int(labels.sum()) + int(rng.integers(0, 4))
    if n_rel == 0:
        labels[int(rng.integers(n))], n_rel = 1, 1
    return labels, scores, n_rel


@pytest.mark.parametrize("seed", range(40))
def test_against_sklearn_as_upstream_uses_it(seed: int) -> None:
    # Upstream always evaluates the whole list (k = its length), so no group straddles k.
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(seed)
    labels, scores, n_rel = _ranked_case(rng, int(rng.integers(1, 12)))
    k = len(labels)
    want = _upstream(labels, scores, n_rel, k)
    got = _metrics(labels.tolist(), scores.tolist(), n_rel, k)
    for m in want:
        assert got[m] == pytest.approx(want[m], abs=1e-12), m


@pytest.mark.parametrize("seed", range(20))
def test_ndcg_at_a_straddling_cut_off_equals_sklearn(seed: int) -> None:
    # ndcg_score(k=...) over the whole list: a straddling group adds its mean gain times the
    # discounts inside the top k, exactly the rule here.
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(100 + seed)
    labels, scores, n_rel = _ranked_case(rng, int(rng.integers(3, 12)))
    k = int(rng.integers(1, len(labels)))
    want = _upstream(labels, scores, n_rel, k)["ndcg"]
    assert _metrics(labels.tolist(), scores.tolist(), n_rel, k)["ndcg"] == pytest.approx(want)


def _orders(scores: np.ndarray) -> list[np.ndarray]:
    """Every permutation of a score-sorted list that only reorders tied items."""
    groups = [np.flatnonzero(scores == s) for s in dict.fromkeys(scores.tolist())]
    perms = [list(itertools.permutations(g.tolist())) for g in groups]
    return [np.array([i for part in combo for i in part]) for combo in itertools.product(*perms)]


def _plain_rr(labels: np.ndarray, k: int) -> float:
    hit = np.flatnonzero(labels[:k])
    return 1.0 / (hit[0] + 1) if len(hit) else 0.0


@pytest.mark.parametrize("seed", range(30))
def test_brute_force_over_orders_of_tied_items(seed: int) -> None:
    # The rule at the cut-off (AP, P, R, nDCG) and for RR is the mean over every order of
    # the tied items of INQUIRE's metric on the list truncated at k (sklearn for AP).
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(200 + seed)
    labels, scores, n_rel = _ranked_case(rng, int(rng.integers(2, 7)))
    k = int(rng.integers(1, len(labels) + 1))
    sums: dict[str, float] = dict.fromkeys(TIE_AWARE, 0.0)
    orders = _orders(scores)
    for order in orders:
        y, p = labels[order][:k], scores[order][:k]
        up = _upstream(y, p, n_rel, k)
        for m in up:
            sums[m] += up[m]
        sums["mrr"] += _plain_rr(labels[order], k)
    got = _metrics(labels.tolist(), scores.tolist(), n_rel, k)
    for m in TIE_AWARE:
        assert got[m] == pytest.approx(sums[m] / len(orders), abs=1e-12), (m, k)


# --- general path against the plain one ---------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_tie_path_without_ties_equals_the_plain_formulas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nq, k = 30, 20
    rel = (rng.random((nq, k)) < 0.3).astype(np.float64)
    n_rel = rel.sum(axis=1).astype(np.int64) + rng.integers(1, 30, nq)
    plain = compute_metrics(rel, n_rel, list(METRICS))
    tied = compute_metrics(rel, n_rel, list(METRICS), ties=Ties.none(nq, k))
    distinct = Ties.from_scores(-np.arange(k, dtype=float)[None, :].repeat(nq, 0))
    from_scores = compute_metrics(rel, n_rel, list(METRICS), ties=distinct)
    for m in METRICS:
        np.testing.assert_allclose(tied[m], plain[m], rtol=0, atol=1e-12)
        np.testing.assert_allclose(from_scores[m], plain[m], rtol=0, atol=1e-12)


# --- property: the order of tied items never matters --------------------------------------

_items = st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=14)


@settings(max_examples=80, deadline=None)
@given(items=_items, extra=st.integers(0, 5), k=st.integers(1, 16), data=st.data())
def test_shuffling_tied_items_never_changes_a_metric(items, extra, k, data) -> None:
    scores = np.array([s for s, _ in items], dtype=float)
    labels = np.array([r for _, r in items], dtype=bool)
    n_rel = int(labels.sum()) + extra
    if n_rel == 0:
        return
    ids = np.arange(len(items))
    good = frozenset(ids[labels].tolist())
    perm = np.array(data.draw(st.permutations(range(len(items)))))
    results = []
    for order in (ids, perm):
        rel, ties = relevance_with_ties([ids[order]], [scores[order]], [good], k)
        results.append(compute_metrics(rel, np.array([n_rel]), list(TIE_AWARE), ties=ties))
    for m in TIE_AWARE:
        assert results[0][m][0] == pytest.approx(results[1][m][0], abs=1e-12), m
        assert 0.0 <= results[0][m][0] <= 1.0 + 1e-12, m


# --- evaluate(): the library entry point reads ties ---------------------------------------


def test_evaluate_is_independent_of_the_order_of_ties() -> None:
    queries = pd.DataFrame(
        {
            "query_id": [1, 2],
            "query_text": ["a", "b"],
            "supercategory": ["x", "y"],
            "category": ["c", "c"],
            "iconic_group": ["g", "g"],
        }
    )
    from inquire.data.qrels import Qrels

    qrels = Qrels({1: frozenset({10}), 2: frozenset({21, 23})})
    a = Run({1: ([10, 11], [0.5, 0.5]), 2: ([20, 21, 22, 23], [1, 1, 1, 0])})
    b = Run({1: ([11, 10], [0.5, 0.5]), 2: ([22, 21, 20, 23], [1, 1, 1, 0])})
    ra, rb = (evaluate(r, qrels, queries, k=2) for r in (a, b))
    pd.testing.assert_frame_equal(ra.per_query, rb.per_query)
    assert ra.per_query.loc[0, "ap"] == pytest.approx(0.5)
    # query 2, k = 2: three tied items, one relevant, two places inside: P@2 = (2/3) / 2
    assert ra.per_query.loc[1, "precision"] == pytest.approx(1 / 3)


# --- bad input ------------------------------------------------------------------------------


def test_bad_ties_and_scores_are_errors() -> None:
    rel = np.array([[1.0, 0.0, 0.0]])
    bad = Ties(np.array([[0, 2, 2]]), np.zeros(1, np.int64), np.zeros(1, np.int64))
    with pytest.raises(InputError, match="tie group ids"):
        compute_metrics(rel, np.array([1]), ties=bad)
    with pytest.raises(InputError, match="do not match"):
        compute_metrics(rel, np.array([1]), ties=Ties.none(1, 2))
    with pytest.raises(InputError, match="query 5: scores contain NaN at position 1"):
        relevance_with_ties(
            [np.array([1, 2])], [np.array([1.0, np.nan])], [frozenset({1})], 2, np.array([5])
        )
    # A relevant item tied with rank k but ranked after it counts as a hit: 2 > R = 1.
    rel2, ties = relevance_with_ties(
        [np.array([1, 2])], [np.array([1.0, 1.0])], [frozenset({1, 2})], 1, np.array([9])
    )
    with pytest.raises(InputError, match="query 9 has 2 relevant items"):
        compute_metrics(rel2, np.array([1]), query_ids=np.array([9]), ties=ties)


def test_relevance_matrix_without_scores_is_unchanged() -> None:
    rel = relevance_matrix([np.array([3, 1])], [frozenset({1})], 3)
    assert rel.tolist() == [[0, 1, 0]]


def test_precision_recall_curve_is_independent_of_the_order_of_ties() -> None:
    from inquire.data.qrels import Qrels
    from inquire.report.plots import mean_pr_curve

    qrels = Qrels({1: frozenset({10, 30})})
    a = Run({1: ([10, 11, 30], [1.0, 1.0, 0.5])})
    b = Run({1: ([11, 10, 30], [1.0, 1.0, 0.5])})
    (ra, pa), (rb, pb) = (mean_pr_curve(r, qrels, [1], 3) for r in (a, b))
    np.testing.assert_allclose(ra, rb)
    np.testing.assert_allclose(pa, pb)
    # expected hits 1/2, 1, 2 at ranks 1..3: P = 1/2, 1/2, 2/3; R = 1/4, 1/2, 1
    np.testing.assert_allclose(pa, [0.5, 0.5, 2 / 3])
    np.testing.assert_allclose(ra, [0.25, 0.5, 1.0])
