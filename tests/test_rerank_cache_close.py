"""Connections opened before an error are closed on the error path."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import inquire.rerank.cache as cache_mod
from inquire.collection import create_collection
from inquire.collection.store import Collection
from inquire.errors import InputError
from inquire.testing.collection_encoder import make_photo_folder
from inquire.testing.web_client import page_client


def _recording_connect(monkeypatch) -> list[sqlite3.Connection]:
    made: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def connect(*a: Any, **kw: Any) -> sqlite3.Connection:
        conn = real(*a, **kw)
        made.append(conn)
        return conn

    monkeypatch.setattr(cache_mod.sqlite3, "connect", connect)
    return made


def _is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_score_cache_closes_its_connection_when_setup_fails(tmp_path: Path, monkeypatch) -> None:
    made = _recording_connect(monkeypatch)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="not a usable SQLite"):
        cache_mod.ScoreCache(bad)
    assert len(made) == 1 and _is_closed(made[0])
    # a good cache keeps its connection open until closed
    with cache_mod.ScoreCache(tmp_path / "good.sqlite"):
        assert not _is_closed(made[-1])
    assert _is_closed(made[-1])


def test_collections_list_closes_a_collection_that_fails(tmp_path: Path, monkeypatch) -> None:
    from inquire.web.verify import make_app

    make_photo_folder(tmp_path / "p", n=6, seed=7)
    create_collection("wl", tmp_path / "p", "toy:colour")
    closed: list[str] = []
    real_close = Collection.close

    def spy_close(self: Collection) -> None:
        closed.append(self.name)
        real_close(self)

    def broken_counts(self: Collection) -> dict[str, int]:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Collection, "close", spy_close)
    client = page_client(make_app(), raise_server_exceptions=False)
    assert client.get("/verify/api/collections").json()[0]["name"] == "wl"
    assert closed == ["wl"]
    monkeypatch.setattr(Collection, "counts", broken_counts)
    closed.clear()
    assert client.get("/verify/api/collections").status_code == 500
    assert closed == ["wl"]
