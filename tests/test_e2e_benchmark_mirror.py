"""End to end, as a user runs it: the benchmark files come from a mirror over HTTP, the CLI
downloads them, evaluates INQUIRE-Rerank, reports and compares; then the same evaluation runs
again with the server gone, from the cache.

The mirror holds INQUIRE's REAL query CSVs, an annotations CSV and INQUIRE-Rerank parquet
shards in the upstream layout under the file names the registry expects. The shards' images,
candidates, relevance flags and clip scores are SYNTHETIC, but each pool is labelled with a
REAL INQUIRE query (text and groups), as the published shards are: so the reader must give
every pool its real INQUIRE query id by joining the texts to the downloaded query tables.
Every metric is checked against a plain computation from the parquet rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data.queries import read_queries
from inquire.data.registry import GROUPS, get_artifact
from inquire.data.rerank_set import write_synthetic_rerank_set
from inquire.eval.evaluate import EvalResult
from inquire.run import Run
from inquire.testing.data_mirror import annotations_csv, write_mirror
from inquire.testing.http_server import FixtureServer

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


def _relabel(table: pa.Table, queries: pd.DataFrame) -> pa.Table:
    """Give the synthetic pools of ``table`` the texts and groups of real ``queries`` (in
    order of first appearance), keeping the upstream schema and its metadata."""
    texts = pd.unique(table.column("query").to_pandas())
    real = queries.iloc[: len(texts)].reset_index(drop=True)
    mapping = {t: i for i, t in enumerate(texts)}
    pos = table.column("query").to_pandas().map(mapping).to_numpy()
    for col, src in (
        ("query", "query_text"),
        ("supercategory", "supercategory"),
        ("category", "category"),
        ("iconic_group", "iconic_group"),
    ):
        values = pa.array(real[src].to_numpy()[pos].astype(str), pa.string())
        table = table.set_column(table.schema.get_field_index(col), col, values)
    return table


def _write_shards(table: pa.Table, paths: list[Path]) -> None:
    """Split ``table`` by whole queries into ``len(paths)`` parquet shards."""
    texts = list(pd.unique(table.column("query").to_pandas()))
    chunks = np.array_split(np.arange(len(texts)), len(paths))
    for path, chunk in zip(paths, chunks, strict=True):
        mask = pc.is_in(table.column("query"), pa.array([texts[i] for i in chunk], pa.string()))
        part = table.filter(mask)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, row_group_size=200)


def _inquire_metrics(rel: np.ndarray, k: int) -> dict[str, float]:
    """INQUIRE's metrics for one ranked pool, computed the plain way (R = relevant in pool)."""
    r = int(rel.sum())
    top = rel[:k]
    hits, total, first = 0, 0.0, 0.0
    for i, x in enumerate(top, start=1):
        if x:
            hits += 1
            total += hits / i
            first = first or 1.0 / i
    return {
        "ap": total / min(r, k),
        "mrr": first,
        "precision": hits / k,
        "recall": hits / r,
    }


@pytest.fixture
def mirror_root(tmp_path: Path, real_queries_dir: Path) -> dict[str, object]:
    """The mirror folder and what the checks need to know about its contents."""
    root = tmp_path / "mirror"
    val_q = read_queries(real_queries_dir / "inquire_queries_val.csv")
    test_q = read_queries(real_queries_dir / "inquire_queries_test.csv")
    both = pd.concat([val_q, test_q], ignore_index=True)
    write_mirror(
        root,
        {
            "queries-val": (real_queries_dir / "inquire_queries_val.csv").read_bytes(),
            "queries-test": (real_queries_dir / "inquire_queries_test.csv").read_bytes(),
            "annotations": annotations_csv(both, seed=3),
        },
    )
    synth = write_synthetic_rerank_set(tmp_path / "synth", n_val=3, n_test=4, image_size=16)
    val = _relabel(pq.read_table(synth["val"][0]), val_q)
    # the reranker must not be helped by a query_id column: the published card has none
    assert "query_id" not in val.schema.names
    (val_art,) = (get_artifact(n) for n in GROUPS["rerank-val"])
    _write_shards(val, [root / val_art.mirror_path])
    test = _relabel(pq.read_table(synth["test"][0]), test_q)
    test_arts = [get_artifact(n) for n in GROUPS["rerank-test"]]
    _write_shards(test, [root / a.mirror_path for a in test_arts])
    return {"root": root, "val": val, "test": test, "queries": both}


