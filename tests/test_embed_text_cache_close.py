"""The text-embedding cache (inquire.embed.text_cache)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest


class _FakeEncoder:
    """A deterministic text encoder with a pinned revision (enough for the text cache)."""

    model_id = "fake:text"
    revision = "r1"
    precision = "fp32"
    dim = 4

    def encode_text(self, texts: list[str]) -> np.ndarray:
        out = np.array([[len(t), 1.0, 0.0, 0.0] for t in texts], np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_images(self, images: list[object]) -> np.ndarray:
        raise NotImplementedError


def test_text_cache_closes_its_sqlite_connection(tmp_path: Path, monkeypatch) -> None:
    from inquire.embed import text_cache

    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        con = real_connect(*args, **kwargs)
        opened.append(con)
        return con

    monkeypatch.setattr(sqlite3, "connect", connect)
    db = tmp_path / "t.sqlite"
    first = text_cache.text_embeddings(_FakeEncoder(), ["a", "bb"], path=db)
    again = text_cache.text_embeddings(_FakeEncoder(), ["bb"], path=db)
    np.testing.assert_array_equal(again[0], first[1])
    assert len(opened) == 2
    for con in opened:
        with pytest.raises(sqlite3.ProgrammingError):  # closed, not merely committed
            con.execute("SELECT 1")
