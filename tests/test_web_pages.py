"""The science on the pages: per-group tables with bootstrap intervals, the published
leaderboard beside the runs, paired comparisons with Holm-corrected p-values, honest counts on
a query page, run names without server paths, and rerank results with their own labels.

Each number on a page is checked against a reference computed here: pandas means over
``per_query.csv``, ``inquire.report`` called directly, counts from the annotation CSV.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from inquire.data.rerank_set import read_rerank_set, write_synthetic_rerank_set
from inquire.eval.rerank import evaluate_rerank
from inquire.metrics import format_value
from inquire.report import build_report, compare, load_leaderboard
from inquire.report.cells import fmt_cell, fmt_p
from inquire.stats import holm
from inquire.testing.web_client import page_client
from inquire.testing.web_fixtures import WebFixture, build_web_fixture
from inquire.web.app import create_app
from inquire.web.config import WebConfig


class _Tables(HTMLParser):
    """Every <table>'s rows as lists of cell texts, keyed by the table's id (or its index)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._stack: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._n = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            name = dict(attrs).get("id") or f"table{self._n}"
            self._n += 1
            self._stack.append(name)
            self.tables[name] = []
        elif tag == "tr" and self._stack:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._stack:
            self._stack.pop()
        elif tag == "tr" and self._row is not None and self._stack:
            self.tables[self._stack[-1]].append(self._row)
            self._row = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    p = _Tables()
    p.feed(html)
    return p.tables


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> WebFixture:
    return build_web_fixture(tmp_path_factory.mktemp("pagesfx"))