def _expected(table: pa.Table, queries: pd.DataFrame, order: str) -> pd.DataFrame:
    """Per-query metrics from the parquet rows: pools ranked by clip_score (desc, stable)."""
    df = table.select(["query", "relevant", "clip_score", "inat24_image_id"]).to_pandas()
    ids = dict(zip(queries["query_text"], queries["query_id"], strict=False))
    rows = []
    for text, pool in df.groupby("query", sort=False):
        assert order == "clip_score"
        ranked = pool.sort_values("clip_score", ascending=False, kind="stable")
        rel = ranked["relevant"].to_numpy() == 1
        row = {"query_id": int(ids[text]), **_inquire_metrics(rel, 100)}
        row["ap@50"] = _inquire_metrics(rel, 50)["ap"]
        rows.append(row)
    return pd.DataFrame(rows).sort_values("query_id").reset_index(drop=True)


def _per_query(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "per_query.csv")
    at50 = pd.read_csv(out / "at50" / "per_query.csv")
    df = df.merge(at50[["query_id", "ap"]].rename(columns={"ap": "ap@50"}), on="query_id")
    return df.sort_values("query_id").reset_index(drop=True)


def _check_against_parquet(out: Path, table: pa.Table, queries: pd.DataFrame) -> None:
    got = _per_query(out)
    want = _expected(table, queries, "clip_score")
    assert got["query_id"].tolist() == want["query_id"].tolist()
    for col in ("ap", "ap@50", "mrr", "precision", "recall"):
        np.testing.assert_allclose(got[col], want[col], rtol=0, atol=1e-12, err_msg=col)


