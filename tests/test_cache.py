"""inquire.cache: one SQLite set-up and one key convention, used by the text-embedding, score
and top-k caches (changing any key part misses in each of them)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inquire.cache import OutputKey, canonical_precision, connect, transaction
from inquire.errors import InputError

BASE = OutputKey("m", "rev1", "fp32", "inquire-2024/p1")
CHANGED = [
    replace(BASE, model="m2"),
    replace(BASE, revision="rev2"),
    replace(BASE, precision="bf16"),
    replace(BASE, protocol="inquire-sum/p1"),
]


def test_connect_sets_up_wal_busy_timeout_and_autocommit(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "c.sqlite"
    conn = connect(path, timeout_s=2.5)
    try:
        assert path.is_file()  # parent folders created
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.isolation_level is None
        conn.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(RuntimeError), transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            raise RuntimeError("rolled back")
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
        # usable from another thread (web requests, worker threads)
        got: list[int] = []
        worker = threading.Thread(
            target=lambda: got.append(conn.execute("SELECT x FROM t").fetchone()[0])
        )
        worker.start()
        worker.join()
        assert got == [2]
    finally:
        conn.close()
    # committed: another connection sees it
    with contextlib.closing(connect(path, row_factory=sqlite3.Row)) as other:
        assert dict(other.execute("SELECT x FROM t").fetchone()) == {"x": 2}


def test_connect_refuses_a_file_that_is_not_a_database(tmp_path: Path, monkeypatch) -> None:
    made: list[sqlite3.Connection] = []
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not sqlite at all " * 100)
    with pytest.raises(InputError, match=r"my cache '.*bad\.sqlite' is not a usable SQLite"):
        connect(bad, what="my cache")
    assert len(made) == 1
    with pytest.raises(sqlite3.ProgrammingError):  # closed, not left open
        made[0].execute("SELECT 1")


def test_precision_spellings_are_one_name() -> None:
    assert canonical_precision("float16") == canonical_precision("FP16") == "fp16"
    assert canonical_precision("torch.bfloat16") == "bf16"
    assert canonical_precision("") == canonical_precision(None) == "fp32"
    assert canonical_precision("int8") == "int8"
    assert OutputKey("m", "r", "float32") == OutputKey("m", "r")


def test_key_of_a_model_reads_its_attributes() -> None:
    class Enc:
        model_id, revision, precision = "open_clip:x", "abc", "bfloat16"

    class Scorer:
        reranker_id, revision = "api:gpt", "host/v1"

    assert OutputKey.of(Enc()).values == ("open_clip:x", "abc", "bf16", "")
    assert OutputKey.of(Scorer(), "p").values == ("api:gpt", "host/v1", "fp32", "p")
    assert OutputKey.of(Scorer()).pinned and not OutputKey("m", "").pinned
    with pytest.raises(InputError, match="model_id"):
        OutputKey.of(object())


@pytest.mark.parametrize("other", CHANGED, ids=["model", "revision", "precision", "protocol"])
def test_every_key_part_changes_the_digest(other: OutputKey) -> None:
    assert BASE.digest() == replace(BASE).digest()
    assert other.digest() != BASE.digest()
    assert BASE.digest({"store": 1}) != BASE.digest({"store": 2})


@pytest.mark.parametrize("other", CHANGED, ids=["model", "revision", "precision", "protocol"])
def test_every_key_part_misses_the_score_cache(tmp_path: Path, other: OutputKey) -> None:
    from inquire.rerank.cache import ScoreCache

    with ScoreCache(tmp_path / "s.sqlite") as cache:
        cache.put(BASE, "q", {1: 0.5})
        assert cache.get(BASE, "q", [1]) == {"1": 0.5}
        assert cache.get(other, "q", [1]) == {}


@pytest.mark.parametrize("other", CHANGED, ids=["model", "revision", "precision", "protocol"])
def test_every_key_part_misses_the_topk_cache(tmp_path: Path, other: OutputKey) -> None:
    from inquire.eval.fullrank import TopKCache

    extra = {"store": {"path": "/x", "count": 3}, "searcher": {"kind": "exact"}}
    first = TopKCache(BASE, extra, root=tmp_path)
    first.put({"q": (np.array([3, 1]), np.array([0.9, 0.5]))}, k_max=2)
    hit = TopKCache(BASE, extra, root=tmp_path).get(["q"], 2, allow_larger=True)
    np.testing.assert_array_equal(hit["q"][0], [3, 1])
    assert TopKCache(other, extra, root=tmp_path).get(["q"], 2, allow_larger=True) == {}
    moved = {**extra, "store": {"path": "/y", "count": 3}}
    assert TopKCache(BASE, moved, root=tmp_path).get(["q"], 2, allow_larger=True) == {}


class _Encoder:
    model_id, dim = "fake", 3

    def __init__(self, revision: str, precision: str | None) -> None:
        self.revision = revision
        if precision is not None:
            self.precision = precision
        self.calls: list[list[str]] = []

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.array([[len(t), 1.0, 0.0] for t in texts], np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_images(self, images: list[object]) -> np.ndarray:
        raise NotImplementedError


def test_text_cache_misses_on_revision_and_precision_and_skips_unpinned(tmp_path: Path) -> None:
    from inquire.embed.text_cache import text_embeddings

    db = tmp_path / "t.sqlite"
    base = _Encoder("r1", None)  # no precision attribute: counts as fp32
    text_embeddings(base, ["a"], path=db)
    same = _Encoder("r1", "float32")
    text_embeddings(same, ["a"], path=db)
    assert same.calls == []  # the same key: read back
    for enc in (_Encoder("r2", "fp32"), _Encoder("r1", "bf16")):
        text_embeddings(enc, ["a"], path=db)
        assert enc.calls == [["a"]]
    unpinned = _Encoder("", "fp32")
    text_embeddings(unpinned, ["a"], path=tmp_path / "u.sqlite")
    text_embeddings(unpinned, ["a"], path=tmp_path / "u.sqlite")
    assert unpinned.calls == [["a"], ["a"]] and not (tmp_path / "u.sqlite").exists()


def test_many_connections_opening_a_new_file_at_once_all_get_wal(tmp_path):
    # Switching a new file to WAL from several connections at once: SQLite answers "database
    # is locked" at once to some of them (its busy handler does not wait on that lock
    # upgrade); connect must wait its timeout instead of calling the file unusable.
    import sqlite3
    import threading

    from inquire.cache import connect

    for round_ in range(40):
        path = tmp_path / f"new{round_}.db"
        n = 4
        barrier = threading.Barrier(n)
        errors: list[BaseException] = []
        modes: list[str] = []

        def run(path=path, barrier=barrier, errors=errors, modes=modes) -> None:
            try:
                barrier.wait(30)
                conn = connect(path, timeout_s=30)
                try:
                    modes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
                finally:
                    conn.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert modes == ["wal"] * n
        check = sqlite3.connect(path)
        try:
            assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            check.close()
