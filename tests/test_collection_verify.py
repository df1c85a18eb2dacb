from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from scipy.stats import binomtest
from typer.testing import CliRunner

from inquire.cli import app as cli_app
from inquire.collection import SearchRequest, create_collection, open_collection
from inquire.collection.charts import trend_svg
from inquire.collection.verify import EXPORT_COLUMNS, Verification, wilson_interval
from inquire.errors import InputError, UnknownNameError
from inquire.testing.collection_encoder import make_photo_folder
from inquire.testing.web_client import page_client
from inquire.web.verify import make_app


@pytest.fixture
def coll(tmp_path: Path):
    photos = make_photo_folder(tmp_path / "photos", n=60, seed=11)
    c, _ = create_collection("birds", tmp_path / "photos", "toy:colour")
    return c, {str(p.path.resolve()): p for p in photos}


def _search(client: TestClient, who: str = "ana", **body) -> str:
    r = client.post("/verify/api/c/birds/searches", json={"text": "red", "who": who, **body})
    assert r.status_code == 200, r.text
    return r.json()["search_id"]


def _mark(client: TestClient, sid: str, image_id: int, who: str, mark: str):
    return client.put(
        f"/verify/api/c/birds/searches/{sid}/marks",
        json={"image_id": image_id, "who": who, "mark": mark},
    )


