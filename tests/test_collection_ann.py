"""The optional faiss index of a collection: filters inside faiss, measured against exact."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.collection import (
    SearchRequest,
    compact,
    create_collection,
    parse_filters,
    search,
    update_collection,
)
from inquire.collection import ann as coll_ann
from inquire.collection.search import CollectionSearcher
from inquire.embed.folder import write_shard
from inquire.errors import InputError
from inquire.index.ann import recall_at_k
from inquire.testing.collection_encoder import PixelHashEncoder, make_photo_folder

N_PHOTOS = 240
NLIST = 8


@pytest.fixture
def coll_with_ivf(tmp_path):
    photos = make_photo_folder(tmp_path / "p", n=N_PHOTOS)
    enc = PixelHashEncoder(dim=16)
    coll, st = create_collection(
        "big", tmp_path / "p", enc.model_id, encoder=enc, index=f"IVF{NLIST},Flat"
    )
    assert st.index == f"built IVF{NLIST},Flat"
    return coll, enc, photos


def _queries(n: int, dim: int = 16, seed: int = 3) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _masks(index) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(0)
    n = len(index)
    return {
        "none": None,
        "dates": parse_filters([], "2020-01-01", "2021-12-31").mask(index),
        "bbox": parse_filters([], bbox="-100,-30,60,50").mask(index),
        "random 40%": rng.random(n) < 0.4,
        "random 4%": rng.random(n) < 0.04,
    }


def _lists(result):
    """``(scores, ids)`` of a search as one ``(ids, scores)`` per query, padding dropped."""
    scores, ids = result
    assert scores.shape == ids.shape and scores.dtype == np.float32 and ids.dtype == np.int64
    assert np.isneginf(scores[ids < 0]).all()
    return [(i[i >= 0], s[i >= 0]) for s, i in zip(scores, ids, strict=True)]


def test_probing_every_list_equals_the_exact_filtered_search(coll_with_ivf):
    coll, _, _ = coll_with_ivf
    index = coll.index()
    assert index.ann is not None and index.ann.index.nlist == NLIST
    q = _queries(6)
    for label, mask in _masks(index).items():
        approx = _lists(CollectionSearcher(index, nprobe=NLIST).search(q, 15, mask))
        exact = _lists(CollectionSearcher(index, exact=True).search(q, 15, mask))
        for (ai, asc), (ei, esc) in zip(approx, exact, strict=True):
            assert ai.tolist() == ei.tolist(), label
            np.testing.assert_allclose(asc, esc, atol=1e-5)
            want = 15 if mask is None else min(15, int((mask & index.valid).sum()))
            assert len(ai) == want, label
    # The same through search(): the request picks faiss or exact.
    f = parse_filters([], "2020-01-01", "2022-12-31")
    a = search(index, SearchRequest(like=[3], filters=f, k=20, nprobe=NLIST))
    e = search(index, SearchRequest(like=[3], filters=f, k=20, exact=True))
    assert a["image_id"].tolist() == e["image_id"].tolist()


def test_the_filter_is_a_selector_inside_faiss(coll_with_ivf):
    coll, _, _ = coll_with_ivf
    index = coll.index()
    mask = np.random.default_rng(5).random(len(index)) < 0.3
    scores, ids = index.ann.search(_queries(4), 20, mask, params={"nprobe": NLIST})
    # faiss itself returns k hits, all of them selected rows: nothing is dropped afterwards.
    assert (ids >= 0).all() and mask[index.ann.store.row_of(ids.ravel())].all()
    assert np.isfinite(scores).all()


def test_fewer_probes_recall_is_measured_and_results_are_never_short(coll_with_ivf, capsys):
    coll, _, _ = coll_with_ivf
    index = coll.index()
    q = _queries(20, seed=11)
    k = 10
    lines = []
    for label, mask in _masks(index).items():
        sel = index.valid if mask is None else mask & index.valid
        exact = _lists(CollectionSearcher(index, exact=True).search(q, k, mask))
        for nprobe in (1, 2, NLIST):
            approx = _lists(CollectionSearcher(index, nprobe=nprobe).search(q, k, mask))
            for ids, _ in approx:
                # Filters inside the search: always min(k, selected) hits, all passing it.
                assert len(ids) == min(k, int(sel.sum()))
                assert sel[index.rows_of(ids)].all()
            a = np.full((len(q), k), -1, np.int64)
            e = np.full((len(q), k), -1, np.int64)
            for r, ((ai, _), (ei, _)) in enumerate(zip(approx, exact, strict=True)):
                a[r, : len(ai)], e[r, : len(ei)] = ai, ei
            rec = recall_at_k(a, e, k)
            assert 0.0 < rec <= 1.0
            if nprobe == NLIST:
                assert rec == 1.0
            lines.append(f"{label:10s} nprobe={nprobe}/{NLIST} recall@{k}={rec:.3f}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_index_follows_the_collection(coll_with_ivf, tmp_path, caplog):
    coll, enc, photos = coll_with_ivf
    # New files change the store: the index is rebuilt and covers the new rows.
    make_photo_folder(tmp_path / "p" / "new", n=12, seed=500)
    _, st = update_collection("big", encoder=enc)
    assert st.added == 12 and st.index == f"built IVF{NLIST},Flat"
    index = coll.index()
    assert index.ann is not None and index.ann.index.ntotal == len(index) == N_PHOTOS + 12
    # A deletion only changes the validity mask: the index is kept, the file leaves results.
    gone_id = coll.image_id_for_path(photos[0].path)
    gone = index.rows_of([gone_id])
    assert gone[0] >= 0
    os.remove(photos[0].path)
    _, st = update_collection("big", encoder=enc)
    assert st.removed == 1 and st.index == f"kept IVF{NLIST},Flat"
    index = coll.index()
    q = index.vectors(gone)  # the deleted image's own vector: it would rank first
    ids, _ = _lists(CollectionSearcher(index, nprobe=NLIST).search(q, 5))[0]
    assert gone_id not in ids.tolist() and len(ids) == 5
    # Embeddings changed behind the index's back (an interrupted update): exact search.
    write_shard(coll.emb_dir, 99, q, ["ghost.jpg"], [10**6])
    with caplog.at_level(logging.WARNING):
        stale = coll.index()
    assert stale.ann is None and "does not match the embeddings" in caplog.text
    assert len(_lists(CollectionSearcher(stale).search(q, 5))[0][0]) == 5
    (coll.emb_dir / "img_emb" / "img_emb_99.npy").unlink()
    (coll.emb_dir / "metadata" / "metadata_99.parquet").unlink()
    _, st = update_collection("big", encoder=enc)
    assert st.index.startswith(("kept", "built")) and coll.index().ann is not None
    # Compacting rewrites the shards and rebuilds the index over the kept rows.
    assert compact("big") == 1
    index = coll.index()
    assert index.ann is not None and index.ann.index.ntotal == len(index) == N_PHOTOS + 11
    # Switching the index off removes it.
    _, st = update_collection("big", encoder=enc, index="none")
    assert st.index == "removed" and coll.index().ann is None


def test_index_settings_and_errors(tmp_path):
    make_photo_folder(tmp_path / "p", n=30)
    enc = PixelHashEncoder(dim=16)
    with pytest.raises(InputError, match="not a faiss factory string"):
        create_collection("bad", tmp_path / "p", enc.model_id, encoder=enc, index="IVFxx,Flat")
    assert enc.n_images_encoded == 0  # refused before any work
    coll, st = create_collection("small", tmp_path / "p", enc.model_id, encoder=enc)
    assert st.index == "none" and coll.index().ann is None  # "auto" below the threshold
    _, st = update_collection("small", encoder=enc, index="IVF1024,Flat")
    assert st.index.startswith("not built:") and "IVF" in st.index
    assert coll.index().ann is None  # too few rows for 1024 lists: searches stay exact
    _, st = update_collection("small", encoder=enc, index="Flat")
    assert st.index == "built Flat" and coll.index().ann is not None
    # Other index types carry the selector too (HNSW and a pre-transformed IVF).
    for factory in ("HNSW16", "PCA8,IVF2,Flat"):
        _, st = update_collection("small", encoder=enc, index=factory)
        assert st.index == f"built {factory}"
        index = coll.index()
        mask = np.zeros(len(index), bool)
        mask[::3] = True
        for ids, _ in _lists(CollectionSearcher(index).search(_queries(3), 6, mask)):
            assert len(ids) == 6 and mask[index.rows_of(ids)].all()
    with pytest.raises(InputError, match="nprobe must be at least 1"):
        CollectionSearcher(coll.index(), nprobe=0).search(_queries(1), 5)
    assert coll_ann.auto_factory(coll_ann.AUTO_INDEX_ROWS - 1) is None
    assert coll_ann.auto_factory(4_000_000) == "IVF8192,Flat"
    assert coll_ann.auto_factory(coll_ann.AUTO_INDEX_ROWS) == "IVF4096,Flat"


def test_cli_index_exact_and_nprobe(tmp_path: Path):
    make_photo_folder(tmp_path / "photos", n=60, seed=9)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "collection",
            "create",
            "cl",
            "--images",
            str(tmp_path / "photos"),
            "--model",
            "toy:colour",
            "--index",
            "IVF4,Flat",
            "--workers",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "built IVF4,Flat" in res.output
    out = {}
    for opts in (["--nprobe", "4"], ["--exact"]):
        res = runner.invoke(app, ["search", "cl", "red", "-k", "100", "--json", *opts])
        assert res.exit_code == 0, res.output
        out[opts[0]] = [r["image_id"] for r in json.loads(res.stdout)]
    assert out["--nprobe"] == out["--exact"] and len(out["--exact"]) == 60
    res = runner.invoke(app, ["collection", "info", "cl"])
    assert res.exit_code == 0 and "IVF4,Flat (60 rows" in res.output
    res = runner.invoke(app, ["collection", "update", "cl", "--index", "HNSW-nope"])
    assert res.exit_code == 2 and "not a faiss factory string" in res.output


def test_the_index_module_does_not_import_the_store_module() -> None:
    """collection/store.py uses collection/ann.py; ann.py knows a collection only through
    its CollectionFiles protocol (no import of store.py, not even for type checking)."""
    import ast

    tree = ast.parse(Path(coll_ann.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("inquire.collection")}, imported
