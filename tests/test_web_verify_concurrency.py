"""The verification server under concurrent requests: a slow ranking or model load holds up
nobody else's marks, and no database connection is shared between requests.

Slowness is made deterministic: a stand-in blocks on an Event until the test has seen the
other client's request done; timeouts are only limits for a failing test."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inquire.collection import SearchRequest, create_collection, open_collection
from inquire.collection.search import CollectionSearcher, search
from inquire.collection.verify import Verification
from inquire.testing.collection_encoder import make_photo_folder
from inquire.testing.web_client import page_client
from inquire.web.verify import make_app

LIMIT_S = 60  # failure limit only: a passing test never waits for it


class Gate:
    """Blocks the first call made while armed until :meth:`open`; later calls pass."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()

    def wait_here(self) -> None:
        with self._lock:
            first = self.armed and not self.entered.is_set()
            if first:
                self.entered.set()
        if first:
            assert self.released.wait(LIMIT_S), "the test never opened the gate"

    def open(self) -> None:
        self.released.set()


@pytest.fixture
def slow_search(monkeypatch: pytest.MonkeyPatch) -> Gate:
    gate = Gate()
    real = CollectionSearcher.results

    def results(self: CollectionSearcher, *args: Any, **kwargs: Any) -> Any:
        gate.wait_here()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CollectionSearcher, "results", results)
    return gate


@pytest.fixture
def coll(tmp_path: Path) -> str:
    make_photo_folder(tmp_path / "photos", n=60, seed=11)
    c, _ = create_collection("birds", tmp_path / "photos", "toy:colour")
    c.close()
    return "birds"


class Call(threading.Thread):
    """One request in its own thread (its own client), its response kept."""

    def __init__(self, fn: Any) -> None:
        super().__init__(daemon=True)
        self.fn, self.response, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.response = self.fn()
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self) -> Any:
        self.join(LIMIT_S)
        assert not self.is_alive(), "the request did not finish"
        assert self.error is None, self.error
        return self.response


def _api(name: str) -> str:
    return f"/verify/api/c/{name}/searches"


@pytest.mark.parametrize("action", ["more", "learn"])
def test_marks_are_saved_while_another_client_ranks(coll: str, slow_search: Gate, action) -> None:
    app = make_app()
    first, second = page_client(app), page_client(app)
    r = first.post(_api(coll), json={"text": "red", "who": "ana"})
    assert r.status_code == 200, r.text
    sid = r.json()["search_id"]
    page = first.get(f"{_api(coll)}/{sid}/results?limit=24").json()["results"]
    top, other = page[0]["image_id"], page[1]["image_id"]
    assert first.put(
        f"{_api(coll)}/{sid}/marks", json={"image_id": top, "who": "ana", "mark": "relevant"}
    ).is_success

    slow_search.armed = True
    if action == "more":
        body, route = {"offset": 24, "limit": 24}, "results"
    else:
        body, route = {"shown": 24, "who": "ana"}, "learn"
    ranking = Call(lambda: first.post(f"{_api(coll)}/{sid}/{route}", json=body))
    ranking.start()
    assert slow_search.entered.wait(LIMIT_S), "the ranking never started"

    # While the first client's ranking is blocked, the second client's mark is saved.
    mark = Call(
        lambda: second.put(
            f"{_api(coll)}/{sid}/marks", json={"image_id": other, "who": "ben", "mark": "unsure"}
        )
    )
    mark.start()
    saved = mark.result()
    assert saved.status_code == 200, saved.text
    with open_collection(coll) as c, Verification(c) as v:
        marks = v.marks(sid)
        assert ("ben", "unsure") in set(zip(marks["who"], marks["mark"], strict=True))
    slow_search.open()

    done = ranking.result()
    assert done.status_code == 200, done.text
    with open_collection(coll) as c, Verification(c) as v:
        ranks = v.results(sid, 0, 1000)
        assert ranks["rank"].tolist() == list(range(1, len(ranks) + 1))
        assert ranks["image_id"].is_unique
        assert len(ranks) == 48
        assert len(v.marks(sid)) == 2


def test_a_ranking_computed_on_a_stale_state_is_computed_again(
    coll: str, slow_search: Gate
) -> None:
    """Two clients rank one search further at once: the one that finished its top-k first
    writes, the other sees the ranking changed and ranks again; the result is the ranking
    one client alone would have made."""
    app = make_app()
    first, second = page_client(app), page_client(app)
    sid = first.post(_api(coll), json={"text": "red", "who": "ana"}).json()["search_id"]
    slow_search.armed = True
    deep = Call(lambda: first.post(f"{_api(coll)}/{sid}/results", json={"offset": 0, "limit": 40}))
    deep.start()
    assert slow_search.entered.wait(LIMIT_S)
    shallow = Call(
        lambda: second.post(f"{_api(coll)}/{sid}/results", json={"offset": 24, "limit": 6})
    )
    shallow.start()
    assert shallow.result().status_code == 200
    slow_search.open()
    assert deep.result().status_code == 200
    with open_collection(coll) as c, Verification(c) as v:
        got = v.results(sid, 0, 1000)["image_id"].to_numpy()
        want = search(c, SearchRequest("red", k=40))["image_id"].to_numpy()
    np.testing.assert_array_equal(got, want)


def test_a_model_load_holds_up_no_marks_and_no_thumbnails(
    coll: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inquire.embed import models

    with open_collection(coll) as c, Verification(c) as v:
        sid = v.start_search(SearchRequest("red"), c.index(), models.load_encoder("toy:colour"))
        image_id = int(v.results(sid, 0, 1)["image_id"].iloc[0])
    gate = Gate()
    gate.armed = True
    real = models.load_encoder

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        gate.wait_here()
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "load_encoder", slow_load)
    app = make_app()
    first, second = page_client(app), page_client(app)
    loading = Call(lambda: first.post(_api(coll), json={"text": "blue", "who": "ana"}))
    loading.start()
    assert gate.entered.wait(LIMIT_S), "the model load never started"

    mark = Call(
        lambda: second.put(
            f"{_api(coll)}/{sid}/marks",
            json={"image_id": image_id, "who": "ben", "mark": "relevant"},
        )
    )
    thumb = Call(lambda: second.get(f"/verify/api/c/{coll}/images/{image_id}?size=32"))
    listing = Call(lambda: second.get("/verify/api/collections"))
    for call in (mark, thumb, listing):
        call.start()
    assert mark.result().status_code == 200
    assert thumb.result().status_code == 200
    assert listing.result().json()[0]["images"] == 60
    gate.open()
    assert loading.result().status_code == 200


def test_requests_share_no_database_connection(coll: str, monkeypatch) -> None:
    """Every connection a request opens is closed when it ends, the kept index's too."""
    from inquire.collection import store

    opened: list[sqlite3.Connection] = []
    real = store.connect

    def spy(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(store, "connect", spy)
    client = page_client(make_app())
    sid = client.post(_api(coll), json={"text": "red", "who": "ana"}).json()["search_id"]
    for offset in (24, 30):  # ranks further with the index kept from the first request
        r = client.post(f"{_api(coll)}/{sid}/results", json={"offset": offset, "limit": 6})
        assert r.status_code == 200, r.text
    assert len(opened) >= 4  # one per request, one that loaded the index
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