def test_wilson_interval_matches_scipy() -> None:
    for k, n in [(0, 1), (1, 1), (3, 10), (7, 9), (50, 200), (0, 25)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson_interval(k, n)
        assert (float(lo), float(hi)) == pytest.approx((ci.low, ci.high), abs=1e-9)
    lo, hi = wilson_interval(np.array([0]), np.array([0]))
    assert (lo[0], hi[0]) == (0.0, 1.0)


def test_marks_through_the_page_api_survive_a_restart_and_export(coll) -> None:
    c, photos = coll
    client = page_client(make_app())
    assert "j</kbd>/<kbd>k" in client.get("/verify").text
    assert client.get("/verify/api/collections").json()[0]["name"] == "birds"
    sid = _search(client, taxa=[], date_from="2019-01-01", bbox="-180,-90,180,90")
    page = client.get(f"/verify/api/c/birds/searches/{sid}/results?offset=0&limit=10").json()
    items = page["results"]
    assert [it["rank"] for it in items] == list(range(1, 11))
    assert all(it["date"] >= "2019-01-01" and it["lat"] is not None for it in items)
    truth = {}
    for it in items[:6]:
        photo = photos[str((c.images_root / it["path"]).resolve())]
        mark = "relevant" if photo.colour == "red" else "not_relevant"
        truth[it["image_id"]] = mark
        assert _mark(client, sid, it["image_id"], "ana", mark).status_code == 200
    assert _mark(client, sid, items[6]["image_id"], "ana", "unsure").status_code == 200
    # A mark can be changed and cleared.
    _mark(client, sid, items[7]["image_id"], "ana", "relevant")
    _mark(client, sid, items[7]["image_id"], "ana", "clear")

    restarted = page_client(make_app())  # a new process state: everything comes from SQLite
    again = restarted.get(f"/verify/api/c/birds/searches/{sid}/results?offset=0&limit=10").json()
    got = {it["image_id"]: it["marks"].get("ana") for it in again["results"]}
    assert {i: got[i] for i in truth} == truth
    assert got[items[6]["image_id"]] == "unsure" and got[items[7]["image_id"]] is None

    csv = restarted.get(f"/verify/api/c/birds/searches/{sid}/export.csv")
    assert csv.status_code == 200 and "attachment" in csv.headers["content-disposition"]
    df = pd.read_csv(io.StringIO(csv.text))
    assert list(df.columns[: len(EXPORT_COLUMNS)]) == EXPORT_COLUMNS
    assert len(df) == 7 and set(df["who"]) == {"ana"}
    by_id = df.set_index("image_id")
    for image_id, mark in truth.items():
        assert by_id.loc[image_id, "mark"] == mark
        rank = next(it["rank"] for it in items if it["image_id"] == image_id)
        assert by_id.loc[image_id, "rank"] == rank
        # the page's export names the image relative to the collection's images folder
        assert not Path(by_id.loc[image_id, "path"]).is_absolute()
        assert (c.images_root / by_id.loc[image_id, "path"]).is_file()
    assert str(c.images_root) not in csv.text
    pq = restarted.get(f"/verify/api/c/birds/searches/{sid}/export.parquet")
    want = Verification(c).export(sid)
    want["path"] = c.images(want["image_id"].tolist())["path"].to_numpy()
    assert pd.read_parquet(io.BytesIO(pq.content)).equals(want)

    summary = restarted.get(f"/verify/api/c/birds/searches/{sid}/summary").json()
    eff = summary["efficiency"]
    n_pos = sum(m == "relevant" for m in truth.values())
    assert (eff["inspected"], eff["positives"], eff["deepest_rank"]) == (7, n_pos, 7)
    svg = restarted.get(f"/verify/api/c/birds/searches/{sid}/trend.svg?by=year").text
    assert svg.startswith("<svg") and "verified positives" in svg and "<script" not in svg
    assert restarted.get(f"/verify/api/c/birds/searches/{sid}/efficiency.svg").text.startswith(
        "<svg"
    )
    thumb = restarted.get(f"/verify/api/c/birds/images/{items[0]['image_id']}?size=32")
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"


def test_load_more_extends_the_same_ranking_and_people_share_a_search(coll) -> None:
    client = page_client(make_app())
    sid = _search(client, who="ana")
    assert _search(client, who="ben") == sid  # same request -> same search, same ranking
    first = client.get(f"/verify/api/c/birds/searches/{sid}/results?offset=0&limit=24").json()
    url = f"/verify/api/c/birds/searches/{sid}/results"
    # Reading never ranks more (no GET changes state); the page's POST does.
    assert client.get(f"{url}?offset=24&limit=24").json()["results"] == []
    assert client.get(url).json()["ranked"] == 24
    more = client.post(url, json={"offset": 24, "limit": 24}).json()
    assert more["ranked"] == 48
    ranks = [it["rank"] for it in first["results"] + more["results"]]
    ids = [it["image_id"] for it in first["results"] + more["results"]]
    assert ranks == list(range(1, 49)) and len(set(ids)) == 48
    direct = Verification(open_collection("birds"))
    ref = direct.results(sid, 0, 48)
    assert ref["image_id"].tolist() == ids
    scores = ref["score"].to_numpy()
    assert (np.diff(scores) <= 1e-7).all()  # still one descending ranking
    top = first["results"][0]["image_id"]
    _mark(client, sid, top, "ana", "relevant")
    _mark(client, sid, top, "ben", "not_relevant")
    _mark(client, sid, ids[1], "ana", "relevant")
    _mark(client, sid, ids[1], "ben", "relevant")
    seen = client.get(f"/verify/api/c/birds/searches/{sid}/results?offset=0&limit=2").json()
    assert seen["results"][0]["marks"] == {"ana": "relevant", "ben": "not_relevant"}
    agreement = client.get(f"/verify/api/c/birds/searches/{sid}/summary").json()["agreement"]
    assert agreement["images_marked_by_several"] == 2 and agreement["agreement"] == 0.5
    mine = client.get(f"/verify/api/c/birds/searches/{sid}/summary?who=ben").json()
    assert mine["efficiency"]["positives"] == 1
    cons = direct.consensus(sid).set_index("image_id")
    assert cons.loc[top, "label"] == "unsure" and cons.loc[ids[1], "label"] == "relevant"


def test_concurrent_marking_loses_nothing(coll) -> None:
    app = make_app()
    client = page_client(app)
    sid = _search(client)
    items = client.post(
        f"/verify/api/c/birds/searches/{sid}/results", json={"offset": 0, "limit": 40}
    ).json()
    ids = [it["image_id"] for it in items["results"]]
    errors: list[str] = []

    def worker(who: str, mark: str) -> None:
        own = page_client(app)
        for i in ids:
            r = _mark(own, sid, i, who, mark)
            if r.status_code != 200:
                errors.append(r.text)

    threads = [
        threading.Thread(target=worker, args=(w, m))
        for w, m in [("ana", "relevant"), ("ben", "not_relevant"), ("cy", "unsure")]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    marks = Verification(open_collection("birds")).marks(sid)
    assert len(marks) == 3 * len(ids) == 120
    assert marks.groupby("who")["mark"].agg(set).to_dict() == {
        "ana": {"relevant"},
        "ben": {"not_relevant"},
        "cy": {"unsure"},
    }


def test_trend_counts_and_intervals(coll) -> None:
    c, _ = coll
    v = Verification(c)
    sid = v.save_search(SearchRequest("red"))
    v.extend(sid, 30, c.index())
    res = v.results(sid, 0, 30)
    for r in res.to_dict("records"):
        v.mark(sid, int(r["image_id"]), "ana", "relevant" if r["rank"] % 3 == 0 else "not_relevant")
    t = v.trend(sid, "month")
    cons = v.consensus(sid)
    undated = cons["date_source"] == "mtime"  # file times are not dates for a trend
    assert t.attrs["undated_inspected"] == undated.sum()
    cons = cons[~undated]
    cons["month"] = cons["date"].str.slice(0, 7)
    for row in t.to_dict("records"):
        sub = cons[cons["month"] == row["group"]]
        assert row["inspected"] == len(sub)
        assert row["positives"] == (sub["label"] == "relevant").sum()
        lo, hi = wilson_interval(row["positives"], row["inspected"])
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((float(lo), float(hi)))
    assert t["inspected"].sum() + t.attrs["undated_inspected"] == 30
    assert t["positives"].sum() + t.attrs["undated_positives"] == 10
    assert t["group"].tolist() == sorted(t["group"])
    region = v.trend(sid, "region")
    assert region["inspected"].sum() == 30 and "unknown" in set(region["group"]) | {"unknown"}
    assert "verified positives" in trend_svg(t, "t") and "no marks yet" in trend_svg(t.head(0))
    with pytest.raises(UnknownNameError, match="trend grouping"):
        v.trend(sid, "weekday")
    with pytest.raises(InputError, match="not one of"):
        v.mark(sid, int(res["image_id"][0]), "ana", "maybe")
    with pytest.raises(InputError, match="user name"):
        v.mark(sid, int(res["image_id"][0]), " ", "relevant")
    with pytest.raises(InputError, match="not among the shown results"):
        v.mark(sid, 10**9, "ana", "relevant")
    with pytest.raises(UnknownNameError, match="unknown search"):
        v.export("nosuchsearch")


def test_cli_export_and_trend_png(coll, tmp_path: Path) -> None:
    c, _ = coll
    runner = CliRunner()
    res = runner.invoke(cli_app, ["search", "birds", "green", "-k", "5", "--save"])
    assert res.exit_code == 0, res.output
    sid = res.stderr.split("saved search ")[1].split()[0]
    v = Verification(c)
    v.extend(sid, 5, c.index())
    for i, r in enumerate(v.results(sid, 0, 5).to_dict("records")):
        v.mark(sid, int(r["image_id"]), "ana", "relevant" if i < 3 else "not_relevant")
    out = tmp_path / "marks.parquet"
    res = runner.invoke(
        cli_app, ["collection", "export", "birds", "--search-id", sid, "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert len(df) == 5 and df["mark"].value_counts().to_dict() == {
        "relevant": 3,
        "not_relevant": 2,
    }
    res = runner.invoke(
        cli_app,
        ["collection", "export", "birds", "--search-id", sid, "--out", str(tmp_path / "m.xlsx")],
    )
    assert res.exit_code == 2 and ".csv or .parquet" in res.output
    png = tmp_path / "trend.png"
    res = runner.invoke(
        cli_app, ["trend", "birds", "--search-id", sid, "--by", "year", "--out", str(png)]
    )
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "5 images inspected" in res.stdout and "3 positives found" in res.stdout
    res = runner.invoke(cli_app, ["trend", "birds", "--search-id", "zzz"])
    assert res.exit_code == 2 and "unknown search" in res.output


def test_http_errors_name_the_problem(coll) -> None:
    client = page_client(make_app())
    r = client.post("/verify/api/c/birds/searches", json={"text": "red", "bbox": "1,2"})
    assert r.status_code == 400 and "W,S,E,N" in r.json()["detail"]
    r = client.get("/verify/api/c/nope/searches")
    assert r.status_code == 404 and "unknown collection" in r.json()["detail"]
    sid = _search(client)
    r = _mark(client, sid, 1, "", "relevant")
    assert r.status_code == 400 and "user name" in r.json()["detail"]
    r = client.put(f"/verify/api/c/birds/searches/{sid}/marks", json={"image_id": "x", "who": "a"})
    assert r.status_code == 422 and "image_id" in r.json()["detail"] and "'x'" in r.json()["detail"]
    # The user name may come from the page's cookie instead of the body.
    first = client.get(f"/verify/api/c/birds/searches/{sid}/results?limit=1").json()["results"][0]
    client.cookies.set("inquire_who", "dee")
    r = client.put(
        f"/verify/api/c/birds/searches/{sid}/marks",
        json={"image_id": first["image_id"], "mark": "unsure"},
    )
    assert r.status_code == 200 and r.json()["who"] == "dee"


def test_router_serves_collections_from_any_folder(tmp_path: Path) -> None:
    from fastapi import FastAPI

    from inquire.web.verify import make_router

    make_photo_folder(tmp_path / "p", n=5)
    create_collection("elsewhere", tmp_path / "p", "toy:colour", root=tmp_path / "cols")
    app = FastAPI()
    app.include_router(make_router(tmp_path / "cols"))
    client = page_client(app)
    assert [c["name"] for c in client.get("/verify/api/collections").json()] == ["elsewhere"]
    assert page_client(make_app()).get("/verify/api/collections").json() == []  # the cache


def test_start_search_ranks_the_first_page_and_never_leaves_a_refused_search(
    coll, monkeypatch
) -> None:
    from inquire.collection.filters import parse_filters
    from inquire.collection.search import search
    from inquire.embed.models import load_encoder

    c, _ = coll
    index, enc = c.index(), load_encoder("toy:colour")
    v = Verification(c)
    try:
        sid = v.start_search(SearchRequest("red"), index, enc, who="ana", first=12)
        assert v.n_ranked(sid) == 12 and v.searches()["created_by"].tolist() == ["ana"]
        ranked = v.results(sid, 0, 12)["image_id"].tolist()
        assert ranked == search(index, SearchRequest("red", k=12), enc)["image_id"].tolist()
        # the same request again: the same id, ranked no further
        assert v.start_search(SearchRequest("red"), index, enc, first=5) == sid
        assert v.n_ranked(sid) == 12
        # refused before saving: an example that is not in the collection
        with pytest.raises(InputError):
            v.start_search(SearchRequest("", (123456789,)), index, enc)
        # refused while ranking: the new search is removed again
        bad = SearchRequest("blue", filters=parse_filters([], "2019-01-01", None, None, []))

        def fail(*a, **kw):
            raise RuntimeError("ranking failed")

        monkeypatch.setattr(Verification, "extend", fail)
        with pytest.raises(RuntimeError):
            v.start_search(bad, index, enc)
        assert v.searches()["search_id"].tolist() == [sid]
    finally:
        v.close()
