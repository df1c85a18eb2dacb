"""INQUIRE-Search's CSV (collection/interop/inquire_search.py): written by the CLI and the
verification page, read by R as the INQUIRE-Search case studies read it, checked against
the marks as made."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import threading
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inquire.cli import app as cli_app
from inquire.collection import SearchRequest, open_collection
from inquire.collection.interop.exports import ExportOptions, build_export, export_search
from inquire.collection.interop.inquire_search import COLUMNS
from inquire.collection.verify import Verification
from inquire.errors import InputError, UnknownNameError
from inquire.testing.interop_collection import ODD_NAMES, VerifiedSearch, make_verified_search
from inquire.testing.web_client import page_client
from inquire.web.verify import make_app

# What the case studies compute, in base R, on an export named by the first argument:
# case study 1 (bird diets): ones / zeroes / total / perc_positive over all rows, counted
# with base-R subsetting as its script does; case study 4 (milkweed phenology): coverage of
# the first N rows; case study 3 (wildlife mortality): marked rows with a month, per month.
# It writes back what R parsed, so the test sees every value as R read it.
R_COVERAGE = r"""
args <- commandArgs(trailingOnly = TRUE)
dat <- read.csv(args[1], fileEncoding = "UTF-8", stringsAsFactors = FALSE)
n_first <- as.integer(args[2])
ones <- nrow(dat[dat$marked == 1, ])
zeroes <- nrow(dat[dat$marked == 0, ])
total <- nrow(dat)
perc_positive <- (ones / total) * 100
coverage <- NA
if (n_first > 0) {
  first <- dat[1:n_first, ]
  coverage <- length(which(first$marked == 1)) / n_first
}
m <- dat[which(dat$marked == 1 & dat$month != 0), ]
per_month <- table(m$month)
out <- file(args[3], open = "w", encoding = "UTF-8")
writeLines(c(
  sprintf("ones=%d", ones), sprintf("zeroes=%d", zeroes), sprintf("total=%d", total),
  sprintf("perc_positive=%.12f", perc_positive), sprintf("coverage=%.12f", coverage),
  sprintf("month_%s=%d", names(per_month), as.integer(per_month))
), out)
close(out)
write.csv(dat, args[4], row.names = FALSE, fileEncoding = "UTF-8")
"""


@pytest.fixture
def verified(tmp_path: Path) -> VerifiedSearch:
    return make_verified_search(tmp_path)


def _consensus(by: dict[str, str]) -> str:
    rel = sum(m == "relevant" for m in by.values())
    nrel = sum(m == "not_relevant" for m in by.values())
    return "relevant" if rel > nrel else "not_relevant" if rel < nrel else "unsure"


def _expected(vs: VerifiedSearch, depth: int | None = None, who: str | None = None):
    """The export's rows as the marks and train.json say, computed here without the
    library: [(photo_id, species, marked, inat_url, lat, lon, month)] in rank order."""
    data = json.loads(vs.train_json.read_text(encoding="utf-8"))
    cats = {c["id"]: c["name"] for c in data["categories"]}
    cat_of = {a["image_id"]: a["category_id"] for a in data["annotations"]}
    by_id = {img["id"]: img for img in data["images"]}
    marks = {
        r: {w: m for w, m in by.items() if who is None or w == who} for r, by in vs.marks.items()
    }
    marks = {r: by for r, by in marks.items() if by}
    deepest = max(marks) if marks else 0
    rows = []
    for rank in range(1, (depth or deepest) + 1):
        image_id = vs.images[rank]
        img = by_id.get(image_id)
        relevant = rank in marks and _consensus(marks[rank]) == "relevant"
        if img is None:  # a plain photo: nothing known
            rows.append((f"local:{image_id}", "", int(relevant), "", None, None, None))
        else:
            rows.append(
                (
                    str(image_id),
                    cats[cat_of[image_id]],
                    int(relevant),
                    f"https://www.inaturalist.org/photos/{image_id}",
                    img["latitude"],
                    img["longitude"],
                    int(img["date"][5:7]),
                )
            )
    return rows


def _unescape(s: str) -> str:
    """A cell as written, less the ``'`` the CSV writer puts before formula-like text."""
    return s[1:] if s.startswith("'") and s[1:2] in ("=", "+", "-", "@", "\t", "\r") else s


