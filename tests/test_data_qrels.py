"""Relevance labels (inquire.data.qrels)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_annotations_with_whole_float_ids_load(tmp_path: Path) -> None:
    from inquire.data.qrels import read_qrels
    from inquire.errors import InputError

    path = tmp_path / "a.csv"
    path.write_text("query_id,image_id,image_path\n1,5.0,a.jpg\n1,6,b.jpg\n2.0,7.0,c.jpg\n")
    qrels = read_qrels(path)
    assert dict(qrels) == {1: frozenset({5, 6}), 2: frozenset({7})}
    path.write_text("query_id,image_id\n1,5.5\n")
    with pytest.raises(InputError, match=r"'5\.5' on row 2"):
        read_qrels(path)
    path.write_text("query_id,image_id\n1,5\n2,\n")
    with pytest.raises(InputError, match="an empty cell on row 3"):
        read_qrels(path)
