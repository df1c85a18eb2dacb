"""INQUIRE-Rerank files, the rerank evaluation, baselines, two-stage reranking and the CLI."""

from __future__ import annotations

import itertools
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from inquire.data.qrels import Qrels
from inquire.data.queries import read_queries
from inquire.data.rerank_set import (
    UPSTREAM_COLUMNS,
    load_rerank_set,
    read_rerank_set,
    write_synthetic_rerank_set,
)
from inquire.errors import InputError, UnknownNameError
from inquire.eval.rerank import RerankFailuresError, evaluate_rerank, expected_random_ap
from inquire.eval.two_stage import evaluate_two_stage, image_resolver
from inquire.rerank.cache import ScoreCache
from inquire.rerank.clip import ClipReranker
from inquire.rerank.registry import parse_reranker_id
from inquire.run import Run


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return write_synthetic_rerank_set(tmp_path_factory.mktemp("rerank"), n_val=1, n_test=3)


def _brute_ap(ranked_rel: Sequence[int], r: int, k: int) -> float:
    hits, total = 0, 0.0
    for i, rel in enumerate(ranked_rel[:k], start=1):
        if rel:
            hits += 1
            total += hits / i
    return total / min(r, k)


class OracleReranker:
    """Knows the answers: scores relevant images 1, others 0.

    ``relevant_bytes`` holds image bytes (relevant to every query) or ``(query_text, bytes)``.
    """

    def __init__(self, relevant_bytes: set[Any], fail: set[bytes] | None = None) -> None:
        self.reranker_id, self.revision, self.prompt_version = "test:oracle", "r", "p"
        self.relevant, self.fail = relevant_bytes, fail or set()
        self.calls = 0

    def score(self, query_text: str, images: Sequence[Any]) -> np.ndarray:
        self.calls += len(images)
        return np.array(
            [
                np.nan
                if im in self.fail
                else float(im in self.relevant or (query_text, im) in self.relevant)
                for im in images
            ]
        )


def test_synthetic_set_has_the_upstream_layout(synthetic: dict[str, list[Path]]) -> None:
    path = synthetic["test"][0]
    assert path.name == "test-00000-of-00001.parquet"
    assert synthetic["val"][0].name == "validation-00000-of-00001.parquet"
    schema = pq.read_schema(path)
    assert schema.names == list(UPSTREAM_COLUMNS)  # the published card: no query_id column
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("relevant").type == pa.int64()
    assert b"huggingface" in (schema.metadata or {})
    table = pq.read_table(path).to_pandas()
    assert (table.groupby("query").size() == 100).all()
    first = table["image"].iloc[0]
    assert first["bytes"][:3] == b"\xff\xd8\xff" and first["path"].endswith(".jpg")
    rs = read_rerank_set(synthetic["test"])
    assert len(rs.queries) == table["query"].nunique()
    assert rs.query_ids == list(range(1, len(rs.queries) + 1))  # numbered in file order
    assert list(rs.queries.columns) == [
        "query_id",
        "query_text",
        "supercategory",
        "category",
        "iconic_group",
    ]
    q = rs.query_ids[1]
    imgs = rs.images(q, [0, 5])
    pool = table[table["query"] == rs.queries["query_text"].iloc[1]]
    assert imgs == [pool["image"].iloc[0]["bytes"], pool["image"].iloc[5]["bytes"]]
    assert all(v >= 1 for v in rs.n_relevant().values())


