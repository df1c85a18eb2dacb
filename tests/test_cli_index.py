"""The command line of search: `inquire index ...` and `inquire eval fullrank`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.eval import EvalResult

runner = CliRunner()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return make_synthetic_benchmark(root, n_images=2400, dim=32, n_val=2, n_test=10, seed=4)


def test_eval_fullrank_writes_results(bench, tmp_path):
    out = tmp_path / "res"
    args = [
        "eval", "fullrank", "--model", f"precomputed:{bench.text_embeddings}",
        "--embeddings", str(bench.embeddings), "--queries", str(bench.queries_test),
        "--annotations", str(bench.annotations), "--k", "25", "--out", str(out),
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "AP@25" in res.output and "Appearance" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["task"] == "fullrank" and summary["k"] == 25
    assert EvalResult.load(out).per_query.shape[0] == 10


def test_eval_fullrank_needs_embeddings(bench):
    res = runner.invoke(
        app, ["eval", "fullrank", "--model", f"precomputed:{bench.text_embeddings}"]
    )
    assert res.exit_code == 2
    assert "--embeddings" in res.output


def test_index_build_list_recall(bench):
    pytest.importorskip("faiss")
    emb = str(bench.embeddings)
    res = runner.invoke(
        app, ["index", "build", "--embeddings", emb, "--factory", "IVF8,Flat", "--name", "ivf8"]
    )
    assert res.exit_code == 0, res.output
    assert (bench.embeddings / "index" / "ivf8.faiss").is_file()
    res = runner.invoke(app, ["index", "list", "--embeddings", emb])
    assert "ivf8\tIVF8,Flat" in res.output
    args = [
        "index", "recall", "--embeddings", emb, "--index", "ivf8",
        "--model", f"precomputed:{bench.text_embeddings}", "--queries", str(bench.queries_test),
        "--k", "20", "--param", "nprobe=8",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "1.0000" in res.output and "speed-up" in res.output and "nprobe=8" in res.output
    res = runner.invoke(app, [*args[:-2], "--param", "efSearch=8"])
    assert res.exit_code == 2 and "no search parameter 'efSearch'" in res.output


def test_index_build_bad_factory(bench):
    pytest.importorskip("faiss")
    res = runner.invoke(
        app, ["index", "build", "--embeddings", str(bench.embeddings), "--factory", "Nope12"]
    )
    assert res.exit_code == 2 and "Nope12" in res.output


def test_eval_fullrank_screen_option(bench, tmp_path):
    """--screen bf16 and off give the same metrics; a bad value is a one-line error."""
    base = [
        "eval", "fullrank", "--model", f"precomputed:{bench.text_embeddings}",
        "--embeddings", str(bench.embeddings), "--queries", str(bench.queries_test),
        "--annotations", str(bench.annotations), "--k", "25", "--no-cache",
    ]  # fmt: skip
    runs = {}
    for screen in ("bf16", "off"):
        out = tmp_path / screen
        res = runner.invoke(app, [*base, "--screen", screen, "--out", str(out)])
        assert res.exit_code == 0, res.output
        runs[screen] = (out / "per_query.csv").read_text()
    assert runs["bf16"] == runs["off"]
    res = runner.invoke(app, [*base, "--screen", "fast"])
    assert res.exit_code == 2 and "auto, bf16, off; got 'fast'" in res.output
