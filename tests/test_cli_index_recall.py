"""`inquire index recall` warms exact search and the index alike before timing them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

pytest.importorskip("faiss")

import inquire.index.exact
from inquire.cli import app
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.embed.store import EmbeddingStore
from inquire.index.ann import AnnIndex, build_index


def test_recall_warms_both_searches_before_timing(tmp_path: Path, monkeypatch) -> None:
    bench = make_synthetic_benchmark(tmp_path / "b", n_images=600, n_val=1, n_test=2, dim=16)
    build_index(EmbeddingStore(bench.embeddings), "Flat", name="flat")
    calls: list[tuple[str, int]] = []
    exact, ann = inquire.index.exact.search, AnnIndex.search

    def spy_exact(store: Any, q: Any, k: int, *a: Any, **kw: Any) -> Any:
        calls.append(("exact", len(q)))
        return exact(store, q, k, *a, **kw)

    def spy_ann(self: AnnIndex, q: Any, k: int, *a: Any, **kw: Any) -> Any:
        calls.append(("ann", len(q)))
        return ann(self, q, k, *a, **kw)

    monkeypatch.setattr(inquire.index.exact, "search", spy_exact)
    monkeypatch.setattr(AnnIndex, "search", spy_ann)
    args = ["index", "recall", "--embeddings", str(bench.embeddings), "--index", "flat"]
    args += ["-m", f"precomputed:{bench.text_embeddings}", "--queries", str(bench.queries_test)]
    res = CliRunner().invoke(app, [*args, "-k", "5"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "1.0000" in res.output  # a flat index finds exactly what exact search finds
    # one warm-up query on each side, then the timed runs over both test queries
    assert calls == [("exact", 1), ("ann", 1), ("exact", 2), ("ann", 2)]
