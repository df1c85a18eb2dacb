from __future__ import annotations

from pathlib import Path

import pytest

from inquire.data.queries import QUERY_COLUMNS, UNKNOWN_GROUP, read_queries
from inquire.errors import InputError


def test_real_query_files_load_with_the_right_counts(real_queries_dir: Path) -> None:
    val = read_queries(real_queries_dir / "inquire_queries_val.csv")
    test = read_queries(real_queries_dir / "inquire_queries_test.csv")
    assert list(val.columns) == QUERY_COLUMNS
    assert (len(val), len(test)) == (50, 200)
    counts = {
        "val": val["supercategory"].value_counts().to_dict(),
        "test": test["supercategory"].value_counts().to_dict(),
    }
    assert sorted(counts["val"].values(), reverse=True) == [17, 17, 12, 4]
    assert sorted(counts["test"].values(), reverse=True) == [67, 66, 49, 18]
    assert set(val["supercategory"]) == {"Appearance", "Behavior", "Context", "Species"}
    # Two test queries have an empty iconic group upstream: a named value, never NaN.
    assert (test["iconic_group"] == UNKNOWN_GROUP).sum() == 2
    assert not test.isna().any().any()
    assert test["query_id"].dtype == "int64"
    assert set(val["query_id"]).isdisjoint(set(test["query_id"]))


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "q.csv"
    bad.write_text("query_id,query_text\n1,a fox\n")
    with pytest.raises(InputError, match="lacks column"):
        read_queries(bad)


def test_non_integer_query_id_names_the_row(tmp_path: Path) -> None:
    bad = tmp_path / "q.csv"
    bad.write_text(
        "query_id,query_text,supercategory,category,iconic_group\nx7,a fox,Species,S,Mammals\n"
    )
    with pytest.raises(InputError, match="'x7' on row 2"):
        read_queries(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_queries(tmp_path / "nope.csv")
