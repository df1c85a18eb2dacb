"""`inquire collection serve` listens on the same default port as `inquire serve`."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from inquire.cli import app


def test_collection_serve_defaults_to_port_8000(monkeypatch) -> None:
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: calls.append(kw))
    res = CliRunner().invoke(app, ["collection", "serve"])
    assert res.exit_code == 0, res.output
    assert [(c["host"], c["port"]) for c in calls] == [("127.0.0.1", 8000)]
    assert calls[0]["limit_concurrency"] > 0  # served under the same limits as `inquire serve`
