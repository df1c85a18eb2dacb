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


# -- search flags ---------------------------------------------------------------------------------


@pytest.fixture
def coll(tmp_path: Path) -> str:
    make_photo_folder(tmp_path / "photos", n=8)
    res = CliRunner().invoke(
        app,
        [
            "collection",
            "create",
            "c",
            "--images",
            str(tmp_path / "photos"),
            "-m",
            "toy:colour",
            "--workers",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    return "c"


def test_search_flag_errors_are_one_line(coll: str, tmp_path: Path) -> None:
    run = CliRunner().invoke
    _one_line_error(run(app, ["search", coll, "red", "--json", "--csv"]), "--json and --csv")
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    _one_line_error(
        run(app, ["search", coll, "red", "--copy-to", str(existing)]), "is an existing file"
    )
    assert existing.read_text() == "keep me"
    _one_line_error(run(app, ["search", coll, "red", "--precision", "fp8"]), "fp8", "fp16")
    try:
        import torch
    except ImportError:  # pragma: no cover
        pytest.skip("torch is needed to ask for a device")
    if not torch.cuda.is_available():
        _one_line_error(run(app, ["search", coll, "red", "--device", "cuda"]), "no CUDA GPU")
    _one_line_error(run(app, ["search", coll, "red", "--device", "gpu0"]), "not a torch device")


def test_bbox_without_gps_says_why_nothing_matched(tmp_path: Path) -> None:
    from inquire.collection import create_collection
    from inquire.testing.collection_encoder import write_photo

    for i in range(3):
        write_photo(tmp_path / "p" / f"{i}.jpg", "red", None, None, None, seed=i)
    create_collection("nogps", tmp_path / "p", "toy:colour", workers=0)
    res = CliRunner().invoke(app, ["search", "nogps", "red", "--bbox", "-180,-90,180,90"])
    assert res.exit_code == 0, res.output
    assert "none of the 3 photos of collection 'nogps' carries any" in res.output


def test_bbox_missing_the_photos_says_how_many_carry_gps(coll: str) -> None:
    res = CliRunner().invoke(app, ["search", coll, "red", "--bbox", "10,10,10.0001,10.0001"])
    assert res.exit_code == 0, res.output
    assert "no results inside --bbox" in res.output and "carry GPS coordinates" in res.output


def test_unknown_name_with_nothing_to_choose_from_says_so() -> None:
    from inquire.errors import UnknownNameError

    msg = str(UnknownNameError("index of 'emb'", "IVF9,Bogus", []))
    assert "Valid names" not in msg and "There is no index of 'emb' yet." in msg


# -- serve --------------------------------------------------------------------------------------


def test_serve_on_a_port_in_use_fails_before_printing_a_url(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args in (["serve"], ["collection", "serve"]):
            res = CliRunner().invoke(app, [*args, "--port", str(port)])
            out = _one_line_error(res, f"port {port} on 127.0.0.1 is already in use", "--port")
            assert "http://" not in out


def test_serve_with_a_missing_collections_folder(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["serve", "--collections", str(tmp_path / "nope")])
    _one_line_error(res, "--collections", "is not a folder")


def test_import_cache_of_a_text_file_is_not_called_a_pickle(tmp_path: Path) -> None:
    text = tmp_path / "notes.npy"
    text.write_text("query,image,score\n")
    res = CliRunner().invoke(app, ["rerank", "import-cache", str(text), "--name", "x"])
    out = _one_line_error(res, "is not a .npy file")
    assert "pickle" not in out


def test_a_cached_reranker_never_imported_says_to_import_it(tmp_path: Path) -> None:
    from inquire.data.rerank_set import write_synthetic_rerank_set

    data = write_synthetic_rerank_set(tmp_path / "rr", n_val=1, n_test=2, pool=20)["test"][0]
    res = CliRunner().invoke(
        app, ["eval", "rerank", "--reranker", "cached:never", "--data", str(data)]
    )
    out = _one_line_error(res, "import-cache", "--name never", "--allow-failures")
    assert "run again" not in out


@pytest.mark.parametrize(
    "args",
    [
        ["embed", "--model", "toy:colour", "--images", "IMG", "--out", "OUT"],
        ["eval", "fullrank", "--model", "toy:colour", "--embeddings", "OUT"],
        ["eval", "rerank", "--reranker", "cached:x"],
    ],
)
def test_every_model_command_refuses_an_unknown_precision_first(
    tmp_path: Path, args: list[str]
) -> None:
    args = [str(tmp_path / a) if a in ("IMG", "OUT") else a for a in args]
    res = CliRunner().invoke(app, [*args, "--precision", "fp8"])
    _one_line_error(res, "unknown --precision 'fp8'", "fp16")
    assert not (tmp_path / "OUT").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_embed_stopped_says_how_many_embeddings_were_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    """Ctrl-C during `inquire embed` exited 130 without a word; it now says what OUT holds and
    that the same command resumes (without --overwrite, which would start over)."""
    import numpy as np

    import inquire.embed.pipeline as pipeline
    from inquire.testing.search_stores import write_store

    out = write_store(tmp_path / "emb", np.eye(5, 8, dtype=np.float32))
    make_photo_folder(tmp_path / "photos", n=2)

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "embed_images", stopped)
    args = ["embed", "-m", "toy:colour", "--images", str(tmp_path / "photos"), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, *(["--overwrite"] if overwrite else [])])
    assert res.exit_code == 130, res.output
    assert f"interrupted: the 5 embeddings committed so far to {str(out)!r} are kept" in res.output
    assert ("without --overwrite" in res.output) == overwrite
    res = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "nothing")])
    assert res.exit_code == 130 and "the 0 embeddings committed so far" in res.output


