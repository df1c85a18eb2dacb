"""The reranking step of the offline demo runs end to end and writes its results."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

pytest.importorskip("transformers")


def test_demo_rerank(tmp_path: Path) -> None:
    import torch

    from inquire.demo.rerank import demo_rerank

    torch.set_num_threads(1)
    buf = io.StringIO()
    out = demo_rerank(tmp_path, console=Console(file=buf, width=120))
    text = buf.getvalue()
    assert "SYNTHETIC" in text and "RANDOM-WEIGHT" in text
    for name in ("clip_score", "random", "tiny-vlm", "two-stage"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert 0.0 <= summary["overall"]["ap"] <= 1.0
    vlm = json.loads((out / "tiny-vlm" / "summary.json").read_text())
    assert vlm["config"]["ranker"].startswith("vlm:llava-1.5/")
    assert vlm["config"]["data"] == "synthetic"
