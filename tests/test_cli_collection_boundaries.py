"""`inquire collection ...` at its boundaries: a read-only cache, a full disk, Ctrl-C, a failed
create, a huge k, a moved file.

Tests run as root, where file modes do not stop writes; a read-only or full folder is made
for real in a private mount namespace (``unshare -m``: a read-only bind mount, a small
tmpfs). Where the kernel refuses that, those tests are skipped and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.collection import create_collection, open_collection, update_collection
from inquire.testing.collection_encoder import PixelHashEncoder, make_photo_folder

SRC = Path(__file__).resolve().parent.parent / "src"


def _mounts_work() -> str:
    """'' when a private mount namespace with bind and tmpfs mounts can be made, else why not."""
    if not shutil.which("unshare") or sys.platform != "linux":
        return "needs Linux and unshare(1)"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"cannot make a private mount namespace here: {probe.stderr.strip()}"
    return ""


NO_MOUNTS = _mounts_work()
needs_mounts = pytest.mark.skipif(bool(NO_MOUNTS), reason=NO_MOUNTS or "ok")


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        INQUIRE_HOME=str(home),
        PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]),
        COLUMNS="200",
        OMP_NUM_THREADS="1",
    )
    return env


_CHUNKED = """
import functools, sys
import inquire.collection as col
col.create_collection = functools.partial(col.create_collection, chunk_size=8)
sys.argv = ["inquire", *sys.argv[1:]]
from inquire.cli import main
main()
"""


def _in_namespace(setup: str, commands: list[list[str]], home: Path, out: Path) -> list[tuple]:
    """Run ``setup`` (shell, as root, in a private mount namespace) and then each inquire
    command there (``inquire`` itself, ``create`` committing every 8 images); returns
    ``(exit code, output)`` per command."""
    out.mkdir(parents=True, exist_ok=True)
    driver = out / "inquire_chunked.py"
    driver.write_text(_CHUNKED)
    lines = [setup]
    for i, args in enumerate(commands):
        if args[0] == "sh":  # a shell step between commands (e.g. grow the disk)
            lines.append(args[1])
            continue
        quoted = " ".join(f"'{a}'" for a in args)
        lines.append(f"'{sys.executable}' '{driver}' {quoted} > '{out}/{i}.out' 2>&1")
        lines.append(f"echo $? > '{out}/{i}.rc'")
    lines[0] = f"{setup} || exit 99"
    script = "\n".join(lines)
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], env=_env(home), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    results = []
    for i, args in enumerate(commands):
        if args[0] == "sh":
            results.append((0, ""))
            continue
        results.append((int((out / f"{i}.rc").read_text()), (out / f"{i}.out").read_text()))
    return results


def _create(name: str, images: Path, *extra: str) -> None:
    res = CliRunner().invoke(
        app,
        [
            "collection",
            "create",
            name,
            "--images",
            str(images),
            "--model",
            "toy:colour",
            "--workers",
            "0",
            *extra,
        ],
    )
    assert res.exit_code == 0, res.output


# -- a read-only cache ------------------------------------------------------------------------


@needs_mounts
def test_read_commands_work_on_a_read_only_cache_and_writers_say_why(tmp_path: Path) -> None:
    home = Path(os.environ["INQUIRE_HOME"])
    make_photo_folder(tmp_path / "photos", n=12)
    _create("walks", tmp_path / "photos")
    res = CliRunner().invoke(app, ["search", "walks", "red", "-k", "3", "--save"])
    assert res.exit_code == 0, res.output
    before = {p: p.stat().st_mtime_ns for p in home.rglob("*") if p.is_file()}
    ro = f"mount --bind '{home}' '{home}' && mount -o remount,bind,ro '{home}'"
    results = _in_namespace(
        ro,
        [
            ["collection", "list"],
            ["collection", "info", "walks"],
            ["search", "walks", "red", "-k", "3", "--json"],
            ["search", "walks", "red", "-k", "3", "--save"],
            ["collection", "update", "walks", "--workers", "0"],
            [
                "collection",
                "create",
                "other",
                "--images",
                str(tmp_path / "photos"),
                "--model",
                "toy:colour",
                "--workers",
                "0",
            ],
        ],
        home,
        tmp_path / "out",
    )
    out_list, out_info, out_s = (out for _, out in results[:3])
    for rc, out in results[:3]:
        assert rc == 0, out
        assert "usable" not in out and "move it away" not in out
    assert "walks" in out_list
    assert "12 searchable" in out_info and "saved searches (1)" in out_info
    assert [r["rank"] for r in json.loads(out_s)] == [1, 2, 3]
    for rc, out in results[3:]:
        assert rc == 2, out
        assert "Traceback" not in out
        assert out.count("error:") == 1 and "not writable" in out, out
    # Nothing was changed, and the marks' database is as it was.
    after = {p: p.stat().st_mtime_ns for p in home.rglob("*") if p.is_file()}
    assert after == before


def test_inquire_home_naming_a_file_is_one_line(tmp_path: Path, monkeypatch) -> None:
    not_a_folder = tmp_path / "home.txt"
    not_a_folder.write_text("x")
    monkeypatch.setenv("INQUIRE_HOME", str(not_a_folder))
    make_photo_folder(tmp_path / "photos", n=3)
    for args in (
        ["collection", "list"],
        ["collection", "info", "walks"],
        ["collection", "create", "c", "--images", str(tmp_path / "photos"), "-m", "toy:colour"],
    ):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "is a file, not a folder" in res.output and "INQUIRE_HOME" in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)


# -- a failed create leaves nothing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"), [("--workers", "-1"), ("--batch-size", "0"), ("--batch-size", "-5")]
)
def test_create_with_a_bad_count_writes_nothing(tmp_path: Path, flag: str, value: str) -> None:
    make_photo_folder(tmp_path / "photos", n=4)
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
            flag,
            value,
        ],
    )
    assert res.exit_code == 2, res.output
    assert f"{flag} {value}" in res.output and "whole number" in res.output
    home = Path(os.environ["INQUIRE_HOME"])
    assert not (home / "collections" / "c").exists()
    _create("c", tmp_path / "photos")  # the retry is a plain create, not "already exists"
    assert open_collection("c").counts() == {"ok": 4}


class _Broken(PixelHashEncoder):
    def encode_images(self, images):
        raise RuntimeError("the model fell over")


def test_create_that_fails_before_committing_anything_is_undone(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "photos", n=4)
    with pytest.raises(RuntimeError, match="fell over"):
        create_collection("c", tmp_path / "photos", "x", encoder=_Broken(), workers=0)
    assert not (Path(os.environ["INQUIRE_HOME"]) / "collections" / "c").exists()
    create_collection("c", tmp_path / "photos", "x", encoder=PixelHashEncoder(), workers=0)
    assert open_collection("c").counts() == {"ok": 4}


def test_create_that_fails_after_a_commit_keeps_it_for_update(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "photos", n=6)

    class FailsLater(PixelHashEncoder):
        def encode_images(self, images):
            if self.n_images_encoded >= 2:
                raise RuntimeError("the model fell over")
            return super().encode_images(images)

    with pytest.raises(RuntimeError):
        create_collection(
            "c",
            tmp_path / "photos",
            "x",
            encoder=FailsLater(),
            workers=0,
            chunk_size=2,
            batch_size=2,
        )
    assert open_collection("c").counts() == {"ok": 2}
    enc = PixelHashEncoder()
    _, stats = update_collection("c", encoder=enc, workers=0)
    assert stats.unchanged == 2 and enc.n_images_encoded == 4
    assert open_collection("c").counts() == {"ok": 6}


# -- huge k -------------------------------------------------------------------------------------


def test_search_with_a_k_of_a_trillion_returns_every_photo(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "photos", n=9)
    _create("c", tmp_path / "photos")
    res = CliRunner().invoke(app, ["search", "c", "red", "-k", str(10**12), "--json"])
    assert res.exit_code == 0, res.output
    assert [r["rank"] for r in json.loads(res.stdout)] == list(range(1, 10))


def test_feedback_search_with_a_k_of_a_trillion(tmp_path: Path) -> None:
    from inquire.collection.verify import Verification

    make_photo_folder(tmp_path / "photos", n=9)
    _create("c", tmp_path / "photos")
    res = CliRunner().invoke(app, ["search", "c", "red", "-k", "3", "--save", "--json"])
    assert res.exit_code == 0, res.output
    coll = open_collection("c")
    v = Verification(coll)
    sid = v.searches()["search_id"].iloc[0]
    v.extend(sid, 3, coll.index())
    v.mark(sid, int(v.results(sid)["image_id"].iloc[0]), "ana", "relevant")
    v.close()
    coll.close()
    res = CliRunner().invoke(app, ["search", "c", "--feedback", sid, "-k", str(10**12), "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 8  # every photo nobody marked yet


# -- a moved file -------------------------------------------------------------------------------


def test_a_moved_file_reuses_its_vector(tmp_path: Path) -> None:
    photos = make_photo_folder(tmp_path / "photos", n=5)
    create_collection("c", tmp_path / "photos", "x", encoder=PixelHashEncoder(), workers=0)
    src = photos[0].path
    dst = tmp_path / "photos" / "moved" / "deeper" / src.name
    dst.parent.mkdir(parents=True)
    src.rename(dst)
    enc = PixelHashEncoder()
    _, stats = update_collection("c", encoder=enc, workers=0)
    assert enc.n_images_encoded == 0  # not sent to the encoder again
    assert (stats.added, stats.removed, stats.reused, stats.embedded) == (1, 1, 1, 0)
    coll = open_collection("c")
    index = coll.index()
    new_id = coll.image_id_for_path(dst)
    assert new_id is not None
    vec = index.vectors(index.rows_of([new_id]))[0]
    want = PixelHashEncoder().encode_images([__import__("PIL.Image").Image.open(dst)])[0]
    assert abs(vec - want).max() < 2e-3  # float16 storage


# -- Ctrl-C -------------------------------------------------------------------------------------

_DRIVER = """
import functools, sys, time
from pathlib import Path
import inquire.collection as col
import inquire.collection.build as build
from inquire.testing.collection_encoder import PixelHashEncoder