def test_no_color_drops_the_colour_codes_of_error_lines() -> None:
    """Rich's tables obeyed NO_COLOR but the red 'error:' line kept its escape codes."""
    args = ["search", "no-such-collection", "red"]
    coloured = CliRunner().invoke(app, args, env={"NO_COLOR": ""}, color=True)
    assert coloured.exit_code == 2 and "\x1b[31merror: unknown collection" in coloured.output
    plain = CliRunner().invoke(app, args, env={"NO_COLOR": "1"}, color=True)
    assert plain.exit_code == 2, plain.output
    assert plain.output.startswith("error: unknown collection 'no-such-collection'")
    assert "\x1b[" not in plain.output


def test_filters_that_keep_nothing_say_so_instead_of_an_empty_table(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "photos", n=8)
    made = CliRunner().invoke(
        app,
        [
            "collection",
            "create",
            "f",
            "--images",
            str(tmp_path / "photos"),
            "-m",
            "toy:colour",
            "--workers",
            "0",
        ],
    )
    assert made.exit_code == 0, made.output
    res = CliRunner().invoke(app, ["search", "f", "red", "-k", "3", "--from", "2999-01-01"])
    assert res.exit_code == 0, res.output
    assert "no results: no photo of collection 'f' passes --from '2999-01-01'" in res.output
    res = CliRunner().invoke(app, ["search", "f", "red", "-k", "3", "--from", "1900-01-01"])
    assert res.exit_code == 0 and "no results" not in res.output


@pytest.mark.parametrize("columns", ["60", "250"])
def test_a_newline_in_a_file_name_cannot_forge_a_line_of_results(
    tmp_path: Path, columns: str
) -> None:
    make_photo_folder(tmp_path / "photos", n=3)
    first = sorted((tmp_path / "photos").rglob("*.jpg"))[0]
    first.rename(tmp_path / "photos" / "a\nrank 1: fake.jpg")
    made = CliRunner().invoke(
        app,
        [
            "collection",
            "create",
            "nl",
            "--images",
            str(tmp_path / "photos"),
            "-m",
            "toy:colour",
            "--workers",
            "0",
        ],
    )
    assert made.exit_code == 0, made.output
    res = CliRunner().invoke(app, ["search", "nl", "red", "-k", "3"], env={"COLUMNS": columns})
    assert res.exit_code == 0, res.output
    assert "a\\nrank 1: fake.jpg" in res.output
    assert not any(line.lstrip("│ ").startswith("rank 1: fake") for line in res.output.splitlines())


def test_simulate_feedback_stopped_says_what_was_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in `simulate feedback` exited 130 without a word."""
    import inquire.eval.feedback as feedback

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(feedback, "run_simulation", stopped)
    bench = tmp_path / "bench"
    res = CliRunner().invoke(app, ["simulate", "feedback", "--synthetic", str(bench)])
    assert res.exit_code == 130, res.output
    assert f"interrupted: the synthetic benchmark in {str(bench)!r} was not finished" in res.output
    make_synthetic_benchmark(bench, n_images=400, dim=8, n_val=1, n_test=1)
    res = CliRunner().invoke(app, ["simulate", "feedback", "--synthetic", str(bench)])
    assert res.exit_code == 130 and "is complete and kept" in res.output
