"""The Darwin Core Archive (collection/interop/dwca.py): read back with python-dwca-reader,
and meta.xml held to the Darwin Core text guide's rules."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
import zipfile
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
from typer.testing import CliRunner

from inquire.cli import app as cli_app
from inquire.collection import SearchRequest, open_collection
from inquire.collection.interop.dwca import TERMS
from inquire.collection.interop.exports import ExportOptions, build_export, export_search
from inquire.collection.verify import Verification
from inquire.errors import InputError
from inquire.testing.interop_collection import VerifiedSearch, make_verified_search
from inquire.testing.web_client import page_client
from inquire.web.verify import make_app

TEXT = "{http://rs.tdwg.org/dwc/text/}"
DWC = "http://rs.tdwg.org/dwc/terms/"


@pytest.fixture
def verified(tmp_path: Path) -> VerifiedSearch:
    return make_verified_search(tmp_path)


def _consensus(by: dict[str, str]) -> str:
    rel = sum(m == "relevant" for m in by.values())
    nrel = sum(m == "not_relevant" for m in by.values())
    return "relevant" if rel > nrel else "not_relevant" if rel < nrel else "unsure"


def check_text_guide(archive: Path) -> list[list[str]]:
    """Hold an archive to the Darwin Core text guide (https://dwc.tdwg.org/text/); return
    the core file's data rows split into fields."""
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        assert "meta.xml" in names
        meta = ET.fromstring(zf.read("meta.xml"))
        assert meta.tag == f"{TEXT}archive"
        eml_name = meta.get("metadata")
        assert eml_name in names
        ET.fromstring(zf.read(eml_name))  # well-formed
        cores = meta.findall(f"{TEXT}core")
        assert len(cores) == 1 and not meta.findall(f"{TEXT}extension")
        core = cores[0]
        assert core.get("rowType") == DWC + "Occurrence"
        locations = core.findall(f"{TEXT}files/{TEXT}location")
        assert len(locations) == 1 and locations[0].text in names
        assert core.get("encoding") == "UTF-8"
        assert core.get("fieldsTerminatedBy") == "\\t"
        assert core.get("linesTerminatedBy") == "\\n"
        assert core.get("fieldsEnclosedBy") == ""
        assert core.get("ignoreHeaderLines") == "1"
        ids = core.findall(f"{TEXT}id")
        assert len(ids) == 1
        fields = core.findall(f"{TEXT}field")
        index = [int(f.get("index", "-1")) for f in fields]
        terms = [f.get("term") or "" for f in fields]
        assert sorted(index) == list(range(len(fields)))  # each column once, none skipped
        assert all(
            t.startswith(("http://rs.tdwg.org/dwc/terms/", "http://purl.org/dc/terms/"))
            for t in terms
        )
        assert len(set(terms)) == len(terms)
        id_col = int(ids[0].get("index", "-1"))
        assert terms[index.index(id_col)] == DWC + "occurrenceID"
        text = zf.read(str(locations[0].text)).decode("utf-8")  # UTF-8 or this fails
    lines = text.split("\n")
    assert lines[-1] == ""  # every line ends with \n, and no \r anywhere
    assert "\r" not in text
    header = lines[0].split("\t")
    by_index = dict(zip(index, terms, strict=True))
    assert [by_index[i].rsplit("/", 1)[1] for i in range(len(header))] == header
    rows = [line.split("\t") for line in lines[1:-1]]
    assert all(len(r) == len(header) for r in rows)
    ids_seen = [r[id_col] for r in rows]
    assert len(set(ids_seen)) == len(ids_seen) and all(ids_seen)  # ids unique, never empty
    return rows


def test_archive_is_read_by_dwca_reader_and_follows_the_text_guide(
    verified: VerifiedSearch, tmp_path: Path
) -> None:
    from dwca.read import DwCAReader

    out = tmp_path / "occ.zip"
    res = CliRunner().invoke(
        cli_app,
        [
            "collection",
            "export",
            verified.name,
            "--search-id",
            verified.search_id,
            "--format",
            "dwca",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(verified.train_json.read_text(encoding="utf-8"))
    by_id = {img["id"]: img for img in data["images"]}
    cats = {c["id"]: c for c in data["categories"]}
    cat_of = {a["image_id"]: a["category_id"] for a in data["annotations"]}
    relevant = {
        verified.images[r]: r for r, by in verified.marks.items() if _consensus(by) == "relevant"
    }
    with_taxon = {i: r for i, r in relevant.items() if i in by_id}
    assert 0 < len(with_taxon) < len(relevant)  # some verified photos have no taxon
    assert f"left out {len(relevant) - len(with_taxon)} verified photos" in res.output

    rows = check_text_guide(out)
    assert len(rows) == len(with_taxon)
    with DwCAReader(str(out)) as dwca:
        assert dwca.descriptor.core.type == DWC + "Occurrence"
        assert dwca.metadata is not None
        got = {}
        for row in dwca:
            d = {term.rsplit("/", 1)[1]: v for term, v in row.data.items()}
            got[int(d["catalogNumber"])] = d
    assert set(got) == set(with_taxon)
    for image_id, rank in with_taxon.items():
        d, img = got[image_id], by_id[image_id]
        cat = cats[cat_of[image_id]]
        assert d["occurrenceID"] == f"inquire:{verified.name}:{image_id}"
        assert d["basisOfRecord"] == "HumanObservation"
        assert d["identificationVerificationStatus"] == "verified"
        who = sorted(w for w, m in verified.marks[rank].items() if m == "relevant")
        assert d["identifiedBy"] == " | ".join(who) and d["dateIdentified"].endswith("Z")
        assert d["eventDate"] == img["date"][:10] + "T10:30:00"
        assert float(d["decimalLatitude"]) == img["latitude"]
        assert float(d["decimalLongitude"]) == img["longitude"]
        assert d["geodeticDatum"] == "WGS84" and d["coordinateUncertaintyInMeters"] == "10"
        name = cat["name"].replace("\t", " ").replace("\n", " ")
        assert d["scientificName"] in (name, "'" + name)  # formula-like names escaped
        assert d["scientificName"].startswith("'") == name.startswith(("=", "-"))
        assert (d["genus"], d["family"]) == (cat["genus"], cat["family"])
        assert d["associatedMedia"] == f"https://www.inaturalist.org/photos/{image_id}"
        assert d["recordedBy"] == img.get("rights_holder", "")
        assert d["license"] == img.get("license", "")
        assert f"result {rank} of search {verified.search_id}" in d["occurrenceRemarks"]
    assert {d["recordedBy"] for d in got.values()} >= {""}  # some rights holders unknown


def test_unverified_results_follow_as_machine_observations(
    verified: VerifiedSearch, tmp_path: Path
) -> None:
    from dwca.read import DwCAReader

    opts = ExportOptions(unverified=True, depth=60, media_base_url="https://example.org/p/")
    with closing(open_collection(verified.name)) as c, closing(Verification(c)) as v:
        exp = build_export(v, verified.search_id, "dwca", opts)
    path = tmp_path / "all.zip"
    path.write_bytes(exp.data)
    check_text_guide(path)
    with DwCAReader(str(path)) as dwca:
        rows = [{t.rsplit("/", 1)[1]: x for t, x in r.data.items()} for r in dwca]
    unmarked = {verified.images[r] for r in range(1, 61) if r not in verified.marks}
    machine = {int(d["catalogNumber"]) for d in rows if d["basisOfRecord"] == "MachineObservation"}
    data = json.loads(verified.train_json.read_text(encoding="utf-8"))
    known = {img["id"] for img in data["images"]}
    assert machine == unmarked & known and machine
    for d in rows:
        verified_row = d["basisOfRecord"] == "HumanObservation"
        status = "verified" if verified_row else "unverified"
        assert d["identificationVerificationStatus"] == status
        assert bool(d["identifiedBy"]) == verified_row
    bad = ExportOptions(media_base_url="/srv/x")
    with (
        closing(open_collection(verified.name)) as c,
        closing(Verification(c)) as v,
        pytest.raises(InputError, match="not an http"),
    ):
        build_export(v, verified.search_id, "dwca", bad)


def test_photos_without_taxon_gps_or_date(tmp_path: Path) -> None:
    """A plain folder (no train.json): the taxon is unknown, so a verified photo is left out;
    with the taxon known but no GPS or date, those terms stay empty."""
    from inquire.collection import create_collection
    from inquire.testing.collection_encoder import write_photo

    root = tmp_path / "plain"
    for k in range(3):
        # an iNat24 class folder gives a taxon without train.json; no EXIF at all
        write_photo(
            root / "00001_Animalia_Chordata_Aves_Passeriformes_Corvidae_Corvus_corax" / f"{k}.jpg",
            "red",
            seed=k,
        )
    write_photo(root / "other" / "x.jpg", "red", seed=9)
    c, _ = create_collection("plain", root, "toy:colour", workers=0)
    with closing(c), closing(Verification(c)) as v:
        sid = v.save_search(SearchRequest("red"))
        v.extend(sid, 10, c.index())
        for r in v.results(sid, 0, 10).itertuples():
            v.mark(sid, int(r.image_id), 'Zoë, "the" =counter', "relevant")
        exp = build_export(v, sid, "dwca", ExportOptions(media_base_url="https://h.org/a b/"))
    assert (exp.rows, exp.without_taxon) == (3, 1)
    path = tmp_path / "p.zip"
    path.write_bytes(exp.data)
    rows = check_text_guide(path)
    header = [name for name, _ in TERMS]
    for r in rows:
        d = dict(zip(header, r, strict=True))
        assert d["scientificName"] == "Corvus corax" and d["basisOfRecord"] == "HumanObservation"
        assert d["eventDate"] == "" and d["decimalLatitude"] == d["geodeticDatum"] == ""
        assert d["coordinateUncertaintyInMeters"] == "" and d["recordedBy"] == ""
        assert d["associatedMedia"].startswith("https://h.org/a b/00001_Animalia")
        assert " " not in d["associatedMedia"][len("https://h.org/a b/") :]  # path URL-quoted
        assert d["identifiedBy"] == 'Zoë, "the" =counter'
    with zipfile.ZipFile(io.BytesIO(exp.data)) as zf:
        eml = ET.fromstring(zf.read("eml.xml"))
    assert eml.find("dataset/creator/individualName/surName").text == 'Zoë, "the" =counter'
    assert eml.find("dataset/coverage") is None  # no coordinates, no bounding box


def test_empty_search_and_page_export(verified: VerifiedSearch, tmp_path: Path) -> None:
    from dwca.read import DwCAReader

    with closing(open_collection(verified.name)) as c, closing(Verification(c)) as v:
        sid = v.save_search(SearchRequest("blue"))
        v.extend(sid, 5, c.index())
    out = tmp_path / "empty.zip"
    res = export_search(verified.name, sid, out, "dwca")
    assert (res.rows, res.without_taxon) == (0, 0)
    assert check_text_guide(out) == []
    with DwCAReader(str(out)) as dwca:
        assert list(dwca) == []
    client = page_client(make_app())
    base = f"/verify/api/c/{verified.name}/searches/{verified.search_id}"
    r = client.get(f"{base}/export/dwca")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert f'filename="inat-{verified.search_id}-dwca.zip"' in r.headers["content-disposition"]
    page = tmp_path / "page.zip"
    page.write_bytes(r.content)
    check_text_guide(page)
    with closing(open_collection(verified.name)) as c, closing(Verification(c)) as v:
        same = build_export(v, verified.search_id, "dwca").data
    with zipfile.ZipFile(io.BytesIO(r.content)) as a, zipfile.ZipFile(io.BytesIO(same)) as b:
        for member in ("occurrence.txt", "meta.xml"):  # eml.xml carries today's date
            assert a.read(member) == b.read(member)
    more = client.get(f"{base}/export/dwca?unverified=true")
    assert len(more.content) > len(r.content)


def test_numbers_controls_and_media_url_at_their_edges(verified: VerifiedSearch) -> None:
    """Values at the edges of what GBIF reads: a coordinate near 0 in decimal form (never
    ``1e-05``), an uncertainty of 0 left empty (Darwin Core: zero is not a valid value), NUL
    and other control characters in a taxon or the query turned to spaces (one line of text
    per field), and a ``--media-url`` without a trailing slash still a folder."""
    from inquire.collection.interop.dwca import dwca_bytes
    from inquire.collection.interop.inspected import inspected_results

    with closing(open_collection(verified.name)) as c, closing(Verification(c)) as v:
        table = inspected_results(v, verified.search_id)
    rel = table.index[(table["label"] == "relevant") & table["taxon"].notna()]
    a, b = rel[0], rel[1]
    table.loc[a, ["lat", "lon", "coord_uncertainty_m"]] = [1e-05, -2.5e-07, 0.0]
    table.loc[b, ["coord_uncertainty_m", "taxon"]] = [1e20, "Corvus\x00corax\x1b\x85\u2028x"]
    table["inat_photo_id"] = table["inat_photo_id"].astype("Int64")
    table.loc[b, "inat_photo_id"] = pd.NA
    query = "red\x01\x7f & <b> ]]>"
    exp = dwca_bytes(table, "inat", verified.search_id, query, media_base_url="https://e.org/p")
    with zipfile.ZipFile(io.BytesIO(exp.data)) as zf:
        text = zf.read("occurrence.txt").decode("utf-8")
        eml = ET.fromstring(zf.read("eml.xml"))  # still well-formed
    assert not any((ord(ch) < 32 and ch not in "\t\n") or 0x7F <= ord(ch) <= 0x9F for ch in text)
    header = text.split("\n")[0].split("\t")
    rows = {
        int(d["catalogNumber"]): d
        for d in (
            dict(zip(header, line.split("\t"), strict=True)) for line in text.split("\n")[1:-1]
        )
    }
    da, db = rows[int(table.loc[a, "image_id"])], rows[int(table.loc[b, "image_id"])]
    assert (da["decimalLatitude"], da["decimalLongitude"]) == ("0.00001", "-0.00000025")
    assert da["coordinateUncertaintyInMeters"] == ""
    assert db["coordinateUncertaintyInMeters"] == "1" + "0" * 20
    assert db["scientificName"] == "Corvus corax   x"
    assert db["associatedMedia"] == "https://e.org/p/" + quote(str(table.loc[b, "path"]))
    assert "red   & <b> ]]>" in db["occurrenceRemarks"]
    box = eml.find("dataset/coverage/geographicCoverage/boundingCoordinates")
    assert box is not None and "e" not in "".join(x.text or "" for x in box)
