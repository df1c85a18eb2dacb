"""The precomputed text-embedding file: its writer, its reader and the encoder over it."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from inquire.embed.precomputed import (
    PrecomputedEncoder,
    read_text_embeddings,
    write_text_embeddings,
)
from inquire.errors import InputError


def test_written_file_reads_back_and_encodes(tmp_path):
    emb = np.array([[3.0, 4.0], [0.0, 2.0]])
    path = write_text_embeddings(tmp_path / "t.parquet", ["a heron", "a fox"], emb, "m-1")
    schema = pq.read_schema(path)
    assert schema.names == ["query_text", "embedding", "model_id"]
    assert str(schema.field("embedding").type.value_type) == "float"
    texts, got, model_id = read_text_embeddings(path)
    assert texts == ["a heron", "a fox"] and model_id == "m-1"
    assert got.dtype == np.float32 and np.array_equal(got, emb)
    enc = PrecomputedEncoder(str(path))
    assert enc.revision == "m-1" and enc.dim == 2
    assert np.allclose(enc.encode_text(["a fox", "a heron"]), [[0.0, 1.0], [0.6, 0.8]])
    with pytest.raises(InputError, match=r"no precomputed embedding.*'a cat'"):
        enc.encode_text(["a cat"])


def test_bad_files_and_shapes_are_named(tmp_path):
    with pytest.raises(InputError, match="one row per text: got shape \\(1, 2\\) for 2 texts"):
        write_text_embeddings(tmp_path / "t.parquet", ["a", "b"], np.ones((1, 2)), "m")
    assert not (tmp_path / "t.parquet").exists()
    with pytest.raises(InputError, match="do not exist"):
        read_text_embeddings(tmp_path / "missing.parquet")
    import pandas as pd

    pd.DataFrame({"query_text": ["a"]}).to_parquet(tmp_path / "no_emb.parquet")
    with pytest.raises(InputError, match=r"lacks column\(s\) \['embedding'\]"):
        read_text_embeddings(tmp_path / "no_emb.parquet")
    pd.DataFrame({"query_text": ["a"], "embedding": [[1.0, 0.0]]}).to_parquet(tmp_path / "x.pq")
    assert read_text_embeddings(tmp_path / "x.pq")[2] == ""