def test_query_ids_come_from_the_query_table_or_a_column(
    synthetic: dict[str, list[Path]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bench = synthetic["test"][0].parent.parent / "benchmark"
    table = read_queries(bench / "inquire_queries_test.csv")
    rs = read_rerank_set(synthetic["test"], queries=table)
    ids = dict(zip(table["query_text"], table["query_id"], strict=True))
    assert [ids[t] for t in rs.queries["query_text"]] == rs.query_ids
    assert rs.query_ids != list(range(1, len(rs.queries) + 1))
    # a table that misses some texts: an error, or numbered when asked, with a warning
    with pytest.raises(InputError, match="--number-queries"):
        read_rerank_set(synthetic["test"], queries=table.iloc[:1])
    with caplog.at_level("WARNING"):
        partial = read_rerank_set(synthetic["test"], queries=table.iloc[:1], number_queries=True)
    assert partial.query_ids == list(range(1, len(rs.queries) + 1))
    assert "not in the given query table" in caplog.text
    # files with a query_id column (include_query_id=True) use it
    with_ids = write_synthetic_rerank_set(tmp_path, n_val=1, n_test=3, include_query_id=True)
    assert "query_id" in pq.read_schema(with_ids["test"][0]).names
    assert read_rerank_set(with_ids["test"]).query_ids == rs.query_ids


def test_open_rerank_set_reads_local_files_with_query_csvs(
    synthetic: dict[str, list[Path]],
) -> None:
    from inquire.data.rerank_set import open_rerank_set

    csv = synthetic["test"][0].parent.parent / "benchmark" / "inquire_queries_test.csv"
    rs = open_rerank_set("test", synthetic["test"], [csv])
    assert rs.query_ids == read_rerank_set(synthetic["test"], queries=read_queries(csv)).query_ids
    numbered = open_rerank_set("val", synthetic["test"], [], number_queries=True)
    assert numbered.query_ids == list(range(1, len(rs.queries) + 1))


def test_reader_rejects_bad_files(tmp_path: Path, synthetic: dict[str, list[Path]]) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_rerank_set([tmp_path / "nope.parquet"])
    partial = tmp_path / "partial.parquet"
    pq.write_table(pq.read_table(synthetic["test"][0]).drop(["clip_score"]), partial)
    with pytest.raises(InputError, match="clip_score"):
        read_rerank_set([partial])
    with pytest.raises(InputError, match="no INQUIRE-Rerank"):
        read_rerank_set([])


def test_load_rerank_set_downloads_through_the_data_registry(
    monkeypatch: pytest.MonkeyPatch, synthetic: dict[str, list[Path]]
) -> None:
    asked: list[str] = []
    fake = types.ModuleType("inquire.data.download")
    bench = synthetic["test"][0].parent.parent / "benchmark"

    def fetch_dataset(name: str) -> list[Path]:
        asked.append(name)
        return synthetic["val"]

    def fetch(name: str) -> Path:
        asked.append(name)
        return bench / f"inquire_{name.replace('-', '_')}.csv"

    fake.fetch_dataset = fetch_dataset  # type: ignore[attr-defined]
    fake.fetch = fetch  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inquire.data.download", fake)
    rs = load_rerank_set("val")
    assert asked == ["rerank-val", "queries-val", "queries-test"]
    val = read_queries(bench / "inquire_queries_val.csv")
    assert set(rs.query_ids) <= set(val["query_id"].tolist())  # INQUIRE's ids, joined by text
    with pytest.raises(UnknownNameError, match="test"):
        load_rerank_set("tset")


def test_clip_score_baseline_matches_brute_force(synthetic: dict[str, list[Path]]) -> None:
    rs = read_rerank_set(synthetic["test"])
    res = evaluate_rerank(rs, "clip_score", progress=False)
    for q in rs.query_ids:
        pool = rs.pool(q)
        order = np.argsort(-pool["clip_score"].to_numpy(), kind="stable")
        rel = pool["relevant"].to_numpy()[order].astype(int).tolist()
        r = int(sum(rel))
        row = res.result.per_query.set_index("query_id").loc[q]
        row50 = res.result_at_50.per_query.set_index("query_id").loc[q]
        assert row["ap"] == pytest.approx(_brute_ap(rel, r, 100))
        assert row50["ap"] == pytest.approx(_brute_ap(rel, r, 50))
        assert row["recall"] == pytest.approx(1.0)  # R = relevant candidates in the pool
    table = res.table()
    assert list(table.columns[:5]) == ["group", "n_queries", "ap", "ap@50", "ndcg"]


def test_expected_random_ap_is_exact() -> None:
    # exhaustive over every order of a small pool
    n, r, k = 6, 2, 4
    base = [1] * r + [0] * (n - r)
    perms = set(itertools.permutations(base))
    exact = float(np.mean([_brute_ap(list(p), r, k) for p in perms]))
    assert expected_random_ap(n, r, k) == pytest.approx(exact, abs=1e-12)
    # and the average over many random orders of a 100-pool converges to it
    rng = np.random.default_rng(0)
    rel = np.array([1] * 23 + [0] * 77)
    sims = [_brute_ap(rng.permutation(rel).tolist(), 23, 100) for _ in range(3000)]
    assert np.mean(sims) == pytest.approx(expected_random_ap(100, 23, 100), abs=0.01)
    assert expected_random_ap(100, 0, 100) == 0.0


def test_random_baseline_is_seeded(synthetic: dict[str, list[Path]]) -> None:
    rs = read_rerank_set(synthetic["test"])
    a = evaluate_rerank(rs, "random", seed=1, progress=False)
    b = evaluate_rerank(rs, "random", seed=1, progress=False)
    c = evaluate_rerank(rs, "random", seed=2, progress=False)
    q = rs.query_ids[0]
    np.testing.assert_array_equal(a.run[q][0], b.run[q][0])
    assert not np.array_equal(a.run[q][0], c.run[q][0])
    assert a.expected_random == pytest.approx(
        np.mean(
            [expected_random_ap(100, r, 100) for r in rs.n_relevant().values()]  # one per query
        )
    )
    with pytest.raises(UnknownNameError, match="clip_score"):
        evaluate_rerank(rs, "clipscore")


def _oracle_for(rs: Any, fail_query: int | None = None, n_fail: int = 0) -> OracleReranker:
    relevant: set[Any] = set()
    fail = set()
    texts = dict(zip(rs.queries["query_id"], rs.queries["query_text"], strict=True))
    for q in rs.query_ids:
        pool = rs.pool(q)
        imgs = rs.images(q)
        # Keyed by query: the same image bytes may be relevant to one query and not another.
        relevant |= {(texts[q], im) for im, r in zip(imgs, pool["relevant"], strict=True) if r}
        if q == fail_query:
            fail |= set(imgs[:n_fail])
    return OracleReranker(relevant, fail)


def test_a_perfect_reranker_scores_one_and_is_cached(
    synthetic: dict[str, list[Path]], tmp_path: Path
) -> None:
    rs = read_rerank_set(synthetic["test"])
    oracle = _oracle_for(rs)
    with ScoreCache(tmp_path / "c.sqlite") as cache:
        res = evaluate_rerank(rs, oracle, cache=cache, progress=False)
        assert res.result.per_query["ap"].to_numpy() == pytest.approx(1.0)
        assert oracle.calls == 100 * len(rs.query_ids)
        again = evaluate_rerank(rs, oracle, cache=cache, progress=False)
        assert oracle.calls == 100 * len(rs.query_ids)  # nothing re-scored
        assert again.result.per_query["ap"].tolist() == res.result.per_query["ap"].tolist()
    assert res.result.config["ranker"] == "test:oracle" and res.result.config["revision"] == "r"
    out = res.save(tmp_path / "out")
    assert (out / "per_query.csv").is_file() and (out / "at50" / "summary.json").is_file()


def test_run_rerank_loads_caches_and_writes_like_the_parts(
    synthetic: dict[str, list[Path]], tmp_path: Path
) -> None:
    from inquire.eval.rerank import run_rerank

    rs = read_rerank_set(synthetic["test"])
    oracle = _oracle_for(rs)
    cache = tmp_path / "cache" / "scores.sqlite"
    res = run_rerank(rs, oracle, cache=cache, progress=False, out_dir=tmp_path / "out")
    assert cache.is_file() and oracle.calls == 100 * len(rs.query_ids)
    again = run_rerank(rs, oracle, cache=cache, progress=False)
    assert oracle.calls == 100 * len(rs.query_ids)  # the cache file answered
    want = evaluate_rerank(rs, oracle, cache=None, progress=False)
    for got in (res, again):
        assert got.result.per_query["ap"].tolist() == want.result.per_query["ap"].tolist()
    assert (tmp_path / "out" / "per_query.csv").is_file()
    # A baseline never opens a cache; an id is loaded through the registry.
    base = run_rerank(rs, "clip_score", cache=tmp_path / "never.sqlite", progress=False)
    assert not (tmp_path / "never.sqlite").exists()
    assert base.result.per_query["ap"].tolist() == (
        evaluate_rerank(rs, "clip_score", progress=False).result.per_query["ap"].tolist()
    )
    with pytest.raises(UnknownNameError):
        run_rerank(rs, "nosuchkind:x", cache=False, progress=False)
    # An output folder that is a file fails before anything is scored.
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="existing file"):
        run_rerank(rs, oracle, cache=False, progress=False, out_dir=tmp_path / "file")
    assert oracle.calls == 100 * len(rs.query_ids) * 2


def test_failures_stop_the_evaluation_or_are_flagged(
    synthetic: dict[str, list[Path]], tmp_path: Path
) -> None:
    rs = read_rerank_set(synthetic["test"])
    q = rs.query_ids[0]
    # make the failing candidates relevant ones, so ranking them last visibly costs AP
    pool = rs.pool(q)
    first_rel = int(np.flatnonzero(pool["relevant"].to_numpy())[0])
    oracle = _oracle_for(rs)
    oracle.fail = {rs.images(q, [first_rel])[0]}
    with pytest.raises(RerankFailuresError, match="--allow-failures"):
        evaluate_rerank(rs, oracle, progress=False)
    res = evaluate_rerank(rs, oracle, allow_failures=True, progress=False)
    assert len(res.failures) == 1 and res.result.config["failures"] == 1
    assert int(res.failures["image_id"].iloc[0]) == int(pool["image_id"].iloc[first_rel])
    assert res.run[q][0][-1] == int(pool["image_id"].iloc[first_rel])  # ranked last
    assert res.result.per_query.set_index("query_id").loc[q, "ap"] < 1.0
    res.save(tmp_path / "flagged")
    assert (tmp_path / "flagged" / "failures.csv").is_file()


class TinyEncoder:
    """An Encoder: text -> fixed unit vector; image -> its mean colour, normalised."""

    model_id, revision, dim = "test:tiny", "v0", 3

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (len(texts), 1))

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        x = np.array([np.asarray(im, np.float32).mean(axis=(0, 1)) + 1 for im in images])
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_clip_reranker_is_cosine_similarity() -> None:
    from PIL import Image

    from inquire.embed.base import Encoder

    enc = TinyEncoder()
    assert isinstance(enc, Encoder)
    reds = [Image.new("RGB", (8, 8), c) for c in [(250, 10, 10), (10, 250, 10), (120, 120, 120)]]
    reranker = ClipReranker(enc)
    scores = reranker.score("anything", reds)
    expected = [enc.encode_images([im])[0] @ enc.encode_text(["x"])[0] for im in reds]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert scores[0] > scores[2] > scores[1]
    assert reranker.reranker_id == "clip:test:tiny" and reranker.revision == "v0"


