"""The score cache closes its connection on the error path (inquire.rerank.cache)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import inquire.rerank.cache as cache_mod
from inquire.errors import InputError


def _recording_connect(monkeypatch) -> list[sqlite3.Connection]:
    made: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def connect(*a: Any, **kw: Any) -> sqlite3.Connection:
        conn = real(*a, **kw)
        made.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
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
