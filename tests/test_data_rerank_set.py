"""INQUIRE-Rerank shards (inquire.data.rerank_set)."""

from __future__ import annotations

from pathlib import Path


def _tiny_rerank_shard(path: Path) -> Path:
    """Two queries of two candidates in the upstream INQUIRE-Rerank columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 4
    table = pa.table(
        {
            "image": pa.array([{"bytes": b"x", "path": "p"}] * n),
            "query": ["a fox", "a fox", "a toad", "a toad"],
            "relevant": [1, 0, 0, 1],
            "clip_score": [0.4, 0.3, 0.2, 0.1],
            "inat24_image_id": [1, 2, 3, 4],
            "inat24_file_name": [f"train/{i}.jpg" for i in range(n)],
            "supercategory": ["Appearance", "Appearance", " Context ", " Context "],
            "category": ["Health", "Health", "", ""],
            "iconic_group": [" ", " ", None, None],
        }
    )
    pq.write_table(table, path)
    return path


def test_rerank_set_groups_follow_the_query_table_rule(tmp_path: Path) -> None:
    """Blank or missing groups in INQUIRE-Rerank shards become UNKNOWN_GROUP, as they do in
    the query CSVs (a blank string used to stay a group of its own)."""
    from inquire.data.queries import UNKNOWN_GROUP
    from inquire.data.rerank_set import read_rerank_set

    path = _tiny_rerank_shard(tmp_path / "test-00000-of-00001.parquet")
    queries = read_rerank_set([path]).queries.set_index("query_text")
    assert queries.loc["a fox", "iconic_group"] == UNKNOWN_GROUP
    assert queries.loc["a toad", "iconic_group"] == UNKNOWN_GROUP
    assert queries.loc["a toad", "category"] == UNKNOWN_GROUP
    assert queries.loc["a toad", "supercategory"] == "Context"
