from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from inquire.cli import app
from inquire.demo.collection import demo_collection
from inquire.testing.collection_encoder import make_photo_folder, write_photo


def test_demo_step_runs_offline_and_prints_the_workflow(tmp_path: Path) -> None:
    buf = io.StringIO()
    folder = demo_collection(tmp_path / "demo", Console(file=buf, width=120))
    text = buf.getvalue()
    assert folder == tmp_path / "demo" / "collections" / "demo"
    assert (folder / "collection.db").is_file() and (folder / "verify.db").is_file()
    assert "100 photos embedded" in text and "search 'red flowers'" in text
    assert "verified the top 30 results" in text and "95% Wilson" in text
    # Running it again into the same folder starts over instead of failing.
    demo_collection(tmp_path / "demo", Console(file=io.StringIO()))


def test_collection_commands_end_to_end(tmp_path: Path) -> None:
    photos = make_photo_folder(tmp_path / "p", n=8)
    runner = CliRunner()
    ok = runner.invoke(
        app, ["collection", "create", "c", "--images", str(tmp_path / "p"), "--model", "toy:colour"]
    )
    assert ok.exit_code == 0 and "added 8" in ok.stdout
    photos[0].path.unlink()
    write_photo(tmp_path / "p" / "new.jpg", "red")
    res = runner.invoke(app, ["collection", "update", "c"])
    assert res.exit_code == 0 and "added 1" in res.stdout and "removed 1" in res.stdout
    assert "embedded 1" in res.stdout
    res = runner.invoke(app, ["collection", "list"])
    assert res.exit_code == 0 and "toy:colour" in res.stdout
    res = runner.invoke(app, ["collection", "info", "c"])
    assert res.exit_code == 0 and "generation" in res.stdout
    res = runner.invoke(app, ["collection", "compact", "c"])
    assert res.exit_code == 0 and "dropped 1 stale" in res.stdout
    res = runner.invoke(
        app, ["collection", "create", "c", "--images", str(tmp_path / "p"), "--model", "toy:colour"]
    )
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(app, ["collection", "delete", "c", "--yes"])
    assert res.exit_code == 0
    res = runner.invoke(app, ["collection", "update", "c"])
    assert res.exit_code == 2 and "unknown collection 'c'" in res.output
