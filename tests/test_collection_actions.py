"""The one-call actions of a collection (collection/actions.py), called directly, and the
one CSV writer of result tables: formulas escaped on the command line as in downloads."""

from __future__ import annotations

import io
import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inquire.cli import app as cli_app
from inquire.collection import SearchRequest, create_collection, open_collection, search
from inquire.collection.actions import (
    collections_overview,
    copy_results,
    export_marks,
    feedback_search,
    search_collection,
    trend_report,
)
from inquire.collection.verify import Verification, results_csv
from inquire.errors import InputError
from inquire.testing.collection_encoder import make_inat_tree, make_photo_folder

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+2", "-3", "@SUM(A1)"]


@pytest.fixture
def birds(tmp_path: Path):
    make_photo_folder(tmp_path / "photos", n=40, seed=3)
    c, _ = create_collection("acts", tmp_path / "photos", "toy:colour")
    c.close()
    return "acts"


def _saved_and_marked(name: str, n_marks: int = 8) -> str:
    """A saved search of ``name`` for "red" with its first results marked by colour score."""
    with closing(open_collection(name)) as c, closing(Verification(c)) as v:
        sid = v.save_search(SearchRequest("red"))
        v.extend(sid, 20, c.index())
        for i, r in enumerate(v.results(sid, 0, n_marks).itertuples()):
            v.mark(sid, int(r.image_id), "ana", "relevant" if i % 3 else "not_relevant")
    return sid


def test_search_collection_equals_search_and_saves(birds) -> None:
    req = SearchRequest("red", k=6)
    out = search_collection(birds, req)
    with closing(open_collection(birds)) as c:
        want = search(c, req)
        root = c.images_root
    pd.testing.assert_frame_equal(out.results, want)
    assert out.search_id is None and out.round is None and out.images_root == root
    saved = search_collection(birds, req, save=True, who="ana")
    pd.testing.assert_frame_equal(saved.results, want)
    with closing(open_collection(birds)) as c, closing(Verification(c)) as v:
        assert v.request(str(saved.search_id)).text == "red"
        assert v.searches()["created_by"].tolist() == ["ana"]


def test_feedback_search_without_and_with_save(birds) -> None:
    sid = _saved_and_marked(birds)
    out = feedback_search(birds, sid, 5)
    with closing(open_collection(birds)) as c, closing(Verification(c)) as v:
        want = v.feedback(sid, c.index(), 5).results
        assert v.rounds(sid).empty  # nothing saved
    pd.testing.assert_frame_equal(out.results, want)
    assert out.round is None and out.results["rank"].tolist() == [1, 2, 3, 4, 5]
    saved = feedback_search(birds, sid, 4, model="logistic", save=True, who="ana")
    info = saved.round
    assert info is not None and info["round"] == 1 and info["model"] == "logistic"
    assert (info["n_relevant"], info["n_not_relevant"]) == (5, 3)
    with closing(open_collection(birds)) as c, closing(Verification(c)) as v:
        stored = v.results(sid, info["after_rank"], 4)
        assert v.rounds(sid)["created_by"].tolist() == ["ana"]
    # the table is the round's stored results, ranked as saved
    assert saved.results["image_id"].tolist() == stored["image_id"].tolist()
    assert saved.results["rank"].tolist() == stored["rank"].tolist()
    assert saved.results["rank"].iloc[0] == info["after_rank"] + 1
    np.testing.assert_allclose(saved.results["score"], stored["score"], rtol=1e-6)
    with pytest.raises(InputError, match="k must be at least 1"):
        feedback_search(birds, sid, 0)


def test_copy_results_and_export_marks(birds, tmp_path: Path) -> None:
    out = search_collection(birds, SearchRequest("blue", k=3))
    csv = copy_results(out.results, tmp_path / "o")
    assert csv == tmp_path / "o" / "results.csv"
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    first = out.results.iloc[0]
    assert names[0] == f"0001_{first['image_id']}{Path(first['path']).suffix}" and len(names) == 4
    assert pd.read_csv(csv)["image_id"].tolist() == out.results["image_id"].tolist()

    sid = _saved_and_marked(birds)
    dest = tmp_path / "marks.csv"
    assert export_marks(birds, sid, dest) == 8
    assert export_marks(birds, sid, dest, only_relevant=True, overwrite=True) == 5
    assert set(pd.read_csv(dest)["mark"]) == {"relevant"}
    with pytest.raises(InputError, match="exists"):
        export_marks(birds, sid, dest)
    assert export_marks(birds, sid, tmp_path / "m.parquet", who="bo") == 0


def test_trend_report_and_overview(birds) -> None:
    sid = _saved_and_marked(birds)
    rep = trend_report(birds, sid, "year")
    with closing(open_collection(birds)) as c, closing(Verification(c)) as v:
        pd.testing.assert_frame_equal(rep.table, v.trend(sid, "year"))
        assert rep.efficiency == v.efficiency(sid)
        n = c.counts()
    assert rep.request.text == "red"
    table = collections_overview()
    assert table["name"].tolist() == ["acts"] and table["model_id"].tolist() == ["toy:colour"]
    assert table["ok"].tolist() == [n["ok"]] == [40]


def test_results_csv_escapes_formulas_and_keeps_numbers() -> None:
    df = pd.DataFrame({"path": [*FORMULAS, "ok"], "lon": [-1.5, 2.0, -3.0, 4.0, 5.0]})
    text = results_csv(df, eol="\n")
    back = pd.read_csv(io.StringIO(text))
    assert back["path"].tolist() == ["'" + f for f in FORMULAS] + ["ok"]
    assert back["lon"].tolist() == [-1.5, 2.0, -3.0, 4.0, 5.0]
    assert "\r\n" in results_csv(df) and "\r" not in text


def test_cli_csv_and_copy_escape_formulas(tmp_path: Path) -> None:
    """Taxon names (from train.json) a spreadsheet would run come out escaped on stdout
    (--csv) and in --copy-to's results.csv, as the web page's downloads do."""
    meta = make_inat_tree(tmp_path / "inat", per_taxon=2, seed=4)
    data = json.loads(meta.read_text(encoding="utf-8"))
    for cat, name in zip(data["categories"], FORMULAS, strict=False):
        cat["name"] = name
    meta.write_text(json.dumps(data), encoding="utf-8")
    create_collection("f", tmp_path / "inat", "toy:colour", meta)[0].close()
    runner = CliRunner()
    res = runner.invoke(cli_app, ["search", "f", "red", "-k", "10", "--csv"])
    assert res.exit_code == 0, res.output
    got = pd.read_csv(io.StringIO(res.stdout))
    assert set(FORMULAS) & set(got["taxon"]) == set()
    assert len({"'" + f for f in FORMULAS} & set(got["taxon"])) == 4
    res = runner.invoke(
        cli_app, ["search", "f", "red", "-k", "10", "--copy-to", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    copied = pd.read_csv(tmp_path / "o" / "results.csv")
    assert copied["taxon"].tolist() == got["taxon"].tolist()
