"""`inquire reproduce --check` on folders written by the commands it lists, run here with
stand-ins (synthetic data, a fake OpenAI server, an INQUIRE-format score cache, precomputed
text embeddings): the real writers' layout, classified; "whole split" and "beyond rounding"
by patching a real folder's query count and metric values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data.rerank_set import read_rerank_set, write_synthetic_rerank_set
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.report.leaderboard import load_leaderboard
from inquire.report.reproduce import check_results

SUPER = ("Appearance", "Behavior", "Context", "Species")
runner = CliRunner()


@pytest.fixture(scope="module")
def rerank_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A synthetic INQUIRE-Rerank test split (2 queries, pools of 100) and its query CSV."""
    files = write_synthetic_rerank_set(tmp_path_factory.mktemp("rerank"), n_val=1, n_test=2)
    data = files["test"][0]
    queries = data.parent.parent / "benchmark" / "inquire_queries_test.csv"
    return str(data), str(queries)


def _patch(folder: Path, task: str, method: str, shift: float, n: int, **config: Any) -> None:
    """Make a real results folder look like the whole published split: ``n`` queries, the
    test split, every value ``shift`` (x100 units) from the published row ``method``."""
    path = folder / "summary.json"
    summary = json.loads(path.read_text(encoding="utf-8"))
    row = load_leaderboard(task).table.set_index("method").loc[method]
    summary["n_queries"] = summary["overall"]["n_queries"] = n
    summary["overall"]["ap"] = (float(row["overall"]) + shift) / 100
    for c in SUPER:
        summary["by"]["supercategory"].setdefault(c, {"n_queries": n // 4})
        summary["by"]["supercategory"][c]["ap"] = (float(row[c]) + shift) / 100
    summary["config"].update({"split": "test", **config})
    path.write_text(json.dumps(summary), encoding="utf-8")
    # the per-query table lists as many distinct queries (--check compares the two)
    per_query = pd.read_csv(folder / "per_query.csv")
    rows = per_query.iloc[np.arange(n) % len(per_query)].assign(query_id=np.arange(1, n + 1))
    rows.to_csv(folder / "per_query.csv", index=False)


def _check(*folders: Path) -> tuple[int, list[dict[str, Any]]]:
    res = runner.invoke(app, ["reproduce", "--check", *map(str, folders), "--json"])
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.output)


def test_api_row_made_by_its_listed_command(
    rerank_data: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eval rerank --reranker api:gpt-4o-2024-08-06` (the GPT-4o row's command, against a
    fake server) is the GPT-4o row: a subset until the whole split, then within or beyond
    rounding; the same model under inquire-sum is another protocol."""
    from inquire.testing.rerank_fake_openai import FakeOpenAI

    data, queries = rerank_data
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    base = ["eval", "rerank", "--reranker", "api:gpt-4o-2024-08-06", "--data", data]
    base += ["--queries", queries, "--api-key-env", "FAKE_KEY", "--no-cache"]
    with FakeOpenAI() as server:
        args = [*base, "--base-url", server.base_url]
        made = runner.invoke(app, [*args, "--out", str(tmp_path / "api")])
        assert made.exit_code == 0, made.output
        other = runner.invoke(
            app, [*args, "--protocol", "inquire-sum", "--out", str(tmp_path / "sum")]
        )
        assert other.exit_code == 0, other.output
    summary = json.loads((tmp_path / "api" / "summary.json").read_text())
    assert summary["name"] == "api:gpt-4o-2024-08-06 (inquire-2024)"  # the stored run name
    assert summary["config"]["candidates_per_query"] == 100

    code, (subset,) = _check(tmp_path / "api")
    assert code == 1 and subset["method"] == "GPT-4o"
    assert subset["status"] == "not comparable" and subset["protocol"] == "inquire-2024"
    assert any("2 of the 160 queries" in n for n in subset["notes"]), subset["notes"]
    code, (summed,) = _check(tmp_path / "sum")
    assert code == 1 and summed["status"] == "other protocol" and summed["method"] is None

    _patch(tmp_path / "api", "rerank", "GPT-4o", 0.04, 160)
    _patch(tmp_path / "sum", "rerank", "GPT-4o", 0.0, 160)
    code, (within,) = _check(tmp_path / "api")
    assert code == 0 and within["status"] == "reproduces", within
    code, (summed,) = _check(tmp_path / "sum")  # exact values, still never matched
    assert code == 1 and summed["status"] == "other protocol"
    _patch(tmp_path / "api", "rerank", "GPT-4o", 0.06, 160)
    code, (beyond,) = _check(tmp_path / "api")
    assert code == 1 and beyond["status"] == "differs"


def _llava_cache(data: str, path: Path) -> int:
    """INQUIRE's LLaVA-1.5-13B cache format for the synthetic pools: P(Yes) 0.9 for the
    relevant candidates, 0.1 for the others. Returns the number of entries."""
    rs = read_rerank_set([data])
    entries = {}
    for q, text in zip(rs.queries["query_id"], rs.queries["query_text"], strict=True):
        pool = rs.pool(int(q))
        prompt = (
            f"USER: <image>\nDoes this picture show {text}?Answer the question with either "
            '"Yes" or "No" and nothing else.\nASSISTANT:'
        )
        for name, rel in zip(pool["file_name"], pool["relevant"], strict=True):
            entries[f"{name}--{prompt}"] = 0.1 + 0.8 * float(rel)
    np.save(path, np.array(entries, dtype=object), allow_pickle=True)
    return len(entries)


def test_cached_row_imported_and_evaluated_in_one_command(
    rerank_data: tuple[str, str], tmp_path: Path
) -> None:
    data, queries = rerank_data
    npy = tmp_path / "llava-hf--llava-1.5-13b-hf--cache.npy"
    n = _llava_cache(data, npy)
    out = tmp_path / "cached"
    args = ["eval", "rerank", "--reranker", "cached:llava-1.5-13b", "--data", data]
    args += ["--queries", queries, "--import-cache", str(npy), "--trust-pickle"]
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"imported {n} scores" in res.output and "cached:llava-1.5-13b" in res.output
    assert pd.read_csv(out / "per_query.csv")["ap"].to_numpy() == pytest.approx(1.0)
    cfg = json.loads((out / "summary.json").read_text())["config"]
    assert cfg["imported_cache"]["file"] == str(npy.resolve())
    assert cfg["imported_cache"]["imported"] == n
    assert cfg["imported_cache"]["model"] == "llava-hf/llava-1.5-13b-hf"
    assert cfg["reranker"] == "cached:llava-1.5-13b" and cfg["protocol"] == "inquire-2024"
    # the scores stay in the score cache: evaluating again needs no import
    again = runner.invoke(
        app, ["eval", "rerank", "--reranker", "cached:llava-1.5-13b", "--data", data]
    )
    assert again.exit_code == 0, again.output

    code, (subset,) = _check(out)
    assert code == 1 and subset["method"] == "LLaVA-1.5-13b"
    assert subset["status"] == "not comparable"
    _patch(out, "rerank", "LLaVA-1.5-13b", -0.05, 160)
    code, (within,) = _check(out)
    assert code == 0 and within["status"] == "reproduces"

    # what cannot be imported says so in one line
    bad = [
        (["--reranker", "random", "--import-cache", str(npy), "--trust-pickle"], "cached:NAME"),
        (["--reranker", "cached:x", "--import-cache", str(npy)], "--trust-pickle"),
        (["--reranker", "cached:x", "--trust-pickle"], "--import-cache"),
        (
            ["--reranker", "cached:x", "--import-cache", str(npy), "--trust-pickle", "--no-cache"],
            "--no-cache",
        ),
        (
            [
                "--reranker",
                "cached:x",
                "--import-cache",
                str(tmp_path / "no.npy"),
                "--trust-pickle",
            ],
            "does not exist",
        ),
    ]
    for extra, why in bad:
        res = runner.invoke(app, ["eval", "rerank", "--data", data, *extra])
        assert res.exit_code == 2 and why in res.output, (extra, res.output)
        assert "Traceback" not in res.output


def test_clip_rows_from_the_real_writers(rerank_data: tuple[str, str], tmp_path: Path) -> None:
    """`eval fullrank` (a CLIP row's command, with precomputed text embeddings standing in
    for the model) and `eval rerank --reranker clip_score` written and classified; the
    unpatched fullrank folder names a model no row has."""
    bench = make_synthetic_benchmark(tmp_path / "b", n_images=1200, dim=16, n_val=2, n_test=4)
    out = tmp_path / "fr"
    args = ["eval", "fullrank", "-m", f"precomputed:{bench.text_embeddings}"]
    args += ["--embeddings", str(bench.embeddings), "--queries", str(bench.queries_test)]
    args += ["--annotations", str(bench.annotations), "-k", "50", "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    code, (unknown,) = _check(out)
    assert code == 1 and unknown["status"] == "no published row"
    # the same folder as the listed command writes it (model vit-h-14-378, whole split)
    _patch(out, "fullrank", "CLIP ViT-H/14-378 (DFN)", 0.0, 200, model_id="vit-h-14-378")
    code, (row,) = _check(out)
    assert code == 0 and row["method"] == "CLIP ViT-H/14-378 (DFN)", row

    data, queries = rerank_data
    rr = tmp_path / "rr"
    args = ["eval", "rerank", "--reranker", "clip_score", "--data", data, "--queries", queries]
    res = runner.invoke(app, [*args, "--out", str(rr)])
    assert res.exit_code == 0, res.output
    code, (clip,) = _check(rr)
    assert clip["task"] == "rerank" and clip["method"] == "CLIP ViT-H/14-378 (DFN)"
    assert code == 1 and clip["status"] == "not comparable"  # 2 of 160 queries
    code, both = _check(rr, out)
    assert code == 1 and [b["status"] for b in both] == ["not comparable", "reproduces"]


def test_fullrank_summary_names_its_files_and_the_report_draws_curves(tmp_path: Path) -> None:
    """docs/web.md: a result whose config names an existing annotations file gets its
    precision-recall curve without --annotations, in the report and on the web page."""
    from inquire.report.write import write_report
    from inquire.web.catalog import Catalog
    from inquire.web.config import WebConfig

    bench = make_synthetic_benchmark(tmp_path / "b", n_images=1200, dim=16, n_val=2, n_test=4)
    out = tmp_path / "fr"
    args = ["eval", "fullrank", "-m", f"precomputed:{bench.text_embeddings}"]
    args += ["--embeddings", str(bench.embeddings), "--queries", str(bench.queries_test)]
    args += ["--annotations", str(bench.annotations), "-k", "10", "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "summary.json").read_text())["config"]
    assert cfg["annotations"] == str(Path(bench.annotations).resolve())
    assert cfg["queries"] == str(Path(bench.queries_test).resolve())
    assert cfg["split"] is None  # local queries: not a published split
    written = write_report([out], plots=tmp_path / "plots", n_resamples=0)
    assert written.warnings == []
    assert "precision_recall" in written.figures
    assert (tmp_path / "plots" / "precision_recall.png").is_file()
    # without the recorded file there is no curve, and the report says why
    cfg.pop("annotations")
    summary = json.loads((out / "summary.json").read_text())
    summary["config"] = cfg
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    bare = write_report([out], plots=tmp_path / "plots2", n_resamples=0)
    assert "precision_recall" not in bare.figures and "no relevance labels" in bare.warnings[0]
    # the web page reads the labels and query texts from the same config
    cfg["annotations"] = str(Path(bench.annotations).resolve())
    summary["config"] = cfg
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    catalog = Catalog(WebConfig(results=[out]))
    assert catalog.qrels is not None and catalog.query_text


def test_eval_rerank_says_where_query_ids_come_from(
    rerank_data: tuple[str, str], tmp_path: Path
) -> None:
    data, queries = rerank_data
    withid = write_synthetic_rerank_set(tmp_path / "ids", n_val=1, n_test=2, include_query_id=True)
    cases = [
        ([data], "numbered 1..n", True),
        ([data, "--queries", queries], "INQUIRE's query table", False),
        ([str(withid["test"][0])], "the query_id column of the data", False),
    ]
    for i, (extra, source, noted) in enumerate(cases):
        out = tmp_path / f"r{i}"
        args = ["eval", "rerank", "--reranker", "random", "--data", *extra, "--out", str(out)]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        cfg = json.loads((out / "summary.json").read_text())["config"]
        assert cfg["query_ids"].startswith(source), cfg["query_ids"]
        assert ("note: query ids numbered" in res.output) is noted, res.output


def test_two_stage_api_reranker_takes_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The VILA two-stage row's command: `eval fullrank --rerank api:... --base-url`."""
    from inquire.testing.rerank_fake_openai import FakeOpenAI

    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    bench = make_synthetic_benchmark(
        tmp_path / "b", n_images=800, dim=16, n_val=1, n_test=3, write_images=True
    )
    out = tmp_path / "two"
    args = ["eval", "fullrank", "--model", f"precomputed:{bench.text_embeddings}"]
    args += ["--embeddings", str(bench.embeddings), "--queries", str(bench.queries_test)]
    args += ["--annotations", str(bench.annotations), "--k", "5", "--from-k", "5"]
    args += ["--rerank", "api:VILA1.5-40b", "--images", str(bench.images), "--out", str(out)]
    with FakeOpenAI() as server:
        res = runner.invoke(
            app, [*args, "--base-url", server.base_url, "--api-key-env", "FAKE_KEY"]
        )
        assert res.exit_code == 0, res.output
        assert len(server.requests) == 3 * 5
        assert {r["body"]["model"] for r in server.requests} == {"VILA1.5-40b"}
    cfg = json.loads((out / "two_stage" / "summary.json").read_text())["config"]
    assert cfg["reranker"] == "api:VILA1.5-40b" and cfg["from_k"] == 5
    assert cfg["annotations"] == str(Path(bench.annotations).resolve())
    (made,) = check_results([out / "two_stage"])
    assert made.status == "no published row"  # another first stage than the row's


def test_import_cache_refuses_what_is_not_a_released_cache(
    rerank_data: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text file, an empty file, a pickle of another shape, a dict that matches no
    candidate, a folder: one line each, no result folder, no score stored."""
    from inquire.rerank.cache import ScoreCache

    monkeypatch.setenv("INQUIRE_HOME", str(tmp_path / "home"))
    data, _ = rerank_data
    text = tmp_path / "notes.npy"
    text.write_text("scores: see the paper\n", encoding="utf-8")
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    array = tmp_path / "array.npy"
    np.save(array, np.zeros((3, 4)))
    nomatch = tmp_path / "nomatch.npy"
    np.save(nomatch, np.array({"elsewhere.jpg--Is this a bird?": 0.9}, dtype=object))
    cases = [
        (text, "is not a .npy file"),
        (empty, "is not a .npy file"),
        (array, "holds a ndarray; expected a dict"),
        (nomatch, "no score in"),
        (tmp_path, "is a folder; pass the released .npy file"),
    ]
    for i, (path, why) in enumerate(cases):
        out = tmp_path / f"out{i}"
        args = ["eval", "rerank", "--reranker", "cached:x", "--data", data]
        args += ["--import-cache", str(path), "--trust-pickle", "--out", str(out)]
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and why in res.output, (path, res.output)
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
        assert not out.exists()
    with ScoreCache() as cache:
        assert cache.count() == 0  # nothing half-imported
    # untrusted: refused before the Rerank split is read (or downloaded: there is no data)
    res = runner.invoke(
        app,
        [
            "eval",
            "rerank",
            "--reranker",
            "cached:x",
            "--split",
            "test",
            "--import-cache",
            str(text),
        ],
    )
    assert res.exit_code == 2 and "--trust-pickle" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
