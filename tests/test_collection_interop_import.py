"""Marks of an INQUIRE-Search export loaded onto a collection of the same photos
(collection/interop/marks_import.py)."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inquire.cli import app as cli_app
from inquire.collection import SearchRequest, open_collection
from inquire.collection.interop.exports import export_search
from inquire.collection.interop.marks_import import import_marks
from inquire.collection.verify import Verification
from inquire.errors import InputError, UnknownNameError
from inquire.testing.interop_collection import VerifiedSearch, make_verified_search


@pytest.fixture
def verified(tmp_path: Path) -> VerifiedSearch:
    return make_verified_search(tmp_path)


def _marks(name: str, sid: str, who: str) -> dict[int, str]:
    with closing(open_collection(name)) as c, closing(Verification(c)) as v:
        m = v.marks(sid, who)
    return dict(zip(m["image_id"].astype(int), m["mark"], strict=True))


def test_round_trip_through_inquire_search_format(verified: VerifiedSearch, tmp_path: Path) -> None:
    out = tmp_path / "search_results.csv"
    export_search(verified.name, verified.search_id, out, "inquire-search")
    sent = pd.read_csv(out, dtype=str, keep_default_na=False)
    res = CliRunner().invoke(
        cli_app,
        [
            "collection",
            "import-marks",
            verified.name,
            str(out),
            "--who",
            "Zoë",
            "--query",
            "a red bird",
        ],
    )
    assert res.exit_code == 0, res.output
    local = sent["photo_id"].str.startswith("local:")
    n_inat = int((~local).sum())
    assert f"{n_inat} of 55 rows marked by Zoë" in res.output
    assert f"left out: {int(local.sum())} without an iNaturalist photo id" in res.output
    with closing(open_collection(verified.name)) as c, closing(Verification(c)) as v:
        searches = v.searches()
        sid = searches.loc[searches["created_by"] == "Zoë", "search_id"].item()
        assert v.request(sid).text == "a red bird"
        ranked = v.results(sid, 0, 1000)
        # the file's iNaturalist photos, in the file's order, are the first ranks
        want_ids = [int(p) for p in sent.loc[~local, "photo_id"]]
        assert ranked["image_id"].tolist() == want_ids
        assert ranked["rank"].tolist() == list(range(1, n_inat + 1))
        # scored by this collection's model, as a search for the text scores them
        from inquire.collection import search

        df = search(c, SearchRequest("a red bird", k=1000))
        by_id = dict(zip(df["image_id"], df["score"], strict=True))
        np.testing.assert_allclose(
            ranked["score"], [by_id[i] for i in want_ids], rtol=1e-5, atol=1e-6
        )
        # ranking further goes on with the collection's own search, without repeats
        n = v.extend(sid, n_inat + 10, c.index())
        more = v.results(sid, 0, n)["image_id"].tolist()
        assert n == n_inat + 10 and len(set(more)) == n
    marks = _marks(verified.name, sid, "Zoë")
    assert marks == {
        int(p): "relevant" if m == "1" else "not_relevant"
        for p, m in zip(sent.loc[~local, "photo_id"], sent.loc[~local, "marked"], strict=True)
    }
    # and the search exported again gives the same marks for those photos
    again = tmp_path / "again.csv"
    export_search(verified.name, sid, again, "inquire-search", overwrite=True)
    back = pd.read_csv(again, dtype=str, keep_default_na=False)
    assert back["photo_id"].tolist() == sent.loc[~local, "photo_id"].tolist()
    assert back["marked"].tolist() == sent.loc[~local, "marked"].tolist()


def test_inquire_search_style_file_onto_an_existing_search(
    verified: VerifiedSearch, tmp_path: Path
) -> None:
    data = json.loads(verified.train_json.read_text(encoding="utf-8"))
    inat = {img["id"] for img in data["images"]}
    with closing(open_collection(verified.name)) as c, closing(Verification(c)) as v:
        sid = v.save_search(SearchRequest("green"))
        v.extend(sid, 10, c.index())
        ranked = [i for i in v.results(sid, 0, 10)["image_id"] if i in inat]
    a, b, d = ranked[:3]
    unranked = min(inat - set(ranked))
    f = tmp_path / "from_inquire_search.csv"
    # as INQUIRE-Search's web app writes it: image_url, not inat_url; TRUE/FALSE/yes/no too
    lines = [
        "photo_id,species,marked,image_url,latitude,longitude,month",
        f"{a},Cardinalis cardinalis,TRUE,https://x/{a},,,",
        f"{b},x,0,,,,",
        f"{b},x,1,,,,",  # repeated: the first row counts
        "999999999,y,1,,,,",  # not in the collection
        "train/abc.jpg,z,1,,,,",  # not an iNaturalist id
        f'{d},"a, b",yes,,,,',
        f"{unranked},x,no,,,,",  # in the collection, not ranked by this search
    ]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = import_marks(verified.name, f, "eve", search_id=sid)
    assert _marks(verified.name, sid, "eve") == {a: "relevant", b: "not_relevant", d: "relevant"}
    assert (res.rows, res.not_inat, res.not_in_collection, res.duplicates) == (7, 1, 1, 1)
    assert (res.relevant, res.not_relevant, res.not_ranked, res.created) == (2, 1, 1, False)


def test_bad_files_and_arguments_change_nothing(verified: VerifiedSearch, tmp_path: Path) -> None:
    name = verified.name
    good = tmp_path / "good.csv"
    good.write_text(f"photo_id,marked\n{verified.images[1]},1\n", encoding="utf-8")
    cases = [
        (tmp_path / "missing.csv", {"query": "q"}, "does not exist"),
        (good, {}, "exactly one of"),
        (good, {"query": "q", "search_id": verified.search_id}, "exactly one of"),
        (good, {"query": "  "}, "--query is empty"),
    ]
    (tmp_path / "nocol.csv").write_text("photo_id,species\n1,a\n", encoding="utf-8")
    cases.append((tmp_path / "nocol.csv", {"query": "q"}, "no marked column"))
    (tmp_path / "bad.csv").write_text("photo_id,marked\n1,1\n2,maybe\n", encoding="utf-8")
    cases.append((tmp_path / "bad.csv", {"query": "q"}, "data row 2: marked is 'maybe'"))
    (tmp_path / "latin1.csv").write_bytes("photo_id,marked,species\n1,1,Zo\xeb\n".encode("latin-1"))
    cases.append((tmp_path / "latin1.csv", {"query": "q"}, "not UTF-8"))
    cases.append((good, {"query": "red"}, "already has a saved search"))
    (tmp_path / "none.csv").write_text("photo_id,marked\n999999999,1\nlocal:3,0\n")
    cases.append((tmp_path / "none.csv", {"query": "q"}, "none of the 2 rows"))
    for file, kw, msg in cases:
        with pytest.raises(InputError, match=msg):
            import_marks(name, file, "eve", **kw)
    with pytest.raises(InputError, match="user name"):
        import_marks(name, good, "", query="q")
    with pytest.raises(UnknownNameError):
        import_marks(name, good, "eve", search_id="nosuch")
    with closing(open_collection(name)) as c, closing(Verification(c)) as v:
        assert v.searches()["search_id"].tolist() == [verified.search_id]
        assert "eve" not in set(v.marks(verified.search_id)["who"])
    res = CliRunner().invoke(
        cli_app,
        [
            "collection",
            "import-marks",
            name,
            str(tmp_path / "bad.csv"),
            "--who",
            "e",
            "--query",
            "q",
        ],
    )
    assert res.exit_code == 2 and "maybe" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("sep", [";", "\t"])
def test_semicolon_and_tab_separated_files(
    verified: VerifiedSearch, tmp_path: Path, sep: str
) -> None:
    """A spreadsheet saved where the decimal mark is a comma writes ``;`` (as one of
    INQUIRE-Search's own case-study files is): read by its header line."""
    data = json.loads(verified.train_json.read_text(encoding="utf-8"))
    inat = {img["id"] for img in data["images"]}
    a, b = [verified.images[r] for r in sorted(verified.images) if verified.images[r] in inat][:2]
    f = tmp_path / "semi.csv"
    rows = [["photo_id", "species", "marked", "latitude"], [a, "x", 1, "42,5"], [b, "y", 0, ""]]
    f.write_text("\r\n".join(sep.join(map(str, r)) for r in rows) + "\r\n", encoding="utf-8")
    res = import_marks(verified.name, f, "eve", search_id=verified.search_id)
    assert _marks(verified.name, verified.search_id, "eve") == {a: "relevant", b: "not_relevant"}
    assert (res.marked, res.relevant, res.rows) == (2, 1, 2)


def test_rows_with_more_fields_than_the_header_are_refused_not_shifted(
    verified: VerifiedSearch, tmp_path: Path
) -> None:
    """Left to itself pandas reads a file whose data rows have one field more than its header
    with the first field as a row label, so ``1006,1,0`` would load as photo 1 marked 0. Such
    a file is refused; a header whose first column has no name (as pandas' ``to_csv`` writes
    it: one of INQUIRE-Search's case-study files starts ``,Unnamed: 0,photo_id``), a byte
    order mark and CRLF line ends read as they should."""
    data = json.loads(verified.train_json.read_text(encoding="utf-8"))
    inat = {img["id"] for img in data["images"]}
    a, b = [verified.images[r] for r in sorted(verified.images) if verified.images[r] in inat][:2]
    shifted = tmp_path / "shifted.csv"
    shifted.write_text(f"photo_id,marked\n{a},1,0\n{b},0,1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"data row 1 has more fields than its header.*photo_id"):
        import_marks(verified.name, shifted, "eve", search_id=verified.search_id)
    assert _marks(verified.name, verified.search_id, "eve") == {}
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_bytes(
        f"\ufeff,Unnamed: 0,photo_id,species,marked\r\n0,7,{a},x,1\r\n1,8,{b},y,0\r\n".encode()
    )
    res = import_marks(verified.name, unnamed, "eve", search_id=verified.search_id)
    assert _marks(verified.name, verified.search_id, "eve") == {a: "relevant", b: "not_relevant"}
    assert (res.rows, res.relevant, res.not_relevant) == (2, 1, 1)
