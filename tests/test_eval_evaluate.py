"""evaluate(), EvalResult aggregates and files, and the `inquire evaluate` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inquire import __version__
from inquire.cli import app
from inquire.data import Qrels
from inquire.errors import InputError
from inquire.eval import EvalResult, evaluate
from inquire.run import Run

# Four queries in two supercategories; k = 2.
QUERIES = pd.DataFrame(
    {
        "query_id": np.array([1, 2, 3, 4], dtype=np.int64),
        "query_text": ["a", "b", "c", "d"],
        "supercategory": ["Behavior", "Behavior", "Species", "Species"],
        "category": ["Feeding", "Mating", "Species Identification", "Species Identification"],
        "iconic_group": ["Birds", "Mammals", "Birds", "Unknown"],
    }
)
QRELS = Qrels({1: {10, 11}, 2: {20}, 3: {30, 31, 32}, 4: {40}})
RUN = Run(
    {
        1: ([10, 99, 11], [0.9, 0.8, 0.7]),  # top 2: 1 0 -> AP = 1/min(2,2) = 0.5
        2: ([98, 20], [0.9, 0.8]),  # top 2: 0 1 -> AP = (1/2)/1 = 0.5, RR = 0.5
        3: ([30, 31], [0.9, 0.8]),  # top 2: 1 1 -> AP = (1 + 1)/min(3,2) = 1
        # query 4 missing from the run: every metric 0
        7: ([1], [1.0]),  # not in the query set: ignored
    },
    name="toy",
)


def _result() -> EvalResult:
    return evaluate(RUN, QRELS, QUERIES, k=2, config={"model": "toy-model"})


def test_per_query_table_by_hand() -> None:
    res = _result()
    pq = res.per_query
    assert list(pq.columns) == [
        "query_id",
        *["ap", "ndcg", "mrr", "precision", "recall"],
        *["supercategory", "category", "iconic_group"],
    ]
    np.testing.assert_allclose(pq["ap"], [0.5, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(pq["mrr"], [1.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(pq["precision"], [0.5, 0.5, 1.0, 0.0])
    # recall: 1/2, 1/1, 2/3, 0
    np.testing.assert_allclose(pq["recall"], [0.5, 1.0, 2 / 3, 0.0])
    assert pq["iconic_group"].tolist() == ["Birds", "Mammals", "Birds", "Unknown"]


def test_aggregates_overall_and_per_group() -> None:
    res = _result()
    overall = res.aggregate()
    assert overall.loc[0, "group"] == "all" and overall.loc[0, "n_queries"] == 4
    assert overall.loc[0, "ap"] == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 4)
    sup = res.aggregate("supercategory").set_index("group")
    assert sup.loc["Behavior", "ap"] == pytest.approx(0.5)  # (0.5 + 0.5) / 2
    assert sup.loc["Species", "ap"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert sup.loc["Species", "n_queries"] == 2
    icon = res.aggregate("iconic_group").set_index("group")
    assert icon.loc["Birds", "mrr"] == pytest.approx(1.0)  # queries 1 and 3
    cat = res.aggregate("category", scaled=True).set_index("group")
    assert cat.loc["Mating", "ap"] == pytest.approx(50.0)  # x100 in tables
    assert cat.loc["Mating", "mrr"] == pytest.approx(0.5)  # MRR stays a fraction
    with pytest.raises(InputError, match=r"cannot group by 'species'"):
        res.aggregate("species")
    table = res.aggregates()
    assert table["by"].tolist()[0] == "all"
    assert set(table["by"]) == {"all", "supercategory", "category", "iconic_group"}
    assert len(table) == 1 + 2 + 3 + 3


def test_save_and_load(tmp_path: Path) -> None:
    res = _result()
    res.save(tmp_path / "out", run=RUN)
    per_query = pd.read_csv(tmp_path / "out" / "per_query.csv")
    assert list(per_query.columns[:6]) == ["query_id", "ap", "ndcg", "mrr", "precision", "recall"]
    assert per_query[["ap", "ndcg", "mrr", "precision", "recall"]].le(1).all().all()
    aggregates = pd.read_csv(tmp_path / "out" / "aggregates.csv")
    assert {"by", "group", "n_queries", "ap"} <= set(aggregates.columns)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["inquire_version"] == __version__
    assert summary["config"]["inquire_version"] == __version__
    assert summary["config"]["model"] == "toy-model" and summary["config"]["k"] == 2
    assert summary["overall"]["ap"] == pytest.approx(0.5)
    assert summary["by"]["supercategory"]["Behavior"]["n_queries"] == 2
    assert set(summary["by"]) == {"supercategory", "category", "iconic_group"}
    assert Run.read(tmp_path / "out" / "run.parquet")[1][0].tolist() == [10, 99, 11]
    back = EvalResult.load(tmp_path / "out")
    pd.testing.assert_frame_equal(back.per_query, res.per_query)  # exact floats, same dtypes
    assert (back.k, back.metrics, back.name) == (2, res.metrics, "toy")
    with pytest.raises(InputError, match=r"not an evaluation result folder"):
        EvalResult.load(tmp_path)


@pytest.mark.parametrize("fails", ["run", "summary"])
def test_a_save_that_fails_midway_leaves_the_folder_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """A full disk while writing the second result: every file is still the first result's
    (no new tables beside an old summary), and no temporary file is left behind."""
    import errno
    import importlib

    # (``inquire.eval.evaluate`` the attribute is the function; the module is imported.)
    evaluate_module = importlib.import_module("inquire.eval.evaluate")

    out = tmp_path / "out"
    _result().save(out, run=RUN)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = evaluate(RUN, QRELS, QUERIES, k=1, config={"model": "other"})

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if fails == "run":
        monkeypatch.setattr(Run, "save_parquet", full_disk)
    else:
        monkeypatch.setattr(evaluate_module, "write_json", full_disk)
    with pytest.raises(OSError, match="No space left"):
        second.save(out, run=RUN)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    second.save(out, run=RUN)
    assert json.loads((out / "summary.json").read_text())["k"] == 1
    assert pd.read_csv(out / "aggregates.csv")["mrr"].iloc[0] == pytest.approx(0.5)  # 0.625 at k=2
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_query_without_annotations_is_an_error_naming_it() -> None:
    qrels = Qrels({1: {10, 11}, 2: {20}, 3: {30, 31, 32}})  # query 4 unannotated
    with pytest.raises(InputError, match=r"query 4 has R = 0"):
        evaluate(RUN, qrels, QUERIES, k=2)


def test_n_relevant_override_for_rerank_pools() -> None:
    # Rerank: R is the relevant candidates in the pool, not the whole collection.
    res = evaluate(RUN, QRELS, QUERIES, k=2, n_relevant={1: 1, 2: 1, 3: 2, 4: 1})
    with pytest.raises(InputError, match=r"query 1 has 2 relevant items"):
        evaluate(RUN, QRELS, QUERIES, k=3, n_relevant={1: 1, 2: 1, 3: 2, 4: 1})
    assert res.per_query["recall"].tolist()[:3] == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------ CLI


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    queries = tmp_path / "queries.csv"
    QUERIES.to_csv(queries, index=True)  # with the upstream unnamed index column
    ann = tmp_path / "ann.csv"
    QRELS.to_dataframe().to_csv(ann, index=False)
    run = tmp_path / "run.trec"
    RUN.save_trec(run)
    return queries, ann, run


def test_cli_evaluate_writes_results(tmp_path: Path) -> None:
    queries, ann, run = _files(tmp_path)
    out = tmp_path / "res"
    args = ["evaluate", "--run", str(run), "--queries", str(queries), "--annotations", str(ann)]
    res = CliRunner().invoke(app, [*args, "--k", "2", "--out", str(out)], env={"COLUMNS": "150"})
    assert res.exit_code == 0, res.output
    assert "Behavior" in res.output and "AP@2" in res.output
    per_query = pd.read_csv(out / "per_query.csv")
    assert list(per_query.columns[:6]) == ["query_id", "ap", "ndcg", "mrr", "precision", "recall"]
    np.testing.assert_allclose(per_query["ap"], [0.5, 0.5, 1.0, 0.0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == 2 and summary["config"]["inquire_version"] == __version__
    assert summary["config"]["run_file"] == str(run)
    # The same run as parquet gives the same numbers.
    RUN.save_parquet(tmp_path / "run.parquet")
    args[2] = str(tmp_path / "run.parquet")
    out2 = tmp_path / "res2"
    res = CliRunner().invoke(app, [*args, "--k", "2", "--out", str(out2)])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_csv(out2 / "per_query.csv"), per_query)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--run": "missing.trec"}, "does not exist"),
        ({"--queries": "missing.csv"}, "does not exist"),
        ({"--annotations": "missing.csv"}, "does not exist"),
        ({"--k": "0"}, "k must be >= 1"),
        ({"--run": "bad.trec"}, "line 1: expected 6 fields"),
    ],
)
def test_cli_evaluate_bad_inputs_exit_2(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    queries, ann, run = _files(tmp_path)
    (tmp_path / "bad.trec").write_text("1 10 0.5\n")
    opts = {"--run": str(run), "--queries": str(queries), "--annotations": str(ann), "--k": "2"}
    for key, value in change.items():
        opts[key] = value if key == "--k" else str(tmp_path / value)
    res = CliRunner().invoke(app, ["evaluate", *[x for kv in opts.items() for x in kv]])
    assert res.exit_code == 2, res.output
    assert message in res.output and "error:" in res.output


def test_cli_evaluate_unknown_split(tmp_path: Path) -> None:
    _, ann, run = _files(tmp_path)
    res = CliRunner().invoke(
        app, ["evaluate", "--run", str(run), "--annotations", str(ann), "--split", "tets"]
    )
    assert res.exit_code == 2 and "Did you mean 'test'" in res.output


def test_missing_group_values_become_unknown_not_dropped() -> None:
    queries = QUERIES.copy()
    queries["iconic_group"] = queries["iconic_group"].astype(object)
    queries.loc[0, "iconic_group"] = None
    res = evaluate(RUN, QRELS, queries, k=2)
    icon = res.aggregate("iconic_group")
    assert icon["n_queries"].sum() == 4
    assert icon.set_index("group").loc["Unknown", "n_queries"] == 2


def test_empty_query_table_is_an_error() -> None:
    with pytest.raises(InputError, match=r"query table is empty"):
        evaluate(RUN, QRELS, QUERIES.iloc[:0], k=2)


def test_evaluate_query_ties_by_hand() -> None:
    from inquire.eval.evaluate import evaluate_query

    # Labels [1, 0], scores tied, R = 1: AP = 1 * (1 / 2) / 1 = 0.5 and nDCG = mean gain 0.5
    # over the discounts of both places, (0.5 + 0.5 / log2(3)) / 1 = 0.8155, in either order.
    for ids in ([7, 8], [8, 7]):
        got = evaluate_query(np.array(ids), np.array([0.5, 0.5]), {7}, k=2, query_id=3)
        assert got["ap"] == pytest.approx(0.5)
        assert got["ndcg"] == pytest.approx((0.5 + 0.5 / np.log2(3)), abs=1e-12)
        assert got["precision"] == pytest.approx(0.5) and got["recall"] == pytest.approx(1.0)
    # R given explicitly (the Rerank pool's count) and a hit list longer than R is an error
    # naming the query.
    got = evaluate_query(np.array([7, 8]), np.array([0.9, 0.1]), {7}, k=2, n_relevant=2)
    assert got["recall"] == pytest.approx(0.5)
    with pytest.raises(InputError, match="query 3 has 2 relevant"):
        evaluate_query(np.array([7, 8]), np.array([0.9, 0.1]), {7, 8}, k=2, n_relevant=1,
                       query_id=3)  # fmt: skip


def test_evaluate_run_file_reads_evaluates_and_writes(tmp_path: Path) -> None:
    from inquire.eval.evaluate import evaluate_run_file

    queries, ann, run = tmp_path / "q.csv", tmp_path / "a.csv", tmp_path / "run.trec"
    QUERIES.to_csv(queries, index=False)
    QRELS.to_dataframe().to_csv(ann, index=False)
    RUN.save_trec(run)
    out = tmp_path / "res"
    res = evaluate_run_file(run, 2, queries=queries, annotations=ann, out=out)
    np.testing.assert_allclose(res.per_query["ap"], _result().per_query["ap"])
    assert res.config["run_file"] == str(run) and res.config["queries"] == str(queries)
    assert res.config["split"] is None and res.config["annotations"] == str(ann)
    saved = pd.read_csv(out / "per_query.csv")
    np.testing.assert_allclose(saved["ap"], [0.5, 0.5, 1.0, 0.0])
    assert (out / "run.parquet").is_file()
    with pytest.raises(InputError, match="existing file"):  # checked before the run is read
        evaluate_run_file(tmp_path / "missing.trec", 2, queries=queries, annotations=ann, out=ann)


def test_a_save_without_a_run_removes_an_older_results_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _result().save(out, run=RUN)
    second = evaluate(RUN, QRELS, QUERIES, k=1, config={"model": "other"})
    second.save(out)  # no run: the first result's run.parquet is not this result's
    assert sorted(p.name for p in out.iterdir()) == [
        "aggregates.csv",
        "per_query.csv",
        "summary.json",
    ]
    assert EvalResult.load(out).k == 1


def test_two_saves_into_one_folder_at_once_leave_one_whole_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second save runs while the first is between its renames: without taking turns the
    folder ended with one result's tables beside the other's summary."""
    import os
    import threading

    out = tmp_path / "out"
    first = _result()  # k=2
    second = evaluate(RUN, QRELS, QUERIES, k=1, config={"model": "other"})
    assert not first.per_query.equals(second.per_query)
    real_replace = os.replace
    main = threading.current_thread()
    other = threading.Thread(target=second.save, args=(out,), kwargs={"run": RUN})

    def replace(src: str, dst: str) -> None:
        real_replace(src, dst)
        if threading.current_thread() is main and Path(dst).name == "per_query.csv":
            other.start()  # the first save has renamed one file of four into place
            other.join(timeout=3)  # a save that does not wait for the first ends in this time

    monkeypatch.setattr(os, "replace", replace)
    first.save(out, run=RUN)
    other.join(timeout=60)
    assert not other.is_alive()
    back = EvalResult.load(out)
    whole = second if back.k == 1 else first
    pd.testing.assert_frame_equal(back.per_query, whole.per_query)
    pd.testing.assert_frame_equal(pd.read_csv(out / "aggregates.csv"), whole.aggregates())
    assert sorted(p.name for p in out.iterdir()) == [
        "aggregates.csv",
        "per_query.csv",
        "run.parquet",
        "summary.json",
    ]


def test_a_folder_that_cannot_be_read_but_written_is_still_saved_into(tmp_path: Path) -> None:
    """The lock on the folder needs it open for reading; a write-only folder goes without."""
    import os

    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o300)
    try:
        if os.access(out, os.R_OK):
            pytest.skip("running as a user who reads any folder (root)")
        _result().save(out, run=RUN)
    finally:
        out.chmod(0o700)
    assert EvalResult.load(out).k == 2
