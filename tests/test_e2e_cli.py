"""The command line as a user meets it: a light start-up, and the offline demo end to end
(including the ``inquire serve`` command it prints, which must start a working page)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import inquire
from inquire.cli import app
from inquire.data.queries import read_queries
from inquire.eval.evaluate import EvalResult

SRC = Path(inquire.__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "open_clip", "faiss", "fastapi", "ray")

# Runs ``python -m inquire ARGS`` in a fresh interpreter, then reports the heavy modules
# loaded by then (as JSON on stderr).
_PROBE = f"""
import json, runpy, sys
sys.argv = ["inquire", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("inquire", run_name="__main__")
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {list(HEAVY)!r} if m in sys.modules]
sys.stderr.write("\\nPROBE " + json.dumps({{"code": code, "heavy": heavy}}) + "\\n")
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env.setdefault("COLUMNS", "200")
    return env


def _probe(*args: str) -> tuple[dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(args))],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("PROBE ")]
    assert line, proc.stderr
    return json.loads(line[-1][6:]), proc.stdout


def test_import_and_help_stay_light() -> None:
    code = (
        "import sys, json, inquire, inquire.cli\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []

    for args in (
        ["--help"],
        ["eval", "--help"],
        ["eval", "fullrank", "--help"],
        ["serve", "--help"],
    ):
        result, out = _probe(*args)
        assert result == {"code": 0, "heavy": []}, (args, result)
        assert "Usage" in out
    result, out = _probe("--help")
    for command in ("download", "embed", "eval", "report", "compare", "serve", "demo"):
        assert command in out

    proc = subprocess.run(
        [sys.executable, "-m", "inquire", "--version"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"inquire {inquire.__version__}"


def test_demo_end_to_end_and_its_serve_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "inquire", "demo", "--out", "demo"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "SYNTHETIC" in out
    # the full-rank table: an overall row and one row per supercategory
    rows = {line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")}
    assert {"all", "Appearance", "Behavior", "Context", "Species"} <= rows

    result = EvalResult.load(tmp_path / "demo" / "results" / "fullrank")
    assert len(result.per_query) == 40
    assert set(result.per_query["supercategory"]) == {
        "Appearance",
        "Behavior",
        "Context",
        "Species",
    }
    overall = result.aggregate(scaled=True)
    assert f"{overall['ap'].iloc[0]:.1f}" in out
    for summary in (tmp_path / "demo").rglob("summary.json"):
        EvalResult.load(summary.parent)  # every results folder the demo wrote loads

    # "Try next": every printed command runs as printed (environment prefix included)
    lines = out.splitlines()
    start = lines.index("Try next (each command runs as printed):") + 1
    tried = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        if not line.startswith("  #"):
            tried.append(line.strip())
    assert len(tried) >= 5, out
    for cmd in tried:
        words = shlex.split(cmd)
        env: dict[str, str] = {}
        while "=" in words[0] and not words[0].startswith("-"):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        res = CliRunner().invoke(app, words[words.index("inquire") + 1 :], env=env)
        assert res.exit_code == 0, (cmd, res.output)

    # the printed `inquire serve ...` command starts a working page (served in-process here)
    # `inquire serve ...`, or `PYTHON -m inquire serve ...` where inquire is not on PATH
    serve_lines = [
        line
        for line in out.splitlines()
        if line.startswith("inquire serve ") or " -m inquire serve " in line
    ]
    assert len(serve_lines) == 1, out
    parts = shlex.split(serve_lines[0])
    args = parts[parts.index("serve") :]
    captured: dict[str, object] = {}

    def fake_serve(app_: object, host: str = "127.0.0.1", port: int = 8000, **kw: object) -> None:
        captured.update(app=app_, host=host, port=port)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("inquire.web.server.serve", fake_serve)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert captured["host"] == "127.0.0.1"

    from inquire.testing.web_client import page_client

    qid = int(result.per_query["query_id"].iloc[0])
    queries = read_queries(tmp_path / "demo" / "benchmark" / "inquire_queries_test.csv")
    text = str(queries.set_index("query_id").loc[qid, "query_text"])
    with page_client(captured["app"]) as client:  # type: ignore[arg-type]
        home = client.get("/")
        assert home.status_code == 200 and result.name in home.text
        (run,) = client.get("/api/runs").json()
        slug = run["slug"]
        grid = client.get(f"/api/runs/{slug}/queries/{qid}", params={"k": 10})
        assert grid.status_code == 200, grid.text
        items = grid.json()["results"]
        assert len(items) == 10 and all(it["relevant"] in (True, False) for it in items)
        img = client.get(items[0]["thumb_url"])
        assert img.status_code == 200 and img.content[:3] == b"\xff\xd8\xff"
        found = client.get("/api/search", params={"q": text, "k": 5})
        assert found.status_code == 200, found.text
        assert len(found.json()["results"]) == 5
        assert client.get("/verify").status_code == 200
