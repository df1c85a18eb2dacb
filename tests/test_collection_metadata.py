from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from inquire.collection.metadata import InatMetadata, describe, folder_taxonomy, read_exif
from inquire.errors import InputError
from inquire.testing.collection_encoder import make_inat_tree, write_photo


def test_exif_date_and_gps_with_south_and_west_signs(tmp_path: Path) -> None:
    p = write_photo(tmp_path / "a.jpg", "red", datetime(2021, 4, 5, 10, 11, 12), -33.8675, -151.2)
    exif = read_exif(p.path)
    assert exif["date"] == "2021-04-05T10:11:12"
    # 33° 52' 3" S = -(33 + 52/60 + 3/3600); the writer rounds seconds to 1/1000.
    assert exif["lat"] == pytest.approx(-33.8675, abs=1e-6)
    assert exif["lon"] == pytest.approx(-151.2, abs=1e-6)
    q = write_photo(tmp_path / "b.jpg", "blue", datetime(2020, 1, 2), 51.5, 0.25)
    assert read_exif(q.path)["lat"] == pytest.approx(51.5) and read_exif(q.path)["lon"] > 0


def test_no_exif_falls_back_to_the_file_time(tmp_path: Path) -> None:
    p = write_photo(tmp_path / "c.jpg", "green")
    os.utime(p.path, ns=(0, 1_600_000_000 * 10**9))  # 2020-09-13T12:26:40Z
    rec = describe(p.path, "c.jpg", p.path.stat().st_mtime_ns, None)
    assert (rec["date"], rec["date_source"]) == ("2020-09-13T12:26:40", "mtime")
    assert rec["lat"] is None and rec["taxon"] is None


def test_unset_camera_clock_is_not_a_date(tmp_path: Path) -> None:
    from PIL import Image

    img = Image.new("RGB", (8, 8))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "0000:00:00 00:00:00"
    img.save(tmp_path / "d.jpg", exif=exif)
    assert read_exif(tmp_path / "d.jpg")["date"] is None


def test_inat_train_json_gives_taxonomy_date_and_place(tmp_path: Path) -> None:
    meta_path = make_inat_tree(tmp_path / "inat", per_taxon=2)
    inat = InatMetadata(meta_path)
    assert len(inat) == 10
    data = json.loads(meta_path.read_text())
    img = data["images"][2]
    # The scanned path is relative to whatever root the user passes: match on the last parts.
    rec = inat.get("elsewhere/" + "/".join(img["file_name"].split("/")[-2:]))
    assert rec is not None
    assert rec["source_id"] == img["id"] and rec["date"] == img["date"][:10] + "T10:30:00"
    assert rec["lat"] == img["latitude"] and rec["lon"] == img["longitude"]
    assert (rec["taxon"], rec["class"], rec["genus"]) == (
        "Cyanocitta cristata",
        "Aves",
        "Cyanocitta",
    )
    full = describe(tmp_path / "inat" / img["file_name"], img["file_name"], 0, inat)
    assert full["date_source"] == "inat" and full["taxon_source"] == "inat"


def test_inat_folder_names_give_taxonomy_without_json() -> None:
    rec = folder_taxonomy(
        "train/00012_Animalia_Chordata_Aves_Passeriformes_Corvidae_Corvus_corax/x.jpg"
    )
    assert rec is not None
    assert (rec["taxon_id"], rec["taxon"], rec["order"]) == (12, "Corvus corax", "Passeriformes")
    assert folder_taxonomy("site_1/cam_2/RCNX0001.JPG") is None


def test_bad_metadata_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        InatMetadata(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        InatMetadata(tmp_path / "bad.json")
    (tmp_path / "noimages.json").write_text('{"annotations": []}')
    with pytest.raises(InputError, match="no 'images' list"):
        InatMetadata(tmp_path / "noimages.json")


def test_train_json_licence_holder_and_location_uncertainty(tmp_path: Path) -> None:
    meta_path = make_inat_tree(tmp_path / "inat", per_taxon=3)
    data = json.loads(meta_path.read_text())
    imgs = data["images"]
    imgs[0]["location_uncertainty"] = -5  # not a distance
    imgs[1]["location_uncertainty"] = None
    imgs[2]["license"] = "   "
    imgs[3]["latitude"] = None  # no place, so no uncertainty of it
    meta_path.write_text(json.dumps(data))
    inat = InatMetadata(meta_path)
    recs = [inat.get(img["file_name"]) for img in imgs]
    assert [r["coord_uncertainty_m"] for r in recs[:5]] == [None, None, 10.0, None, 10.0]
    assert recs[1]["license"] == imgs[1]["license"] and recs[1]["rights_holder"] == "observer 1"
    assert recs[0]["license"] is None and recs[0]["rights_holder"] is None  # not in the JSON
    assert recs[2]["license"] is None  # blank