FLAG = Path(sys.argv[1])

class Stalls(PixelHashEncoder):
    # Encodes {n_fast} images, then says so in FLAG and waits (for Ctrl-C).
    def encode_images(self, images):
        if self.n_images_encoded >= {n_fast}:
            FLAG.write_text("waiting")
            while True:
                time.sleep(0.05)
        return super().encode_images(images)

build._load_encoder = lambda model_id, batch_size: Stalls()
col.create_collection = functools.partial(col.create_collection, chunk_size=2)
col.update_collection = functools.partial(col.update_collection, chunk_size=2)
sys.argv = ["inquire", *sys.argv[2:]]
from inquire.cli import main
main()
"""


def _interrupt(
    tmp_path: Path, n_fast: int, args: list[str], signals: tuple[int, ...] = (signal.SIGINT,)
) -> tuple[int, str]:
    driver = tmp_path / f"driver_{n_fast}.py"
    driver.write_text(textwrap.dedent(_DRIVER.replace("{n_fast}", str(n_fast))))
    flag = tmp_path / f"flag_{n_fast}"
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(flag), *args],
        env=_env(Path(os.environ["INQUIRE_HOME"])),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not flag.exists():  # the condition: the encoder is waiting mid-run
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the run never reached its second batch"
        time.sleep(0.05)
    for sig in signals:  # sent back to back: the second lands while the first is handled
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def test_ctrl_c_says_what_was_kept_and_update_resumes(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "photos", n=7)
    args = [
        "collection",
        "create",
        "c",
        "--images",
        str(tmp_path / "photos"),
        "-m",
        "x",
        "--workers",
        "0",
        "--batch-size",
        "1",
    ]
    rc, out = _interrupt(tmp_path, 4, args)
    assert rc == 130, out
    assert "Traceback" not in out
    assert "interrupted: the 4 images committed so far to collection 'c' are kept" in out
    assert "inquire collection update c" in out
    enc = PixelHashEncoder()
    _, stats = update_collection("c", encoder=enc, workers=0)
    assert stats.unchanged == 4 and enc.n_images_encoded == 3
    assert open_collection("c").counts() == {"ok": 7}


@pytest.mark.parametrize(
    ("signals", "rc", "word"),
    [
        ((signal.SIGTERM,), 143, "terminated"),
        ((signal.SIGINT, signal.SIGINT, signal.SIGINT), 130, "interrupted"),
        ((signal.SIGTERM, signal.SIGINT, signal.SIGTERM), None, None),  # whichever is first
    ],
)
def test_sigterm_and_repeated_ctrl_c_say_what_was_kept_once(
    tmp_path: Path, signals: tuple[int, ...], rc: int | None, word: str | None
) -> None:
    """`kill PID` used to end create silently (-15); Ctrl-C pressed again while the first is
    handled could end in a traceback. Both now stop once, say what was kept, and resume."""
    make_photo_folder(tmp_path / "photos", n=7)
    args = [
        "collection",
        "create",
        "c",
        "--images",
        str(tmp_path / "photos"),
        "-m",
        "x",
        "--workers",
        "0",
        "--batch-size",
        "1",
    ]
    got, out = _interrupt(tmp_path, 4, args, signals)
    assert got == rc if rc is not None else got in (130, 143), out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out and "ignored" not in out
    said = "the 4 images committed so far to collection 'c' are kept"
    words = [word] if word is not None else ["interrupted", "terminated"]
    assert sum(out.count(f"{w}: {said}") for w in words) == 1, out
    enc = PixelHashEncoder()
    _, stats = update_collection("c", encoder=enc, workers=0)
    assert stats.unchanged == 4 and enc.n_images_encoded == 3


def test_ctrl_c_before_anything_was_committed_leaves_nothing(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "photos", n=3)
    args = [
        "collection",
        "create",
        "c",
        "--images",
        str(tmp_path / "photos"),
        "-m",
        "x",
        "--workers",
        "0",
        "--batch-size",
        "1",
    ]
    rc, out = _interrupt(tmp_path, 1, args)
    assert rc == 130, out
    assert "interrupted: nothing was kept" in out and "Traceback" not in out
    assert not (Path(os.environ["INQUIRE_HOME"]) / "collections" / "c").exists()


# -- a full disk --------------------------------------------------------------------------------


@needs_mounts
def test_full_disk_during_create_is_one_line_and_update_recovers(tmp_path: Path) -> None:
    home = tmp_path / "small"
    home.mkdir()
    make_photo_folder(tmp_path / "photos", n=60)
    results = _in_namespace(
        f"mount -t tmpfs -o size=160k tmpfs '{home}'",  # full after a few commits
        [
            [
                "collection",
                "create",
                "c",
                "--images",
                str(tmp_path / "photos"),
                "--model",
                "toy:colour",
                "--workers",
                "0",
            ],
            ["sh", f"mount -o remount,size=64m '{home}'"],  # space freed
            ["collection", "update", "c", "--workers", "0"],
            ["collection", "info", "c"],
        ],
        home,
        tmp_path / "out",
    )
    (rc1, out1), _, (rc2, out2), (rc3, out3) = results
    assert rc1 == 2, out1
    assert "Traceback" not in out1 and "the disk is full" in out1, out1
    assert str(home) in out1
    assert "committed so far to collection 'c' are kept" in out1
    assert "run `inquire collection update c` to resume" in out1
    assert rc2 == 0, out2
    assert rc3 == 0 and "60 searchable" in out3, out3


@pytest.mark.parametrize(
    "exc",
    [
        OSError("4400 requested and 1984 written"),  # numpy's short write
        OSError(28, "No space left on device", "/data/x/shard.npy"),
        OSError(122, "Disk quota exceeded"),
        __import__("sqlite3").OperationalError("database or disk is full"),
    ],
)
def test_every_kind_of_full_disk_is_one_line(exc: BaseException) -> None:
    from inquire.cli._common import error_message

    msg = error_message(exc, "run `inquire collection update c` to resume")
    assert msg is not None and msg.startswith("the disk is full")
    assert "update c` to resume" in msg
    if getattr(exc, "filename", None):
        assert "'/data/x'" in msg  # the folder of the file being written
    else:
        assert os.environ["INQUIRE_HOME"] in msg


def test_read_only_connection_sees_what_a_live_writer_left_in_its_wal(tmp_path: Path) -> None:
    import sqlite3

    from inquire.collection.store import SCHEMA, connect, connect_read_only

    db = tmp_path / "c" / "collection.db"
    writer = connect(db, SCHEMA)  # WAL mode, held open: the rows live in collection.db-wal
    writer.execute("INSERT INTO meta VALUES ('model_id', 'm')")
    assert Path(f"{db}-wal").stat().st_size > 0
    reader = connect_read_only(db, SCHEMA)
    try:
        assert reader.execute("SELECT value FROM meta").fetchone()[0] == "m"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("INSERT INTO meta VALUES ('x', 'y')")
    finally:
        reader.close()
        writer.close()
    empty = connect_read_only(tmp_path / "none" / "verify.db", SCHEMA)  # nothing written yet
    assert empty.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    assert not (tmp_path / "none").exists()


@needs_mounts
def test_full_disk_under_out_names_the_out_folder_not_the_cache(tmp_path: Path) -> None:
    """`inquire embed --out FULL` said 'no space left to write in <INQUIRE_HOME>' (its error
    names no file): the folder that is full is OUT; then the same command resumes."""
    from inquire.testing.embed_models import make_tiny_open_clip

    model = make_tiny_open_clip(tmp_path / "model")
    make_photo_folder(tmp_path / "photos", n=60)
    full = tmp_path / "full"
    full.mkdir()
    out = full / "emb"
    args = ["embed", "-m", model, "--images", str(tmp_path / "photos"), "--out", str(out)]
    args += ["--workers", "0", "--shard-size", "10"]
    results = _in_namespace(
        f"mount -t tmpfs -o size=24k tmpfs '{full}'",
        [args, ["sh", f"mount -o remount,size=8m '{full}'"], args],
        Path(os.environ["INQUIRE_HOME"]),
        tmp_path / "out",
    )
    (rc, said), _, (rc2, said2) = results
    assert rc == 2, said
    assert "Traceback" not in said
    line = said.strip().splitlines()[-1]
    assert f"no space left to write in {str(out)!r}" in " ".join(said.split()), said
    assert "run the same command to resume" in " ".join(said.split()), line
    assert rc2 == 0, said2
    assert "60 embeddings" in said2


@needs_mounts
def test_an_unwritable_out_is_named_as_the_out_not_the_cache(tmp_path: Path) -> None:
    """`collection export --out` into a read-only folder named a hidden temp file and told the
    user to set INQUIRE_HOME, which would not help: it now names --out's folder."""
    make_photo_folder(tmp_path / "photos", n=4)
    _create("walks", tmp_path / "photos")
    res = CliRunner().invoke(app, ["search", "walks", "red", "-k", "2", "--save"])
    assert res.exit_code == 0, res.output
    search_id = res.output.split("saved search ")[1].split()[0]
    ro = tmp_path / "ro"
    ro.mkdir()
    results = _in_namespace(
        f"mount --bind '{ro}' '{ro}' && mount -o remount,bind,ro '{ro}'",
        [["collection", "export", "walks", "--search-id", search_id, "--out", str(ro / "m.csv")]],
        Path(os.environ["INQUIRE_HOME"]),
        tmp_path / "out",
    )
    rc, said = results[0]
    said = " ".join(said.split())
    assert rc == 2, said
    assert f"cannot write in {str(ro)!r}: it is not writable" in said
    assert "choose an --out you can write" in said and "INQUIRE_HOME" not in said
    assert ".tmp" not in said and not list(ro.iterdir())