def test_rerank_benchmark_through_a_mirror_then_offline(
    mirror_root: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = mirror_root["root"]
    assert isinstance(root, Path)
    val, test = mirror_root["val"], mirror_root["test"]
    queries = mirror_root["queries"]
    assert isinstance(val, pa.Table) and isinstance(test, pa.Table)
    assert isinstance(queries, pd.DataFrame)
    clip_dir, random_dir, test_dir = tmp_path / "clip", tmp_path / "random", tmp_path / "test"

    with FixtureServer(root) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)

        res = runner.invoke(app, ["download", "--list"], env=WIDE)
        assert res.exit_code == 0, res.output
        for name in ("queries-val", "annotations", "rerank-val-00000", "rerank-test-00003"):
            assert name in res.output
        assert not server.requests  # listing is local

        res = runner.invoke(app, ["download", "queries-val", "--no-progress"])
        assert res.exit_code == 0, res.output
        local = Path(res.output.strip().splitlines()[-1])
        assert local.read_bytes() == (root / get_artifact("queries-val").mirror_path).read_bytes()
        got_q = read_queries(local)
        assert len(got_q) == 50
        assert got_q["supercategory"].value_counts().sort_index().tolist() == [17, 17, 12, 4]

        res = runner.invoke(
            app,
            [
                "eval",
                "rerank",
                "--reranker",
                "clip_score",
                "--split",
                "val",
                "--out",
                str(clip_dir),
            ],
            env=WIDE,
        )
        assert res.exit_code == 0, res.output
        assert "INQUIRE-Rerank (val)" in res.output
        # the shard was fetched through the registry, from the mirror, under its upstream name
        val_path = get_artifact("rerank-val-00000").mirror_path
        assert [r.status for r in server.gets(val_path)] == [200]
        assert server.gets(get_artifact("queries-test").mirror_path)

        res = runner.invoke(
            app,
            [
                "eval",
                "rerank",
                "--reranker",
                "random",
                "--seed",
                "7",
                "--split",
                "val",
                "--out",
                str(random_dir),
            ],
            env=WIDE,
        )
        assert res.exit_code == 0, res.output
        assert "expected AP of a random order" in res.output
        assert len(server.gets(val_path)) == 1  # cached: not downloaded again

        # the test split: four shards in the registry's order
        res = runner.invoke(
            app,
            [
                "eval",
                "rerank",
                "--reranker",
                "clip_score",
                "--split",
                "test",
                "--out",
                str(test_dir),
            ],
            env=WIDE,
        )
        assert res.exit_code == 0, res.output
        for name in GROUPS["rerank-test"]:
            assert len(server.gets(get_artifact(name).mirror_path)) == 1
        n_requests = len(server.requests)

    # metrics against the parquet rows; ids are INQUIRE's real ids of the pools' texts
    _check_against_parquet(clip_dir, val, queries)
    _check_against_parquet(test_dir, test, queries)
    val_texts = pd.unique(val.column("query").to_pandas())
    real_ids = queries.set_index("query_text").loc[list(val_texts), "query_id"].tolist()
    assert sorted(_per_query(clip_dir)["query_id"]) == sorted(real_ids)
    result = EvalResult.load(clip_dir)
    assert set(result.per_query["supercategory"]) <= {
        "Appearance",
        "Behavior",
        "Context",
        "Species",
    }

    # random: every pool ranked in full, metrics consistent with its own saved order
    run = Run.read(random_dir / "run.parquet")
    df = val.select(["query", "relevant", "inat24_image_id"]).to_pandas()
    ids_of = dict(zip(queries["query_text"], queries["query_id"], strict=False))
    rnd = _per_query(random_dir).set_index("query_id")
    for text, pool in df.groupby("query", sort=False):
        qid = int(ids_of[text])
        ranked_ids, _ = run[qid]
        assert sorted(ranked_ids.tolist()) == sorted(pool["inat24_image_id"].tolist())
        rel_of = dict(zip(pool["inat24_image_id"], pool["relevant"], strict=True))
        rel = np.array([rel_of[i] == 1 for i in ranked_ids])
        want = _inquire_metrics(rel, 100)
        assert rnd.loc[qid, "ap"] == pytest.approx(want["ap"], abs=1e-12)
        assert rnd.loc[qid, "ap@50"] == pytest.approx(_inquire_metrics(rel, 50)["ap"], abs=1e-12)
    summary = json.loads((random_dir / "summary.json").read_text())
    assert summary["config"]["ranker"] == "random"

    # report and compare over the two result folders
    res = runner.invoke(
        app,
        ["report", str(clip_dir), str(random_dir), "--format", "markdown", "--bootstrap", "200"],
        env=WIDE,
    )
    assert res.exit_code == 0, res.output
    clip_ap = 100 * _per_query(clip_dir)["ap"].mean()
    random_ap = 100 * _per_query(random_dir)["ap"].mean()
    rows = [line for line in res.output.splitlines() if line.startswith("|")]
    for name, ap in (("clip_score", clip_ap), ("random", random_ap)):
        overall = [r for r in rows if name in r and re.search(r"\|\s*(all|overall)\s*\|", r)]
        assert overall, res.output
        assert f"{ap:.1f}" in overall[0], (name, ap, overall[0])

    res = runner.invoke(app, ["compare", str(clip_dir), str(random_dir)], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "clip_score" in res.output and "random" in res.output
    a = _per_query(clip_dir).set_index("query_id")["ap"]
    b = _per_query(random_dir).set_index("query_id")["ap"].loc[a.index]
    wins, losses = int((a > b).sum()), int((a < b).sum())
    assert f"{wins}/{losses}/{len(a) - wins - losses}" in res.output
    assert f"{clip_ap - random_ap:+.1f}" in res.output

    # offline: the server is gone; the mirror URL still set; everything comes from the cache
    again = tmp_path / "clip-offline"
    res = runner.invoke(
        app,
        ["eval", "rerank", "--reranker", "clip_score", "--split", "val", "--out", str(again)],
        env=WIDE,
    )
    assert res.exit_code == 0, res.output
    assert len(server.requests) == n_requests
    pd.testing.assert_frame_equal(_per_query(again), _per_query(clip_dir))


def _published_store(root: Path, annotations: pd.DataFrame, text: dict[str, np.ndarray]) -> None:
    """Embeddings in the layout of INQUIRE's published ones: two shards, metadata with only
    ``image_path`` (no ``.jpg``, no ids). Relevant images lie near their query's text."""
    rng = np.random.default_rng(5)
    paths, vecs = [], []
    for row in annotations.itertuples():
        t = text.get(str(row.query_text))
        v = rng.normal(size=16) if t is None else t + rng.normal(scale=0.08, size=16)
        paths.append(str(row.image_path).removesuffix(".jpg"))
        vecs.append(v)
    for i in range(300):  # images no query is about
        paths.append(f"train/99999_Fixture_distractor/{i:05d}-none")
        vecs.append(rng.normal(size=16))
    order = rng.permutation(len(paths))
    emb = np.asarray(vecs)[order]
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)
    meta = pd.DataFrame({"image_path": np.asarray(paths)[order]})
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    half = len(emb) // 2
    for i, sl in enumerate((slice(0, half), slice(half, None))):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", emb[sl])
        meta.iloc[sl].to_parquet(root / "metadata" / f"metadata_{i}.parquet", index=False)