@pytest.fixture(scope="module")
def client(fx: WebFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    cfg = WebConfig(
        results=fx.results, image_roots=[fx.images], thumb_cache=tmp_path_factory.mktemp("t")
    )
    with page_client(create_app(cfg)) as c:
        yield c


def test_run_page_per_group_table_is_inquire_report(client: TestClient, fx: WebFixture) -> None:
    html = client.get("/runs/exact").text
    per_query = pd.read_csv(fx.results[0] / "per_query.csv", keep_default_na=False)
    report = build_report([fx.results[0]], n_resamples=10000, seed=0)
    assert report.ci_description in text_of(html)
    t = tables(html)
    metrics = list(report.metrics)
    group_tables = [r for r in t.values() if r and r[0][:2] == ["group", "queries"]]
    assert len(group_tables) == 4  # overall, supercategory, category, iconic group
    shown = {  # (level table index) -> rows; match them to the report's rows by group
        tuple(r[:2]): r[2:] for rows in t.values() for r in rows[1:] if len(r) == 2 + len(metrics)
    }
    for rec in report.table.to_dict("records"):
        group = "all" if rec["level"] == "overall" else rec["group"]
        cells = shown[(group, str(rec["n_queries"]))]
        assert cells == [fmt_cell(m, rec[m], rec[f"{m}_lo"], rec[f"{m}_hi"]) for m in metrics]
    # the means are the plain means over the group's queries (pandas, by hand)
    for group, sub in per_query.groupby("supercategory"):
        cells = shown[(str(group), str(len(sub)))]
        assert cells[0].split(" [")[0] == f"{sub['ap'].mean() * 100:.1f}"
        lo, hi = (float(x) for x in cells[0].split(" [")[1].rstrip("]").split(", "))
        assert lo <= sub["ap"].mean() * 100 + 0.05 and hi >= sub["ap"].mean() * 100 - 0.05


def test_run_page_shows_the_published_leaderboard_beside_the_runs(
    client: TestClient, fx: WebFixture
) -> None:
    html = client.get("/runs/exact").text
    rows = tables(html)["leaderboard-table"]
    lb = load_leaderboard("fullrank")
    assert rows[0] == ["source", "method", *lb.columns]
    published = [r for r in rows[1:] if r[0] == "published"]
    mine = [r for r in rows[1:] if r[0] == "your run"]
    assert len(published) == len(lb.table) and len(mine) == 2
    for r, want in zip(published, lb.table.to_dict("records"), strict=True):
        assert r[1] == want["method"]
        assert r[2:] == [format_value("ap", want[c]) for c in lb.columns]
    for r, folder in zip(mine, fx.results, strict=True):
        pq_ = pd.read_csv(folder / "per_query.csv", keep_default_na=False)
        assert r[1] == folder.name
        assert r[2] == f"{pq_['ap'].mean() * 100:.1f}"
    assert 'class="mine current"' in html  # this run stands out among the user's runs


def test_compare_page_has_holm_corrected_paired_tests(
    client: TestClient, fx: WebFixture, tmp_path: Path
) -> None:
    html = client.get("/compare?runs=exact&runs=noisy").text
    rows = tables(html)["pairs-table"]
    cmp = compare(fx.results, metrics=("ap", "ndcg", "mrr", "precision", "recall"))
    assert len(rows) - 1 == len(cmp.pairs) == 5
    for r, want in zip(rows[1:], cmp.pairs.to_dict("records"), strict=True):
        assert r[1:3] == ["exact", "noisy"]
        assert r[7] == str(len(pd.read_csv(fx.results[0] / "per_query.csv")))
        assert r[10].rstrip("*") == fmt_p(want["perm_p"])
        assert r[4] == fmt_p(want["perm_p_holm"])
        assert r[5] == fmt_p(want["t_p_holm"])

    # three runs (two named alike): Holm adjusts each metric's three p-values together
    cfg = WebConfig(results=[*fx.results, fx.results[0]], thumb_cache=tmp_path / "t")
    with page_client(create_app(cfg)) as c:
        html3 = c.get("/compare?runs=exact&runs=noisy&runs=exact-2").text
    rows3 = [r for r in tables(html3)["pairs-table"][1:] if r[0] == "AP@50"]
    assert [r[1:3] for r in rows3] == [
        ["exact", "noisy"],
        ["exact", "exact (2)"],
        ["noisy", "exact (2)"],
    ]
    p = [float(r[10].rstrip("*")) for r in rows3]
    raw = compare([*fx.results, fx.results[0]], metrics=("ap",)).pairs["perm_p"].to_numpy()
    assert np.allclose(p, raw, atol=1e-4)
    assert [r[4] for r in rows3] == [fmt_p(x) for x in holm(raw)]
    # the links name each run's own page, not the first run of that name
    assert 'href="/runs/exact-2"' in html3 and "compare=exact-2" in html3


def test_compare_needs_two_runs_and_the_same_queries(
    client: TestClient, fx: WebFixture, tmp_path: Path
) -> None:
    r = client.get("/compare?runs=exact")
    assert r.status_code == 400 and "at least two runs" in r.text
    # a run over fewer queries: the page says so and offers the shared-query comparison
    short = tmp_path / "short"
    shutil.copytree(fx.results[1], short)
    pq_ = pd.read_csv(short / "per_query.csv", keep_default_na=False)
    pq_.iloc[:-2].to_csv(short / "per_query.csv", index=False)
    summary = json.loads((short / "summary.json").read_text())
    (short / "summary.json").write_text(json.dumps(summary | {"name": "short"}))
    cfg = WebConfig(results=[fx.results[0], short], thumb_cache=tmp_path / "t")
    with page_client(create_app(cfg)) as c:
        r = c.get("/compare?runs=exact&runs=short")
        assert r.status_code == 400 and "different queries" in r.text
        link = unescape(re.search(r'id="error-link" href="([^"]+)"', r.text).group(1))  # type: ignore[union-attr]
        ok = c.get(link)
        assert ok.status_code == 200
        assert f"comparing on the {len(pq_) - 2} queries shared" in text_of(ok.text)


def test_query_page_counts_are_honest(client: TestClient, fx: WebFixture) -> None:
    ann = pd.read_csv(fx.bench.annotations)  # the relevant (query, image) pairs
    run = pd.read_parquet(fx.results[1] / "run.parquet")
    qid = int(pd.read_csv(fx.results[1] / "per_query.csv")["query_id"].iloc[0])
    relevant = set(ann.loc[ann["query_id"] == qid, "image_id"])
    top = run[run["query_id"] == qid].sort_values("score", ascending=False, kind="stable")
    for k in (7, 50):
        ids = top["image_id"].head(k).tolist()
        hits = sum(1 for i in ids if i in relevant)
        html = client.get(f"/runs/noisy/queries/{qid}?k={k}").text
        count = text_of(re.search(r'id="relevant-count">(.*?)</p>', html, re.S).group(1))  # type: ignore[union-attr]
        assert count.startswith(
            f"{hits} of {len(relevant)} relevant among the {len(ids)} retrieved"
        )
        assert "Warning" not in text_of(html)


def test_run_names_never_show_server_paths(fx: WebFixture, tmp_path: Path) -> None:
    folder = tmp_path / "secret" / "res"
    shutil.copytree(fx.results[0], folder)
    summary = json.loads((folder / "summary.json").read_text())
    secret = str(tmp_path / "secret" / "runs" / "clip-run.trec")
    (folder / "summary.json").write_text(json.dumps(summary | {"name": secret}))
    (folder / "run.parquet").unlink()  # the query page must not name the folder either
    cfg = WebConfig(results=[folder], thumb_cache=tmp_path / "t")
    with page_client(create_app(cfg)) as c:
        pages = [c.get("/"), c.get("/runs/clip-run.trec"), c.get("/api/runs")]
        qid = int(pd.read_csv(folder / "per_query.csv")["query_id"].iloc[0])
        pages.append(c.get(f"/runs/clip-run.trec/queries/{qid}"))
        assert [p.status_code for p in pages] == [200, 200, 200, 400]
        for p in pages:
            assert str(tmp_path) not in p.text and "secret" not in p.text
        assert "clip-run.trec" in pages[0].text


@pytest.fixture(scope="module")
def rerank_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("rr")
    paths = write_synthetic_rerank_set(root / "set", n_val=1, n_test=2, pool=30, image_size=16)
    rs = read_rerank_set(paths["test"])
    result = evaluate_rerank(rs, "clip_score", progress=False)
    out = result.save(root / "result")
    return {"root": root, "set": rs, "result": out}


def test_rerank_result_uses_its_own_pool_labels(
    rerank_world: dict[str, Any], tmp_path: Path
) -> None:
    rs = rerank_world["set"]
    qid = rs.query_ids[0]
    pool = rs.pool(qid)
    r_pool = int(pool["relevant"].sum())
    run = pd.read_parquet(rerank_world["result"] / "run.parquet")
    # annotations that disagree with the pool: every candidate of the query marked relevant
    ann = tmp_path / "ann.csv"
    pd.DataFrame({"query_id": qid, "image_id": pool["image_id"]}).to_csv(ann, index=False)
    for ann_files, warn in (([], False), ([ann], True)):
        cfg = WebConfig(
            results=[rerank_world["result"]], annotations=ann_files, thumb_cache=tmp_path / "t"
        )
        with page_client(create_app(cfg)) as c:
            slug = c.get("/api/runs").json()[0]["slug"]
            html = c.get(f"/runs/{slug}/queries/{qid}?k=10").text
            data = c.get(f"/api/runs/{slug}/queries/{qid}?k=10").json()
        top = [it["image_id"] for it in data["results"]]
        good = set(pool.loc[pool["relevant"], "image_id"].astype(int))
        hits = sum(1 for i in top if i in good)
        assert data["labels"] == "rerank" and data["n_relevant"] == r_pool
        assert [it["relevant"] for it in data["results"]] == [i in good for i in top]
        assert f"{hits} of {r_pool} relevant among the 10 retrieved" in text_of(html)
        assert data["text"] == str(rs.queries.set_index("query_id").loc[qid, "query_text"])
        assert ("label" in " ".join(data["warnings"])) is warn
        assert ("Warning:" in html) is warn
    assert top == run[run["query_id"] == qid]["image_id"].head(10).tolist()


def test_labels_that_do_not_reproduce_the_metrics_are_flagged(
    fx: WebFixture, tmp_path: Path
) -> None:
    ann = pd.read_csv(fx.bench.annotations)
    qid = int(pd.read_csv(fx.results[0] / "per_query.csv")["query_id"].iloc[0])
    run = pd.read_parquet(fx.results[0] / "run.parquet")
    ranked = run[run["query_id"] == qid].sort_values("score", ascending=False)["image_id"]
    relevant = set(ann.loc[ann["query_id"] == qid, "image_id"])
    wrong = next(int(i) for i in ranked if i not in relevant)  # a miss of the run ...
    extra = tmp_path / "extra.csv"  # ... labelled relevant by another annotations file
    pd.DataFrame({"query_id": [qid], "image_id": [wrong]}).to_csv(extra, index=False)
    cfg = WebConfig(results=[fx.results[0]], annotations=[extra], thumb_cache=tmp_path / "t")
    with page_client(create_app(cfg)) as c:
        data = c.get(f"/api/runs/exact/queries/{qid}").json()
        html = c.get(f"/runs/exact/queries/{qid}").text
        other = c.get(f"/api/runs/exact/queries/{int(ann['query_id'].iloc[-1])}").json()
    assert data["n_relevant"] == len(relevant) + 1
    assert len(data["warnings"]) == 1 and "do not reproduce" in data["warnings"][0]
    assert "Warning: the labels shown do not reproduce" in text_of(html)
    assert other["warnings"] == []  # the other queries' labels are the evaluated ones


def test_run_page_of_a_result_without_group_columns(fx: WebFixture, tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    shutil.copytree(fx.results[0], folder)
    pq_ = pd.read_csv(folder / "per_query.csv", keep_default_na=False)
    pq_.drop(columns=["supercategory", "category", "iconic_group"]).to_csv(
        folder / "per_query.csv", index=False
    )
    cfg = WebConfig(results=[folder], thumb_cache=tmp_path / "t")
    with page_client(create_app(cfg)) as c:
        r = c.get("/runs/exact")
    assert r.status_code == 200
    group_tables = [t for t in tables(r.text).values() if t and t[0][:2] == ["group", "queries"]]
    assert len(group_tables) == 1  # overall only
    assert group_tables[0][1][2].startswith(f"{pq_['ap'].mean() * 100:.1f} [")
