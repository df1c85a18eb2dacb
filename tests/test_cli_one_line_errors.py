"""One-line errors (never a traceback, never silence) at the command line's boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data.synthetic import find_synthetic_benchmark, make_synthetic_benchmark
from inquire.errors import InputError
from inquire.testing.collection_encoder import make_photo_folder

SMALL = {"n_images": 1000, "dim": 16, "n_val": 2, "n_test": 3, "n_shards": 2}


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def _one_line_error(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    out = res.output
    assert out.count("error:") == 1 and "Traceback" not in out, out
    for n in needles:
        assert n in out, out
    return out


# -- never write into a user's folder uninvited ---------------------------------------------------


def test_simulate_refuses_a_photo_folder(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photo_folder(photos, n=3)
    before = _tree(photos)
    res = CliRunner().invoke(app, ["simulate", "feedback", "--synthetic", str(photos)])
    _one_line_error(res, "not empty and not a synthetic benchmark", "new or empty folder")
    assert _tree(photos) == before  # not one file written


def test_a_synthetic_benchmark_resumes_in_its_own_folder(tmp_path: Path) -> None:
    root = tmp_path / "b"
    make_synthetic_benchmark(root, seed=1, **SMALL)
    (root / "SYNTHETIC.txt").unlink()  # as if interrupted before its last file
    (root / ".inquire_annotations.csv.abc123.tmp").write_text("half")
    assert find_synthetic_benchmark(root) is None
    make_synthetic_benchmark(root, seed=1, **SMALL)  # its own files: written again
    assert find_synthetic_benchmark(root) is not None
    (root / "notes.txt").write_text("mine")
    (root / "SYNTHETIC.txt").unlink()
    with pytest.raises(InputError, match=r"holds 'notes.txt'"):
        make_synthetic_benchmark(root, seed=1, **SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_synthetic_benchmark(empty, seed=1, **SMALL).root == empty
