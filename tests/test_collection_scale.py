"""A collection on the partitioned IVF-PQ index: indexed, updated, searched, shown."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.collection import SearchRequest, compact, create_collection, search, update_collection
from inquire.collection.ann import scale_dir
from inquire.collection.info import collection_info
from inquire.collection.scale import index_collection
from inquire.collection.search import CollectionSearcher
from inquire.errors import InputError
from inquire.index import ivfpq, ivfpq_build
from inquire.testing.collection_encoder import PixelHashEncoder, make_photo_folder

pytest.importorskip("faiss")

# Partitions of 100 rows and 10 x 20 candidates: every selected row of a partition is
# rescored, and nprobe = nlist probes every list, so results must equal exact search.
OPTS = {"nlist": 8, "pq_m": 4, "partition_rows": 100, "exact_below": 0, "nprobe": 8}


@pytest.fixture
def coll(tmp_path):
    make_photo_folder(tmp_path / "p", n=300)
    enc = PixelHashEncoder(dim=16)
    c, _ = create_collection(
        "big", tmp_path / "p", enc.model_id, encoder=enc, index="none", chunk_size=100
    )
    return c, enc, tmp_path / "p"


def _q(seed: int = 3, n: int = 5) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _same_as_exact(index, k=20) -> None:
    rng = np.random.default_rng(1)
    for mask in (None, rng.random(len(index)) < 0.5, rng.random(len(index)) < 0.03):
        a_s, a_i = CollectionSearcher(index).search(_q(), k, mask)
        e_s, e_i = CollectionSearcher(index, exact=True).search(_q(), k, mask)
        np.testing.assert_array_equal(a_i, e_i)
        np.testing.assert_allclose(a_s, e_s, atol=1e-6)


def test_index_update_delete_compact_keep_exact_results(coll):
    c, enc, photos = coll
    info = index_collection("big", options=OPTS)
    assert info is not None and info["partitions"] == 3 and info["rows"] == 300
    assert info["recall"]["unfiltered"] == 1.0 and info["bytes_per_photo"] > 0
    assert c.meta()["index"] == "scale"
    index = c.index()
    assert isinstance(index.ann, ivfpq.ScaleIndex)
    _same_as_exact(index)
    # New photos: codes appended (the last partition grows, then a new one), no retraining.
    trained = (scale_dir(c) / ivfpq.TRAINED).read_bytes()
    make_photo_folder(photos / "more", n=150, seed=7)
    _, st = update_collection("big", encoder=enc, chunk_size=100)
    assert st.index.startswith("extended IVF8,PQ4x8 by 150 rows"), st.index
    assert (scale_dir(c) / ivfpq.TRAINED).read_bytes() == trained
    index = c.index()
    assert index.ann.manifest.rows == 450
    rec = ivfpq.read_manifest(scale_dir(c)).recall  # measured again over the grown index
    assert rec["rows"] == 450 and rec["unfiltered"] == rec["unfiltered_ivf"] == 1.0, rec
    _same_as_exact(index)
    # Deleted photos: gone from every result through the validity mask.
    shutil.rmtree(photos / "more")
    update_collection("big", encoder=enc)
    index = c.index()
    gone = set(index.image_id[300:].tolist()) | {-1}
    assert int(index.valid.sum()) == 300
    df = search(index, SearchRequest(like=[int(index.image_id[0])], k=300, nprobe=8))
    assert len(df) == 300 and not gone & set(df["image_id"])
    _same_as_exact(index)
    # Compaction rewrites the shards: the index is rebuilt with its own settings.
    assert compact("big") == 150
    index = c.index()
    assert isinstance(index.ann, ivfpq.ScaleIndex) and index.ann.manifest.rows == 300
    assert index.ann.manifest.settings.nlist == 8
    _same_as_exact(index)


def test_cli_index_info_search_and_resume(coll, monkeypatch):
    runner = CliRunner()
    args = ["collection", "index", "big", "--nlist", "8", "--pq-m", "4", "--partition-rows", "100"]
    # Interrupted after the first partition: a rerun resumes and finishes.
    real = ivfpq.encode_partition
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(ivfpq_build, "encode_partition", flaky)
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    assert [p.number for p in ivfpq.read_manifest(scale_dir(coll[0])).partitions] == [0]
    res = runner.invoke(app, ["collection", "index", "big"])  # the index's own settings
    assert res.exit_code == 0, res.output
    assert "3 partitions, 300 rows" in res.output and "bytes/photo" in res.output
    res = runner.invoke(app, ["collection", "info", "big"])
    assert res.exit_code == 0 and "partitioned IVF8,PQ4x8" in res.output
    assert "recall@100 over 300 rows unfiltered" in " ".join(res.output.split())
    out = {}
    for opts in ([], ["--exact"]):
        res = runner.invoke(app, ["search", "big", "--like", "3", "-k", "30", "--json", *opts])
        assert res.exit_code == 0, res.output
        out[bool(opts)] = [r["image_id"] for r in json.loads(res.stdout)]
    assert out[False] == out[True] and len(out[True]) == 30
    # Changing how it is built needs --rebuild; a bad pq_m names the choices.
    res = runner.invoke(app, ["collection", "index", "big", "--nlist", "16"])
    assert res.exit_code != 0 and "rebuild" in res.output
    res = runner.invoke(app, ["collection", "index", "big", "--rebuild", "--pq-m", "5"])
    assert res.exit_code != 0 and "pq_m 5 does not divide" in res.output
    res = runner.invoke(app, ["collection", "index", "big", "--off"])
    assert res.exit_code == 0 and "removed" in res.output
    assert collection_info("big").scale is None


def test_too_small_collection_is_refused(tmp_path):
    make_photo_folder(tmp_path / "p", n=30)
    enc = PixelHashEncoder(dim=16)
    create_collection("tiny", tmp_path / "p", enc.model_id, encoder=enc, index="none")
    with pytest.raises(InputError, match="needs at least 256 rows"):
        index_collection("tiny", options={"nlist": 8, "pq_m": 4})


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("part_1.faiss", lambda b: b[: len(b) // 2]),  # truncated
        ("part_1.faiss", lambda b: b""),  # empty
        ("part_1.faiss", None),  # missing
        ("manifest.json", lambda b: b[: len(b) // 2]),  # truncated JSON
        ("manifest.json", lambda b: b"{}"),  # not a manifest
    ],
)
def test_damaged_index_files_fall_back_to_exact_with_one_line_errors(coll, file, damage):
    c = coll[0]
    index_collection("big", options=OPTS)
    path = scale_dir(c) / file
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))
    # Searching (CLI and page) goes on, exactly; nothing raises.
    index = c.index()
    assert index.ann is None
    exact = CollectionSearcher(index, exact=True).search(_q(), 20)
    np.testing.assert_array_equal(CollectionSearcher(index).search(_q(), 20)[1], exact[1])
    runner = CliRunner()
    res = runner.invoke(app, ["collection", "info", "big"])
    assert res.exit_code == 0 and res.exception is None, res.output
    if file == "manifest.json":
        assert "partitioned index unusable" in res.output and "--rebuild" in res.output
        # Extending needs a rebuild: the command says so in one line, an update reports it.
        res = runner.invoke(app, ["collection", "index", "big"])
        assert res.exit_code != 0 and isinstance(res.exception, SystemExit | None)
        assert "unreadable" in res.output and "--rebuild" in res.output
        make_photo_folder(coll[2] / "more", n=3, seed=9)
        _, st = update_collection("big", encoder=coll[1])
        assert st.index.startswith("not extended, the index is unreadable"), st.index
    # --rebuild keeps the index's own settings where the manifest is still readable.
    args = [] if file.startswith("part") else _opt_args()
    res = runner.invoke(app, ["collection", "index", "big", "--rebuild", *args])
    assert res.exit_code == 0, res.output
    assert ivfpq.read_manifest(scale_dir(c)).settings == ivfpq.ScaleSettings(**OPTS)
    index = c.index()
    assert isinstance(index.ann, ivfpq.ScaleIndex)
    exact = CollectionSearcher(index, exact=True).search(_q(), 20)
    np.testing.assert_array_equal(CollectionSearcher(index).search(_q(), 20)[1], exact[1])


def _opt_args() -> list[str]:
    return [f"--{key.replace('_', '-')}={value}" for key, value in OPTS.items()]


def test_partition_file_of_another_dimension_is_refused(coll, tmp_path):
    c = coll[0]
    index_collection("big", options=OPTS)
    import faiss

    other = faiss.index_factory(32, "IVF8,PQ4x8", faiss.METRIC_INNER_PRODUCT)
    x = np.random.default_rng(0).standard_normal((400, 32)).astype(np.float32)
    other.train(x)
    other.add_with_ids(x[:100], np.arange(100))
    faiss.write_index(other, str(scale_dir(c) / "part_0.faiss"))
    with pytest.raises(ivfpq.BrokenScaleIndexError, match="32-d codes"):
        ivfpq.ScaleIndex.open(c.store(), scale_dir(c))
    assert c.index().ann is None  # searches are exact


_KILLED_CHILD = """
import sys, time
from pathlib import Path
import faiss
from inquire.collection.scale import index_collection
marker = Path(sys.argv[1])
real = faiss.write_index