def _check_rows(df: pd.DataFrame, expected: list[tuple]) -> None:
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == len(expected)
    for got, want in zip(df.to_dict("records"), expected, strict=True):
        assert str(got["photo_id"]) == want[0]
        assert _unescape(str(got["species"])) == want[1]
        assert int(got["marked"]) == want[2]
        assert str(got["inat_url"]) == want[3]
        for col, w in (("latitude", want[4]), ("longitude", want[5]), ("month", want[6])):
            g = got[col]
            if w is None:
                assert g in ("", "NA") or (isinstance(g, float) and np.isnan(g)), (col, g)
            else:
                assert float(g) == pytest.approx(w, abs=1e-9), (col, g, w)


def _read(path_or_bytes) -> pd.DataFrame:
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    return pd.read_csv(src, dtype=str, keep_default_na=False, encoding="utf-8")


def _rscript() -> str:
    exe = shutil.which("Rscript")
    if exe is None:
        pytest.skip(
            "Rscript not found: install Debian's r-base-core (make test installs it as root) "
            "to run the case-study R check"
        )
    return exe


def _run_r(csv: Path, n_first: int, tmp: Path) -> tuple[dict[str, float], pd.DataFrame]:
    script = tmp / "coverage.R"
    script.write_text(R_COVERAGE, encoding="utf-8")
    stats_path, parsed_path = tmp / "r_stats.txt", tmp / "r_parsed.csv"
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    proc = subprocess.run(
        [_rscript(), "--vanilla", str(script), str(csv), str(n_first), stats_path, parsed_path],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    stats = {}
    for line in stats_path.read_text(encoding="utf-8").splitlines():
        k, _, v = line.partition("=")
        stats[k] = float("nan") if v == "NA" else float(v)
    parsed = pd.read_csv(parsed_path, dtype=str, keep_default_na=False, encoding="utf-8")
    return stats, parsed


def test_cli_export_is_read_by_r_as_the_case_studies_read_it(
    verified: VerifiedSearch, tmp_path: Path
) -> None:
    out = tmp_path / "search_results.csv"
    res = CliRunner().invoke(
        cli_app,
        [
            "collection",
            "export",
            verified.name,
            "--search-id",
            verified.search_id,
            "--format",
            "inquire-search",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "wrote 55 rows" in res.output
    expected = _expected(verified)
    assert len(expected) == 55 > 50  # more than a page of results
    _check_rows(_read(out), expected)
    # some rows of each kind, so the checks above cover them all
    kinds = {(e[0].startswith("local:"), e[2]) for e in expected}
    assert kinds == {(True, 0), (True, 1), (False, 0), (False, 1)}
    raw = out.read_bytes()
    assert raw.startswith(b"photo_id,species,marked,inat_url,latitude,longitude,month\r\n")
    assert b"'=HYPERLINK" in raw and b"'-Adiantum" in raw  # formulas escaped
    assert "Dánaus plexíppus ✓ 蝶".encode() in raw

    stats, parsed = _run_r(out, 40, tmp_path)
    ones = sum(e[2] for e in expected)
    assert stats["ones"] == ones and stats["zeroes"] == 55 - ones and stats["total"] == 55
    assert stats["perc_positive"] == pytest.approx(100 * ones / 55, abs=1e-9)
    assert stats["coverage"] == pytest.approx(sum(e[2] for e in expected[:40]) / 40, abs=1e-12)
    per_month: dict[int, int] = {}
    for e in expected:
        if e[2] == 1 and e[6] is not None:
            per_month[e[6]] = per_month.get(e[6], 0) + 1
    got_months = {int(k[6:]): int(v) for k, v in stats.items() if k.startswith("month_")}
    assert got_months == per_month and sum(per_month.values()) < ones  # undated rows left out
    # every value as R parsed it: names with commas, quotes, line breaks, tabs, unicode
    _check_rows(parsed, expected)
    assert {_unescape(s) for s in parsed["species"]} - {""} == set(ODD_NAMES)


def test_one_persons_marks_and_a_given_depth(verified: VerifiedSearch, tmp_path: Path) -> None:
    with closing(open_collection(verified.name)) as c, closing(Verification(c)) as v:
        bo = build_export(v, verified.search_id, "inquire-search", ExportOptions(who="bo"))
        deep = build_export(v, verified.search_id, "inquire-search", ExportOptions(depth=60))
        huge = build_export(v, verified.search_id, "inquire-search", ExportOptions(depth=10**7))
    _check_rows(_read(bo.data), _expected(verified, who="bo"))
    assert (bo.rows, bo.inspected, bo.positives) == (5, 5, 1)  # bo's deepest mark: rank 5
    _check_rows(_read(deep.data), _expected(verified, depth=60))
    assert deep.rows == 60 and deep.filename == f"inat-{verified.search_id}-inquire-search.csv"
    assert huge.rows == verified.ranked  # never more than was ranked


def test_empty_search_gives_a_header_that_r_reads(verified: VerifiedSearch, tmp_path: Path) -> None:
    with closing(open_collection(verified.name)) as c, closing(Verification(c)) as v:
        sid = v.save_search(SearchRequest("blue"))
        v.extend(sid, 5, c.index())
    out = tmp_path / "empty.csv"
    res = export_search(verified.name, sid, out, "inquire-search")
    assert (res.rows, res.inspected, res.positives) == (0, 0, 0)
    assert out.read_bytes() == b"photo_id,species,marked,inat_url,latitude,longitude,month\r\n"
    stats, parsed = _run_r(out, 0, tmp_path)
    assert (stats["ones"], stats["zeroes"], stats["total"]) == (0, 0, 0) and parsed.empty


def test_page_export_equals_the_cli_file(verified: VerifiedSearch, tmp_path: Path) -> None:
    client = page_client(make_app())
    base = f"/verify/api/c/{verified.name}/searches/{verified.search_id}"
    r = client.get(f"{base}/export/inquire-search")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "inquire-search.csv" in r.headers["content-disposition"]
    out = export_search(verified.name, verified.search_id, tmp_path / "a.csv", "inquire-search")
    assert r.content == out.data == (tmp_path / "a.csv").read_bytes()
    mine = client.get(f"{base}/export/inquire-search?who=bo")
    _check_rows(_read(mine.content), _expected(verified, who="bo"))
    assert client.get(f"{base}/export/excel").status_code == 422
    missing = client.get(f"/verify/api/c/{verified.name}/searches/nosuch/export/inquire-search")
    assert missing.status_code == 404 and str(tmp_path) not in missing.text


def test_two_exports_at_once_write_whole_files(verified: VerifiedSearch, tmp_path: Path) -> None:
    want = _expected(verified)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run(i: int) -> None:
        try:
            start.wait(timeout=60)
            for _ in range(3):
                export_search(
                    verified.name,
                    verified.search_id,
                    tmp_path / ("same.csv" if i % 2 else f"own_{i}.csv"),
                    "inquire-search",
                    overwrite=True,
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads)
    for name in ("same.csv", "own_0.csv", "own_2.csv"):
        _check_rows(_read(tmp_path / name), want)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_two_export_processes_and_a_marking_process_at_once(
    verified: VerifiedSearch, tmp_path: Path
) -> None:
    """Two `inquire collection export` processes write one file while a third process
    marks: both finish, and the file is one whole export (the marks before or after)."""
    import sys

    out = tmp_path / "same.csv"
    cmd = [sys.executable, "-m", "inquire", "collection", "export", verified.name]
    cmd += ["--search-id", verified.search_id, "--format", "inquire-search"]
    cmd += ["--out", str(out), "--overwrite"]
    marker = (
        "import sys\n"
        "from contextlib import closing\n"
        "from inquire.collection import open_collection\n"
        "from inquire.collection.verify import Verification\n"
        "with closing(open_collection(sys.argv[1])) as c, closing(Verification(c)) as v:\n"
        "    for i in sys.argv[3:]:\n"
        "        v.mark(sys.argv[2], int(i), 'cy', 'relevant')\n"
    )
    late = [str(verified.images[r]) for r in (10, 11, 12)]  # nobody marked these yet
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"]
    procs.append(
        subprocess.Popen(
            [sys.executable, "-c", marker, verified.name, verified.search_id, *late],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    got = _read(out)
    before = _expected(verified)  # cy's marks at ranks 10-12 aside, nothing changes
    assert len(got) == 55
    # cy marks ranks 10, 11, 12 in that order; an export reads one snapshot of the marks
    assert got["marked"].astype(int).tolist()[9:12] in ([0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1])
    keep = [i for i in range(55) if i not in (9, 10, 11)]
    _check_rows(got.iloc[keep], [before[i] for i in keep])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@contextmanager
def _unwritable(folder: Path):
    """``folder`` made unwritable (mode 0555; as root, also immutable where chattr works)."""
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    immutable = False
    try:
        probe = folder / ".probe"
        try:
            probe.write_bytes(b"")
        except OSError:
            pass
        else:  # root ignores the mode bits
            probe.unlink()
            chattr = shutil.which("chattr")
            ok = chattr and subprocess.run([chattr, "+i", str(folder)]).returncode == 0
            if not ok:
                pytest.skip("cannot make a folder unwritable here (root, no chattr +i)")
            immutable = True
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        folder.chmod(stat.S_IRWXU)


def test_unwritable_folder_and_bad_options_are_one_line_errors(
    verified: VerifiedSearch, tmp_path: Path
) -> None:
    sid = verified.search_id
    with _unwritable(tmp_path / "locked") as locked:
        with pytest.raises(InputError, match=r"cannot write .*choose a folder you can write to"):
            export_search(verified.name, sid, locked / "x.csv", "inquire-search")
        res = CliRunner().invoke(
            cli_app,
            [
                "collection",
                "export",
                verified.name,
                "--search-id",
                sid,
                "--format",
                "inquire-search",
                "--out",
                str(locked / "x.csv"),
            ],
        )
        assert res.exit_code == 2 and "cannot write" in res.output
        assert "Traceback" not in res.output and list(locked.iterdir()) == []
    with pytest.raises(UnknownNameError, match="inquire-search"):
        export_search(verified.name, sid, tmp_path / "x.csv", "inquire-serch")
    csv = str(tmp_path / "x.csv")
    cases = [
        (["--format", "inquire-search", "--out", str(tmp_path / "x.parquet")], "does not end in"),
        (["--format", "inquire-search", "--relevant", "--out", csv], "--relevant"),
        (["--depth", "5", "--out", csv], "go with --format"),
        (["--format", "inquire-search", "--unverified", "--out", csv], "dwca"),
        (["--format", "inquire-search", "--depth", "0", "--out", csv], "depth"),
    ]
    for extra, msg in cases:
        res = CliRunner().invoke(
            cli_app, ["collection", "export", verified.name, "--search-id", sid, *extra]
        )
        assert res.exit_code == 2 and msg in res.output, (extra, res.output)
        assert "Traceback" not in res.output
    assert not (tmp_path / "x.csv").exists()


def test_control_characters_in_a_taxon_keep_every_row_in_r(
    verified: VerifiedSearch, tmp_path: Path
) -> None:
    """A NUL in one cell makes R's read.csv warn "embedded nulls" and return no rows at all;
    the export writes it as a space, and R reads every row with the other control
    characters and line breaks as they were."""
    from inquire.collection.interop.inquire_search import inquire_search_bytes
    from inquire.collection.interop.inspected import inspected_results

    with closing(open_collection(verified.name)) as c, closing(Verification(c)) as v:
        table = inspected_results(v, verified.search_id)
    named = table.index[table["taxon"].notna()]
    table.loc[named[0], "taxon"] = "Corvus\x00corax"
    table.loc[named[1], "taxon"] = "Pica\x1b\x7f\npica"
    out = tmp_path / "ctl.csv"
    out.write_bytes(inquire_search_bytes(table))
    assert b"\x00" not in out.read_bytes()
    stats, parsed = _run_r(out, 0, tmp_path)
    assert stats["total"] == len(table) == len(parsed)
    assert stats["ones"] == int((table["label"] == "relevant").sum())
    assert parsed["species"][named[0]] == "Corvus corax"
    assert parsed["species"][named[1]] == "Pica\x1b\x7f\npica"


def test_an_export_with_nothing_inspected_says_why(
    verified: VerifiedSearch, tmp_path: Path
) -> None:
    """A --who name nobody used on the search (a typo) gives a header-only file and a line
    saying so, instead of a silently empty export; --depth N exports N results."""
    base = ["collection", "export", verified.name, "--search-id", verified.search_id]
    fmt = ["--format", "inquire-search"]
    typo = CliRunner().invoke(
        cli_app, [*base, *fmt, "--who", "Ana", "--out", str(tmp_path / "a.csv")]
    )
    assert typo.exit_code == 0, typo.output
    assert "nothing inspected: no marks by 'Ana'" in typo.output and "--depth N" in typo.output
    assert len(_read(tmp_path / "a.csv")) == 0
    ok = CliRunner().invoke(
        cli_app, [*base, *fmt, "--who", "ana", "--out", str(tmp_path / "b.csv")]
    )
    assert ok.exit_code == 0 and "nothing inspected" not in ok.output
    deep = CliRunner().invoke(
        cli_app, [*base, *fmt, "--who", "Ana", "--depth", "3", "--out", str(tmp_path / "c.csv")]
    )
    assert deep.exit_code == 0 and "nothing inspected" not in deep.output
    assert len(_read(tmp_path / "c.csv")) == 3