def test_registry_names() -> None:
    kind, rest = parse_reranker_id("vlm:llava-1.5/llava-hf/llava-1.5-7b-hf")
    assert kind.name == "vlm" and rest == "llava-1.5/llava-hf/llava-1.5-7b-hf"
    with pytest.raises(UnknownNameError, match="'vlm'"):
        parse_reranker_id("vml:x")
    with pytest.raises(UnknownNameError):
        parse_reranker_id("llava")
    with pytest.raises(InputError, match="names no model"):
        parse_reranker_id("api:")


def test_two_stage_reranks_the_top_from_k() -> None:
    queries = pd.DataFrame(
        {
            "query_id": [1, 2],
            "query_text": ["a fox", "an owl"],
            "supercategory": ["Species", "Species"],
            "category": ["x", "x"],
            "iconic_group": ["Mammals", "Birds"],
        }
    )
    first = Run({1: ([10, 11, 12, 13], [4, 3, 2, 1]), 2: ([20, 21, 22], [3, 2, 1])}, name="clip")
    qrels = Qrels({1: [12, 13, 99], 2: [20]})
    relevant = {b"12", b"13", b"20"}
    oracle = OracleReranker(relevant)
    res = evaluate_two_stage(
        first,
        oracle,
        lambda image_id: str(image_id).encode(),
        qrels,
        queries,
        k=2,
        from_k=3,
        progress=False,
    )
    # query 1: only the top 3 (10, 11, 12) are reranked -> 12 first; 13 is beyond from_k
    assert res.run[1][0].tolist()[0] == 12 and 13 not in res.run[1][0].tolist()
    pq_ = res.result.per_query.set_index("query_id")
    assert pq_.loc[1, "ap"] == pytest.approx(1 / 2)  # one hit at rank 1, min(R=3, k=2) = 2
    assert pq_.loc[2, "ap"] == pytest.approx(1.0)
    assert oracle.calls == 6
    with pytest.raises(InputError, match="from-k"):
        evaluate_two_stage(first, oracle, lambda i: b"", qrels, queries, k=5, from_k=3)


