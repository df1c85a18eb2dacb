"""RayServing (the actors `--ray` serves indexes with) when a server loads an index again:
a search still running on the replaced index keeps its actors until that index is gone.

Checked against a stand-in backend (no cluster): what matters here is when ``close`` is
called, not what the actors do."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from inquire.collection.scale import RayServing
from inquire.index import ray_serve


class FakeBackend:
    started: ClassVar[list[FakeBackend]] = []

    def __init__(self, store_root, folder, man) -> None:
        self.actors = [object() for _ in man.partitions]
        self.closed = False
        FakeBackend.started.append(self)

    def search(self, *args, **kwargs):
        assert not self.closed, "searched after its actors were stopped"
        return len(self.actors)

    def close(self) -> None:
        self.closed = True
        self.actors = []


@dataclass
class Part:
    number: int
    lo: int
    hi: int


@dataclass
class Man:
    partitions: list[Part]
    shards: list[str]


@dataclass
class Store:
    root: Path


@pytest.fixture
def serving(monkeypatch):
    monkeypatch.setattr(ray_serve, "RayBackend", FakeBackend)
    FakeBackend.started = []
    s = RayServing()
    yield s
    s.close()


V1 = Man([Part(0, 0, 100)], ["a"])
V2 = Man([Part(0, 0, 100), Part(1, 100, 150)], ["a", "b"])


def test_the_same_index_shares_its_actors(serving, tmp_path):
    a = serving(Store(tmp_path), tmp_path / "idx", V1)
    b = serving(Store(tmp_path), tmp_path / "idx", V1)
    assert a.backend is b.backend and len(FakeBackend.started) == 1
    a.close()
    assert b.search() == 1


def test_a_search_on_the_replaced_index_is_not_cut_off(serving, tmp_path):
    old = serving(Store(tmp_path), tmp_path / "idx", V1)  # a search in flight holds this
    new = serving(Store(tmp_path), tmp_path / "idx", V2)  # an update: loaded again
    assert new.backend is not old.backend
    assert old.search() == 1  # before: the old actors were stopped here (failed search)
    assert serving.actors() == 3
    del old
    gc.collect()
    serving(Store(tmp_path), tmp_path / "idx", V2).close()  # the next open settles
    assert FakeBackend.started[0].closed and not new.backend.closed
    assert serving.actors() == 2


def test_a_replaced_index_no_one_holds_is_stopped_at_once(serving, tmp_path):
    serving(Store(tmp_path), tmp_path / "idx", V1).close()
    serving(Store(tmp_path), tmp_path / "idx", V2)
    assert FakeBackend.started[0].closed


def test_close_stops_everything_also_what_is_still_borrowed(serving, tmp_path):
    old = serving(Store(tmp_path), tmp_path / "idx", V1)
    new = serving(Store(tmp_path), tmp_path / "idx", V2)
    serving.close()
    assert old.backend.closed and new.backend.closed and serving.actors() == 0
    old.close()
    old.close()  # twice: nothing more
    assert serving.actors() == 0
