"""load_queries / load_qrels through a mirror of the real query files; Qrels and its errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from inquire.data import Qrels, load_qrels, load_queries
from inquire.data.qrels import read_qrels
from inquire.data.queries import QUERY_COLUMNS, UNKNOWN_GROUP
from inquire.errors import DownloadError, InputError, UnknownNameError
from inquire.testing.http_server import FixtureServer


def test_load_queries_and_qrels_through_the_mirror(
    inquire_mirror: tuple[FixtureServer, bytes], tmp_path: Path
) -> None:
    server, ann = inquire_mirror
    val, test = load_queries("val"), load_queries("test")
    assert list(val.columns) == QUERY_COLUMNS
    assert (len(val), len(test)) == (50, 200)
    assert sorted(val["supercategory"].value_counts(), reverse=True) == [17, 17, 12, 4]
    assert sorted(test["supercategory"].value_counts(), reverse=True) == [67, 66, 49, 18]
    assert (test["iconic_group"] == UNKNOWN_GROUP).sum() == 2
    # The upstream paths were requested, under the mirror root.
    paths = sorted(r.path for r in server.gets())
    assert paths == [
        "/raw.githubusercontent.com/inquire-benchmark/INQUIRE/main/data/inquire/"
        f"inquire_queries_{s}.csv"
        for s in ("test", "val")
    ]

    qrels = load_qrels()
    (tmp_path / "a.csv").write_bytes(ann)
    frame = pd.read_csv(tmp_path / "a.csv")
    assert len(qrels) == 250
    for qid, group in frame.groupby("query_id"):
        assert qrels[int(qid)] == frozenset(group["image_id"].tolist())
        assert qrels.n_relevant(int(qid)) == len(group)
    some = int(frame["image_id"].iloc[0])
    assert qrels.paths[some] == frame["image_path"].iloc[0]

    # Offline afterwards: everything comes from the cache.
    n = len(server.requests)
    server.stop()
    assert load_queries("val").equals(val)
    assert len(load_qrels()) == 250
    assert len(server.requests) == n


def test_load_without_network_or_mirror_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with FixtureServer(Path(".")) as server:
        url = server.url
    monkeypatch.setenv("INQUIRE_BASE_URL", url)
    monkeypatch.setattr("inquire.data.download.BACKOFF_S", 0.0)
    monkeypatch.setattr("inquire.data.download.RETRIES", 0)
    with pytest.raises(DownloadError, match=r"'queries-val'.*put the file at"):
        load_queries("val")


def test_unknown_split() -> None:
    with pytest.raises(UnknownNameError, match=r"Did you mean 'val'"):
        load_queries("vall")


def test_qrels_api() -> None:
    q = Qrels.from_pairs([1, 1, 2], [10, 11, 10], ["a.jpg", "b.jpg", "a.jpg"])
    assert dict(q) == {1: frozenset({10, 11}), 2: frozenset({10})}
    assert q.n_relevant(1) == 2 and q.paths[11] == "b.jpg"
    assert set(q.restrict([2, 3])) == {2}
    back = Qrels.from_dataframe(q.to_dataframe())
    assert dict(back) == dict(q) and back.paths == q.paths
    with pytest.raises(InputError, match=r"query 7 has no relevance annotations"):
        q.n_relevant(7)


def test_read_qrels_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"does not exist"):
        read_qrels(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("query_id,img\n1,2\n")
    with pytest.raises(InputError, match=r"lack column.*'image_id'"):
        read_qrels(bad)
    bad.write_text("query_id,image_id\n1,5\n1,6\n2,abc\n")
    with pytest.raises(InputError, match=r"'image_id' must hold integers; found 'abc' on row 4"):
        read_qrels(bad)
    bad.write_text("query_id,image_id\n1,5\n,6\n")
    with pytest.raises(InputError, match=r"'query_id' must hold integers; found an empty cell"):
        read_qrels(bad)
    bad.write_text("")
    with pytest.raises(InputError, match=r"not a readable CSV"):
        read_qrels(bad)
    ok = tmp_path / "ok.csv"
    ok.write_text(",query_id,image_id,image_path\n0,5,100,train/x.jpg\n1,5,101,train/y.jpg\n")
    assert read_qrels(ok)[5] == frozenset({100, 101})  # unnamed index column ignored


def test_cli_evaluate_with_downloaded_split(
    inquire_mirror: tuple[FixtureServer, bytes], tmp_path: Path
) -> None:
    """`inquire evaluate --run RUN --split val` fetches the queries and annotations itself."""
    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.run import Run

    _, ann = inquire_mirror
    (tmp_path / "ann.csv").write_bytes(ann)
    qrels = read_qrels(tmp_path / "ann.csv")
    val = load_queries("val")
    # A perfect run for the val queries: every relevant image first.
    run = Run(
        {int(q): (sorted(qrels[int(q)]), [1.0] * qrels.n_relevant(int(q))) for q in val["query_id"]}
    )
    run.save_trec(tmp_path / "run.trec")
    out = tmp_path / "res"
    res = CliRunner().invoke(
        app, ["evaluate", "--run", str(tmp_path / "run.trec"), "--split", "val", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    per_query = pd.read_csv(out / "per_query.csv")
    assert len(per_query) == 50
    assert per_query[["ap", "ndcg", "mrr", "recall"]].eq(1.0).all().all()
