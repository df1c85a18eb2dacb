"""CLI commands on saved searches close the collection and verification databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from inquire.cli import app as cli_app
from inquire.collection import SearchRequest, create_collection
from inquire.collection.store import Collection
from inquire.collection.verify import Verification
from inquire.testing.collection_encoder import make_photo_folder


def test_trend_and_export_close_what_they_open(tmp_path: Path, monkeypatch) -> None:
    make_photo_folder(tmp_path / "p", n=12, seed=5)
    coll, _ = create_collection("tc", tmp_path / "p", "toy:colour")
    v = Verification(coll)
    sid = v.save_search(SearchRequest("red", k=5))
    v.extend(sid, 5, coll.index())
    for i, r in enumerate(v.results(sid, 0, 5).to_dict("records")):
        v.mark(sid, int(r["image_id"]), "ana", "relevant" if i < 2 else "not_relevant")
    v.close()
    coll.close()

    opened: list[Any] = []
    closed: list[Any] = []
    v_init, v_close, c_close = Verification.__init__, Verification.close, Collection.close

    def spy_init(self: Verification, c: Collection) -> None:
        v_init(self, c)
        opened.append(self)
        opened.append(c)

    def spy_v_close(self: Verification) -> None:
        closed.append(self)
        v_close(self)

    def spy_c_close(self: Collection) -> None:
        closed.append(self)
        c_close(self)

    monkeypatch.setattr(Verification, "__init__", spy_init)
    monkeypatch.setattr(Verification, "close", spy_v_close)
    monkeypatch.setattr(Collection, "close", spy_c_close)
    runner = CliRunner()
    for args in (
        ["trend", "tc", "--search-id", sid, "--by", "year"],
        ["collection", "export", "tc", "--search-id", sid, "--out", str(tmp_path / "m.csv")],
    ):
        opened.clear()
        closed.clear()
        res = runner.invoke(cli_app, args)
        assert res.exit_code == 0, res.output
        assert len(opened) == 2 and all(any(o is c for c in closed) for o in opened)
    # an unknown search id still closes both
    opened.clear()
    closed.clear()
    res = runner.invoke(cli_app, ["trend", "tc", "--search-id", "zzz"])
    assert res.exit_code == 2 and "unknown search" in res.output
    assert len(opened) == 2 and all(any(o is c for c in closed) for o in opened)


def test_search_closes_its_collection(tmp_path: Path, monkeypatch) -> None:
    make_photo_folder(tmp_path / "p", n=12, seed=5)
    coll, _ = create_collection("sc", tmp_path / "p", "toy:colour")
    coll.close()
    closed: list[Any] = []
    c_close = Collection.close

    def spy_c_close(self: Collection) -> None:
        closed.append(self)
        c_close(self)

    monkeypatch.setattr(Collection, "close", spy_c_close)
    for extra in ([], ["--json"], ["--taxon", "NoSuchTaxon"]):
        closed.clear()
        res = CliRunner().invoke(cli_app, ["search", "sc", "red", "-k", "3", *extra])
        assert len(closed) == 1, (extra, res.output)  # on success and on a bad filter alike