def slow_write(index, path):
    real(index, path)
    if "part_1" in path:  # partition 1 half-way: its temporary file is written, not renamed
        marker.write_text("in write")
        time.sleep(600)

faiss.write_index = slow_write
index_collection("big", options=dict(nlist=8, pq_m=4, partition_rows=100, exact_below=0))
"""


def test_build_killed_mid_write_resumes_to_the_uninterrupted_index(coll, tmp_path):
    """SIGKILL while partition 1 is being written, then run again: the same files as a
    build never interrupted, no temporary file left, bytes per photo counts index files."""
    import os
    import signal
    import subprocess
    import sys
    import time

    c = coll[0]
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(marker)], env=os.environ)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never reached the partition write"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    folder = scale_dir(c)
    assert [p.number for p in ivfpq.read_manifest(folder).partitions] == [0]
    assert list(folder.glob(".*.tmp")), "the kill should have left a temporary file"
    (folder / ".part_9.faiss.stale.tmp").write_bytes(b"x" * 10_000)  # another dead write
    info = index_collection("big", options=OPTS)  # resume
    assert info is not None and info["partitions"] == 3
    assert not list(folder.glob(".*.tmp"))
    resumed = {p.name: p.read_bytes() for p in folder.glob("*.faiss")}
    own = sum(map(len, resumed.values())) + (folder / ivfpq.MANIFEST).stat().st_size
    assert info["index_bytes"] == own
    index_collection("big", options=OPTS, rebuild=True)
    fresh = {p.name: p.read_bytes() for p in folder.glob("*.faiss")}
    assert resumed == fresh and len(fresh) == 4


def test_nlist_above_the_photo_count_names_the_limit(coll):
    with pytest.raises(InputError, match=r"needs at least 512 rows.*at most 300"):
        index_collection("big", options={"nlist": 512, "pq_m": 4})
    assert not (scale_dir(coll[0]) / ivfpq.MANIFEST).exists()
    res = CliRunner().invoke(app, ["collection", "index", "big", "--nlist", "512", "--pq-m", "4"])
    assert res.exit_code != 0 and "smaller nlist" in res.output
    assert isinstance(res.exception, SystemExit)  # a one-line error, no traceback
