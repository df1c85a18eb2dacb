"""Bad input through the real commands: a one-line error naming the file, exit 2, nothing
written. (Silent wrong results and damaged files become errors.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data.qrels import Qrels
from inquire.data.queries import read_queries
from inquire.data.rerank_set import write_synthetic_rerank_set
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.run import Run
from inquire.testing.search_stores import random_unit, write_store

QUERIES = pd.DataFrame(
    {
        "query_id": [1, 2],
        "query_text": ["a heron", "a red fox"],
        "supercategory": ["Behavior", "Appearance"],
        "category": ["Feeding", "Colour"],
        "iconic_group": ["Birds", "Mammals"],
    }
)
QRELS = Qrels({1: {10, 11}, 2: {20}})
RUN = Run({1: ([10, 99, 11], [0.9, 0.8, 0.7]), 2: ([21, 20], [0.5, 0.4])}, name="toy")


def _invoke(args: list[str]):
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert "Traceback" not in res.output and "Aborted" not in res.output, res.output
    return res


def _error(args: list[str]) -> str:
    """Run a command that must fail: exit 2 with one 'error:' line; return it."""
    res = _invoke(args)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: "), res.output
    return " ".join(res.output.split())


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    queries = tmp_path / "queries.csv"
    QUERIES.to_csv(queries, index=True)
    ann = tmp_path / "ann.csv"
    QRELS.to_dataframe().to_csv(ann, index=False)
    return {"queries": queries, "annotations": ann}


def _evaluate(files: dict[str, Path], run: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--run",
        str(run),
        "--queries",
        str(files["queries"]),
        "--annotations",
        str(files["annotations"]),
        "--k",
        "2",
        *extra,
    ]


# ---------------------------------------------------------------- silent wrong results


def test_run_sharing_no_query_with_the_query_set_is_an_error(
    files: dict[str, Path], tmp_path: Path
) -> None:
    wrong = Run({7: ([10], [1.0]), 8: ([20], [1.0])}, name="val-run")
    wrong.save_trec(tmp_path / "wrong.trec")
    out = tmp_path / "res"
    msg = _error(_evaluate(files, tmp_path / "wrong.trec", "--out", str(out)))
    assert "shares no query id with the query set" in msg and "[7, 8]" in msg
    assert not out.exists()  # nothing for `report` to pick up
    # one shared query is enough: the others count as empty lists (and are logged)
    Run({1: ([10], [1.0]), 8: ([20], [1.0])}).save_trec(tmp_path / "some.trec")
    assert _invoke(_evaluate(files, tmp_path / "some.trec")).exit_code == 0


def test_empty_parquet_run_is_an_error(files: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    Run({}).save_parquet(empty)
    out = tmp_path / "res"
    msg = _error(_evaluate(files, empty, "--out", str(out)))
    assert "has no rows" in msg and "empty.parquet" in msg
    assert not out.exists()


def _parquet_run(path: Path, **columns: list) -> Path:
    base = {"query_id": [1, 1, 2], "image_id": [10, 11, 20], "score": [0.9, 0.8, 0.7]}
    pq.write_table(pa.table({**base, **columns}), path)
    return path


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ("image_id", [10.0, 2.5, 20.0], "row 2 has image_id 2.5"),
        ("query_id", [1.0, 1.0, 2.25], "row 3 has query_id 2.25"),
        ("image_id", [10.0, None, 20.0], "row 2 has image_id nan"),
        ("score", [0.9, float("nan"), 0.7], "row 2 (query 1, image 11) has score nan"),
        ("score", [0.9, 0.8, float("inf")], "row 3 (query 2, image 20) has score inf"),
        ("score", [float("-inf"), 0.8, 0.7], "row 1 (query 1, image 10) has score -inf"),
    ],
)
def test_bad_values_in_a_parquet_run_are_refused_naming_the_row(
    files: dict[str, Path], tmp_path: Path, column: str, values: list, expected: str
) -> None:
    run = _parquet_run(tmp_path / "bad.parquet", **{column: values})
    msg = _error(_evaluate(files, run))
    assert expected in msg and "bad.parquet" in msg


def test_whole_float_ids_in_a_parquet_run_are_read_as_integers(tmp_path: Path) -> None:
    run = Run.read(_parquet_run(tmp_path / "f.parquet", image_id=[10.0, 11.0, 20.0]))
    assert run[1][0].dtype == np.int64 and run[1][0].tolist() == [10, 11]


def test_trec_run_infinite_score_and_byte_order_mark(
    files: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "inf.trec").write_text("1 Q0 10 1 inf t\n1 Q0 11 2 0.5 t\n")
    assert "line 1: score 'inf' is not a finite number" in _error(
        _evaluate(files, tmp_path / "inf.trec")
    )
    RUN.save_trec(tmp_path / "plain.trec")
    bom = tmp_path / "bom.trec"
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.trec").read_bytes())
    a, b = Run.read(tmp_path / "plain.trec"), Run.read(bom)
    assert sorted(a) == sorted(b) == [1, 2]
    res = _invoke(_evaluate(files, bom, "--out", str(tmp_path / "res")))
    assert res.exit_code == 0, res.output
    per_query = pd.read_csv(tmp_path / "res" / "per_query.csv")
    np.testing.assert_allclose(per_query["ap"], [0.5, 0.5])  # 20 found at rank 2


@pytest.mark.usefixtures("inquire_mirror")
def test_split_and_queries_that_disagree_is_an_error(
    real_queries_dir: Path, tmp_path: Path
) -> None:
    mirror = real_queries_dir
    val = read_queries(mirror / "inquire_queries_val.csv")
    Run({int(q): ([1], [1.0]) for q in val["query_id"]}).save_trec(tmp_path / "run.trec")
    base = ["evaluate", "--run", str(tmp_path / "run.trec"), "--k", "5"]
    val_csv, test_csv = mirror / "inquire_queries_val.csv", mirror / "inquire_queries_test.csv"
    msg = _error([*base, "--split", "test", "--queries", str(val_csv)])
    assert "--split 'test' disagree" in msg and "inquire_queries_val.csv" in msg
    ok = _invoke([*base, "--split", "val", "--queries", str(val_csv), "-o", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["config"]["split"] == "val"
    # --queries alone is not checked against a split (a custom query file)
    assert _invoke([*base, "--queries", str(test_csv)]).exit_code == 2  # no shared query ids
    assert _invoke([*base, "--queries", str(val_csv)]).exit_code == 0


# ---------------------------------------------------------------- --out naming a file


def test_out_naming_an_existing_file_fails_before_any_work(
    files: dict[str, Path], tmp_path: Path
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    RUN.save_trec(tmp_path / "run.trec")
    msg = _error(_evaluate(files, tmp_path / "run.trec", "--out", str(taken)))
    assert "is an existing file" in msg and "taken" in msg
    # embed: refused before the model is loaded (this model id does not even exist)
    msg = _error(["embed", "-m", "open_clip:nope", "--images", str(tmp_path), "--out", str(taken)])
    assert "is an existing file" in msg
    # collection export: before the collection is opened
    msg = _error(["collection", "export", "nope", "--search-id", "x", "--out", str(taken)])
    assert "already exists" in msg and "--overwrite" in msg
    assert taken.read_text() == "keep me"


def test_report_out_existing_file_needs_overwrite(files: dict[str, Path], tmp_path: Path) -> None:
    RUN.save_trec(tmp_path / "run.trec")
    assert (
        _invoke(_evaluate(files, tmp_path / "run.trec", "--out", str(tmp_path / "r"))).exit_code
        == 0
    )
    report = tmp_path / "report.md"
    report.write_text("old")
    args = ["report", str(tmp_path / "r"), "-f", "markdown", "--bootstrap", "0", "-o", str(report)]
    assert "already exists" in _error(args)
    assert report.read_text() == "old"
    res = _invoke([*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert report.read_text() != "old"
    assert "is a folder" in _error([*args[:-1], str(tmp_path / "r")])
    assert "--plots" in _error([*args, "--overwrite", "--plots", str(report)])


# ---------------------------------------------------------------- damaged embedding stores


@pytest.fixture
def bench(tmp_path: Path):
    return make_synthetic_benchmark(tmp_path / "b", n_images=600, n_val=1, n_test=2, dim=16)


def _index(emb: Path) -> list[str]:
    return ["index", "build", "--embeddings", str(emb), "--factory", "Flat"]


def _fullrank(bench, emb: Path) -> list[str]:
    return [
        "eval",
        "fullrank",
        "-m",
        f"precomputed:{bench.text_embeddings}",
        "--embeddings",
        str(emb),
        "--queries",
        str(bench.queries_test),
        "--annotations",
        str(bench.annotations),
        "--k",
        "5",
        "--no-cache",
    ]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("zero", "is empty (0 bytes)"),
        ("truncated", "is truncated"),
        ("garbage", "is not a readable .npy array"),
        ("npz", "is not a single .npy array"),
        ("1d", "holds a float16 array of shape (60,)"),
        ("int", "holds a int64 array"),
    ],
)
def test_damaged_shard_is_named(tmp_path: Path, damage: str, expected: str) -> None:
    emb = write_store(tmp_path / "emb", random_unit(120, 8), shard_sizes=[60, 60])
    bad = emb / "img_emb" / "img_emb_1.npy"
    if damage == "zero":
        bad.write_bytes(b"")
    elif damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:-100])
    elif damage == "garbage":
        bad.write_bytes(b"<html>Not found</html>" * 10)
    elif damage == "npz":
        np.savez(bad.with_suffix(""), x=np.zeros((60, 8), np.float16))
        bad.with_suffix(".npz").rename(bad)
    elif damage == "1d":
        np.save(bad, np.zeros(60, np.float16))
    else:
        np.save(bad, np.zeros((60, 8), np.int64))
    msg = _error(_index(emb))
    assert expected in msg and "img_emb_1.npy" in msg and "img_emb_0.npy" not in msg


def test_shards_of_different_dtype_or_dimension_name_the_odd_one(tmp_path: Path) -> None:
    emb = write_store(tmp_path / "emb", random_unit(90, 8), shard_sizes=[30, 30, 30])
    np.save(emb / "img_emb" / "img_emb_2.npy", random_unit(30, 8).astype(np.float32))
    msg = _error(_index(emb))
    assert "img_emb_2.npy' is float32 but" in msg and "img_emb_0.npy' is float16" in msg
    np.save(emb / "img_emb" / "img_emb_1.npy", random_unit(30, 4).astype(np.float16))
    msg = _error(_index(emb))
    assert "img_emb_1.npy' has dimension 4 but" in msg


def test_manifest_that_is_not_json_is_named(tmp_path: Path) -> None:
    emb = write_store(tmp_path / "emb", random_unit(10, 8))
    (emb / "manifest.json").write_text('{"shards": [')
    assert "manifest.json' is not readable JSON" in _error(_index(emb))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("rows", "metadata_1.parquet' has 299 rows but"),
        ("column", "metadata_1.parquet' lacks the column 'image_path'"),
        ("garbage", "metadata_1.parquet' is not a readable parquet file"),
        ("ids", "metadata_1.parquet': row 3 has image_id 'x'"),
    ],
)
def test_damaged_metadata_is_named(bench, damage: str, expected: str) -> None:
    emb = Path(bench.embeddings)
    assert _invoke(_fullrank(bench, emb)).exit_code == 0  # the intact store works
    meta = emb / "metadata" / "metadata_1.parquet"
    table = pq.read_table(meta)
    if damage == "rows":
        pq.write_table(table.slice(0, table.num_rows - 1), meta)
    elif damage == "column":
        pq.write_table(table.rename_columns(["path", *table.column_names[1:]]), meta)
    elif damage == "garbage":
        meta.write_bytes(b"PAR1" + b"\0" * 50)
    else:
        ids = [str(i) for i in range(table.num_rows)]
        ids[2] = "x"
        pq.write_table(table.drop(["image_id"]).append_column("image_id", pa.array(ids)), meta)
    msg = _error(_fullrank(bench, emb))
    assert expected in msg


# ---------------------------------------------------------------- rerank inputs


@pytest.fixture(scope="module")
def rerank_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return write_synthetic_rerank_set(tmp_path_factory.mktemp("rr"), n_val=1, n_test=3, pool=50)


def test_eval_rerank_with_unmatched_query_table_needs_number_queries(
    rerank_data: dict[str, list[Path]], tmp_path: Path
) -> None:
    data = str(rerank_data["test"][0])
    table = read_queries(
        rerank_data["test"][0].parent.parent / "benchmark" / "inquire_queries_test.csv"
    )
    # Pools without a relevant image are left out of the set: use the queries it holds.
    in_data = table[table["query_text"].isin(set(pd.read_parquet(data)["query"]))]
    n = len(in_data)
    assert n >= 2
    partial = tmp_path / "partial.csv"
    in_data.iloc[:1].to_csv(partial, index=False)
    args = ["eval", "rerank", "--reranker", "clip_score", "--data", data, "--queries", str(partial)]
    out = tmp_path / "res"
    msg = _error([*args, "--out", str(out)])
    assert f"{n - 1} of {n} INQUIRE-Rerank queries are not in the query table" in msg
    assert "--number-queries" in msg and not out.exists()
    res = _invoke([*args, "--number-queries", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(out / "per_query.csv")["query_id"].tolist() == list(range(1, n + 1))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-a-dict"])
def test_import_cache_of_a_damaged_file_is_a_clear_error(
    rerank_data: dict[str, list[Path]], tmp_path: Path, damage: str
) -> None:
    npy = tmp_path / "cache.npy"
    np.save(npy, {"train/x/y.jpg--Does this show a heron?": 0.5}, allow_pickle=True)
    if damage == "truncated":
        npy.write_bytes(npy.read_bytes()[:-20])
    elif damage == "garbage":
        npy.write_bytes(npy.read_bytes()[:128] + b"\x80\x05garbage" * 5)
    else:
        np.save(npy, np.zeros(3))
    args = ["rerank", "import-cache", str(npy), "--name", "x", "--trust-pickle"]
    msg = _error([*args, "--data", str(rerank_data["test"][0])])
    assert "cache.npy" in msg
    assert ("holds a ndarray" if damage == "not-a-dict" else "is not a readable .npy") in msg
    assert "does not exist" in _error([*args[:2], str(tmp_path / "nope.npy"), *args[3:]])


def test_run_that_is_a_folder_or_lacks_a_column_is_named(
    files: dict[str, Path], tmp_path: Path
) -> None:
    assert "is a folder" in _error(_evaluate(files, tmp_path))
    pq.write_table(pa.table({"query_id": [1], "image_id": [10]}), tmp_path / "noscore.parquet")
    msg = _error(_evaluate(files, tmp_path / "noscore.parquet"))
    assert "noscore.parquet' lacks column(s) ['score']" in msg
