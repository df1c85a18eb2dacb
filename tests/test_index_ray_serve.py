"""The partitioned index on a real two-node Ray cluster equals the same index in one process.

Runs inside a private network namespace (the ``private_network`` marker, tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from inquire.embed.store import EmbeddingStore
from inquire.index import ivfpq
from inquire.testing.clustered import ClusterSpec, queries, selectivity_masks, write_clustered

pytest.importorskip("faiss")
pytest.importorskip("ray")


@pytest.mark.slow
@pytest.mark.private_network
def test_ray_build_and_search_equal_one_process(ray_two_nodes, tmp_path):
    from inquire.index.ray_serve import RayBackend, run_ray

    spec = ClusterSpec(d=32, clusters=50, seed=2)
    meta = write_clustered(tmp_path / "emb", 24_000, spec, shard_rows=4000)
    store = EmbeddingStore(tmp_path / "emb")
    settings = ivfpq.ScaleSettings(nlist=64, pq_m=8, partition_rows=8000, exact_below=300)
    # Built by Ray Data tasks (in parallel over both nodes) and in this process.
    by_ray = ivfpq.build(store, tmp_path / "ray", settings, runner=run_ray)
    local = ivfpq.build(store, tmp_path / "local", settings)
    assert by_ray.partitions == local.partitions and len(local.partitions) == 3
    for p in local.partitions:
        assert (tmp_path / "ray" / p.file).stat().st_size == (
            tmp_path / "local" / p.file
        ).stat().st_size

    served = ivfpq.ScaleIndex.open(
        store, tmp_path / "ray", backend=RayBackend(store.root, tmp_path / "ray", by_ray)
    )
    one = ivfpq.ScaleIndex.open(store, tmp_path / "ray")
    try:
        assert isinstance(served.backend, RayBackend)
        assert len(set(served.backend.nodes())) == 2  # actors on both nodes
        q = queries(spec, 6)
        masks = {name: (None if m.all() else m) for name, m in selectivity_masks(meta).items()}
        masks["2 rows"] = np.isin(np.arange(len(store)), [3, 23_999])
        for name, mask in masks.items():
            for nprobe in (None, 1):
                a = served.search(q, 50, mask, nprobe=nprobe)
                b = one.search(q, 50, mask, nprobe=nprobe)
                np.testing.assert_array_equal(a[1], b[1], err_msg=name)
                np.testing.assert_array_equal(a[0], b[0], err_msg=name)
        # Exhaustive settings: both equal exact search.
        exact = one.search(q, 50, exact=True)
        full = served.search(q, 50, nprobe=64)
        np.testing.assert_array_equal(full[1], exact[1])
        # A lost actor (its node gone, or killed) is started again and the search still
        # answers in full, equal to one process.
        ray_two_nodes.kill(served.backend.actors[1])
        again = served.search(q, 50, nprobe=64)
        np.testing.assert_array_equal(again[1], exact[1])
        np.testing.assert_array_equal(again[0], full[0])
        assert served.backend.restarts == 1
        assert len(set(served.backend.nodes())) == 2
    finally:
        served.close()


@pytest.mark.slow
@pytest.mark.private_network
def test_cli_index_with_ray_data_tasks(ray_two_nodes, tmp_path):
    """`inquire collection index NAME --ray ADDRESS`: partitions encoded as Ray Data tasks on
    the cluster; searches equal exact search under exhaustive settings."""
    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.collection import create_collection
    from inquire.collection.search import CollectionSearcher
    from inquire.testing.collection_encoder import PixelHashEncoder, make_photo_folder

    make_photo_folder(tmp_path / "p", n=300)
    enc = PixelHashEncoder(dim=16)
    coll, _ = create_collection(
        "big", tmp_path / "p", enc.model_id, encoder=enc, index="none", chunk_size=100
    )
    address = ray_two_nodes.get_runtime_context().gcs_address
    args = ["collection", "index", "big", "--nlist", "8", "--pq-m", "4"]
    res = CliRunner().invoke(
        app, [*args, "--partition-rows", "100", "--nprobe", "8", "--ray", address]
    )
    assert res.exit_code == 0, res.output
    assert "3 partitions, 300 rows" in res.output
    index = coll.index()
    assert isinstance(index.ann, ivfpq.ScaleIndex)
    q = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    a = CollectionSearcher(index).search(q, 20)
    e = CollectionSearcher(index, exact=True).search(q, 20)
    np.testing.assert_array_equal(a[1], e[1])