def test_fullrank_on_published_layout_through_the_mirror(
    mirror_root: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = mirror_root["root"]
    queries = mirror_root["queries"]
    assert isinstance(root, Path) and isinstance(queries, pd.DataFrame)
    ann = pd.read_csv(root / get_artifact("annotations").mirror_path)
    val_q = read_queries(root / get_artifact("queries-val").mirror_path)
    rng = np.random.default_rng(9)
    text = {t: rng.normal(size=16) for t in val_q["query_text"]}
    text = {t: v / np.linalg.norm(v) for t, v in text.items()}
    pd.DataFrame(
        {"query_text": list(text), "embedding": [v.tolist() for v in text.values()]}
    ).to_parquet(tmp_path / "text.parquet")
    ann_q = ann.merge(queries[["query_id", "query_text"]], on="query_id")
    emb_dir = tmp_path / "emb"
    _published_store(emb_dir, ann_q, text)
    model = f"precomputed:{tmp_path / 'text.parquet'}"
    out, again = tmp_path / "fullrank", tmp_path / "evaluated"

    with FixtureServer(root) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        res = runner.invoke(
            app,
            [
                *("eval", "fullrank", "--model", model, "--split", "val"),
                *("--embeddings", str(emb_dir), "--k", "50", "--out", str(out)),
            ],
            env=WIDE,
        )
        assert res.exit_code == 0, res.output
        assert server.gets(get_artifact("annotations").mirror_path)
        # the saved run evaluates to the same numbers through `inquire evaluate`
        res = runner.invoke(
            app,
            [
                "evaluate",
                "--run",
                str(out / "run.parquet"),
                "--split",
                "val",
                "--k",
                "50",
                "--out",
                str(again),
            ],
            env=WIDE,
        )
        assert res.exit_code == 0, res.output

    # brute force over the shards; rows take the annotated id of their path, others 10**12 + row
    vecs = np.concatenate([np.load(emb_dir / "img_emb" / f"img_emb_{i}.npy") for i in (0, 1)])
    paths = pd.concat(
        [pd.read_parquet(emb_dir / "metadata" / f"metadata_{i}.parquet") for i in (0, 1)]
    )["image_path"].tolist()
    id_of_path = dict(
        zip(ann["image_path"].str.removesuffix(".jpg"), ann["image_id"], strict=False)
    )
    ids = np.array([id_of_path.get(p, 10**12 + r) for r, p in enumerate(paths)], np.int64)
    got = pd.read_csv(out / "per_query.csv").set_index("query_id")
    assert len(got) == 50
    for qid, t in zip(val_q["query_id"], val_q["query_text"], strict=True):
        scores = vecs.astype(np.float64) @ text[t]
        ranked = ids[np.lexsort((np.arange(len(ids)), -scores))[:50]]
        relevant = set(ann.loc[ann["query_id"] == qid, "image_id"])
        rel = np.array([i in relevant for i in ranked])
        hits = np.cumsum(rel)
        ap = float(np.sum(rel * hits / np.arange(1, 51))) / min(len(relevant), 50)
        assert got.loc[qid, "ap"] == pytest.approx(ap, abs=1e-12), qid
        assert got.loc[qid, "recall"] == pytest.approx(hits[-1] / len(relevant))
    assert got["ap"].mean() > 0.5  # relevant images lie near their queries: the join worked
    pd.testing.assert_frame_equal(
        pd.read_csv(again / "per_query.csv")[["query_id", "ap", "ndcg", "mrr"]],
        pd.read_csv(out / "per_query.csv")[["query_id", "ap", "ndcg", "mrr"]],
    )
