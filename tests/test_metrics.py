"""Metrics: hand-computed cases, a per-query loop reference, pytrec_eval and ir_measures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inquire.errors import InputError, UnknownNameError
from inquire.metrics import (
    METRICS,
    ap_at_k,
    compute_metrics,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
    relevance_matrix,
    scale,
    trec_ap_at_k,
)

# Three toy queries, k = 5 (1 = relevant at that rank):
#   q0: 1 0 1 0 0   R = 2
#   q1: 0 0 0 0 0   R = 3
#   q2: 0 1 1 1 1   R = 10
REL = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1]], dtype=np.float64)
R = np.array([2, 3, 10], dtype=np.int64)
L2 = [math.log2(i + 1) for i in range(1, 6)]  # discounts log2(2) .. log2(6)


def test_precision_by_hand() -> None:
    # q0: 2 hits / 5; q1: 0 / 5; q2: 4 / 5
    np.testing.assert_allclose(precision_at_k(REL, R), [2 / 5, 0.0, 4 / 5])


def test_recall_by_hand() -> None:
    # q0: 2 hits / R=2; q1: 0 / 3; q2: 4 / 10
    np.testing.assert_allclose(recall_at_k(REL, R), [1.0, 0.0, 0.4])


def test_inquire_ap_by_hand() -> None:
    # q0: P@1 = 1, P@3 = 2/3 at the relevant ranks; min(R, k) = min(2, 5) = 2
    #     AP = (1 + 2/3) / 2 = 5/6
    # q1: no hits -> 0
    # q2: P@2 = 1/2, P@3 = 2/3, P@4 = 3/4, P@5 = 4/5; min(R, k) = min(10, 5) = 5
    #     AP = (1/2 + 2/3 + 3/4 + 4/5) / 5 = (163/60) / 5 = 163/300
    np.testing.assert_allclose(ap_at_k(REL, R), [5 / 6, 0.0, 163 / 300])


def test_trec_ap_divides_by_r() -> None:
    # The same precision sums divided by R instead of min(R, k):
    # q0: (5/3) / 2 = 5/6 (R <= k: both agree); q2: (163/60) / 10 = 163/600
    np.testing.assert_allclose(trec_ap_at_k(REL, R), [5 / 6, 0.0, 163 / 600])


def test_ap_normalisation_reaches_one_only_for_inquire() -> None:
    # A perfect top 5 for a query with R = 1000: INQUIRE AP@5 = 5/5 = 1,
    # trec map@5 = 5/1000.
    rel, n = np.ones((1, 5)), np.array([1000])
    assert ap_at_k(rel, n)[0] == pytest.approx(1.0)
    assert trec_ap_at_k(rel, n)[0] == pytest.approx(5 / 1000)


def test_ndcg_by_hand() -> None:
    # q0: DCG = 1/log2(2) + 1/log2(4) = 1 + 1/2 = 1.5; IDCG over min(2,5)=2 ones
    #     = 1/log2(2) + 1/log2(3) = 1 + 0.6309...;  nDCG = 1.5 / 1.6309...
    q0 = (1 / L2[0] + 1 / L2[2]) / (1 / L2[0] + 1 / L2[1])
    # q2: DCG = 1/log2(3) + 1/log2(4) + 1/log2(5) + 1/log2(6); IDCG over min(10,5)=5 ones
    q2 = sum(1 / d for d in L2[1:]) / sum(1 / d for d in L2)
    np.testing.assert_allclose(ndcg_at_k(REL, R), [q0, 0.0, q2])
    assert q0 == pytest.approx(1.5 / (1 + 1 / math.log2(3)))


def test_reciprocal_rank_by_hand() -> None:
    # q0: first hit at rank 1 -> 1; q1: none -> 0; q2: first hit at rank 2 -> 1/2
    np.testing.assert_allclose(reciprocal_rank(REL, R), [1.0, 0.0, 0.5])


def test_compute_metrics_and_scales() -> None:
    out = compute_metrics(REL, R, ["ap", "mrr"])
    assert set(out) == {"ap", "mrr"}
    np.testing.assert_allclose(out["mrr"], [1.0, 0.0, 0.5])
    assert (scale("ap"), scale("ndcg"), scale("precision"), scale("mrr")) == (100, 100, 100, 1)
    with pytest.raises(UnknownNameError, match=r"Did you mean 'ndcg'"):
        compute_metrics(REL, R, ["ndgc"])
    with pytest.raises(UnknownNameError, match=r"metric 'apk'"):
        scale("apk")


def test_r_zero_is_an_error_naming_the_query() -> None:
    with pytest.raises(InputError, match=r"query 42 has R = 0"):
        compute_metrics(REL, np.array([2, 0, 10]), query_ids=np.array([7, 42, 9]))


def test_r_below_hits_is_an_error_naming_the_query() -> None:
    # q2 has 4 hits in its list but R = 3 claims only 3 exist.
    with pytest.raises(InputError, match=r"query 9 has 4 relevant items in its list but R = 3"):
        compute_metrics(REL, np.array([2, 3, 3]), query_ids=np.array([7, 42, 9]))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(InputError, match=r"do not match"):
        compute_metrics(REL, np.array([1, 2]))


def test_relevance_matrix_pads_short_lists() -> None:
    rel = relevance_matrix(
        [np.array([5, 6]), np.array([1, 2, 3, 4])], [frozenset({6}), frozenset({9})], k=3
    )
    np.testing.assert_array_equal(rel, [[0, 1, 0], [0, 0, 0]])
    # A list of 2 with one hit still has P@3 = 1/3: missing places count as non-relevant.
    assert precision_at_k(rel, np.array([1, 1]))[0] == pytest.approx(1 / 3)
    with pytest.raises(InputError, match=r"k must be >= 1, got 0"):
        relevance_matrix([np.array([1])], [frozenset({1})], k=0)


# ------------------------------------------------------------- reference implementations


def _loop_metrics(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """The obvious per-query definitions, one rank at a time."""
    top = ranked[:k]
    n_rel = len(relevant)
    hits, prec_sum, dcg, rr = 0, 0.0, 0.0, 0.0
    for i, doc in enumerate(top, start=1):
        if doc in relevant:
            hits += 1
            prec_sum += hits / i
            dcg += 1 / math.log2(i + 1)
            if rr == 0.0:
                rr = 1 / i
    idcg = sum(1 / math.log2(i + 1) for i in range(1, min(n_rel, k) + 1))
    return {
        "ap": prec_sum / min(n_rel, k),
        "trec_ap": prec_sum / n_rel,
        "ndcg": dcg / idcg,
        "mrr": rr,
        "precision": hits / k,
        "recall": hits / n_rel,
    }


def _random_run(seed: int, nq: int = 25, n_docs: int = 300, max_len: int = 60):
    """Random ranked lists (distinct scores) and qrels including unretrieved relevant docs."""
    rng = np.random.default_rng(seed)
    ranked, scores, relevant = [], [], []
    for _ in range(nq):
        length = int(rng.integers(1, max_len))
        docs = rng.choice(n_docs, length, replace=False)
        rel = set(rng.choice(n_docs, int(rng.integers(1, 80)), replace=False).tolist())
        rel |= set(docs[rng.random(length) < 0.3].tolist())  # plenty of hits in the lists
        ranked.append(docs)
        scores.append(np.sort(rng.random(length))[::-1] + np.arange(length)[::-1])
        relevant.append(frozenset(int(d) for d in rel))
    return ranked, scores, relevant


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 10, 50])
def test_vectorised_equals_the_per_query_loop(seed: int, k: int) -> None:
    ranked, _, relevant = _random_run(seed)
    rel = relevance_matrix(ranked, relevant, k)
    n_rel = np.array([len(s) for s in relevant])
    got = compute_metrics(rel, n_rel, list(METRICS))
    for q in range(len(ranked)):
        want = _loop_metrics([int(d) for d in ranked[q]], set(relevant[q]), k)
        for name in METRICS:
            assert got[name][q] == pytest.approx(want[name], abs=1e-12), (name, q)


@pytest.mark.parametrize("k", [5, 20, 50])
def test_against_pytrec_eval(k: int) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    ranked, scores, relevant = _random_run(7)
    qrels = {f"q{q}": {f"d{d}": 1 for d in rel} for q, rel in enumerate(relevant)}
    run = {
        f"q{q}": {f"d{int(d)}": float(s) for d, s in zip(ranked[q], scores[q], strict=True)}
        for q in range(len(ranked))
    }
    measures = {f"map_cut_{k}", f"ndcg_cut_{k}", f"P_{k}", f"recall_{k}"}
    res = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    rel = relevance_matrix(ranked, relevant, k)
    n_rel = np.array([len(s) for s in relevant])
    ours = compute_metrics(rel, n_rel, list(METRICS))
    for q in range(len(ranked)):
        r = res[f"q{q}"]
        # pytrec_eval's map_cut divides by R: it is our trec_ap, not INQUIRE's AP.
        assert ours["trec_ap"][q] == pytest.approx(r[f"map_cut_{k}"], abs=1e-4)
        assert ours["ap"][q] == pytest.approx(
            r[f"map_cut_{k}"] * n_rel[q] / min(n_rel[q], k), abs=1e-4
        )
        assert ours["ndcg"][q] == pytest.approx(r[f"ndcg_cut_{k}"], abs=1e-4)
        assert ours["precision"][q] == pytest.approx(r[f"P_{k}"], abs=1e-4)
        assert ours["recall"][q] == pytest.approx(r[f"recall_{k}"], abs=1e-4)


def test_against_ir_measures() -> None:
    ir_measures = pytest.importorskip("ir_measures")
    k = 10
    ranked, scores, relevant = _random_run(11)
    qrels = [ir_measures.Qrel(f"q{q}", f"d{d}", 1) for q, rel in enumerate(relevant) for d in rel]
    run = [
        ir_measures.ScoredDoc(f"q{q}", f"d{int(d)}", float(s))
        for q in range(len(ranked))
        for d, s in zip(ranked[q], scores[q], strict=True)
    ]
    ap, rr = ir_measures.AP @ k, ir_measures.RR @ k
    got = {
        (m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc([ap, rr], qrels, run)
    }
    rel = relevance_matrix(ranked, relevant, k)
    ours = compute_metrics(rel, np.array([len(s) for s in relevant]), ["trec_ap", "mrr"])
    for q in range(len(ranked)):
        assert ours["trec_ap"][q] == pytest.approx(got[(f"q{q}", str(ap))], abs=1e-4)
        assert ours["mrr"][q] == pytest.approx(got[(f"q{q}", str(rr))], abs=1e-4)


def test_perfect_rankings_score_exactly_one() -> None:
    # R = 3 <= k = 5: the three relevant first; R = 9 > k: all five relevant.
    rel = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=np.float64)
    out = compute_metrics(rel, np.array([3, 9]), ["ap", "ndcg", "mrr"])
    for name in ("ap", "ndcg", "mrr"):
        assert out[name].tolist() == [1.0, 1.0], name


def test_non_binary_labels_are_an_error() -> None:
    with pytest.raises(InputError, match=r"query 8: relevance values must be 0 or 1.*\[2\.0\]"):
        compute_metrics(np.array([[1.0, 2.0]]), np.array([3]), query_ids=np.array([8]))
