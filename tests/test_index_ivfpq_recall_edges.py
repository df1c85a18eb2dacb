"""Measured recall of the partitioned index at the edges: few valid rows, none, a manifest
that cannot be rewritten, and how `collection info` words what was (not) measured."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from inquire.cli.collection_index import scale_line
from inquire.embed.store import EmbeddingStore
from inquire.index import ivfpq, ivfpq_search
from inquire.testing.search_stores import random_unit, write_store

pytest.importorskip("faiss")

N = 300


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    store = EmbeddingStore(write_store(root / "s", random_unit(N, 16, seed=1), [N]))
    ivfpq.build(store, root / "idx", ivfpq.ScaleSettings(nlist=1, pq_m=4))
    return store, root / "idx"


@pytest.mark.parametrize("n_valid", [1, 2])
def test_an_empty_one_percent_selection_is_not_reported_as_zero(built, n_valid):
    store, folder = built
    valid = np.zeros(N, bool)
    valid[:n_valid] = True  # the 1% selection of 1 or 2 rows is (with this seed) empty
    rec = ivfpq.record_recall(store, folder, valid)
    assert rec["queries"] == n_valid and rec["k"] == 100  # k larger than the rows
    assert rec["unfiltered"] == 1.0 and rec["unfiltered_route"] == "exact"
    assert "filter_1pct" not in rec and "filter_1pct_route" not in rec
    line = scale_line(
        {"kind": "IVF1,PQ4", "partitions": 1, "rows": N, "bytes_per_photo": 4.0, "recall": rec}
    )
    assert "unfiltered 1.000" in line and "1% filter" not in line


def test_every_row_on_the_exact_route_measures_one(built):
    store, folder = built
    rec = ivfpq.record_recall(store, folder)
    for name in ("unfiltered", "filter_1pct"):
        if name in rec and rec[f"{name}_route"] == "exact":
            assert rec[name] == 1.0, rec


def test_no_valid_row_records_nothing_and_says_so(built):
    store, folder = built
    assert ivfpq.record_recall(store, folder, np.zeros(N, bool)) == {}
    assert ivfpq.read_manifest(folder).recall == {}
    line = scale_line(
        {"kind": "IVF1,PQ4", "partitions": 1, "rows": N, "bytes_per_photo": 4.0, "recall": {}}
    )
    assert "not measured" in line


def test_a_manifest_that_cannot_be_rewritten_does_not_fail(built, monkeypatch, caplog):
    store, folder = built
    before = (folder / ivfpq.MANIFEST).read_bytes()

    def read_only(folder, man):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(ivfpq_search, "write_manifest", read_only)
    with caplog.at_level(logging.WARNING, logger="inquire.index.ivfpq_search"):
        rec = ivfpq.record_recall(store, folder)
    assert rec["unfiltered"] == 1.0
    assert (folder / ivfpq.MANIFEST).read_bytes() == before
    assert any("not recorded" in r.getMessage() for r in caplog.records)


def test_a_manifest_from_before_recall_was_recorded(built):
    store, folder = built
    path = folder / ivfpq.MANIFEST
    d = json.loads(path.read_text())
    d.pop("recall", None)
    path.write_text(json.dumps(d))
    man = ivfpq.read_manifest(folder)
    assert man is not None and man.recall == {}
    line = scale_line(
        {
            "kind": "IVF1,PQ4",
            "partitions": 1,
            "rows": N,
            "bytes_per_photo": 4.0,
            "recall": man.recall,
        }
    )
    assert "not measured" in line
    assert ivfpq.record_recall(store, folder)["unfiltered"] == 1.0  # measured again
    assert ivfpq.read_manifest(folder).recall["unfiltered"] == 1.0
