"""Schema upgrades of collection.db and verify.db (inquire.cache.migrate, PRAGMA
user_version): old files are upgraded once, a read-only one is read as it is and never
changed, a newer one is refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from inquire.cache import connect, migrate
from inquire.collection import SearchRequest, create_collection, open_collection
from inquire.collection import store as store_module
from inquire.collection.verify import Verification
from inquire.errors import InputError
from inquire.testing.collection_encoder import make_photo_folder


def _columns(db: Path, table: str) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _version(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


@pytest.fixture
def old_collection(tmp_path: Path) -> tuple[str, str, int]:
    """A collection with a saved, marked search whose two databases look as written before
    the later columns (and before schema versions) existed."""
    make_photo_folder(tmp_path / "photos", n=8, seed=3)
    coll, _ = create_collection("old", tmp_path / "photos", "toy:colour")
    from inquire.embed.models import load_encoder

    with coll, Verification(coll) as v:
        encoder = load_encoder("toy:colour")
        sid = v.start_search(SearchRequest("red"), coll.index(), encoder, first=5)
        image_id = int(v.results(sid, 0, 1)["image_id"].iloc[0])
        v.mark(sid, image_id, "ana", "relevant")
    for db, table, cols in (
        (coll.db_path, "images", ("coord_uncertainty_m", "license", "rights_holder")),
        (coll.folder / "verify.db", "results", ("round",)),
    ):
        assert _version(db) == 1
        with sqlite3.connect(db) as conn:
            for col in cols:
                conn.execute(f'ALTER TABLE {table} DROP COLUMN "{col}"')
            conn.execute("PRAGMA user_version = 0")
    return "old", sid, image_id


def test_a_read_only_old_database_is_read_as_it_is_and_never_migrated(
    old_collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, sid, image_id = old_collection
    folder = open_collection(name).folder
    monkeypatch.setattr(store_module, "_may_write", lambda path: False)  # an unwritable folder
    with open_collection(name) as coll, Verification(coll) as v:
        assert coll.conn.execute("PRAGMA query_only").fetchone()[0] == 1
        assert coll.images()["license"].isna().all()
        page = v.results(sid, 0, 10)
        assert page["round"].tolist() == [0] * 5 and int(page["image_id"].iloc[0]) == image_id
        assert v.marks(sid)["mark"].tolist() == ["relevant"]
        assert v.efficiency(sid)["positives"] == 1
    assert _version(folder / "collection.db") == 0 and _version(folder / "verify.db") == 0
    assert "license" not in _columns(folder / "collection.db", "images")
    assert "round" not in _columns(folder / "verify.db", "results")


def test_an_old_database_is_upgraded_once_and_keeps_its_rows(old_collection) -> None:
    name, sid, image_id = old_collection
    with open_collection(name) as coll, Verification(coll) as v:
        assert int(v.results(sid, 0, 1)["image_id"].iloc[0]) == image_id
        assert v.n_ranked(sid) == 5 and len(v.marks(sid)) == 1
        folder = coll.folder
    assert _version(folder / "collection.db") == 1 and _version(folder / "verify.db") == 1
    assert {"license", "rights_holder"} <= _columns(folder / "collection.db", "images")
    assert "round" in _columns(folder / "verify.db", "results")


def test_migrate_applies_each_step_once_even_when_two_open_it_at_once(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    applied: list[int] = []

    def step(conn: sqlite3.Connection) -> None:
        applied.append(1)
        conn.execute("CREATE TABLE t (a INTEGER)")  # fails if run twice

    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        conn = connect(db)
        try:
            barrier.wait(30)
            assert migrate(conn, [step]) == 1
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and applied == [1] and _version(db) == 1


def test_a_database_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    conn = connect(db)
    try:
        conn.execute("PRAGMA user_version = 7")
        with pytest.raises(InputError, match="version 7, newer than this inquire's 1"):
            migrate(conn, [lambda c: None], "test database")
    finally:
        conn.close()
