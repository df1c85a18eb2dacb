"""Runs: the ranking rule, parquet and TREC round trips, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inquire.errors import InputError
from inquire.run import Run, rank_order


def _random_run(seed: int = 0) -> Run:
    rng = np.random.default_rng(seed)
    res = {}
    for q in rng.choice(1000, 6, replace=False):
        n = int(rng.integers(1, 40))
        ids = rng.choice(10**9, n, replace=False)
        # Rounded scores give plenty of ties; awkward floats test exact text round trips.
        scores = np.round(rng.normal(size=n), 1) + rng.choice([0.0, 1e-17, 1 / 3], n)
        res[int(q)] = (ids, scores)
    return Run(res, name="rand run")


def _assert_same(a: Run, b: Run) -> None:
    assert list(a) == list(b) or sorted(a) == sorted(b)
    for q in a:
        np.testing.assert_array_equal(a[q][0], b[q][0])
        np.testing.assert_array_equal(a[q][1], b[q][1])  # exact, not approximate


def test_ranking_rule_is_score_descending_and_stable_on_ties() -> None:
    scores = np.array([0.5, 0.9, 0.5, -np.inf, 0.9, 0.1])
    np.testing.assert_array_equal(rank_order(scores), [1, 4, 0, 2, 5, 3])
    run = Run({3: ([10, 11, 12, 13], [1.0, 2.0, 1.0, 2.0])})
    ids, sc = run[3]
    np.testing.assert_array_equal(ids, [11, 13, 10, 12])  # ties keep input order
    np.testing.assert_array_equal(sc, [2.0, 2.0, 1.0, 1.0])
    assert ids.dtype == np.int64 and sc.dtype == np.float64


def test_duplicate_ids_are_an_error_naming_query_and_id() -> None:
    with pytest.raises(InputError, match=r"query 5: image id 7 is ranked more than once"):
        Run({5: ([7, 8, 7], [0.3, 0.2, 0.1])})


def test_nan_scores_and_shape_mismatch_are_errors() -> None:
    with pytest.raises(InputError, match=r"query 4: scores contain NaN at position 1"):
        Run({4: ([1, 2], [0.1, float("nan")])})
    with pytest.raises(InputError, match=r"query 4: image ids \(2,\) and scores \(3,\)"):
        Run({4: ([1, 2], [0.1, 0.2, 0.3])})


def test_from_arrays_drops_padding_and_truncate() -> None:
    ids = np.array([[5, 6, -1], [7, -1, -1]])
    scores = np.array([[0.9, 0.8, -np.inf], [0.5, -np.inf, -np.inf]])
    run = Run.from_arrays([10, 20], ids, scores)
    np.testing.assert_array_equal(run[10][0], [5, 6])
    np.testing.assert_array_equal(run[20][0], [7])
    np.testing.assert_array_equal(run.truncate(1)[10][0], [5])
    with pytest.raises(InputError, match=r"nq = 3 query ids; got ids \(2, 3\)"):
        Run.from_arrays([10, 20, 30], ids, scores)


def test_parquet_round_trip(tmp_path: Path) -> None:
    run = _random_run()
    run.save_parquet(tmp_path / "run.parquet")
    back = Run.read(tmp_path / "run.parquet")
    _assert_same(run, back)
    assert back.name == "rand run"
    df = pd.read_parquet(tmp_path / "run.parquet")
    assert list(df.columns) == ["query_id", "image_id", "rank", "score"]
    assert (
        df.groupby("query_id")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    )


def test_trec_round_trip_is_exact(tmp_path: Path) -> None:
    run = _random_run(1)
    run.save_trec(tmp_path / "run.txt")
    line = (tmp_path / "run.txt").read_text().splitlines()[0].split()
    assert len(line) == 6 and line[1] == "Q0" and line[3] == "1" and line[5] == "rand_run"
    float(line[4])  # a plain number, readable by trec_eval
    back = Run.read(tmp_path / "run.txt")
    _assert_same(run, back)
    assert back.name == "rand_run"


def test_trec_ties_follow_the_rank_column(tmp_path: Path) -> None:
    # Lines out of order; equal scores: the rank column decides, as the file ranked them.
    (tmp_path / "r.trec").write_text("1 Q0 30 2 0.5 t\n1 Q0 10 3 0.5 t\n1 Q0 20 1 0.5 t\n")
    np.testing.assert_array_equal(Run.read(tmp_path / "r.trec")[1][0], [20, 30, 10])


def test_trec_file_readable_by_pytrec_eval(tmp_path: Path) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run = Run({1: ([10, 11, 12], [0.9, 0.5, 0.1])})
    run.save_trec(tmp_path / "r.trec")
    parsed: dict[str, dict[str, float]] = {}
    for line in (tmp_path / "r.trec").read_text().splitlines():
        q, _, d, _, s, _ = line.split()
        parsed.setdefault(q, {})[d] = float(s)
    ev = pytrec_eval.RelevanceEvaluator({"1": {"11": 1}}, {"recip_rank"})
    assert ev.evaluate(parsed)["1"]["recip_rank"] == pytest.approx(0.5)


def test_malformed_trec_lines_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.trec"
    bad.write_text("1 Q0 10 1 0.5 t\n1 Q0 11 2 0.4\n")
    with pytest.raises(InputError, match=r"line 2: expected 6 fields.*got 5"):
        Run.read(bad)
    bad.write_text("1 Q0 10 1 0.5 t\n\n1 Q0 img.jpg 2 0.4 t\n")
    with pytest.raises(InputError, match=r"line 3: qid, docid and rank must be integers"):
        Run.read(bad)
    bad.write_text("1 Q0 10 1 high t\n")
    with pytest.raises(InputError, match=r"line 1: .*score a number"):
        Run.read(bad)
    bad.write_text("\n\n")
    with pytest.raises(InputError, match=r"has no result lines"):
        Run.read(bad)
    bad.write_text("1 Q0 10 1 0.5 t\n1 Q0 10 2 0.4 t\n")
    with pytest.raises(InputError, match=r"image id 10 is ranked more than once"):
        Run.read(bad)


def test_missing_or_broken_run_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"does not exist"):
        Run.read(tmp_path / "nope.parquet")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(InputError, match=r"not a readable parquet"):
        Run.read(broken)
    wrong = tmp_path / "wrong.parquet"
    pd.DataFrame({"qid": [1], "doc": [2]}).to_parquet(wrong)
    with pytest.raises(InputError, match=r"lacks column"):
        Run.read(wrong)
