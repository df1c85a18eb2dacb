"""One AnnIndex searched from several threads with different parameters at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from inquire.embed.store import EmbeddingStore
from inquire.index.ann import AnnIndex, build_index
from inquire.testing.search_stores import random_unit, write_store


def test_concurrent_searches_match_single_threaded_results(tmp_path: Path) -> None:
    store = EmbeddingStore(write_store(tmp_path / "emb", random_unit(3000, 16, seed=1)))
    build_index(store, "IVF16,Flat", name="ivf")
    ix = AnnIndex.load(store, "ivf")
    queries = random_unit(40, 16, seed=2)
    settings = [{"nprobe": 1.0}, {"nprobe": 3.0}, {"nprobe": 16.0}]
    expected = [ix.search(queries, 25, params=p) for p in settings]
    # the settings really give different results, so a mix-up would show
    assert not np.array_equal(expected[0][1], expected[2][1])

    jobs = [i % len(settings) for i in range(60)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: ix.search(queries, 25, params=settings[i]), jobs))
    for i, (scores, ids) in zip(jobs, results, strict=True):
        np.testing.assert_array_equal(ids, expected[i][1])
        np.testing.assert_array_equal(scores, expected[i][0])