def test_cli_eval_rerank(synthetic: dict[str, list[Path]], tmp_path: Path) -> None:
    from inquire.cli import app

    runner = CliRunner()
    data = str(synthetic["test"][0])
    res = runner.invoke(
        app, ["eval", "rerank", "--reranker", "clip_score", "--data", data, "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    assert "AP@50" in res.output and (tmp_path / "summary.json").is_file()
    qcsv = synthetic["test"][0].parent.parent / "benchmark" / "inquire_queries_test.csv"
    res = runner.invoke(
        app,
        [
            "eval",
            "rerank",
            "--reranker",
            "clip_score",
            "--data",
            data,
            "--queries",
            str(qcsv),
            "--out",
            str(tmp_path / "ids"),
        ],
    )
    assert res.exit_code == 0, res.output
    ids = pd.read_csv(tmp_path / "ids" / "per_query.csv")["query_id"]
    assert set(ids) <= set(read_queries(qcsv)["query_id"])
    res = runner.invoke(app, ["eval", "rerank", "--reranker", "random", "--data", data])
    assert res.exit_code == 0 and "expected AP of a random order" in res.output
    bad = runner.invoke(app, ["eval", "rerank", "--reranker", "vml:x", "--data", data])
    assert bad.exit_code == 2 and "vlm" in bad.output
    listed = runner.invoke(app, ["rerank", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "paligemma" in listed.output
    for upstream in (
        "Salesforce/blip2-flan-t5-xxl",
        "Salesforce/instructblip-flan-t5-xxl",
        "google/paligemma-3b-mix-448",
        "llava-hf/llava-1.5-13b-hf",
        "llava-hf/llava-v1.6-mistral-7b-hf",
        "llava-hf/llava-v1.6-34b-hf",
        "Efficient-Large-Model/VILA1.5-13B",
        "Efficient-Large-Model/VILA1.5-40b",
        "gpt-4-turbo-2024-04-09",
        "gpt-4o-2024-08-06",
        "inquire-2024",
        "inquire-sum",
    ):
        assert upstream in listed.output, upstream


def test_cli_import_cache_refuses_without_trust(tmp_path: Path) -> None:
    from inquire.cli import app

    npy = tmp_path / "x.npy"
    np.save(npy, np.array({"a.jpg--q": 0.5}, dtype=object), allow_pickle=True)
    res = CliRunner().invoke(app, ["rerank", "import-cache", str(npy), "--name", "x"])
    assert res.exit_code == 2 and "--trust-pickle" in res.output


def test_cli_imported_scores_evaluate_without_a_model(
    synthetic: dict[str, list[Path]], tmp_path: Path
) -> None:
    """INQUIRE-style cache -> import-cache --trust-pickle -> eval rerank --reranker cached:X."""
    from inquire.cli import app

    data = str(synthetic["test"][0])
    rs = read_rerank_set([data])
    template = 'Does this picture show "{query}"? Answer yes or no.'
    entries = {}
    for q, text in zip(rs.queries["query_id"], rs.queries["query_text"], strict=True):
        pool = rs.pool(int(q))
        for name, rel in zip(pool["file_name"], pool["relevant"], strict=True):
            entries[f"/mnt/inat24/{name}--{template.format(query=text)}"] = float(rel)
    npy = tmp_path / "released.npy"
    np.save(npy, np.array(entries, dtype=object), allow_pickle=True)
    runner = CliRunner()
    imp = runner.invoke(
        app,
        [
            "rerank",
            "import-cache",
            str(npy),
            "--name",
            "released",
            "--trust-pickle",
            "--data",
            data,
            "--prompt-template",
            template,
        ],
    )
    assert imp.exit_code == 0, imp.output
    assert f"imported {len(entries)} scores" in imp.output
    res = runner.invoke(
        app,
        [
            "eval",
            "rerank",
            "--reranker",
            "cached:released",
            "--data",
            data,
            "--out",
            str(tmp_path / "res"),
        ],
    )
    assert res.exit_code == 0, res.output
    per_query = pd.read_csv(tmp_path / "res" / "per_query.csv")
    assert per_query["ap"].to_numpy() == pytest.approx(1.0)
    # a model that was never imported: every candidate is a failure, and evaluation stops
    missing = runner.invoke(app, ["eval", "rerank", "--reranker", "cached:other", "--data", data])
    assert missing.exit_code == 2 and "could not be scored" in missing.output


def test_cli_imports_an_inquire_cache_file_and_evaluates_it(
    synthetic: dict[str, list[Path]], tmp_path: Path
) -> None:
    """The documented pair: `rerank import-cache <INQUIRE's llava-1.5-13b cache>` then
    `eval rerank --reranker cached:NAME`, under the inquire-2024 protocol."""
    import json

    from inquire.cli import app

    data = str(synthetic["test"][0])
    rs = read_rerank_set([data])
    entries = {}
    for q, text in zip(rs.queries["query_id"], rs.queries["query_text"], strict=True):
        pool = rs.pool(int(q))
        # INQUIRE's LLaVA-1.5 prompt, written out (ModelWrapperWithCache key: file--prompt)
        prompt = (
            f"USER: <image>\nDoes this picture show {text}?Answer the question with either "
            '"Yes" or "No" and nothing else.\nASSISTANT:'
        )
        for name, rel in zip(pool["file_name"], pool["relevant"], strict=True):
            entries[f"{name}--{prompt}"] = 0.1 + 0.8 * float(rel)
    npy = tmp_path / "llava-hf--llava-1.5-13b-hf--cache.npy"
    np.save(npy, np.array(entries, dtype=object), allow_pickle=True)
    runner = CliRunner()
    args = ["rerank", "import-cache", str(npy), "--name", "llava13", "--trust-pickle"]
    imp = runner.invoke(app, [*args, "--data", data])
    assert imp.exit_code == 0, imp.output
    assert f"imported {len(entries)} scores" in imp.output and "inquire-2024" in imp.output
    out = tmp_path / "res"
    cmd = ["eval", "rerank", "--reranker", "cached:llava13", "--data", data]
    res = runner.invoke(app, [*cmd, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(out / "per_query.csv")["ap"].to_numpy() == pytest.approx(1.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["protocol"] == "inquire-2024"
    assert summary["name"] == "cached:llava13 (inquire-2024)"
    assert "cached:llava13 (inquire-2024)" in res.output  # the table title names it
    # the scores were imported under inquire-2024: another protocol finds none of them
    other = runner.invoke(app, [*cmd, "--protocol", "inquire-sum"])
    assert other.exit_code == 2 and "could not be scored" in other.output
    bad = runner.invoke(app, [*cmd, "--protocol", "inquire-2023"])
    assert bad.exit_code == 2 and "inquire-2024" in bad.output


def test_cli_api_failures_stop_then_a_rerun_retries_only_them(
    synthetic: dict[str, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inquire.cli import app
    from inquire.testing.rerank_fake_openai import FakeOpenAI

    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    data = str(synthetic["test"][0])
    n_candidates = len(read_rerank_set([data]).candidates)
    runner = CliRunner()
    with FakeOpenAI() as server:
        args = ["eval", "rerank", "--reranker", "api:fake", "--data", data]
        args += ["--base-url", server.base_url, "--api-key-env", "FAKE_KEY", "--concurrency", "4"]
        server.script(["401"] * 3)  # three requests fail for good (client errors: no retry)
        first = runner.invoke(app, args)
        assert first.exit_code == 2 and "3 of" in first.output, first.output
        assert len(server.requests) == n_candidates
        second = runner.invoke(app, [*args, "--out", str(tmp_path / "api")])
        assert second.exit_code == 0, second.output
        assert len(server.requests) == n_candidates + 3  # only the failures were asked again
    summary = (tmp_path / "api" / "summary.json").read_text()
    assert '"failures": 0' in summary and "sk-fake" not in summary
    assert '"refused_scored_0": 0' in summary
    # inquire-2024: two refused requests (HTTP 400) score 0, are counted, and are not cached
    with FakeOpenAI() as server:
        args = ["eval", "rerank", "--reranker", "api:fake", "--data", data, "--no-cache"]
        args += ["--base-url", server.base_url, "--api-key-env", "FAKE_KEY", "--concurrency", "1"]
        server.script(["400", "400"])
        third = runner.invoke(app, [*args, "--out", str(tmp_path / "refused")])
        assert third.exit_code == 0, third.output
        assert "2 API requests were refused (HTTP 400) and scored 0" in third.output
    summary = (tmp_path / "refused" / "summary.json").read_text()
    assert '"refused_scored_0": 2' in summary and '"protocol": "inquire-2024"' in summary


def test_queries_without_relevant_candidates_are_left_out(
    synthetic: dict[str, list[Path]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = pq.read_table(synthetic["test"][0])
    df = table.to_pandas()
    df.loc[df["query"] == df["query"].iloc[0], "relevant"] = 0
    path = tmp_path / "no-relevant.parquet"
    pq.write_table(pa.Table.from_pandas(df, schema=table.schema, preserve_index=False), path)
    rs = read_rerank_set([path])
    gone = rs.query_ids[0]
    with caplog.at_level("WARNING"):
        res = evaluate_rerank(rs, "clip_score", progress=False)
    assert gone not in res.result.per_query["query_id"].tolist()
    assert len(res.result.per_query) == len(rs.query_ids) - 1
    assert res.result.config["excluded_queries_no_relevant"] == [gone]
    assert "no relevant candidate" in caplog.text


def test_image_resolver(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.jpg").write_bytes(b"x")
    resolve = image_resolver({1: "train/a", 2: "train/a.jpg", 3: "train/missing"}, tmp_path)
    assert resolve(1) == resolve(2) == tmp_path / "train" / "a.jpg"
    with pytest.raises(InputError, match="does not exist"):
        resolve(3)
    with pytest.raises(InputError, match="image id 4"):
        resolve(4)


def test_images_and_options_are_checked(tmp_path: Path) -> None:
    from inquire.rerank import load_image, load_reranker
    from inquire.rerank.base import image_bytes

    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(b"not an image at all")
    with pytest.raises(InputError, match="cannot use a int"):
        load_image(3)
    png = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGBA", (4, 4)).save(png)
    assert load_image(png).mode == "RGB"
    assert image_bytes(png)[1] == "image/png"
    with pytest.raises(InputError, match="unknown reranker option"):
        load_reranker("cached:x", devcie="cuda")
